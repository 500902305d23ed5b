#!/usr/bin/env python3
"""Label-error detection: carto against the plain PyTorch map and cleanlab.

Labels are flipped at random, each to another class (study.py's flip()), and
three methods rank the samples by how likely their label is wrong:

  carto     `carto run` (--model mlp on Fashion-MNIST, bow on Rotten
            Tomatoes, carto's defaults otherwise: 5 epochs, batch 64, Adam
            1e-3). Ranking: metrics.parquet's `mislabel_score` if the column
            exists, else −aum (the order of suspects.csv); also 1 − confidence.
            Flagged set: metrics.parquet's `is_suspect` when present
            (`--threshold-samples` is passed when `carto run --help` lists it).
  pytorch   bench/python/torch_reference.py, the same model, optimizer,
            batch size, epochs and seed in plain PyTorch: −aum and
            1 − confidence of its map.
  cleanlab  out-of-sample predicted probabilities from 5-fold cross-validation
            (StratifiedKFold, shuffled, random_state 42) of the same model
            trained in plain PyTorch (torch_reference.py's model classes and
            training loop), then cleanlab.rank.get_label_quality_scores
            (self-confidence; ranking 1 − quality) and
            cleanlab.filter.find_label_issues (prune_by_noise_rate) for the
            flagged set.

For each: AUROC of the flipped samples, precision at k = #flipped, precision
and recall of the flagged set (on clean data: the fraction flagged), and the
wall and CPU time of the method's process (start-up, data loading and
writing its outputs included; cleanlab: 5 trainings plus cleanlab).

Data: Fashion-MNIST, the first 10,000 of the 60,000 training images (Debian's
dataset-fashion-mnist, as bench/fashion_60k.sh reads it; fetched with
`apt-get download` into WORK_DIR if not installed), and Rotten Tomatoes,
all of examples/rotten_tomatoes/reviews.csv. --quick: 2,000 images, the
2,000 reviews of reviews-2k.csv, seed 0.

Seeds: the flip seed varies (0, 1, 2); the training seed is fixed (42, carto's
and torch_reference.py's default) for every method, fold and case, so the
seeds differ only in which labels are flipped. A clean case runs once.

Usage:
  python label_errors.py CARTO_BIN WORK_DIR RESULTS_DIR [--quick]
      [--cases fmnist10,fmnist20,rt10,fmnist0,rt0] [--seeds 0,1,2]
      [--compare-carto LABEL=CARTO_BIN ...] [--threads T] [--fashion-dir DIR]
      [--note TEXT ...]
Writes RESULTS_DIR/results.md and results.json. Runs resume: a finished
method's result is kept in WORK_DIR/results/ (keyed by the binary or script
it came from) and not run again.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
REFERENCE = ROOT / "bench/python/torch_reference.py"
sys.path.insert(0, str(HERE))
from shared import auroc, precision_at  # noqa: E402

TRAIN_SEED = 42
FOLDS = 5
FASHION_N, FASHION_N_QUICK = 10_000, 2_000
CASES = {
    # name: (dataset, percent of labels flipped)
    "fmnist10": ("fmnist", 10),
    "fmnist20": ("fmnist", 20),
    "rt10": ("rt", 10),
    "fmnist0": ("fmnist", 0),
    "rt0": ("rt", 0),
}
DATASET = {
    "fmnist": {"title": "Fashion-MNIST (mlp, 10 classes)", "model": "mlp", "feature": ["--features-col", "pixels"],
               "suffix": ".parquet"},
    "rt": {"title": "Rotten Tomatoes (bow, 2 classes)", "model": "bow", "feature": ["--text-col", "text"],
           "suffix": ".csv"},
}


# ----------------------------------------------------------------------------
# Data


def flip(labels, classes, percent, seed):
    """study.py's flip(): `percent`% of the labels (n·percent // 100 of them;
    10% is study.py's n // 10), each to a different class chosen at random."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    flipped = np.zeros(n, bool)
    flipped[rng.choice(n, size=n * percent // 100, replace=False)] = True
    labels = list(labels)
    for i in np.where(flipped)[0]:
        others = [c for c in classes if c != labels[i]]
        labels[i] = others[rng.integers(len(others))]
    return labels, flipped


def fashion_dir(work, given):
    """Debian's dataset-fashion-mnist files: --fashion-dir, the installed
    package, or the .deb downloaded and unpacked (no root) into WORK."""
    for d in [given, "/usr/share/datasets/fashion-mnist", work / "fashion-mnist-deb/usr/share/datasets/fashion-mnist"]:
        if d and any((Path(d) / f).exists() for f in ["train-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte"]):
            return Path(d)
    deb = work / "fashion-mnist-deb"
    deb.mkdir(parents=True, exist_ok=True)
    print("fetching Debian's dataset-fashion-mnist (apt-get download)", flush=True)
    subprocess.run(["apt-get", "download", "dataset-fashion-mnist"], cwd=deb, check=True)
    debs = sorted(deb.glob("dataset-fashion-mnist_*.deb"))
    subprocess.run(["dpkg", "-x", str(debs[-1]), str(deb)], check=True)
    return deb / "usr/share/datasets/fashion-mnist"


def load_fashion(work, n, given_dir):
    """The first n training images: (pyarrow table with `pixels` list<uint8>
    and `label` int64, labels)."""
    import importlib.util

    import pyarrow as pa

    spec = importlib.util.spec_from_file_location("fashion_prepare", ROOT / "examples/fashion_mnist/prepare.py")
    prep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prep)
    d = fashion_dir(work, given_dir)
    images = prep.read_idx(str(d), "train-images-idx3-ubyte", 2051, 3)[:n]
    labels = prep.read_idx(str(d), "train-labels-idx1-ubyte", 2049, 1)[:n].astype(np.int64)
    flat = np.ascontiguousarray(images.reshape(len(images), 784))
    offsets = pa.array(np.arange(0, (len(flat) + 1) * 784, 784, dtype=np.int32))
    pixels = pa.ListArray.from_arrays(offsets, pa.array(flat.reshape(-1), type=pa.uint8()))
    return pa.table({"pixels": pixels, "label": pa.array(labels)}), labels.tolist()


def write_case(dataset, base, labels, path):
    """The dataset with `labels` as its label column (no trace of the flips)."""
    if path.exists():
        return
    tmp = path.with_name(path.name + ".tmp")
    if dataset == "fmnist":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(base.set_column(1, "label", pa.array(labels, type=pa.int64())), tmp)
    else:
        import polars as pl

        base.with_columns(pl.Series("label", labels)).write_csv(tmp)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------
# The methods


def timed(cmd, log):
    """Runs cmd; returns (wall seconds, CPU seconds of it and its children)."""
    import resource

    print("$", " ".join(str(c) for c in cmd), flush=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    with open(log, "w") as f:
        r = subprocess.run([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}); see {log}:\n" + Path(log).read_text()[-3000:])
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def threshold_option(carto):
    """How this carto takes --threshold-samples: None (it does not), [] (a
    flag, or an optional value) or the required value's name."""
    help_text = subprocess.run([carto, "run", "--help"], capture_output=True, text=True).stdout
    m = re.search(r"--threshold-samples(?:[ =](\[)?<([^>]+)>)?", help_text)
    if not m:
        return None
    return [] if m.group(2) is None or m.group(1) else m.group(2)


def ranking_scores(m, flipped):
    """AUROC and precision at k = #flipped of each ranking score column."""
    k = int(flipped.sum())
    out = {}
    for key, score in m.items():
        out[key] = {"auroc": auroc(score, flipped), "precision_at_k": precision_at(score, flipped, k)} if k else {}
    return out


def flagged_scores(flag, flipped):
    flag = np.asarray(flag, bool)
    n_flag, k = int(flag.sum()), int(flipped.sum())
    r = {"flagged": n_flag, "fraction_flagged": n_flag / len(flag)}
    if k:
        hit = int((flag & flipped).sum())
        r.update(precision=hit / n_flag if n_flag else None, recall=hit / k)
    return r


def run_carto(carto, data, dataset, out, threads, threshold_value, use_threshold=True):
    import polars as pl

    ds = DATASET[dataset]
    cmd = [carto, "run", "--data", data, "--label-col", "label", *ds["feature"], "--model", ds["model"],
           "--seed", TRAIN_SEED, "--threads-per-worker", threads, "--out", out, "--overwrite", "-q"]
    th = threshold_option(carto) if use_threshold else None
    if th == []:
        cmd.append("--threshold-samples")
    elif th is not None:
        if threshold_value is None:
            sys.exit(f"{carto}: --threshold-samples takes <{th}>; give the harness --threshold-samples-value")
        cmd += ["--threshold-samples", threshold_value]
    wall, cpu = timed(cmd, str(out) + ".log")
    m = pl.read_parquet(out / "metrics.parquet").sort("sample_id")
    job = json.loads((out / "job.json").read_text())
    has_score = "mislabel_score" in m.columns
    scores = {
        "mislabel": m["mislabel_score"].to_numpy() if has_score else -m["aum"].to_numpy(),
        "one_minus_confidence": 1.0 - m["confidence"].to_numpy(),
    }
    suspects = out / "suspects.csv"
    res = {
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "threshold_samples": th is not None,
        "mislabel_source": "mislabel_score" if has_score else "-aum",
        "score_arrays": scores,
        "is_suspect": m["is_suspect"].to_numpy() if "is_suspect" in m.columns else None,
        "suspects_order": pl.read_csv(suspects, columns=["sample_id"])["sample_id"].to_numpy() if suspects.exists() else None,
        "label_errors": job.get("label_errors"),
        "train_accuracy": job["epochs"][-1].get("accuracy") if job.get("epochs") else None,
    }
    if res["label_errors"] is not None:
        print(f"{out}/job.json label_errors:", json.dumps(res["label_errors"], indent=2), flush=True)
    return res


def run_pytorch(data, dataset, out, threads):
    import polars as pl

    ds = DATASET[dataset]
    cmd = [sys.executable, REFERENCE, "--data", data, "--label-col", "label", *ds["feature"], "--model", ds["model"],
           "--seed", TRAIN_SEED, "--threads", threads, "--out", out]
    wall, cpu = timed(cmd, str(out) + ".log")
    m = pl.read_parquet(out / "metrics.parquet").sort("sample_id")
    job = json.loads((out / "job.json").read_text())
    return {
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "score_arrays": {"mislabel": -m["aum"].to_numpy(), "one_minus_confidence": 1.0 - m["confidence"].to_numpy()},
        "is_suspect": None,
        "train_accuracy": job["epochs"][-1]["accuracy"],
    }


def run_cleanlab(data, dataset, out, threads):
    ds = DATASET[dataset]
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, __file__, "_cleanlab", "--data", data, "--label-col", "label", *ds["feature"],
           "--model", ds["model"], "--seed", TRAIN_SEED, "--folds", FOLDS, "--threads", threads, "--out", out]
    wall, cpu = timed(cmd, str(out) + ".log")
    z = np.load(out / "cleanlab.npz")
    info = json.loads((out / "cleanlab.json").read_text())
    return {
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "score_arrays": {"mislabel": 1.0 - z["quality"]},
        "is_suspect": z["issues"],
        **info,
    }


# ----------------------------------------------------------------------------
# cleanlab's cross-validated probabilities (a subprocess of the harness, so its
# wall time counts imports and loading as the other two methods' do)


def cleanlab_main(argv):
    sys.path.insert(0, str(REFERENCE.parent))
    import torch_reference as tr

    ap = argparse.ArgumentParser(prog="label_errors.py _cleanlab")
    tr.training_arguments(ap)
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args(argv)

    import torch
    import torch.nn.functional as F
    from sklearn.model_selection import StratifiedKFold

    import cleanlab
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    col = args.text_col or args.features_col
    table = tr.read_table(args.data, [col, args.label_col])
    y_np, classes, _ = tr.encode_labels(table.column(args.label_col))
    n = len(y_np)
    y = torch.from_numpy(y_np)
    if args.model == "mlp":
        # Standardised over all rows, as torch_reference.py does (no labels involved).
        x = features = tr.dense_features(table.column(col))
    else:
        features = tr.hash_texts(table.column(col).to_pylist(), args.hash_bits)

    def forward(model, idx):
        return model(*tr.batch_inputs(features, idx))

    probs = np.zeros((n, classes))
    folds = StratifiedKFold(n_splits=args.folds, shuffle=True, random_state=args.seed)
    train_seconds = 0.0
    for fold, (train_idx, test_idx) in enumerate(folds.split(np.zeros(n), y_np)):
        started = time.perf_counter()
        # torch_reference.py's training, on this fold's training part.
        torch.manual_seed(args.seed)
        if args.model == "mlp":
            model = tr.Mlp(x.shape[1], args.hidden, classes)
            opts = [torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8)]
        else:
            model = tr.Bow(1 << args.hash_bits, args.embed_dim, classes)
            opts = [
                torch.optim.SparseAdam(list(model.emb.parameters()), lr=args.lr, betas=(0.9, 0.999), eps=1e-8),
                torch.optim.Adam(model.out.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8),
            ]
        part = torch.from_numpy(train_idx)
        model.train()
        for epoch in range(args.epochs):
            perm = part[torch.randperm(len(part), generator=torch.Generator().manual_seed(args.seed + epoch))]
            for i in range(0, len(perm), args.batch_size):
                idx = perm[i:i + args.batch_size]
                loss = F.cross_entropy(forward(model, idx), y.index_select(0, idx))
                for o in opts:
                    o.zero_grad(set_to_none=True)
                loss.backward()
                for o in opts:
                    o.step()
        model.eval()
        held = torch.from_numpy(test_idx)
        with torch.no_grad():
            for i in range(0, len(held), 4096):
                idx = held[i:i + 4096]
                probs[idx.numpy()] = torch.softmax(forward(model, idx).double(), dim=1).numpy()
        train_seconds += time.perf_counter() - started
        print(f"fold {fold + 1}/{args.folds}: {time.perf_counter() - started:.1f} s", flush=True)
    held_out_accuracy = float((probs.argmax(1) == y_np).mean())
    t_cl = time.perf_counter()
    quality = get_label_quality_scores(y_np, probs)
    issues = find_label_issues(y_np, probs)
    cleanlab_seconds = time.perf_counter() - t_cl
    np.savez(os.path.join(args.out, "cleanlab.npz"), probs=probs, quality=quality, issues=issues)
    with open(os.path.join(args.out, "cleanlab.json"), "w") as f:
        json.dump({"cleanlab": cleanlab.__version__, "torch": torch.__version__, "train_seconds": train_seconds,
                   "cleanlab_seconds": cleanlab_seconds, "total_in_process_seconds": time.perf_counter() - t0,
                   "held_out_accuracy": held_out_accuracy}, f, indent=2)


