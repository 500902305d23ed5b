"""read_metrics and select against the `carto select` CLI on a real metrics.parquet."""

import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import carto
from carto.metrics import count_for, select_order, select_table


@pytest.fixture(scope="module")
def job_out(tmp_path_factory):
    from conftest import REPO, carto_binary

    b = carto_binary()
    if b is None:
        pytest.skip("no carto binary")
    if not (Path(b).parent / "carto-worker").exists():
        pytest.skip("no carto-worker beside carto")
    out = tmp_path_factory.mktemp("job") / "out"
    data = REPO / "examples/rotten_tomatoes/reviews-2k.csv"
    subprocess.run(
        [b, "run", "--data", str(data), "--label-col", "label", "--text-col", "text", "--id-col", "id",
         "--epochs", "3", "--out", str(out), "-q"],
        check=True, capture_output=True,
    )
    return b, out, data


def test_read_metrics_gives_a_frame_of_the_contract_columns(job_out):
    _, out, _ = job_out
    for where in (out, out / "metrics.parquet"):
        df = carto.read_metrics(where)
        assert df.shape[0] == 2000
        for col in ("sample_id", "label", "confidence", "variability", "correctness", "aum", "forgetting_events"):
            assert col in df.columns


CASES = [
    ("confidence", 0.1, False, False),
    ("confidence", 0.33, True, False),
    ("variability", 0.25, False, False),
    ("correctness", 0.2, False, True),   # many ties: broken by sample_id
    ("forgetting_events", 0.1, False, False),
    ("aum", 0.05, False, True),
    ("threshold_closeness", 0.5, True, True),
    ("el2n", 0.125, False, False),
]


@pytest.mark.parametrize("metric,fraction,worst,per_class", CASES)
def test_select_matches_the_cli(job_out, tmp_path, metric, fraction, worst, per_class):
    b, out, data = job_out
    cli_out = tmp_path / "subset.parquet"
    cmd = [b, "select", "--metrics", str(out / "metrics.parquet"), "--metric", metric,
           "--fraction", str(fraction), "--out", str(cli_out)]
    cmd += ["--worst"] if worst else []
    cmd += ["--per-class"] if per_class else []
    subprocess.run(cmd, check=True, capture_output=True)
    cli = pq.read_table(cli_out)
    ours = select_table(out, metric, fraction, worst=worst, per_class=per_class, data=data)
    assert ours.num_rows == cli.num_rows
    for col in ("sample_id", "select_rank", "label", metric, "carto_id", "text"):
        assert ours.column(col).to_pylist() == cli.column(col).to_pylist(), col
    assert ours.column_names == cli.column_names
    # Without data: the metrics rows alone, in the same order.
    alone = carto.select(out / "metrics.parquet", metric, fraction, worst=worst, per_class=per_class)
    assert alone["sample_id"].to_list() == cli.column("sample_id").to_pylist()


def test_rules_on_hand_made_values():
    v = np.array([0.5, 0.1, 0.5, 0.9, 0.1])
    ids = np.arange(5)
    l = np.zeros(5, np.int64)
    assert select_order(v, l, ids, "confidence", 1.0).tolist() == [1, 4, 0, 2, 3]
    assert select_order(v, l, ids, "variability", 1.0).tolist() == [3, 0, 2, 1, 4]
    assert select_order(v, l, ids, "confidence", 0.4, worst=True).tolist() == [3, 0]
    assert select_order(v, l, ids, "aum", 0.5).tolist() == [1, 4, 0]
    v = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.05, 0.95])
    l = np.array([0] * 8 + [1, 1])
    assert select_order(v, l, np.arange(10), "confidence", 0.25, per_class=True).tolist() == [8, 0, 1]
    v = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    assert select_order(v, np.zeros(7, np.int64), np.arange(7), "confidence", 0.5, both_ends=True).tolist() == [0, 1, 6, 5]
    assert count_for(0.25, 10) == 3 and count_for(0.24, 10) == 2 and count_for(1.0, 7) == 7
    with pytest.raises(ValueError, match="fraction"):
        select_order(v, np.zeros(7, np.int64), np.arange(7), "confidence", 1.5)
    with pytest.raises(ValueError, match="expected one of"):
        select_order(v, np.zeros(7, np.int64), np.arange(7), "loss", 0.5)
