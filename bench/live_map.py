#!/usr/bin/env python3
"""The live page at scale: `carto serve --http` with an external job of N
samples fed by carto's Recorder (random logits, 10 classes). After each
committed epoch it times GET /api/jobs/ID/map (the first request builds the
map from the coordinator's accumulators; a second one is served from the
kept map), reports the response's size, and in headless chromium the time
from the commit to the page's redraw of that epoch (the page polls every
second, so up to a second of it is waiting).

    python bench/live_map.py --carto target/release/carto --samples 1000000 --epochs 3
"""
import argparse
import os
import re
import statistics
import subprocess
import tempfile
import time
import urllib.request

import numpy as np


def get(url):
    t0 = time.perf_counter()
    with urllib.request.urlopen(url) as r:
        body = r.read()
    return time.perf_counter() - t0, len(body)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--carto", required=True)
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--epochs", type=int, default=3)
    a = ap.parse_args()
    os.environ["CARTO_BIN"] = a.carto
    import carto
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as d:
        server = subprocess.Popen([a.carto, "serve", "--listen", "127.0.0.1:0", "--state-dir", f"{d}/state",
                                   "--http", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            grpc = page_url = None
            for line in server.stdout:
                if m := re.search(r"serving on (http://\S+)", line):
                    grpc = m.group(1)
                if m := re.search(r"live page on (http://\S+)", line):
                    page_url = m.group(1)
                    break
            n, k = a.samples, 10
            rng = np.random.default_rng(0)
            labels = rng.integers(0, k, n)
            rec = carto.Recorder(f"{d}/out", num_samples=n, num_classes=k, coordinator=grpc)
            job = rec.job_id
            map_url = f"{page_url}api/jobs/{job}/map"
            with sync_playwright() as p:
                b = p.chromium.launch(executable_path="/usr/bin/chromium",
                                      args=["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"])
                page = b.new_page(viewport={"width": 1300, "height": 900})
                page.goto(f"{page_url}?job={job}")
                page.on("pageerror", lambda e: print("pageerror:", e))
                page.wait_for_selector("body[data-live=true]", timeout=60000)
                rows = []
                for epoch in range(a.epochs):
                    ids = np.arange(n)
                    for lo in range(0, n, 65536):
                        hi = min(n, lo + 65536)
                        logits = rng.normal(0, 1, (hi - lo, k)).astype(np.float32)
                        logits[np.arange(hi - lo), labels[lo:hi]] += 0.5 * (epoch + 1)
                        rec.record(ids[lo:hi], logits, labels[lo:hi])
                    rec.end_epoch()
                    committed = time.perf_counter()
                    build, size = get(map_url)
                    kept, _ = get(map_url)
                    page.wait_for_function(f"document.body.dataset.mapEpochs === '{epoch + 1}'", timeout=300000)
                    shown = time.perf_counter() - committed
                    rows.append((build, kept, size, shown))
                    print(f"epoch {epoch + 1}: map built in {build:.2f} s, kept one served in {kept:.3f} s, "
                          f"{size / 2**20:.1f} MiB; redrawn in the page {shown:.2f} s after the commit", flush=True)
                b.close()
            rec.finish()
            med = lambda i: statistics.median(r[i] for r in rows)
            print(f"{n:,} samples, median of {len(rows)} epochs: build {med(0):.2f} s, kept {med(1):.3f} s, "
                  f"{med(2) / 2**20:.1f} MiB, commit → redrawn {med(3):.2f} s")
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
