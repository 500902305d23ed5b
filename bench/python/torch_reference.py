#!/usr/bin/env python3
"""Dataset Cartography in plain PyTorch: the reference that `carto run` is
benchmarked against (bench/e2e.sh). It does the same training as carto's
worker (worker/src/{trainer,model,optim,data,text}.rs) and writes the same
outputs:

  OUT/dynamics/epoch=K/part-0.parquet   sample_id, label, gold_prob, pred,
                                        correct, margin, el2n, loss (zstd 3)
  OUT/metrics.parquet                   sample_id, label, [label_name], epochs,
                                        confidence, variability, correctness,
                                        aum, el2n, threshold_closeness,
                                        correct_count, forgetting_events,
                                        first_learned_epoch
  OUT/job.json                          spec, per-epoch loss/accuracy/seconds

Models (as in carto):
  mlp  features standardised per column with the training set's mean and
       population std (constant columns: std 1); Linear(D, H) -> ReLU ->
       Linear(H, C); torch's default init; Adam.
  bow  lower-cased word tokens (alphanumeric runs, inner apostrophes kept),
       unigrams + bigrams hashed with FNV-1a 64 into 2^bits buckets;
       EmbeddingBag(2^bits, dim, mode="mean", sparse=True) ~ U(-1/dim, 1/dim),
       then Linear(dim, C); SparseAdam for the table, Adam for the head.
Cross-entropy, mean over the batch; a fresh shuffle every epoch. Dynamics come
from the training forward pass of each batch, before the optimizer step (the
paper's choice): the batch's logits are kept in an [N, C] buffer (one
index_copy per batch) and turned into per-sample statistics once per epoch.

    python torch_reference.py --data fashion.parquet --label-col label \
        --features-col pixels --model mlp --out OUT [--no-record]
    python torch_reference.py --data reviews.csv --label-col label \
        --text-col text --model bow --batch-size 64 --out OUT
"""
import time

T_START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.csv as pacsv  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

T_IMPORTED = time.perf_counter()

FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)
# A token: a run of letters/digits, apostrophes kept between two of them
# ("don't"); `[^\W_]` is str.isalnum() (what Rust's char::is_alphanumeric is).
TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


# ----------------------------------------------------------------------------
# Input


def read_table(path, columns):
    if path.endswith((".parquet", ".pq")):
        return pq.read_table(path, columns=columns)
    if path.endswith(".csv"):
        return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(include_columns=columns))
    raise SystemExit(f"{path}: unsupported extension (parquet or csv)")


def encode_labels(col):
    """int labels are class indices; strings map to sorted indices."""
    if pa.types.is_integer(col.type):
        y = col.to_numpy().astype(np.int64)
        return y, int(y.max()) + 1, None
    names, y = np.unique(np.asarray(col.to_pylist(), dtype=object), return_inverse=True)
    return y.astype(np.int64), len(names), [str(n) for n in names]


def dense_features(col):
    """A list<number> column -> standardised float32 tensor [N, D]."""
    arr = col.combine_chunks()
    lens = np.diff(arr.offsets.to_numpy())
    dim = int(lens[0])
    if arr.null_count or (lens != dim).any():
        raise SystemExit("feature lists must be non-null and of one length")
    raw = arr.flatten().to_numpy().reshape(len(arr), dim)
    mean = raw.mean(axis=0, dtype=np.float64)
    std = raw.std(axis=0, dtype=np.float64)  # population std (ddof=0)
    std[std <= 1e-12] = 1.0
    x = torch.from_numpy(raw).to(torch.float32)
    x.sub_(torch.from_numpy(mean).float()).div_(torch.from_numpy(std).float())
    return x


