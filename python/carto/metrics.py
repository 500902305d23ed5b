"""Reading a job's metrics, and `carto select` in Python."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, List, Optional, Union

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

PathLike = Union[str, "Path"]

#: Metrics `select` orders by, and whether the paper's code sorts them ascending.
METRICS = {
    "confidence": True,
    "variability": False,
    "correctness": True,
    "forgetting_events": False,
    "aum": True,
    "threshold_closeness": False,
    "el2n": False,
}


def _metrics_path(out: PathLike) -> Path:
    p = Path(out)
    return p / "metrics.parquet" if p.is_dir() else p


def read_metrics_table(out: PathLike) -> pa.Table:
    """OUT/metrics.parquet (OUT or the file itself) as a pyarrow Table."""
    return pq.read_table(_metrics_path(out))


def _frame(table: pa.Table) -> Any:
    try:
        import polars as pl
    except ImportError:
        pass
    else:
        return pl.from_arrow(table)
    try:
        import pandas  # noqa: F401
    except ImportError:
        raise ImportError(
            "carto.read_metrics returns a polars or pandas DataFrame: pip install polars (or pandas), "
            "or use carto.read_metrics_table for a pyarrow Table"
        ) from None
    return table.to_pandas()


def read_metrics(out: PathLike) -> Any:
    """OUT/metrics.parquet (OUT or the file itself): a polars DataFrame when
    polars is importable, else a pandas one."""
    return _frame(read_metrics_table(out))


def count_for(fraction: float, n: int) -> int:
    """k = ⌊fraction · n + 0.5⌋, at most n."""
    return min(int(math.floor(fraction * n + 0.5)), n)


def select_order(
    values: np.ndarray,
    labels: np.ndarray,
    sample_ids: np.ndarray,
    metric: str,
    fraction: float,
    *,
    worst: bool = False,
    per_class: bool = False,
    both_ends: bool = False,
) -> np.ndarray:
    """Row positions of the selection, in selection order (as `carto select`)."""
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r}: expected one of {', '.join(METRICS)}")
    if not (0.0 <= fraction <= 1.0):
        raise ValueError(f"fraction {fraction} must be between 0 and 1")
    values = np.asarray(values, dtype=np.float64)
    if np.isnan(values).any():
        i = int(np.flatnonzero(np.isnan(values))[0])
        raise ValueError(f"sample_id {int(sample_ids[i])}: {metric} is NaN")
    ascending = METRICS[metric] != worst
    key = values if ascending else -values
    # lexsort: the last key is the primary one; ties by sample_id ascending.
    order = np.lexsort((np.asarray(sample_ids), key))
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))

    def pick(members: np.ndarray) -> "tuple[np.ndarray, np.ndarray]":
        k = count_for(fraction, len(members))
        head, tail = ((k + 1) // 2, k // 2) if both_ends else (k, 0)
        return members[:head], members[len(members) - tail:][::-1]

    if per_class:
        heads: List[np.ndarray] = []
        tails: List[np.ndarray] = []
        for c in np.unique(labels):
            h, t = pick(order[labels[order] == c])
            heads.append(h)
            tails.append(t)
        head = np.concatenate(heads) if heads else np.empty(0, np.int64)
        tail = np.concatenate(tails) if tails else np.empty(0, np.int64)
    else:
        head, tail = pick(order)
    head = head[np.argsort(position[head], kind="stable")]
    tail = tail[np.argsort(-position[tail], kind="stable")]
    return np.concatenate([head, tail]).astype(np.int64)


def _read_data(path: PathLike) -> pa.Table:
    p = str(path)
    if p.endswith(".parquet"):
        return pq.read_table(p)
    if p.endswith(".csv"):
        import pyarrow.csv as pcsv

        return pcsv.read_csv(p)
    if p.endswith(".jsonl") or p.endswith(".json"):
        import pyarrow.json as pjson

        return pjson.read_json(p)
    raise ValueError(f"{p}: expected a .parquet, .csv or .jsonl file")


def select_table(
    metrics: PathLike,
    metric: str,
    fraction: float,
    *,
    worst: bool = False,
    per_class: bool = False,
    both_ends: bool = False,
    data: Optional[PathLike] = None,
) -> pa.Table:
    """`select` as a pyarrow Table."""
    m = read_metrics_table(metrics)
    for col in (metric, "label", "sample_id"):
        if col not in m.column_names:
            raise ValueError(f"{_metrics_path(metrics)}: column '{col}' not found")
    if m.column(metric).null_count:
        raise ValueError(f"{_metrics_path(metrics)}: column '{metric}' has nulls")
    values = m.column(metric).to_numpy().astype(np.float64)
    labels = m.column("label").to_numpy()
    ids = m.column("sample_id").to_numpy()
    chosen = select_order(values, labels, ids, metric, fraction, worst=worst, per_class=per_class, both_ends=both_ends)
    idx = pa.array(chosen, type=pa.int64())
    names: List[str] = []
    cols: List[Any] = []
    if data is not None:
        d = _read_data(data)
        if d.num_rows != m.num_rows:
            raise ValueError(f"{data}: {d.num_rows} rows, but the metrics have {m.num_rows}: is this the job's dataset?")
        # Dataset rows are matched by sample_id (its 0-based row index).
        rows = pa.array(ids[chosen], type=pa.int64())
        for name, col in zip(d.column_names, d.columns):
            names.append(name)
            cols.append(col.take(rows))
    taken = set(names)
    for name, col in zip(m.column_names, m.columns):
        names.append(f"carto_{name}" if name in taken else name)
        cols.append(col.take(idx))
    names.append("carto_select_rank" if "select_rank" in taken else "select_rank")
    cols.append(pa.array(np.arange(len(chosen), dtype=np.int64)))
    return pa.table(cols, names=names)


def select(
    metrics: PathLike,
    metric: str,
    fraction: float,
    *,
    worst: bool = False,
    per_class: bool = False,
    both_ends: bool = False,
    data: Optional[PathLike] = None,
) -> Any:
    """A subset by a training-dynamics metric, as `carto select` picks it:
    ascending for confidence, correctness and aum (hardest first), descending
    for variability, forgetting_events, threshold_closeness and el2n;
    `worst` flips the order; k = ⌊fraction·n + 0.5⌋ (per class with
    `per_class`); ties by sample_id; rows in selection order with a 0-based
    `select_rank`. With `data`, the dataset's rows come first with all their
    columns, then the metrics (a name the dataset already uses gets a
    `carto_` prefix); without it, the metrics rows alone (the CLI instead
    defaults to the job's dataset). A polars DataFrame if polars is
    importable, else pandas."""
    return _frame(
        select_table(metrics, metric, fraction, worst=worst, per_class=per_class, both_ends=both_ends, data=data)
    )
