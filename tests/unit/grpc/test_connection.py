"""DMS's gRPC connections (``dms.grpc.connection``), driven by a zttp client through memory: how calls are
answered, and how they are read, refused, timed out and let go of."""

from __future__ import annotations

import asyncio
import gzip
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
import zttp

from dms._generated import inference_pb2 as pb
from dms.auth import KeyStore
from dms.grpc.call_core import frame
from dms.grpc.connection import GrpcConnection
from dms.grpc.server import GrpcServer
from dms.grpc.servicer import InferenceServicer
from dms.httputil.connection_deadlines import ReadLimits
from dms.messages import ErrorInfo, ResponseItem
from dms.observability.metrics import ServerMetrics
from dms.settings import ServerSettings
from tests.unit.protocol_support import FakeDataPlane, FakeTransport, run

SERVICE = b"/inference.GRPCInferenceService/"
INFER = SERVICE + b"ModelInfer"
GRPC_HEADERS = [(b"content-type", b"application/grpc"), (b"te", b"trailers")]
REQUEST = pb.ModelInferRequest(model_name="m", model_version="2", id="call-1").SerializeToString()


@dataclass
class Answer:
    """What came back on one stream."""

    headers: dict[bytes, bytes] = field(default_factory=dict)
    status: int = 0
    body: bytes = b""
    trailers: dict[bytes, bytes] = field(default_factory=dict)
    ended: bool = False
    reset: bool = False

    @property
    def code(self) -> grpc.StatusCode:
        value = int(self.trailers[b"grpc-status"])
        return next(code for code in grpc.StatusCode if code.value[0] == value)

    @property
    def details(self) -> str:
        return self.trailers.get(b"grpc-message", b"").decode()

    @property
    def message(self) -> bytes:
        assert self.body[0] == 0 and int.from_bytes(self.body[1:5], "big") == len(self.body) - 5
        return self.body[5:]


class Harness:
    def __init__(
        self,
        *,
        keys: KeyStore | None = None,
        max_bytes: int = 1 << 20,
        keep_alive_s: float = 5,
        read_timeout_s: float = 60,
        min_body_rate: float = 0.0,
        body_rate_grace_s: float = 10.0,
    ) -> None:
        settings = ServerSettings(inference_token_auth=keys is not None)
        self.dataplane = FakeDataPlane(settings)
        self.metrics = ServerMetrics()
        servicer = InferenceServicer(self.dataplane, self.metrics, keys)  # type: ignore[arg-type]
        limits = ReadLimits(read_timeout_s, min_body_rate, body_rate_grace_s)
        self.server = GrpcServer(servicer, max_bytes, limits, idle_timeout_s=keep_alive_s)
        self.protocol = GrpcConnection(self.server)
        self.transport = FakeTransport(port=7070)
        self.protocol.connection_made(self.transport)
        self.client = zttp.Connection(zttp.CLIENT, protocol=zttp.HTTP2)
        self.client.initiate_connection()
        self.answers: dict[int, Answer] = {}
        self.writes = 0
        """Socket writes the server made since the last ``exchange``."""

    def send(self) -> None:
        if data := self.client.data_to_send():
            self.protocol.data_received(data)

    def start(self, path: bytes = INFER, headers: list[tuple[bytes, bytes]] = GRPC_HEADERS) -> Any:
        stream = self.client.send_request(b"POST", path, b"HTTP/2", headers)
        self.answers[stream.stream_id] = Answer()
        return stream

    def call(
        self, message: bytes = REQUEST, path: bytes = INFER, headers: list[tuple[bytes, bytes]] = GRPC_HEADERS
    ) -> int:
        stream = self.start(path, headers)
        stream.send_data(frame(message))
        stream.end_message()
        self.send()
        return int(stream.stream_id)

    async def exchange(self) -> None:
        """Let the server run, then read everything it wrote (and send the client's window updates)."""
        for _ in range(5):
            await asyncio.sleep(0)
        self.writes = len(self.transport.writes)
        self.client.receive_data(self.transport.take())
        while (event := self.client.next_event()) is not zttp.NEED_DATA:
            answer = self.answers.get(getattr(event, "stream_id", 0))
            if answer is None:
                continue
            if isinstance(event, zttp.Response):
                answer.headers = dict(event.headers)
                answer.status = event.status_code
            elif isinstance(event, zttp.Data):
                answer.body += event.data
            elif isinstance(event, zttp.EndOfMessage):
                answer.trailers, answer.ended = dict(event.trailers), True
            elif isinstance(event, zttp.RstStream):
                answer.reset = True
        self.send()

    def answer(self, index: int, item: ResponseItem) -> None:
        self.dataplane.submitted[index][3].set_result(item)

    def in_flight(self) -> int:
        return self.metrics._in_flight.get("v2-grpc", 0)