def fnv1a_continue(states, strings):
    """FNV-1a 64 of each byte string, starting from `states` (vectorised over
    strings, one numpy step per byte position)."""
    data = [s.encode("utf-8") for s in strings]
    lens = np.fromiter(map(len, data), dtype=np.int64, count=len(data))
    order = np.argsort(-lens, kind="stable")  # longest first: active set is a prefix
    lens_sorted = lens[order]
    flat = np.frombuffer(b"".join(data[i] for i in order), dtype=np.uint8).astype(np.uint64)
    starts = np.concatenate(([0], np.cumsum(lens_sorted)[:-1]))
    h = states[order].astype(np.uint64)
    neg_lens = -lens_sorted  # ascending
    for j in range(int(lens_sorted[0]) if len(lens_sorted) else 0):
        k = int(np.searchsorted(neg_lens, -j, side="left"))  # how many strings are longer than j
        h[:k] = (h[:k] ^ flat[starts[:k] + j]) * FNV_PRIME
    out = np.empty_like(h)
    out[order] = h
    return out


def hash_texts(texts, bits):
    """CSR (ids, row_starts, row_lens) of each text's hashed unigrams then bigrams."""
    vocab = {}
    tok_ids = []
    row_lens = np.empty(len(texts), dtype=np.int64)
    for r, text in enumerate(texts):
        toks = [vocab.setdefault(t.lower(), len(vocab)) for t in TOKEN.findall(text or "")]
        tok_ids.extend(toks)
        row_lens[r] = len(toks)
    words = list(vocab)
    tok_ids = np.asarray(tok_ids, dtype=np.int64)
    tok_rows = np.repeat(np.arange(len(texts)), row_lens)
    h_uni = fnv1a_continue(np.full(len(words), FNV_OFFSET, dtype=np.uint64), words)
    # Bigrams "a b" = FNV(a) continued with 0x1f, then b's bytes (as text.rs).
    same_row = tok_rows[1:] == tok_rows[:-1]
    a, b = tok_ids[:-1][same_row], tok_ids[1:][same_row]
    pair_keys, pair_inv = np.unique(a * len(words) + b, return_inverse=True)
    pa_, pb_ = pair_keys // len(words), pair_keys % len(words)
    sep = (h_uni[pa_] ^ np.uint64(0x1F)) * FNV_PRIME
    h_bi = fnv1a_continue(sep, [words[i] for i in pb_])
    mask = np.uint64((1 << bits) - 1)
    ids = np.concatenate([(h_uni[tok_ids] & mask), (h_bi[pair_inv] & mask)]).astype(np.int64)
    rows = np.concatenate([tok_rows, tok_rows[1:][same_row]])
    order = np.argsort(rows, kind="stable")  # per row: unigrams, then bigrams
    lens = np.bincount(rows, minlength=len(texts)).astype(np.int64)
    starts = np.concatenate(([0], np.cumsum(lens)[:-1]))
    return torch.from_numpy(ids[order]), torch.from_numpy(starts), torch.from_numpy(lens)


# ----------------------------------------------------------------------------
# Models


class Mlp(nn.Module):
    def __init__(self, d, h, c):
        super().__init__()
        self.hidden = nn.Linear(d, h)
        self.out = nn.Linear(h, c)

    def forward(self, x):
        return self.out(F.relu(self.hidden(x)))


class Bow(nn.Module):
    def __init__(self, buckets, dim, c):
        super().__init__()
        self.emb = nn.utils.skip_init(nn.EmbeddingBag, buckets, dim, mode="mean", sparse=True)
        nn.init.uniform_(self.emb.weight, -1.0 / dim, 1.0 / dim)  # fastText's init
        self.out = nn.Linear(dim, c)

    def forward(self, ids, offsets):
        return self.out(self.emb(ids, offsets))


def batch_inputs(features, idx):
    """The model's arguments for rows `idx`: the dense rows (mlp), or the
    batch's n-grams and their offsets (bow), gathered from the CSR arrays of
    hash_texts without a Python loop."""
    if isinstance(features, torch.Tensor):
        return (features.index_select(0, idx),)
    ids, starts, lens = features
    bl = lens.index_select(0, idx)
    offsets = torch.cumsum(bl, 0) - bl
    pos = torch.repeat_interleave(starts.index_select(0, idx) - offsets, bl) + torch.arange(int(bl.sum()))
    return ids.index_select(0, pos), offsets


