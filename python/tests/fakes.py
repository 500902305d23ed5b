"""A transport that keeps what it is sent (optionally slowly)."""

from __future__ import annotations

import threading
import time
from typing import List, Tuple

import pyarrow as pa

from carto import _wire


class FakeStream:
    def __init__(self, owner: "FakeTransport", epoch: int) -> None:
        self.owner, self.epoch = owner, epoch
        self.chunks: List[bytes] = []
        self.cancelled = False
        self.closed = False

    def send(self, chunk: bytes) -> None:
        if self.owner.delay:
            time.sleep(self.owner.delay)
        self.chunks.append(chunk)

    def close(self) -> int:
        self.closed = True
        return sum(_wire.decode_chunk(c).num_rows for c in self.chunks)

    def cancel(self) -> None:
        self.cancelled = True


class FakeTransport:
    def __init__(self, delay: float = 0.0, stop_after: "int | None" = None) -> None:
        self.delay = delay
        self.stop_after = stop_after
        self.streams: List[FakeStream] = []
        self.done: List[object] = []
        self.lock = threading.Lock()

    def open_epoch(self, epoch: int) -> FakeStream:
        s = FakeStream(self, epoch)
        self.streams.append(s)
        return s

    def epoch_done(self, stats: object) -> bool:
        self.done.append(stats)
        return self.stop_after is not None and len(self.done) >= self.stop_after

    def committed(self, epoch: int) -> pa.Table:
        s = [s for s in self.streams if s.epoch == epoch and s.closed]
        assert len(s) == 1, f"epoch {epoch}: {len(s)} closed streams"
        return pa.concat_tables([_wire.decode_chunk(c) for c in s[0].chunks])
