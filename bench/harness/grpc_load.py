"""gRPC load with h2load (nghttp2's HTTP/2 load generator; wrk speaks HTTP/1.1 only).

A unary gRPC call is an HTTP/2 POST to ``/<package>.<Service>/<Method>`` with ``content-type:
application/grpc`` whose body is one length-prefixed message (a zero byte, a 4-byte big-endian
length, the protobuf bytes). h2load replays that body on ``-c`` connections, one call in flight on
each (``-m 1``, like wrk's connections), and logs every call's HTTP status and duration. A gRPC
error still travels as HTTP 200 (its status is in the trailers, which h2load does not read), so
the caller also checks the server's own count of successful calls (see ``bench.run``).
"""

from __future__ import annotations

import dataclasses
import re
import struct
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.harness.load import LoadResult

INFER_PATH = "/inference.GRPCInferenceService/ModelInfer"


@dataclass(frozen=True)
class GrpcTarget:
    url: str
    """``http://host:port`` of the gRPC server."""
    message: bytes
    """The framed request h2load sends on every call."""
    failed_calls: Callable[[], float]
    """The server's count of gRPC calls that did not end OK (h2load cannot see gRPC status codes)."""


def run_checked(target: GrpcTarget, concurrency: int, seconds: float, cpu: int | None = None) -> LoadResult:
    """h2load's result, with every call the server counted as failed meanwhile added to ``bad``."""
    before = target.failed_calls()
    result = run_h2load(target.message, target.url, concurrency, seconds, cpu)
    return dataclasses.replace(result, bad=result.bad + int(target.failed_calls() - before))


def infer_message(model: str, input_name: str, rows: list[list[float]]) -> bytes:
    """A framed ``ModelInferRequest`` with one FP32 input in ``raw_input_contents`` (as tritonclient sends it)."""
    from dms._generated import inference_pb2 as pb

    array = np.asarray(rows, dtype=np.float32)
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name=input_name, datatype="FP32", shape=list(array.shape))
    request.raw_input_contents.append(array.tobytes())
    payload = request.SerializeToString()
    return b"\x00" + struct.pack(">I", len(payload)) + payload


def probe(address: str, message: bytes) -> np.ndarray:
    """Send one framed request with grpcio and return the first output as float32 (the harness checks it)."""
    import grpc

    from dms._generated import inference_pb2 as pb

    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(INFER_PATH)
        answer = pb.ModelInferResponse.FromString(call(message[5:], timeout=30))
    if answer.raw_output_contents:
        return np.frombuffer(answer.raw_output_contents[0], dtype="<f4").reshape(list(answer.outputs[0].shape))
    return np.asarray(answer.outputs[0].contents.fp32_contents, dtype=np.float32).reshape(list(answer.outputs[0].shape))


def run_h2load(body: bytes, url: str, concurrency: int, seconds: float, cpu: int | None = None) -> LoadResult:
    with tempfile.TemporaryDirectory(prefix="dms-h2load-") as folder:
        data, log = Path(folder) / "body.bin", Path(folder) / "calls.tsv"
        data.write_bytes(body)
        command = [
            *("h2load", "-t1", f"-c{concurrency}", "-m1", f"-D{max(1, round(seconds))}"),
            *("-d", str(data), "--log-file", str(log)),
            *("-H", "content-type: application/grpc", "-H", "te: trailers"),
            url + INFER_PATH,
        ]
        if cpu is not None:
            command = ["taskset", "-c", str(cpu), *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"h2load failed ({done.returncode}): {done.stderr or done.stdout}")
        return parse_h2load(done.stdout, log.read_text(), concurrency)


EARLY_STOP = 0.8
"""h2load does not reconnect when a server ends a connection with GOAWAY, as DMS's HTTP/2 gRPC server
does after 3,840 calls on one (``dms.grpc.h2_connection.STREAMS_PER_CONNECTION``; real clients open a new one).
With one connection that is ~3 s of an 8 s window, after which h2load idles: when its calls span less
than this share of the window, the rate is taken over the span they cover."""


def parse_h2load(output: str, log: str, concurrency: int) -> LoadResult:
    finished = re.search(r"finished in ([\d.]+)(us|ms|s)", output)
    counts = re.search(
        r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", output
    )
    if not finished or not counts:
        raise RuntimeError(f"cannot read h2load's output:\n{output}")
    seconds = float(finished[1]) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[finished[2]]
    durations_us = []
    first_start_us, last_end_us = float("inf"), 0.0
    not_ok = 0
    for line in log.splitlines():
        fields = line.split("\t")
        if len(fields) < 3:
            continue
        if not fields[1].startswith("2"):
            not_ok += 1
        start_us, duration_us = int(fields[0]), int(fields[2])
        durations_us.append(duration_us)
        first_start_us, last_end_us = min(first_start_us, start_us), max(last_end_us, start_us + duration_us)
    active_s = (last_end_us - first_start_us) / 1e6
    if durations_us and active_s < EARLY_STOP * seconds:
        seconds = active_s  # every connection was drained by the server's GOAWAY: rate over the calls made
    done, succeeded = int(counts[2]), int(counts[3])
    durations = np.asarray(durations_us or [0], dtype=np.float64) / 1000.0
    p50, p90, p99 = (float(np.percentile(durations, q)) for q in (50, 90, 99))
    return LoadResult(
        concurrency=concurrency,
        requests=done,
        seconds=seconds,
        bad=not_ok + (done - succeeded),
        socket_errors=int(counts[4]) + int(counts[5]),
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
    )
