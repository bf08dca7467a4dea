"""The calls of a service as DMS's gRPC connections answer them (``dms.grpc.answering`` and ``call_core``):
unary and streaming, protobuf and raw, compressed, refused, failing, timed out and abandoned, driven through a
connection by a zttp client in memory."""

from __future__ import annotations

import asyncio
import gzip
import time
import zlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from dms._generated import inference_pb2 as pb
from dms.errors import ModelNotFoundError
from dms.grpc.call_core import CallAborted, frame, parse_timeout, read_call_headers
from dms.grpc.servicer import RpcMethod
from tests.unit.grpc.test_connection import Answer, Harness

PATH = "/inference.GRPCInferenceService/"


async def echo_bytes(payload: bytes, context: Any) -> bytes:
    return payload[::-1]


async def live(request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
    return pb.ServerLiveResponse(live=True)


async def slow(payload: bytes, context: Any) -> bytes:
    await asyncio.sleep(5)
    return payload


async def missing(payload: bytes, context: Any) -> bytes:
    raise ModelNotFoundError("model nope is not registered")


async def broken(payload: bytes, context: Any) -> bytes:
    raise ValueError("boom")


async def aborting(payload: bytes, context: Any) -> bytes:
    await context.abort(grpc.StatusCode.PERMISSION_DENIED, "100% refusé")
    raise AssertionError("abort returned")


async def who(payload: bytes, context: Any) -> bytes:
    return repr(sorted(context.invocation_metadata())).encode()


async def doubled(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for payload in requests:
        yield payload * 2


METHODS = {
    m.name: m
    for m in [
        RpcMethod("Echo", echo_bytes, None, None),
        RpcMethod("ServerLive", live, pb.ServerLiveRequest, pb.ServerLiveResponse),
        RpcMethod("Slow", slow, None, None),
        RpcMethod("Missing", missing, None, None),
        RpcMethod("Broken", broken, None, None),
        RpcMethod("Abort", aborting, None, None),
        RpcMethod("Who", who, None, None),
        RpcMethod("Doubled", doubled, None, None, streaming=True),
    ]
}


class Call:
    """One call through a connection: its status, messages, trailers and whether anything was sent."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.status = answer.status
        self.sent = answer.status != 0
        body = answer.body
        self.text = body if self.status != 200 else b""
        self.messages: list[bytes] = []
        while body and self.status == 200:
            assert body[0] == 0
            length = int.from_bytes(body[1:5], "big")
            self.messages.append(body[5 : 5 + length])
            body = body[5 + length :]
        self.trailers = answer.trailers
        self.headers = answer.headers

    @property
    def code(self) -> int:
        return int(self.trailers[b"grpc-status"])

    @property
    def details(self) -> str:
        return self.trailers.get(b"grpc-message", b"").decode()


def run(
    method: str,
    chunks: list[bytes],
    headers: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
    http_method: str = "POST",
    max_bytes: int = 1 << 20,
    disconnect: bool = False,
) -> Call:
    """The call, its request sent in ``chunks`` (each its own read), on a connection serving ``METHODS``."""

    async def call() -> Call:
        h = Harness(max_bytes=max_bytes)
        h.server.methods = {rpc.path: rpc for rpc in METHODS.values()}
        await h.exchange()
        grpc_headers = [(b"content-type", b"application/grpc"), (b"te", b"trailers"), *headers]
        stream = h.client.send_request(http_method.encode(), PATH.encode() + method.encode(), b"HTTP/2", grpc_headers)
        h.answers[stream.stream_id] = answer = Answer()
        for index, chunk in enumerate(chunks):
            if chunk:
                stream.send_data(chunk)
            if index == len(chunks) - 1 and not disconnect:
                stream.end_message()
            h.send()
            await h.exchange()
        if disconnect:
            h.protocol.connection_lost(None)
        for _ in range(100):
            await h.exchange()
            if answer.ended or disconnect:
                break
            await asyncio.sleep(0.01)
        return Call(answer)

    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(call())
    finally:
        loop.close()


def test_a_unary_call_gets_its_answer_and_an_ok_status():
    call = run("Echo", [frame(b"abc")])
    assert call.status == 200 and call.messages == [b"cba"] and call.code == 0
    assert call.headers[b"content-type"] == b"application/grpc"


def test_messages_split_anywhere_across_body_chunks_are_put_back_together():
    body = frame(b"hello world")
    for cut in range(1, len(body)):
        assert run("Echo", [body[:cut], b"", body[cut:]]).messages == [b"dlrow olleh"]


def test_protobuf_requests_and_answers_are_decoded_and_encoded():
    call = run("ServerLive", [frame(pb.ServerLiveRequest().SerializeToString())])
    assert pb.ServerLiveResponse.FromString(call.messages[0]).live is True
    garbage = run("ServerLive", [frame(b"\xff\xff\xff")])
    assert garbage.code == grpc.StatusCode.INTERNAL.value[0] and "ServerLiveRequest" in garbage.details


def test_compressed_messages_are_decompressed_with_the_calls_encoding():
    for encoding, payload in ((b"gzip", gzip.compress(b"abc")), (b"deflate", zlib.compress(b"abc"))):
        call = run("Echo", [b"\x01" + len(payload).to_bytes(4, "big") + payload], [(b"grpc-encoding", encoding)])
        assert call.messages == [b"cba"], encoding
    unknown = run("Echo", [b"\x01\x00\x00\x00\x01x"], [(b"grpc-encoding", b"snappy")])
    assert unknown.code == grpc.StatusCode.UNIMPLEMENTED.value[0] and "snappy" in unknown.details


def test_a_message_over_the_limit_is_refused_before_it_is_read():
    call = run("Echo", [b"\x00" + (10_000).to_bytes(4, "big")], max_bytes=1024, disconnect=False)
    assert call.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0] and "1024" in call.details
    bomb = gzip.compress(b"\x00" * 100_000)
    inflated = run(
        "Echo", [b"\x01" + len(bomb).to_bytes(4, "big") + bomb], [(b"grpc-encoding", b"gzip")], max_bytes=1024
    )
    assert inflated.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]


def test_truncated_or_extra_messages_end_a_unary_call_with_internal():
    truncated = run("Echo", [frame(b"abcdef")[:-2]])
    assert truncated.code == grpc.StatusCode.INTERNAL.value[0] and "inside a message" in truncated.details
    two = run("Echo", [frame(b"a") + frame(b"b")])
    assert two.code == grpc.StatusCode.INTERNAL.value[0] and "exactly one" in two.details
    none = run("Echo", [b""])
    assert none.code == grpc.StatusCode.INTERNAL.value[0]


def test_unknown_methods_and_non_grpc_requests_are_refused():
    assert run("NoSuchMethod", [frame(b"")]).code == grpc.StatusCode.UNIMPLEMENTED.value[0]
    plain = run("Echo", [b""], http_method="GET")
    assert plain.status == 415 and not plain.trailers and b"gRPC" in plain.text


def test_errors_map_to_grpc_status_codes_with_percent_encoded_messages():
    assert run("Missing", [frame(b"")]).code == grpc.StatusCode.NOT_FOUND.value[0]
    broken = run("Broken", [frame(b"")])
    assert broken.code == grpc.StatusCode.UNKNOWN.value[0] and broken.details == "ValueError: boom"
    aborted = run("Abort", [frame(b"")])
    assert aborted.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert aborted.details == "100%25 refus%C3%A9"  # '%' and non-ASCII bytes are percent-encoded
    assert aborted.messages == []


def test_the_calls_deadline_is_enforced_on_the_server():
    started = time.monotonic()
    call = run("Slow", [frame(b"x")], [(b"grpc-timeout", b"50m")])
    assert call.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0] and time.monotonic() - started < 3
    assert parse_timeout("3S") == 3 and parse_timeout("250m") == 0.25 and parse_timeout("2H") == 7200
    for bad in ("", "S", "12", "123456789S", "5x"):
        with pytest.raises(CallAborted):
            parse_timeout(bad)
    assert run("Echo", [frame(b"x")], [(b"grpc-timeout", b"soon")]).code == grpc.StatusCode.INTERNAL.value[0]


def test_metadata_is_the_custom_headers_with_binary_values_decoded():
    headers = [(b"authorization", b"Bearer k"), (b"trace-bin", b"AAEC"), (b":authority", b"x"), (b"te", b"trailers")]
    assert read_call_headers(headers).metadata == {"authorization": "Bearer k", "trace-bin": b"\x00\x01\x02"}
    assert b"authorization" in run("Who", [frame(b"")], [(b"authorization", b"Bearer k")]).messages[0]


def test_a_client_that_leaves_mid_request_gets_nothing_sent():
    assert not run("Echo", [frame(b"abc")[:3]], disconnect=True).sent


def test_a_streaming_call_answers_each_request_then_ends_ok():
    call = run("Doubled", [frame(b"a") + frame(b"bc"), frame(b"d")])
    assert call.messages == [b"aa", b"bcbc", b"dd"] and call.code == 0
