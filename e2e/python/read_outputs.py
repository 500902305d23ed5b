"""Reads a carto output directory with pyarrow, polars and DuckDB, the way
users do, and checks they agree. Usage: read_outputs.py OUT ROWS EPOCHS"""
import sys

import duckdb
import polars as pl
import pyarrow.dataset as ds
import pyarrow.parquet as pq

out, rows, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

metrics = pq.read_table(f"{out}/metrics.parquet")
assert metrics.num_rows == rows, metrics.num_rows
for c in ["sample_id", "label", "epochs", "confidence", "variability", "correctness", "aum", "el2n",
          "threshold_closeness", "correct_count", "forgetting_events", "first_learned_epoch"]:
    assert c in metrics.column_names, c

dyn = ds.dataset(f"{out}/dynamics", format="parquet", partitioning="hive").to_table()
assert dyn.num_rows == rows * epochs, dyn.num_rows
assert sorted(set(dyn.column("epoch").to_pylist())) == list(range(epochs))
print("pyarrow ok")

lf = pl.scan_parquet(f"{out}/dynamics/**/*.parquet", hive_partitioning=True)
conf = lf.group_by("sample_id").agg(pl.col("gold_prob").mean().alias("c"), pl.len().alias("n")).collect()
assert conf.height == rows and conf["n"].min() == epochs
joined = conf.join(pl.read_parquet(f"{out}/metrics.parquet"), on="sample_id")
assert (joined["c"] - joined["confidence"]).abs().max() < 1e-9
print("polars ok")

con = duckdb.connect()
n, e = con.execute(
    f"select count(*), count(distinct epoch) from read_parquet('{out}/dynamics/*/*.parquet', hive_partitioning=true)"
).fetchone()
assert (n, e) == (rows * epochs, epochs), (n, e)
worst = con.execute(
    f"select sample_id from '{out}/metrics.parquet' order by confidence limit 5"
).fetchall()
assert len(worst) == 5
print("duckdb ok")
