#!/usr/bin/env python3
"""Fine-tuning throughput: `carto run --model bert` against the same
fine-tuning in `transformers` + PyTorch (bench/python/transformers_loop.py:
AdamW with decoupled weight decay, linear warmup and decay, gradient clipping,
batches padded to their longest text, the gold probability of every sample
recorded), on the same checkpoint and the same reviews.

Four configurations, interleaved in every round (each run a fresh process):
carto and transformers with batches in shuffled order, then both with
`group_by_length` (transformers' LengthGroupedSampler, carto's
`--group-by-length`). Reports the median training samples/s of each (the
epochs' own timing: forward, backward, step and recording; setup excluded),
the median wall time of the whole process, and the ratios carto / transformers.

    python bench/transformers.py --carto target/release/carto --pretrained DIR \
        --data examples/rotten_tomatoes/reviews.csv --rows 1024 --runs 3
"""
import argparse
import json
import os
import statistics
import sys

import polars as pl

HERE = os.path.dirname(os.path.abspath(__file__))
LOOP = os.path.join(HERE, "python", "transformers_loop.py")
sys.path.insert(0, HERE)
from e2e import timed  # noqa: E402  (the same process timing as bench/e2e.sh)




def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--carto", required=True)
    ap.add_argument("--pretrained", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--rows", type=int, default=1024, help="reviews sampled (seed 1)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads for both")
    ap.add_argument("--work", default="out/bench/transformers")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    data = os.path.join(a.work, f"reviews-{a.rows}.parquet")
    df = pl.read_csv(a.data) if a.data.endswith(".csv") else pl.read_parquet(a.data)
    df.sample(n=min(a.rows, df.height), seed=1, shuffle=True).write_parquet(data)
    env = dict(os.environ, CARTO_LOG="error", OMP_NUM_THREADS=str(a.threads))
    common = ["--epochs", str(a.epochs), "--batch-size", str(a.batch_size), "--max-len", str(a.max_len),
              "--lr", "2e-5", "--seed", "42"]

    def carto(grouped):
        out = os.path.join(a.work, "carto")
        argv = [a.carto, "run", "--data", data, "--label-col", "label", "--text-col", "text", "--model", "bert",
                "--pretrained", a.pretrained, *common, "--threads-per-worker", str(a.threads),
                "--out", out, "--overwrite", "-q"] + (["--group-by-length"] if grouped else [])
        wall = timed(argv, env)
        epochs = json.load(open(os.path.join(out, "job.json")))["epochs"]
        return wall, [e["samples_per_sec"] for e in epochs]

    def hf(grouped):
        out = os.path.join(a.work, "transformers")
        argv = [sys.executable, LOOP, "--data", data, "--text-col", "text", "--label-col", "label",
                "--pretrained", a.pretrained, *common, "--threads", str(a.threads), "--out", out] + \
            (["--group-by-length"] if grouped else [])
        wall = timed(argv, env)
        epochs = json.load(open(os.path.join(out, "result.json")))["epochs"]
        return wall, [e["samples_per_sec"] for e in epochs]

    configs = [("carto", False, carto), ("transformers", False, hf),
               ("carto", True, carto), ("transformers", True, hf)]
    results = {(name, g): {"wall": [], "sps": []} for name, g, _ in configs}
    for r in range(a.runs):
        for name, grouped, fn in configs:
            wall, sps = fn(grouped)
            results[(name, grouped)]["wall"].append(wall)
            results[(name, grouped)]["sps"].extend(sps)
            print(f"run {r + 1}: {name:12s} group_by_length={grouped!s:5s} wall {wall:6.1f} s  "
                  f"samples/s per epoch {', '.join(f'{x:.1f}' for x in sps)}", flush=True)
    print()
    print(f"bert fine-tuning, {a.rows} reviews, {a.epochs} epochs, batch {a.batch_size}, max_len {a.max_len}, "
          f"{a.threads} threads, {a.runs} rounds (median [min-max])")
    med = {}
    for (name, grouped), v in results.items():
        med[(name, grouped)] = statistics.median(v["sps"])
        print(f"  {name:12s} group_by_length={grouped!s:5s} {med[(name, grouped)]:6.1f} samples/s "
              f"[{min(v['sps']):.1f}-{max(v['sps']):.1f}]  wall {statistics.median(v['wall']):6.1f} s")
    print(f"  ratio carto / transformers, shuffled batches:        {med[('carto', False)] / med[('transformers', False)]:.2f}x")
    print(f"  ratio carto / transformers, both group_by_length:    {med[('carto', True)] / med[('transformers', True)]:.2f}x")
    print(f"  ratio carto --group-by-length / transformers default: {med[('carto', True)] / med[('transformers', False)]:.2f}x")


if __name__ == "__main__":
    main()
