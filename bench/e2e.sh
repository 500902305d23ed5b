#!/usr/bin/env bash
# End to end, side by side: `carto run` vs plain PyTorch (bench/python/
# torch_reference.py) on Fashion-MNIST's 60k training images (mlp) and on
# Rotten Tomatoes' 12.8k reviews (bow), recording on and off.
#   bench/e2e.sh [RUNS]        results also in out/bench/e2e.txt
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$CARTO_ROOT"
cargo build --release -p carto-coordinator -p carto-worker --bins
source bench/fashion_60k.sh
"$CARTO_PYTHON" bench/e2e.py --carto "${CARGO_TARGET_DIR:-target}/release/carto" --runs "${1:-3}" \
  --work out/bench/e2e --job "fmnist:$fashion" --job reviews:examples/rotten_tomatoes/reviews.csv \
  | tee out/bench/e2e.txt
