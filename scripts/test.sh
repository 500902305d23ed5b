#!/usr/bin/env bash
# Sets everything up (Python environment with torch, release build) and runs
# the whole test suite: unit, in-process service and whole-system tests.
# Tests and binaries are built once, in the release profile.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$CARTO_ROOT"

cargo build --release --workspace --all-targets
# The GPU path must keep compiling on machines without a GPU: the default
# build compiles ProcessGroupNCCL against the wheel's headers, which env.sh
# installs; a build that left it out says so in its version (CARTO_NCCL=0
# leaves it out on purpose).
TARGET_DIR="${CARGO_TARGET_DIR:-$CARTO_ROOT/target}"
if [ "${CARTO_NCCL:-}" != 0 ] && "$TARGET_DIR/release/carto-worker" --version | grep -q "NCCL not compiled in"; then
  echo "carto test: carto-worker was built without NCCL: $("$TARGET_DIR/release/carto-worker" --version)" >&2
  exit 1
fi
cargo test --release --workspace --no-fail-fast "$@"

# The Python package (`pip install ./python`) and its tests, against the
# `carto` binary just built: the live tests run real coordinators and a
# torchrun job of two ranks.
"$CARTO_PYTHON" -m pip install --quiet "$CARTO_ROOT/python"
CARTO_BIN="$TARGET_DIR/release/carto" "$CARTO_PYTHON" -m pytest -q "$CARTO_ROOT/python/tests"

# The data map page in a real browser: Debian's chromium, headless, driven by
# Playwright (the system browser; Playwright never downloads one here).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "carto test: installing chromium for the browser tests (apt-get install chromium)" >&2
    apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null; }
  else
    echo "carto test: the browser tests need chromium: run 'sudo apt-get install chromium', then this again" >&2
    exit 2
  fi
fi
"$CARTO_PYTHON" -c "import playwright" 2>/dev/null || "$CARTO_PYTHON" -m pip install --quiet "playwright==1.65.2"
CARTO_BIN="$TARGET_DIR/release/carto" "$CARTO_PYTHON" -m pytest -q "$CARTO_ROOT/e2e/browser"