# ----------------------------------------------------------------------------
# The study


def key_of(path):
    st = os.stat(path)
    return f"{os.path.realpath(path)}:{st.st_size}:{int(st.st_mtime)}"


def cleanlab_key():
    """What cleanlab's result depends on: its training code and the reference's."""
    import hashlib
    import inspect

    return hashlib.sha256(inspect.getsource(cleanlab_main).encode()).hexdigest()[:16] + ":" + key_of(REFERENCE)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("carto")
    ap.add_argument("work", type=Path)
    ap.add_argument("results", type=Path)
    ap.add_argument("--quick", action="store_true", help="2,000 images / reviews, seed 0: a smoke test")
    ap.add_argument("--cases", default="fmnist10,fmnist20,rt10,fmnist0,rt0")
    ap.add_argument("--seeds", default=None, help="flip seeds [0,1,2; --quick: 0]")
    ap.add_argument("--compare-carto", action="append", default=[], metavar="LABEL=CARTO_BIN",
                    help="another carto build to run beside CARTO_BIN (e.g. an older one)")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads of every method [2]")
    ap.add_argument("--threshold-samples-value", default=None,
                    help="the value for carto's --threshold-samples, if that option requires one")
    ap.add_argument("--fashion-dir", default=None, help="Debian's fashion-mnist files [found or fetched]")
    ap.add_argument("--note", action="append", default=[], help="a line for results.md's header (repeatable)")
    args = ap.parse_args()
    cases = [c for c in args.cases.split(",") if c]
    for c in cases:
        if c not in CASES:
            sys.exit(f"unknown case {c!r} (one of {', '.join(CASES)})")
    seeds = [int(s) for s in (args.seeds or ("0" if args.quick else "0,1,2")).split(",")]
    work, results = args.work.resolve(), args.results.resolve()
    for d in [work / "data", work / "runs", work / "results", results]:
        d.mkdir(parents=True, exist_ok=True)
    cartos = {"carto": args.carto}
    for spec in args.compare_carto:
        label, _, path = spec.partition("=")
        if not path:
            sys.exit(f"--compare-carto {spec!r}: expected LABEL=CARTO_BIN")
        cartos[label] = path

    import polars as pl

    size = "quick" if args.quick else "full"
    bases = {}
    if any(CASES[c][0] == "fmnist" for c in cases):
        n = FASHION_N_QUICK if args.quick else FASHION_N
        table, labels = load_fashion(work, n, args.fashion_dir)
        bases["fmnist"] = (table, labels, list(range(10)))
    if any(CASES[c][0] == "rt" for c in cases):
        frame = pl.read_csv(ROOT / "examples/rotten_tomatoes" / ("reviews-2k.csv" if args.quick else "reviews.csv"))
        bases["rt"] = (frame, frame["label"].to_list(), sorted(set(frame["label"].to_list())))

    started = time.perf_counter()
    rows = []  # one per (case, seed, method)
    for case in cases:
        dataset, percent = CASES[case]
        base, labels, classes = bases[dataset]
        for seed in (seeds if percent else [None]):
            noisy, flipped = flip(labels, classes, percent, seed) if percent else (labels, np.zeros(len(labels), bool))
            tag = f"{size}-{case}" + (f"-seed{seed}" if percent else "")
            data = work / "data" / (tag + DATASET[dataset]["suffix"])
            write_case(dataset, base, noisy, data)
            # Each carto as a plain map (one training run), and with
            # --threshold-samples where it has it (three runs: is_suspect).
            methods = []
            for label, b in cartos.items():
                key = key_of(b) + ":" + key_of(Path(b).with_name("carto-worker"))
                methods.append((label, lambda out, b=b: run_carto(b, data, dataset, out, args.threads, None, False), key + ":plain"))
                if threshold_option(b) is not None:
                    methods.append((label + " --threshold-samples",
                                    lambda out, b=b: run_carto(b, data, dataset, out, args.threads, args.threshold_samples_value),
                                    key + ":threshold"))
            if percent:
                methods.append(("pytorch", lambda out: run_pytorch(data, dataset, out, args.threads), key_of(REFERENCE)))
            methods.append(("cleanlab", lambda out: run_cleanlab(data, dataset, out, args.threads), cleanlab_key()))
            for method, go, key in methods:
                safe = method.replace(" --", "+").replace(" ", "_")
                cached = work / "results" / f"{tag}-{safe}.json"
                if cached.exists() and json.loads(cached.read_text()).get("key") == key:
                    row = json.loads(cached.read_text())
                else:
                    res = go(work / "runs" / f"{tag}-{safe}")
                    arrays = res.pop("score_arrays")
                    flags = res.pop("is_suspect")
                    order = res.pop("suspects_order", None)
                    row = {"case": case, "seed": seed, "method": method, "key": key, "samples": len(noisy),
                           "flipped": int(flipped.sum()), **res,
                           "scores": ranking_scores(arrays, flipped),
                           "flagged": flagged_scores(flags, flipped) if flags is not None else None}
                    k = int(flipped.sum())
                    if order is not None and k:
                        top = order[:k]
                        row["suspects_csv"] = {"rows_used": len(top), "precision": float(flipped[top].mean())}
                    cached.write_text(json.dumps(row, indent=2) + "\n")
                rows.append(row)
                print(summary_line(row), flush=True)
    total = time.perf_counter() - started
    report(rows, cases, seeds, cartos, results, args, total)


