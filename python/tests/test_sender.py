import time

import numpy as np
import pytest

from carto._sender import Sender
from carto._validate import BatchError, prepare
from fakes import FakeTransport

N, K = 1000, 3


def batch(epoch, index, ids, seed=0):
    rng = np.random.default_rng(seed + index)
    logits = rng.standard_normal((len(ids), K)).astype(np.float32)
    return prepare(epoch, index, np.asarray(ids), logits, np.asarray(ids) % K, N, K), logits


def test_an_epoch_is_one_stream_then_epoch_done():
    t = FakeTransport()
    s = Sender(t, N, K, 20 * 1024, queue_size=4)
    sent = []
    for i in range(10):
        b, logits = batch(0, i, range(i * 50, i * 50 + 50))
        s.put(b)
        sent.append(logits)
    stats = s.end_epoch(0, 1.5)
    s.close()
    assert len(t.streams) == 1 and t.streams[0].closed
    assert len(t.streams[0].chunks) > 1  # several chunks, one call
    table = t.committed(0)
    assert table.column("sample_id").to_numpy().tolist() == list(range(500))
    np.testing.assert_array_equal(np.stack(table.column("logits").to_numpy(zero_copy_only=False)), np.concatenate(sent))
    assert stats.rows_sent == 500 and stats.samples == 500 and stats.train_seconds == 1.5
    z = np.concatenate(sent).astype(np.float64)
    y = np.arange(500) % K
    loss = np.log(np.exp(z).sum(1)) - z[np.arange(500), y]
    assert stats.loss_sum == pytest.approx(loss.sum(), rel=1e-9)
    assert stats.correct == int((z.argmax(1) == y).sum())
    assert t.done == [stats]


def test_repeated_samples_of_an_epoch_are_sent_once():
    t = FakeTransport()
    s = Sender(t, N, K, 20 * 1024)
    s.put(batch(0, 0, [1, 2, 3, 2])[0])
    s.put(batch(0, 1, [3, 4])[0])
    stats = s.end_epoch(0, 0.0)
    s.close()
    assert t.committed(0).column("sample_id").to_numpy().tolist() == [1, 2, 3, 4]
    assert stats.duplicates == 2 and stats.rows_sent == 4


def test_small_batches_are_handed_over_together_and_arrive_as_sent():
    t = FakeTransport()
    s = Sender(t, N, K, 20 * 1024, coalesce_rows=10)
    for i in range(7):  # 4 rows each: handed over at 12, 24 rows, the rest at the end
        s.put(batch(0, i, range(i * 4, i * 4 + 4))[0])
    assert len(s._pending) == 1
    stats = s.end_epoch(0, 0.0)
    s.close()
    assert t.committed(0).column("sample_id").to_numpy().tolist() == list(range(28))
    assert stats.rows_sent == 28


def test_an_empty_epoch_reports_done_without_a_stream():
    t = FakeTransport()
    s = Sender(t, N, K, 20 * 1024)
    stats = s.end_epoch(0, 0.0)
    s.close()
    assert t.streams == [] and stats.rows_sent == 0 and len(t.done) == 1


def test_record_blocks_when_the_sink_is_slow_instead_of_growing_memory():
    t = FakeTransport(delay=0.05)
    # 17 KiB chunks of rows of 3 logits: 36 rows each, so every batch below is one chunk.
    s = Sender(t, N, K, 17 * 1024, queue_size=2, coalesce_rows=1)  # every batch handed over at once
    peak = 0
    started = time.monotonic()
    for i in range(20):
        s.put(batch(0, i, range(i * 36, i * 36 + 36))[0])
        peak = max(peak, s.queue.qsize())
    put_time = time.monotonic() - started
    assert peak <= 2
    # 20 chunks at 50 ms each: the puts must have waited for most of them.
    assert put_time > 0.6, put_time
    s.end_epoch(0, 0.0)
    s.close()
    assert len(t.streams[0].chunks) == 20


def test_a_poisoned_epoch_is_cancelled_and_never_done():
    t = FakeTransport()
    s = Sender(t, N, K, 17 * 1024)
    s.put(batch(0, 0, range(100))[0])
    s.poison(0)
    s.discard_epoch(0)
    # the same epoch, recorded again, is a fresh stream
    s.put(batch(0, 0, range(50))[0])
    s.end_epoch(0, 0.0)
    s.close()
    assert t.streams[0].cancelled and not t.streams[0].closed
    assert t.committed(0).num_rows == 50
    assert len(t.done) == 1


class Deferred:
    """A batch whose values are only checked by the sender (as CUDA batches are)."""


def test_a_fault_found_by_the_sender_poisons_the_epoch():
    t = FakeTransport()
    s = Sender(t, N, K, 17 * 1024)
    good, _ = batch(0, 0, range(10))
    bad, _ = batch(0, 1, range(10, 20))
    bad.logits[3, 1] = np.nan
    bad.checked = False  # as for a CUDA batch: checked after the copy
    s.put(good)
    s.put(bad)
    with pytest.raises(BatchError, match="epoch 0, batch 1: logits of row 3"):
        s.end_epoch(0, 0.0)
    assert isinstance(s.take_deferred(), BatchError)
    s.close()
    assert t.done == []


def test_a_transport_failure_is_raised_to_the_training_thread():
    class Broken(FakeTransport):
        def open_epoch(self, epoch):
            raise ConnectionError("coordinator gone")

    s = Sender(Broken(), N, K, 17 * 1024, queue_size=1)
    with pytest.raises(ConnectionError, match="coordinator gone"):
        for i in range(50):
            s.put(batch(0, i, range(i * 10, i * 10 + 10))[0])
        s.end_epoch(0, 0.0)
    s.close()
