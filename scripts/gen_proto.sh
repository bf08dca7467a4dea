#!/usr/bin/env bash
# Regenerate src/dms/_generated from proto/inference.proto (needs grpcio-tools==1.80.0, whose
# protoc targets protobuf 6.x: the runtime range tritonclient accepts). Only the messages are
# generated: the servicer registers its methods itself, at the protocol's service path.
set -euo pipefail
cd "$(dirname "$0")/.."
out=src/dms/_generated
rm -f "$out/inference_pb2_grpc.py"
.venv/bin/python -m grpc_tools.protoc -Iproto --python_out="$out" --pyi_out="$out" proto/inference.proto
echo "generated: $(ls "$out"/inference_pb2*)"
