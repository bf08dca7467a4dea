from __future__ import annotations

from pathlib import Path

import pytest

from dms.archive.writer import ArchiveSpec, write_archive
from tests.support import FIXTURES, RUNNING


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """A failing test's report ends with the log of every server still running, for what it said then."""
    report = yield
    if report.failed:
        for server in list(RUNNING):
            report.sections.append((f"dms server log ({server.inference_url}, last 200 lines)", server.log()))
    return report


def make_probe_archive(store: Path, name: str, version: str = "1.0", config: str = "") -> Path:
    """A probe-handler archive in ``store`` (file name ``{name}-{version}.mar``)."""
    store.mkdir(parents=True, exist_ok=True)
    work = store.parent / f".src-{store.name}-{name}-{version}"
    work.mkdir(parents=True, exist_ok=True)
    config_file = work / "model-config.yaml"
    config_file.write_text(config)
    spec = ArchiveSpec(
        model_name=name, version=version, handler=str(FIXTURES / "probe_handler.py"), config_file=config_file
    )
    built = write_archive(spec, work, force=True)
    target = store / f"{name}-{version}.mar"
    built.replace(target)
    return target


def make_squeezenet_archive(model: Path, store: Path, config: str) -> Path:
    """The shared SqueezeNet ONNX model, its labels and ``config`` archived as ``store/squeezenet.mar``."""
    work = store.parent / ".src-squeezenet"
    work.mkdir(parents=True, exist_ok=True)
    (work / "model-config.yaml").write_text(config)
    spec = ArchiveSpec(
        model_name="squeezenet",
        version="1.0",
        handler="image_classifier",
        serialized_file=model,
        config_file=work / "model-config.yaml",
        extra_files=[model.parent / "synset.txt"],
    )
    return write_archive(spec, store, force=True)


@pytest.fixture
def model_store(tmp_path: Path) -> Path:
    store = tmp_path / "model_store"
    store.mkdir()
    return store
