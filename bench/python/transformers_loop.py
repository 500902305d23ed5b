#!/usr/bin/env python3
"""Fine-tuning a BERT / RoBERTa checkpoint with `transformers` + PyTorch, the
way the paper's code (transformers' run_glue) does, recording every sample's
gold-label probability: the baseline that `carto run --model bert` is measured
against (bench/transformers_vs_carto.sh).

Recipe (the same as carto's worker, worker/src/trainer.rs):
  AutoModelForSequenceClassification.from_pretrained(DIR, num_labels=C);
  texts tokenized once (fast tokenizer, truncation at --max-len), each batch
  padded to its own longest text; AdamW (weight decay 0.01 except biases and
  LayerNorm weights), linear warmup over 6% of the steps then linear decay to
  0, gradients clipped to norm 1.0; a fresh shuffle every epoch; the gold
  probability of each sample from the training forward pass, before the step.
  --group-by-length: transformers' LengthGroupedSampler (mega-batches of 50
  batches, each sorted by length, longest first).

    python transformers_loop.py --data reviews.csv --text-col text \
        --label-col label --pretrained DIR --epochs 1 --out OUT

Writes OUT/gold_prob.npy ([epochs, N]) and OUT/result.json (samples/s per
epoch, seconds, final training accuracy).
"""
import time

T_START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402


def read(path: str) -> pl.DataFrame:
    if path.endswith(".csv"):
        return pl.read_csv(path)
    if path.endswith(".parquet"):
        return pl.read_parquet(path)
    return pl.read_ndjson(path)


def length_grouped(perm: np.ndarray, lengths: np.ndarray, batch: int) -> np.ndarray:
    """transformers' LengthGroupedSampler order: mega-batches of 50 batches
    of the shuffled order, each sorted by length (longest first)."""
    mega = 50 * batch
    out = []
    for start in range(0, len(perm), mega):
        chunk = perm[start : start + mega]
        out.append(chunk[np.argsort(-lengths[chunk], kind="stable")])
    return np.concatenate(out) if out else perm


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--text-col", default="text")
    ap.add_argument("--label-col", default="label")
    ap.add_argument("--pretrained", required=True)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads [all cores]")
    ap.add_argument("--group-by-length", action="store_true")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    df = read(a.data)
    texts = df[a.text_col].cast(pl.Utf8).to_list()
    raw = df[a.label_col]
    if raw.dtype == pl.Utf8:
        names = sorted(set(raw.to_list()))
        labels = np.array([names.index(v) for v in raw.to_list()], dtype=np.int64)
    else:
        labels = raw.to_numpy().astype(np.int64)
    classes = int(labels.max()) + 1
    n = len(texts)

    tok = AutoTokenizer.from_pretrained(a.pretrained)
    enc = tok(texts, truncation=True, max_length=a.max_len)["input_ids"]
    lengths = np.array([len(e) for e in enc])
    model = AutoModelForSequenceClassification.from_pretrained(a.pretrained, num_labels=classes)
    model.train()
    decay = [p for name, p in model.named_parameters() if not (name.endswith("bias") or "LayerNorm.weight" in name)]
    no_decay = [p for name, p in model.named_parameters() if name.endswith("bias") or "LayerNorm.weight" in name]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=a.lr)
    steps_per_epoch = math.ceil(n / a.batch_size)
    total = steps_per_epoch * a.epochs
    warmup = int(math.floor(0.06 * total + 0.5))

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    y_all = torch.from_numpy(labels)
    gold = np.zeros((a.epochs, n), dtype=np.float32)
    epochs = []
    setup_seconds = time.perf_counter() - T_START
    rng = np.random.default_rng(a.seed)
    for epoch in range(a.epochs):
        started = time.perf_counter()
        perm = rng.permutation(n)
        if a.group_by_length:
            perm = length_grouped(perm, lengths, a.batch_size)
        correct = 0
        for s in range(0, n, a.batch_size):
            idx = perm[s : s + a.batch_size]
            batch = tok.pad({"input_ids": [enc[i] for i in idx]}, return_tensors="pt")
            y = y_all[idx]
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            loss = torch.nn.functional.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            with torch.no_grad():
                p = logits.float().softmax(-1)
                gold[epoch, idx] = p.gather(1, y[:, None])[:, 0].numpy()
                correct += int((p.argmax(-1) == y).sum())
        seconds = time.perf_counter() - started
        epochs.append({"epoch": epoch, "seconds": seconds, "samples_per_sec": n / seconds, "accuracy": correct / n})
        print(f"epoch {epoch}: {n / seconds:.1f} samples/s, accuracy {correct / n:.4f}", flush=True)
    np.save(out / "gold_prob.npy", gold)
    (out / "result.json").write_text(json.dumps(
        {"samples": n, "setup_seconds": setup_seconds, "epochs": epochs,
         "wall_seconds": time.perf_counter() - T_START, "threads": torch.get_num_threads()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
