"""The committed module is exactly what scripts/gen_proto.sh makes from proto/inference.proto."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO


def test_generated_code_is_up_to_date(tmp_path: Path):
    if importlib.util.find_spec("grpc_tools") is None:
        pytest.skip("needs grpcio-tools (a test dependency), which is missing")
    proto = REPO / "proto"
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{proto}",
        f"--python_out={tmp_path}",
        f"--pyi_out={tmp_path}",
        str(proto / "inference.proto"),
    ]
    subprocess.run(command, check=True)
    generated = REPO / "src" / "dms" / "_generated"
    for name in ("inference_pb2.py", "inference_pb2.pyi"):
        assert (tmp_path / name).read_text() == (generated / name).read_text(), (
            f"{name} is stale: run scripts/gen_proto.sh"
        )
    assert sorted(p.name for p in generated.glob("inference_*")) == ["inference_pb2.py", "inference_pb2.pyi"]
