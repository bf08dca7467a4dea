"""CoalescedWrites: what one event-loop turn writes to a connection leaves in one write, in order."""

from __future__ import annotations

import asyncio
from typing import Any

from dms.grpc.write_coalescing import FLUSH_BYTES, CoalescedWrites


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5)}.get(name, default)


def coalesced() -> tuple[CoalescedWrites, RecordingTransport]:
    real = RecordingTransport()
    return CoalescedWrites(real, asyncio.get_running_loop()), real  # type: ignore[arg-type]


def test_writes_of_one_turn_leave_together_in_the_next():
    async def scenario() -> None:
        transport, real = coalesced()
        transport.write(b"headers|")
        transport.write(b"")
        transport.write(memoryview(b"data|"))
        transport.write(b"trailers")
        assert real.writes == []
        await asyncio.sleep(0)
        assert real.writes == [b"headers|data|trailers"]
        transport.write(b"next")
        await asyncio.sleep(0)
        assert real.writes == [b"headers|data|trailers", b"next"]
        assert transport.get_extra_info("peername") == ("127.0.0.1", 5)

    asyncio.run(scenario())


def test_big_writes_go_out_at_once_after_what_was_pending():
    async def scenario() -> None:
        transport, real = coalesced()
        big = b"x" * FLUSH_BYTES
        transport.write(b"head")
        transport.write(big)
        assert real.writes == [b"head", big]
        for _ in range(FLUSH_BYTES // 1000 + 1):
            transport.write(b"y" * 1000)
        assert real.writes[2:] == [b"y" * 1000 * (FLUSH_BYTES // 1000 + 1)]  # flushed on reaching the bound
        await asyncio.sleep(0)
        assert len(real.writes) == 3

    asyncio.run(scenario())


def test_close_sends_what_is_pending_and_abort_drops_it():
    async def scenario() -> None:
        transport, real = coalesced()
        transport.write(b"goaway")
        transport.close()
        assert real.writes == [b"goaway"] and real.closed
        transport, real = coalesced()
        transport.write(b"lost")
        transport.abort()
        await asyncio.sleep(0)
        assert real.writes == [] and real.aborted

    asyncio.run(scenario())


def test_write_now_goes_out_at_once_after_what_was_pending():
    async def scenario() -> None:
        transport, real = coalesced()
        transport.write_now(b"alone")
        assert real.writes == [b"alone"]
        transport.write(b"window-update|")
        transport.write_now(b"answer")
        assert real.writes == [b"alone", b"window-update|answer"]
        await asyncio.sleep(0)
        assert real.writes == [b"alone", b"window-update|answer"]  # nothing left for the turn's end

    asyncio.run(scenario())
