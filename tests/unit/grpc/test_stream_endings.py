"""How a ``ModelStreamInfer`` stream ends (``InferenceServicer.model_stream_infer``), with no sockets: its client
leaving ends it at once, a message that is not protobuf ends it with INVALID_ARGUMENT, and a stream that
brings nothing ends after ``grpc_stream_idle_timeout_s``; requests read and not answered are cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from dms._generated import inference_pb2 as pb
from dms.errors import DMSError
from dms.grpc.call_core import CallContext, status_of
from dms.grpc.servicer import InferenceServicer
from dms.observability.metrics import ServerMetrics
from dms.settings import ServerSettings
from tests.unit.protocol_support import FakeDataPlane


class ClientGone(Exception):
    """What a transport's request iterator raises when the client leaves (GrpcApp's own is private)."""


def servicer(idle_s: float = 30.0) -> tuple[InferenceServicer, FakeDataPlane]:
    dataplane = FakeDataPlane(ServerSettings(grpc_stream_idle_timeout_s=idle_s, token_auth=False))
    return InferenceServicer(dataplane, ServerMetrics(), None), dataplane  # type: ignore[arg-type]


def request() -> bytes:
    return pb.ModelInferRequest(model_name="m").SerializeToString()


async def drain(answers: AsyncIterator[bytes]) -> list[bytes]:
    return [answer async for answer in answers]


def test_a_client_that_leaves_ends_the_stream_and_cancels_what_it_asked():
    async def scenario() -> None:
        service, dataplane = servicer()

        async def requests() -> AsyncIterator[bytes]:
            yield request()
            await asyncio.sleep(0.05)
            raise ClientGone

        with pytest.raises(ClientGone):
            await asyncio.wait_for(drain(service.model_stream_infer(requests(), CallContext(()))), 5)
        assert len(dataplane.submitted) == 1
        assert dataplane.submitted[0][3].cancelled()  # its model no longer holds it for anyone

    asyncio.run(scenario())


def test_a_message_that_is_not_protobuf_ends_the_stream_with_invalid_argument():
    async def scenario() -> None:
        service, _ = servicer()

        async def requests() -> AsyncIterator[bytes]:
            yield b"\xff\xff\xff\xff"
            await asyncio.sleep(60)

        with pytest.raises(DMSError) as raised:
            await asyncio.wait_for(drain(service.model_stream_infer(requests(), CallContext(()))), 5)
        code, details = status_of(raised.value, "ModelStreamInfer")  # the status the call ends with
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a ModelInferRequest" in details

    asyncio.run(scenario())


def test_a_stream_that_brings_nothing_ends_after_the_idle_timeout():
    async def scenario() -> None:
        service, _ = servicer(idle_s=0.2)

        async def requests() -> AsyncIterator[bytes]:
            await asyncio.sleep(60)
            yield request()

        started = asyncio.get_running_loop().time()
        with pytest.raises(DMSError) as raised:
            await asyncio.wait_for(drain(service.model_stream_infer(requests(), CallContext(()))), 5)
        code, details = status_of(raised.value, "ModelStreamInfer")
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "grpc_stream_idle_timeout_s" in details
        assert 0.2 <= asyncio.get_running_loop().time() - started < 2

    asyncio.run(scenario())


def test_a_request_in_flight_is_not_idle_time():
    async def scenario() -> None:
        service, dataplane = servicer(idle_s=0.2)

        async def requests() -> AsyncIterator[bytes]:
            yield request()

        async def answer_late() -> None:
            await asyncio.sleep(0.5)  # longer than the idle timeout: the stream waits for its answer
            from dms.messages import ResponseItem

            dataplane.submitted[0][3].set_result(ResponseItem(status=200, body=b"ok", content_type=""))

        answering = asyncio.ensure_future(answer_late())
        answers = await asyncio.wait_for(drain(service.model_stream_infer(requests(), CallContext(()))), 5)
        await answering
        assert len(answers) == 1 and answers[0].endswith(b"ok")

    asyncio.run(scenario())
