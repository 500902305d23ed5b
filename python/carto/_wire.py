"""Arrow encoding of logits rows and their chunking for `EpochChunk`.

A chunk is one self-contained Arrow IPC stream (schema message, record
batches, end marker) of rows with the schema

    sample_id: int64 (not null)
    label:     int64 (not null)
    logits:    fixed_size_list<item: float32>[K] (not null)

(float64 logits stay float64), at most `max_bytes` long, so the coordinator can
decode and check every chunk on its own.
"""

from __future__ import annotations

from typing import Iterator, List

import numpy as np
import pyarrow as pa

SAMPLE_ID = "sample_id"
LABEL = "label"
LOGITS = "logits"

#: Room kept in a chunk for the schema message, batch metadata and padding.
CHUNK_OVERHEAD = 16 * 1024


def logits_schema(num_classes: int, dtype: "np.dtype[np.floating] | type" = np.float32) -> pa.Schema:
    """The wire schema of logits rows with `num_classes` columns."""
    value = pa.float64() if np.dtype(dtype) == np.float64 else pa.float32()
    # The list's child field is arrow's default ("item", nullable), the same
    # as arrow-rs's Field::new_list_field.
    return pa.schema(
        [
            pa.field(SAMPLE_ID, pa.int64(), nullable=False),
            pa.field(LABEL, pa.int64(), nullable=False),
            pa.field(LOGITS, pa.list_(pa.field("item", value), num_classes), nullable=False),
        ]
    )


def wire_dtype(logits: np.ndarray) -> "np.dtype[np.floating]":
    """float64 logits stay float64; everything else is sent as float32."""
    return np.dtype(np.float64) if logits.dtype == np.float64 else np.dtype(np.float32)


def to_batch(ids: np.ndarray, labels: np.ndarray, logits: np.ndarray) -> pa.RecordBatch:
    """One record batch of rows; `logits` is [B, K] float32 or float64."""
    k = logits.shape[1]
    dtype = wire_dtype(logits)
    values = np.ascontiguousarray(logits, dtype=dtype).reshape(-1)
    schema = logits_schema(k, dtype)
    flat = pa.array(values, type=schema.field(LOGITS).type.value_type)
    return pa.RecordBatch.from_arrays(
        [
            pa.array(np.ascontiguousarray(ids, dtype=np.int64), type=pa.int64()),
            pa.array(np.ascontiguousarray(labels, dtype=np.int64), type=pa.int64()),
            pa.FixedSizeListArray.from_arrays(flat, type=schema.field(LOGITS).type),
        ],
        schema=schema,
    )


def encode_batch(batch: pa.RecordBatch) -> bytes:
    """One record batch as a standalone Arrow IPC stream."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as w:
        w.write_batch(batch)
    return sink.getvalue().to_pybytes()


def row_bytes(num_classes: int, itemsize: int = 4) -> int:
    """Bytes one row takes in a record batch body."""
    return 8 + 8 + num_classes * itemsize


def rows_per_chunk(max_bytes: int, num_classes: int, itemsize: int = 4) -> int:
    """How many rows a chunk of at most `max_bytes` holds, by estimate."""
    per_row = row_bytes(num_classes, itemsize)
    if max_bytes <= CHUNK_OVERHEAD + per_row:
        raise ValueError(f"chunk limit {max_bytes} bytes is too small for rows of {num_classes} logits")
    return max(1, (max_bytes - CHUNK_OVERHEAD) // per_row)


def encode_rows(ids: np.ndarray, labels: np.ndarray, logits: np.ndarray, max_bytes: int) -> Iterator[bytes]:
    """Splits rows into IPC chunks of at most `max_bytes` each (in order)."""
    n = len(ids)
    step = rows_per_chunk(max_bytes, logits.shape[1], wire_dtype(logits).itemsize)
    start = 0
    while start < n:
        end = min(start + step, n)
        chunk = encode_batch(to_batch(ids[start:end], labels[start:end], logits[start:end]))
        if len(chunk) > max_bytes:
            if end - start == 1:
                raise ValueError(f"one row of {logits.shape[1]} logits does not fit in a {max_bytes}-byte chunk")
            # The estimate was off: halve and retry this range.
            step = max(1, (end - start) // 2)
            continue
        yield chunk
        start = end


class ChunkBuilder:
    """Accumulates rows and cuts them into full chunks as they fill; `flush`
    returns the rest. Keeps at most one chunk's worth of rows (plus the
    batch being appended)."""

    def __init__(self, num_classes: int, max_bytes: int) -> None:
        self.num_classes = num_classes
        self.max_bytes = max_bytes
        self._ids: List[np.ndarray] = []
        self._labels: List[np.ndarray] = []
        self._logits: List[np.ndarray] = []
        self._rows = 0
        self._dtype: "np.dtype[np.floating] | None" = None

    @property
    def pending_rows(self) -> int:
        return self._rows

    def _step(self) -> int:
        itemsize = (self._dtype or np.dtype(np.float32)).itemsize
        return rows_per_chunk(self.max_bytes, self.num_classes, itemsize)

    def append(self, ids: np.ndarray, labels: np.ndarray, logits: np.ndarray) -> List[bytes]:
        """Adds rows; returns the chunks that are now full."""
        dtype = wire_dtype(logits)
        out: List[bytes] = []
        if self._dtype is not None and dtype != self._dtype:
            # One schema per chunk: a change of float width closes the chunk.
            out.extend(self.flush())
        self._dtype = dtype
        self._ids.append(ids)
        self._labels.append(labels)
        self._logits.append(logits.astype(dtype, copy=False))
        self._rows += len(ids)
        step = self._step()
        if self._rows >= step:
            ids_all, labels_all, logits_all = self._take()
            full = (len(ids_all) // step) * step
            out.extend(encode_rows(ids_all[:full], labels_all[:full], logits_all[:full], self.max_bytes))
            if full < len(ids_all):
                self._ids = [ids_all[full:]]
                self._labels = [labels_all[full:]]
                self._logits = [logits_all[full:]]
                self._rows = len(ids_all) - full
        return out

    def _take(self) -> "tuple[np.ndarray, np.ndarray, np.ndarray]":
        ids = np.concatenate(self._ids) if self._ids else np.empty(0, np.int64)
        labels = np.concatenate(self._labels) if self._labels else np.empty(0, np.int64)
        logits = (
            np.concatenate(self._logits)
            if self._logits
            else np.empty((0, self.num_classes), self._dtype or np.float32)
        )
        self._ids, self._labels, self._logits, self._rows = [], [], [], 0
        return ids, labels, logits

    def flush(self) -> List[bytes]:
        """The chunks of every pending row."""
        if self._rows == 0:
            return []
        ids, labels, logits = self._take()
        return list(encode_rows(ids, labels, logits, self.max_bytes))

    def clear(self) -> None:
        self._ids, self._labels, self._logits, self._rows = [], [], [], 0


def decode_chunk(chunk: bytes) -> pa.Table:
    """Decodes one chunk (for tests and debugging)."""
    return pa.ipc.open_stream(pa.py_buffer(chunk)).read_all()
