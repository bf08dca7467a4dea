"""TorchServe's gRPC ``ManagementAPIsService`` (``dms.grpc.torchserve_management``) in-process, on a data plane of
fake workers: the messages a client gets, TorchServe's "0 is not given", the same rules as REST's, and the other
frontends told of each change."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from dms._generated import torchserve_management_pb2 as tsm
from dms.dataplane import DataPlane
from dms.errors import InputError, ModelAlreadyExistsError, ModelNotFoundError
from dms.grpc.servicer import InferenceServicer
from dms.grpc.torchserve_management import TorchServeManagement, torchserve_management_methods
from dms.observability.metrics import ServerMetrics
from dms.settings import load_settings
from tests.conftest import make_probe_archive
from tests.unit.dataplane.fakes import FakePlan


class Followers:
    """Stands for the other frontends: counts the syncs it is asked for."""

    def __init__(self) -> None:
        self.syncs = 0

    async def sync(self) -> None:
        self.syncs += 1

    async def add_workers(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            row["workers"].append({"id": "frontend-1's"})


def test_each_call_answers_as_the_rest_call_of_the_same_name(tmp_path: Path):
    store = tmp_path / "store"
    make_probe_archive(store, "probe")

    async def main() -> None:
        settings = load_settings(
            None, None, model_store=store, state_dir=tmp_path / "state", archive_cache_dir=tmp_path / "cache"
        )
        metrics = ServerMetrics()
        dataplane = DataPlane(settings, metrics.observer_for, workers=FakePlan().factory())
        followers = Followers()
        service = TorchServeManagement(dataplane, followers)
        try:
            registered = await service.register_model(
                tsm.RegisterModelRequest(url="probe-1.0.mar", initial_workers=1, batch_size=0, synchronous=True), None
            )
            assert registered.msg == 'Model "probe" Version: 1.0 registered with 1 initial workers'
            assert followers.syncs == 1
            with pytest.raises(ModelAlreadyExistsError):
                await service.register_model(tsm.RegisterModelRequest(url="probe-1.0.mar"), None)
            with pytest.raises(InputError, match="python4"):
                await service.register_model(tsm.RegisterModelRequest(url="probe-1.0.mar", runtime="python4"), None)
            with pytest.raises(InputError, match="'url' is required"):
                await service.register_model(tsm.RegisterModelRequest(), None)

            # min_worker 0 is "not given": TorchServe's default, 1.
            scaled = await service.scale_worker(tsm.ScaleWorkerRequest(model_name="probe", synchronous=True), None)
            assert scaled.msg == "Workers scaled to 1 for model: probe"
            later = await service.scale_worker(tsm.ScaleWorkerRequest(model_name="probe", min_worker=2), None)
            assert later.msg == "Processing worker updates..."

            description = await service.describe_model(tsm.DescribeModelRequest(model_name="probe"), None)
            [described] = json.loads(description.msg)
            assert described["modelName"] == "probe" and {"id": "frontend-1's"} in described["workers"]
            page = json.loads((await service.list_models(tsm.ListModelsRequest(limit=0), None)).msg)
            assert page == {"models": [{"modelName": "probe", "modelUrl": "probe-1.0.mar"}]}
            with pytest.raises(InputError, match="model_version is required"):
                await service.set_default(tsm.SetDefaultRequest(model_name="probe"), None)
            with pytest.raises(InputError, match="model_name is required"):
                await service.unregister_model(tsm.UnregisterModelRequest(), None)

            gone = await service.unregister_model(tsm.UnregisterModelRequest(model_name="probe"), None)
            assert gone.msg == 'Model "probe" version 1.0 unregistered'
            with pytest.raises(ModelNotFoundError):
                await service.describe_model(tsm.DescribeModelRequest(model_name="probe"), None)
            for _ in range(3):  # the sync after the scale that was not waited for runs in the background
                await asyncio.sleep(0)
            assert followers.syncs == 4  # register, the two scales, unregister
        finally:
            await dataplane.shutdown(0)

    asyncio.run(main())


def test_the_methods_need_the_management_key_when_token_auth_is_on(tmp_path: Path):
    from dms.auth import KeyStore
    from dms.errors import UnauthorizedError

    settings = load_settings(None, None, state_dir=tmp_path / "state", token_auth=True)
    metrics = ServerMetrics()
    keys = KeyStore(tmp_path / "keys.json", {})
    dataplane = DataPlane(settings, metrics.observer_for, workers=FakePlan().factory())
    methods = torchserve_management_methods(InferenceServicer(dataplane, metrics, keys))
    assert {m.path for m in methods} >= {b"/org.pytorch.serve.grpc.management.ManagementAPIsService/RegisterModel"}
    for method in methods:
        assert method.authorize is not None
        with pytest.raises(UnauthorizedError):
            method.authorize({})
        method.authorize({"authorization": f"Bearer {keys.key('management')}"})
