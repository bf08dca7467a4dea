"""Workers as Ray actors against local worker processes, on one machine: what Ray costs.

    python -m bench.ray_workers                       # 5 interleaved rounds of 10 s at c=16 (and c=1)
    python -m bench.ray_workers --rounds 3 --seconds 4

A one-node Ray cluster (``ray.cluster_utils``, started and stopped by this process) and two ``dms serve``
processes with the same SqueezeNet archive, 2 workers each, batch 4 / 5 ms: one with local workers, one with
``--ray-address``. They take turns under wrk (pinned to core 1) with the two photos, every answer checked, A
first in odd rounds and B first in even ones. Printed: each side's median req/s, p50, p99, CPU per request
(the frontend; for the Ray side also everything of the cluster: its actors and its daemons), the ratio, each
side's cold start (``dms serve`` to the first kitten answered), and what one actor call costs a driver on its
own: the round trip of a 100 KB batch frame to an actor that answers at once, from an asyncio loop as the
server makes it, against the same bytes through a local worker's socket pair.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import psutil

from bench.harness import load, setups
from bench.harness.servers import Server
from bench.run import SHARED, run_load

CALLS = 2000


def cpu_of(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def cluster_processes() -> list[psutil.Process]:
    """This process's descendants that are not a DMS frontend: the Ray cluster (daemons and actors)."""
    return [p for p in psutil.Process().children(recursive=True) if "dms serve" not in " ".join(_cmdline(p))]


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


class Echo:
    def echo(self, frame: bytes) -> bytes:
        return frame


async def actor_round_trips(frame: bytes) -> float:
    import ray

    actor = ray.remote(Echo).remote()
    await actor.echo.remote(b"")
    began = time.perf_counter()
    for _ in range(CALLS):
        await actor.echo.remote(frame)
    elapsed = time.perf_counter() - began
    ray.kill(actor)
    return elapsed / CALLS * 1e6


async def socket_round_trips(frame: bytes) -> float:
    """The same frame through a socket pair to a thread that echoes it: a local worker's transport, no model."""
    import socket
    import threading

    from dms.messages import HEADER

    ours, theirs = socket.socketpair()

    def echo() -> None:
        while header := theirs.recv(HEADER.size, socket.MSG_WAITALL):
            (size,) = HEADER.unpack(header)
            theirs.sendall(header + theirs.recv(size, socket.MSG_WAITALL))

    threading.Thread(target=echo, daemon=True).start()
    reader, writer = await asyncio.open_connection(sock=ours)
    message = HEADER.pack(len(frame)) + frame
    began = time.perf_counter()
    for _ in range(CALLS):
        writer.write(message)
        await reader.readexactly(len(message))
    elapsed = time.perf_counter() - began
    writer.close()
    theirs.close()
    return elapsed / CALLS * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    import ray
    import uvloop
    from ray.cluster_utils import Cluster

    model = SHARED / "models" / "squeezenet" / "squeezenet_v1.1.onnx"
    images = [(SHARED / "images" / name).read_bytes() for name in ("kitten.jpg", "dog.jpg")]
    markers = [b"Egyptian cat", b"Great Pyrenees"]
    work = Path(tempfile.mkdtemp(prefix="dms-ray-bench-"))
    config = {"initial_workers": 2, "batch_size": 4, "max_batch_delay_ms": 5, "handler": setups.SQUEEZENET_OPTIONS}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "object_store_memory": 200_000_000, "include_dashboard": False},
    )
    servers: list[Server] = []
    try:
        for name, extra in (("local", []), ("ray", ["--ray-address", cluster.address])):
            (work / name).mkdir()
            server = setups.dms_server(work / name, {"squeezenet": ("image_classifier", model, config)}, "squeezenet")
            server.name, server.probe_body, server.probe_type = name, images[0], "image/jpeg"
            server.start += extra
            server.launch()
            servers.append(server)
            print(f"{name}: cold start {server.cold_start_s:.2f} s", flush=True)
        targets = [load.Target(s.probe_url, images, "image/jpeg", markers, whole=False) for s in servers]
        for target in targets:
            run_load(target, 16, 5, work)
        results: dict[tuple[str, int], list[tuple[float, float, float, float, float]]] = {}
        for round_index in range(args.rounds):
            order = list(zip(servers, targets, strict=True))
            if round_index % 2:
                order.reverse()
            for concurrency in (16, 1):
                for server, target in order:
                    assert server.process is not None
                    front = psutil.Process(server.process.pid)
                    locals_ = front.children(recursive=True)
                    rest = locals_ if server.name == "local" else cluster_processes()
                    front_before, rest_before = cpu_of([front]), cpu_of(rest)
                    result = run_load(target, concurrency, args.seconds, work)
                    assert result.bad == 0 and result.socket_errors == 0, f"{server.name}: {result}"
                    per = 1e6 / max(1, result.requests)
                    row = (
                        result.rps,
                        result.p50_ms,
                        result.p99_ms,
                        (cpu_of([front]) - front_before) * per,
                        (cpu_of(rest) - rest_before) * per,
                    )
                    results.setdefault((server.name, concurrency), []).append(row)
            print(f"round {round_index + 1} of {args.rounds} done", flush=True)
        med = statistics.median
        for concurrency in (16, 1):
            local, on_ray = results["local", concurrency], results["ray", concurrency]
            ratio = med(r[0] for r in on_ray) / med(r[0] for r in local)
            print(f"\nSqueezeNet JPEGs, c={concurrency}: Ray / local = {ratio:.2f}")
            for name, rows in (("local workers", local), ("Ray actors", on_ray)):
                print(
                    f"  {name:<14} {med(r[0] for r in rows):7.1f} req/s  p50 {med(r[1] for r in rows):6.2f}  "
                    f"p99 {med(r[2] for r in rows):6.2f} ms  CPU: frontend {med(r[3] for r in rows):5.0f} µs/req, "
                    f"workers{' and Ray' if name == 'Ray actors' else ''} {med(r[4] for r in rows):6.0f} µs/req"
                )
        for server in servers:
            server.stop()
        servers.clear()
        ray.init(address=cluster.address, logging_level="WARNING")
        frame = images[0][:100_000].ljust(100_000, b"\0")
        actor_us = uvloop.run(actor_round_trips(frame))
        socket_us = uvloop.run(socket_round_trips(frame))
        print(f"\none call, 100 KB there and back: Ray actor {actor_us:.0f} µs, local worker socket {socket_us:.0f} µs")
        ray.shutdown()
    finally:
        for server in servers:
            server.stop()
        cluster.shutdown()


if __name__ == "__main__":
    main()
