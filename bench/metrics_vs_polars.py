#!/usr/bin/env python3
"""`carto metrics` against polars and against pyarrow + numpy, side by side.

All three read the same stored dynamics (OUT/dynamics/epoch=K/part-R.parquet,
the contract's layout), compute the same per-sample metrics (confidence,
variability, correctness, aum, el2n, threshold_closeness, correct_count,
forgetting_events, first_learned_epoch, epochs, label) and write them as one
Parquet file (zstd level 1, as carto writes). Runs are interleaved (carto, polars, numpy,
carto, ...) so the noisy machine's drift hits each tool alike; each run is a
fresh process, its wall time and peak RSS (wait4's ru_maxrss) are recorded,
and the Python tools also report their time after imports. At the end the
three outputs are compared column by column.

    python bench/metrics_vs_polars.py --carto target/release/carto \
        --dynamics out/bench/dyn-2m/dynamics --runs 5 --work /tmp/mvp

Internal: `--impl polars|numpy DYNAMICS OUT` runs one tool (what the driver
spawns).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.abspath(__file__)
COLUMNS = ["sample_id", "label", "gold_prob", "correct", "margin", "el2n"]
FLOAT_COLS = ["confidence", "variability", "correctness", "aum", "el2n", "threshold_closeness"]
INT_COLS = ["label", "epochs", "correct_count", "forgetting_events", "first_learned_epoch"]


def run_polars(dyn, out):
    """The fastest polars formulation found: one lazy frame per epoch joined
    on sample_id, metrics as horizontal expressions (2.1 s here, before the
    write). A group_by over all rows is 1.8 s for the five means alone and
    14 s once forgetting needs each group sorted by epoch."""
    import polars as pl

    t0 = time.perf_counter()
    eps = sorted(int(d.split("=", 1)[1]) for d in os.listdir(dyn) if d.startswith("epoch="))
    frames = [
        pl.scan_parquet(os.path.join(dyn, f"epoch={e}", "*.parquet")).select(
            pl.col("sample_id"),
            pl.col("label"),
            pl.col("gold_prob").alias(f"p{e}"),
            pl.col("correct").alias(f"c{e}"),
            pl.col("margin").alias(f"m{e}"),
            pl.col("el2n").alias(f"e{e}"),
        )
        for e in eps
    ]
    lf = frames[0]
    for f in frames[1:]:
        lf = lf.join(f.drop("label"), on="sample_id")
    n = len(eps)
    P = [pl.col(f"p{e}") for e in eps]
    C = [pl.col(f"c{e}") for e in eps]
    conf = pl.sum_horizontal(P) / n
    res = (
        lf.select(
            "sample_id",
            "label",
            pl.lit(n, dtype=pl.Int32).alias("epochs"),
            conf.alias("confidence"),
            (pl.sum_horizontal([p * p for p in P]) / n - conf * conf).clip(0).sqrt().alias("variability"),
            (pl.sum_horizontal(C) / n).alias("correctness"),
            (pl.sum_horizontal([pl.col(f"m{e}") for e in eps]) / n).alias("aum"),
            (pl.sum_horizontal([pl.col(f"e{e}") for e in eps]) / n).alias("el2n"),
            pl.sum_horizontal(C).cast(pl.Int32).alias("correct_count"),
            pl.sum_horizontal([C[k - 1] & ~C[k] for k in range(1, n)]).cast(pl.Int32).alias("forgetting_events"),
            pl.coalesce([pl.when(C[k]).then(pl.lit(eps[k], dtype=pl.Int32)) for k in range(n)]).alias(
                "first_learned_epoch"
            ),
        )
        .with_columns((pl.col("confidence") * (1.0 - pl.col("confidence"))).alias("threshold_closeness"))
        .sort("sample_id")
        .collect()
    )
    res.write_parquet(out, compression="zstd", compression_level=1)
    return time.perf_counter() - t0


def run_polars_groupby(dyn, out):
    """polars the way its guide puts it: scan_parquet + group_by. Forgetting
    events need each sample's epochs in order, hence the sort first."""
    import polars as pl

    t0 = time.perf_counter()
    lf = pl.scan_parquet(os.path.join(dyn, "epoch=*", "*.parquet"), hive_partitioning=True)
    lf = lf.select(["epoch", *COLUMNS]).sort(["sample_id", "epoch"])
    g = pl.col("gold_prob")
    c = pl.col("correct")
    res = (
        lf.group_by("sample_id", maintain_order=True)
        .agg(
            pl.col("label").first(),
            pl.len().cast(pl.Int32).alias("epochs"),
            g.mean().alias("confidence"),
            g.std(ddof=0).alias("variability"),
            c.mean().alias("correctness"),
            pl.col("margin").mean().alias("aum"),
            pl.col("el2n").mean().alias("el2n"),
            c.sum().cast(pl.Int32).alias("correct_count"),
            (c.shift(1) & ~c).sum().cast(pl.Int32).alias("forgetting_events"),
            pl.col("epoch").filter(c).min().cast(pl.Int32).alias("first_learned_epoch"),
        )
        .with_columns((pl.col("confidence") * (1.0 - pl.col("confidence"))).alias("threshold_closeness"))
        .collect()
    )
    res.write_parquet(out, compression="zstd", compression_level=1)
    return time.perf_counter() - t0


