"""End to end against a real coordinator that implements external jobs
(`carto serve`, started by the Recorder). Run with CARTO_LIVE_TESTS=1."""

import os

import numpy as np
import pyarrow.parquet as pq
import pytest

import carto
from carto import Recorder

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(not os.environ.get("CARTO_LIVE_TESTS"), reason="set CARTO_LIVE_TESTS=1 (needs a coordinator with external jobs)"),
]

N, K, E = 200, 3, 3


def test_recorder_gives_the_numpy_confidence(tmp_path, carto_bin, monkeypatch):
    monkeypatch.setenv("CARTO_BIN", carto_bin)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((N, 6))
    w = rng.standard_normal((6, K))  # a fixed random "model"
    y = rng.integers(0, K, N)
    out = tmp_path / "out"
    gold = []
    with Recorder(out, N, K, label_names=["a", "b", "c"]) as rec:
        for epoch in range(E):
            scale = 0.5 + epoch  # the "model" gets more confident
            order = rng.permutation(N)
            for s in range(0, N, 16):
                ids = order[s : s + 16]
                rec.record(ids, (x[ids] @ w) * scale, y[ids])
            rec.end_epoch()
            z = (x @ w) * scale
            p = np.exp(z - z.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            gold.append(p[np.arange(N), y])
        result = rec.finish()
    assert result.state == "succeeded" and result.epochs == E
    m = pq.read_table(out / "metrics.parquet").sort_by("sample_id")
    assert m.column("sample_id").to_pylist() == list(range(N))
    assert m.column("label").to_pylist() == y.tolist()
    np.testing.assert_allclose(m.column("confidence").to_numpy(), np.mean(gold, axis=0), rtol=0, atol=1e-9)
    np.testing.assert_allclose(m.column("variability").to_numpy(), np.std(gold, axis=0), rtol=0, atol=1e-9)
    for f in ("datamap.png", "datamap.svg", "job.json", "suspects.csv"):
        assert (out / f).exists(), f
    assert (out / "dynamics").is_dir()
    df = carto.read_metrics(out)
    assert df.shape[0] == N
    assert result.metrics().shape[0] == N
