"""A Hugging Face Trainer mapped by carto: a tiny BERT (built here, nothing
downloaded) on the bundled Rotten Tomatoes reviews; CartoTrainer records the
logits of every training forward pass, CartoCallback writes the data map.

    pip install './python[hf]'
    CARTO_BIN=target/release/carto python examples/hf_trainer/train.py --out /tmp/hf-map
"""
import argparse
import csv
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertConfig, BertForSequenceClassification, TrainingArguments

import carto
from carto.integrations.hf import CartoCallback, CartoTrainer

p = argparse.ArgumentParser()
p.add_argument("--out", default="hf-trainer-out")
p.add_argument("--epochs", type=int, default=3)
p.add_argument("--rows", type=int, default=1000)
args = p.parse_args()

data = Path(__file__).resolve().parents[1] / "rotten_tomatoes" / "reviews-2k.csv"
rows = list(csv.DictReader(open(data, newline="")))[: args.rows]
names = sorted({r["label"] for r in rows})  # carto's convention: sorted class names
tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))  # a tokenizer trained on the reviews themselves
tok.normalizer, tok.pre_tokenizer = normalizers.BertNormalizer(), pre_tokenizers.BertPreTokenizer()
tok.train_from_iterator([r["text"] for r in rows], trainers.WordPieceTrainer(vocab_size=2000, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"]))
tok.post_processor = processors.BertProcessing(("[SEP]", tok.token_to_id("[SEP]")), ("[CLS]", tok.token_to_id("[CLS]")))
tok.enable_truncation(48), tok.enable_padding(length=48)
train = [{"input_ids": torch.tensor(e.ids), "attention_mask": torch.tensor(e.attention_mask),
          "labels": names.index(r["label"]), "carto_id": i}  # carto_id: the row's 0-based sample id
         for i, (r, e) in enumerate(zip(rows, tok.encode_batch([r["text"] for r in rows])))]

torch.manual_seed(0)
model = BertForSequenceClassification(BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=64, num_hidden_layers=2,
                                                 num_attention_heads=2, intermediate_size=128, num_labels=len(names)))
cb = CartoCallback(out=args.out, num_samples=len(train), num_classes=len(names), label_names=names)
targs = TrainingArguments(output_dir=f"{args.out}-trainer", num_train_epochs=args.epochs, per_device_train_batch_size=32,
                          learning_rate=1e-3, report_to=[], save_strategy="no", use_cpu=not torch.cuda.is_available())
CartoTrainer(model=model, args=targs, train_dataset=train, callbacks=[cb]).train()

print(f"carto: job {cb.result.job_id} {cb.result.state}; {cb.result.epochs} epochs; outputs in {cb.result.out}")
print(carto.read_metrics(args.out).sort("confidence").head(5).select(["sample_id", "label_name", "confidence", "variability"]))
