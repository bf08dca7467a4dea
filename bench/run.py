"""Benchmark DMS against TorchServe 0.12, MMS 1.1, the bare HTTP ceiling and an in-process loop, side by side.

    python -m bench.run                 # the full run (installs peers into throw-away venvs; ~20 min)
    python -m bench.run --smoke         # seconds per scenario, correctness only (CI runs this)
    python -m bench.run --no-peers      # DMS, the bare ceiling and the in-process loop only

Results go to bench/results/<date>.md and a PNG chart beside it (unless --smoke).
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil

from bench.harness import grpc_load, load, peers, setups
from bench.harness.report import IN_PROCESS_LOOP, STARTUP_PEER, Row, write_report
from bench.harness.servers import Server

ROOT = Path(__file__).resolve().parent
SHARED = ROOT.parent.parent / "shared"

TS_TINY_CONFIG = {"minWorkers": 2, "maxWorkers": 2, "batchSize": 8, "maxBatchDelay": 5}
DMS_TINY_BATCHING = {"initial_workers": 2, "batch_size": 16, "max_batch_delay_ms": 5}
"""DMS's best setting in the batching sweep on this machine (TorchServe is measured at 8 and 16)."""


@dataclass
class Plan:
    window_s: float
    warmup_s: float
    concurrencies: list[int]
    rounds: int
    peers: bool
    sweep: list[tuple[int, int]]


def plan_from(args: argparse.Namespace) -> Plan:
    if args.smoke:
        return Plan(1.0, 0.5, [1, 16], 1, args.peers, [(8, 5)])
    return Plan(args.window, 5.0, [1, 16, 64], args.rounds, args.peers, [(b, d) for b in (1, 4, 8, 16) for d in (1, 5)])


def tiny_target(server: Server, url: str, body: bytes, content_type: str, headers=()) -> load.Target:
    """Probe once, check the answer against numpy, and accept exactly that body from then on."""
    import httpx

    answer = httpx.post(url, content=body, headers={"Content-Type": content_type, **dict(headers)}, timeout=30)
    assert answer.status_code == 200, f"{server.name} {url}: {answer.status_code} {answer.text[:300]}"
    parsed = json.loads(answer.content)
    values = parsed["outputs"][0]["data"] if isinstance(parsed, dict) else parsed
    np.testing.assert_array_equal(np.asarray(values, dtype=np.float32).reshape(1, 4), setups.tiny_reference())
    return load.Target(url, [body], content_type, [answer.content], True, tuple(headers))


AnyTarget = load.Target | grpc_load.GrpcTarget


def run_load(target: AnyTarget, concurrency: int, seconds: float, work: Path) -> load.LoadResult:
    """wrk for HTTP targets, h2load for gRPC ones; wrk's script checks every answer, the server counts gRPC's."""
    if isinstance(target, grpc_load.GrpcTarget):
        return grpc_load.run_checked(target, concurrency, seconds, cpu=1)
    script = load.write_script(target, work / f"{abs(hash(target.url + target.content_type))}.lua")
    return load.run_wrk(script, target.url, concurrency, seconds, cpu=1)


def measure_window(
    server: Server,
    target: AnyTarget,
    label: str,
    concurrency: int,
    plan: Plan,
    work: Path,
    scenario: str,
    round_index: int,
) -> Row:
    """One load window against one target; a wrong, failed or non-2xx answer fails the run."""
    cpu_before = server.cpu_seconds()
    result = run_load(target, concurrency, plan.window_s, work)
    cpu = server.cpu_seconds() - cpu_before
    if result.bad or result.socket_errors:
        raise AssertionError(
            f"{label} c={concurrency}: {result.bad} wrong or non-2xx answers, {result.socket_errors} socket errors"
        )
    row = Row(scenario, label, concurrency, result, cpu / max(1, result.requests) * 1e6, round_index)
    print(
        f"  {label:<38} c={concurrency:<3} {result.rps:>9,.0f} req/s  p50 {result.p50_ms:6.2f} ms  "
        f"p99 {result.p99_ms:7.2f} ms  {row.cpu_us_per_request:7.0f} µs CPU/req",
        flush=True,
    )
    return row


def measure(
    server: Server,
    target: AnyTarget,
    label: str,
    plan: Plan,
    work: Path,
    rows: list[Row],
    scenario: str,
    round_index: int = 0,
) -> None:
    for concurrency in plan.concurrencies:
        rows.append(measure_window(server, target, label, concurrency, plan, work, scenario, round_index))


