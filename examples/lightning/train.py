"""A PyTorch Lightning fit mapped by carto: an MLP on 1,000 Fashion-MNIST
images (7×7 pooled pixels); training_step returns its logits and the batch's
sample ids, and carto's CartoCallback records them.

    pip install './python[lightning]'
    CARTO_BIN=target/release/carto python examples/lightning/train.py --out /tmp/lightning-map
"""
import argparse
from pathlib import Path

import lightning as L
import numpy as np
import pyarrow.csv as pcsv
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import carto
from carto.integrations.lightning import CartoCallback

p = argparse.ArgumentParser()
p.add_argument("--out", default="lightning-out")
p.add_argument("--epochs", type=int, default=5)
args = p.parse_args()

data = Path(__file__).resolve().parents[1] / "fashion_mnist" / "fashion-7x7-1k.csv"
table = pcsv.read_csv(data)
names = sorted(set(table.column("label").to_pylist()))  # carto's convention: sorted class names
y = torch.tensor([names.index(v) for v in table.column("label").to_pylist()])
x = torch.tensor(np.stack([table.column(f"p{i}").to_numpy() for i in range(49)], 1), dtype=torch.float32) / 255
loader = DataLoader(TensorDataset(torch.arange(len(y)), x, y), batch_size=64, shuffle=True)  # (ids, x, y)


class MLP(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(49, 128), torch.nn.ReLU(), torch.nn.Linear(128, len(names)))

    def training_step(self, batch, batch_idx):
        ids, xb, yb = batch
        logits = self.net(xb)
        return {"loss": F.cross_entropy(logits, yb), "logits": logits, "ids": ids, "labels": yb}  # what carto records

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


torch.manual_seed(0)
cb = CartoCallback(out=args.out, num_samples=len(y), num_classes=len(names), label_names=names, data=data)
L.Trainer(max_epochs=args.epochs, accelerator="cpu", devices=1, callbacks=[cb], logger=False, enable_checkpointing=False).fit(MLP(), loader)

print(f"carto: job {cb.result.job_id} {cb.result.state}; {cb.result.epochs} epochs; outputs in {cb.result.out}")
print(carto.select(args.out, metric="confidence", fraction=0.02, data=data).select(["sample_id", "label", "confidence"]))
