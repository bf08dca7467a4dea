"""The server's handle on one worker process: spawn it, load the model, send it batches.

A worker is a fresh interpreter (``python -m dms.worker``, see ``dms.engine.interpreters``) holding one end
of a socket pair. Its death is seen at once: the socket reaches EOF and the process's exit status says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from enum import StrEnum

from dms.engine.chunk_streams import BatchChunks, ChunkReader
from dms.engine.interpreters import WorkerInterpreter, take
from dms.engine.worker_link import WorkerLink
from dms.errors import (
    BatchNotStartedError,
    DMSError,
    ModelUnavailableError,
    RequestTimeoutError,
    WorkerDiedError,
    error_from_wire,
)
from dms.messages import (
    Batch,
    BatchResult,
    Chunk,
    LoadFailed,
    LoadModel,
    ModelLoaded,
    RequestItem,
    StreamEnd,
    Withdraw,
    encode_frame,
)

log = logging.getLogger("dms.worker")
_STOP_GRACE_S = 5.0
_LAST_WORDS_S = 0.5
"""How long a batch may go on reading from a worker that has ended (what it wrote before it died)."""


class WorkerState(StrEnum):
    STARTING = "STARTING"
    READY = "READY"
    BUSY = "BUSY"
    STOPPING = "STOPPING"
    DEAD = "DEAD"


class WorkerStartError(DMSError):
    """The worker could not load its model (its own error, or its death during start-up)."""


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "stopped answering"
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


class WorkerProcess:
    def __init__(self, worker_id: str, load: LoadModel, label: str) -> None:
        self.worker_id = worker_id
        self.load = load
        self.label = label
        self.state = WorkerState.STARTING
        self.started_at = time.time()
        self.pid: int | None = None
        self.retiring = False
        self.assigned = 0
        """Batches the pool has given this worker that it has not answered yet (at most 2, see ``WorkerPool``)."""
        self.busy_since = 0.0
        """When (``time.monotonic``) it took up the batch it is working on."""
        self._queued: Batch | None = None
        """The batch waiting in its socket behind the one it is working on, if any."""
        self.kill_reason: str | None = None
        self.loaded: ModelLoaded | None = None
        self._interpreter: WorkerInterpreter | None = None
        self._link: WorkerLink | None = None
        self._output_ended: asyncio.Future[None] | None = None
        self._streams: dict[int, BatchChunks] = {}
        """The batches sent with streamed requests, by id: where their chunks go."""

    @property
    def returncode(self) -> int | None:
        return self._interpreter.returncode if self._interpreter else None

    async def start(self, timeout_s: float) -> None:
        self._interpreter = interpreter = take()
        self.pid = interpreter.pid
        try:
            self._output_ended = await interpreter.forward_output(self._log_line)
            await self._handshake(interpreter.channel, timeout_s)
        except BaseException:
            self.kill()
            self._close_channel()
            raise
        self.state = WorkerState.READY

    async def _handshake(self, channel: socket.socket, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        _, self._link = await loop.create_unix_connection(lambda: WorkerLink(self._garbled, self._chunk), sock=channel)
        self._link.send(encode_frame(self.load))
        try:
            reply = await self._link.receive(timeout_s)
        except TimeoutError:
            raise WorkerStartError(f"{self.label} did not load within {timeout_s:g} s") from None
        if isinstance(reply, LoadFailed):
            await self.wait_exit()
            raise WorkerStartError(error_from_wire(reply.error.type_name, reply.error.message).message)
        if not isinstance(reply, ModelLoaded):
            code = await self.wait_exit()
            raise WorkerStartError(f"{self.label} {self.exit_cause(code)} while loading the model")
        self.loaded = reply

    async def run_batch(
        self, batch: Batch, timeout_s: float, readers: list[ChunkReader | None] | None = None
    ) -> BatchResult:
        """Send ``batch`` and wait for its answer; ``timeout_s`` counts from when the worker takes it up (for a
        batch with streamed requests, from its last chunk). ``readers`` take the chunks of the requests that
        stream (``dms.engine.chunk_streams``), one per request, None for the others.

        A batch may be sent while the worker is still busy with the one before (``WorkerPool.take_spare``):
        it waits in the socket, and the worker reads it the moment it has answered the first.
        """
        link = self._link
        assert link is not None
        if self.state == WorkerState.READY:
            self.busy_since = time.monotonic()
        self.state = WorkerState.BUSY
        position = link.sent
        if link.received < position:
            batch.queued = True
            self._queued = batch
        if readers is not None:
            self._streams[batch.batch_id] = BatchChunks(link, batch.batch_id, readers)
        frame = encode_frame(batch)
        if batch.queued:
            link.make_room(len(frame))
        link.send(frame)
        answered = False
        try:
            try:
                reply = await link.receive(timeout_s)
            except TimeoutError:
                self.kill()
                self.state = WorkerState.DEAD
                raise RequestTimeoutError(
                    f"model {self.load.model_name} did not answer within {timeout_s:g} s "
                    f"(response_timeout_s); its worker was restarted"
                ) from None
            if isinstance(reply, BatchResult) and reply.batch_id == batch.batch_id:
                answered = True
                if link.received == link.sent:
                    self.state = WorkerState.READY
                else:
                    self.busy_since = time.monotonic()  # the batch sent behind it starts now
                    self._queued = None
                return reply
            if reply is not None:
                self.kill(f"it answered batch {batch.batch_id} with {type(reply).__name__}")
            self.state = WorkerState.DEAD
            streamed = self._streams.get(batch.batch_id)
            if link.received < position and (streamed is None or not streamed.controls):  # none of it went out
                raise BatchNotStartedError(
                    f"the worker of model {self.load.model_name} (pid {self.pid}) ended before it took up this request"
                )
            code = await self.wait_exit()
            raise WorkerDiedError(
                f"the worker of model {self.load.model_name} (pid {self.pid}) {self.exit_cause(code)} "
                "while handling this request; it is being replaced"
            )
        finally:
            if readers is not None:
                del self._streams[batch.batch_id]
            if self._queued is batch:  # it ended without being taken up
                self._queued = None
            if not answered and self.state == WorkerState.BUSY:  # cancelled while reading: out of step for good
                self.state = WorkerState.DEAD
                self.kill()

    def resident_bytes(self) -> int | None:
        """Its process's resident memory (None before it started or once it is gone)."""
        import psutil

        if self.pid is None:
            return None
        try:
            return int(psutil.Process(self.pid).memory_info().rss)
        except psutil.Error:
            return None

    @property
    def queued_requests(self) -> int:
        """Requests in the batch waiting in its socket behind the one it is working on."""
        return len(self._queued.items) if self._queued is not None else 0

    def withdraw(self, item: RequestItem) -> None:
        """Tell the worker to skip ``item`` (its client went away), if it is in the batch still waiting."""
        queued = self._queued
        if queued is None or self._link is None:
            return
        indices = [index for index, queued_item in enumerate(queued.items) if queued_item is item]
        if indices:
            self._link.notify(encode_frame(Withdraw(batch_id=queued.batch_id, indices=indices)))

    async def wait_exit(self, timeout_s: float = _STOP_GRACE_S) -> int | None:
        if self._interpreter is None:
            return None
        try:
            async with asyncio.timeout(timeout_s):
                code = await self._interpreter.wait()
        except TimeoutError:
            self.kill()
            code = await self._interpreter.wait()
        self._close_channel()  # its callers are done reading
        if self._output_ended is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._output_ended), 1.0)
        return code

    async def wait_dead(self) -> int | None:
        """Wait (without a limit) until the process ends, however it ends; then close its socket.

        A batch in flight learns of the death from the socket's end of file, unless a process the worker forked
        still holds the socket (a fork inherits every descriptor). So a batch still reading a little after the
        death is ended from this side: closing the socket ends its read the same way.
        """
        if self._interpreter is None:
            return None
        code = await self._interpreter.wait()
        deadline = time.monotonic() + _LAST_WORDS_S
        while self.state == WorkerState.BUSY and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        self._close_channel()
        return code

    async def stop(self) -> None:
        """Close the socket (the worker exits on EOF); kill it if it lingers."""
        self.state = WorkerState.STOPPING
        self._close_channel()
        await self.wait_exit()
        self.state = WorkerState.DEAD

    def _close_channel(self) -> None:
        """Close the server's end of the socket pair now, not when the garbage collector gets to it.

        Under uvloop a transport collected while open closes its descriptor but leaves the socket object it
        was made from holding the same number, which that object closes again when it is collected. A client
        connection accepted in between gets that number, and the second close cut it off unanswered.
        """
        if self._link is not None:
            self._link.close()
        elif self._interpreter is not None:  # its socket never reached the loop
            self._interpreter.close()

    def _chunk(self, chunk: Chunk | StreamEnd) -> None:
        streams = self._streams.get(chunk.batch_id)
        if streams is None or not streams.deliver(chunk):
            self.kill(f"it sent a chunk for request {chunk.index} of batch {chunk.batch_id}, which streams none")

    def _garbled(self, reason: str) -> None:
        """The worker broke the frame protocol: it cannot be trusted with another batch."""
        self.kill(reason)

    def exit_cause(self, returncode: int | None) -> str:
        return f"was killed: {self.kill_reason}" if self.kill_reason else describe_exit(returncode)

    def kill(self, reason: str | None = None) -> None:
        if reason and not self.kill_reason:
            self.kill_reason = reason
        if self._interpreter is not None:
            self._interpreter.kill()

    def _log_line(self, line: bytes) -> None:
        log.info("[%s pid %s] %s", self.label, self.pid, line.decode("utf-8", "replace").rstrip())


def unavailable(model: str, reason: str) -> ModelUnavailableError:
    return ModelUnavailableError(f"model {model} is unavailable: {reason}")
