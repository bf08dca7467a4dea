"""Worker process entry point: ``python -m dms.worker --fd N``.

The server hands over one end of a socket pair; the worker loads its model, reports, then
answers one batch frame with one result frame until the socket closes. It ignores SIGINT and
SIGTERM: the server drives its shutdown by closing the socket.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import socket
import sys
import traceback
from collections import deque
from typing import TYPE_CHECKING

from dms.errors import DMSError
from dms.messages import (
    STREAM_WINDOW,
    Batch,
    Chunk,
    ErrorInfo,
    FromWorker,
    LoadFailed,
    LoadModel,
    ResponseItem,
    StreamCredit,
    StreamEnd,
    ToWorker,
    Withdraw,
    decode_frame,
    encode_frame,
    frame_end,
    to_worker_decoder,
)

if TYPE_CHECKING:
    from dms.worker.joined import Started
    from dms.worker.service import ModelService


class Channel:
    """Blocking framed messages over the worker's end of the socket pair."""

    _READ_SIZE = 1 << 16
    _MAX_READ = 1 << 22
    """Reads of a large frame go in pieces of up to this (``recv`` allocates the size it is asked for)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()
        self._ahead: deque[ToWorker] = deque()
        """Whole messages read while looking for withdrawals, not yet handed out."""

    def recv(self) -> ToWorker | None:
        """The next message (a small frame costs one read), or None once the server closed the socket."""
        if self._ahead:
            return self._ahead.popleft()
        buffer = self._buffer
        while (end := frame_end(buffer)) > len(buffer):
            if not self._fill(end - len(buffer)):
                return None
        return self._pop_frame(end)

    def _pop_frame(self, end: int) -> ToWorker:
        """Decode the whole frame at the start of the buffer (it ends at ``end``) and drop it from there."""
        message: ToWorker = decode_frame(to_worker_decoder, self._buffer, 0, end)
        del self._buffer[:end]
        return message

    def _fill(self, wanted: int) -> bool:
        """Wait for more bytes (at least one, up to what a frame still ``wanted``); False at end of file."""
        chunk = self.sock.recv(min(max(wanted, self._READ_SIZE), self._MAX_READ))
        self._buffer += chunk
        return bool(chunk)

    def withdrawn(self, batch: Batch) -> set[int]:
        """The indices of ``batch``'s requests withdrawn so far, from what has arrived (without waiting)."""
        if not batch.queued:
            return set()  # sent to an idle worker: it was taken up at once, so nothing can withdraw from it
        self.read_arrived(wait=False)
        found: set[int] = set()
        for message in self.take_about(batch.batch_id):
            if isinstance(message, Withdraw):
                found.update(message.indices)
        return found

    def read_arrived(self, wait: bool) -> bool:
        """Read the whole messages that have arrived into the line ahead (with ``wait``, block until one more
        has); False at end of file."""
        while True:
            while select.select([self.sock], [], [], 0)[0]:
                chunk = self.sock.recv(self._READ_SIZE)
                if not chunk:
                    return False  # ``recv`` reports the end once what is buffered has been handed out
                self._buffer += chunk
            taken = len(self._ahead)
            while (end := frame_end(self._buffer)) <= len(self._buffer):
                self._ahead.append(self._pop_frame(end))
            if not wait or len(self._ahead) > taken:
                return True
            select.select([self.sock], [], [])

    def take_about(self, batch_id: int) -> list[Withdraw | StreamCredit]:
        """Take the withdrawals and stream credits for ``batch_id`` out of the line ahead."""
        found = [m for m in self._ahead if isinstance(m, Withdraw | StreamCredit) and m.batch_id == batch_id]
        for message in found:
            self._ahead.remove(message)
        return found

    def take_batches(self) -> list[Batch]:
        """Take the batches that have arrived out of the line ahead (continuous batching, ``dms.worker.joined``)."""
        self.read_arrived(wait=False)
        found = [m for m in self._ahead if isinstance(m, Batch)]
        for message in found:
            self._ahead.remove(message)
        return found

    def send(self, message: FromWorker) -> None:
        self.sock.sendall(encode_frame(message))


