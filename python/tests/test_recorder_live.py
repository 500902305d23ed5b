"""End to end against a real coordinator (`carto serve`, started by the
Recorder): a loop's metrics equal its own numpy computation, two torchrun
ranks give the metrics of one, and a killed rank fails the job."""

import os

import numpy as np
import pyarrow.parquet as pq
import pytest

import carto
from carto import Recorder

pytestmark = [pytest.mark.live]

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


def _torchrun(args, carto_bin, nproc, timeout=240):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parent / "scripts" / "fixed_loop.py"
    env = dict(os.environ, CARTO_BIN=carto_bin, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), str(script), *args]
    if nproc == 1:
        cmd = [sys.executable, str(script), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def test_two_torchrun_ranks_give_the_metrics_of_one(tmp_path, carto_bin):
    one, two = tmp_path / "one", tmp_path / "two"
    r = _torchrun([str(one)], carto_bin, 1)
    assert r.returncode == 0, r.stderr[-3000:]
    r = _torchrun([str(two)], carto_bin, 2)
    assert r.returncode == 0, r.stderr[-3000:]
    a = pq.read_table(one / "metrics.parquet").sort_by("sample_id")
    b = pq.read_table(two / "metrics.parquet").sort_by("sample_id")
    for col in ("label", "epochs", "confidence", "variability", "correctness", "aum", "el2n", "forgetting_events"):
        np.testing.assert_allclose(a.column(col).to_numpy(), b.column(col).to_numpy(), rtol=0, atol=1e-12, err_msg=col)
    # The padded sample counted once per epoch, in metrics and dynamics alike.
    assert b.column("epochs").to_pylist() == [3] * 101
    for epoch in range(3):
        ids = pq.read_table(two / "dynamics" / f"epoch={epoch}").column("sample_id").to_pylist()
        assert sorted(ids) == list(range(101)), epoch


def test_a_killed_rank_fails_the_job_with_a_reason_and_no_metrics(tmp_path, carto_bin):
    """Two ranks of a job on a separately started coordinator, as on a
    cluster; rank 1's process dies in epoch 1."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from carto._client import Client
    from carto._embedded import EmbeddedCoordinator
    from carto._proto import carto_pb2 as pb

    out = tmp_path / "out"
    coordinator = EmbeddedCoordinator(carto_bin)
    url = coordinator.start()
    try:
        client = Client(url, coordinator.token)
        spec = pb.JobSpec(trainer="external", out=str(out), num_samples=101, num_classes=4, world_size=2)
        job = client.call("SubmitJob", client.jobs.SubmitJob, pb.SubmitJobRequest(spec=spec)).job_id
        script = Path(__file__).parent / "scripts" / "fixed_loop.py"
        env = dict(os.environ, CARTO_TEST_URL=url, CARTO_TEST_JOB=job, CARTO_TEST_TOKEN=coordinator.token, WORLD="2")
        ranks = [
            subprocess.Popen([sys.executable, str(script), str(out), "--die-at-epoch", "1"], env=dict(env, RANK=str(r)),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for r in range(2)
        ]
        results = [(p.wait(timeout=120), p.stderr.read()) for p in ranks]
        assert results[1][0] == 3, results[1][1][-2000:]
        assert results[0][0] != 0, "rank 0 learns that the job failed"
        final = client.call("GetJob", client.jobs.GetJob, pb.GetJobRequest(job_id=job))
        assert final.state == pb.JOB_STATE_FAILED
        assert "rank 1" in final.error and "cannot be re-formed" in final.error, final.error
        client.close()
    finally:
        coordinator.stop()
    assert not (out / "metrics.parquet").exists()
    assert json.loads((out / "job.json").read_text())["state"] == "failed"


def test_the_own_loop_example_maps_fashion_mnist_alone_and_under_torchrun(tmp_path, carto_bin):
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "own_loop" / "train.py"
    env = dict(os.environ, CARTO_BIN=carto_bin, OMP_NUM_THREADS="1")
    for name, launcher in [("alone", [sys.executable]), ("torchrun", [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"])]:
        out = tmp_path / name
        r = subprocess.run([*launcher, str(example), "--out", str(out), "--epochs", "2"], env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "succeeded" in r.stdout, r.stdout
        for f in ("metrics.parquet", "datamap.png", "suspects.csv", "job.json"):
            assert (out / f).exists(), (name, f)
        assert pq.read_table(out / "metrics.parquet").num_rows == 1000