def warm(target: AnyTarget, seconds: float, work: Path) -> None:
    run_load(target, 16, seconds, work)


SAME_HANDLER = "DMS /predictions, same handler (batch 16 / 5 ms)"
SAME_HANDLER_FRONTENDS = "DMS /predictions, same handler, 2 frontends of 1 worker (batch 16 / 5 ms)"
ONNX_PREDICTIONS = "DMS /predictions (ONNX, tensor)"
OIP_JSON = "DMS OIP REST JSON (ONNX)"
OIP_BINARY = "DMS OIP REST binary (ONNX)"
OIP_GRPC = "DMS OIP gRPC (ONNX; DMS's HTTP/2, the default)"
OIP_GRPC_GRPCIO = "DMS OIP gRPC on grpcio (ONNX)"
SQUEEZENET_DMS = "DMS image_classifier"
SQUEEZENET_TORCHSERVE = "TorchServe 0.12 (same preprocessing)"
BARE_CEILING = "bare ceiling (uvicorn, 2 processes)"
GRPC_CEILING = "gRPC ceiling (grpcio aio, 2 processes)"
TORCHSERVE = "TorchServe 0.12 (batch {batch} / 5 ms)"
MMS = "MMS 1.1 (no batching)"
TINY_ORDER = [
    SAME_HANDLER,
    SAME_HANDLER_FRONTENDS,
    TORCHSERVE.format(batch=8),
    TORCHSERVE.format(batch=16),
    MMS,
    ONNX_PREDICTIONS,
    OIP_JSON,
    OIP_BINARY,
    OIP_GRPC,
    OIP_GRPC_GRPCIO,
    BARE_CEILING,
    GRPC_CEILING,
]
"""The order the tiny scenario's targets are loaded in, at each concurrency: the rows issue 5 compares sit
next to each other (DMS's same-handler row and its peers; the OIP rows and the ONNX ``/predictions`` row), so
that the windows a ratio divides are seconds apart, not minutes (this host's speed drifts within minutes)."""
PEERS = [TORCHSERVE.format(batch=8), TORCHSERVE.format(batch=16), MMS]
TINY_COMPARISONS = [
    ("DMS /predictions, same handler ÷ the best of TorchServe and MMS", SAME_HANDLER, PEERS),
    ("DMS, 2 frontends of 1 worker ÷ the best of TorchServe and MMS", SAME_HANDLER_FRONTENDS, PEERS),
    ("DMS, 2 frontends of 1 worker ÷ 1 frontend of 2 workers", SAME_HANDLER_FRONTENDS, [SAME_HANDLER]),
    ("DMS /predictions, same handler ÷ the bare ceiling", SAME_HANDLER, [BARE_CEILING]),
    ("DMS, 2 frontends of 1 worker ÷ the bare ceiling", SAME_HANDLER_FRONTENDS, [BARE_CEILING]),
    ("OIP REST JSON ÷ /predictions (both ONNX)", OIP_JSON, [ONNX_PREDICTIONS]),
    ("OIP REST binary ÷ /predictions (both ONNX)", OIP_BINARY, [ONNX_PREDICTIONS]),
    ("OIP gRPC ÷ /predictions (both ONNX)", OIP_GRPC, [ONNX_PREDICTIONS]),
    ("OIP gRPC on grpcio ÷ /predictions (both ONNX)", OIP_GRPC_GRPCIO, [ONNX_PREDICTIONS]),
]
"""(title, row, rows it is divided by: the best of them in each round) for the results' ratio table."""


