"""Where the CPU of a tiny request goes: per-process CPU split and py-spy profiles under wrk load.

    python -m bench.profile                       # /predictions and OIP REST JSON, c=16, 8 s each
    python -m bench.profile --paths predictions --seconds 15 --concurrency 64
    python -m bench.profile --no-py-spy           # CPU split only (py-spy slows what it samples a little)

It starts one DMS server with the tiny ONNX model (tensor handler, 2 workers, batch 8 / 5 ms), puts
wrk on core 1, and for each path reports CPU µs per request for the frontend process and for the
workers together, then (unless --no-py-spy) samples the frontend and one worker with py-spy and
prints the functions with the most own time and the most time including callees. Collapsed stacks
are kept under --out for flame graphs.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil

from bench.harness import grpc_load, load, setups
from bench.harness.servers import Server, cpu_seconds_of

PATHS = ("predictions", "oip-json", "oip-binary", "oip-grpc")
Load = Callable[[int, float], load.LoadResult]
"""Runs the load generator at a concurrency for some seconds."""


def targets(server: Server) -> dict[str, load.Target]:
    base = server.probe_url.rsplit("/predictions/", 1)[0]
    reference = setups.tiny_reference()
    header = json.dumps(
        {"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "parameters": {"binary_data_size": 64}}]}
    ).encode()
    oip_json = json.dumps({"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": setups.ROW}]})
    found = {
        "predictions": (f"{base}/predictions/lin", setups.TINY_BODY, "application/json", ()),
        "oip-json": (f"{base}/v2/models/lin/infer", oip_json.encode(), "application/json", ()),
        "oip-binary": (
            f"{base}/v2/models/lin/infer",
            header + np.asarray([setups.ROW], dtype=np.float32).tobytes(),
            "application/octet-stream",
            (("Inference-Header-Content-Length", str(len(header))),),
        ),
    }
    import httpx

    out = {}
    for name, (url, body, content_type, headers) in found.items():
        answer = httpx.post(url, content=body, headers={"Content-Type": content_type, **dict(headers)}, timeout=30)
        assert answer.status_code == 200, f"{name}: {answer.status_code} {answer.text[:300]}"
        parsed = answer.json()
        values = parsed["outputs"][0]["data"] if isinstance(parsed, dict) else parsed
        np.testing.assert_array_equal(np.asarray(values, dtype=np.float32).reshape(1, 4), reference)
        out[name] = load.Target(url, [body], content_type, [answer.content], True, headers)
    return out


def loads(server: Server, work: Path) -> dict[str, Load]:
    """Each path's load generator, after checking one answer of each against numpy."""
    found: dict[str, Load] = {}
    for path, target in targets(server).items():
        script = load.write_script(target, work / f"{path}.lua")
        found[path] = functools.partial(_wrk, script, target.url)
    found["oip-grpc"] = functools.partial(_h2load, setups.dms_grpc_target(server, "lin", "x"))
    return found


def _wrk(script: Path, url: str, concurrency: int, seconds: float) -> load.LoadResult:
    return load.run_wrk(script, url, concurrency, seconds, cpu=1)


def _h2load(target: grpc_load.GrpcTarget, concurrency: int, seconds: float) -> load.LoadResult:
    return grpc_load.run_checked(target, concurrency, seconds, cpu=1)


def batches(server: Server) -> tuple[float, float]:
    """(requests, batches) the server's batchers have handed to workers so far, from its /metrics."""
    return setups.dms_metric(server, "dms_batch_size_sum"), setups.dms_metric(server, "dms_batch_size_count")


def tiny_server(work: Path, overrides: dict[str, object] | None = None) -> Server:
    """A DMS server, not launched, with the tiny ONNX model as ``lin`` (tensor handler, 2 workers, batch 8 / 5 ms).

    ``overrides`` replace entries of that model config (``{"initial_workers": 1}``, say).
    """
    onnx_file = setups.write_tiny_onnx(work / "tiny.onnx")
    config: dict[str, object] = {"initial_workers": 2, "batch_size": 8, "max_batch_delay_ms": 5, **(overrides or {})}
    return setups.dms_server(work, {"lin": ("tensor", onnx_file, config)}, probe="lin")


@dataclass(frozen=True)
class Window:
    """One load window against a DMS server, every answer checked."""

    result: load.LoadResult
    frontend_us: float
    """CPU of the frontend process per request."""
    workers_us: float
    """CPU of all worker processes together per request."""
    mean_batch: float


def measure(server: Server, run: Load, concurrency: int, seconds: float) -> Window:
    assert server.process is not None
    frontend = psutil.Process(server.process.pid)
    workers = frontend.children(recursive=True)
    front_before, workers_before = cpu_seconds_of([frontend]), cpu_seconds_of(workers)
    batched_before, count_before = batches(server)
    result = run(concurrency, seconds)
    front_s, workers_s = cpu_seconds_of([frontend]) - front_before, cpu_seconds_of(workers) - workers_before
    batched_after, count_after = batches(server)
    assert result.bad == 0 and result.socket_errors == 0, f"{server.name}: {result}"
    per = 1e6 / max(1, result.requests)
    return Window(
        result, front_s * per, workers_s * per, (batched_after - batched_before) / max(1.0, count_after - count_before)
    )


def _stacks(collapsed: Path) -> Iterator[tuple[list[str], int]]:
    """(frames, outermost first; samples) of each line of py-spy's collapsed (raw) output."""
    for line in collapsed.read_text().splitlines():
        stack, _, samples_text = line.rpartition(" ")
        if stack:
            yield stack.split(";"), int(samples_text)


