#!/usr/bin/env bash
# Generate the Python protobuf modules of the Open Inference Protocol's gRPC service
# (model-server/src/modelops_server/oip/open_inference_grpc_pb2.py and .pyi) from the .proto
# beside them, with the grpcio-tools pinned in uv.lock. The modules are checked in: the images
# install the server from the lock with no build step, and tests/model_server/test_grpc.py
# fails when they differ from what this script writes. Usage: hack/gen-oip-grpc.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
src=model-server/src/modelops_server/oip
out="${1:-$src}"
mkdir -p "$out"
.venv/bin/python -m grpc_tools.protoc -I "$src" --python_out="$out" --pyi_out="$out" \
  "$src/open_inference_grpc.proto"