def tiny_scenario(plan: Plan, work: Path, rows: list[Row], extras: dict[str, object]) -> None:
    onnx_file = setups.write_tiny_onnx(work / "tiny.onnx")
    batching = DMS_TINY_BATCHING
    handler = str(setups.HANDLERS / "tiny_handler.py")
    dms = setups.dms_server(
        work, {"tiny": (handler, None, batching), "lin": ("tensor", onnx_file, batching)}, probe="tiny"
    )
    servers: list[Server] = [dms]  # each stopped at the end, launched or not
    targets: dict[str, tuple[Server, AnyTarget]] = {}
    try:
        dms.launch()
        base = dms.probe_url.rsplit("/predictions/", 1)[0]
        header = json.dumps(
            {"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "parameters": {"binary_data_size": 64}}]}
        ).encode()
        binary = header + np.asarray([setups.ROW], dtype=np.float32).tobytes()
        oip_json = json.dumps({"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": setups.ROW}]})
        targets[SAME_HANDLER] = dms, tiny_target(dms, dms.probe_url, setups.TINY_BODY, "application/json")
        targets[ONNX_PREDICTIONS] = (
            dms,
            tiny_target(dms, f"{base}/predictions/lin", setups.TINY_BODY, "application/json"),
        )
        targets[OIP_JSON] = dms, tiny_target(dms, f"{base}/v2/models/lin/infer", oip_json.encode(), "application/json")
        targets[OIP_GRPC] = dms, setups.dms_grpc_target(dms, "lin", "x")
        targets[OIP_BINARY] = (
            dms,
            tiny_target(
                dms,
                f"{base}/v2/models/lin/infer",
                binary,
                "application/octet-stream",
                (("Inference-Header-Content-Length", str(len(header))),),
            ),
        )
        # The same model and handler with its two workers split over two frontends (``--frontends 2``).
        frontends_work = work / "frontends"
        frontends_work.mkdir()
        dms_frontends = setups.dms_server(
            frontends_work, {"tiny": (handler, None, {**batching, "initial_workers": 1})}, probe="tiny"
        )
        dms_frontends.start += ["--frontends", "2"]
        servers.append(dms_frontends)
        dms_frontends.launch()
        targets[SAME_HANDLER_FRONTENDS] = (
            dms_frontends,
            tiny_target(dms_frontends, dms_frontends.probe_url, setups.TINY_BODY, "application/json"),
        )
        grpcio_work = work / "grpcio"
        grpcio_work.mkdir()
        dms_grpcio = setups.dms_server(grpcio_work, {"lin": ("tensor", onnx_file, batching)}, probe="lin")
        dms_grpcio.start += ["--grpc-server", "grpcio"]
        servers.append(dms_grpcio)
        dms_grpcio.launch()
        targets[OIP_GRPC_GRPCIO] = dms_grpcio, setups.dms_grpc_target(dms_grpcio, "lin", "x")
        bare = setups.bare_server(work)
        servers.append(bare)
        bare.launch()
        targets[BARE_CEILING] = bare, tiny_target(bare, bare.probe_url, setups.TINY_BODY, "application/json")
        grpc_ceiling, grpc_ceiling_target = setups.grpc_ceiling_server(work)
        servers.append(grpc_ceiling)
        grpc_ceiling.launch()
        targets[GRPC_CEILING] = grpc_ceiling, grpc_ceiling_target
        if plan.peers:
            ts_bin = peers.torchserve_env(peers.VENVS)
            for batch in (8, 16):  # TorchServe at the best setting and at DMS's
                ts_work = work / f"ts-batch-{batch}"
                ts_work.mkdir()
                ts = setups.torchserve_server(
                    ts_work,
                    ts_bin,
                    "tiny",
                    setups.HANDLERS / "tiny_handler.py",
                    [],
                    {**TS_TINY_CONFIG, "batchSize": batch},
                    setups.TINY_BODY,
                    "application/json",
                )
                servers.append(ts)
                ts.launch()
                ts_target = tiny_target(ts, ts.probe_url, setups.TINY_BODY, "application/json")
                warm(ts_target, 30 if plan.window_s > 2 else 1, work)  # the JVM's JIT settles first
                targets[TORCHSERVE.format(batch=batch)] = ts, ts_target
            mms_bin = peers.mms_env(peers.VENVS)
            mms = setups.mms_server(work, mms_bin)
            servers.append(mms)
            mms.launch()
            mms_target = tiny_target(mms, mms.probe_url, setups.TINY_BODY, "application/json")
            warm(mms_target, 15 if plan.window_s > 2 else 1, work)
            targets[MMS] = mms, mms_target
        order = [label for label in TINY_ORDER if label in targets]
        for label in order:
            warm(targets[label][1], plan.warmup_s, work)
        for round_index in range(plan.rounds):
            print(f"tiny model, round {round_index + 1}", flush=True)
            # Every target at one concurrency before the next; every other round in reverse, so that no
            # target always follows a change of concurrency or another target's heaviest window.
            sequence = order if round_index % 2 == 0 else order[::-1]
            for concurrency in plan.concurrencies:
                for label in sequence:
                    server, target = targets[label]
                    rows.append(measure_window(server, target, label, concurrency, plan, work, "tiny", round_index))
        extras["tiny_order"] = order
        extras["comparisons"] = [
            (title, row, [d for d in divisors if d in targets])
            for title, row, divisors in TINY_COMPARISONS
            if row in targets and any(d in targets for d in divisors)
        ]
    finally:
        for server in servers:
            server.stop()


