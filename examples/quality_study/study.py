"""The quality study: does carto find label errors, and does training on the
data map's regions behave as in the paper? Everything runs through `carto`.

1. Rotten Tomatoes (12,808 reviews) is split 80/20 into train and test,
   stratified, with a fixed seed.
2. Mislabel detection: 10% of the training labels are flipped at random (to
   another class); carto maps the noisy set; the flipped samples are scored
   by carto's mislabel score (−aum, the order of suspects.csv) and by plain
   1 − confidence: AUROC and precision at k, on Rotten Tomatoes (bow) and
   Fashion-MNIST 2k (mlp, 10 classes), 3 flip seeds each.
3. Data reduction (the paper's Table): carto maps the clean training set, then
   `carto select` keeps 33% — most ambiguous (variability), hard-to-learn
   (confidence), easy-to-learn (confidence --worst) — or a random 33%, and each
   subset (and 100%) is trained on again with `--eval-data test`, with the same
   number of optimizer steps; held-out accuracy after the last epoch, mean ±
   std over 3 training seeds.

Usage: python study.py CARTO_BIN WORK_DIR RESULTS_DIR
Writes RESULTS_DIR/results.md, results.json and the data maps.
"""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared import auroc, precision_at, setup, split_reviews  # noqa: E402

carto, work, results, root, run = setup()
SEEDS = [1, 2, 3]
FRACTION = 0.33
COMMON = ["--label-col", "label", "--text-col", "text", "--model", "bow", "--lr", "0.001"]


# 1. Split ------------------------------------------------------------------
train, test = split_reviews(root, work)

