#!/usr/bin/env bash
# GPU check: builds carto-worker with ProcessGroupNCCL (cargo feature `nccl`)
# and runs the same job with 1 and 2 ranks on --device cuda (two ranks may
# share one GPU), printing samples/s for each. Run from the repository root on
# a machine with an NVIDIA GPU:   deploy/gpu-check.sh
# Prints one line per run:  ranks=N  samples_per_sec=X (median of epochs 2..)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$CARTO_ROOT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
cargo build --release --workspace --bins --features carto-worker/nccl
BIN="${CARGO_TARGET_DIR:-target}/release"
DATA="${DATA:-examples/fashion_mnist/fashion-2k.parquet}"
EPOCHS="${EPOCHS:-4}"
for ranks in 1 2; do
  out="$(mktemp -d)/gpu-$ranks"
  "$BIN/carto" run --data "$DATA" --label-col label --features-col pixels \
    --model mlp --hidden 2048 --epochs "$EPOCHS" --batch-size 256 \
    --workers "$ranks" --device cuda --out "$out" -q >/dev/null
  "$CARTO_PYTHON" - "$out/job.json" "$ranks" <<'PY'
import json, statistics, sys
job = json.load(open(sys.argv[1]))
rates = [e["samples_per_sec"] for e in job["epochs"][1:]] or [job["epochs"][0]["samples_per_sec"]]
print(f"ranks={sys.argv[2]}  samples_per_sec={statistics.median(rates):.0f}  state={job['state']}")
PY
done
