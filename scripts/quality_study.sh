#!/usr/bin/env bash
# Reproduces the quality study (examples/quality_study): label-error detection
# on Rotten Tomatoes with 10% flipped labels, and training on 33% subsets.
#   scripts/quality_study.sh                 bow and mlp (study.py) → examples/quality_study/results/
#   MODEL=roberta scripts/quality_study.sh   a tiny random-initialised RoBERTa built locally
#                                            (transformer_study.py) → examples/quality_study/results-roberta/
# Writes results.md, results.json and the data maps.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$CARTO_ROOT"
cargo build --release --workspace --bins
case "${MODEL:-bow}" in
  bow)
    "$CARTO_PYTHON" examples/quality_study/study.py \
      "${CARGO_TARGET_DIR:-target}/release/carto" out/quality_study examples/quality_study/results ;;
  roberta)
    "$CARTO_PYTHON" examples/quality_study/transformer_study.py \
      "${CARGO_TARGET_DIR:-target}/release/carto" out/quality_study_roberta examples/quality_study/results-roberta ;;
  *) echo "quality_study.sh: MODEL must be bow or roberta, got '$MODEL'" >&2; exit 2 ;;
esac
