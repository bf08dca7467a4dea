"""Servers shared by several end-to-end modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from dms.archive.writer import ArchiveSpec, write_archive
from tests.conftest import make_squeezenet_archive
from tests.e2e.test_tensor_handler import write_linear_archive
from tests.e2e.test_user_flow import SQUEEZENET_CONFIG
from tests.support import FIXTURES, running_server, shared_path

ECHO_CONFIG = """\
initial_workers: 1
batch_size: 4
inputs:
  - {name: x, datatype: FP32, shape: [-1, 3]}
outputs:
  - {name: out_x, datatype: FP32, shape: [-1, 3]}
"""


@pytest.fixture(scope="package")
def oip_server(tmp_path_factory: pytest.TempPathFactory):
    yield from _protocol_server(tmp_path_factory, [])


@pytest.fixture(scope="package")
def oip_server_grpcio(tmp_path_factory: pytest.TempPathFactory):
    """The same models, with gRPC served by grpcio instead of uvicorn's HTTP/2 (the default)."""
    yield from _protocol_server(tmp_path_factory, ["--grpc-server", "grpcio"])


def write_echo_archive(work: Path, store: Path) -> Path:
    """``echo`` 1.0 in ``store``: the protocol tests' custom handler (each input x back as out_x)."""
    (work / "echo.yaml").write_text(ECHO_CONFIG)
    spec = ArchiveSpec(
        model_name="echo", version="1.0", handler=str(FIXTURES / "echo_handler.py"), config_file=work / "echo.yaml"
    )
    return write_archive(spec, store)


def _protocol_server(tmp_path_factory: pytest.TempPathFactory, extra: list[str]):
    work = tmp_path_factory.mktemp("oip")
    store = work / "store"
    write_echo_archive(work, store)
    write_linear_archive(work, store, "initial_workers: 1\nbatch_size: 8\n")
    models = ["echo=echo.mar", "linear=linear.mar"]
    squeezenet = shared_path_or_none("models/squeezenet/squeezenet_v1.1.onnx")
    if squeezenet is not None:
        make_squeezenet_archive(squeezenet, store, SQUEEZENET_CONFIG)
        models.append("squeezenet=squeezenet.mar")
    with running_server(work, ["--model-store", str(store), "--models", *models, *extra]) as running:
        yield running


def shared_path_or_none(relative: str):
    try:
        return shared_path(relative)
    except pytest.skip.Exception:
        return None


def char_model_store(work: Path, models: dict[str, tuple[str, str]]) -> Path:
    """The test suite's generative model (``tests/fixtures/char_model.py``) saved in ``work``, packed once per
    name with its handler file and model config YAML (``models``: name -> (handler, config)) into ``work/store``;
    the weights' path (for the in-process model to compare with)."""
    import sys

    sys.path.insert(0, str(FIXTURES))
    from char_model import save

    weights = work / "char_model.npz"
    save(weights)
    store = work / "store"
    store.mkdir(exist_ok=True)
    for name, (handler, config) in models.items():
        config_file = work / f"{name}.yaml"
        config_file.write_text(config)
        spec = ArchiveSpec(
            model_name=name,
            version="1.0",
            handler=str(FIXTURES / handler),
            config_file=config_file,
            extra_files=[FIXTURES / "char_model.py", weights],
        )
        write_archive(spec, store, force=True)
    return weights