# ----------------------------------------------------------------------------
# Dynamics and metrics


def epoch_dynamics(z, y):
    """Per-sample statistics of one epoch's logits z [N, C] (float64)."""
    logp = torch.log_softmax(z, dim=1)
    gold = y.unsqueeze(1)
    logp_gold = logp.gather(1, gold).squeeze(1)
    pred = z.argmax(dim=1)  # first maximum, like numpy.argmax
    p = logp.exp()
    el2n = torch.linalg.vector_norm(p - F.one_hot(y, z.shape[1]).to(p.dtype), dim=1)
    others = z.scatter(1, gold, float("-inf")).amax(dim=1)
    margin = z.gather(1, gold).squeeze(1) - others
    return {
        "gold_prob": logp_gold.exp().numpy(),
        "pred": pred.numpy(),
        "correct": (pred == y).numpy(),
        "margin": margin.numpy(),
        "el2n": el2n.numpy(),
        "loss": (-logp_gold).numpy(),
    }


def parquet_metadata(label_names):
    return {b"carto.label_names": json.dumps(label_names).encode()} if label_names else None


def write_parquet(path, columns, label_names):
    table = pa.table(columns)
    meta = parquet_metadata(label_names)
    if meta:
        table = table.replace_schema_metadata(meta)
    tmp = path + ".inprogress"
    pq.write_table(table, tmp, compression="zstd", compression_level=3)
    os.replace(tmp, path)


def compute_metrics(gold_prob, correct, margin, el2n):
    """[E, N] arrays -> per-sample metrics (vectorised)."""
    epochs = gold_prob.shape[0]
    confidence = gold_prob.mean(axis=0)
    learned = correct.any(axis=0)
    first = np.argmax(correct, axis=0).astype(np.int32)
    forgetting = (correct[:-1] & ~correct[1:]).sum(axis=0).astype(np.int32)
    count = correct.sum(axis=0).astype(np.int32)
    return {
        "epochs": pa.array(np.full(gold_prob.shape[1], epochs, dtype=np.int32)),
        "confidence": confidence,
        "variability": gold_prob.std(axis=0),
        "correctness": count / epochs,
        "aum": margin.mean(axis=0),
        "el2n": el2n.mean(axis=0),
        "threshold_closeness": confidence * (1.0 - confidence),
        "correct_count": count,
        "forgetting_events": forgetting,
        "first_learned_epoch": pa.array(first, mask=~learned),
    }


# ----------------------------------------------------------------------------


