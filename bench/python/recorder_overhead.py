#!/usr/bin/env python3
"""What carto's Python `Recorder` costs a plain PyTorch training loop.

For each task, runs the same loop (same seed, same data order) with and
without a Recorder, interleaved, and reports the median epoch time of each
and the overhead: (with − without) / without. The Recorder's embedded
coordinator (`carto serve`, from CARTO_BIN) runs on the same machine, so its
ingest work is part of the cost. Then streams synthetic rows from one rank
as fast as `record` takes them: rows/s, end_epoch included.

    python recorder_overhead.py --fashion fashion-60k.parquet --reviews reviews.csv [--runs 3]
"""
import argparse
import copy
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import torch

from carto import Recorder

torch.set_num_threads(1)  # the other core is the coordinator's


def fashion(path):
    t = pq.read_table(path)
    x = np.stack(t.column("pixels").to_numpy(zero_copy_only=False)).astype(np.float32) / 255.0
    y = t.column("label").to_numpy().astype(np.int64)
    model = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    return "fashion-60k mlp", torch.from_numpy(x), torch.from_numpy(y), model, 10


def reviews(path, buckets=1 << 16):
    t = pcsv.read_csv(path)
    names = sorted(set(t.column("label").to_pylist()))
    y = np.array([names.index(v) for v in t.column("label").to_pylist()], dtype=np.int64)
    # Hashed word ids, padded to the longest review (an EmbeddingBag model).
    docs = [[zlib.crc32(w.encode()) % buckets for w in s.lower().split()] or [0] for s in t.column("text").to_pylist()]
    width = max(len(d) for d in docs)
    x = np.zeros((len(docs), width), dtype=np.int64)
    for i, d in enumerate(docs):
        x[i, : len(d)] = d

    class Bow(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.EmbeddingBag(buckets, 64, mode="mean", padding_idx=0)
            self.out = torch.nn.Linear(64, len(names))

        def forward(self, ids):
            return self.out(self.emb(ids))

    return "reviews-12.8k bow", torch.from_numpy(x), torch.from_numpy(y), Bow(), len(names)


def train(x, y, model_proto, k, epochs, out, record, seed=0):
    """Epoch times of one run; `out` set: with a Recorder."""
    torch.manual_seed(seed)
    model = model_proto()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    n = len(y)
    rec = Recorder(out, num_samples=n, num_classes=k) if record else None
    times = []
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(n, generator=g)
        for s in range(0, n, 64):
            ids = order[s : s + 64]
            logits = model(x[ids])
            if rec is not None:
                rec.record(ids, logits, y[ids])
            loss = torch.nn.functional.cross_entropy(logits, y[ids])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if rec is not None:
            rec.end_epoch()
        times.append(time.perf_counter() - start)
    if rec is not None:
        rec.finish()
    return times


def stream_rate(rows, k, batch, work):
    """Rows/s one rank streams: numpy logits, `record` then `end_epoch`."""
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((batch, k)).astype(np.float32)
    labels = rng.integers(0, k, batch)
    with Recorder(work, num_samples=rows, num_classes=k) as rec:
        start = time.perf_counter()
        for s in range(0, rows, batch):
            ids = np.arange(s, min(s + batch, rows))
            rec.record(ids, logits[: len(ids)], labels[: len(ids)])
        rec.end_epoch()
        seconds = time.perf_counter() - start
        rec.finish()
    return rows / seconds


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--fashion", required=True)
    p.add_argument("--reviews", required=True)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--stream-rows", type=int, default=4_000_000)
    p.add_argument("--work", default=tempfile.mkdtemp())
    a = p.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"carto Recorder overhead: {a.runs} interleaved runs × {a.epochs} epochs, batch 64, 1 torch thread")
    for task in (lambda: fashion(a.fashion), lambda: reviews(a.reviews)):
        name, x, y, model, k = task()
        make = lambda m=model: copy.deepcopy(m)  # the same initial weights every run  # noqa: E731
        plain, recorded = [], []
        for run in range(a.runs):
            # Epoch 0 warms up allocators and the coordinator's tables: not timed.
            plain += train(x, y, make, k, a.epochs, None, False)[1:]
            recorded += train(x, y, make, k, a.epochs, work / f"{name.split()[0]}-{run}", True)[1:]
        mp, mr = statistics.median(plain), statistics.median(recorded)
        print(
            f"{name:18s} rows {len(y):6d}  epoch without {mp:6.3f} s  with {mr:6.3f} s  "
            f"overhead {100 * (mr - mp) / mp:+5.1f}%  (per-run epochs without {[round(t, 3) for t in plain]}, "
            f"with {[round(t, 3) for t in recorded]})"
        )
        sys.stdout.flush()
    for k in (10, 100):
        rate = stream_rate(a.stream_rows, k, 4096, work / f"stream-{k}")
        print(f"stream one rank    {a.stream_rows} rows, {k} classes, batches of 4096: {rate / 1e6:5.2f}M rows/s")


if __name__ == "__main__":
    main()
