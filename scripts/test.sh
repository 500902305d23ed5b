#!/usr/bin/env bash
# Sets everything up (Python environment with torch, release build) and runs
# the whole test suite: unit, in-process service and whole-system tests.
# Tests and binaries are built once, in the release profile.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$CARTO_ROOT"

# The GPU path must keep compiling on machines without a GPU: ProcessGroupNCCL
# against the wheel's headers. (Built first; the default build below replaces
# the binary the tests run.)
cargo build --release -p carto-worker --features nccl
cargo build --release --workspace --all-targets
cargo test --release --workspace --no-fail-fast "$@"

# The Python package (`pip install ./python`) and its tests, against the
# `carto` binary just built: the live tests run real coordinators and a
# torchrun job of two ranks.
"$CARTO_PYTHON" -m pip install --quiet "$CARTO_ROOT/python"
CARTO_BIN="${CARGO_TARGET_DIR:-$CARTO_ROOT/target}/release/carto" "$CARTO_PYTHON" -m pytest -q "$CARTO_ROOT/python/tests"
