"""h2load's summary and per-call log as a LoadResult; a window cut short by GOAWAY is not averaged over idle time."""

from __future__ import annotations

from bench.harness.grpc_load import parse_h2load

SUMMARY = """finished in 8.00s, {rate} req/s, 1MB/s
requests: {count} total, {count} started, {count} done, {count} succeeded, 0 failed, 0 errored, 0 timeout
"""


def calls(count: int, every_us: int, duration_us: int) -> str:
    return "".join(f"{1_000_000 + i * every_us}\t200\t{duration_us}\n" for i in range(count))


def test_a_full_window_is_counted_over_the_window():
    result = parse_h2load(SUMMARY.format(rate="1000.00", count=8000), calls(8000, 1000, 900), 1)
    assert result.seconds == 8.0 and result.rps == 1000.0
    assert (result.p50_ms, result.bad, result.socket_errors) == (0.9, 0, 0)


def test_calls_that_stop_early_are_counted_over_the_span_they_cover():
    # 3,840 calls, one every 650 µs, then nothing: the server drained the only connection.
    result = parse_h2load(SUMMARY.format(rate="480.00", count=3840), calls(3840, 650, 636), 1)
    assert abs(result.seconds - (3839 * 650 + 636) / 1e6) < 1e-9
    assert 1530 < result.rps < 1540
