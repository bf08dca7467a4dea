"""Two builds of DMS side by side: is a change faster, on a host whose speed drifts by ±30 %?

    git worktree add /tmp/dms-base HEAD            # the build to compare against
    python -m bench.ab --b-src /tmp/dms-base/src   # A: this tree, B: that one
    python -m bench.ab --b-src /tmp/dms-base/src --paths oip-grpc --concurrency 1,16 --rounds 5

Both servers run at once with the tiny ONNX model (tensor handler, 2 workers, batch 8 / 5 ms) and
take turns under wrk or h2load (pinned to core 1), in short windows, A first in odd rounds and B first
in even ones, so that a slow spell of the host falls on both. It prints, per path and concurrency,
each build's median req/s, p50 and p99, CPU per request and mean batch, and the ratio A/B.
Every answer is checked, as in ``bench.profile``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench.harness import setups
from bench.harness.servers import Server, cpu_seconds_of
from bench.profile import PATHS, Load, batches, loads


@dataclass
class Sample:
    rps: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    batch: list[float] = field(default_factory=list)

    def line(self) -> str:
        med = statistics.median
        return (
            f"{med(self.rps):8,.0f} req/s  p50 {med(self.p50_ms):6.2f}  p99 {med(self.p99_ms):6.2f} ms  "
            f"CPU {med(self.cpu_us):5.0f} µs/req  batch {med(self.batch):4.1f}"
        )


def start(name: str, work: Path, env: dict[str, str]) -> Server:
    onnx_file = setups.write_tiny_onnx(work / "tiny.onnx")
    config = {"initial_workers": 2, "batch_size": 8, "max_batch_delay_ms": 5}
    server = setups.dms_server(work, {"lin": ("tensor", onnx_file, config)}, probe="lin")
    server.name = name
    server.env.update(env)
    server.launch()
    return server


def measure(server: Server, run: Load, concurrency: int, seconds: float, sample: Sample) -> None:
    assert server.process is not None
    processes = [psutil.Process(server.process.pid), *psutil.Process(server.process.pid).children(recursive=True)]
    cpu_before, (batched_before, count_before) = cpu_seconds_of(processes), batches(server)
    result = run(concurrency, seconds)
    cpu_s = cpu_seconds_of(processes) - cpu_before
    batched_after, count_after = batches(server)
    assert result.bad == 0 and result.socket_errors == 0, f"{server.name}: {result}"
    sample.rps.append(result.rps)
    sample.p50_ms.append(result.p50_ms)
    sample.p99_ms.append(result.p99_ms)
    sample.cpu_us.append(cpu_s * 1e6 / max(1, result.requests))
    sample.batch.append((batched_after - batched_before) / max(1.0, count_after - count_before))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--b-src", type=Path, required=True, help="the src/ folder of build B (put first on its path)")
    parser.add_argument("--paths", default="predictions,oip-grpc", help=f"comma-separated, of {', '.join(PATHS)}")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    b_src = args.b_src.resolve()
    if not (b_src / "dms" / "__init__.py").is_file():
        parser.error(f"{b_src} holds no dms package")
    work = Path(tempfile.mkdtemp(prefix="dms-ab-"))
    servers: list[Server] = []
    try:
        for name, env in (("A", {}), ("B", {"PYTHONPATH": str(b_src)})):
            (work / name).mkdir()
            servers.append(start(name, work / name, env))
        runs = [loads(server, work / server.name) for server in servers]
        paths = [path for path in args.paths.split(",") if path]
        levels = [int(level) for level in args.concurrency.split(",")]
        samples = {(s.name, p, c): Sample() for s in servers for p in paths for c in levels}
        for path in paths:
            for run in runs:
                run[path](16, 2)  # warm-up
        for round_number in range(args.rounds):
            order = list(zip(runs, servers, strict=True))
            if round_number % 2:
                order.reverse()
            for path in paths:
                for concurrency in levels:
                    for run, server in order:
                        measure(server, run[path], concurrency, args.seconds, samples[server.name, path, concurrency])
            print(f"round {round_number + 1} of {args.rounds} done", flush=True)
        for path in paths:
            for concurrency in levels:
                a, b = samples["A", path, concurrency], samples["B", path, concurrency]
                ratio = statistics.median(a.rps) / max(1e-9, statistics.median(b.rps))
                print(f"\n{path}, c={concurrency}: A/B = {ratio:.2f}")
                print(f"  A (this tree)  {a.line()}")
                print(f"  B ({b_src})  {b.line()}")
    finally:
        for server in servers:
            server.stop()


if __name__ == "__main__":
    main()
