"""The data plane runs each model version's workers through the ``WorkersFactory`` it is given
(``dms.engine.workers``), not a ``WorkerPool`` it builds itself: the seam a cluster executor plugs into."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from dms.dataplane import DataPlane
from dms.engine.supervision import PoolSettings
from dms.engine.workers import ModelWorkers, local_workers
from dms.messages import LoadModel, RequestItem
from dms.settings import load_settings
from tests.conftest import make_probe_archive


def test_register_uses_the_workers_it_is_given(tmp_path: Path) -> None:
    made: list[tuple[str, LoadModel, PoolSettings, ModelWorkers]] = []

    def recording(label: str, template: LoadModel, settings: PoolSettings) -> ModelWorkers:
        workers = local_workers(label, template, settings)
        made.append((label, template, settings, workers))
        return workers

    async def scenario() -> None:
        store = tmp_path / "store"
        archive = make_probe_archive(store, "probe", config="initial_workers: 1\nresponse_timeout_s: 17\n")
        settings = load_settings(
            None, None, model_store=store, state_dir=tmp_path / "state", archive_cache_dir=tmp_path / "cache"
        )
        dataplane = DataPlane(settings, workers=recording)
        try:
            model = await dataplane.register(str(archive), trusted_local=True)
            ((label, template, pool_settings, workers),) = made
            assert model.pool is workers and label == "probe:1.0"
            assert template.model_name == "probe" and pool_settings.response_timeout_s == 17
            assert workers.ready_count() == 1 and dataplane.healthy() is False  # start-up not declared complete
            item = RequestItem("r1", orjson.dumps({"echo": "through the given workers"}), "application/json", [], [])
            answer = await dataplane.submit("probe", None, item)
            assert orjson.loads(answer.body)["echo"] == "through the given workers"
            assert [w["status"] for w in dataplane.describe("probe", None)[0]["workers"]] == ["READY"]
        finally:
            await dataplane.shutdown(0)

    asyncio.run(scenario())
