"""h2load's summary and per-call log as a LoadResult: segments add up to one window, and a segment cut short
by GOAWAY is not averaged over idle time."""

from __future__ import annotations

import numpy as np

from bench.harness import grpc_load
from bench.harness.grpc_load import combine, parse_segment
from dms.grpc.connection import STREAMS_PER_CONNECTION

SUMMARY = """finished in {seconds}s, {rate} req/s, 1MB/s
requests: {count} total, {count} started, {count} done, {count} succeeded, 0 failed, 0 errored, 0 timeout
"""


def calls(count: int, every_us: int, duration_us: int, status: int = 200) -> str:
    return "".join(f"{1_000_000 + i * every_us}\t{status}\t{duration_us}\n" for i in range(count))


def test_a_full_segment_is_counted_over_its_length():
    result = combine(
        [parse_segment(SUMMARY.format(seconds="8.00", rate="1000.00", count=8000), calls(8000, 1000, 900))], 1
    )
    assert result.seconds == 8.0 and result.rps == 1000.0
    assert (result.p50_ms, result.bad, result.socket_errors) == (0.9, 0, 0)


def test_calls_that_stop_early_are_counted_over_the_span_they_cover():
    # 3,840 calls, one every 650 µs, then nothing: the server drained the only connection.
    segment = parse_segment(SUMMARY.format(seconds="8.00", rate="480.00", count=3840), calls(3840, 650, 636))
    assert abs(segment.seconds - (3839 * 650 + 636) / 1e6) < 1e-9
    assert 1530 < combine([segment], 1).rps < 1540


def test_segments_add_up_to_one_window():
    short = parse_segment(SUMMARY.format(seconds="0.50", rate="2000.00", count=1000), calls(1000, 500, 1000))
    long = parse_segment(SUMMARY.format(seconds="3.00", rate="1000.00", count=3000), calls(3000, 1000, 3000, 503))
    result = combine([short, long], 2)
    assert (result.requests, result.seconds, result.concurrency) == (4000, 3.5, 2)
    assert result.bad == 3000  # each non-2xx call counts
    assert (result.p50_ms, result.p99_ms) == (3.0, 3.0)  # three calls in four took 3 ms


def test_a_window_is_planned_so_that_no_connection_reaches_the_servers_cap(monkeypatch):
    planned = []

    def segment(body, url, concurrency, seconds, cpu):  # a server doing 2,000 calls/s on each connection
        planned.append(seconds)
        return grpc_load.Segment(seconds, round(2000 * concurrency * seconds), 0, 0, np.full(10, 1.0))

    monkeypatch.setattr(grpc_load, "_segment", segment)
    result = grpc_load.run_h2load(b"", "http://x", 64, 8.0)
    assert abs(sum(planned) - 8.0) < 1e-9 and abs(result.seconds - 8.0) < 1e-9
    assert planned[0] == grpc_load.FIRST_SEGMENT_S
    assert max(2000 * length for length in planned) <= grpc_load.CALLS_PER_CONNECTION < STREAMS_PER_CONNECTION
    assert result.rps == 2000 * 64
