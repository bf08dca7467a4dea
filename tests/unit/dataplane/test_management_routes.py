"""The management API's routes in-process (ASGI, no socket), on a data plane of fake workers: the answers a
client gets for each operation, and for bad input."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from dms.dataplane import DataPlane
from dms.observability.metrics import ServerMetrics
from dms.rest.management import build_management_app
from dms.settings import load_settings
from tests.conftest import make_probe_archive
from tests.unit.dataplane.fakes import FakePlan


def test_register_describe_scale_and_unregister_as_a_client_sees_them(tmp_path: Path):
    store = tmp_path / "store"
    make_probe_archive(store, "probe", config="initial_workers: 1\n")

    async def main() -> None:
        settings = load_settings(
            None, None, model_store=store, state_dir=tmp_path / "state", archive_cache_dir=tmp_path / "cache"
        )
        metrics = ServerMetrics()
        dataplane = DataPlane(settings, metrics.observer_for, workers=FakePlan().factory())
        metrics.attach(dataplane)
        app = build_management_app(dataplane, metrics)
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://management") as client:
                registered = await client.post("/models", params={"url": "probe-1.0.mar", "batch_size": 2})
                assert registered.status_code == 200, registered.text
                assert registered.json() == {"status": 'Model "probe" Version: 1.0 registered with 1 initial workers'}

                assert (await client.get("/models")).json() == {
                    "models": [{"modelName": "probe", "modelUrl": "probe-1.0.mar"}]
                }
                [described] = (await client.get("/models/probe")).json()
                assert (described["batchSize"], described["minWorkers"], described["status"]) == (2, 1, "READY")

                scaled = await client.put("/models/probe", params={"min_worker": 3, "synchronous": "true"})
                assert scaled.status_code == 200, scaled.text
                assert len((await client.get("/models/probe")).json()[0]["workers"]) == 3

                bad = await client.put("/models/probe", params={"min_worker": 3, "max_worker": 1})
                assert bad.status_code == 400 and "max_worker" in bad.json()["message"]
                missing = await client.post("/models")
                assert missing.status_code == 400 and "'url' is required" in missing.json()["message"]
                twice = await client.post("/models", params={"url": "probe-1.0.mar"})
                assert twice.status_code == 409 and twice.json()["type"] == "ModelAlreadyExistsError"

                gone = await client.delete("/models/probe")
                assert gone.status_code == 200, gone.text
                unknown = await client.get("/models/probe")
                assert unknown.status_code == 404 and "probe" in unknown.json()["message"]
        finally:
            await dataplane.shutdown(0)

    asyncio.run(main())
