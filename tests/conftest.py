from __future__ import annotations

from pathlib import Path

import pytest

from dms.archive.writer import ArchiveSpec, write_archive
from tests.support import FIXTURES


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


@pytest.fixture
def model_store(tmp_path: Path) -> Path:
    store = tmp_path / "model_store"
    store.mkdir()
    return store
