"""gRPC load with h2load (nghttp2's HTTP/2 load generator; wrk speaks HTTP/1.1 only).

A unary gRPC call is an HTTP/2 POST to ``/<package>.<Service>/<Method>`` with ``content-type:
application/grpc`` whose body is one length-prefixed message (a zero byte, a 4-byte big-endian
length, the protobuf bytes). h2load replays that body on ``-c`` connections, one call in flight on
each (``-m 1``, like wrk's connections), and logs every call's HTTP status and duration. A gRPC
error still travels as HTTP 200 (its status is in the trailers, which h2load does not read), so
the caller also checks the server's own count of successful calls (see ``bench.run``). A window is run
in segments on fresh connections, each short enough that no connection reaches the server's cap on calls
per connection (``CALLS_PER_CONNECTION``).
"""

from __future__ import annotations

import dataclasses
import math
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


CALLS_PER_CONNECTION = 3000
"""The most calls one segment means to make on a connection: under the 3,840 after which DMS's HTTP/2 gRPC
server asks a client to move to a new connection (GOAWAY; ``dms.grpc.connection.STREAMS_PER_CONNECTION``).
Real clients open a new one; h2load does not, so a connection drained inside a window left the load below
its ``-c`` for the rest of it, and whole windows could not measure some rates: at c=64 over 8 s, any rate
from 30,720 to 38,400 calls/s came out as 30,720 (64 x 3,840 calls over the window, every connection
drained too late for ``EARLY_STOP``). On the host of 2026-11-23-prestart the server did ~30,500 at c=64,
just under that ceiling (three interleaved pairs: 30,009-30,492 in segments, 30,720 each time in one window)."""
FIRST_SEGMENT_S = 0.5
"""The first segment's length; the rate it measures sizes the next."""
LONGEST_SEGMENT_S = 4.0
"""No segment is longer, whatever the rate seen: a short first segment can come out well under the rate that
follows (on fresh connections, just after another load)."""


@dataclass(frozen=True)
class Segment:
    """One h2load run on fresh connections."""

    seconds: float
    done: int
    bad: int
    socket_errors: int
    durations_ms: np.ndarray


def run_h2load(body: bytes, url: str, concurrency: int, seconds: float, cpu: int | None = None) -> LoadResult:
    """``seconds`` of load in segments, each on new connections and short enough, at the fastest rate seen so
    far, that no connection reaches the server's per-connection cap: a short first one, then what is left of
    the window split into equal parts, planned again after each."""
    segments: list[Segment] = []
    left = seconds
    fastest = 0.0  # calls per second per connection
    while left > 1e-3:
        if not segments:
            length = min(left, FIRST_SEGMENT_S)
        else:
            longest = min(CALLS_PER_CONNECTION / fastest if fastest else left, LONGEST_SEGMENT_S)
            length = left / math.ceil(left / longest)
        segment = _segment(body, url, concurrency, length, cpu)
        segments.append(segment)
        if segment.seconds:
            fastest = max(fastest, segment.done / segment.seconds / concurrency)
        left -= length
    return combine(segments, concurrency)


def _segment(body: bytes, url: str, concurrency: int, seconds: float, cpu: int | None) -> Segment:
    with tempfile.TemporaryDirectory(prefix="dms-h2load-") as folder:
        data, log = Path(folder) / "body.bin", Path(folder) / "calls.tsv"
        data.write_bytes(body)
        command = [
            *("h2load", "-t1", f"-c{concurrency}", "-m1", f"-D{max(1, round(seconds * 1000))}ms"),
            *("-d", str(data), "--log-file", str(log)),
            *("-H", "content-type: application/grpc", "-H", "te: trailers"),
            url + INFER_PATH,
        ]
        if cpu is not None:
            command = ["taskset", "-c", str(cpu), *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"h2load failed ({done.returncode}): {done.stderr or done.stdout}")
        return parse_segment(done.stdout, log.read_text())


EARLY_STOP = 0.8
"""When a segment's calls span less than this share of it, its rate is taken over the span they cover: its
connections were drained early all the same (the server's cap reached sooner than the first segment's rate
foretold), and h2load idled after."""


def parse_segment(output: str, log: str) -> Segment:
    """h2load's summary and per-call log (start µs, HTTP status, duration µs)."""
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
        seconds = active_s
    done, succeeded = int(counts[2]), int(counts[3])
    return Segment(
        seconds=seconds,
        done=done,
        bad=not_ok + (done - succeeded),
        socket_errors=int(counts[4]) + int(counts[5]),
        durations_ms=np.asarray(durations_us, dtype=np.float64) / 1000.0,
    )


def combine(segments: list[Segment], concurrency: int) -> LoadResult:
    """The segments as one window: their calls over their summed time, percentiles over every call."""
    durations = np.concatenate([segment.durations_ms for segment in segments] + [np.zeros(0)])
    p50, p90, p99 = (float(np.percentile(durations, q)) if durations.size else 0.0 for q in (50, 90, 99))
    return LoadResult(
        concurrency=concurrency,
        requests=sum(segment.done for segment in segments),
        seconds=sum(segment.seconds for segment in segments),
        bad=sum(segment.bad for segment in segments),
        socket_errors=sum(segment.socket_errors for segment in segments),
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
    )
