"""What study.py and transformer_study.py share: the train/test split of the
reviews, running carto, and the detection scores (AUROC, precision at k)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl


def run(carto, *args):
    print("$ carto", " ".join(str(a) for a in args), flush=True)
    subprocess.run([carto, *map(str, args)], check=True)


def done(out):
    """A job already finished (a study resumes after an interruption)."""
    job = out / "job.json"
    return job.exists() and json.loads(job.read_text()).get("state") == "succeeded"


def setup():
    """The command line `CARTO WORK RESULTS`: (carto, work, results, the
    repository root, run) with both directories created; run(*args) runs
    carto with args."""
    carto, work, results = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    work.mkdir(parents=True, exist_ok=True)
    results.mkdir(parents=True, exist_ok=True)
    root = Path(__file__).resolve().parents[2]
    return carto, work, results, root, lambda *args: run(carto, *args)


def split_reviews(root, work):
    """Rotten Tomatoes split 80/20, stratified by label, fixed seed; writes
    work/train.csv and work/test.csv and returns (train, test)."""
    reviews = pl.read_csv(root / "examples/rotten_tomatoes/reviews.csv")
    rng = np.random.default_rng(2020)
    test_mask = np.zeros(reviews.height, bool)
    for label in ["fresh", "rotten"]:
        idx = np.where(reviews["label"].to_numpy() == label)[0]
        test_mask[rng.choice(idx, size=round(len(idx) * 0.2), replace=False)] = True
    train = reviews.filter(pl.Series(~test_mask))
    test = reviews.filter(pl.Series(test_mask))
    train.write_csv(work / "train.csv")
    test.write_csv(work / "test.csv")
    return train, test


def ranks(x):
    """Average ranks (ties share their mean rank), 1-based."""
    order = np.argsort(x, kind="mergesort")
    r = np.empty(len(x))
    r[order] = np.arange(1, len(x) + 1)
    xs = x[order]
    i = 0
    while i < len(xs):
        j = i
        while j + 1 < len(xs) and xs[j + 1] == xs[i]:
            j += 1
        if j > i:
            r[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return r


def auroc(score, positive):
    """Mann-Whitney AUROC with average ranks for ties."""
    r = ranks(score)
    p = positive.sum()
    n = len(positive) - p
    return float((r[positive].sum() - p * (p + 1) / 2) / (p * n))


def precision_at(score, positive, k):
    top = np.argsort(-score, kind="stable")[:k]
    return float(positive[top].mean())
