"""TorchServe's gRPC management API, ``org.pytorch.serve.grpc.management.ManagementAPIsService``, on its own port
(``grpc_management_address``, TorchServe's 7071), served by the first frontend only, as the REST management port.

Every call is the REST management call of the same name (``dms.dataplane.management``: the same rules, defaults
and text); its answer's ``msg`` is the REST answer's ``status`` text, or for ``DescribeModel`` and ``ListModels``
the REST answer's JSON document. As in TorchServe, a number left at 0 means "not given": ``min_worker`` 0 is 1, and
``initial_workers`` 0 leaves the workers to the archive's config and the settings. A failure ends the call with the
status of its kind (``dms.grpc.errors``): NOT_FOUND, INVALID_ARGUMENT, ALREADY_EXISTS, INTERNAL. With several
frontends a change is made in every frontend before it is answered, as on the REST port. The calls need the
management key when token auth is on.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from dms._generated import torchserve_management_pb2 as tsm
from dms.dataplane import DataPlane
from dms.dataplane import management as calls
from dms.dataplane.management import Followers
from dms.errors import InputError
from dms.grpc.servicer import Context, InferenceServicer, Metadata, RpcMethod

SERVICE = "org.pytorch.serve.grpc.management.ManagementAPIsService"


def _given(value: int) -> int | None:
    """A number field of a request: 0 (proto3's "not set") and below are not given."""
    return value if value > 0 else None


def _named(request: Any) -> str:
    """The request's ``model_name``, which every call but ``ListModels`` and ``RegisterModel`` needs."""
    if not request.model_name:
        raise InputError("parameter model_name is required")
    name: str = request.model_name
    return name


def _answer(msg: str) -> Any:
    return tsm.ManagementResponse(msg=msg)


class TorchServeManagement:
    def __init__(self, dataplane: DataPlane, followers: Followers | None = None) -> None:
        self.dataplane = dataplane
        self.followers = followers

    async def _changed(self, waited: bool = True) -> None:
        """A change was made here: the other frontends make it too, before the answer when it ``waited``."""
        if self.followers is None:
            return
        if waited:
            await self.followers.sync()
        else:
            calls.follow_later(self.followers)

    async def describe_model(self, request: Any, context: Context) -> Any:
        rows = self.dataplane.describe(_named(request), request.model_version or None)
        if self.followers is not None:
            await self.followers.add_workers(rows)
        return _answer(json.dumps(rows, indent=2))

    async def list_models(self, request: Any, context: Context) -> Any:
        page = calls.model_list(self.dataplane, _given(request.limit), _given(request.next_page_token))
        return _answer(json.dumps(page, indent=2))

    async def register_model(self, request: Any, context: Context) -> Any:
        delay, timeout = _given(request.max_batch_delay), _given(request.response_timeout)
        registration = calls.Registration(
            url=request.url,
            model_name=request.model_name or None,
            handler=request.handler or None,
            runtime=request.runtime or None,
            initial_workers=_given(request.initial_workers),
            batch_size=_given(request.batch_size),
            max_batch_delay_ms=float(delay) if delay is not None else None,
            response_timeout_s=float(timeout) if timeout is not None else None,
            synchronous=request.synchronous,
        )
        registered = await calls.register(self.dataplane, registration)
        await self._changed(registered.workers_started)
        return _answer(registered.message)

    async def scale_worker(self, request: Any, context: Context) -> Any:
        min_workers = _given(request.min_worker) or 1
        scaling = calls.Scaling(
            _named(request),
            request.model_version or None,
            min_workers=min_workers,
            max_workers=_given(request.max_worker),
            synchronous=request.synchronous,
            gpu_workers=_given(request.number_gpu),
        )
        scaled = await calls.scale(self.dataplane, scaling)
        await self._changed(scaled.workers_started)
        return _answer(scaled.message)

    async def set_default(self, request: Any, context: Context) -> Any:
        if not request.model_version:
            raise InputError("parameter model_version is required")
        message = calls.set_default(self.dataplane, _named(request), request.model_version)
        await self._changed()
        return _answer(message)

    async def unregister_model(self, request: Any, context: Context) -> Any:
        message = await calls.unregister(self.dataplane, _named(request), request.model_version or None)
        await self._changed()
        return _answer(message)


def torchserve_management_methods(servicer: InferenceServicer, followers: Followers | None = None) -> list[RpcMethod]:
    """``ManagementAPIsService``'s methods, each needing the management key when token auth is on."""
    service = TorchServeManagement(servicer.dataplane, followers)
    management: Callable[[Metadata], None] | None = None
    if servicer.key_required("management"):
        management = functools.partial(servicer.authorize, kind="management")
    request_types = {
        "DescribeModel": (service.describe_model, tsm.DescribeModelRequest),
        "ListModels": (service.list_models, tsm.ListModelsRequest),
        "RegisterModel": (service.register_model, tsm.RegisterModelRequest),
        "ScaleWorker": (service.scale_worker, tsm.ScaleWorkerRequest),
        "SetDefault": (service.set_default, tsm.SetDefaultRequest),
        "UnregisterModel": (service.unregister_model, tsm.UnregisterModelRequest),
    }
    return [
        RpcMethod(name, handler, request_type, tsm.ManagementResponse, authorize=management, service=SERVICE)
        for name, (handler, request_type) in request_types.items()
    ]
