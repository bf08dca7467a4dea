#!/usr/bin/env bash
# Regenerate src/dms/_generated from proto/*.proto: the Open Inference Protocol's, and TorchServe's inference
# and management APIs. Needs grpcio-tools==1.80.0, whose protoc targets protobuf 6.x (the runtime range
# tritonclient accepts). Only the messages are generated: the servicers register their methods themselves, at
# each protocol's service path.
set -euo pipefail
cd "$(dirname "$0")/.."
out=src/dms/_generated
rm -f "$out/inference_pb2_grpc.py"
rm -f "$out"/torchserve_*_pb2_grpc.py
.venv/bin/python -m grpc_tools.protoc -Iproto --python_out="$out" --pyi_out="$out" proto/*.proto
echo "generated: $(ls "$out"/*_pb2*)"
