"""Two builds (or two settings) of DMS side by side: is a change faster, on a host whose speed drifts by ±30 %?

    git worktree add /tmp/dms-base HEAD            # the build to compare against
    python -m bench.ab --b-src /tmp/dms-base/src   # A: this tree, B: that one
    python -m bench.ab --b-src /tmp/dms-base/src --paths oip-grpc --concurrency 1,16 --rounds 5
    python -m bench.ab --b-args "--grpc-server grpcio" --paths oip-grpc   # one tree, two settings
    python -m bench.ab --a-args "--frontends 2" --a-config '{"initial_workers": 1}'   # 2 x 1 worker vs 1 x 2

Both servers run at once with the tiny ONNX model (tensor handler, 2 workers, batch 8 / 5 ms) and
take turns under wrk or h2load (pinned to core 1), in short windows, A first in odd rounds and B first
in even ones, so that a slow spell of the host falls on both. It prints, per path and concurrency,
each build's median req/s, p50 and p99, CPU per request and mean batch, and the ratio A/B.
Every answer is checked, as in ``bench.profile``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import tempfile
from pathlib import Path

from bench.harness.servers import Server
from bench.profile import PATHS, Window, loads, measure, tiny_server


def summary(windows: list[Window]) -> str:
    """Medians of one build's windows at one path and concurrency."""

    med = statistics.median
    return (
        f"{med(w.result.rps for w in windows):8,.0f} req/s  p50 {med(w.result.p50_ms for w in windows):6.2f}  "
        f"p99 {med(w.result.p99_ms for w in windows):6.2f} ms  "
        f"CPU {med(w.frontend_us + w.workers_us for w in windows):5.0f} µs/req  "
        f"batch {med(w.mean_batch for w in windows):4.1f}"
    )


def start(name: str, work: Path, env: dict[str, str], serve_args: list[str], config: dict[str, object]) -> Server:
    server = tiny_server(work, config)
    server.name = name
    server.env.update(env)
    server.start += serve_args
    server.launch()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--b-src", type=Path, help="the src/ folder of build B (put first on its path) [this tree]")
    parser.add_argument("--a-args", default="", help="extra `dms serve` arguments for A")
    parser.add_argument("--b-args", default="", help="extra `dms serve` arguments for B")
    parser.add_argument("--a-config", type=json.loads, default={}, help="model config entries for A, as JSON")
    parser.add_argument("--b-config", type=json.loads, default={}, help="model config entries for B, as JSON")
    parser.add_argument("--paths", default="predictions,oip-grpc", help=f"comma-separated, of {', '.join(PATHS)}")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    b_src = (args.b_src or Path(__file__).resolve().parent.parent / "src").resolve()
    if not (b_src / "dms" / "__init__.py").is_file():
        parser.error(f"{b_src} holds no dms package")
    if args.b_src is None and (args.a_args, args.a_config) == (args.b_args, args.b_config):
        parser.error("A and B would be the same: give --b-src, or different --a-args / --b-args / configs")
    work = Path(tempfile.mkdtemp(prefix="dms-ab-"))
    servers: list[Server] = []
    try:
        sides = (("A", {}, args.a_args, args.a_config), ("B", {"PYTHONPATH": str(b_src)}, args.b_args, args.b_config))
        for name, env, serve_args, config in sides:
            (work / name).mkdir()
            servers.append(start(name, work / name, env, shlex.split(serve_args), config))
        runs = [loads(server, work / server.name) for server in servers]
        paths = [path for path in args.paths.split(",") if path]
        levels = [int(level) for level in args.concurrency.split(",")]
        samples: dict[tuple[str, str, int], list[Window]] = {
            (s.name, p, c): [] for s in servers for p in paths for c in levels
        }
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
                        window = measure(server, run[path], concurrency, args.seconds)
                        samples[server.name, path, concurrency].append(window)
            print(f"round {round_number + 1} of {args.rounds} done", flush=True)
        for path in paths:
            for concurrency in levels:
                a, b = samples["A", path, concurrency], samples["B", path, concurrency]
                a_rps, b_rps = (statistics.median(w.result.rps for w in windows) for windows in (a, b))
                ratio = a_rps / max(1e-9, b_rps)
                print(f"\n{path}, c={concurrency}: A/B = {ratio:.2f}")
                print(f"  A (this tree {args.a_args} {args.a_config or ''})  {summary(a)}")
                print(f"  B ({b_src} {args.b_args} {args.b_config or ''})  {summary(b)}")
    finally:
        for server in servers:
            server.stop()


if __name__ == "__main__":
    main()
