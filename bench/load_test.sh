#!/usr/bin/env bash
# Coordinator under load: builds `carto` and the load test, then runs it with
# its defaults (20M samples, 64 simulated workers, 2 epochs, 4 classes) and
# keeps the output in out/bench/load_test.txt. Extra arguments go to the
# load test, e.g. bench/load_test.sh --samples 2000000 --workers 16.
# Needs about 13 GiB of free memory at the defaults (the coordinator peaks
# near 8 GiB while writing the outputs; the chunks built ahead take 2.3 GB).
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$CARTO_ROOT"

cargo build --release -p carto-coordinator -p carto-bench
mkdir -p out/bench
"${CARGO_TARGET_DIR:-target}/release/load_test" --carto "${CARGO_TARGET_DIR:-target}/release/carto" "$@" \
  2>&1 | tee out/bench/load_test.txt
exit "${PIPESTATUS[0]}"