def summary_line(r):
    s = " ".join(f"{k} AUROC {v['auroc']:.4f} P@k {v['precision_at_k']:.4f}" for k, v in r["scores"].items() if v)
    f = r.get("flagged")
    fl = ""
    if f:
        fl = f" flagged {f['flagged']}" + (f" P {f['precision']:.3f} R {f['recall']:.3f}" if "recall" in f and f["precision"] is not None else "")
    return f"[{r['case']} seed {r['seed']}] {r['method']}: {s}{fl} ({r['wall_seconds']:.1f} s)"


# ----------------------------------------------------------------------------
# Report


def ms(values, digits=3):
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


SCORE_NAMES = {
    "mislabel": {"carto": "mislabel score", "pytorch": "−aum", "cleanlab": "1 − label quality (self-confidence)"},
    "one_minus_confidence": {"carto": "1 − confidence", "pytorch": "1 − confidence"},
}


def score_name(method, key, rows):
    if method in ("pytorch", "cleanlab"):
        return SCORE_NAMES[key][method]
    if key == "mislabel":
        src = {r.get("mislabel_source") for r in rows}
        return "mislabel score (" + ("−aum, the order of suspects.csv" if src == {"-aum"} else "mislabel_score") + ")"
    return SCORE_NAMES[key]["carto"]