def test_a_model_infer_call_is_answered_without_the_asgi_app_in_one_write(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = Harness()
        await h.exchange()
        sid = h.call(headers=[*GRPC_HEADERS, (b"x-request-id", b"r-7"), (b"tag-bin", b"AAE")])
        [(name, version, item, _)] = h.dataplane.submitted
        assert (name, version, item.body, item.request_id, item.protocol) == ("m", "2", REQUEST, "r-7", "v2-grpc")
        assert ("x-request-id", "r-7") in item.headers and not any(k == "tag-bin" for k, _ in item.headers)
        assert not h.server.tasks and h.in_flight() == 1
        await h.exchange()
        assert h.answers[sid].headers == {}  # nothing is sent before the answer
        h.answer(0, ResponseItem(200, b"the answer", "application/grpc", batch_size=3))
        await h.exchange()
        answer = h.answers[sid]
        assert h.writes == 1 and answer.ended and answer.code == grpc.StatusCode.OK
        assert answer.message == b"the answer" and answer.headers[b"content-type"] == b"application/grpc"
        assert h.in_flight() == 0 and not h.protocol.calls and not h.server.tasks
        assert 'code="OK"' in h.metrics.exposition().decode()

    run(loop, test)


def test_many_calls_in_flight_are_answered_each_on_its_own_stream(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = Harness()
        ids = [h.call(pb.ModelInferRequest(model_name="m", id=str(i)).SerializeToString()) for i in range(8)]
        await h.exchange()
        for index in reversed(range(8)):
            h.answer(index, ResponseItem(200, b"answer %d" % index, "application/grpc"))
        await h.exchange()
        assert h.writes == 1  # answers that finish in one loop turn leave in one write
        assert [h.answers[sid].message for sid in ids] == [b"answer %d" % i for i in range(8)]

    run(loop, test)


def test_one_read_that_mixes_calls_and_a_reset_is_handled_in_order(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = Harness()
        await h.exchange()
        first = h.call()  # on the wire already, waiting for its model
        streams = []
        for path, message in [(SERVICE + b"ServerLive", b""), (INFER, REQUEST), (INFER, REQUEST)]:
            if len(streams) == 2:
                h.client.stream(first).reset(8)  # CANCEL, after the ServerLive call and before the last ModelInfer
            stream = h.start(path)
            stream.send_data(frame(message))
            stream.end_message()
            streams.append(stream)
        h.send()  # all of it in one read
        await h.exchange()
        live, second, third = (int(stream.stream_id) for stream in streams)
        assert pb.ServerLiveResponse.FromString(h.answers[live].message).live
        assert len(h.dataplane.submitted) == 3 and h.dataplane.submitted[0][3].cancelled()
        h.answer(1, ResponseItem(200, b"second", "application/grpc"))
        h.answer(2, ResponseItem(200, b"third", "application/grpc"))
        await h.exchange()
        assert (h.answers[second].message, h.answers[third].message) == (b"second", b"third")
        assert not h.answers[first].ended and h.in_flight() == 0 and not h.protocol.calls

    run(loop, test)


def test_a_big_message_in_many_frames_is_put_back_together(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = Harness()
        await h.exchange()
        big = pb.ModelInferRequest(model_name="m", raw_input_contents=[bytes(range(256)) * 800]).SerializeToString()
        stream = h.start()
        body = frame(big)
        sent = 0
        while sent < len(body):  # as much as the flow-control window lets through, then the server's updates
            window = stream.send_window or 0
            piece = body[sent : sent + max(window, 0)]
            if piece:
                stream.send_data(piece)
                sent += len(piece)
            h.send()
            await h.exchange()
        stream.end_message()
        h.send()
        [(_, _, item, _)] = h.dataplane.submitted
        assert item.body == big and len(big) > 200_000

    run(loop, test)


def test_a_message_over_the_limit_is_refused_before_the_body_ends(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = Harness(max_bytes=1024)
        await h.exchange()
        stream = h.start()
        stream.send_data(frame(bytes(2000))[:100])
        h.send()
        await h.exchange()
        answer = h.answers[stream.stream_id]
        assert answer.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "2000 bytes" in answer.details
        stream.send_data(bytes(500))  # the rest of the body is dropped
        stream.end_message()
        h.send()
        await h.exchange()
        assert not h.dataplane.submitted and h.in_flight() == 0 and not h.protocol.calls
        sid = h.call()  # the connection goes on
        h.answer(0, ResponseItem(200, b"ok", "application/grpc"))
        await h.exchange()
        assert h.answers[sid].message == b"ok"

    run(loop, test)


def test_a_second_message_is_refused_before_the_body_ends(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = Harness()
        await h.exchange()
        stream = h.start()
        stream.send_data(frame(REQUEST) + frame(REQUEST)[:3])
        h.send()
        await h.exchange()
        answer = h.answers[stream.stream_id]
        assert answer.code == grpc.StatusCode.INTERNAL and "exactly one request message" in answer.details
        assert not h.dataplane.submitted and not h.protocol.calls
        assert not h.protocol.arriving  # nothing is arriving any more: no read deadline is kept

    run(loop, test)


@pytest.mark.parametrize(
    ("body", "details"),
    [
        (frame(REQUEST) + frame(REQUEST), "exactly one request message"),
        (frame(REQUEST)[:-3], "ended inside a message"),
        (b"", "takes a request message"),
    ],
    ids=["two messages", "truncated", "empty"],
)
def test_a_unary_call_must_carry_exactly_one_message(loop: asyncio.AbstractEventLoop, body: bytes, details: str):
    async def test() -> None:
        h = Harness()
        stream = h.start()
        if body:
            stream.send_data(body)
        stream.end_message()
        h.send()
        await h.exchange()
        answer = h.answers[stream.stream_id]
        assert answer.code == grpc.StatusCode.INTERNAL and details in answer.details and answer.body == b""
        assert not h.dataplane.submitted and h.in_flight() == 0

    run(loop, test)


def test_compressed_messages_are_decompressed_and_unknown_encodings_refused(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = Harness()
        compressed = b"\x01" + len(packed := gzip.compress(REQUEST)).to_bytes(4, "big") + packed
        for encoding in (b"gzip", b"br"):
            stream = h.start(headers=[*GRPC_HEADERS, (b"grpc-encoding", encoding)])
            stream.send_data(compressed)
            stream.end_message()
            h.send()
        await h.exchange()
        [(_, _, item, _)] = h.dataplane.submitted
        assert item.body == REQUEST
        refused = h.answers[3]
        assert refused.code == grpc.StatusCode.UNIMPLEMENTED and "'br'" in refused.details
        h.answer(0, ResponseItem(200, b"ok", "application/grpc"))
        await h.exchange()

    run(loop, test)


def test_errors_end_the_call_with_their_status_and_are_counted(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = Harness()
        missing = h.call(pb.ModelInferRequest(model_name="missing").SerializeToString())
        garbage = h.call(b"\xff\xff\xff")
        failed = h.call()
        h.answer(0, ResponseItem(400, b"", "", error=ErrorInfo("InputError", "input x: bad shape")))
        await h.exchange()
        assert h.answers[missing].code == grpc.StatusCode.NOT_FOUND
        assert h.answers[missing].details == "model missing is not registered, 100%25 sure"
        assert h.answers[garbage].code == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid ModelInferRequest" in h.answers[garbage].details
        assert h.answers[failed].code == grpc.StatusCode.INVALID_ARGUMENT
        assert h.answers[failed].details == "input x: bad shape" and h.answers[failed].body == b""
        assert h.in_flight() == 0
        scraped = h.metrics.exposition().decode()
        assert 'code="NOT_FOUND"' in scraped and 'code="INVALID_ARGUMENT"' in scraped

    run(loop, test)


def test_the_calls_deadline_cancels_it_at_the_model(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = Harness()
        sid = h.call(headers=[*GRPC_HEADERS, (b"grpc-timeout", b"30m")])
        malformed = h.call(headers=[*GRPC_HEADERS, (b"grpc-timeout", b"soon")])
        await asyncio.sleep(0.1)
        await h.exchange()
        [(_, _, _, future)] = h.dataplane.submitted
        assert future.cancelled() and h.answers[sid].code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert h.answers[malformed].code == grpc.StatusCode.INTERNAL and "grpc-timeout" in h.answers[malformed].details
        assert h.in_flight() == 0 and not h.protocol.calls

    run(loop, test)


def test_a_client_that_resets_its_stream_or_leaves_cancels_its_call(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = Harness()
        reset = h.call()
        kept = h.call()
        h.client.stream(reset).reset(8)  # CANCEL
        h.send()
        await h.exchange()
        assert h.dataplane.submitted[0][3].cancelled() and h.in_flight() == 1
        h.answer(1, ResponseItem(200, b"ok", "application/grpc"))
        await h.exchange()
        assert h.answers[kept].message == b"ok" and not h.answers[reset].ended
        h.call()
        h.start().send_data(b"\x00\x00")  # this one never finished its body
        h.send()
        h.protocol.connection_lost(None)
        await h.exchange()
        assert h.dataplane.submitted[2][3].cancelled() and h.in_flight() == 0
        assert 'code="CANCELLED"' in h.metrics.exposition().decode()

    run(loop, test)


def test_an_inference_key_is_required_when_inference_auth_is_on(loop: asyncio.AbstractEventLoop, tmp_path: Any):
    async def test() -> None:
        keys = KeyStore(tmp_path / "keys.json")
        h = Harness(keys=keys)
        refused = h.call()
        allowed = h.call(headers=[*GRPC_HEADERS, (b"authorization", f"Bearer {keys.key('inference')}".encode())])
        await h.exchange()
        assert h.answers[refused].code == grpc.StatusCode.UNAUTHENTICATED
        assert len(h.dataplane.submitted) == 1
        h.answer(0, ResponseItem(200, b"ok", "application/grpc"))
        await h.exchange()
        assert h.answers[allowed].message == b"ok"

    run(loop, test)


def test_each_call_reads_its_own_headers_when_a_connection_repeats_or_changes_them(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = Harness()
        first = [*GRPC_HEADERS, (b"x-request-id", b"r-1"), (b"tag", b"a")]
        second = [*GRPC_HEADERS, (b"x-request-id", b"r-2")]
        timed = [*GRPC_HEADERS, (b"grpc-timeout", b"1n"), (b"x-request-id", b"r-3")]
        for headers in (first, first, second, first, timed, second):
            h.call(headers=headers)
            await h.exchange()
        items = [item for _, _, item, _ in h.dataplane.submitted]
        assert [item.request_id for item in items] == ["r-1", "r-1", "r-2", "r-1", "r-3", "r-2"]
        assert [("tag", "a") in item.headers for item in items] == [True, True, False, True, False, False]
        expired = [a for a in h.answers.values() if a.ended and a.code == grpc.StatusCode.DEADLINE_EXCEEDED]
        assert len(expired) == 1  # the call with a deadline, and only it

    run(loop, test)


def test_other_unary_calls_run_as_tasks_and_requests_without_te_trailers_are_answered_too(
    loop: asyncio.AbstractEventLoop,
):
    async def test() -> None:
        h = Harness()
        live = h.call(b"", path=SERVICE + b"ServerLive")
        no_trailers = h.call(headers=[(b"content-type", b"application/grpc")])
        await h.exchange()
        assert pb.ServerLiveResponse.FromString(h.answers[live].message).live and not h.server.tasks
        h.answer(0, ResponseItem(200, b"ok", "application/grpc"))
        await h.exchange()
        assert h.answers[no_trailers].message == b"ok" and h.answers[no_trailers].code == grpc.StatusCode.OK
        not_grpc = h.start(headers=[(b"content-type", b"application/json")])
        not_grpc.end_message()
        unknown = h.call(b"", path=SERVICE + b"Nope")
        h.send()
        await h.exchange()
        assert h.answers[unknown].code == grpc.StatusCode.UNIMPLEMENTED and "Nope" in h.answers[unknown].details
        assert h.answers[not_grpc.stream_id].status == 415 and b"speaks gRPC" in h.answers[not_grpc.stream_id].body
        assert all(a.status == 200 for sid, a in h.answers.items() if sid != not_grpc.stream_id)

    run(loop, test)


def test_an_unexpected_failure_is_logged_counted_and_answered_internal(
    loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
):
    async def test() -> None:
        h = Harness()
        sid = h.call()
        await h.exchange()
        h.dataplane.submitted[0][3].set_exception(ValueError("boom"))
        await h.exchange()
        assert h.answers[sid].code == grpc.StatusCode.INTERNAL and h.answers[sid].details == "ValueError: boom"
        assert h.in_flight() == 0 and "ModelInfer failed" in caplog.text
        assert 'code="INTERNAL"' in h.metrics.exposition().decode()

    run(loop, test)


def test_an_answer_bigger_than_the_clients_window_arrives_whole(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = Harness()
        sid = h.call()
        await h.exchange()
        big = bytes(range(256)) * 2000  # 512 KB: the client's window is 64 KiB until it sends updates
        h.answer(0, ResponseItem(200, big, "application/grpc"))
        for _ in range(50):
            await h.exchange()
            if h.answers[sid].ended:
                break
        assert h.answers[sid].code == grpc.StatusCode.OK and h.answers[sid].message == big
        assert not h.transport.closed

    run(loop, test)


def test_a_graceful_stop_lets_the_call_in_flight_finish_then_closes(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = Harness()
        sid = h.call()
        await h.exchange()
        h.protocol.shutdown()
        assert not h.transport.closed  # a call is in flight
        h.answer(0, ResponseItem(200, b"last", "application/grpc"))
        await h.exchange()
        assert h.answers[sid].message == b"last" and h.transport.closed

    run(loop, test)


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout_and_a_busy_one_is_not(
    loop: asyncio.AbstractEventLoop,
):
    async def test() -> None:
        h = Harness(keep_alive_s=0.3)
        await h.exchange()
        for index in range(4):  # a call every 0.15 s: idle for half the timeout at most
            stream = h.call()
            await h.exchange()
            h.answer(index, ResponseItem(200, b"ok", "application/grpc"))
            await h.exchange()
            assert h.answers[stream].code == grpc.StatusCode.OK
            await asyncio.sleep(0.15)
        assert not h.transport.closed  # 0.6 s since the first answer, never idle for 0.3 s
        stream = h.call()
        await asyncio.sleep(0.45)  # busy: a call waits for its model, past the timeout
        assert not h.transport.closed
        h.answer(4, ResponseItem(200, b"ok", "application/grpc"))
        await h.exchange()
        assert h.answers[stream].code == grpc.StatusCode.OK
        await asyncio.sleep(0.2)
        assert not h.transport.closed  # idle for 0.2 s only
        await asyncio.sleep(0.2)
        assert h.transport.closed
        h.client.receive_data(h.transport.take())
        assert any(isinstance(event, zttp.GoAway) for event in iter(h.client.next_event, zttp.NEED_DATA))

        # A connection that goes away drops its idle timer at once (the loop would keep it alive till then).
        h = Harness(keep_alive_s=300)
        h.call()
        await h.exchange()
        h.answer(0, ResponseItem(200, b"ok", "application/grpc"))
        await h.exchange()
        assert h.protocol.timer is not None
        h.protocol.connection_lost(None)
        assert h.protocol.timer is None

    run(loop, test)


def test_a_request_that_stops_arriving_ends_its_call_and_the_connection_serves_on(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = Harness(read_timeout_s=0.3)
        await h.exchange()
        stalled = h.start()
        stalled.send_data(frame(REQUEST)[:8])  # a piece of its message, then nothing
        h.send()
        slow = h.start()  # another call on the connection, whose request keeps coming
        whole = frame(REQUEST)
        for piece in (whole[:4], whole[4:10]):
            slow.send_data(piece)
            h.send()
            await h.exchange()
            await asyncio.sleep(0.2)  # each pause under the timeout; 0.4 s in all, past it
        assert not h.answers[slow.stream_id].ended
        slow.send_data(whole[10:])
        slow.end_message()
        h.send()
        await h.exchange()
        assert len(h.dataplane.submitted) == 1  # the slow call reached its model; the stalled one did not
        answer = h.answers[stalled.stream_id]
        assert answer.code == grpc.StatusCode.DEADLINE_EXCEEDED, answer.trailers
        assert "request_read_timeout_s (0.3 s)" in answer.details
        assert answer.reset  # the rest of its request is not wanted (RFC 9113 section 8.1)
        h.answer(0, ResponseItem(200, b"ok", "application/grpc"))
        await h.exchange()
        assert h.answers[slow.stream_id].message == b"ok"
        assert not h.transport.closed and not h.protocol.calls
        assert not h.protocol.arriving
        sid = h.call()
        await h.exchange()
        h.answer(1, ResponseItem(200, b"again", "application/grpc"))
        await h.exchange()
        assert h.answers[sid].message == b"again"

    run(loop, test)


def test_a_streaming_call_may_pause_past_the_read_timeout(loop: asyncio.AbstractEventLoop):
    async def test() -> None:
        h = Harness(read_timeout_s=0.2)
        await h.exchange()
        stream = h.start(SERVICE + b"ModelStreamInfer")
        stream.send_data(frame(REQUEST))
        h.send()
        await h.exchange()
        await asyncio.sleep(0.5)
        await h.exchange()
        assert not h.answers[stream.stream_id].ended  # still open: a stream's requests come when they come
        assert len(h.dataplane.submitted) == 1
        stream.end_message()
        h.send()
        h.answer(0, ResponseItem(200, b"ok", "application/grpc"))
        await h.exchange()
        await h.exchange()
        assert h.answers[stream.stream_id].code == grpc.StatusCode.OK

    run(loop, test)


def test_a_client_that_does_not_read_what_is_sent_to_it_is_read_no_further(loop: asyncio.AbstractEventLoop):
    """zttp answers every PING and SETTINGS frame; a client that sent them in a stream and never read grew the
    frontend by as much as it sent while uvicorn's protocol went on reading (test_unread_answers.py)."""

    async def test() -> None:
        h = Harness()
        stream = h.call()
        await h.exchange()
        h.protocol.pause_writing()  # the transport holds more unsent bytes than its high-water mark
        assert not h.transport.reading
        h.answer(0, ResponseItem(200, b"ok", "application/grpc"))
        await h.exchange()
        assert h.answers[stream].ended  # its answer was written (the transport holds it), the stream closed
        assert not h.transport.reading
        h.protocol.resume_writing()
        assert h.transport.reading
        await h.exchange()
        assert h.answers[stream].code == grpc.StatusCode.OK and h.transport.reading
        second = h.call()
        await h.exchange()
        h.answer(1, ResponseItem(200, b"ok", "application/grpc"))
        await h.exchange()
        assert h.answers[second].code == grpc.StatusCode.OK

    run(loop, test)


def test_a_call_whose_request_trickles_under_the_floor_ends_and_the_connection_serves_on(
    loop: asyncio.AbstractEventLoop,
):
    async def test() -> None:
        h = Harness(read_timeout_s=1.0, min_body_rate=50.0, body_rate_grace_s=0.1)
        await h.exchange()
        trickling, steady = h.start(), h.start()
        whole = frame(REQUEST)
        steady_sent = 0
        for index in range(len(whole)):  # one byte every 0.03 s: 33 bytes/s, each pause far inside the 1 s timeout
            if h.answers[trickling.stream_id].ended:
                break
            trickling.send_data(whole[index : index + 1])
            if index % 2 == 0:  # the other call: 7 bytes every 0.06 s, 116 bytes/s, over the floor
                steady.send_data(whole[steady_sent : steady_sent + 7])
                steady_sent += 7
            h.send()
            await h.exchange()
            await asyncio.sleep(0.03)
        answer = h.answers[trickling.stream_id]
        assert answer.code == grpc.StatusCode.DEADLINE_EXCEEDED, answer.trailers
        assert "min_request_body_rate_bytes_s (50 bytes/s" in answer.details
        assert answer.reset  # the rest of its request is not wanted (RFC 9113 section 8.1)
        assert h.dataplane.submitted == [] and not h.answers[steady.stream_id].ended
        steady.send_data(whole[steady_sent:])
        steady.end_message()
        h.send()
        await h.exchange()
        [(_, _, item, _)] = h.dataplane.submitted
        assert item.body == REQUEST  # the steady call's message, whole
        h.answer(0, ResponseItem(200, b"ok", "application/grpc"))
        await h.exchange()
        assert h.answers[steady.stream_id].message == b"ok" and not h.transport.closed

    run(loop, test)
