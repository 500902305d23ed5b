#!/usr/bin/env python3
"""Write the full Fashion-MNIST training set (60,000 images) as one Parquet
file for the end-to-end benchmark: columns `pixels` (list<uint8>, 784 per row)
and `label` (int64), like examples/fashion_mnist/prepare.py writes its 2k
sample (its idx reader is reused, not copied).

    python3 prepare_fashion_60k.py DATA_DIR OUT.parquet
    # DATA_DIR: usr/share/datasets/fashion-mnist of Debian's dataset-fashion-mnist

Needs numpy and pyarrow.
"""
import importlib.util
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
PREPARE = os.path.join(HERE, "..", "..", "examples", "fashion_mnist", "prepare.py")


def load_prepare():
    spec = importlib.util.spec_from_file_location("fashion_prepare", PREPARE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    data_dir, out = sys.argv[1], sys.argv[2]
    prep = load_prepare()
    images = prep.read_idx(data_dir, "train-images-idx3-ubyte", 2051, 3)
    labels = prep.read_idx(data_dir, "train-labels-idx1-ubyte", 2049, 1)
    n = images.shape[0]
    assert images.shape[1:] == (28, 28) and labels.shape[0] == n
    flat = np.ascontiguousarray(images.reshape(n, 784))
    offsets = pa.array(np.arange(0, (n + 1) * 784, 784, dtype=np.int32))
    pixels = pa.ListArray.from_arrays(offsets, pa.array(flat.reshape(-1), type=pa.uint8()))
    table = pa.table({"pixels": pixels, "label": pa.array(labels.astype(np.int64))})
    tmp = out + ".tmp"
    pq.write_table(table, tmp, compression="snappy", row_group_size=8192)
    os.replace(tmp, out)
    counts = np.bincount(labels, minlength=10).tolist()
    print(f"{out}: {n} rows, per class {counts}")


if __name__ == "__main__":
    main()
