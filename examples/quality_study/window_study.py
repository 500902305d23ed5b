#!/usr/bin/env python3
"""The mislabel score's window: Fashion-MNIST's first 10,000 training images
with 10% of labels flipped, trained for 20 epochs with the official 10,000
test images as --eval-data. Compares the ranking of the flips (AUROC,
precision at k = #flipped) over the window carto chose (up to the best
held-out accuracy), over all 20 epochs, and over the first 5.

    python examples/quality_study/window_study.py CARTO_BIN FASHION_MNIST_DIR WORK_DIR RESULTS_DIR
    # FASHION_MNIST_DIR: usr/share/datasets/fashion-mnist of Debian's dataset-fashion-mnist
"""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from shared import auroc, precision_at  # noqa: E402

carto, fashion, work, results = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
work.mkdir(parents=True, exist_ok=True)
results.mkdir(parents=True, exist_ok=True)
spec = importlib.util.spec_from_file_location("prepare", HERE.parent / "fashion_mnist" / "prepare.py")
prep = importlib.util.module_from_spec(spec)
spec.loader.exec_module(prep)


def table(images, labels):
    return pa.table({"pixels": pa.array(list(images.reshape(len(images), 784)), pa.list_(pa.uint8())),
                     "label": pa.array(labels.astype(np.int64))})


images = prep.read_idx(fashion, "train-images-idx3-ubyte", 2051, 3)[:10000]
labels = prep.read_idx(fashion, "train-labels-idx1-ubyte", 2049, 1)[:10000].astype(np.int64)
pq.write_table(table(prep.read_idx(fashion, "t10k-images-idx3-ubyte", 2051, 3),
                     prep.read_idx(fashion, "t10k-labels-idx1-ubyte", 2049, 1)), work / "test.parquet")
rows = []
for seed in (0, 1, 2):
    rng = np.random.default_rng(seed)
    noisy = labels.copy()
    flipped = np.zeros(len(noisy), bool)
    chosen = rng.choice(len(noisy), len(noisy) // 10, replace=False)
    flipped[chosen] = True
    for i in chosen:
        noisy[i] = rng.choice([c for c in range(10) if c != noisy[i]])
    data = work / f"flipped-{seed}.parquet"
    pq.write_table(table(images, noisy), data)
    out = work / f"out-{seed}"
    subprocess.run([carto, "run", "--data", str(data), "--label-col", "label", "--features-col", "pixels", "--model", "mlp",
                    "--epochs", "20", "--eval-data", str(work / "test.parquet"), "--out", str(out), "--overwrite", "-q"], check=True)
    m = pl.read_parquet(out / "metrics.parquet")
    job = json.loads((out / "job.json").read_text())
    first5 = work / f"first5-{seed}.parquet"
    subprocess.run([carto, "metrics", "--dynamics", str(out / "dynamics"), "--epochs", "0..5", "--out", str(first5)],
                   check=True, capture_output=True)
    k = int(flipped.sum())
    scores = {"chosen window": m["mislabel_score"].to_numpy(), "all 20 epochs": -m["aum"].to_numpy(),
              "epochs 0..5": -pl.read_parquet(first5)["aum"].to_numpy()}
    row = {"seed": seed, "window": job["label_errors"]["suspect_epochs"], "how": job["label_errors"]["window"],
           **{name: {"auroc": auroc(s, flipped), "precision_at_k": precision_at(s, flipped, k)} for name, s in scores.items()}}
    rows.append(row)
    print(json.dumps(row), flush=True)

lines = ["# The mislabel score's window", "", "Fashion-MNIST 10,000 (mlp), 10% flipped, 20 epochs, `--eval-data` the test set.", "",
         "| seed | chosen window | chosen: AUROC / P@k | all 20 epochs | epochs 0..5 |", "|---|---|---|---|---|"]
for r in rows:
    f = lambda n: f"{r[n]['auroc']:.4f} / {r[n]['precision_at_k']:.3f}"
    lines.append(f"| {r['seed']} | {r['window'][0]}..{r['window'][1]} | {f('chosen window')} | {f('all 20 epochs')} | {f('epochs 0..5')} |")
(results / "results.md").write_text("\n".join(lines) + "\n")
(results / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
print("\n".join(lines))
