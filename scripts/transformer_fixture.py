"""Local Hugging Face checkpoints for carto's transformer models, built from
nothing but PyPI's `transformers` and `tokenizers` (no hub download):
a tokenizer trained on the bundled Rotten Tomatoes reviews, random-initialised
BERT / RoBERTa classifiers, saved with `save_pretrained`.

  python transformer_fixture.py reference OUT
      OUT/bert, OUT/roberta: tiny classifiers (dropout 0, so training is
      deterministic); OUT/texts.csv: 48 reviews; OUT/reference.json: what
      transformers computes on them: eval-mode probabilities, and the mean
      loss before and after each of 2 full-batch training steps with carto's
      recipe (AdamW with weight decay 0.01 except biases and LayerNorm
      weights, linear warmup over 6% of the steps (rounded half up) then linear decay,
      gradient clipping at norm 1.0).
  python transformer_fixture.py model OUT --arch roberta|bert [--size tiny|small|base] [--no-head]
      one random-initialised checkpoint (base: roberta-base's shapes), for
      the quality study, gpu-check.sh and error tests.
"""
import argparse
import csv
import json
import math
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers, decoders
from transformers import (BertConfig, BertForSequenceClassification, BertModel, PreTrainedTokenizerFast,
                          RobertaConfig, RobertaForSequenceClassification, RobertaModel)

ROOT = Path(__file__).resolve().parents[1]
REVIEWS = ROOT / "examples/rotten_tomatoes/reviews.csv"
SIZES = {
    # hidden, layers, heads, intermediate, vocab
    "tiny": (32, 2, 4, 64, 2000),
    "small": (128, 2, 4, 512, 8000),
    "base": (768, 12, 12, 3072, 50265),
}


def reviews():
    with open(REVIEWS, newline="") as f:
        return list(csv.DictReader(f))


def train_tokenizer(arch, vocab, out):
    """A WordPiece (BERT) or byte-level BPE (RoBERTa) tokenizer trained on the reviews."""
    texts = [r["text"] for r in reviews()]
    if arch == "bert":
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab, special_tokens=specials))
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
        names = dict(pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    else:
        specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials,
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")))
        names = dict(bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>", cls_token="<s>",
                     sep_token="</s>", mask_token="<mask>")
    PreTrainedTokenizerFast(tokenizer_object=tok, **names).save_pretrained(out)
    return tok


def build(arch, out, size="tiny", head=True, dropout=0.1, init=0.02, max_pos=512, seed=0):
    hidden, layers, heads, inter, vocab = SIZES[size]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(arch, vocab, out)
    torch.manual_seed(seed)
    common = dict(vocab_size=tok.get_vocab_size(), hidden_size=hidden, num_hidden_layers=layers,
                  num_attention_heads=heads, intermediate_size=inter, hidden_dropout_prob=dropout,
                  attention_probs_dropout_prob=dropout, initializer_range=init, num_labels=2)
    if arch == "bert":
        cfg = BertConfig(max_position_embeddings=max_pos, pad_token_id=0, **common)
        model = (BertForSequenceClassification if head else BertModel)(cfg)
    else:
        # RoBERTa's positions start after the padding index (1): 2 more rows.
        cfg = RobertaConfig(max_position_embeddings=max_pos + 2, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                            type_vocab_size=1, **common)
        model = (RobertaForSequenceClassification if head else RobertaModel)(cfg)
    model.save_pretrained(out)
    return model, Tokenizer.from_file(str(out / "tokenizer.json"))


def encode(tok, texts, max_len, pad_id):
    tok.no_padding()
    tok.enable_truncation(max_len)
    enc = tok.encode_batch(texts)
    width = max(len(e.ids) for e in enc)
    ids = torch.full((len(enc), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(enc), width), dtype=torch.long)
    for i, e in enumerate(enc):
        ids[i, : len(e.ids)] = torch.tensor(e.ids)
        mask[i, : len(e.ids)] = 1
    return ids, mask


def schedule(total, warmup):
    """transformers' get_linear_schedule_with_warmup, the factor of step t."""
    return lambda t: t / max(1, warmup) if t < warmup else max(0.0, (total - t) / max(1, total - warmup))


def reference(out):
    out = Path(out)
    rows = reviews()
    # 24 of each class, longest first so truncation at MAX_LEN is exercised.
    picked = sorted([r for r in rows if r["label"] == "fresh"], key=lambda r: -len(r["text"]))[:12] + \
        [r for r in rows if r["label"] == "fresh"][:12] + \
        sorted([r for r in rows if r["label"] == "rotten"], key=lambda r: -len(r["text"]))[:12] + \
        [r for r in rows if r["label"] == "rotten"][:12]
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "texts.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "text", "label"])
        w.writeheader()
        for r in picked:
            w.writerow({"id": r["id"], "text": r["text"], "label": r["label"]})
    # carto maps string labels in sorted order: fresh = 0, rotten = 1.
    labels = torch.tensor([0 if r["label"] == "fresh" else 1 for r in picked])
    texts = [r["text"] for r in picked]
    max_len, lr, steps, wd, clip = 32, 1e-3, 2, 0.01, 1.0
    ref = {"max_len": max_len, "lr": lr, "steps": steps, "weight_decay": wd, "clip": clip, "models": {}}
    for arch in ["bert", "roberta"]:
        # A wide initialisation so the probabilities spread away from 0.5 and
        # a wrong layer shows up in them.
        model, tok = build(arch, out / arch, dropout=0.0, init=0.2, max_pos=64, seed=1 if arch == "bert" else 2)
        ids, mask = encode(tok, texts, max_len, model.config.pad_token_id)
        assert (mask.sum(1) == max_len).any(), "some texts are truncated"
        model.eval()
        with torch.no_grad():
            probs = model(input_ids=ids, attention_mask=mask).logits.softmax(-1)
        model.train()
        no_decay = lambda n: n.endswith(".bias") or "LayerNorm.weight" in n
        params = list(model.named_parameters())
        opt = torch.optim.AdamW([
            {"params": [p for n, p in params if not no_decay(n)], "weight_decay": wd},
            {"params": [p for n, p in params if no_decay(n)], "weight_decay": 0.0},
        ], lr=lr, betas=(0.9, 0.999), eps=1e-8)
        # carto runs `steps + 1` epochs of one full-batch step each; the last
        # epoch's forward shows the loss after `steps` updates.
        total = steps + 1
        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule(total, math.floor(0.06 * total + 0.5)))
        losses = []
        for _ in range(total):
            loss = torch.nn.functional.cross_entropy(model(input_ids=ids, attention_mask=mask).logits, labels)
            losses.append(loss.item())
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            sched.step()
        ref["models"][arch] = {"probs": probs.tolist(), "losses": losses, "tokens": mask.sum(1).tolist()}
    (out / "reference.json").write_text(json.dumps(ref))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("reference")
    r.add_argument("out")
    m = sub.add_parser("model")
    m.add_argument("out")
    m.add_argument("--arch", choices=["bert", "roberta"], default="roberta")
    m.add_argument("--size", choices=list(SIZES), default="tiny")
    m.add_argument("--no-head", action="store_true")
    m.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.cmd == "reference":
        reference(a.out)
    else:
        build(a.arch, a.out, a.size, head=not a.no_head, seed=a.seed)
