"""The data plane in-process, on fake workers (``fakes.FakeWorkers``): registration, requests, scaling, failure,
unregistration, snapshots and queue-depth scaling, with no worker process."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import pytest

from dms.dataplane import DataPlane
from dms.dataplane.autoscaling import Autoscaler
from dms.engine.supervision import PoolState
from dms.errors import InputError, ModelAlreadyExistsError, ModelNotFoundError, ModelUnavailableError
from dms.messages import RequestItem
from dms.settings import load_settings
from tests.conftest import make_probe_archive
from tests.unit.dataplane.fakes import FakePlan


def item(body: object, request_id: str = "r") -> RequestItem:
    return RequestItem(request_id, orjson.dumps(body), "application/json", [], [])


def run(tmp_path: Path, scenario: Callable[[DataPlane, FakePlan, Path], Awaitable[None]], **settings: object) -> None:
    store = tmp_path / "store"
    make_probe_archive(store, "probe", config="initial_workers: 2\nbatch_size: 4\n")

    async def main() -> None:
        plan = FakePlan()
        loaded = load_settings(
            None,
            None,
            model_store=store,
            state_dir=tmp_path / "state",
            archive_cache_dir=tmp_path / "cache",
            max_startup_failures=2,
            restart_backoff_max_s=0.01,
            **settings,
        )
        dataplane = DataPlane(loaded, workers=plan.factory())
        try:
            await scenario(dataplane, plan, store)
        finally:
            await dataplane.shutdown(0)

    asyncio.run(main())


def test_a_registered_model_answers_and_describes_its_workers(tmp_path: Path):
    async def scenario(dataplane: DataPlane, plan: FakePlan, store: Path) -> None:
        model = await dataplane.register("probe-1.0.mar")
        assert (model.name, model.version, model.pool.state) == ("probe", "1.0", PoolState.READY)
        answers = await asyncio.gather(*(dataplane.submit("probe", None, item({"n": n}, str(n))) for n in range(6)))
        assert [orjson.loads(a.body)["n"] for a in answers] == list(range(6))
        [described] = dataplane.describe("probe", None)
        assert described["status"] == "READY" and described["batchSize"] == 4
        assert (described["minWorkers"], described["maxWorkers"], described["currentWorkers"]) == (2, 2, 2)
        assert sum(w["batches"] for w in described["workers"]) < 6  # requests shared batches
        with pytest.raises(ModelAlreadyExistsError):
            await dataplane.register("probe-1.0.mar")

    run(tmp_path, scenario)


def test_scaling_changes_the_workers_and_what_describe_and_the_snapshot_say(tmp_path: Path):
    async def scenario(dataplane: DataPlane, plan: FakePlan, store: Path) -> None:
        await dataplane.register("probe-1.0.mar")
        dataplane.startup_complete()
        await dataplane.scale("probe", None, 3, 5, synchronous=True)
        [described] = dataplane.describe("probe", None)
        assert (described["minWorkers"], described["maxWorkers"], len(described["workers"])) == (3, 5, 3)
        snapshot = json.loads(dataplane.settings.snapshot_file.read_text())
        assert [entry["workers"] for entry in snapshot["models"]] == [3]
        await dataplane.scale("probe", None, 1, None, synchronous=True)
        assert len(dataplane.describe("probe", None)[0]["workers"]) == 1
        with pytest.raises(InputError):
            await dataplane.scale("probe", None, 2, 1, synchronous=True)

    run(tmp_path, scenario)


def test_workers_that_cannot_start_fail_the_registration_and_leave_nothing_registered(tmp_path: Path):
    async def scenario(dataplane: DataPlane, plan: FakePlan, store: Path) -> None:
        plan.load_error = "no module named handler_that_is_not_there"
        with pytest.raises(ModelUnavailableError, match="handler_that_is_not_there"):
            await dataplane.register("probe-1.0.mar")
        with pytest.raises(ModelNotFoundError):
            dataplane.describe("probe", None)
        assert plan.made[0].state == PoolState.STOPPED

    run(tmp_path, scenario)


def test_a_model_that_failed_after_start_up_refuses_requests_until_scaled_again(tmp_path: Path):
    async def scenario(dataplane: DataPlane, plan: FakePlan, store: Path) -> None:
        plan.load_error = "out of luck"
        model = await dataplane.register("probe-1.0.mar", loaded_at_startup=True)  # kept, as start-up models are
        assert model.pool.state == PoolState.FAILED and "out of luck" in (model.pool.last_error or "")
        with pytest.raises(ModelUnavailableError, match="failed to start: out of luck"):
            dataplane.submit("probe", None, item({}))
        plan.load_error = None
        await dataplane.scale("probe", None, 1, None, synchronous=True)
        assert orjson.loads((await dataplane.submit("probe", None, item({"back": 1}))).body) == {"back": 1}

    run(tmp_path, scenario)


def test_unregistering_drains_queued_requests_first(tmp_path: Path):
    async def scenario(dataplane: DataPlane, plan: FakePlan, store: Path) -> None:
        await dataplane.register("probe-1.0.mar")
        plan.gate.clear()
        pending = [dataplane.submit("probe", None, item({"n": n})) for n in range(3)]
        unregistering = asyncio.ensure_future(dataplane.unregister("probe"))
        await asyncio.sleep(0.05)
        assert not unregistering.done()  # it waits for the queue
        plan.gate.set()
        await unregistering
        assert [orjson.loads((await p).body)["n"] for p in pending] == [0, 1, 2]
        with pytest.raises(ModelNotFoundError):
            dataplane.submit("probe", None, item({}))

    run(tmp_path, scenario)


def test_the_autoscaler_grows_a_model_whose_queue_stays_deep_and_shrinks_it_when_idle(tmp_path: Path):
    async def scenario(dataplane: DataPlane, plan: FakePlan, store: Path) -> None:
        make_probe_archive(
            store,
            "elastic",
            config="initial_workers: 1\nmax_workers: 3\nbatch_size: 1\n"
            "ray: {target_queue_per_worker: 1, upscale_after_s: 0, downscale_after_s: 0}\n",
        )
        model = await dataplane.register("elastic-1.0.mar")
        plan.gate.clear()
        pending = [dataplane.submit("elastic", None, item({"n": n})) for n in range(8)]
        await asyncio.sleep(0.01)  # the batcher takes one for the one worker; 7 wait
        autoscaler = Autoscaler(dataplane.registry)
        autoscaler.tick(0.0)
        await asyncio.sleep(0.01)
        assert model.pool.target == 3  # 7 waiting on 1 worker, 1 per worker wanted: as many as allowed
        plan.gate.set()
        await asyncio.gather(*pending)
        for at in (1.0, 2.0, 3.0):
            autoscaler.tick(at)
            await asyncio.sleep(0.01)
        assert model.pool.target == 1 and dataplane.describe("elastic", None)[0]["minWorkers"] == 1

    run(tmp_path, scenario)
