"""The quality study (study.py) again, with a transformer: `--model roberta`
fine-tuned from a local checkpoint instead of bow, on Rotten Tomatoes.

No model can be downloaded here, so the checkpoint is a *tiny RoBERTa with
random weights* (2 layers, hidden 32, a byte-level BPE vocabulary of 2,000
trained on the reviews), built by scripts/transformer_fixture.py and saved
with save_pretrained. It learns everything from these 10k reviews: this
measures carto's transformer path, not what a pretrained roberta-large gives.

Same split (80/20, stratified, seed 2020) and flips as study.py. Smaller
budget (CPU): EPOCHS epochs per map, FLIP_SEEDS flip seeds for detection,
TRAIN_SEEDS seeds per data-reduction subset (environment variables).

Usage: python transformer_study.py CARTO_BIN WORK_DIR RESULTS_DIR
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared import auroc, done, precision_at, setup, split_reviews  # noqa: E402

carto, work, results, root, run = setup()
EPOCHS = int(os.environ.get("EPOCHS", "3"))
FLIP_SEEDS = int(os.environ.get("FLIP_SEEDS", "2"))
TRAIN_SEEDS = int(os.environ.get("TRAIN_SEEDS", "1"))
# REDUCTION=0 skips the data-reduction part (detection only).
REDUCTION = os.environ.get("REDUCTION", "1") != "0"
FRACTION = 0.33
ckpt = work / "roberta-tiny"
if not (ckpt / "model.safetensors").exists():
    subprocess.run([sys.executable, root / "scripts/transformer_fixture.py", "model", ckpt, "--arch", "roberta",
                    "--size", "tiny", "--seed", "0"], check=True)
# A random-initialised model learns from scratch: a from-scratch learning
# rate, not fine-tuning's 2e-5.
COMMON = ["--label-col", "label", "--text-col", "text", "--model", "roberta", "--pretrained", ckpt,
          "--max-len", "64", "--lr", "0.001", "--batch-size", "32"]



train, test = split_reviews(root, work)

# Mislabel detection ------------------------------------------------------------
scores = {"mislabel_score": [], "one_minus_confidence": []}
for seed in range(FLIP_SEEDS):
    frng = np.random.default_rng(seed)
    flipped = np.zeros(train.height, bool)
    flipped[frng.choice(train.height, size=train.height // 10, replace=False)] = True
    labels = train["label"].to_list()
    for i in np.where(flipped)[0]:
        labels[i] = "rotten" if labels[i] == "fresh" else "fresh"
    noisy = train.with_columns(pl.Series("label", labels))
    noisy.write_csv(work / f"rt-noisy-{seed}.csv")
    out = work / f"rt-noisy-{seed}"
    if not done(out):
        run("run", "--data", work / f"rt-noisy-{seed}.csv", "--id-col", "id", *COMMON, "--epochs", EPOCHS,
            "--seed", 1, "--out", out, "--overwrite", "-q")
    m = pl.read_parquet(out / "metrics.parquet")
    k = int(flipped.sum())
    for key, score in [("mislabel_score", -m["aum"].to_numpy()), ("one_minus_confidence", 1 - m["confidence"].to_numpy())]:
        scores[key].append({"auroc": auroc(score, flipped), "precision_at_k": precision_at(score, flipped, k),
                            "precision_at_100": precision_at(score, flipped, 100)})
    if seed == 0:
        shutil.copy(out / "datamap.png", results / "datamap-rt-noisy.png")
detection = {key: {metric: (float(np.mean([r[metric] for r in runs])), float(np.std([r[metric] for r in runs])))
                   for metric in runs[0]} for key, runs in scores.items()}

# Data reduction -----------------------------------------------------------------
if not done(work / "clean"):
    run("run", "--data", work / "train.csv", "--id-col", "id", *COMMON, "--epochs", EPOCHS, "--seed", 1,
        "--out", work / "clean", "--overwrite", "-q")
shutil.copy(work / "clean/datamap.png", results / "datamap.png")
clean_job = json.loads((work / "clean/job.json").read_text())
subsets = {"100% (all)": work / "train.csv"}
for name, metric, extra in [] if not REDUCTION else [("33% ambiguous", "variability", []), ("33% hard-to-learn", "confidence", []),
                            ("33% easy-to-learn", "confidence", ["--worst"])]:
    path = work / (name.split()[1] + ".parquet")
    run("select", "--metrics", work / "clean/metrics.parquet", "--metric", metric, "--fraction", FRACTION, *extra, "--out", path)
    subsets[name] = path
pick = np.sort(np.random.default_rng(7).choice(train.height, size=int(np.floor(FRACTION * train.height + 0.5)), replace=False))
train[pick.tolist()].write_parquet(work / "random.parquet")
subsets["33% random"] = work / "random.parquet"
reduction = {}
for name, path in subsets.items() if REDUCTION else []:
    accs = []
    # The same number of optimizer steps for every subset.
    epochs = EPOCHS if name.startswith("100%") else 3 * EPOCHS
    for seed in range(1, TRAIN_SEEDS + 1):
        out = work / f"train-{path.stem}-{seed}"
        if not done(out):
            run("run", "--data", path, *COMMON, "--epochs", epochs, "--seed", seed, "--eval-data", work / "test.csv",
                "--out", out, "--overwrite", "-q")
        accs.append(json.loads((out / "job.json").read_text())["epochs"][-1]["eval_accuracy"])
    rows = pl.read_parquet(path).height if path.suffix == ".parquet" else train.height
    reduction[name] = {"rows": rows, "accuracy_mean": float(np.mean(accs)), "accuracy_std": float(np.std(accs)), "runs": accs}

# Report ---------------------------------------------------------------------------
(results / "results.json").write_text(json.dumps(
    {"epochs": EPOCHS, "flip_seeds": FLIP_SEEDS, "train_seeds": TRAIN_SEEDS, "detection": detection,
     "reduction": reduction, "clean_map_epochs": clean_job["epochs"]}, indent=2) + "\n")
sps = np.median([e["samples_per_sec"] for e in clean_job["epochs"]])
lines = [
    "# Quality study with a transformer (tiny random-initialised RoBERTa)",
    "",
    "Generated by `MODEL=roberta scripts/quality_study.sh` (examples/quality_study/transformer_study.py).",
    "Model: RoBERTa, 2 layers, hidden 32, 4 heads, byte-level BPE vocabulary of 2,000 trained on the reviews,",
    "random weights (no pretrained model can be downloaded here); `--max-len 64 --lr 0.001 --batch-size 32`,",
    f"{EPOCHS} epochs per map, CPU (~{sps:.0f} samples/s on this 2-core machine).",
    "",
    f"## Finding label errors (Rotten Tomatoes, 10% of training labels flipped; {FLIP_SEEDS} flip seeds)",
    "",
    "| score | AUROC | precision at k = #flipped | precision at 100 |",
    "|---|---|---|---|",
]
for key, label in [("mislabel_score", "carto mislabel score (−aum)"), ("one_minus_confidence", "1 − confidence")]:
    s_ = detection[key]
    lines.append(f"| {label} | {s_['auroc'][0]:.3f} ± {s_['auroc'][1]:.3f} | {s_['precision_at_k'][0]:.3f} ± "
                 f"{s_['precision_at_k'][1]:.3f} | {s_['precision_at_100'][0]:.3f} ± {s_['precision_at_100'][1]:.3f} |")
lines += [
    "",
    f"Clean training set's map ({EPOCHS} epochs): training accuracy by epoch "
    + ", ".join(f"{e['accuracy']:.3f}" for e in clean_job["epochs"]) + ".",
]
lines += [] if not REDUCTION else [
    "",
    f"## Training on a third of the data (held-out accuracy, {TRAIN_SEEDS} training seed(s))",
    "",
    f"Every run takes the same number of optimizer steps ({EPOCHS} epochs of 100%, {3 * EPOCHS} of a third).",
    "",
    "| training data | rows | accuracy |",
    "|---|---|---|",
]
for name, r in reduction.items():
    lines.append(f"| {name} | {r['rows']} | {r['accuracy_mean']:.4f} ± {r['accuracy_std']:.4f} |")
lines += ["", "![data map of the clean training set](datamap.png)", "",
          "![data map with 10% flipped labels](datamap-rt-noisy.png)", ""]
(results / "results.md").write_text("\n".join(lines))
print("\n".join(lines))
