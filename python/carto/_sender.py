"""The background sender: turns recorded batches into Arrow chunks and
streams them through a transport, one stream per epoch.

`record` hands batches over through a bounded queue: when the sender falls
behind, `record` blocks (back-pressure) instead of buffering without limit.
At most `queue_size` batches wait in the queue, one chunk of rows waits in
the builder, and the transport's own stream queue holds a few chunks.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, List, Optional, Protocol, Union

import numpy as np

from ._validate import BatchError, HostBatch
from ._wire import ChunkBuilder


class EpochStreamLike(Protocol):
    def send(self, chunk: bytes) -> None: ...
    def close(self) -> int: ...
    def cancel(self) -> None: ...


class Transport(Protocol):
    """Where an epoch's chunks and its end go. `open_epoch` starts one stream
    (one ReportEpoch call); `epoch_done` reports the epoch's end and returns
    whether the coordinator wants the loop to stop."""

    def open_epoch(self, epoch: int) -> EpochStreamLike: ...
    def epoch_done(self, stats: "EpochStats") -> bool: ...


@dataclass
class EpochStats:
    epoch: int
    rows_sent: int = 0
    samples: int = 0          # distinct samples
    duplicates: int = 0       # repeated sample ids of the epoch, not sent
    loss_sum: float = 0.0     # cross-entropy of the sent rows
    correct: int = 0
    train_seconds: float = 0.0
    stop: bool = False        # the coordinator asked to stop


@dataclass
class _End:
    epoch: int
    train_seconds: float
    reply: "Future[EpochStats]"


@dataclass
class _Discard:
    epoch: int
    reply: "Future[None]"


@dataclass
class _Poison:
    epoch: int


_STOP = object()

# Host batches are handed to the sender thread this many rows at a time: one
# queue operation, and one pass of its numpy work, per ~4k rows instead of per
# training batch (the per-batch hand-off cost an MLP epoch of 64-row batches a
# quarter of its time; coalesced, about 4%).
COALESCE_ROWS = 4096
_Item = Union[HostBatch, _End, _Discard, _Poison, object]


class _Epoch:
    def __init__(self, epoch: int, num_samples: int) -> None:
        self.stats = EpochStats(epoch)
        self.seen = np.zeros(num_samples, dtype=bool)
        self.stream: Optional[EpochStreamLike] = None
        self.poisoned = False
        self.error: Optional[BatchError] = None


class Sender:
    def __init__(
        self,
        transport: Transport,
        num_samples: int,
        num_classes: int,
        max_chunk_bytes: int,
        queue_size: int = 8,
        coalesce_rows: int = COALESCE_ROWS,
    ) -> None:
        self.transport = transport
        self.num_samples = num_samples
        self.num_classes = num_classes
        self.builder = ChunkBuilder(num_classes, max_chunk_bytes)
        self.queue: "queue.Queue[_Item]" = queue.Queue(maxsize=queue_size)
        self._fatal: Optional[BaseException] = None
        self._deferred: Optional[BatchError] = None  # a value fault found here, not yet raised
        self._epoch: Optional[_Epoch] = None
        self.coalesce_rows = coalesce_rows
        self._pending: List[HostBatch] = []
        self._pending_rows = 0
        self._thread = threading.Thread(target=self._run, name="carto-sender", daemon=True)
        self._thread.start()

    # ---- the training thread's side ----------------------------------------
    def _put(self, item: _Item) -> None:
        while True:
            self.raise_fatal()
            if not self._thread.is_alive():
                raise RuntimeError("carto: the sender thread has stopped")
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def raise_fatal(self) -> None:
        if self._fatal is not None:
            raise self._fatal

    def take_deferred(self) -> Optional[BatchError]:
        """A value fault the sender found in a CUDA batch, once."""
        e, self._deferred = self._deferred, None
        return e

    def put(self, batch: HostBatch) -> None:
        if batch.event is not None or not batch.checked:
            # A GPU batch waits on its copy in the sender thread: not coalesced.
            self._flush()
            self._put(batch)
            return
        self._pending.append(batch)
        self._pending_rows += len(batch.ids)
        if self._pending_rows >= self.coalesce_rows:
            self._flush()

    def _flush(self) -> None:
        """Hands the coalesced host batches to the sender thread as one."""
        if not self._pending:
            return
        first = self._pending[0]
        if len(self._pending) == 1:
            item = first
        else:
            parts = self._pending
            item = HostBatch(
                first.epoch,
                first.index,
                np.concatenate([p.ids for p in parts]),
                np.concatenate([p.logits for p in parts]),
                np.concatenate([p.labels for p in parts]),
            )
        self._pending, self._pending_rows = [], 0
        self._put(item)

    def poison(self, epoch: int) -> None:
        self._flush()
        self._put(_Poison(epoch))

    def end_epoch(self, epoch: int, train_seconds: float) -> EpochStats:
        self._flush()
        fut: "Future[EpochStats]" = Future()
        self._put(_End(epoch, train_seconds, fut))
        return self._wait(fut)

    def discard_epoch(self, epoch: int) -> None:
        self._pending, self._pending_rows = [], 0
        fut: "Future[None]" = Future()
        self._put(_Discard(epoch, fut))
        self._wait(fut)

    def _wait(self, fut: "Future[Any]") -> Any:
        while True:
            try:
                return fut.result(timeout=0.1)
            except FutureTimeout:
                pass
            self.raise_fatal()
            if not self._thread.is_alive():
                raise RuntimeError("carto: the sender thread has stopped")

    def close(self, timeout: float = 10.0) -> None:
        """Stops the thread (an open epoch stream is cancelled)."""
        if self._thread.is_alive():
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    self.queue.put(_STOP, timeout=0.1)
                    break
                except queue.Full:
                    if not self._thread.is_alive():
                        break
            self._thread.join(max(0.0, deadline - time.monotonic()))

    # ---- the sender thread ------------------------------------------------
    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is _STOP:
                self._drop_epoch()
                return
            if self._fatal is not None:
                # Keep draining so that the training thread never blocks on a dead sender.
                if isinstance(item, (_End, _Discard)):
                    item.reply.set_exception(self._fatal)
                continue
            try:
                self._handle(item)
            except BaseException as e:  # noqa: BLE001 - handed to the training thread
                self._fatal = e
                self._drop_epoch()
                if isinstance(item, (_End, _Discard)) and not item.reply.done():
                    item.reply.set_exception(e)

    def _current(self, epoch: int) -> _Epoch:
        if self._epoch is None or self._epoch.stats.epoch != epoch:
            self._drop_epoch()
            self._epoch = _Epoch(epoch, self.num_samples)
        return self._epoch

    def _drop_epoch(self) -> None:
        if self._epoch is not None and self._epoch.stream is not None:
            self._epoch.stream.cancel()
        self._epoch = None
        self.builder.clear()

    def _send(self, ep: _Epoch, chunks: "list[bytes]") -> None:
        for c in chunks:
            if ep.stream is None:
                ep.stream = self.transport.open_epoch(ep.stats.epoch)
            ep.stream.send(c)

    def _handle(self, item: _Item) -> None:
        if isinstance(item, HostBatch):
            ep = self._current(item.epoch)
            if ep.poisoned:
                return
            try:
                ids, logits, labels = item.arrays(self.num_samples, self.num_classes)
            except BatchError as e:
                self._deferred = e
                ep.error = e
                self._poison(ep)
                return
            self._add(ep, ids.astype(np.int64, copy=False), logits, labels.astype(np.int64, copy=False))
        elif isinstance(item, _Poison):
            self._poison(self._current(item.epoch))
        elif isinstance(item, _End):
            ep = self._current(item.epoch)
            if ep.poisoned:
                item.reply.set_exception(ep.error or RuntimeError(f"carto: epoch {item.epoch} was discarded"))
                self._drop_epoch()
                return
            self._send(ep, self.builder.flush())
            stats = ep.stats
            stats.train_seconds = item.train_seconds
            if ep.stream is not None:
                acknowledged = ep.stream.close()
                ep.stream = None
                if acknowledged != stats.rows_sent:
                    raise RuntimeError(
                        f"carto: epoch {stats.epoch}: the coordinator acknowledged {acknowledged} rows of {stats.rows_sent} sent"
                    )
            stats.stop = self.transport.epoch_done(stats)
            self._epoch = None
            item.reply.set_result(stats)
        elif isinstance(item, _Discard):
            if self._epoch is not None and self._epoch.stats.epoch == item.epoch:
                self._drop_epoch()
            item.reply.set_result(None)

    def _poison(self, ep: _Epoch) -> None:
        ep.poisoned = True
        if ep.stream is not None:
            ep.stream.cancel()
            ep.stream = None
        self.builder.clear()

    def _add(self, ep: _Epoch, ids: np.ndarray, logits: np.ndarray, labels: np.ndarray) -> None:
        # The first row of a sample in an epoch is its record; repeats (a
        # sampler with replacement) are dropped, never sent twice.
        first = ~ep.seen[ids]
        if len(ids) > 1:
            _, where = np.unique(ids, return_index=True)
            once = np.zeros(len(ids), dtype=bool)
            once[where] = True
            first &= once
        if not first.all():
            ep.stats.duplicates += int((~first).sum())
            ids, logits, labels = ids[first], logits[first], labels[first]
        if len(ids) == 0:
            return
        ep.seen[ids] = True
        z = logits.astype(np.float64, copy=False)
        m = z.max(axis=1)
        lse = m + np.log(np.exp(z - m[:, None]).sum(axis=1))
        rows = np.arange(len(ids))
        ep.stats.loss_sum += float((lse - z[rows, labels]).sum())
        ep.stats.correct += int((z.argmax(axis=1) == labels).sum())
        ep.stats.rows_sent += len(ids)
        ep.stats.samples += len(ids)
        self._send(ep, self.builder.append(ids, labels, logits))
