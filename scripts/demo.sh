#!/usr/bin/env bash
# Sets everything up (Python environment with torch, release build) and maps
# the bundled demo dataset: 12,808 Rotten Tomatoes review snippets.
#   OUT=dir scripts/demo.sh   to choose where the outputs go [out/demo]
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$CARTO_ROOT"

cargo build --release --workspace --bins
OUT="${OUT:-out/demo}"
"${CARGO_TARGET_DIR:-target}/release/carto" run \
  --data examples/rotten_tomatoes/reviews.csv \
  --label-col label --text-col text --id-col id \
  --model bow --epochs 8 \
  --out "$OUT" --overwrite
echo
echo "Outputs are in $OUT/ — for example:"
echo "  $CARTO_VENV/bin/python -c \"import polars as pl; print(pl.read_parquet('$OUT/metrics.parquet').sort('confidence').head(10))\""