def report(rows, cases, seeds, cartos, results, args, total):
    seen = {r["method"] for r in rows}
    methods = [m for c in cartos for m in (c, c + " --threshold-samples") if m in seen] + ["pytorch", "cleanlab"]
    size = "quick (2,000 samples)" if args.quick else "full"
    lines = [
        "# Label-error detection: carto, the plain PyTorch map and cleanlab",
        "",
        f"Generated by `examples/quality_study/label_errors.py` ({size}; flip seeds {', '.join(map(str, seeds))};",
        f"training seed {TRAIN_SEED} for every method; {args.threads} thread{'s' if args.threads > 1 else ''} per method; "
        f"{sum(r['wall_seconds'] for r in rows) / 60:.1f} minutes of runs in all). Means ± std over the flip seeds.",
        "",
        "- carto binaries: " + "; ".join(f"`{k}` = {v}" for k, v in cartos.items()),
        *[f"- {note}" for note in args.note],
        "- AUROC of the flipped samples and precision at k = #flipped; wall and CPU time of the method's process",
        "  (its start-up, data loading and outputs included; cleanlab: 5 trainings plus cleanlab). Other jobs",
        "  shared the machine, so wall times are noisy: CPU time is the steadier measure of cost.",
        "",
    ]
    for case in cases:
        dataset, percent = CASES[case]
        cr = [r for r in rows if r["case"] == case]
        if not cr:
            continue
        n = cr[0]["samples"]
        if percent:
            lines += [f"## {DATASET[dataset]['title']}, {n:,} samples, {percent}% of labels flipped ({cr[0]['flipped']:,})", "",
                      "| method | score | AUROC | precision at k | wall s | CPU s |", "|---|---|---|---|---|---|"]
            for m in methods:
                mr = [r for r in cr if r["method"] == m]
                if not mr:
                    continue
                for key in mr[0]["scores"]:
                    lines.append(f"| {m} | {score_name(m, key, mr)} | {ms([r['scores'][key]['auroc'] for r in mr])} | "
                                 f"{ms([r['scores'][key]['precision_at_k'] for r in mr])} | "
                                 f"{ms([r['wall_seconds'] for r in mr], 1)} | {ms([r.get('cpu_seconds') for r in mr], 1)} |")
            flag_rows = [(m, [r for r in cr if r["method"] == m]) for m in methods]
            flag_rows = [(m, mr) for m, mr in flag_rows if mr and mr[0].get("flagged")]
            if flag_rows:
                lines += ["", "| method | flagged set | flagged | precision | recall |", "|---|---|---|---|---|"]
                for m, mr in flag_rows:
                    what = "find_label_issues" if m == "cleanlab" else "is_suspect"
                    lines.append(f"| {m} | {what} | {ms([r['flagged']['flagged'] for r in mr], 0)} | "
                                 f"{ms([r['flagged']['precision'] for r in mr])} | {ms([r['flagged']['recall'] for r in mr])} |")
            csv = [(m, [r["suspects_csv"] for r in cr if r["method"] == m and r.get("suspects_csv")]) for m in methods[:-2]]
            csv = [(m, v) for m, v in csv if v]
            if csv:
                lines += ["", f"The first {csv[0][1][0]['rows_used']:,} rows of `suspects.csv` hold "
                          + ", ".join(f"{ms([x['precision'] for x in v])} flipped labels ({m})" for m, v in csv) + "."]
            lines += ["", "Per flip seed:", "", "| method | score | seed | AUROC | precision at k | wall s | CPU s |", "|---|---|---|---|---|---|---|"]
            for m in methods:
                for r in [r for r in cr if r["method"] == m]:
                    for key, v in r["scores"].items():
                        lines.append(f"| {m} | {score_name(m, key, [r])} | {r['seed']} | {v['auroc']:.4f} | "
                                     f"{v['precision_at_k']:.4f} | {r['wall_seconds']:.1f} | {r.get('cpu_seconds', 0):.1f} |")
        else:
            lines += [f"## {DATASET[dataset]['title']}, {n:,} samples, clean labels", "",
                      "| method | flagged set | flagged | fraction flagged | wall s | CPU s |", "|---|---|---|---|---|---|"]
            for r in cr:
                f = r.get("flagged")
                what = "find_label_issues" if r["method"] == "cleanlab" else ("is_suspect" if f else "(no is_suspect column)")
                flagged = f"{f['flagged']}" if f else "–"
                fraction = f"{f['fraction_flagged']:.4f}" if f else "–"
                lines.append(f"| {r['method']} | {what} | {flagged} | {fraction} | {r['wall_seconds']:.1f} | {r.get('cpu_seconds', 0):.1f} |")
        shown = [r for r in cr if r.get("label_errors", {}).get("threshold") is not None][:1]
        for r in shown:
            lines += ["", f"`{r['method']}` job.json `label_errors` (seed {r['seed']}):", "", "```json",
                      json.dumps(r["label_errors"]), "```"]
        lines.append("")
    (results / "results.md").write_text("\n".join(lines))
    (results / "results.json").write_text(json.dumps({
        "train_seed": TRAIN_SEED, "flip_seeds": seeds, "quick": args.quick, "threads": args.threads,
        "folds": FOLDS, "cartos": cartos, "notes": args.note, "runs_minutes": sum(r["wall_seconds"] for r in rows) / 60,
        "harness_minutes": total / 60, "runs": rows}, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_cleanlab":
        cleanlab_main(sys.argv[2:])
    else:
        main()
