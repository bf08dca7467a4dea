"""CPU per batch inside a worker, in one process: ``ModelService.run_batch`` on tiny ``/predictions`` requests.

    python -m bench.worker_batch                                   # this tree
    python -m bench.worker_batch --b-src /tmp/dms-base/src --rounds 7   # A/B against another build

A load test on this 2-core host swings by 30 % from one window to the next; this measures the worker's own
work on a batch (decoding each request, the handler, encoding each answer, the batch's bookkeeping) with no
socket, frontend or load generator: the tiny model's handler (``bench/handlers/tiny_handler.py``) on a batch
of ``--batch`` JSON rows, ``--batches`` times, best of ``--repeat``. With ``--b-src`` each round runs this tree
and the other build in turn, each in its own subprocess, alternating which goes first.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROW = [0.5 * k for k in range(16)]


def measure(batch_size: int, batches: int, repeat: int) -> float:
    """Best µs per batch of this interpreter's ``dms``."""
    from dms.messages import Batch, LoadModel, RequestItem
    from dms.worker.service import ModelService

    folder = Path(tempfile.mkdtemp(prefix="dms-worker-batch-"))
    shutil.copy(REPO / "bench" / "handlers" / "tiny_handler.py", folder / "tiny_handler.py")
    load = LoadModel("tiny", "1", str(folder), {"model": {"handler": "tiny_handler.py"}}, {}, batch_size, None, "w", 1)
    service = ModelService(load)
    body = json.dumps([ROW]).encode()
    streams = "stream" in RequestItem.__struct_fields__  # a build that can stream: each request may
    extra = {"stream": True} if streams else {}
    items = [
        RequestItem(f"r{i}", body, "application/json", [("content-type", "application/json")], [], **extra)
        for i in range(batch_size)
    ]
    batch = Batch(1, items)
    run = _runner(service, batch)
    for _ in range(batches // 4):
        run()
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time_ns()
        for _ in range(batches):
            run()
        best = min(best, (time.process_time_ns() - started) / batches / 1000)
    shutil.rmtree(folder, ignore_errors=True)
    return best


def _runner(service: object, batch: object) -> object:
    """What the worker's loop does per batch in this build (with an outlet where the build has them)."""
    run_batch = service.run_batch  # type: ignore[attr-defined]
    if "outlet" not in inspect.signature(run_batch).parameters:
        return lambda: run_batch(batch, set())
    import socket

    from dms.worker.__main__ import Channel, ChannelOutlet

    channel = Channel(socket.socketpair()[0])
    return lambda: run_batch(batch, set(), ChannelOutlet(channel, batch))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--b-src", type=Path, default=None, help="the src/ folder of build B")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batches", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(measure(args.batch, args.batches, args.repeat))
        return
    sides = {"A": str(REPO / "src")}
    if args.b_src is not None:
        sides["B"] = str(args.b_src.resolve())
    figures: dict[str, list[float]] = {side: [] for side in sides}
    for round_ in range(args.rounds):
        order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
        for side in order:
            env = {**os.environ, "PYTHONPATH": sides[side]}
            command = [sys.executable, "-m", "bench.worker_batch", "--one", "--batch", str(args.batch)]
            command += ["--batches", str(args.batches), "--repeat", str(args.repeat)]
            out = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, check=True).stdout
            figures[side].append(float(out.strip().splitlines()[-1]))
    for side, values in figures.items():
        print(f"{side} ({sides[side]}): {statistics.median(values):.1f} µs per batch of {args.batch}  {values}")
    if "B" in figures:
        print(f"A/B = {statistics.median(figures['A']) / statistics.median(figures['B']):.3f}")


if __name__ == "__main__":
    main()
