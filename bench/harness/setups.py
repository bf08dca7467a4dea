"""The servers of each scenario, with the same model logic in each: archives, configs, command lines."""

from __future__ import annotations

import json
import random
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from bench.handlers.tiny_handler import ROW, WEIGHTS
from bench.harness import grpc_load
from bench.harness.grpc_load import GrpcTarget
from bench.harness.servers import Server

HANDLERS = Path(__file__).resolve().parent.parent / "handlers"
SQUEEZENET_OPTIONS = {
    "channel_order": "BGR",
    "resize": 256,
    "input_size": 224,
    "scale": 1.0,
    "mean": [103.939, 116.779, 123.68],
    "std": [1.0, 1.0, 1.0],
    "apply_softmax": False,
}
TINY_BODY = json.dumps([ROW]).encode()


_HANDED_OUT: set[int] = set()
"""Ports given to a server in this run: never given again, even once free (a server may still be letting go)."""


def free_port() -> int:
    """A free port below the ephemeral range: MMS refuses ports it considers invalid, such as 42513."""
    for _ in range(1000):
        port = random.randint(20000, 30000)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free port between 20000 and 30000")


def write_tiny_onnx(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(WEIGHTS, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def dms_server(work: Path, models: dict[str, tuple[str, Path | None, dict[str, object]]], probe: str) -> Server:
    """One DMS server; ``models`` maps a name to (handler, serialized file, model config)."""
    from dms.archive.writer import ArchiveSpec, write_archive

    folder = work / "dms"
    store = folder / "store"
    store.mkdir(parents=True, exist_ok=True)
    names = []
    for name, (handler, serialized, config) in models.items():
        config_file = folder / f"{name}.yaml"
        config_file.write_text(yaml.safe_dump(config))
        extra = (
            [serialized.parent / "synset.txt"] if serialized and (serialized.parent / "synset.txt").is_file() else []
        )
        spec = ArchiveSpec(
            model_name=name,
            version="1.0",
            handler=handler,
            serialized_file=serialized,
            config_file=config_file,
            extra_files=extra,
        )
        write_archive(spec, store, force=True)
        names.append(f"{name}={name}.mar")
    return dms_serving(folder, store, names, probe)


def dms_serving(folder: Path, store: Path, names: list[str], probe: str, probe_body: bytes = TINY_BODY) -> Server:
    """A DMS server on free ports serving ``names`` (``name=archive``) from ``store``, its state under ``folder``;
    it counts as started once ``/predictions/{probe}`` answers ``probe_body``."""
    port = free_port()
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    start = [
        sys.executable,
        "-m",
        "dms",
        "serve",
        *("--model-store", str(store), "--models", *names),
        *("--inference-address", f"127.0.0.1:{port}", "--management-address", addresses[0]),
        *("--metrics-address", addresses[1], "--grpc-address", addresses[2]),
        *("--state-dir", str(folder / "state"), "--no-default-model", "--no-snapshot", "--no-access-log"),
    ]
    return Server(
        name="DMS",
        start=start,
        probe_url=f"http://127.0.0.1:{port}/predictions/{probe}",
        probe_body=probe_body,
        probe_type="application/json",
        marker=str(folder),
        cwd=folder,
        env={"DMS_ARCHIVE_CACHE_DIR": str(folder / "cache")},
    )


def dms_samples(server: Server, name: str, *label_parts: str) -> list[tuple[str, float]]:
    """A DMS server's ``name`` samples (the line, the value) whose labels contain every one of ``label_parts``."""
    import httpx

    address = server.start[server.start.index("--metrics-address") + 1]
    found = []
    for line in httpx.get(f"http://{address}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + "{") and all(part in line for part in label_parts):
            found.append((line, float(line.rsplit(" ", 1)[1])))
    return found


def dms_metric(server: Server, name: str, *label_parts: str) -> float:
    """The sum of a DMS server's ``name`` samples whose labels contain every one of ``label_parts``."""
    return sum(value for _, value in dms_samples(server, name, *label_parts))


def dms_grpc_address(server: Server) -> str:
    return server.start[server.start.index("--grpc-address") + 1]


def dms_grpc_target(server: Server, model: str, input_name: str) -> GrpcTarget:
    """ModelInfer on the tiny model's row, checked once against numpy through grpcio."""
    address = dms_grpc_address(server)
    message = grpc_load.infer_message(model, input_name, [ROW])
    np.testing.assert_array_equal(grpc_load.probe(address, message), tiny_reference())

    def failed_calls() -> float:
        # Calls the client cancelled are not failures: h2load drops the calls in flight when a window ends.
        return sum(
            value
            for line, value in dms_samples(server, "dms_requests_total", 'transport="v2-grpc"')
            if 'outcome="success"' not in line and 'code="CANCELLED"' not in line
        )

    return GrpcTarget(f"http://{address}", message, failed_calls)


def grpc_ceiling_server(work: Path) -> tuple[Server, GrpcTarget]:
    """The gRPC ceiling (bench/handlers/grpc_ceiling.py, 2 processes) and its ModelInfer target.

    It has no metrics to count failed calls, so its answers are checked by the probe only; it has no
    error path either (the matmul of a fixed row).
    """
    import grpc

    folder = work / "grpc-ceiling"
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    address = f"127.0.0.1:{port}"
    message = grpc_load.infer_message("tiny", "x", [ROW])

    def answers() -> bool:
        try:
            return bool(np.array_equal(grpc_load.probe(address, message), tiny_reference()))
        except grpc.RpcError:
            return False

    server = Server(
        name="gRPC ceiling",
        start=[sys.executable, "-m", "bench.handlers.grpc_ceiling", str(port), "2"],
        probe_url=f"grpc://{address}",
        probe_body=b"",
        probe_type="",
        marker=f"grpc_ceiling {port}",
        cwd=folder,
        env={"PYTHONPATH": str(HANDLERS.parent.parent)},
        answers=answers,
    )
    return server, GrpcTarget(f"http://{address}", message, lambda: 0.0)


def bare_server(work: Path) -> Server:
    folder = work / "bare"
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    repo = HANDLERS.parent.parent
    start = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.handlers.bare_app:app",
        *("--host", "127.0.0.1", "--port", str(port), "--workers", "2"),
        *("--http", "httptools", "--loop", "uvloop", "--no-access-log", "--log-level", "warning"),
        *("--app-dir", str(repo)),
    ]
    return Server(
        name="bare ceiling",
        start=start,
        probe_url=f"http://127.0.0.1:{port}/predictions/tiny",
        probe_body=TINY_BODY,
        probe_type="application/json",
        marker=f"--port {port}",
        cwd=folder,
        env={"PYTHONPATH": str(repo)},
    )


def torchserve_server(
    work: Path,
    bin_dir: Path,
    name: str,
    handler: Path,
    extra: list[Path],
    config: dict[str, object],
    probe: bytes,
    probe_type: str,
) -> Server:
    folder = work / f"torchserve-{name}"
    store = folder / "store"
    store.mkdir(parents=True, exist_ok=True)
    shutil.copy(handler, folder / handler.name)
    (folder / "model-config.yaml").write_text(yaml.safe_dump(config))
    archive = [
        str(bin_dir / "torch-model-archiver"),
        *("--model-name", name, "--version", "1.0", "--handler", handler.name),
        *("--config-file", "model-config.yaml", "--export-path", str(store), "--force"),
    ]
    if extra:
        archive += ["--extra-files", ",".join(str(p) for p in extra)]
    subprocess.run(archive, cwd=folder, check=True, capture_output=True, timeout=300)
    ports = [free_port() for _ in range(6)]
    (folder / "config.properties").write_text(
        "\n".join(
            [
                f"inference_address=http://127.0.0.1:{ports[0]}",
                f"management_address=http://127.0.0.1:{ports[1]}",
                f"metrics_address=http://127.0.0.1:{ports[2]}",
                # Its own gRPC ports and worker socket names (/tmp/.ts.sock.<port>), so that two
                # TorchServes (batch 8 and batch 16) can run side by side.
                f"grpc_inference_port={ports[3]}",
                f"grpc_management_port={ports[4]}",
                f"initial_worker_port={ports[5]}",
                f"model_store={store}",
                f"load_models={name}={name}.mar",
                "async_logging=true",
                "disable_token_authorization=true",
                "",
            ]
        )
    )
    start = [
        str(bin_dir / "torchserve"),
        *("--start", "--foreground", "--ncs", "--disable-token-auth"),
        *("--ts-config", str(folder / "config.properties"), "--model-store", str(store)),
    ]
    return Server(
        name="TorchServe 0.12",
        start=start,
        probe_url=f"http://127.0.0.1:{ports[0]}/predictions/{name}",
        probe_body=probe,
        probe_type=probe_type,
        marker=str(folder),
        cwd=folder,
        env=_peer_env(bin_dir, folder),
    )


def _peer_env(bin_dir: Path, folder: Path) -> dict[str, str]:
    """TorchServe and MMS both keep a pid file in the temp folder: one each, so they can run side by side."""
    (folder / "tmp").mkdir(exist_ok=True)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "LOG_LOCATION": str(folder / "logs"), "TMPDIR": str(folder / "tmp")}


def mms_server(work: Path, bin_dir: Path) -> Server:
    folder = work / "mms"
    source = folder / "model"
    store = folder / "store"
    source.mkdir(parents=True, exist_ok=True)
    store.mkdir(parents=True, exist_ok=True)
    shutil.copy(HANDLERS / "tiny_handler.py", source / "tiny_handler.py")
    subprocess.run(
        [
            str(bin_dir / "model-archiver"),
            *("--model-name", "tiny", "--model-path", str(source), "--handler", "tiny_handler:handle"),
            *("--runtime", "python3", "--export-path", str(store), "--force"),
        ],
        cwd=folder,
        check=True,
        capture_output=True,
        timeout=300,
    )
    ports = [free_port() for _ in range(2)]
    (folder / "config.properties").write_text(
        f"inference_address=http://127.0.0.1:{ports[0]}\nmanagement_address=http://127.0.0.1:{ports[1]}\n"
        "default_workers_per_model=2\n"
    )
    start = [
        str(bin_dir / "multi-model-server"),
        *("--start", "--foreground", "--mms-config", str(folder / "config.properties")),
        *("--model-store", str(store), "--models", "tiny=tiny.mar"),
    ]
    return Server(
        name="MMS 1.1",
        start=start,
        probe_url=f"http://127.0.0.1:{ports[0]}/predictions/tiny",
        probe_body=TINY_BODY,
        probe_type="application/json",
        marker=str(folder),
        cwd=folder,
        env=_peer_env(bin_dir, folder),
    )


def tiny_reference() -> np.ndarray:
    return np.asarray([ROW], dtype=np.float32) @ WEIGHTS
