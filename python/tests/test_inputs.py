"""numpy and torch inputs give the same rows."""

import numpy as np
import pytest

from carto._sender import Sender
from carto._validate import prepare
from fakes import FakeTransport

torch = pytest.importorskip("torch")
N, K = 50, 4


def sent(make):
    t = FakeTransport()
    s = Sender(t, N, K, 64 * 1024)
    rng = np.random.default_rng(1)
    for i in range(3):
        ids = np.arange(i * 10, i * 10 + 10)
        logits = rng.standard_normal((10, K)).astype(np.float32)
        s.put(prepare(0, i, *make(ids, logits, ids % K), N, K))
    s.end_epoch(0, 0.0)
    s.close()
    return t.committed(0)


def test_numpy_and_cpu_tensors_agree():
    a = sent(lambda i, z, y: (i, z, y))
    b = sent(lambda i, z, y: (torch.from_numpy(i), torch.from_numpy(z).requires_grad_(), torch.from_numpy(y)))
    assert a.equals(b)


def test_half_precision_tensors_are_sent_as_float32():
    for dt in (torch.float16, torch.bfloat16):
        t = sent(lambda i, z, y: (torch.from_numpy(i), torch.from_numpy(z).to(dt), torch.from_numpy(y)))
        assert str(t.schema.field("logits").type) == "fixed_size_list<item: float>[4]"


def test_float64_stays_float64():
    t = sent(lambda i, z, y: (i, z.astype(np.float64), y))
    assert str(t.schema.field("logits").type) == "fixed_size_list<item: double>[4]"


def test_the_callers_buffer_may_change_after_record():
    buf = np.zeros((2, K), np.float32)
    b = prepare(0, 0, np.array([0, 1]), buf, np.array([0, 1]), N, K)
    buf[:] = 7
    assert b.arrays(N, K)[1].max() == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_tensors_are_copied_without_blocking_and_checked_later():
    z = torch.randn(8, K, device="cuda", dtype=torch.float16)
    ids = torch.arange(8, device="cuda")
    b = prepare(0, 0, ids, z, ids % K, N, K)
    assert b.event is not None and not b.checked
    i, logits, y = b.arrays(N, K)
    np.testing.assert_array_equal(logits, z.float().cpu().numpy())
    bad = z.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="batch 1: logits of row 2"):
        prepare(0, 1, ids, bad, ids % K, N, K).arrays(N, K)
