#!/usr/bin/env bash
# Reproduces the quality study (examples/quality_study): label-error detection
# on Rotten Tomatoes with 10% flipped labels, and training on 33% subsets.
# Writes examples/quality_study/results/ (results.md, results.json, data maps).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$CARTO_ROOT"
cargo build --release --workspace --bins
"$CARTO_PYTHON" examples/quality_study/study.py \
  "${CARGO_TARGET_DIR:-target}/release/carto" out/quality_study examples/quality_study/results