def startup_scenario(plan: Plan, work: Path, extras: dict[str, object]) -> None:
    """Cold start (launch to first correct answer) and idle RSS, each server with exactly one 2-worker tiny model."""
    handler = setups.HANDLERS / "tiny_handler.py"
    makers = {
        "DMS": lambda folder: setups.dms_server(folder, {"tiny": (str(handler), None, DMS_TINY_BATCHING)}, probe="tiny")
    }
    if plan.peers:
        ts_bin, mms_bin = peers.torchserve_env(peers.VENVS), peers.mms_env(peers.VENVS)
        makers[STARTUP_PEER] = lambda folder: setups.torchserve_server(
            folder, ts_bin, "tiny", handler, [], TS_TINY_CONFIG, setups.TINY_BODY, "application/json"
        )
        makers["MMS 1.1"] = lambda folder: setups.mms_server(folder, mms_bin)
    launches = 1 if plan.window_s < 2 else 3
    measured: dict[str, list[tuple[float, float]]] = {name: [] for name in makers}
    for attempt in range(launches):
        for name, make in makers.items():
            folder = work / f"startup-{attempt}-{name.split()[0]}"
            folder.mkdir(parents=True)
            server = make(folder)
            try:
                cold = server.launch()
                time.sleep(3)  # let every worker settle before reading memory
                measured[name].append((cold, server.rss_mib()))
            finally:
                server.stop()
            print(f"  {name:<38} cold start {cold:5.2f} s  idle RSS {measured[name][-1][1]:6.0f} MiB", flush=True)
    extras["startup"] = {
        name: (statistics.median(c for c, _ in values), statistics.median(r for _, r in values))
        for name, values in measured.items()
    }
    extras["startup_launches"] = launches


def sweep_scenario(plan: Plan, work: Path, rows: list[Row]) -> None:
    handler = str(setups.HANDLERS / "tiny_handler.py")
    for batch, delay in plan.sweep:
        folder = work / f"sweep-{batch}-{delay}"
        folder.mkdir()
        config = {"initial_workers": 2, "batch_size": batch, "max_batch_delay_ms": delay}
        server = setups.dms_server(folder, {"tiny": (handler, None, config)}, probe="tiny")
        try:
            server.launch()
            target = tiny_target(server, server.probe_url, setups.TINY_BODY, "application/json")
            warm(target, plan.warmup_s, folder)
            measure(server, target, f"DMS batch {batch} / {delay} ms", plan, folder, rows, "sweep")
        finally:
            server.stop()


def _loop_worker(images: list[bytes], seconds: float, model: str, counter) -> None:
    import onnxruntime

    from dms.handlers.imaging import ImageRecipe

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    recipe = ImageRecipe(setups.SQUEEZENET_OPTIONS, 40_000_000)
    name = session.get_inputs()[0].name
    done, index = 0, 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        array = recipe.array(images[index % len(images)])[None]
        scores = session.run(None, {name: array})[0].reshape(-1)
        np.argsort(-scores)[:5]
        done += 1
        index += 1
    with counter.get_lock():
        counter.value += done


