"""The benchmark harness in smoke mode: every scenario for a second, every answer checked, so it cannot rot."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.support import REPO


def needs_load_generators() -> None:
    for tool, package in (("wrk", "wrk"), ("h2load", "nghttp2-client")):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (Debian's {package}, installed by scripts/test.sh), which is missing")


def run_module(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=1500, check=False
    )
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


def test_the_benchmark_runs_and_every_answer_is_right():
    needs_load_generators()
    peers = os.environ.get("DMS_BENCH_SMOKE_PEERS") == "1"
    out = run_module("bench.run", "--smoke", *([] if peers else ["--no-peers"]))
    assert "smoke run passed" in out
    for label in (
        "DMS /predictions, same handler (batch 16 / 5 ms)",
        "DMS OIP REST binary (ONNX)",
        "DMS OIP gRPC (ONNX; DMS's HTTP/2, the default)",
        "DMS OIP gRPC on grpcio (ONNX)",
        "bare ceiling",
        "gRPC ceiling",
        "DMS batch 8 / 5 ms",
        "cold start",
    ):
        assert label in out, f"{label} was not measured:\n{out}"


def test_the_side_by_side_comparison_of_two_builds_runs():
    needs_load_generators()
    out = run_module(
        *("bench.ab", "--b-src", str(REPO / "src"), "--paths", "predictions,oip-grpc"),
        *("--concurrency", "2", "--rounds", "1", "--seconds", "1"),
    )
    for path in ("predictions", "oip-grpc"):
        assert f"{path}, c=2: A/B = " in out, out


def test_the_profiler_runs_and_accounts_for_the_cpu():
    needs_load_generators()
    out = run_module("bench.profile", "--paths", "predictions,oip-grpc", "--seconds", "1", "--no-py-spy")
    for path in ("predictions", "oip-grpc"):
        assert f"== {path}, c=16: " in out and "CPU µs/request: frontend" in out, out


def test_the_in_process_grpc_transport_measure_runs():
    out = run_module(
        *("bench.grpc_transport", "--b-src", str(REPO / "src")),
        *("--rounds", "1", "--calls", "160", "--concurrency", "16"),
    )
    assert "A (this tree): " in out and "µs CPU per call" in out and "A/B CPU per call = " in out, out
