#!/usr/bin/env bash
# What carto's Python Recorder costs a plain PyTorch loop: per-epoch time
# with and without it (interleaved runs, medians) on Fashion-MNIST's 60k
# images with an MLP and on Rotten Tomatoes' 12.8k reviews with a
# bag-of-words model, and the rows/s one rank can stream.
#   bench/recorder_overhead.sh [RUNS]     results also in out/bench/recorder_overhead.txt
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$CARTO_ROOT"
cargo build --release -p carto-coordinator --bins
source bench/fashion_60k.sh
"$CARTO_PYTHON" -m pip install --quiet ./python
CARTO_BIN="${CARGO_TARGET_DIR:-target}/release/carto" "$CARTO_PYTHON" bench/python/recorder_overhead.py \
  --fashion "$fashion" --reviews examples/rotten_tomatoes/reviews.csv --runs "${1:-3}" --work "$(mktemp -d)" \
  | tee out/bench/recorder_overhead.txt