def training_arguments(ap):
    """The data, model and training flags (shared with the label-error study's
    cross-validated training, which must train exactly as this script does)."""
    ap.add_argument("--data", required=True)
    ap.add_argument("--label-col", required=True)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--text-col")
    g.add_argument("--features-col")
    ap.add_argument("--model", choices=["mlp", "bow"], required=True)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--embed-dim", type=int, default=64)
    ap.add_argument("--hash-bits", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    training_arguments(ap)
    ap.add_argument("--no-record", action="store_true", help="train only: no dynamics, no metrics")
    args = ap.parse_args()
    record = not args.no_record
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    feature_col = args.text_col or args.features_col
    table = read_table(args.data, [feature_col, args.label_col])
    y_np, classes, label_names = encode_labels(table.column(args.label_col))
    n = len(y_np)
    y = torch.from_numpy(y_np)
    torch.manual_seed(args.seed)
    if args.model == "mlp":
        x = dense_features(table.column(feature_col))
        model = Mlp(x.shape[1], args.hidden, classes)
        opts = [torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8)]
    else:
        texts = table.column(feature_col).to_pylist()
        ids, starts, lens = hash_texts(texts, args.hash_bits)
        model = Bow(1 << args.hash_bits, args.embed_dim, classes)
        opts = [
            torch.optim.SparseAdam(list(model.emb.parameters()), lr=args.lr, betas=(0.9, 0.999), eps=1e-8),
            torch.optim.Adam(model.out.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8),
        ]
    del table
    load_seconds = time.perf_counter() - t0

    features = x if args.model == "mlp" else (ids, starts, lens)

    def forward(idx):
        return model(*batch_inputs(features, idx))

    out = args.out
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)
    if record:
        hist = {k: np.empty((args.epochs, n), dtype=d) for k, d in
                [("gold_prob", np.float64), ("correct", bool), ("margin", np.float64), ("el2n", np.float64)]}
        logits_all = torch.empty(n, classes)
    epochs = []
    t_train = time.perf_counter()
    for epoch in range(args.epochs):
        started = time.perf_counter()
        model.train()
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed + epoch))
        loss_sum = torch.zeros((), dtype=torch.float64)
        correct = torch.zeros((), dtype=torch.int64)
        for i in range(0, n, args.batch_size):
            idx = perm[i:i + args.batch_size]
            yb = y.index_select(0, idx)
            logits = forward(idx)
            loss = F.cross_entropy(logits, yb)
            for o in opts:
                o.zero_grad(set_to_none=True)
            loss.backward()
            for o in opts:
                o.step()
            z = logits.detach()
            if record:
                logits_all.index_copy_(0, idx, z)
            loss_sum += loss.detach().double() * len(idx)
            correct += (z.argmax(dim=1) == yb).sum()
        train_seconds = time.perf_counter() - started
        if record:
            dyn = epoch_dynamics(logits_all.double(), y)
            for k in hist:
                hist[k][epoch] = dyn[k]
            d = os.path.join(out, "dynamics", f"epoch={epoch}")
            os.makedirs(d, exist_ok=True)
            write_parquet(os.path.join(d, "part-0.parquet"),
                          {"sample_id": np.arange(n, dtype=np.int64), "label": y_np, **dyn}, label_names)
        wall = time.perf_counter() - started
        e = {"epoch": epoch, "loss": loss_sum.item() / n, "accuracy": correct.item() / n, "samples": n,
             "samples_per_sec": n / train_seconds, "train_seconds": train_seconds, "wall_seconds": wall}
        epochs.append(e)
        print(f"epoch {epoch + 1}/{args.epochs}  loss {e['loss']:.4f}  accuracy {e['accuracy']:.4f}  "
              f"{train_seconds:.2f} s train  {wall:.2f} s wall", flush=True)
    train_total = time.perf_counter() - t_train

    t_metrics = time.perf_counter()
    if record:
        cols = {"sample_id": np.arange(n, dtype=np.int64), "label": y_np}
        if label_names:
            cols["label_name"] = pa.DictionaryArray.from_arrays(y_np, label_names).cast(pa.string())
        cols.update(compute_metrics(hist["gold_prob"], hist["correct"], hist["margin"], hist["el2n"]))
        write_parquet(os.path.join(out, "metrics.parquet"), cols, label_names)
    metrics_seconds = time.perf_counter() - t_metrics

    job = {
        "tool": f"torch_reference.py (torch {torch.__version__})",
        "spec": {**vars(args), "record_dynamics": record, "classes": classes, "rows": n},
        "epochs": epochs,
        "timings": {
            "import_seconds": T_IMPORTED - T_START,
            "load_seconds": load_seconds,
            "train_seconds": sum(e["train_seconds"] for e in epochs),
            "epochs_wall_seconds": train_total,
            "metrics_seconds": metrics_seconds,
            "total_seconds": time.perf_counter() - T_START,
        },
    }
    with open(os.path.join(out, "job.json"), "w") as f:
        json.dump(job, f, indent=2)


if __name__ == "__main__":
    main()
