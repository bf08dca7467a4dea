"""Frames over a worker's socket pair, both ends: the server's ``WorkerLink`` and the worker's ``Channel``.

Each test holds a real socket pair: one end in the code under test, the other written or read by the
test the way the other process would, in whole frames, in pieces, or several frames at once.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import msgspec
import pytest
import uvloop

from dms.engine.worker_link import WorkerLink
from dms.messages import (
    Batch,
    BatchResult,
    ErrorInfo,
    LoadFailed,
    RequestItem,
    ResponseItem,
    Withdraw,
    encode_frame,
)
from dms.worker.__main__ import Channel


def result(batch_id: int, body: bytes = b"ok") -> BatchResult:
    return BatchResult(batch_id=batch_id, items=[ResponseItem(status=200, body=body, content_type="text/plain")])


def run_with_link(scenario: Callable[[WorkerLink, socket.socket, list[str]], Awaitable[None]]) -> None:
    """Run ``scenario(link, worker_end, garbled_reasons)`` on uvloop, the link holding the server's end."""

    async def main() -> None:
        server_end, worker_end = socket.socketpair()
        garbled: list[str] = []
        loop = asyncio.get_running_loop()
        _, link = await loop.create_unix_connection(lambda: WorkerLink(garbled.append), sock=server_end)
        try:
            with worker_end:
                await scenario(link, worker_end, garbled)
        finally:
            link.close()
            await asyncio.sleep(0)  # let the transport finish closing

    uvloop.run(main())


