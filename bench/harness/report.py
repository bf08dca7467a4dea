"""The results files: a Markdown table per scenario (median over rounds), a PNG chart beside it, and every window's
figures as JSON (``<run>.json``), for whoever wants more than the medians."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.harness.load import LoadResult


@dataclass(frozen=True)
class Row:
    scenario: str
    label: str
    concurrency: int
    result: LoadResult
    cpu_us_per_request: float
    round_index: int = 0


def medians(rows: list[Row], scenario: str) -> dict[str, dict[int, dict[str, float]]]:
    grouped: dict[str, dict[int, list[Row]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if row.scenario == scenario:
            grouped[row.label][row.concurrency].append(row)
    return {
        label: {
            c: {
                "rps": statistics.median(r.result.rps for r in runs),
                "p50": statistics.median(r.result.p50_ms for r in runs),
                "p90": statistics.median(r.result.p90_ms for r in runs),
                "p99": statistics.median(r.result.p99_ms for r in runs),
                "cpu": statistics.median(r.cpu_us_per_request for r in runs),
                "min_rps": min(r.result.rps for r in runs),
                "max_rps": max(r.result.rps for r in runs),
            }
            for c, runs in by_c.items()
        }
        for label, by_c in grouped.items()
    }


Comparison = tuple[str, str, list[str]]
"""(title, the row divided, the rows it is divided by: the best of them in each round)."""


def ratios(rows: list[Row], scenario: str, comparison: Comparison) -> dict[int, tuple[float, list[float]]]:
    """Per concurrency: the ratio of the medians, and the ratio in each round (against that round's best divisor)."""
    _, numerator, divisors = comparison
    stats = medians(rows, scenario)
    by_round: dict[int, dict[int, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for row in rows:
        if row.scenario == scenario:
            by_round[row.concurrency][row.round_index][row.label] = row.result.rps
    found: dict[int, tuple[float, list[float]]] = {}
    for concurrency, numerator_stats in stats.get(numerator, {}).items():
        best = max((stats[d][concurrency]["rps"] for d in divisors if concurrency in stats.get(d, {})), default=0.0)
        if not best:
            continue
        rounds = []
        for _, measured in sorted(by_round[concurrency].items()):
            best_then = max((measured[d] for d in divisors if d in measured), default=0.0)
            if numerator in measured and best_then:
                rounds.append(measured[numerator] / best_then)
        found[concurrency] = (numerator_stats["rps"] / best, rounds)
    return found


IN_PROCESS_LOOP = "in-process loop (2 processes)"
"""The SqueezeNet scenario's in-process loop, as a row the ratio table can divide by."""
STARTUP_PEER = "TorchServe 0.12"
"""The server the issue's start-up targets are set against."""


def loop_row(images_per_s: float, window_s: float, round_index: int) -> Row:
    """One round of the in-process loop as a row of the SqueezeNet scenario (for ratios only; it has no latency)."""
    result = LoadResult(16, round(images_per_s * window_s), window_s, 0, 0, 0.0, 0.0, 0.0)
    return Row("squeezenet", IN_PROCESS_LOOP, 16, result, 0.0, round_index)


def _ratio_table(rows: list[Row], scenario: str, comparisons: list[Comparison]) -> list[str]:
    concurrencies = sorted({row.concurrency for row in rows if row.scenario == scenario})
    lines = ["| ratio of req/s | " + " | ".join(f"c={c}" for c in concurrencies) + " |"]
    lines.append("|---|" + "---|" * len(concurrencies))
    for comparison in comparisons:
        found = ratios(rows, scenario, comparison)
        cells = []
        for c in concurrencies:
            if c not in found:
                cells.append("-")
                continue
            overall, rounds = found[c]
            cells.append(f"**{overall:.2f}** (by round: {', '.join(f'{r:.2f}' for r in rounds)})")
        lines.append(f"| {comparison[0]} | " + " | ".join(cells) + " |")
    return lines


def _table(stats: dict[str, dict[int, dict[str, float]]]) -> list[str]:
    concurrencies = sorted({c for by_c in stats.values() for c in by_c})
    head = "| server | " + " | ".join(f"c={c} req/s (p50 / p90 / p99 ms) [CPU µs/req]" for c in concurrencies) + " |"
    lines = [head, "|---|" + "---|" * len(concurrencies)]
    for label, by_c in stats.items():
        cells = []
        for c in concurrencies:
            s = by_c.get(c)
            cells.append(
                f"{s['rps']:,.0f} ({s['p50']:.2f} / {s['p90']:.2f} / {s['p99']:.1f}) [{s['cpu']:.0f}]" if s else "-"
            )
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def write_report(out: Path, rows: list[Row], extras: dict[str, Any], machine: str, window: float, rounds: int) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# Benchmark run of {out.stem}",
        "",
        f"Machine: {machine}. wrk pinned to core 1, one thread, {window:g} s windows after warm-up, "
        f"{rounds} interleaved rounds (servers measured in turn each round, the tiny scenario's as below; medians "
        "shown). Every answer was "
        "checked (exact bytes for the tiny model, the top-1 label for SqueezeNet); a single wrong or non-2xx "
        "answer fails the run. CPU µs/req: the server's processes' CPU time (all of them, workers and JVM "
        "included) over the window, per request.",
        "",
    ]
    for scenario, title in (
        (
            "tiny",
            "Tiny model (16→4 float matmul, one JSON row per request; every DMS model: 2 workers, batch 16 / 5 ms)",
        ),
        ("squeezenet", "SqueezeNet ONNX on JPEGs (kitten.jpg, dog.jpg in turn), c=16"),
        ("sweep", "Batching sweep, DMS, same tiny handler (batch size / max delay)"),
    ):
        stats = medians(rows, scenario)
        if stats:
            lines += [f"## {title}", "", *_table(stats), ""]
        comparisons = extras.get("comparisons") if scenario == "tiny" else None
        if stats and comparisons:
            order = ", ".join(extras.get("tiny_order") or [])
            lines += [
                "Ratios: the medians' ratio, then the ratio within each round (against the best divisor of that "
                "round). Each round loads every target at one concurrency before the next, in this order (reversed "
                f"every other round), so that the windows compared are seconds apart: {order}.",
                "",
                *_ratio_table(rows, scenario, comparisons),
                "",
            ]
    loops = extras.get("in_process_images_per_s")
    if loops:
        lines += [
            f"In-process loop (same preprocessing + ONNX Runtime, 2 processes x 1 thread): "
            f"{statistics.median(loops):,.1f} images/s (rounds: {', '.join(f'{v:,.1f}' for v in loops)}).",
            "",
        ]
    squeezenet_comparisons = extras.get("squeezenet_comparisons")
    if squeezenet_comparisons and medians(rows, "squeezenet"):
        loop_rows = [loop_row(images_per_s, window, index) for index, images_per_s in enumerate(loops or [])]
        lines += [
            "Ratios of images/s, as for the tiny model (the loop runs just before the servers in each round):",
            "",
            *_ratio_table(rows + loop_rows, "squeezenet", squeezenet_comparisons),
            "",
        ]
    startup = extras.get("startup") or {}
    if startup:
        lines += [
            "## Cold start and idle memory (one model, the tiny one, 2 workers)",
            "",
            f"Median of {extras.get('startup_launches', 1)} launches each: cold start is launch to the first correct "
            "answer; idle RSS is every process of the server (JVM, frontend and workers) 3 s later.",
            "",
            "| server | cold start s | idle RSS MiB |",
            "|---|---|---|",
        ]
        for name, (cold, rss) in startup.items():
            lines.append(f"| {name} | {cold:.2f} | {rss:,.0f} |")
        lines.append("")
        ours, theirs = startup.get("DMS"), startup.get(STARTUP_PEER)
        if ours and theirs:
            lines += [
                f"DMS ÷ {STARTUP_PEER}: cold start {ours[0] / theirs[0]:.2f}, idle RSS {ours[1] / theirs[1]:.2f}.",
                "",
            ]
    lines.append(f"Chart: `{out.with_suffix('.png').name}`; every window's figures: `{out.with_suffix('.json').name}`.")
    out.write_text("\n".join(lines) + "\n")
    write_windows(out.with_suffix(".json"), rows, extras, machine, window)
    chart(out.with_suffix(".png"), rows)


def write_windows(path: Path, rows: list[Row], extras: dict[str, Any], machine: str, window: float) -> None:
    """Every measured window (scenario, server, concurrency, round, requests, percentiles, CPU), and the in-process
    loop's and start-up's figures: the data the Markdown's medians and ratios come from."""
    windows = [
        {
            "scenario": row.scenario,
            "server": row.label,
            "concurrency": row.concurrency,
            "round": row.round_index,
            **asdict(row.result),
            "rps": row.result.rps,
            "cpu_us_per_request": row.cpu_us_per_request,
        }
        for row in rows
    ]
    startup = {
        name: {"cold_start_s": cold, "idle_rss_mib": rss} for name, (cold, rss) in (extras.get("startup") or {}).items()
    }
    record = {
        "machine": machine,
        "window_s": window,
        "windows": windows,
        "in_process_images_per_s": extras.get("in_process_images_per_s") or [],
        "startup_medians": startup,
    }
    path.write_text(json.dumps(record, indent=1) + "\n")


def chart(path: Path, rows: list[Row]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = medians(rows, "tiny")
    if not stats:
        return
    concurrencies = sorted({c for by_c in stats.values() for c in by_c})
    figure, (throughput, latency) = plt.subplots(1, 2, figsize=(13, 5))
    width = 0.8 / max(1, len(stats))
    for index, (label, by_c) in enumerate(stats.items()):
        xs = [i + index * width for i in range(len(concurrencies))]
        throughput.bar(xs, [by_c.get(c, {}).get("rps", 0) for c in concurrencies], width, label=label)
        latency.bar(xs, [by_c.get(c, {}).get("p99", 0) for c in concurrencies], width, label=label)
    for axis, title in ((throughput, "requests/s (higher is better)"), (latency, "p99 latency ms (lower is better)")):
        axis.set_xticks([i + 0.4 - width / 2 for i in range(len(concurrencies))], [f"c={c}" for c in concurrencies])
        axis.set_title(title)
    throughput.legend(fontsize=7)
    figure.suptitle("Tiny model: DMS, peers and the bare ceiling, side by side")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
