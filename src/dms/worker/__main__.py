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

from dms.errors import DMSError
from dms.messages import (
    Batch,
    ErrorInfo,
    FromWorker,
    LoadFailed,
    LoadModel,
    ToWorker,
    Withdraw,
    decode_frame,
    encode_frame,
    frame_end,
    to_worker_decoder,
)


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
        while select.select([self.sock], [], [], 0)[0]:
            chunk = self.sock.recv(self._READ_SIZE)
            if not chunk:
                break  # end of file: ``recv`` reports it once what is buffered has been handed out
            self._buffer += chunk
        while (end := frame_end(self._buffer)) <= len(self._buffer):
            self._ahead.append(self._pop_frame(end))
        found: set[int] = set()
        for message in [m for m in self._ahead if isinstance(m, Withdraw) and m.batch_id == batch.batch_id]:
            self._ahead.remove(message)
            found.update(message.indices)
        return found

    def send(self, message: FromWorker) -> None:
        self.sock.sendall(encode_frame(message))


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
        if isinstance(request, Batch):
            try:
                result = service.run_batch(request, channel.withdrawn(request))
            except Exception as exc:  # each request's own errors are handled inside; this is the last resort
                result = service.failed_batch(request, exc)
            channel.send(result)
        # A Withdraw read here came after its batch had started: there is nothing left to skip.


if __name__ == "__main__":
    sys.exit(main())
