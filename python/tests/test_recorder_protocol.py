"""The Recorder against a Python double of the coordinator: the calls, their
order, the token, the lease and the rows (runs without the Rust side)."""

import time

import numpy as np
import pytest

import carto
from carto import Recorder
from fake_coordinator import TOKEN, FakeCoordinator

N, K, E = 200, 3, 3


@pytest.fixture
def coord():
    c = FakeCoordinator()
    yield c
    c.stop()


def model_logits(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, 5))
    w = rng.standard_normal((5, K))
    y = rng.integers(0, K, N)
    return x, w, y


def test_a_loop_reports_every_epoch_in_one_stream_and_finishes(coord, tmp_path):
    x, w, y = model_logits()
    expected = np.zeros(N)
    rec = Recorder(tmp_path / "out", N, K, coordinator=coord.url, token=TOKEN, label_names=["a", "b", "c"])
    for epoch in range(E):
        order = np.random.default_rng(epoch).permutation(N)
        for s in range(0, N, 32):
            ids = order[s : s + 32]
            z = x[ids] @ (w * (1 + epoch))
            rec.record(ids, z, y[ids])
        stats = rec.end_epoch()
        assert stats.rows_sent == N
        z = x @ (w * (1 + epoch))
        p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        expected += p[np.arange(N), y] / E
    deadline = time.monotonic() + 5
    while coord.state.heartbeats == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    result = rec.finish()
    s = coord.state
    spec = s.spec
    assert spec.trainer == "external" and spec.num_samples == N and spec.num_classes == K
    assert list(spec.label_names) == ["a", "b", "c"] and spec.world_size == 1
    assert spec.out == str((tmp_path / "out").absolute())
    assert s.calls[:4] == ["SubmitJob", "Register", "Orders", "JoinExternal"]
    body = [c for c in s.calls[4:] if c != "FinishExternal"]
    assert body == [x for e in range(E) for x in ("ReportEpoch", f"EpochDone:{e}")]
    assert s.calls[-1] == "FinishExternal"
    assert [d.rows_sent for d in s.done] == [N] * E and all(d.samples == N for d in s.done)
    assert all(d.train_seconds > 0 for d in s.done)
    # float64 logits from numpy stay float64: the double's confidence matches to 1e-12.
    np.testing.assert_allclose(coord.workers.confidence(N), expected, rtol=0, atol=1e-12)
    assert result.state == "succeeded" and result.job_id == "job-1" and result.epochs == E
    assert s.heartbeats >= 1


def test_a_bad_batch_discards_its_epoch_and_the_epoch_can_be_recorded_again(coord, tmp_path):
    x, w, y = model_logits()
    with Recorder(tmp_path / "out", N, K, coordinator=coord.url, token=TOKEN) as rec:
        rec.record(np.arange(10), x[:10] @ w, y[:10])
        with pytest.raises(ValueError, match="epoch 0, batch 1: label 7"):
            rec.record(np.arange(10, 12), x[10:12] @ w, np.array([7, 0]))
        rec.record(np.arange(20, 30), x[20:30] @ w, y[20:30])  # ignored: the epoch is discarded
        with pytest.raises(ValueError, match="epoch 0, batch 1: label 7.*discarded"):
            rec.end_epoch()
        rec.record(np.arange(N), x @ w, y)
        rec.end_epoch()
        rec.finish()
    s = coord.state
    assert [d.epoch for d in s.done] == [0]
    assert s.done[0].rows_sent == N


def test_an_abort_order_makes_the_next_call_raise(coord, tmp_path):
    from carto._proto import carto_pb2 as pb
    import time

    x, w, y = model_logits()
    rec = Recorder(tmp_path / "out", N, K, coordinator=coord.url, token=TOKEN)
    rec.record(np.arange(10), x[:10] @ w, y[:10])
    coord.send_order(pb.Order(abort=pb.Abort(job_id="job-1", generation=1, reason="rank 1 died")))
    deadline = time.monotonic() + 5
    with pytest.raises(carto.JobAborted, match="rank 1 died"):
        while time.monotonic() < deadline:
            rec.record(np.arange(10, 20), x[10:20] @ w, y[10:20])
            time.sleep(0.01)
    rec.close()


def test_an_exception_in_the_loop_reports_a_failure(coord, tmp_path):
    with pytest.raises(RuntimeError):
        with Recorder(tmp_path / "out", N, K, coordinator=coord.url, token=TOKEN, job="job-1"):
            raise RuntimeError("CUDA out of memory")
    s = coord.state
    assert s.calls[0] == "Register"  # job= joins, no SubmitJob
    assert s.failures and "CUDA out of memory" in s.failures[0].message and not s.failures[0].invalid_input


def test_the_token_is_required(coord, tmp_path):
    with pytest.raises(carto.CoordinatorError, match="UNAUTHENTICATED"):
        Recorder(tmp_path / "out", N, K, coordinator=coord.url, token="wrong")
