"""Fixtures shared by the integration tests of the engine's worker processes."""

from __future__ import annotations

import pytest

from dms.archive.reader import open_archive
from dms.messages import LoadModel
from tests.conftest import make_probe_archive


@pytest.fixture(scope="module")
def load(tmp_path_factory: pytest.TempPathFactory) -> LoadModel:
    """The load message of the probe handler's archive, as the pool sends it to a worker."""
    work = tmp_path_factory.mktemp("probe-load")
    archive = open_archive(make_probe_archive(work / "store", "probe"), work / "cache", 10**9)
    return LoadModel(
        model_name="probe",
        model_version="1.0",
        model_dir=str(archive.model_dir),
        manifest=dict(archive.manifest.raw),
        config={},
        batch_size=1,
        gpu_id=None,
        worker_id="1",
        cpu_threads=1,
    )
