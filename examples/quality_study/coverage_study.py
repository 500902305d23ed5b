"""Coverage-centric selection in the data-reduction study: does
`carto select --strategy coverage` (Zheng et al. 2023, ICLR) train a better
model from 10%, 33% and 50% of the data than the ambiguous region, EL2N
pruning or a random subset? Everything runs through `carto`.

1. Fashion-MNIST (Debian's dataset-fashion-mnist): a stratified 20,000-image
   subset of the 60,000 training images (2,000 per class, fixed seed) and the
   official 10,000-image test set as --eval-data.
2. carto maps the training subset once (mlp, 5 epochs, seed 1).
3. For each budget (10%, 33%, 50%) subsets of that map:
   - coverage: `carto select --strategy coverage` (aum, --hard-prune 0.1,
     --strata 50: the defaults), redrawn per training seed (--seed);
   - coverage, β = 0: the same without pruning the hard end;
   - coverage --per-class: the same within each class (every class gives
     the same fraction of itself);
   - ambiguous: `--metric variability` (the paper's data-map region);
   - EL2N: `--metric el2n`, the highest-EL2N samples — EL2N pruning as Paul et
     al. 2021 define it keeps the hardest examples (carto's el2n order is
     already descending, so no --worst);
   - random: a uniform draw, redrawn per training seed;
   and 100%. Every run takes the same number of optimizer steps as the full
   set (10 epochs of 100%, 10/fraction of a subset, rounded), mlp, default lr
   and batch size; test accuracy after the last epoch, mean ± std over 3
   training seeds.

Usage: python coverage_study.py CARTO_BIN WORK_DIR RESULTS_DIR
Debian's files come from $FASHION_MNIST_DIR, else /usr/share/datasets/fashion-mnist,
else `apt-get download dataset-fashion-mnist` into WORK_DIR (no root needed).
TRAIN_ROWS (20000), SEEDS (3) and FULL_EPOCHS (10) size it.
Writes RESULTS_DIR/results.md and results.json.
"""
import glob
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared import done, setup  # noqa: E402

carto, work, results, root, run = setup()
TRAIN_ROWS = int(os.environ.get("TRAIN_ROWS", "20000"))
SEEDS = list(range(1, int(os.environ.get("SEEDS", "3")) + 1))
FULL_EPOCHS = int(os.environ.get("FULL_EPOCHS", "10"))
MAP_EPOCHS = 5
BUDGETS = [0.10, 0.33, 0.50]
COMMON = ["--label-col", "label", "--features-col", "pixels", "--model", "mlp"]
started = time.time()


# 1. Data ------------------------------------------------------------------------
def fashion_dir():
    for d in [os.environ.get("FASHION_MNIST_DIR"), "/usr/share/datasets/fashion-mnist"]:
        if d and os.path.exists(os.path.join(d, "t10k-labels-idx1-ubyte.gz")):
            return d
    unpacked = work / "debian" / "usr/share/datasets/fashion-mnist"
    if not unpacked.exists():
        subprocess.run(["apt-get", "download", "dataset-fashion-mnist"], cwd=work, check=True)
        deb = sorted(glob.glob(str(work / "dataset-fashion-mnist_*.deb")))[-1]
        subprocess.run(["dpkg", "-x", deb, str(work / "debian")], check=True)
    return str(unpacked)


