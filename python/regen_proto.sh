#!/usr/bin/env bash
# Regenerates the committed gRPC stubs in carto/_proto/ from the workspace's
# proto/carto/v1/carto.proto. Run it after changing the proto; needs grpcio-tools:
#   python -m pip install grpcio-tools && python/regen_proto.sh
# PYTHON selects the interpreter (default: python3). The stubs are committed so
# that installing the package needs no protoc.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
proto_root="${PROTO_ROOT:-$here/../proto}"
out="${1:-$here/carto/_proto}"
python="${PYTHON:-python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$python" -m grpc_tools.protoc -I "$proto_root" \
  --python_out="$tmp" --pyi_out="$tmp" --grpc_python_out="$tmp" \
  carto/v1/carto.proto
mkdir -p "$out"
# protoc writes absolute imports of the proto's package (carto.v1), which would
# collide with this package's name: make the stub's import relative.
sed -e 's/^from carto\.v1 import carto_pb2 as /from . import carto_pb2 as /' \
  "$tmp/carto/v1/carto_pb2_grpc.py" > "$out/carto_pb2_grpc.py"
cp "$tmp/carto/v1/carto_pb2.py" "$tmp/carto/v1/carto_pb2.pyi" "$out/"
