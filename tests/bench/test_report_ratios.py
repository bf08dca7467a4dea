"""The results' ratio table: each round's ratio against that round's best divisor, and the medians' ratio."""

from __future__ import annotations

import json

from bench.harness.load import LoadResult
from bench.harness.report import IN_PROCESS_LOOP, Row, ratios, write_report


def row(label: str, concurrency: int, rps: float, round_index: int) -> Row:
    result = LoadResult(concurrency, int(rps * 10), 10.0, 0, 0, 1.0, 2.0, 3.0)
    return Row("tiny", label, concurrency, result, 100.0, round_index)


ROWS = [
    row("DMS", 16, 9_000, 0),
    row("TorchServe", 16, 3_000, 0),
    row("MMS", 16, 3_600, 0),
    row("DMS", 16, 12_000, 1),
    row("TorchServe", 16, 4_000, 1),
    row("MMS", 16, 2_000, 1),
    row("DMS", 64, 10_000, 0),
    row("TorchServe", 64, 5_000, 0),
]


def test_each_round_is_divided_by_its_own_best_peer_and_the_medians_by_the_best_median():
    found = ratios(ROWS, "tiny", ("DMS ÷ peers", "DMS", ["TorchServe", "MMS"]))
    overall, by_round = found[16]
    assert by_round == [9_000 / 3_600, 12_000 / 4_000]
    assert overall == 10_500 / 3_500  # DMS's median over TorchServe's (3,500), the better median of the two
    assert found[64] == (2.0, [2.0])


def test_a_comparison_missing_its_divisor_at_a_concurrency_is_left_out():
    assert ratios(ROWS, "tiny", ("MMS ÷ DMS", "MMS", ["nobody"])) == {}
    assert 64 not in ratios(ROWS, "tiny", ("DMS ÷ MMS", "DMS", ["MMS"]))


def test_the_report_shows_the_ratio_table_with_every_round(tmp_path):
    out = tmp_path / "run.md"
    extras = {"comparisons": [("DMS ÷ the best peer", "DMS", ["TorchServe", "MMS"])], "tiny_order": ["DMS", "MMS"]}
    write_report(out, ROWS, extras, "a test machine", 8, 2)
    text = out.read_text()
    assert "| DMS ÷ the best peer | **3.00** (by round: 2.50, 3.00) | **2.00** (by round: 2.00) |" in text
    assert "(reversed every other round), so that the windows compared are seconds apart: DMS, MMS." in text


def test_the_report_gives_p50_p90_p99_and_keeps_every_window_as_json(tmp_path):
    out = tmp_path / "run.md"
    write_report(out, ROWS, {"startup": {"DMS": (0.4, 140.0)}}, "a test machine", 8, 2)
    assert "| DMS | 10,500 (1.00 / 2.00 / 3.0) [100] | 10,000 (1.00 / 2.00 / 3.0) [100] |" in out.read_text()
    record = json.loads(out.with_suffix(".json").read_text())
    assert len(record["windows"]) == len(ROWS) and record["machine"] == "a test machine"
    first = record["windows"][0]
    assert (first["server"], first["concurrency"], first["round"], first["rps"]) == ("DMS", 16, 0, 9_000)
    assert (first["p50_ms"], first["p90_ms"], first["p99_ms"]) == (1.0, 2.0, 3.0)
    assert record["startup_medians"] == {"DMS": {"cold_start_s": 0.4, "idle_rss_mib": 140.0}}


def test_the_report_divides_squeezenet_by_the_loop_and_torchserve_round_by_round_and_start_up_by_torchserve(
    tmp_path,
):
    def image_row(label: str, images_per_s: float, round_index: int) -> Row:
        result = LoadResult(16, int(images_per_s * 8), 8.0, 0, 0, 100.0, 150.0, 180.0)
        return Row("squeezenet", label, 16, result, 17_000.0, round_index)

    rows = [
        image_row("DMS image_classifier", 120, 0),
        image_row("TorchServe 0.12 (same preprocessing)", 80, 0),
        image_row("DMS image_classifier", 100, 1),
        image_row("TorchServe 0.12 (same preprocessing)", 100, 1),
    ]
    extras = {
        "in_process_images_per_s": [150.0, 125.0],
        "squeezenet_comparisons": [
            ("DMS ÷ the in-process loop", "DMS image_classifier", [IN_PROCESS_LOOP]),
            ("DMS ÷ TorchServe", "DMS image_classifier", ["TorchServe 0.12 (same preprocessing)"]),
        ],
        "startup": {"DMS": (1.0, 150.0), "TorchServe 0.12": (4.0, 600.0), "MMS 1.1": (2.0, 200.0)},
    }
    out = tmp_path / "run.md"
    write_report(out, rows, extras, "a test machine", 8, 2)
    text = out.read_text()
    assert "| DMS ÷ the in-process loop | **0.80** (by round: 0.80, 0.80) |" in text
    assert "| DMS ÷ TorchServe | **1.22** (by round: 1.50, 1.00) |" in text
    assert "DMS ÷ TorchServe 0.12: cold start 0.25, idle RSS 0.25." in text
    assert IN_PROCESS_LOOP not in text.split("Ratios of images/s")[0].split("## SqueezeNet")[1]  # not a server row
