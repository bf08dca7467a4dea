"""CPU per unary gRPC call through DMS's HTTP/2 stack alone, in one process: a measure the host's noise barely moves.

    python -m bench.grpc_transport                          # this tree
    python -m bench.grpc_transport --b-src /tmp/dms-base/src --rounds 9   # A/B against another build

A load test on this 2-core host swings by 30 % from one window to the next, which hides a change of a
few microseconds per call. This drives the same objects a server does - ``GrpcConnection`` (DMS's HTTP/2
connection over zttp, ``dms.grpc.connection``; for a build before it, uvicorn's protocol with its ASGI app)
and ``InferenceServicer`` - from a zttp client in the same process, through an
in-memory transport: ``--concurrency`` calls are opened at once on one connection, the event loop runs
until every answer's trailers are back, and so on. The data plane answers a fixed message at once, so
the figure is the transport's and the gRPC layer's CPU per call (client side included, a few µs, and
the servicer's metrics), with no batcher, worker or model.
CPU time is the process's (``time.process_time``), so time the host gives to other processes does not
count. With ``--b-src`` each round measures this tree and the other build in turn (each in its own
subprocess), alternating which goes first, and the medians and their ratio are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
INFER_PATH = b"/inference.GRPCInferenceService/ModelInfer"
REQUEST_HEADERS = [(b"content-type", b"application/grpc"), (b"te", b"trailers"), (b"user-agent", b"bench")]
REQUEST = b"\n\x03lin" + b"\x12\x011" + b"\x1a\x04id-1" + b"\x3a\x40" + bytes(64)
"""A ModelInferRequest: model "lin", version "1", id "id-1", 64 bytes of raw input (the server reads only
the routing fields; the data plane here answers without looking)."""
ANSWER = b"\n\x03lin" + bytes(80)


class MemoryTransport:
    """The transport methods uvicorn's protocol and the write coalescing call, writes kept in a list."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8001), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


class InstantDataPlane:
    """What ``InferenceServicer`` needs of the data plane, answering every call at once."""

    def __init__(self) -> None:
        from dms.settings import ServerSettings

        self.settings = ServerSettings()

    def submit(self, name: str, version: str | None, item: Any, reader: Any = None) -> asyncio.Future[Any]:
        from dms.messages import ResponseItem

        future = asyncio.get_running_loop().create_future()
        future.set_result(ResponseItem(200, ANSWER, "application/grpc", batch_size=1))
        return future

    def version_of(self, name: str, version: str | None) -> str:
        return version or "1"


def server_connection(lean: bool) -> tuple[Any, Any, int]:
    """A server-side connection of this build's gRPC port (``dms.grpc.connection``), its ``frame`` function and its
    stream cap; for an older build, uvicorn's protocol as its ``--grpc-server uvicorn`` made it."""
    from dms.grpc.servicer import InferenceServicer, rpc_methods
    from dms.observability.metrics import ServerMetrics

    servicer = InferenceServicer(InstantDataPlane(), ServerMetrics(), None)  # type: ignore[arg-type]
    try:
        from dms.grpc.call_core import frame
        from dms.grpc.connection import STREAMS_PER_CONNECTION
        from dms.grpc.server import GrpcServer
    except ImportError:  # a build from before DMS's own gRPC connections: uvicorn's protocol and its ASGI app
        return old_server_connection(servicer, rpc_methods, lean)
    return GrpcServer(servicer, 1 << 22).connection(), frame, STREAMS_PER_CONNECTION


def old_server_connection(servicer: Any, rpc_methods: Any, lean: bool) -> tuple[Any, Any, int]:
    import uvicorn
    from dms.grpc.h2 import GrpcApp, frame  # type: ignore[import-not-found]
    from dms.grpc.h2_connection import STREAMS_PER_CONNECTION, grpc_protocol  # type: ignore[import-not-found]
    from uvicorn.server import ServerState

    app = GrpcApp(rpc_methods(servicer), 1 << 22)
    protocol_class = grpc_protocol(servicer if lean else None, 1 << 22)
    config = uvicorn.Config(
        app, http=protocol_class, lifespan="off", access_log=False, log_config=None, proxy_headers=False
    )
    config.load()
    loop = asyncio.get_running_loop()
    return (
        protocol_class(config=config, server_state=ServerState(), app_state={}, _loop=loop),
        frame,
        STREAMS_PER_CONNECTION,
    )