def in_process_loop(images: list[bytes], seconds: float, model: Path, processes: int = 2) -> float:
    counter = multiprocessing.Value("i", 0)
    workers = [
        multiprocessing.Process(target=_loop_worker, args=(images, seconds, str(model), counter))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return counter.value / seconds


def squeezenet_scenario(plan: Plan, work: Path, rows: list[Row], extras: dict[str, object]) -> None:
    model = SHARED / "models" / "squeezenet" / "squeezenet_v1.1.onnx"
    photos = [SHARED / "images" / "kitten.jpg", SHARED / "images" / "dog.jpg"]
    if not model.is_file() or not all(p.is_file() for p in photos):
        print(f"SqueezeNet scenario skipped: {model} or the photos are missing", flush=True)
        return
    images = [p.read_bytes() for p in photos]
    markers = [b"Egyptian cat", b"Great Pyrenees"]
    folder = work / "squeezenet"
    folder.mkdir()
    config = {"initial_workers": 2, "batch_size": 4, "max_batch_delay_ms": 5, "handler": setups.SQUEEZENET_OPTIONS}
    dms = setups.dms_server(folder, {"squeezenet": ("image_classifier", model, config)}, probe="squeezenet")
    dms.probe_body, dms.probe_type = images[0], "image/jpeg"
    servers = []
    plan_c16 = Plan(plan.window_s, plan.warmup_s, [16], plan.rounds, plan.peers, [])
    try:
        dms.launch()
        servers.append((dms, SQUEEZENET_DMS))
        if plan.peers:
            ts_bin = peers.torchserve_env(peers.VENVS)
            ts = setups.torchserve_server(
                folder,
                ts_bin,
                "squeezenet",
                setups.HANDLERS / "squeezenet_ts_handler.py",
                [model, model.parent / "synset.txt"],
                {"minWorkers": 2, "maxWorkers": 2},
                images[0],
                "image/jpeg",
            )
            ts.launch()
            servers.append((ts, SQUEEZENET_TORCHSERVE))
        targets = [
            (s, label, load.Target(s.probe_url, images, "image/jpeg", markers, whole=False)) for s, label in servers
        ]
        for _, _, target in targets:
            warm(target, max(plan.warmup_s, 2 if plan.window_s < 2 else 15), folder)
        loops = []
        for round_index in range(plan.rounds):
            print(f"SqueezeNet, round {round_index + 1}", flush=True)
            loops.append(in_process_loop(images, plan.window_s, model))
            print(f"  in-process loop (2 processes)          {loops[-1]:>9,.1f} images/s", flush=True)
            for server, label, target in targets:
                measure(server, target, label, plan_c16, folder, rows, "squeezenet", round_index)
        extras["in_process_images_per_s"] = loops
        extras["squeezenet_comparisons"] = [
            ("DMS ÷ the in-process loop", SQUEEZENET_DMS, [IN_PROCESS_LOOP]),
            ("DMS ÷ TorchServe", SQUEEZENET_DMS, [SQUEEZENET_TORCHSERVE]),
        ]
    finally:
        for server, _ in servers:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a few seconds per scenario; correctness only")
    parser.add_argument("--no-peers", dest="peers", action="store_false", help="skip TorchServe and MMS")
    parser.add_argument("--window", type=float, default=15.0, help="seconds per measurement [15]")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds [2]")
    parser.add_argument("--scenarios", default="tiny,startup,squeezenet,sweep", help="comma-separated [all four]")
    parser.add_argument("--out", type=Path, help="report path [bench/results/<date>.md]")
    parser.add_argument("--workdir", type=Path, help="keep archives and server logs here [a temp folder]")
    args = parser.parse_args()
    plan = plan_from(args)
    peers.ensure_tools(java=plan.peers)
    rows: list[Row] = []
    extras: dict[str, object] = {}
    wanted = args.scenarios.split(",")
    with tempfile.TemporaryDirectory(prefix="dms-bench-") as temp:
        work = (args.workdir or Path(temp)) / "run"
        work.mkdir(parents=True)
        if "tiny" in wanted:
            tiny_scenario(plan, work, rows, extras)
        if "startup" in wanted:
            print("cold start and idle memory", flush=True)
            startup_scenario(plan, work, extras)
        if "squeezenet" in wanted:
            squeezenet_scenario(plan, work, rows, extras)
        if "sweep" in wanted:
            sweep_scenario(plan, work, rows)
    memory = psutil.virtual_memory().total / 2**30
    machine = f"{platform.machine()}, {psutil.cpu_count()} cores, {memory:.0f} GiB, {platform.platform()}"
    if args.smoke:
        print(f"smoke run passed: {len(rows)} measurements, every answer checked", flush=True)
        return
    out = args.out or ROOT / "results" / f"{datetime.date.today().isoformat()}.md"
    write_report(out, rows, extras, machine, plan.window_s, plan.rounds)
    print(f"wrote {out} and {out.with_suffix('.png')}", flush=True)


if __name__ == "__main__":
    main()
