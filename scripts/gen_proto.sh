#!/usr/bin/env bash
# Regenerate src/dms/_generated from proto/inference.proto (needs grpcio-tools==1.80.0, whose
# protoc targets protobuf 6.x: the runtime range tritonclient accepts).
set -euo pipefail
cd "$(dirname "$0")/.."
out=src/dms/_generated
.venv/bin/python -m grpc_tools.protoc -Iproto --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" proto/inference.proto
# protoc writes a top-level import; make it a package import.
sed -i 's/^import inference_pb2 as inference__pb2$/from dms._generated import inference_pb2 as inference__pb2/' "$out/inference_pb2_grpc.py"
echo "generated: $(ls "$out"/inference_pb2*)"