class ChannelOutlet:
    """One batch's streamed chunks over the channel (``dms.worker.streaming.Outlet``): each request may have
    ``STREAM_WINDOW`` chunks unwritten to its client, and learns of more room, or of its client's departure,
    from the server's ``StreamCredit`` and ``Withdraw`` frames."""

    __slots__ = ("batch_id", "channel", "ended", "left", "room")

    def __init__(self, channel: Channel, batch: Batch) -> None:
        self.channel = channel
        self.batch_id = batch.batch_id
        self.room: dict[int, int] = {}
        """Chunks each streamed request may still send (``STREAM_WINDOW`` until it sends one)."""
        self.left: set[int] = set()
        self.ended = False
        """The server closed the socket: no chunk is read by anyone."""

    def has_room(self, index: int) -> bool:
        if self.room.get(index, STREAM_WINDOW) <= 0:
            self._take(wait=False)
        return self.room.get(index, STREAM_WINDOW) > 0 and index not in self.left

    def gone(self, index: int) -> bool:
        self._take(wait=False)
        return index in self.left or self.ended

    def send(self, chunk: Chunk) -> None:
        self.room[chunk.index] = self.room.get(chunk.index, STREAM_WINDOW) - 1
        self.channel.send(chunk)

    def end(self, index: int, last: ResponseItem) -> None:
        if not self.ended:
            self.channel.send(StreamEnd(self.batch_id, index, last))

    def wait(self) -> bool:
        if not self.ended:
            self._take(wait=True)
        return not self.ended

    def _take(self, wait: bool) -> None:
        if not self.channel.read_arrived(wait):
            self.ended = True
        for message in self.channel.take_about(self.batch_id):
            if isinstance(message, StreamCredit):
                self.room[message.index] = self.room.get(message.index, STREAM_WINDOW) + message.chunks
            else:
                self.left.update(message.indices)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dms-worker")
    parser.add_argument("--fd", type=int, required=True)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    with socket.socket(fileno=args.fd) as sock:
        # A program the handler starts must not hold the socket open: the server sees a death by its EOF.
        sock.set_inheritable(False)
        return serve(Channel(sock))


def serve(channel: Channel) -> int:
    """Load the model named by the first frame, then answer batches until the server closes the socket."""
    # Imported before the first frame arrives: an interpreter started ahead of need (dms.engine.interpreters)
    # does this while the server is still starting.
    from dms.worker.joined import run_joined
    from dms.worker.service import ModelService

    load = channel.recv()
    if not isinstance(load, LoadModel):
        return 2

    try:
        service = ModelService(load)
    except DMSError as exc:
        channel.send(LoadFailed(error=ErrorInfo(exc.type_name, exc.message)))
        return 1
    except Exception as exc:
        traceback.print_exc()
        message = f"model {load.model_name} failed to load: {type(exc).__name__}: {exc}"
        channel.send(LoadFailed(error=ErrorInfo("HandlerError", message[:1000])))
        return 1
    channel.send(service.loaded_message(os.getpid()))
    while True:
        request = channel.recv()
        if request is None:
            return 0
        if isinstance(request, Batch) and service.continuous:
            arrivals = lambda: [begin(service, channel, batch) for batch in channel.take_batches()]  # noqa: E731
            run_joined(begin(service, channel, request), arrivals, lambda: channel.read_arrived(True), channel.send)
        elif isinstance(request, Batch):
            try:
                result = service.run_batch(request, channel.withdrawn(request), ChannelOutlet(channel, request))
            except Exception as exc:  # each request's own errors are handled inside; this is the last resort
                result = service.failed_batch(request, exc)
            channel.send(result)
        # A Withdraw or StreamCredit read here came after its batch ended: there is nothing left to do.


def begin(service: ModelService, channel: Channel, batch: Batch) -> Started:
    """A batch taken up under continuous batching: running, or already answered (``dms.worker.joined``)."""
    try:
        return service.begin_batch(batch, channel.withdrawn(batch), ChannelOutlet(channel, batch))
    except Exception as exc:  # each request's own errors are handled inside; this is the last resort
        return service.failed_batch(batch, exc)


if __name__ == "__main__":
    sys.exit(main())