def run_numpy(dyn, out):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    epochs = sorted(
        (int(d.split("=", 1)[1]), os.path.join(dyn, d)) for d in os.listdir(dyn) if d.startswith("epoch=")
    )
    n = None
    for k, (epoch, d) in enumerate(epochs):
        t = pq.read_table(d, columns=COLUMNS)
        sid = t.column("sample_id").to_numpy()
        if n is None:
            n = int(sid.max()) + 1
            label = np.full(n, -1, dtype=np.int64)
            sum_p = np.zeros(n)
            sum_p2 = np.zeros(n)
            sum_m = np.zeros(n)
            sum_e = np.zeros(n)
            count_c = np.zeros(n, dtype=np.int64)
            forgets = np.zeros(n, dtype=np.int64)
            first = np.full(n, -1, dtype=np.int64)
            prev = np.zeros(n, dtype=bool)
        p = t.column("gold_prob").to_numpy()
        cor = t.column("correct").to_numpy(zero_copy_only=False)
        sum_p += np.bincount(sid, weights=p, minlength=n)
        sum_p2 += np.bincount(sid, weights=p * p, minlength=n)
        sum_m += np.bincount(sid, weights=t.column("margin").to_numpy(), minlength=n)
        sum_e += np.bincount(sid, weights=t.column("el2n").to_numpy(), minlength=n)
        count_c += np.bincount(sid, weights=cor, minlength=n).astype(np.int64)
        now = np.zeros(n, dtype=bool)
        now[sid] = cor
        if k > 0:
            forgets += prev & ~now
        first[(first < 0) & now] = epoch
        prev = now
        label[sid] = t.column("label").to_numpy()
    e = len(epochs)
    conf = sum_p / e
    var = np.sqrt(np.maximum(sum_p2 / e - conf * conf, 0.0))
    table = pa.table(
        {
            "sample_id": np.arange(n, dtype=np.int64),
            "label": label,
            "epochs": np.full(n, e, dtype=np.int32),
            "confidence": conf,
            "variability": var,
            "correctness": count_c / e,
            "aum": sum_m / e,
            "el2n": sum_e / e,
            "threshold_closeness": conf * (1.0 - conf),
            "correct_count": count_c.astype(np.int32),
            "forgetting_events": forgets.astype(np.int32),
            "first_learned_epoch": pa.array(first.astype(np.int32), mask=first < 0),
        }
    )
    pq.write_table(table, out, compression="zstd", compression_level=1)
    return time.perf_counter() - t0