class TestTheServersEnd:
    def test_a_reply_in_pieces_is_one_message(self) -> None:
        frame = encode_frame(result(7, b"x" * 100_000))

        async def scenario(link: WorkerLink, worker: socket.socket, garbled: list[str]) -> None:
            pending = asyncio.ensure_future(link.receive(10))
            cuts = [0, 2, 5, 40_000, len(frame)]  # the header itself split, then the payload
            for start, end in itertools.pairwise(cuts):
                assert not pending.done()
                worker.sendall(frame[start:end])
                await asyncio.sleep(0.01)
            message = await pending
            assert message == result(7, b"x" * 100_000)
            assert garbled == []

        run_with_link(scenario)

    def test_replies_that_arrive_together_are_read_in_order(self) -> None:
        async def scenario(link: WorkerLink, worker: socket.socket, garbled: list[str]) -> None:
            worker.sendall(encode_frame(result(1)) + encode_frame(result(2)) + encode_frame(result(3))[:9])
            assert await link.receive(10) == result(1)
            assert await link.receive(10) == result(2)
            worker.sendall(encode_frame(result(3))[9:])
            assert await link.receive(10) == result(3)

        run_with_link(scenario)

    def test_a_reply_waits_for_its_reader(self) -> None:
        async def scenario(link: WorkerLink, worker: socket.socket, garbled: list[str]) -> None:
            failed = LoadFailed(error=ErrorInfo("HandlerError", "no"))
            worker.sendall(encode_frame(failed))
            await asyncio.sleep(0.05)
            assert await link.receive(10) == failed

        run_with_link(scenario)

    def test_the_worker_closing_its_end_ends_the_wait_with_none(self) -> None:
        async def scenario(link: WorkerLink, worker: socket.socket, garbled: list[str]) -> None:
            pending = asyncio.ensure_future(link.receive(10))
            await asyncio.sleep(0.01)
            worker.sendall(encode_frame(result(1))[:10])  # a reply cut short by the worker's death
            worker.close()
            assert await pending is None
            assert await link.receive(10) is None  # and every read after it
            assert garbled == []

        run_with_link(scenario)

    def test_a_worker_that_does_not_answer_times_out(self) -> None:
        async def scenario(link: WorkerLink, worker: socket.socket, garbled: list[str]) -> None:
            with pytest.raises(TimeoutError):
                await link.receive(0.05)
            # A late answer belongs to the reader that gave up on it: it goes to no one after it.
            worker.sendall(encode_frame(result(4)) + encode_frame(result(5)))
            assert await link.receive(10) == result(5)
            assert (link.received, garbled) == (2, [])

        run_with_link(scenario)

    def test_bytes_that_are_not_a_frame_end_the_link_and_say_why(self) -> None:
        async def scenario(link: WorkerLink, worker: socket.socket, garbled: list[str]) -> None:
            pending = asyncio.ensure_future(link.receive(10))
            await asyncio.sleep(0.01)
            worker.sendall(b"\x00\x00\x00\x03abc")
            assert await pending is None
            assert len(garbled) == 1 and "cannot read" in garbled[0]
            await asyncio.sleep(0.01)
            assert worker.recv(1) == b""  # the server closed its end

        run_with_link(scenario)

    def test_readers_in_line_get_the_replies_in_the_order_they_asked(self) -> None:
        async def scenario(link: WorkerLink, worker: socket.socket, garbled: list[str]) -> None:
            first = asyncio.ensure_future(link.receive(10))
            second = asyncio.ensure_future(link.receive(10))
            await asyncio.sleep(0.01)
            worker.sendall(encode_frame(result(1)))
            assert await first == result(1)
            assert not second.done()
            worker.sendall(encode_frame(result(2)))
            assert await second == result(2)

        run_with_link(scenario)

    def test_a_reader_behind_another_starts_its_clock_when_the_one_ahead_is_answered(self) -> None:
        async def scenario(link: WorkerLink, worker: socket.socket, garbled: list[str]) -> None:
            first = asyncio.ensure_future(link.receive(10))
            second = asyncio.ensure_future(link.receive(0.2))
            await asyncio.sleep(0.3)  # longer than the second reader's own limit, all of it spent waiting in line
            assert not second.done()
            worker.sendall(encode_frame(result(1)))
            assert await first == result(1)
            await asyncio.sleep(0.1)
            worker.sendall(encode_frame(result(2)))
            assert await second == result(2)
            third = asyncio.ensure_future(link.receive(0.05))
            with pytest.raises(TimeoutError):
                await third

        run_with_link(scenario)

    def test_when_the_reader_ahead_times_out_the_one_behind_does_not_wait_forever(self) -> None:
        async def scenario(link: WorkerLink, worker: socket.socket, garbled: list[str]) -> None:
            first = asyncio.ensure_future(link.receive(0.05))
            second = asyncio.ensure_future(link.receive(0.05))
            with pytest.raises(TimeoutError):
                await first
            await asyncio.wait({second}, timeout=5)  # not wait_for: its own TimeoutError would pass for the link's
            assert second.done() and isinstance(second.exception(), TimeoutError)

        run_with_link(scenario)

    def test_a_reader_that_joins_behind_one_that_timed_out_has_its_own_clock(self) -> None:
        async def scenario(link: WorkerLink, worker: socket.socket, garbled: list[str]) -> None:
            with pytest.raises(TimeoutError):
                await link.receive(0.05)
            behind = asyncio.ensure_future(link.receive(0.05))
            await asyncio.wait({behind}, timeout=5)
            assert behind.done() and isinstance(behind.exception(), TimeoutError)

        run_with_link(scenario)

    def test_the_end_of_the_socket_reaches_every_reader_in_line(self) -> None:
        async def scenario(link: WorkerLink, worker: socket.socket, garbled: list[str]) -> None:
            link.send(b"")
            link.send(b"")
            readers = [asyncio.ensure_future(link.receive(10)) for _ in range(2)]
            await asyncio.sleep(0.01)
            worker.sendall(encode_frame(result(1)))
            worker.close()
            assert [await r for r in readers] == [result(1), None]
            assert (link.sent, link.received) == (2, 1)  # the second frame was never taken up

        run_with_link(scenario)

    def test_the_send_buffer_grows_only_for_a_frame_that_needs_it(self) -> None:
        async def scenario(link: WorkerLink, worker: socket.socket, garbled: list[str]) -> None:
            sock = link._transport.get_extra_info("socket")  # type: ignore[union-attr]
            before = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
            link.make_room(before // 2)
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == before
            link.make_room(before + 100_000)
            ceiling = 2 * int(Path("/proc/sys/net/core/wmem_max").read_text())  # the kernel doubles, up to this
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= min(before + 100_000, ceiling)

        run_with_link(scenario)

    def test_a_frame_goes_out_whole(self) -> None:
        batch = Batch(batch_id=3, items=[RequestItem("r1", b"{}", "application/json", [], [])])

        async def scenario(link: WorkerLink, worker: socket.socket, garbled: list[str]) -> None:
            link.send(encode_frame(batch))
            await asyncio.sleep(0.01)
            assert Channel(worker).recv() == batch

        run_with_link(scenario)


@pytest.fixture
def pair() -> Iterator[tuple[Channel, socket.socket]]:
    worker_end, server_end = socket.socketpair()
    with worker_end, server_end:
        worker_end.settimeout(10)
        yield Channel(worker_end), server_end


def batch(batch_id: int, body: bytes = b"[1, 2]") -> Batch:
    return Batch(batch_id=batch_id, items=[RequestItem(f"r{batch_id}", body, "application/json", [], [])])


class TestTheWorkersEnd:
    def test_frames_sent_together_are_read_one_at_a_time(self, pair: tuple[Channel, socket.socket]) -> None:
        channel, server = pair
        server.sendall(encode_frame(batch(1)) + encode_frame(batch(2)))
        assert channel.recv() == batch(1)
        assert channel.recv() == batch(2)

    def test_a_large_frame_in_pieces_is_one_message(self, pair: tuple[Channel, socket.socket]) -> None:
        channel, server = pair
        big = batch(5, b"y" * 3_000_000)
        frame = encode_frame(big)
        server.sendall(frame[:3])  # not even the whole header
        sender = asyncio.new_event_loop()
        try:
            done = sender.run_in_executor(None, server.sendall, frame[3:])
            assert channel.recv() == big
            sender.run_until_complete(done)
        finally:
            sender.close()

    def test_the_server_closing_its_end_is_none(self, pair: tuple[Channel, socket.socket]) -> None:
        channel, server = pair
        server.sendall(encode_frame(batch(1))[:6])
        server.shutdown(socket.SHUT_WR)
        assert channel.recv() is None

    def test_a_reply_goes_out_whole(self, pair: tuple[Channel, socket.socket]) -> None:
        channel, server = pair
        channel.send(result(9))
        data = server.recv(1 << 16)
        assert data == encode_frame(result(9))


class TestWithdrawals:
    def test_a_withdrawal_behind_a_queued_batch_names_the_requests_to_skip(
        self, pair: tuple[Channel, socket.socket]
    ) -> None:
        channel, server = pair
        queued = msgspec.structs.replace(batch(4), queued=True)
        server.sendall(
            encode_frame(queued)
            + encode_frame(Withdraw(batch_id=3, indices=[0]))  # for a batch already running: nothing to skip
            + encode_frame(Withdraw(batch_id=4, indices=[0]))
            + encode_frame(batch(5))
        )
        assert channel.recv() == queued
        assert channel.withdrawn(queued) == {0}
        assert channel.recv() == Withdraw(batch_id=3, indices=[0])  # handed out in order; the worker ignores it
        assert channel.recv() == batch(5)

    def test_a_batch_sent_to_an_idle_worker_reads_nothing_ahead(self, pair: tuple[Channel, socket.socket]) -> None:
        channel, server = pair
        server.sendall(encode_frame(batch(1)) + encode_frame(batch(2))[:5])
        assert channel.recv() == batch(1)
        assert channel.withdrawn(batch(1)) == set()
        server.sendall(encode_frame(batch(2))[5:])
        assert channel.recv() == batch(2)
