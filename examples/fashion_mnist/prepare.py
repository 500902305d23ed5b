#!/usr/bin/env python3
"""Regenerate fashion-2k.parquet and fashion-7x7-1k.csv from Fashion-MNIST as
packaged by Debian (`dataset-fashion-mnist`, files under
/usr/share/datasets/fashion-mnist).

    apt-get download dataset-fashion-mnist && dpkg -x dataset-fashion-mnist_*.deb /tmp/fm
    python3 prepare.py /tmp/fm/usr/share/datasets/fashion-mnist [OUT_DIR]
    # or, with the package installed: python3 prepare.py /usr/share/datasets/fashion-mnist

Needs numpy and pyarrow. Deterministic: the same input files and the same
pyarrow version give byte-identical outputs (the CSV is independent of versions).
OUT_DIR defaults to the directory of this script.
"""
import gzip
import hashlib
import os
import struct
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
N_PARQUET = 2000
N_CSV = 1000
POOL = 4  # 28x28 -> 7x7


def read_idx(data_dir, stem, magic, ndim):
    """Read an idx file (stem.gz, or stem uncompressed) and check its header."""
    path = os.path.join(data_dir, stem + ".gz")
    if os.path.exists(path):
        with gzip.open(path, "rb") as f:
            raw = f.read()
    else:
        path = os.path.join(data_dir, stem)
        with open(path, "rb") as f:
            raw = f.read()
    (got_magic,) = struct.unpack(">I", raw[:4])
    if got_magic != magic:
        sys.exit(f"{path}: magic {got_magic}, expected {magic}")
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        sys.exit(f"{path}: {data.size} bytes of data, header says {dims}")
    return data.reshape(dims)


def pooled_csv_value(s):
    """s = sum of a 4x4 block (int). Returns mean = s/16 rounded to 2 decimals,
    round-half-to-even, done in integers (s/16 is exact, so ties are real ties),
    formatted as the shortest float string (always with a '.', e.g. 0.0, 12.5)."""
    q, r = divmod(s * 100, 16)          # hundredths
    if 2 * r > 16 or (2 * r == 16 and q % 2 == 1):
        q += 1
    return repr(q / 100)


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    data_dir = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) == 3 else os.path.dirname(os.path.abspath(__file__))

    images = read_idx(data_dir, "train-images-idx3-ubyte", 2051, 3)
    labels = read_idx(data_dir, "train-labels-idx1-ubyte", 2049, 1)
    assert images.shape[1:] == (28, 28) and images.shape[0] == labels.shape[0]

    # (a) fashion-2k.parquet
    n = N_PARQUET
    flat = np.ascontiguousarray(images[:n].reshape(n, 784))
    offsets = pa.array(np.arange(0, (n + 1) * 784, 784, dtype=np.int32))
    pixels = pa.ListArray.from_arrays(offsets, pa.array(flat.reshape(-1), type=pa.uint8()))
    lab = labels[:n].astype(np.int64)
    table = pa.table({
        "image_id": pa.array(np.arange(n, dtype=np.int64)),
        "pixels": pixels,
        "label": pa.array(lab),
        "label_name": pa.array([CLASS_NAMES[i] for i in lab], type=pa.string()),
    })
    pq_path = os.path.join(out, "fashion-2k.parquet")
    pq.write_table(table, pq_path, compression="snappy", row_group_size=n)

    # (b) fashion-7x7-1k.csv
    m = N_CSV
    sums = images[:m].astype(np.int64).reshape(m, 7, POOL, 7, POOL).sum(axis=(2, 4)).reshape(m, 49)
    csv_path = os.path.join(out, "fashion-7x7-1k.csv")
    with open(csv_path, "w", encoding="utf-8", newline="") as f:
        f.write(",".join([f"p{j}" for j in range(49)] + ["label"]) + "\n")
        for i in range(m):
            vals = [pooled_csv_value(int(s)) for s in sums[i]]
            f.write(",".join(vals + [CLASS_NAMES[labels[i]]]) + "\n")

    for path, k in ((pq_path, n), (csv_path, m)):
        counts = np.bincount(labels[:k], minlength=10).tolist()
        print(f"{os.path.basename(path)}: {k} rows, per class {counts}, sha256 {sha256(path)}")


if __name__ == "__main__":
    main()
