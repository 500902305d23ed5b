#!/usr/bin/env python3
"""datamap.html at scale: writes a synthetic metrics.parquet of N samples (the
contract's columns; 10 classes, 5 epochs, a realistic spread of confidence and
variability), times `carto map --out map.html` (median of RUNS), reports the
file's size, and the first render in headless chromium (page load to the
scatter drawn, median of RUNS).

    python bench/datamap_html.py --carto target/release/carto --samples 1000000 --runs 3
"""
import argparse
import os
import statistics
import subprocess
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def metrics(n, seed=0):
    rng = np.random.default_rng(seed)
    conf = rng.beta(5, 2, n)
    var = np.abs(rng.normal(0, 0.08, n)) * (1 - np.abs(conf - 0.5))
    epochs = 5
    corr = np.round(np.clip(conf + rng.normal(0, 0.15, n), 0, 1) * epochs) / epochs
    return pa.table({
        "sample_id": pa.array(np.arange(n), pa.int64()),
        "label": pa.array(rng.integers(0, 10, n), pa.int64()),
        "epochs": pa.array(np.full(n, epochs), pa.int32()),
        "confidence": conf, "variability": var, "correctness": corr,
        "aum": conf * 4 - 2, "el2n": (1 - conf) * 1.2, "threshold_closeness": conf * (1 - conf),
        "correct_count": pa.array((corr * epochs).astype(np.int32), pa.int32()),
        "forgetting_events": pa.array(rng.integers(0, 3, n), pa.int32()),
        "first_learned_epoch": pa.array(np.zeros(n, np.int32), pa.int32()),
    })


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--carto", required=True)
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as d:
        m = os.path.join(d, "metrics.parquet")
        pq.write_table(metrics(a.samples), m)
        out = os.path.join(d, "map.html")
        writes = []
        for _ in range(a.runs):
            t0 = time.perf_counter()
            subprocess.run([a.carto, "map", "--metrics", m, "--out", out], check=True, capture_output=True)
            writes.append(time.perf_counter() - t0)
        size = os.path.getsize(out)
        renders = []
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path="/usr/bin/chromium",
                                  args=["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"])
            for _ in range(a.runs):
                page = b.new_page(viewport={"width": 1300, "height": 820})
                t0 = time.perf_counter()
                page.goto("file://" + out)
                page.wait_for_selector("body[data-ready=true]", timeout=120000)
                renders.append(time.perf_counter() - t0)
                page.close()
            b.close()
    print(f"{a.samples:,} samples: carto map --out map.html {statistics.median(writes):.2f} s "
          f"[{min(writes):.2f}-{max(writes):.2f}], {size / 2**20:.1f} MiB; first render in chromium "
          f"{statistics.median(renders):.2f} s [{min(renders):.2f}-{max(renders):.2f}] (median of {a.runs})")


if __name__ == "__main__":
    main()