# 2. Mislabel detection --------------------------------------------------------
def flip(frame, label_col, classes, seed):
    """Flips 10% of the labels, each to a different class chosen at random."""
    rng = np.random.default_rng(seed)
    n = frame.height
    flipped = np.zeros(n, bool)
    flipped[rng.choice(n, size=n // 10, replace=False)] = True
    labels = frame[label_col].to_list()
    for i in np.where(flipped)[0]:
        others = [c for c in classes if c != labels[i]]
        labels[i] = others[rng.integers(len(others))]
    return frame.with_columns(pl.Series(label_col, labels), pl.Series("flipped", flipped)), flipped


def detection(name, frame, label_col, classes, suffix, args):
    scores = {"mislabel_score": [], "one_minus_confidence": []}
    for seed in [0, 1, 2]:
        noisy, flipped = flip(frame, label_col, classes, seed)
        data = work / f"{name}-noisy-{seed}{suffix}"
        noisy.write_parquet(data) if suffix == ".parquet" else noisy.write_csv(data)
        out = work / f"{name}-noisy-{seed}"
        run("run", "--data", data, "--label-col", label_col, *args, "--seed", 1, "--out", out, "--overwrite", "-q")
        m = pl.read_parquet(out / "metrics.parquet")
        k = int(flipped.sum())
        for key, score in [("mislabel_score", -m["aum"].to_numpy()), ("one_minus_confidence", 1 - m["confidence"].to_numpy())]:
            scores[key].append({"auroc": auroc(score, flipped), "precision_at_k": precision_at(score, flipped, k),
                                "precision_at_100": precision_at(score, flipped, 100)})
        if seed == 0:
            # suspects.csv (the report users read) lists the same ranking.
            top = pl.read_csv(out / "suspects.csv")["sample_id"].to_numpy()[:100]
            report_p100 = float(flipped[top].mean())
            shutil.copy(out / "datamap.png", results / f"datamap-{name}-noisy.png")
    summary = {key: {metric: (float(np.mean([r[metric] for r in runs])), float(np.std([r[metric] for r in runs])))
                     for metric in runs[0]} for key, runs in scores.items()}
    return {"samples": frame.height, "flipped": frame.height // 10, "scores": summary, "suspects_csv_precision_at_100": report_p100}


detections = {
    "Rotten Tomatoes (bow, 2 classes)": detection(
        "rt", train, "label", ["fresh", "rotten"], ".csv",
        ["--text-col", "text", "--id-col", "id", "--model", "bow", "--epochs", "5", "--lr", "0.001"]),
    "Fashion-MNIST 2k (mlp, 10 classes)": detection(
        "fmnist", pl.read_parquet(root / "examples/fashion_mnist/fashion-2k.parquet"), "label", list(range(10)), ".parquet",
        ["--features-col", "pixels", "--id-col", "image_id", "--model", "mlp", "--epochs", "10"]),
}

# 3. Data reduction ------------------------------------------------------------
run("run", "--data", work / "train.csv", "--id-col", "id", *COMMON, "--epochs", 5, "--seed", 1, "--out", work / "clean", "--overwrite", "-q")
shutil.copy(work / "clean/datamap.png", results / "datamap.png")
subsets = {
    "100% (all)": work / "train.csv",
    "33% ambiguous": ("variability", []),
    "33% hard-to-learn": ("confidence", []),
    "33% easy-to-learn": ("confidence", ["--worst"]),
}
for name, spec in list(subsets.items()):
    if isinstance(spec, tuple):
        metric, extra = spec
        path = work / (name.split()[1] + ".parquet")
        run("select", "--metrics", work / "clean/metrics.parquet", "--metric", metric, "--fraction", FRACTION, *extra, "--out", path)
        subsets[name] = path
rng = np.random.default_rng(7)
pick = np.sort(rng.choice(train.height, size=int(np.floor(FRACTION * train.height + 0.5)), replace=False))
train[pick.tolist()].write_parquet(work / "random.parquet")
subsets["33% random"] = work / "random.parquet"

reduction = {}
for name, path in subsets.items():
    accs = []
    # The same number of optimizer steps for every subset: 5 epochs of the
    # full set, 15 of a third.
    epochs = "5" if name.startswith("100%") else "15"
    for seed in SEEDS:
        out = work / f"train-{path.stem}-{seed}"
        run("run", "--data", path, *COMMON, "--epochs", epochs, "--seed", seed, "--eval-data", work / "test.csv",
            "--out", out, "--overwrite", "-q")
        job = json.loads((out / "job.json").read_text())
        accs.append(job["epochs"][-1]["eval_accuracy"])
    rows = pl.read_parquet(path).height if path.suffix == ".parquet" else train.height
    reduction[name] = {"rows": rows, "accuracy_mean": float(np.mean(accs)), "accuracy_std": float(np.std(accs)), "runs": accs}

# Report ---------------------------------------------------------------------
(results / "results.json").write_text(json.dumps({"detection": detections, "reduction": reduction}, indent=2) + "\n")
lines = [
    "# Quality study results",
    "",
    "Generated by `scripts/quality_study.sh` (examples/quality_study/study.py); mean ± std over 3 seeds.",
    "",
    "## Finding label errors (10% of training labels flipped at random)",
    "",
    "| dataset | score | AUROC | precision at k = #flipped | precision at 100 |",
    "|---|---|---|---|---|",
]
for dname, d in detections.items():
    for key, label in [("mislabel_score", "carto mislabel score (−aum)"), ("one_minus_confidence", "1 − confidence")]:
        s_ = d["scores"][key]
        lines.append(f"| {dname} | {label} | {s_['auroc'][0]:.3f} ± {s_['auroc'][1]:.3f} | "
                     f"{s_['precision_at_k'][0]:.3f} ± {s_['precision_at_k'][1]:.3f} | "
                     f"{s_['precision_at_100'][0]:.3f} ± {s_['precision_at_100'][1]:.3f} |")
lines.append("")
for dname, d in detections.items():
    lines.append(f"- {dname}: {d['flipped']} of {d['samples']} labels flipped; the first 100 rows of its `suspects.csv` "
                 f"hold {d['suspects_csv_precision_at_100']:.0%} flipped labels (base rate 10%).")
lines += [
    "",
    "## Training on a third of the data (Rotten Tomatoes, held-out accuracy, 3 seeds)",
    "",
    "Subsets of the clean training set's map; every run takes the same number of optimizer steps",
    "(5 epochs of 100%, 15 epochs of a third).",
    "",
    "| training data | rows | accuracy |",
    "|---|---|---|",
]
for name, r in reduction.items():
    lines.append(f"| {name} | {r['rows']} | {r['accuracy_mean']:.4f} ± {r['accuracy_std']:.4f} |")
lines += ["", "![data map of the clean training set](datamap.png)", "",
          "![data map with 10% flipped labels](datamap-rt-noisy.png)", "",
          "![Fashion-MNIST data map with 10% flipped labels](datamap-fmnist-noisy.png)", ""]
(results / "results.md").write_text("\n".join(lines))
print("\n".join(lines))
