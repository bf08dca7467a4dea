"""The results' ratio table: each round's ratio against that round's best divisor, and the medians' ratio."""

from __future__ import annotations

from bench.harness.load import LoadResult
from bench.harness.report import Row, ratios, write_report


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
