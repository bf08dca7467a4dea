"""The inference API answers the same through DMS's own connections (a real socket) and as an ASGI app (mounted in
another server; here httpx's ASGI transport): one router, one route table, one key check, on a data plane of fake
workers."""

from __future__ import annotations

import asyncio
import gzip
import socket
from pathlib import Path

import httpx

from dms.auth import KeyStore
from dms.dataplane import DataPlane
from dms.httputil.connection_deadlines import ReadLimits
from dms.observability.metrics import ServerMetrics
from dms.rest.http1_server import Http1Server
from dms.rest.inference import build_inference_app
from dms.rest.management import build_management_app
from dms.settings import load_settings
from tests.conftest import make_probe_archive
from tests.unit.dataplane.fakes import FakePlan

OIP = b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}'


def requests(key: str) -> list[tuple[str, str, dict[str, object]]]:
    auth = {"Authorization": f"Bearer {key}"}
    return [
        ("POST", "/predictions/probe", {"content": b"abc", "headers": {**auth, "X-Request-ID": "same-1"}}),
        ("PUT", "/predictions/probe/1.0?topk=1", {"content": b"abc", "headers": auth}),
        ("POST", "/predictions/probe/9.9", {"content": b"abc", "headers": auth}),
        ("POST", "/predictions/nope", {"content": b"abc", "headers": auth}),
        ("POST", "/predictions/probe", {"content": b"x" * 3000, "headers": auth}),  # over the size limit
        ("POST", "/predictions/probe", {"content": b"abc"}),  # no key
        ("POST", "/predictions/probe", {"content": b"abc", "headers": {"Authorization": "Bearer wrong"}}),
        ("GET", "/predictions/probe", {"headers": auth}),  # 405
        ("POST", "/probe/predict", {"content": b"abc", "headers": auth}),
        ("POST", "/v2/models/probe/infer", {"content": OIP, "headers": {**auth, "X-Request-ID": "same-2"}}),
        (
            "POST",
            "/v2/models/probe/infer",
            {"content": gzip.compress(OIP), "headers": {**auth, "Content-Encoding": "gzip"}},
        ),
        ("POST", "/v2/models/probe/versions/1.0/infer", {"content": OIP, "headers": auth}),
        ("POST", "/v1/models/probe:predict", {"content": b'{"instances": [1]}', "headers": auth}),
        ("GET", "/v2/models/probe", {"headers": auth}),
        ("GET", "/v1/models", {"headers": auth}),
        ("GET", "/ping", {}),  # open without a key
        ("GET", "/v2/health/ready", {}),
        ("GET", "/nowhere", {"headers": auth}),
        ("OPTIONS", "/", {"headers": auth}),
    ]


def answer(response: httpx.Response) -> tuple[object, ...]:
    request_id = response.headers.get("x-request-id")
    sent = response.request.headers.get("x-request-id")
    return (
        response.status_code,
        response.headers.get("content-type"),
        response.content,
        request_id if sent else bool(request_id),
    )


def test_the_same_answers_through_dms_connections_and_through_asgi(tmp_path: Path):
    store = tmp_path / "store"
    make_probe_archive(store, "probe", config="initial_workers: 1\n")

    async def main() -> None:
        settings = load_settings(
            None,
            None,
            model_store=store,
            state_dir=tmp_path / "state",
            archive_cache_dir=tmp_path / "cache",
            max_request_size_bytes=2000,
            inference_token_auth=True,
        )
        keys = KeyStore(settings.key_file)
        metrics = ServerMetrics()
        dataplane = DataPlane(settings, metrics.observer_for, workers=FakePlan().factory())
        metrics.attach(dataplane)
        management = httpx.ASGITransport(app=build_management_app(dataplane, metrics))
        async with httpx.AsyncClient(transport=management, base_url="http://management") as client:
            registered = await client.post("/models", params={"url": "probe-1.0.mar", "synchronous": "true"})
            assert registered.status_code == 200, registered.text
        dataplane.startup_complete()
        router = build_inference_app(dataplane, metrics, keys)
        server = Http1Server(router, ReadLimits(), settings.max_request_size_bytes)
        sock = socket.create_server(("127.0.0.1", 0))
        await server.start(sock)
        port = sock.getsockname()[1]
        try:
            async with (
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as over_socket,
                httpx.AsyncClient(transport=httpx.ASGITransport(app=router), base_url="http://asgi") as over_asgi,
            ):
                for method, path, options in requests(keys.key("inference")):
                    ours = await over_socket.request(method, path, **options)  # type: ignore[arg-type]
                    mounted = await over_asgi.request(method, path, **options)  # type: ignore[arg-type]
                    assert answer(ours) == answer(mounted), (method, path)
                    assert ours.status_code != 500, ours.text
                statuses = [
                    (await over_socket.request(m, p, **o)).status_code  # type: ignore[arg-type]
                    for m, p, o in requests(keys.key("inference"))
                ]
                assert statuses == [200, 200, 404, 404, 413, 401, 403, 405, *[200] * 9, 404, 200]
        finally:
            await server.stop(0)
            await dataplane.shutdown(0)

    asyncio.run(main())