def top_functions(collapsed: Path, count: int) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """(own share, inclusive share) of samples per function, from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for stack, samples in _stacks(collapsed):
        total += samples
        frames = [_short(frame) for frame in stack]
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    if not total:
        return [], []
    return (
        [(name, n / total) for name, n in own.most_common(count)],
        [(name, n / total) for name, n in inclusive.most_common(count)],
    )


STAGES: list[tuple[str, tuple[str, ...]]] = [
    # (stage, substrings of the sampled frame's own function and file); first match wins
    (
        "HTTP response write (socket write; the ASGI bridge's send)",
        ("Http1Connection.write_reply ", "AsgiCall.send "),
    ),
    (
        "HTTP parse and set-up (httptools callbacks, rest/http1_server.py, httputil/http1_wire.py; ASGI)",
        ("rest/http1_server.py", "httputil/http1_wire.py", "rest/calls.py", "rest/asgi_bridge.py", "uvicorn/"),
    ),
    ("event loop (uvloop: epoll, socket reads, callbacks)", ("Runner.run ",)),
    ("IPC to workers (msgpack frames on a socket pair)", ("worker_process.py", "worker_link.py", "messages.py")),
    ("metrics, access log, request ids", ("prometheus_client/", "observability/", "logging/")),
    ("queue and batching", ("engine/batcher.py", "engine/pool.py", "engine/stats.py", "dataplane/", "asyncio/")),
    ("routing, forwarding, response object", ("rest/", "starlette/", "_weakrefset.py")),
    ("worker: waiting for a batch (not CPU)", ("Channel._fill ",)),
    ("worker: IPC (socket, msgpack)", ("worker/__main__.py", "engine/messages.py")),
    ("worker: model runtime (ONNX Runtime)", ("onnxruntime/", "runtimes/")),
    ("worker: decode JSON, conform tensors", ("worker/inputs.py", "json_depth.py", "tensor_exec.py", "oip/")),
    ("worker: handler and encode", ("handlers/", "worker/", "numpy/")),
]


def stage_shares(collapsed: Path) -> list[tuple[str, float]]:
    """Share of samples per stage of the data path, by the file of each sample's innermost frame."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for stack, samples in _stacks(collapsed):
        total += samples
        frame = stack[-1]
        counts[next((stage for stage, marks in STAGES if any(m in frame for m in marks)), "other")] += samples
    return [(stage, n / total) for stage, n in counts.most_common()] if total else []


def _short(frame: str) -> str:
    """``func (path/to/module.py:12)`` → ``func (module.py)``: lines differ per call site, files do not."""
    name, _, where = frame.partition(" (")
    file = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(file).parts
    return f"{name} ({'/'.join(parts[-2:])})" if parts else name


def profile(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return subprocess.Popen(
        [
            *(py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "250"),
            *("--format", "raw", "--output", str(out), "--nonblocking"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated, of {', '.join(PATHS)}")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--no-py-spy", dest="py_spy", action="store_false")
    parser.add_argument("--out", type=Path, default=None, help="keep collapsed stacks here")
    parser.add_argument("--serve-args", default="", help='extra `dms serve` arguments, e.g. "--grpc-server grpcio"')
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dms-profile-"))
    out = args.out or work
    out.mkdir(parents=True, exist_ok=True)
    server = tiny_server(work)
    server.start += shlex.split(args.serve_args)
    try:
        server.launch()
        assert server.process is not None
        frontend = psutil.Process(server.process.pid)
        workers = frontend.children(recursive=True)
        for path, run in loads(server, work).items():
            if path not in args.paths.split(","):
                continue
            run(args.concurrency, 3)
            spies = []
            if args.py_spy:
                spies = [
                    profile(frontend.pid, args.seconds, out / f"{path}-frontend.txt"),
                    profile(workers[0].pid, args.seconds, out / f"{path}-worker.txt"),
                ]
            window = measure(server, run, args.concurrency, args.seconds)
            for spy in spies:
                spy.wait(timeout=args.seconds + 60)
            result = window.result
            print(
                f"\n== {path}, c={args.concurrency}: {result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
                f"p99 {result.p99_ms:.2f} ms; CPU µs/request: frontend {window.frontend_us:.0f}, "
                f"workers {window.workers_us:.0f}; mean batch {window.mean_batch:.1f}",
                flush=True,
            )
            for role in ("frontend", "worker") if args.py_spy else ():
                collapsed = out / f"{path}-{role}.txt"
                if not collapsed.is_file():
                    print(f"   (no py-spy output for the {role})")
                    continue
                cpu_us = window.frontend_us if role == "frontend" else window.workers_us
                shares = stage_shares(collapsed)
                waiting = sum(share for stage, share in shares if "not CPU" in stage)
                print(
                    f"-- {role}: by stage (share of samples; the {cpu_us:.0f} µs CPU per request spread over "
                    "the samples that were not waiting, so kernel time lands in proportion)"
                )
                for stage, share in shares:
                    busy = 0.0 if "not CPU" in stage else share / max(1e-9, 1 - waiting)
                    print(f"   {share:6.1%}  {busy * cpu_us:5.0f} µs  {stage}")
                own, inclusive = top_functions(collapsed, args.top)
                print(f"-- {role}: own time (share of samples, idle included)")
                for name, share in own:
                    print(f"   {share:6.1%}  {name}")
                print(f"-- {role}: including callees")
                for name, share in inclusive:
                    print(f"   {share:6.1%}  {name}")
        print(f"\ncollapsed stacks: {out}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
