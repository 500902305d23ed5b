"""The framework integrations against a real coordinator: a Hugging Face
`Trainer` (tiny local BERT, no hub) and a Lightning `Trainer` (tiny MLP)
record through carto, and the metrics are those of the very logits of the
training forward passes."""

import csv
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

pytestmark = [pytest.mark.live]

REPO = Path(__file__).resolve().parents[2]


def _softmax_gold(logits, labels):
    z = np.asarray(logits, dtype=np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return p[np.arange(len(labels)), labels]


def _confidence(captured, n):
    """Mean over epochs of the gold-class probability, from (epoch, ids, logits, labels) rows."""
    per_epoch = {}
    for epoch, ids, logits, labels in captured:
        g = per_epoch.setdefault(epoch, np.full(n, np.nan))
        g[ids] = _softmax_gold(logits, labels)
    gold = np.stack([per_epoch[e] for e in sorted(per_epoch)])
    assert not np.isnan(gold).any(), "every sample is seen in every epoch"
    return gold.mean(0)


# ---- Hugging Face transformers.Trainer -----------------------------------------------------------

N_HF = 200


def _reviews(n):
    with open(REPO / "examples/rotten_tomatoes/reviews-2k.csv", newline="") as f:
        rows = list(csv.DictReader(f))[:n]
    return [r["text"] for r in rows], [0 if r["label"] == "fresh" else 1 for r in rows]  # sorted: fresh, rotten


def _tiny_bert(texts, max_len=32):
    """A WordPiece tokenizer trained on the texts and a random tiny BERT (dropout on), all local."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertConfig, BertForSequenceClassification

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=600, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"]))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    ids = torch.zeros((len(texts), max_len), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, e in enumerate(tok.encode_batch(texts)):
        row = [cls] + e.ids[: max_len - 2] + [sep]
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, num_labels=2)
    return BertForSequenceClassification(cfg), ids, mask


class _Rows(torch.utils.data.Dataset):
    def __init__(self, ids, mask, labels):
        self.ids, self.mask, self.labels = ids, mask, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i], "labels": self.labels[i], "carto_id": i}


def test_hf_trainer_records_the_training_forward_logits(tmp_path, carto_bin, monkeypatch):
    from transformers import TrainingArguments, default_data_collator

    from carto.integrations.hf import CartoCallback, CartoTrainer

    monkeypatch.setenv("CARTO_BIN", carto_bin)
    texts, labels = _reviews(N_HF)
    model, ids, mask = _tiny_bert(texts)
    ds = _Rows(ids, mask, labels)

    # Capture independently: the ids of each collated batch, in order, and the
    # logits of each training forward pass (dropout on: they cannot be recomputed).
    batch_ids, forwards = [], []

    def collate(rows):
        batch_ids.append([r["carto_id"] for r in rows])
        return default_data_collator(rows)

    def hook(module, args, kwargs, output):
        if module.training:
            forwards.append((output.logits.detach().double().numpy().copy(), kwargs["labels"].numpy().copy()))

    model.register_forward_hook(hook, with_kwargs=True)
    out = tmp_path / "out"
    cb = CartoCallback(out=out, num_samples=N_HF, num_classes=2, label_names=["fresh", "rotten"])
    args = TrainingArguments(
        output_dir=str(tmp_path / "hf"), num_train_epochs=2, per_device_train_batch_size=16, learning_rate=1e-3,
        use_cpu=True, report_to=[], save_strategy="no", logging_strategy="no", dataloader_num_workers=0, seed=0,
        disable_tqdm=True,  # remove_unused_columns stays True: CartoTrainer keeps the id column
    )
    trainer = CartoTrainer(model=model, args=args, train_dataset=ds, data_collator=collate, callbacks=[cb])
    trainer.train()

    assert cb.result is not None and cb.result.state == "succeeded" and cb.result.epochs == 2
    steps_per_epoch = -(-N_HF // 16)
    assert len(forwards) == len(batch_ids) == 2 * steps_per_epoch
    captured = []
    for k, ((logits, y), bid) in enumerate(zip(forwards, batch_ids)):
        assert y.tolist() == [labels[i] for i in bid]
        captured.append((k // steps_per_epoch, np.array(bid), logits, y))
    m = pq.read_table(out / "metrics.parquet").sort_by("sample_id")
    assert m.column("sample_id").to_pylist() == list(range(N_HF))
    assert m.column("epochs").to_pylist() == [2] * N_HF
    assert m.column("label").to_pylist() == labels
    np.testing.assert_allclose(m.column("confidence").to_numpy(), _confidence(captured, N_HF), rtol=0, atol=1e-6)
    for f in ("datamap.png", "suspects.csv", "job.json"):
        assert (out / f).exists(), f


def test_hf_trainer_without_the_callback_says_what_is_missing(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification, TrainingArguments

    from carto.errors import CartoError
    from carto.integrations.hf import CartoTrainer

    model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1,
                                                     num_attention_heads=1, intermediate_size=8))
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    trainer = CartoTrainer(model=model, args=args, train_dataset=_Rows(torch.zeros((2, 4), dtype=torch.long),
                                                                      torch.ones((2, 4), dtype=torch.long), [0, 1]))
    with pytest.raises(CartoError, match="CartoCallback"):
        trainer.train()


# ---- PyTorch Lightning ----------------------------------------------------------------------------

N_L = 300


def _fashion(n):
    import pyarrow.csv as pcsv

    t = pcsv.read_csv(REPO / "examples/fashion_mnist/fashion-7x7-1k.csv").slice(0, n)
    names = sorted(set(t.column("label").to_pylist()))
    y = torch.tensor([names.index(v) for v in t.column("label").to_pylist()])
    x = torch.tensor(np.stack([t.column(f"p{i}").to_numpy() for i in range(49)], 1), dtype=torch.float32) / 255
    return x, y, names


@pytest.mark.parametrize("contract", ["returned_dict", "carto_logits_attribute"])
def test_lightning_callback_records_every_sample(tmp_path, carto_bin, monkeypatch, contract):
    L = pytest.importorskip("lightning", reason="lightning is not installed (pip install lightning)")
    from carto.integrations.lightning import CartoCallback

    monkeypatch.setenv("CARTO_BIN", carto_bin)
    x, y, names = _fashion(N_L)
    captured = []

    class MLP(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(49, 32), torch.nn.ReLU(), torch.nn.Linear(32, len(names)))

        def training_step(self, batch, batch_idx):
            ids, xb, yb = batch
            logits = self.net(xb)
            captured.append((self.current_epoch, ids.numpy().copy(), logits.detach().double().numpy().copy(), yb.numpy().copy()))
            loss = torch.nn.functional.cross_entropy(logits, yb)
            if contract == "returned_dict":
                return {"loss": loss, "logits": logits, "ids": ids, "labels": yb}
            self.carto_logits = logits  # ids and labels come from the (ids, x, y) batch
            return loss

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-2)

    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(N_L), x, y), batch_size=32, shuffle=True)
    out = tmp_path / "out"
    cb = CartoCallback(out=out, num_samples=N_L, num_classes=len(names), label_names=names)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=2, callbacks=[cb], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.fit(MLP(), loader)

    assert cb.result is not None and cb.result.state == "succeeded" and cb.result.epochs == 2
    m = pq.read_table(out / "metrics.parquet").sort_by("sample_id")
    assert m.column("sample_id").to_pylist() == list(range(N_L))
    assert m.column("epochs").to_pylist() == [2] * N_L
    assert m.column("label").to_pylist() == y.tolist()
    np.testing.assert_allclose(m.column("confidence").to_numpy(), _confidence(captured, N_L), rtol=0, atol=1e-6)
    for f in ("datamap.png", "suspects.csv", "job.json"):
        assert (out / f).exists(), f
    assert (out / "dynamics").is_dir()


# ---- the examples ---------------------------------------------------------------------------------

@pytest.mark.parametrize("example,extra", [("hf_trainer", ["--rows", "200", "--epochs", "1"]), ("lightning", ["--epochs", "1"])])
def test_the_integration_examples_run(tmp_path, carto_bin, example, extra):
    import os
    import subprocess
    import sys

    if example == "lightning":
        pytest.importorskip("lightning", reason="lightning is not installed (pip install lightning)")
    out = tmp_path / "out"
    env = dict(os.environ, CARTO_BIN=carto_bin, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    r = subprocess.run([sys.executable, str(REPO / "examples" / example / "train.py"), "--out", str(out), *extra],
                       env=env, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "succeeded" in r.stdout, r.stdout
    for f in ("metrics.parquet", "datamap.png", "suspects.csv", "job.json"):
        assert (out / f).exists(), f
