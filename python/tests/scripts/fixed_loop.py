"""A training loop whose "model" is a fixed function of (sample, epoch), so
any number of ranks gives the same rows: for comparing 1 rank with 2 under
torchrun. Usage: fixed_loop.py OUT [--die-at-epoch E (rank 1 exits)].
With CARTO_TEST_URL, CARTO_TEST_JOB, CARTO_TEST_TOKEN, RANK and WORLD it
joins that job on that coordinator instead (a rank of a cluster job)."""

import os
import sys

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from carto import Recorder

N, K, E = 101, 4, 3  # 101: DistributedSampler pads one rank with a repeated sample

out = sys.argv[1]
die_at = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[2] == "--die-at-epoch" else None
if "LOCAL_RANK" in os.environ:
    torch.distributed.init_process_group("gloo")
rng = np.random.default_rng(3)
w = torch.tensor(rng.standard_normal((N, K)), dtype=torch.float32)
y = torch.tensor(rng.integers(0, K, N))
ds = TensorDataset(torch.arange(N), y)
sampler = DistributedSampler(ds, shuffle=True, seed=1) if torch.distributed.is_initialized() else None
loader = DataLoader(ds, batch_size=8, sampler=sampler, shuffle=False)

joined = {}
if os.environ.get("CARTO_TEST_URL"):
    joined = dict(
        coordinator=os.environ["CARTO_TEST_URL"],
        job=os.environ["CARTO_TEST_JOB"],
        token=os.environ["CARTO_TEST_TOKEN"],
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD"]),
    )
    ids_of_rank = torch.arange(int(os.environ["RANK"]), N, int(os.environ["WORLD"]))
    loader = DataLoader(torch.utils.data.Subset(ds, ids_of_rank), batch_size=8)

with Recorder(out, num_samples=N, num_classes=K, **joined) as rec:
    for epoch in range(E):
        if sampler is not None:
            sampler.set_epoch(epoch)
        for ids, yb in loader:
            if die_at == epoch and rec.rank == 1:
                os._exit(3)  # a crash, not an exception: nothing is reported
            rec.record(ids, w[ids] * (1.0 + epoch), yb)
        rec.end_epoch()
    rec.finish()