IMPLS = {"polars-groupby": run_polars_groupby, "polars-join": run_polars, "numpy": run_numpy}


def spawn(argv):
    """Runs argv; returns (wall seconds, peak RSS MiB, stdout)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = p.stdout.read()
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{err.decode()}")
    return wall, ru.ru_maxrss / 1024.0, out.decode()


def compare(paths):
    import numpy as np
    import pyarrow.parquet as pq

    ref_name, ref_path = next(iter(paths.items()))
    ref = pq.read_table(ref_path)
    worst = {}
    for name, path in paths.items():
        t = pq.read_table(path)
        if t.num_rows != ref.num_rows:
            sys.exit(f"{name}: {t.num_rows} rows, {ref_name}: {ref.num_rows}")
        for col in FLOAT_COLS:
            d = float(np.max(np.abs(t.column(col).to_numpy() - ref.column(col).to_numpy())))
            worst[col] = max(worst.get(col, 0.0), d)
            if d > 1e-6:
                sys.exit(f"{name} vs {ref_name}: column {col} differs by {d}")
        for col in INT_COLS:
            a = t.column(col).cast("int64").fill_null(-1).to_numpy()
            b = ref.column(col).cast("int64").fill_null(-1).to_numpy()
            if not (a == b).all():
                sys.exit(f"{name} vs {ref_name}: column {col} differs at {int(np.argmax(a != b))}")
    return worst


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impl", choices=list(IMPLS))
    ap.add_argument("--carto")
    ap.add_argument("--dynamics")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", default="/tmp/carto-metrics-bench")
    ap.add_argument("args", nargs="*")
    a = ap.parse_args()
    if a.impl:
        dyn, out = a.args
        secs = IMPLS[a.impl](dyn, out)
        print(json.dumps({"compute_seconds": secs}))
        return

    os.makedirs(a.work, exist_ok=True)
    outs = {k: os.path.join(a.work, f"{k}.parquet") for k in ["carto", *IMPLS]}
    cmds = {"carto": [a.carto, "metrics", "--dynamics", a.dynamics, "--out", outs["carto"]]}
    for k in IMPLS:
        cmds[k] = [sys.executable, HERE, "--impl", k, a.dynamics, outs[k]]
    res = {k: {"wall": [], "rss": [], "compute": []} for k in cmds}
    for r in range(a.runs):
        for name, argv in cmds.items():
            wall, rss, out = spawn(argv)
            res[name]["wall"].append(wall)
            res[name]["rss"].append(rss)
            compute = json.loads(out)["compute_seconds"] if name != "carto" else wall
            res[name]["compute"].append(compute)
            print(f"run {r + 1}/{a.runs} {name:14s} wall {wall:6.3f} s  compute {compute:6.3f} s  peak RSS {rss:7.1f} MiB",
                  flush=True)
    worst = compare(outs)
    print("same answers: max |diff| per float column " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
    med = {k: {m: statistics.median(v[m]) for m in v} for k, v in res.items()}
    spread = {k: (min(v["wall"]), max(v["wall"])) for k, v in res.items()}
    print(f"\n{'tool':14s} {'wall median (min-max)':>26s} {'compute median':>15s} {'peak RSS MiB':>13s}")
    for k, m in med.items():
        print(f"{k:14s} {m['wall']:10.3f} ({spread[k][0]:.3f}-{spread[k][1]:.3f}) s {m['compute']:13.3f} s {m['rss']:13.1f}")
    c = med["carto"]["wall"]
    for k in IMPLS:
        print(f"carto is {med[k]['wall'] / c:.2f}x faster than {k} by wall time, "
              f"{med[k]['compute'] / c:.2f}x by {k}'s time after imports; "
              f"peak memory {med['carto']['rss'] / med[k]['rss']:.2f}x of {k}'s")


if __name__ == "__main__":
    main()