def load_prepare():
    """examples/fashion_mnist/prepare.py's idx reader (reused, not copied)."""
    spec = importlib.util.spec_from_file_location("fashion_prepare", root / "examples/fashion_mnist/prepare.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write(images, labels, path):
    n = images.shape[0]
    flat = np.ascontiguousarray(images.reshape(n, 784))
    offsets = pa.array(np.arange(0, (n + 1) * 784, 784, dtype=np.int32))
    pixels = pa.ListArray.from_arrays(offsets, pa.array(flat.reshape(-1), type=pa.uint8()))
    pq.write_table(pa.table({"pixels": pixels, "label": pa.array(labels.astype(np.int64))}), path)


train_path, test_path = work / "train.parquet", work / "test.parquet"
prep = load_prepare()
src = fashion_dir()
train_images = prep.read_idx(src, "train-images-idx3-ubyte", 2051, 3)
train_labels = prep.read_idx(src, "train-labels-idx1-ubyte", 2049, 1)
rng = np.random.default_rng(2023)
pick = np.sort(np.concatenate([rng.choice(np.where(train_labels == c)[0], TRAIN_ROWS // 10, replace=False) for c in range(10)]))
write(train_images[pick], train_labels[pick], train_path)
write(prep.read_idx(src, "t10k-images-idx3-ubyte", 2051, 3), prep.read_idx(src, "t10k-labels-idx1-ubyte", 2049, 1), test_path)
n = len(pick)

# 2. The map -----------------------------------------------------------------------
mapped = work / "map"
if not done(mapped):
    run("run", "--data", train_path, *COMMON, "--epochs", MAP_EPOCHS, "--seed", 1, "--out", mapped, "--overwrite", "-q")
metrics = mapped / "metrics.parquet"


# 3. Subsets -------------------------------------------------------------------------
def k_of(fraction):
    return int(np.floor(fraction * n + 0.5))


def subset(method, fraction, seed):
    """The subset's Parquet file (the dataset's rows; carto select's output)."""
    tag = f"{method}-{round(fraction * 100)}"
    if method in ("ambiguous", "el2n"):  # deterministic: one file for every seed
        path = work / f"{tag}.parquet"
        metric = {"ambiguous": "variability", "el2n": "el2n"}[method]
        if not path.exists():
            run("select", "--metrics", metrics, "--metric", metric, "--fraction", fraction, "--out", path)
        return path
    path = work / f"{tag}-s{seed}.parquet"
    if path.exists():
        return path
    if method == "coverage":
        run("select", "--metrics", metrics, "--strategy", "coverage", "--fraction", fraction, "--seed", seed, "--out", path)
    elif method == "coverage-b0":
        run("select", "--metrics", metrics, "--strategy", "coverage", "--hard-prune", 0, "--fraction", fraction,
            "--seed", seed, "--out", path)
    elif method == "coverage-pc":
        run("select", "--metrics", metrics, "--strategy", "coverage", "--per-class", "--fraction", fraction,
            "--seed", seed, "--out", path)
    elif method == "random":
        rows = np.sort(np.random.default_rng(1000 + seed).choice(n, size=k_of(fraction), replace=False))
        table = pq.read_table(train_path).take(pa.array(rows))
        pq.write_table(table.append_column("sample_id", pa.array(rows.astype(np.int64))), path)
    return path


job_seconds = json.loads((mapped / "job.json").read_text())["timings"]["run_seconds"]


def train(path, epochs, seed, name):
    global job_seconds
    out = work / f"train-{name}-s{seed}"
    if not done(out):
        run("run", "--data", path, *COMMON, "--epochs", epochs, "--seed", seed, "--eval-data", test_path,
            "--out", out, "--overwrite", "-q")
    job = json.loads((out / "job.json").read_text())
    job_seconds += job["timings"]["run_seconds"]
    return job["epochs"][-1]["eval_accuracy"]


def summary(accs, rows):
    return {"rows": rows, "accuracy_mean": float(np.mean(accs)), "accuracy_std": float(np.std(accs)), "runs": accs}


METHODS = {
    "coverage": "coverage (aum, β = 0.1)",
    "coverage-b0": "coverage (aum, β = 0)",
    "coverage-pc": "coverage (aum, β = 0.1) --per-class",
    "ambiguous": "ambiguous (variability)",
    "el2n": "EL2N (highest)",
    "random": "random",
}
reduction = {"100%": summary([train(train_path, FULL_EPOCHS, s, "all") for s in SEEDS], n)}
for fraction in BUDGETS:
    epochs = max(1, round(FULL_EPOCHS / fraction))
    for method, label in METHODS.items():
        accs = []
        for seed in SEEDS:
            path = subset(method, fraction, seed)
            accs.append(train(path, epochs, seed, f"{method}-{round(fraction * 100)}"))
        reduction[f"{round(fraction * 100)}% {label}"] = summary(accs, k_of(fraction)) | {"epochs": epochs}

# A property of the subsets: how much of the map's aum range each one covers
# (the share of 50 equal-width aum strata over all samples it touches).
aum = pq.read_table(metrics, columns=["aum"])["aum"].to_numpy()
edges = np.linspace(aum.min(), aum.max(), 51)
for fraction in BUDGETS:
    for method, label in METHODS.items():
        chosen = pq.read_table(subset(method, fraction, SEEDS[0]), columns=["sample_id"])["sample_id"].to_numpy()
        bins = np.clip(np.searchsorted(edges, aum[chosen], side="right") - 1, 0, 49)
        reduction[f"{round(fraction * 100)}% {label}"]["aum_strata_covered"] = int(len(np.unique(bins)))

elapsed = time.time() - started

# Report -------------------------------------------------------------------------------
(results / "results.json").write_text(json.dumps({
    "dataset": f"Fashion-MNIST: {n} training images (stratified from 60,000), 10,000 test images",
    "model": "mlp (784-256-10), default lr 1e-3, batch 64",
    "map_epochs": MAP_EPOCHS, "full_epochs": FULL_EPOCHS, "seeds": SEEDS,
    "jobs_run_seconds": round(job_seconds), "this_invocation_seconds": round(elapsed),
    "reduction": reduction}, indent=2) + "\n")
lines = [
    "# Coverage-centric selection: results",
    "",
    "`python examples/quality_study/coverage_study.py target/release/carto out/coverage_study "
    "examples/quality_study/results-coverage`",
    "",
    "Generated by `examples/quality_study/coverage_study.py`. Fashion-MNIST, "
    f"{n:,} training images ({n // 10:,} per class, drawn from the 60,000) mapped once with `--model mlp` "
    f"({MAP_EPOCHS} epochs); every subset trained with the same number of optimizer steps as the full set "
    f"({FULL_EPOCHS} epochs of 100%, {FULL_EPOCHS}/fraction epochs of a subset); test accuracy on the official "
    f"10,000 test images after the last epoch, mean ± std over {len(SEEDS)} training seeds (coverage and random "
    f"subsets redrawn with each seed). The {1 + len(SEEDS) * (1 + len(BUDGETS) * len(METHODS))} carto jobs ran "
    f"{job_seconds / 60:.0f} minutes in all.",
    "",
    "| training data | rows | epochs | test accuracy | aum strata covered (of 50) |",
    "|---|---|---|---|---|",
]
for name, r in reduction.items():
    lines.append(f"| {name} | {r['rows']} | {r.get('epochs', FULL_EPOCHS)} | {r['accuracy_mean']:.4f} ± {r['accuracy_std']:.4f} "
                 f"| {r.get('aum_strata_covered', 50)} |")
lines += ["", "coverage = `carto select --strategy coverage --fraction F --seed S` (aum, --hard-prune 0.1, --strata 50);",
          "EL2N = `carto select --metric el2n --fraction F` (the highest-EL2N samples, Paul et al. 2021's pruning);",
          "ambiguous = `carto select --metric variability --fraction F`.",
          "aum strata covered: how many of 50 equal-width ranges of the whole map's aum the subset (first seed) "
          "has a sample in.", ""]
(results / "results.md").write_text("\n".join(lines))
print("\n".join(lines))
