"""Streamed chunks on the server's end of a worker's socket: ``WorkerLink`` hands them on, not as replies;
``StreamControl`` credits and stops through the socket; the batch's clock runs from the last chunk and stops
while the worker waits on a slow client."""

from __future__ import annotations

import asyncio
import socket

from dms.engine.chunk_streams import BatchChunks, ChunkQueue, StreamControl, StreamedRequest
from dms.engine.worker_link import WorkerLink
from dms.messages import (
    STREAM_WINDOW,
    BatchResult,
    Chunk,
    ResponseItem,
    StreamCredit,
    StreamEnd,
    Withdraw,
    decode_frame,
    encode_frame,
    frame_end,
    to_worker_decoder,
)
from tests.unit.engine.test_worker_link import result, run_with_link
from tests.unit.protocol_support import FakeStreamControl


class Reader:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.controls: list[StreamControl] = []

    def chunk(self, chunk: Chunk, control: StreamControl) -> None:
        self.chunks.append(chunk.body)
        self.controls.append(control)


def read_frames(sock: socket.socket) -> list[object]:
    sock.setblocking(False)
    data = b""
    try:
        while part := sock.recv(65536):
            data += part
    except BlockingIOError:
        pass
    frames, start = [], 0
    while (end := frame_end(data, start)) <= len(data):
        frames.append(decode_frame(to_worker_decoder, data, start, end))
        start = end
    return frames


async def streamed_link(batch_id: int, readers: list[Reader | None]) -> tuple[WorkerLink, socket.socket]:
    """A link on a socket pair whose chunks go to ``readers`` (a batch's), and the worker's end."""
    server_end, worker_end = socket.socketpair()
    holder: list[BatchChunks] = []
    loop = asyncio.get_running_loop()
    _, link = await loop.create_unix_connection(
        lambda: WorkerLink(lambda reason: None, lambda chunk: holder[0].deliver(chunk)), sock=server_end
    )
    holder.append(BatchChunks(link, batch_id, readers))  # type: ignore[arg-type]
    return link, worker_end


def test_chunks_reach_their_readers_and_the_reply_comes_after() -> None:
    reader = Reader()

    async def main() -> None:
        link, worker_end = await streamed_link(3, [None, reader])
        with worker_end:
            pending = asyncio.ensure_future(link.receive(10))
            await asyncio.sleep(0)
            worker_end.sendall(
                encode_frame(Chunk(3, 1, b"a")) + encode_frame(Chunk(3, 1, b"b")) + encode_frame(result(3, b"end"))
            )
            reply = await pending
            assert isinstance(reply, BatchResult) and reply.items[0].body == b"end"
            assert reader.chunks == [b"a", b"b"]
            assert link.received == 1  # chunks are no replies
            control = reader.controls[0]
            control.credit(2)
            control.stop()
            await asyncio.sleep(0.01)
            assert read_frames(worker_end) == [StreamCredit(3, 1, 2), Withdraw(3, [1])]
        link.close()
        await asyncio.sleep(0)

    asyncio.run(main())


def test_a_chunk_for_a_request_that_does_not_stream_is_refused() -> None:
    reader = Reader()

    async def main() -> None:
        server_end, _worker_end = socket.socketpair()
        loop = asyncio.get_running_loop()
        _, link = await loop.create_unix_connection(lambda: WorkerLink(lambda reason: None), sock=server_end)
        chunks = BatchChunks(link, 3, [None, reader])
        assert not chunks.deliver(Chunk(3, 0, b"a"))
        assert not chunks.deliver(Chunk(3, 9, b"a"))
        assert chunks.deliver(Chunk(3, 1, b"a"))
        link.close()
        _worker_end.close()
        await asyncio.sleep(0)

    asyncio.run(main())


def test_a_link_without_streams_counts_a_chunk_as_garbled() -> None:
    async def scenario(link: WorkerLink, worker: socket.socket, garbled: list[str]) -> None:
        pending = asyncio.ensure_future(link.receive(10))
        await asyncio.sleep(0)
        worker.sendall(encode_frame(Chunk(1, 0, b"x")))
        assert await pending is None
        assert garbled and "chunk" in garbled[0]

    run_with_link(scenario)