async def measure(concurrency: int, calls: int, lean: bool = True) -> float:
    """CPU µs per call for ``calls`` calls, ``concurrency`` at a time, on one connection."""
    import zttp

    server, frame, streams_cap = server_connection(lean)
    if calls + concurrency >= streams_cap:
        raise SystemExit(f"at most {streams_cap - concurrency - 1} calls: one connection takes no more")
    transport = MemoryTransport()
    server.connection_made(transport)  # type: ignore[arg-type]
    client = zttp.Connection(zttp.CLIENT, protocol=zttp.HTTP2)
    client.initiate_connection()
    message = frame(REQUEST)

    def to_server() -> None:
        if data := client.data_to_send():
            server.data_received(data)

    def to_client() -> int:
        """Answers whose trailers arrived; a call that failed stops the measure (it would time an error path)."""
        data = b"".join(transport.written)
        transport.written.clear()
        ended = 0
        if data:
            client.receive_data(data)
            while (event := client.next_event()) is not zttp.NEED_DATA:
                if isinstance(event, zttp.EndOfMessage):
                    trailers = {bytes(name): bytes(value) for name, value in event.trailers or ()}
                    if trailers.get(b"grpc-status") != b"0":
                        raise RuntimeError(f"a call failed: {trailers or 'no trailers'}")
                    ended += 1
        return ended

    async def exchange(expected: int) -> None:
        to_server()
        ended = 0
        for _ in range(10_000):
            await asyncio.sleep(0)
            ended += to_client()
            if ended >= expected:
                to_server()  # window updates
                return
        raise RuntimeError(f"{expected - ended} of {expected} calls got no answer")

    await exchange(0)  # connection preface and settings
    started = time.process_time_ns()
    for _ in range(calls // concurrency):
        for _ in range(concurrency):
            stream = client.send_request(b"POST", INFER_PATH, b"HTTP/2", REQUEST_HEADERS)
            stream.send_data(message)
            stream.end_message()
        await exchange(concurrency)
    return (time.process_time_ns() - started) / 1000 / (calls // concurrency * concurrency)


def run_here(concurrency: int, calls: int, repeats: int, lean: bool = True) -> list[float]:
    import uvloop

    uvloop.run(measure(concurrency, calls, lean))  # warm-up
    return [uvloop.run(measure(concurrency, calls, lean)) for _ in range(repeats)]


def run_build(src: Path, concurrency: int, calls: int, lean: bool) -> float:
    """One measurement of the build whose package is under ``src`` (a subprocess, ``src`` first on its path)."""
    code = (
        f"import sys; sys.path.insert(0, {str(src)!r}); sys.path.insert(1, {str(REPO)!r}); "
        "import dms; assert dms.__file__.startswith(sys.path[0]), dms.__file__; "
        "from bench.grpc_transport import run_here; "
        f"print(min(run_here({concurrency}, {calls}, 3, {lean})))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{src}: {done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight on the connection [16]")
    parser.add_argument("--calls", type=int, default=3000, help="calls per measurement [3000]")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--b-src", type=Path, help="the src/ folder of a build to compare with")
    args = parser.parse_args(argv)
    builds = {"A (this tree)": (REPO / "src", True)}
    if args.b_src is not None:
        builds[f"B ({args.b_src})"] = (args.b_src.resolve(), True)
    results: dict[str, list[float]] = {label: [] for label in builds}
    for round_index in range(args.rounds):
        order = list(builds) if round_index % 2 == 0 else list(reversed(builds))
        for label in order:
            src, lean = builds[label]
            results[label].append(run_build(src, args.concurrency, args.calls, lean))
    for label, values in results.items():
        rounds = ", ".join(f"{value:.1f}" for value in values)
        print(f"{label}: {statistics.median(values):.1f} µs CPU per call (rounds: {rounds})")
    if len(builds) == 2:
        a, b = (statistics.median(values) for values in results.values())
        print(f"A/B CPU per call = {a / b:.2f}")


if __name__ == "__main__":
    main()
