"""``/metrics`` with several frontends: their expositions merged into one, series by series."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from dms.observability.merging import merge_expositions

FIRST = b"""\
# HELP dms_requests_total Requests answered
# TYPE dms_requests_total counter
dms_requests_total{model="a",version="1",code="200"} 3.0
# HELP dms_request_seconds Latency
# TYPE dms_request_seconds histogram
dms_request_seconds_bucket{model="a",le="0.1"} 2.0
dms_request_seconds_bucket{model="a",le="+Inf"} 3.0
dms_request_seconds_count{model="a"} 3.0
dms_request_seconds_sum{model="a"} 0.25
# HELP dms_model_failed 1 while failed
# TYPE dms_model_failed gauge
dms_model_failed{model="a",version="1"} 0.0
# HELP process_resident_memory_bytes Resident memory
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 100.0
"""

SECOND = b"""\
# HELP dms_requests_total Requests answered
# TYPE dms_requests_total counter
dms_requests_total{model="a",version="1",code="200"} 4.0
dms_requests_total{model="a",version="1",code="500"} 1.0
# HELP dms_request_seconds Latency
# TYPE dms_request_seconds histogram
dms_request_seconds_bucket{model="a",le="0.1"} 1.0
dms_request_seconds_bucket{model="a",le="+Inf"} 5.0
dms_request_seconds_count{model="a"} 5.0
dms_request_seconds_sum{model="a"} 1.5
# HELP dms_model_failed 1 while failed
# TYPE dms_model_failed gauge
dms_model_failed{model="a",version="1"} 1.0
# HELP dms_queue_depth Waiting
# TYPE dms_queue_depth gauge
dms_queue_depth{model="a",version="1"} 2.0
# HELP process_resident_memory_bytes Resident memory
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 70.0
"""


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    }


def test_counters_and_histograms_add_up_series_by_series():
    merged = samples(merge_expositions(FIRST, [SECOND]))
    assert merged[("dms_requests_total", (("code", "200"), ("model", "a"), ("version", "1")))] == 7.0
    assert merged[("dms_requests_total", (("code", "500"), ("model", "a"), ("version", "1")))] == 1.0
    assert merged[("dms_request_seconds_bucket", (("le", "0.1"), ("model", "a")))] == 3.0
    assert merged[("dms_request_seconds_bucket", (("le", "+Inf"), ("model", "a")))] == 8.0
    assert merged[("dms_request_seconds_count", (("model", "a"),))] == 8.0
    assert merged[("dms_request_seconds_sum", (("model", "a"),))] == 1.75


def test_flags_take_the_highest_other_gauges_add_and_process_series_stay_frontend_zeros():
    merged = samples(merge_expositions(FIRST, [SECOND]))
    assert merged[("dms_model_failed", (("model", "a"), ("version", "1")))] == 1.0
    assert merged[("dms_queue_depth", (("model", "a"), ("version", "1")))] == 2.0  # only the second had it
    assert merged[("process_resident_memory_bytes", ())] == 100.0


def test_one_family_header_per_metric_and_nothing_to_merge_is_the_same_text():
    text = merge_expositions(FIRST, [SECOND, SECOND]).decode()
    assert text.count("# TYPE dms_requests_total counter") == 1
    assert samples(merge_expositions(FIRST, [])) == samples(FIRST)
