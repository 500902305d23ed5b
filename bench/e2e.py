#!/usr/bin/env python3
"""End to end: `carto run` against bench/python/torch_reference.py (plain
PyTorch doing the same training, the same dynamics recording and the same
Parquet outputs), each with dynamics recording on and off.

Runs are interleaved (carto, carto without recording, python, python without
recording, then again), every run a fresh process; wall time is measured
around the whole process (data loading, training, recording, metrics, and
for carto its coordinator, worker and the gRPC between them). Prints medians,
min-max spreads and the ratios the performance issue asks for, and checks
that both tools' metrics.parquet have the same rows and columns.

    python bench/e2e.py --carto target/release/carto --runs 3 --work out/bench/e2e \
        --job fmnist:out/bench/fashion-60k.parquet --job reviews:examples/rotten_tomatoes/reviews.csv
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REFERENCE = os.path.join(HERE, "python", "torch_reference.py")

# The same hyperparameters, spelled out for both tools (carto's defaults).
COMMON = ["--epochs", "5", "--batch-size", "64", "--lr", "0.001", "--seed", "42"]
JOBS = {
    "fmnist": {"cols": ["--label-col", "label", "--features-col", "pixels"], "model": ["--model", "mlp", "--hidden", "256"]},
    "reviews": {
        "cols": ["--label-col", "label", "--text-col", "text"],
        "model": ["--model", "bow", "--embed-dim", "64", "--hash-bits", "20"],
    },
}


def timed(argv, env=None):
    t0 = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return wall


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--carto", required=True)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads for both tools")
    ap.add_argument("--work", default="out/bench/e2e")
    ap.add_argument("--job", action="append", required=True, help="NAME:DATA with NAME in " + ", ".join(JOBS))
    a = ap.parse_args()
    env = dict(os.environ, CARTO_LOG="error")
    summary = {}
    for spec in a.job:
        name, data = spec.split(":", 1)
        job = JOBS[name]
        out = {k: os.path.join(a.work, f"{name}-{k}") for k in ["carto", "carto-norec", "python", "python-norec"]}
        carto = [a.carto, "run", "--data", data, *job["cols"], *job["model"], *COMMON,
                 "--workers", "1", "--threads-per-worker", str(a.threads), "--overwrite", "-q"]
        python = [a.python, REFERENCE, "--data", data, *job["cols"], *job["model"], *COMMON,
                  "--threads", str(a.threads)]
        cmds = {
            "carto": carto + ["--out", out["carto"]],
            "carto-norec": carto + ["--out", out["carto-norec"], "--record-dynamics", "false"],
            "python": python + ["--out", out["python"]],
            "python-norec": python + ["--out", out["python-norec"], "--no-record"],
        }
        walls = {k: [] for k in cmds}
        for r in range(a.runs):
            for k, argv in cmds.items():
                walls[k].append(timed(argv, env))
                print(f"{name} run {r + 1}/{a.runs} {k:13s} {walls[k][-1]:7.2f} s", flush=True)
        check_same_outputs(out["carto"], out["python"])
        med = {k: statistics.median(v) for k, v in walls.items()}
        ratio = med["carto"] / med["python"]
        rec_carto = med["carto"] / med["carto-norec"] - 1
        rec_python = med["python"] / med["python-norec"] - 1
        summary[name] = {"walls": walls, "median": med, "carto_over_python": ratio,
                         "recording_overhead_carto": rec_carto, "recording_overhead_python": rec_python,
                         "accuracy": final_accuracy(out)}
        print(f"\n{name}: median wall (min-max) over {a.runs} runs")
        for k, v in walls.items():
            print(f"  {k:13s} {med[k]:7.2f} s ({min(v):.2f}-{max(v):.2f})")
        print(f"  carto / python wall: {ratio:.2f}  (target <= 0.80)")
        print(f"  recording overhead: carto {100 * rec_carto:+.1f}% (target <= 3%), python {100 * rec_python:+.1f}%")
        print(f"  final training accuracy: {summary[name]['accuracy']}\n", flush=True)
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != 'walls'} for k, v in summary.items()}))


def final_accuracy(out):
    acc = {}
    for k, d in out.items():
        with open(os.path.join(d, "job.json")) as f:
            j = json.load(f)
        epochs = j.get("epochs") or []
        acc[k] = round(epochs[-1]["accuracy"], 4) if epochs else None
    return acc


def check_same_outputs(carto_out, python_out):
    """Both wrote metrics.parquet with the contract's columns for every sample."""
    import pyarrow.parquet as pq

    a = pq.read_table(os.path.join(carto_out, "metrics.parquet"))
    b = pq.read_table(os.path.join(python_out, "metrics.parquet"))
    if a.num_rows != b.num_rows:
        sys.exit(f"metrics rows differ: carto {a.num_rows}, python {b.num_rows}")
    missing = set(b.column_names) - set(a.column_names)
    if missing:
        sys.exit(f"python wrote columns carto lacks: {sorted(missing)}")
    for d in (carto_out, python_out):
        if not os.path.isdir(os.path.join(d, "dynamics", "epoch=4")):
            sys.exit(f"{d}: no dynamics/epoch=4")


if __name__ == "__main__":
    main()
