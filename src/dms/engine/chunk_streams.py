"""Streamed answers on the server's side: chunks from a worker to the transport that asked for them.

A transport that can send an answer as it is made submits the request with a ``ChunkReader``. While the
request's batch runs, each ``Chunk`` its worker sends reaches that reader with the request's
``StreamControl``, through which the transport says when the chunk has gone to its client (``credit``: the
worker may send one more) or that the client has left (``stop``: the worker closes that request's generator
before its next chunk). A worker sends at most ``STREAM_WINDOW`` chunks of one request ahead of its credits,
so a client that reads slowly holds back its own answer, never the server's memory; while the worker waits on
such a client, its ``response_timeout_s`` clock is held (``WorkerLink.hold_clock``), and the transport gives
the client up after ``stream_stall_timeout_s``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol

from dms.messages import STREAM_WINDOW, Chunk, ResponseItem, StreamCredit, StreamEnd, Withdraw, encode_frame

if TYPE_CHECKING:
    from dms.engine.worker_link import WorkerLink


class ChunkReader(Protocol):
    """A transport's end of one streamed request."""

    def chunk(self, chunk: Chunk, control: StreamControl) -> None:
        """One more chunk of the answer, in order; the request's final ``ResponseItem`` still ends it."""
        ...


class StreamControl:
    """The server's say over one streamed request of a running batch (see the module's docstring)."""

    __slots__ = ("batch_id", "index", "link", "stopped", "unwritten")

    def __init__(self, link: WorkerLink, batch_id: int, index: int) -> None:
        self.link = link
        self.batch_id = batch_id
        self.index = index
        self.unwritten = 0
        """Chunks received that the transport has not yet credited."""
        self.stopped = False

    @property
    def held(self) -> bool:
        """The worker may be waiting on this request's client (it has sent all the chunks it may)."""
        return self.unwritten >= STREAM_WINDOW and not self.stopped

    def received(self) -> None:
        was_held = self.held
        self.unwritten += 1
        if self.held and not was_held:
            self.link.hold_clock()

    def credit(self, chunks: int = 1) -> None:
        """``chunks`` more chunks have gone to the client: the worker may send as many more."""
        if self.stopped or chunks <= 0:
            return
        was_held = self.held
        self.unwritten -= chunks
        self.link.notify(encode_frame(StreamCredit(self.batch_id, self.index, chunks)))
        if was_held and not self.held:
            self.link.release_clock()

    def stop(self) -> None:
        """The client has gone: the worker stops making this answer."""
        if self.stopped:
            return
        was_held = self.held
        self.stopped = True
        self.link.notify(encode_frame(Withdraw(self.batch_id, [self.index])))
        if was_held:
            self.link.release_clock()


class StreamedRequest:
    """A request whose answer streams, as the batcher hands it to its worker: its transport's reader for the
    chunks, and its future, which its last word resolves as soon as the worker sends it (``StreamEnd``), rather
    than when the rest of its batch has ended."""

    __slots__ = ("future", "reader")

    def __init__(self, reader: ChunkReader, future: asyncio.Future[ResponseItem]) -> None:
        self.reader = reader
        self.future = future

    def chunk(self, chunk: Chunk, control: StreamControl) -> None:
        self.reader.chunk(chunk, control)

    def end(self, item: ResponseItem) -> None:
        if not self.future.done():
            self.future.set_result(item)


class BatchChunks:
    """The streamed requests of one batch on one worker: each chunk to its request's reader."""

    __slots__ = ("batch_id", "controls", "link", "readers")

    def __init__(self, link: WorkerLink, batch_id: int, readers: list[ChunkReader | None]) -> None:
        self.link = link
        self.batch_id = batch_id
        self.readers = readers
        self.controls: dict[int, StreamControl] = {}
        """Made at a request's first chunk (most answers, even of requests that may stream, come whole)."""

    def deliver(self, chunk: Chunk | StreamEnd) -> bool:
        """Hand ``chunk`` to its reader (or a stream's end to its request); False when its request did not ask
        for a stream (the worker erred)."""
        index = chunk.index
        reader = self.readers[index] if 0 <= index < len(self.readers) else None
        if reader is None:
            return False
        if type(chunk) is StreamEnd:
            if isinstance(reader, StreamedRequest):
                chunk.item.batch_size = len(self.readers)
                reader.end(chunk.item)
            return True
        assert type(chunk) is Chunk
        control = self.controls.get(index)
        if control is None:
            control = self.controls[index] = StreamControl(self.link, self.batch_id, index)
        if not control.stopped:
            control.received()
            reader.chunk(chunk, control)
        return True


class ChunkQueue:
    """A ``ChunkReader`` for a transport that awaits (a gRPC stream): the chunks in order, each credited to the worker
    once its taker comes back for the next, and the end when the request's answer has come."""

    __slots__ = ("_items", "_last", "_left", "_wake")

    def __init__(self) -> None:
        self._items: deque[tuple[Chunk, StreamControl]] = deque()
        self._wake: asyncio.Future[None] | None = None
        self._last: StreamControl | None = None
        self._left = False

    def chunk(self, chunk: Chunk, control: StreamControl) -> None:
        if self._left:  # nobody will take it: the worker stops making more
            control.stop()
            return
        self._items.append((chunk, control))
        self._set_wake()

    def given_up(self, answer: asyncio.Future[Any]) -> None:
        """A done callback for the request's future: once it is cancelled (nobody will read the answer, maybe
        before its first chunk), the worker stops making it."""
        if answer.cancelled():
            self._leave()

    def _leave(self) -> None:
        self._left = True
        if self._last is not None:
            self._last.stop()
        for _, control in self._items:
            control.stop()
        self._items.clear()

    def _set_wake(self, _: Any = None) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def until(self, answer: asyncio.Future[Any]) -> AsyncIterator[Chunk]:
        """Each chunk as it comes, until ``answer`` (the request's future) is done and every chunk before it taken.
        A taker that stops early (its client left) stops the worker's generator and gives up the answer."""
        answer.add_done_callback(self._set_wake)
        try:
            while True:
                while self._items:
                    chunk, self._last = self._items.popleft()
                    yield chunk
                    self._last.credit(1)
                if answer.done():
                    return
                self._wake = answer.get_loop().create_future()
                await self._wake
        finally:
            if not answer.done():
                self._leave()
                answer.cancel()
