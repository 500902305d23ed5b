#!/usr/bin/env bash
# Sets everything up (Python environment with torch, release build) and runs
# the whole test suite: unit, in-process service and whole-system tests.
# Tests and binaries are built once, in the release profile.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$CARTO_ROOT"

cargo build --release --workspace --all-targets
cargo test --release --workspace --no-fail-fast "$@"
