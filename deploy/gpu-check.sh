#!/usr/bin/env bash
# GPU check: builds carto-worker with ProcessGroupNCCL (cargo feature `nccl`)
# and runs the same job with 1 and 2 ranks on --device cuda (two ranks may
# share one GPU), printing samples/s for each: an mlp on Fashion-MNIST, then
# a roberta-base-sized transformer (12 layers, hidden 768, 12 heads, random
# weights from a config generated here; nothing is downloaded) fine-tuned on
# Rotten Tomatoes with bf16 autocast. Run from the repository root on a
# machine with an NVIDIA GPU:   deploy/gpu-check.sh
# Prints one line per run:  model=M  ranks=N  samples_per_sec=X (median of epochs 2..)
#   SKIP_ROBERTA=1  only the mlp;  ROBERTA_BATCH (32), ROBERTA_MAX_LEN (128), ROBERTA_EPOCHS (2)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$CARTO_ROOT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
cargo build --release --workspace --bins --features carto-worker/nccl
BIN="${CARGO_TARGET_DIR:-target}/release"
DATA="${DATA:-examples/fashion_mnist/fashion-2k.parquet}"
EPOCHS="${EPOCHS:-4}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

report() { # job.json ranks model
  "$CARTO_PYTHON" - "$1" "$2" "$3" <<'PY'
import json, statistics, sys
job = json.load(open(sys.argv[1]))
rates = [e["samples_per_sec"] for e in job["epochs"][1:]] or [job["epochs"][0]["samples_per_sec"]]
print(f"model={sys.argv[3]}  ranks={sys.argv[2]}  samples_per_sec={statistics.median(rates):.0f}  state={job['state']}")
PY
}

for ranks in 1 2; do
  out="$WORK/gpu-mlp-$ranks"
  "$BIN/carto" run --data "$DATA" --label-col label --features-col pixels \
    --model mlp --hidden 2048 --epochs "$EPOCHS" --batch-size 256 \
    --workers "$ranks" --device cuda --out "$out" -q >/dev/null
  report "$out/job.json" "$ranks" mlp
done

if [ -z "${SKIP_ROBERTA:-}" ]; then
  # roberta-base's shapes; the BPE vocabulary is trained on the reviews, so
  # it stops below roberta-base's 50,265 entries (the embedding is smaller,
  # the encoder identical).
  "$CARTO_PYTHON" scripts/transformer_fixture.py model "$WORK/roberta-base" --arch roberta --size base >/dev/null 2>&1
  for ranks in 1 2; do
    out="$WORK/gpu-roberta-$ranks"
    "$BIN/carto" run --data examples/rotten_tomatoes/reviews.csv --label-col label --text-col text \
      --model roberta --pretrained "$WORK/roberta-base" --max-len "${ROBERTA_MAX_LEN:-128}" \
      --epochs "${ROBERTA_EPOCHS:-2}" --batch-size "${ROBERTA_BATCH:-32}" --lr 2e-5 \
      --workers "$ranks" --device cuda --out "$out" -q >/dev/null
    report "$out/job.json" "$ranks" roberta-base
  done
fi
