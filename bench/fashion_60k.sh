# Sourced by the benchmarks: makes out/bench/fashion-60k.parquet (Fashion-MNIST's
# 60k training images) from Debian's dataset-fashion-mnist (Expat) if it is
# missing — downloaded as a .deb and unpacked without root — and sets $fashion.
fashion=out/bench/fashion-60k.parquet
if [ ! -f "$fashion" ]; then
  tmp="$(mktemp -d)"
  (cd "$tmp" && apt-get download dataset-fashion-mnist >/dev/null && dpkg -x dataset-fashion-mnist_*.deb root)
  mkdir -p out/bench
  "$CARTO_PYTHON" bench/python/prepare_fashion_60k.py "$tmp/root/usr/share/datasets/fashion-mnist" "$fashion"
  rm -rf "$tmp"
fi
