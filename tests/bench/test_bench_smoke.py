"""The benchmark harness in smoke mode: every scenario for a second, every answer checked, so it cannot rot."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.support import REPO


def test_the_benchmark_runs_and_every_answer_is_right():
    for tool, package in (("wrk", "wrk"), ("h2load", "nghttp2-client")):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (Debian's {package}, installed by scripts/test.sh), which is missing")
    peers = os.environ.get("DMS_BENCH_SMOKE_PEERS") == "1"
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", *([] if peers else ["--no-peers"])],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    assert "smoke run passed" in done.stdout
    for label in (
        "DMS /predictions, same handler (batch 16 / 5 ms)",
        "DMS OIP REST binary (ONNX)",
        "DMS OIP gRPC (ONNX)",
        "bare ceiling",
        "gRPC ceiling",
        "DMS batch 8 / 5 ms",
        "cold start",
    ):
        assert label in done.stdout, f"{label} was not measured:\n{done.stdout}"
