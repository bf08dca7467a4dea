"""The server's end of a worker's socket pair, as an ``asyncio.Protocol`` that reads whole frames.

A worker answers frames one at a time, in the order they came, so readers wait in line: the first
reply goes to the first reader, and so on. The server may send a second batch before the first is
answered (it waits in the socket; see ``WorkerPool.take_spare``), so up to two readers wait. Only the
first reader's clock runs: a reader's ``timeout_s`` counts from when the reply before it arrived,
since its frame waits unread until then. The protocol cuts the incoming bytes into frames
(``messages.HEADER`` and a msgpack payload) as they arrive and hands each message to its reader's
future: one callback per reply, where a stream reader costs a future per ``readexactly`` and Python
buffer bookkeeping around each (~14 µs of the frontend's CPU per round trip, measured against
``asyncio.StreamReader`` with a worker that echoes).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import msgspec

from dms.messages import Chunk, FromWorker, StreamEnd, decode_frame, frame_end, from_worker_decoder

log = logging.getLogger("dms.worker")


class _Reader:
    __slots__ = ("future", "held", "timeout_s", "timer")

    def __init__(self, future: asyncio.Future[FromWorker | None], timeout_s: float) -> None:
        self.future = future
        self.timeout_s = timeout_s
        self.timer: asyncio.TimerHandle | None = None
        self.held = False
        """Its clock does not run: the worker waits on a client that reads a streamed answer slowly."""


class WorkerLink(asyncio.Protocol):
    """Frames from one worker; ``receive`` gives the next message, or None once the socket has ended."""

    def __init__(
        self, on_garbled: Callable[[str], None], on_chunk: Callable[[Chunk | StreamEnd], None] | None = None
    ) -> None:
        self._on_garbled = on_garbled
        """Called (once) when the worker sent bytes that are not a frame; the link then counts as ended."""
        self._on_chunk = on_chunk
        """Takes the chunks and ends of streamed answers (``dms.engine.chunk_streams``): they are no replies."""
        self._holds = 0
        """Streamed requests whose clients the worker may be waiting on: while there are any, no clock runs."""
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._messages: deque[FromWorker] = deque()
        self._readers: deque[_Reader] = deque()
        self._ended = False
        self._room = 0
        """The largest frame the socket's send buffer was sized for."""
        self.sent = 0
        """Frames sent so far that the worker answers (``send``; ``notify`` is not counted)."""
        self.received = 0
        """Frames received so far: the frame sent as number ``n`` (from 0) has been taken up by the worker
        once ``received >= n``, as the worker reads its next frame only after answering the one before."""

    # -- asyncio.Protocol -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        sock = self._socket()
        self._room = int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)) if sock is not None else 0

    def data_received(self, data: bytes) -> None:
        if self._ended:
            return
        try:
            if self._buffer:
                self._buffer += data
                del self._buffer[: self._take_frames(self._buffer)]
            else:  # the usual case: a whole reply in one read, decoded from the bytes as they came
                taken = self._take_frames(data)
                if taken < len(data):
                    self._buffer += memoryview(data)[taken:]
        except msgspec.DecodeError as exc:
            self._garbled(f"it sent a frame the server cannot read ({exc})")

    def eof_received(self) -> bool | None:
        self._end()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()

    # -- the server's side --------------------------------------------------------------------------
    def send(self, frame: bytes) -> None:
        """Send a frame the worker answers with one frame."""
        self.notify(frame)
        self.sent += 1

    def make_room(self, size: int) -> None:
        """Let the socket hold a frame of ``size`` bytes whole, so that a batch sent while the worker is busy
        lies ready for it, rather than going out a piece per turn of the server's loop as the worker reads.

        The default send buffer (208 KiB) is less than a few JPEGs. It grows only for a frame that needs it:
        asked of the tiny model's frames too, a larger buffer cost it ~3 % of its requests per second. The
        kernel doubles what is asked, up to ``net.core.wmem_max`` doubled.
        """
        if size <= self._room:
            return
        self._room = size
        sock = self._socket()
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)

    def _socket(self) -> Any:
        """The transport's socket (uvloop's stand-in for one, which takes socket options)."""
        return self._transport.get_extra_info("socket") if self._transport is not None else None

    def notify(self, frame: bytes) -> None:
        """Send a frame the worker does not answer."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(frame)

    async def receive(self, timeout_s: float) -> FromWorker | None:
        """The reply to the oldest frame no reader has claimed yet; None when the socket ended first.

        ``TimeoutError`` when it has not come ``timeout_s`` after this reader reached the front of the
        line. A reader that timed out or was cancelled keeps its place: the reply meant for it, should it
        still come, is dropped rather than handed to the reader behind it.
        """
        if self._messages and not self._readers:
            return self._messages.popleft()
        if self._ended:
            return None
        reader = _Reader(asyncio.get_running_loop().create_future(), timeout_s)
        self._readers.append(reader)
        self._start_due_clock()
        try:
            return await reader.future
        finally:
            if reader.timer is not None:
                reader.timer.cancel()
            if reader.future.cancelled():
                self._start_due_clock()  # it gave up while in line: the reader behind it is now due

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    # -- frames -------------------------------------------------------------------------------------
    def _take_frames(self, data: bytes | bytearray) -> int:
        """Deliver every whole frame at the start of ``data``; return how many bytes they took."""
        start = 0
        while (end := frame_end(data, start)) <= len(data):
            self._deliver(decode_frame(from_worker_decoder, data, start, end))
            start = end
        return start

    def _deliver(self, message: FromWorker) -> None:
        if type(message) is Chunk or type(message) is StreamEnd:
            if self._on_chunk is None:
                raise msgspec.DecodeError("a chunk of an answer that nobody streams")
            self._on_chunk(message)
            if not self._holds:
                self._restart_front_clock()  # the worker is at work: its time counts from its last chunk
            return
        self._holds = 0  # the batch is over, and its streams with it
        self.received += 1
        if not self._readers:
            self._messages.append(message)
            return
        reader = self._readers.popleft()
        if not reader.future.done():  # else its reader gave up on it, and the reply goes nowhere
            reader.future.set_result(message)
        self._start_due_clock()

    # -- the clock of a streamed batch ------------------------------------------------------------------
    def hold_clock(self) -> None:
        """The worker may be waiting on a slow client (``StreamControl``): stop the batch's clock until released."""
        self._holds += 1
        if self._holds == 1:
            reader = self._front()
            if reader is not None:
                reader.held = True
                if reader.timer is not None:
                    reader.timer.cancel()
                    reader.timer = None

    def release_clock(self) -> None:
        if self._holds <= 0:
            return
        self._holds -= 1
        if not self._holds:
            self._restart_front_clock()

    def _front(self) -> _Reader | None:
        """The reader whose reply comes next (its batch is the one the worker is on)."""
        return next((reader for reader in self._readers if not reader.future.done()), None)

    def _restart_front_clock(self) -> None:
        reader = self._front()
        if reader is None:
            return
        reader.held = False
        if reader.timer is not None:
            reader.timer.cancel()
        reader.timer = reader.future.get_loop().call_later(reader.timeout_s, self._time_out, reader)

    def _start_due_clock(self) -> None:
        """Start the clock of the first reader in line without one, once every reader ahead of it has been
        answered or has given up (timed out, cancelled): it is the one whose reply comes next. So a reader
        behind a late worker does not wait for ever, whether it was in line before the timeout or after."""
        for reader in self._readers:
            if reader.timer is None:
                if not reader.held:
                    reader.timer = reader.future.get_loop().call_later(reader.timeout_s, self._time_out, reader)
                return
            if not reader.future.done():
                return  # the reader ahead still waits, its clock running

    def _time_out(self, reader: _Reader) -> None:
        if not reader.future.done():
            reader.future.set_exception(TimeoutError())
        self._start_due_clock()  # the worker is late; the caller decides what happens to it

    def _end(self) -> None:
        self._ended = True
        while self._readers:
            reader = self._readers.popleft()
            if not reader.future.done():
                reader.future.set_result(None)

    def _garbled(self, reason: str) -> None:
        log.error("a worker's socket: %s", reason)
        self._buffer.clear()
        self._end()
        self.close()
        self._on_garbled(reason)
