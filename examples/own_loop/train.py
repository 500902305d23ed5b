"""Your own PyTorch loop, mapped by carto: an MLP on 1,000 Fashion-MNIST
images (7×7 pooled pixels), with carto.Recorder recording every batch's logits.

    pip install ./python torch polars
    CARTO_BIN=target/release/carto python examples/own_loop/train.py --out /tmp/own-loop
    # (or torchrun --nproc-per-node 2 examples/own_loop/train.py --out /tmp/own-loop)
"""

import argparse
import os
from pathlib import Path

import numpy as np
import pyarrow.csv as pcsv
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import carto

p = argparse.ArgumentParser()
p.add_argument("--out", default="own-loop-out")
p.add_argument("--epochs", type=int, default=5)
args = p.parse_args()
if "LOCAL_RANK" in os.environ:  # under torchrun
    torch.distributed.init_process_group("gloo")

data = Path(__file__).resolve().parents[1] / "fashion_mnist" / "fashion-7x7-1k.csv"
table = pcsv.read_csv(data)
names = sorted(set(table.column("label").to_pylist()))  # carto's convention: sorted class names
y = torch.tensor([names.index(v) for v in table.column("label").to_pylist()])
x = torch.tensor(np.stack([table.column(f"p{i}").to_numpy() for i in range(49)], 1), dtype=torch.float32) / 255
ds = TensorDataset(torch.arange(len(y)), x, y)  # the sample id travels with each row
sampler = DistributedSampler(ds) if torch.distributed.is_initialized() else None
loader = DataLoader(ds, batch_size=64, shuffle=sampler is None, sampler=sampler)

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(49, 128), torch.nn.ReLU(), torch.nn.Linear(128, len(names)))
opt = torch.optim.Adam(model.parameters(), lr=1e-2)

with carto.Recorder(args.out, num_samples=len(y), num_classes=len(names), label_names=names, data=data) as rec:
    for epoch in range(args.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        for ids, xb, yb in loader:
            logits = model(xb)
            rec.record(ids, logits, yb)  # before the optimizer step, as the paper does
            loss = torch.nn.functional.cross_entropy(logits, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        rec.end_epoch()
    result = rec.finish()

if (not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0):
    m = result.metrics()
    print(f"carto: job {result.job_id} {result.state}; {result.epochs} epochs; outputs in {result.out}")
    print(carto.select(result.out, metric="confidence", fraction=0.02, data=data).select(["sample_id", "label", "confidence"]))