def test_each_chunk_restarts_the_clock_and_a_slow_client_holds_it() -> None:
    reader = Reader()

    async def main() -> None:
        link, worker_end = await streamed_link(1, [reader])
        with worker_end:
            pending = asyncio.ensure_future(link.receive(0.3))
            await asyncio.sleep(0)
            for _ in range(STREAM_WINDOW - 1):  # 0.1 s apart: 0.7 s in all, past the 0.3 s timeout
                worker_end.sendall(encode_frame(Chunk(1, 0, b"c")))
                await asyncio.sleep(0.1)
            assert not pending.done()
            worker_end.sendall(encode_frame(Chunk(1, 0, b"c")))  # the window is full: the worker waits on us
            await asyncio.sleep(0.6)
            assert not pending.done(), "the clock ran while the worker waited on a slow client"
            reader.controls[-1].credit(1)  # the client took one: the worker goes on, and its clock with it
            await asyncio.sleep(0.5)
            assert pending.done() and isinstance(pending.exception(), TimeoutError)
        link.close()
        await asyncio.sleep(0)

    asyncio.run(main())


def test_a_stop_releases_a_held_clock() -> None:
    link_calls: list[str] = []

    class FakeLink:
        def notify(self, frame: bytes) -> None:
            link_calls.append("notify")

        def hold_clock(self) -> None:
            link_calls.append("hold")

        def release_clock(self) -> None:
            link_calls.append("release")

    control = StreamControl(FakeLink(), 1, 0)  # type: ignore[arg-type]
    for _ in range(STREAM_WINDOW):
        control.received()
    assert control.held and link_calls == ["hold"]
    control.stop()
    control.stop()
    control.credit(1)
    assert link_calls == ["hold", "notify", "release"]


def test_a_chunk_queue_hands_out_chunks_until_the_answer_and_credits_each_once_taken() -> None:
    async def main() -> None:
        queue, control = ChunkQueue(), FakeStreamControl()
        answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        taken: list[bytes] = []

        async def take() -> None:
            async for chunk in queue.until(answer):
                taken.append(chunk.body)
                assert control.credits == len(taken) - 1  # credited when the taker comes back for more

        taker = asyncio.ensure_future(take())
        await asyncio.sleep(0)
        queue.chunk(Chunk(1, 0, b"a"), control)  # type: ignore[arg-type]
        queue.chunk(Chunk(1, 0, b"b"), control)  # type: ignore[arg-type]
        await asyncio.sleep(0)
        answer.set_result("done")
        await taker
        assert taken == [b"a", b"b"] and control.credits == 2 and not control.stopped

    asyncio.run(main())


def test_a_taker_that_stops_early_stops_the_worker_and_gives_up_the_answer() -> None:
    async def main() -> None:
        queue, control = ChunkQueue(), FakeStreamControl()
        answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        queue.chunk(Chunk(1, 0, b"a"), control)  # type: ignore[arg-type]
        chunks = queue.until(answer)
        assert (await anext(chunks)).body == b"a"
        await chunks.aclose()  # type: ignore[attr-defined]
        assert control.stopped and answer.cancelled()

    asyncio.run(main())


def test_a_request_given_up_before_its_chunks_are_read_stops_the_worker_at_each_chunk() -> None:
    """A stream request that is cancelled before anyone reads it (its gRPC stream ended while earlier requests were
    answered): chunks already in, and each that comes after, stop the worker's generator."""

    async def main() -> None:
        queue, early, late = ChunkQueue(), FakeStreamControl(), FakeStreamControl()
        answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        answer.add_done_callback(queue.given_up)
        queue.chunk(Chunk(1, 0, b"a"), early)  # type: ignore[arg-type]
        answer.cancel()
        await asyncio.sleep(0)
        assert early.stopped
        queue.chunk(Chunk(2, 0, b"b"), late)  # type: ignore[arg-type]
        assert late.stopped and late.credits == 0

    asyncio.run(main())


def test_a_stream_end_answers_its_request_before_its_batch_ends() -> None:
    async def main() -> None:
        link = WorkerLink(on_garbled=lambda reason: None)
        reader = Reader()
        future: asyncio.Future[ResponseItem] = asyncio.get_running_loop().create_future()
        chunks = BatchChunks(link, 4, [None, StreamedRequest(reader, future)])
        assert chunks.deliver(Chunk(4, 1, b"a"))
        assert chunks.deliver(StreamEnd(4, 1, ResponseItem(200, b"", "text/plain")))
        assert future.done() and future.result().batch_size == 2 and reader.chunks == [b"a"]
        assert not chunks.deliver(StreamEnd(4, 0, ResponseItem(200, b"", "")))  # request 0 streams nothing

    asyncio.run(main())
