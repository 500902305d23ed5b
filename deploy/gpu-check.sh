#!/usr/bin/env bash
# GPU check: builds carto (the default build compiles ProcessGroupNCCL
# wherever the torch wheel ships NCCL) and measures training throughput on
# the GPUs nvidia-smi lists:
#   - an mlp on Fashion-MNIST in float32;
#   - a roberta-base-sized transformer (12 layers, hidden 768, 12 heads,
#     random weights from a config generated here; nothing is downloaded)
#     fine-tuned on Rotten Tomatoes under bf16 autocast (carto's default for
#     transformers on GPU);
# each with 1 rank (--device cuda:0), and with 2 ranks (--device cuda, rank r
# on GPU r over NCCL) only where at least 2 GPUs are visible: NCCL refuses two
# ranks on one GPU. Run from the repository root on a machine with an NVIDIA
# GPU:   deploy/gpu-check.sh      (about 10 minutes, most of it the build)
# Prints one line per run:
#   model=M precision=P ranks=N samples_per_sec=X state=S   (median of epochs 2..)
# or `... skipped: why` / `... failed: the job's error`.
#   SKIP_ROBERTA=1  only the mlp;  ROBERTA_BATCH (32), ROBERTA_MAX_LEN (128), ROBERTA_EPOCHS (2)
#   RUN_TIMEOUT     seconds one job may take before it counts as failed (180), so a
#                   hung job cannot push the check past its 10 minutes
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$CARTO_ROOT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi not found: no NVIDIA driver on this machine"
GPUS="$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU ' || true)"
if [ -n "${CUDA_VISIBLE_DEVICES+x}" ]; then
  # carto run counts these the same way (entries up to the first invalid one).
  GPUS="$(awk -v v="$CUDA_VISIBLE_DEVICES" 'BEGIN { n = split(v, a, ","); c = 0;
    for (i = 1; i <= n; i++) { if (a[i] ~ /^[0-9]+$/ || a[i] ~ /^(GPU|MIG)-/) c++; else break } print c }')"
fi
echo "visible GPUs: $GPUS"

cargo build --release --workspace --bins
BIN="${CARGO_TARGET_DIR:-target}/release"
WORKER_VERSION="$("$BIN/carto-worker" --version)"
echo "$WORKER_VERSION"
NCCL=yes
case "$WORKER_VERSION" in *"NCCL not compiled in"*) NCCL=no ;; esac

DATA="${DATA:-examples/fashion_mnist/fashion-2k.parquet}"
EPOCHS="${EPOCHS:-4}"
RUN_TIMEOUT="${RUN_TIMEOUT:-180}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

report() { # job.json label
  "$CARTO_PYTHON" - "$1" "$2" <<'PY'
import json, statistics, sys
job = json.load(open(sys.argv[1]))
rates = [e["samples_per_sec"] for e in job["epochs"][1:]] or [job["epochs"][0]["samples_per_sec"]]
print(f"{sys.argv[2]}  samples_per_sec={statistics.median(rates):.0f}  state={job['state']}")
PY
}

# run LABEL RANKS OUT carto-run-flags...: one line, whatever happens.
run() {
  local label="$1" ranks="$2" out="$3"
  shift 3
  local device=cuda:0
  if [ "$ranks" -gt 1 ]; then
    if [ "$GPUS" -lt "$ranks" ]; then
      echo "$label  skipped: $ranks ranks need $ranks GPUs (one per rank), $GPUS visible"
      return
    fi
    if [ "$NCCL" = no ]; then
      echo "$label  skipped: carto-worker was built without NCCL ($WORKER_VERSION)"
      return
    fi
    device=cuda
  fi
  local log="$WORK/$(basename "$out").log"
  if timeout "$RUN_TIMEOUT" "$BIN/carto" run "$@" --workers "$ranks" --device "$device" --out "$out" -q \
      >"$log" 2>&1; then
    report "$out/job.json" "$label"
  else
    echo "$label  failed: $(grep -m1 '^carto: error' "$log" || tail -n1 "$log")"
  fi
}

for ranks in 1 2; do
  run "model=mlp precision=fp32 ranks=$ranks" "$ranks" "$WORK/gpu-mlp-$ranks" \
    --data "$DATA" --label-col label --features-col pixels \
    --model mlp --hidden 2048 --epochs "$EPOCHS" --batch-size 256
done

if [ -z "${SKIP_ROBERTA:-}" ]; then
  # roberta-base's shapes; the BPE vocabulary is trained on the reviews, so
  # it stops below roberta-base's 50,265 entries (the embedding is smaller,
  # the encoder identical).
  "$CARTO_PYTHON" scripts/transformer_fixture.py model "$WORK/roberta-base" --arch roberta --size base >/dev/null 2>&1
  for ranks in 1 2; do
    run "model=roberta-base precision=bf16-autocast ranks=$ranks" "$ranks" "$WORK/gpu-roberta-$ranks" \
      --data examples/rotten_tomatoes/reviews.csv --label-col label --text-col text \
      --model roberta --pretrained "$WORK/roberta-base" --max-len "${ROBERTA_MAX_LEN:-128}" \
      --epochs "${ROBERTA_EPOCHS:-2}" --batch-size "${ROBERTA_BATCH:-32}" --lr 2e-5
  done
fi
