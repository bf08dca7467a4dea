"""Worker interpreters: the processes a ``WorkerProcess`` loads its model into.

An interpreter is ``python -m dms.worker`` holding one end of a socket pair for its messages and writing
its output to another. Starting one and importing the worker's code takes 0.1-0.2 s of a
core, before any model is loaded. ``dms serve`` starts the ones its start-up models will likely need
(:func:`prestart`) before it imports the server itself, so that on a machine with more than one core the two
overlap. A worker takes a prestarted interpreter while one is left (:func:`take`) and starts its own
otherwise; the server ends the ones left over once its start-up models have loaded (:func:`discard_prestarted`).

Interpreters are started with ``subprocess`` rather than the event loop's own process support, so that one
can be started before there is a loop and watched from one afterwards: its exit through a pidfd where the
kernel has them (a thread waits elsewhere), its output as a socket. A socket rather than a pipe because
the loops close a socket's descriptor exactly once (uvloop closes a pipe's twice, the second time on the
file object it was given).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Callable

_DISCARD_GRACE_S = 5.0
_LONGEST_LINE = 1 << 16
"""Output without a line break is passed on in pieces of this size."""


class WorkerInterpreter:
    """One ``python -m dms.worker`` process and the server's ends of its two sockets."""

    def __init__(self, process: subprocess.Popen[bytes], channel: socket.socket, output: socket.socket) -> None:
        self._process = process
        self.channel = channel
        """The server's end of the message socket; the worker exits when it is closed."""
        self._output: socket.socket | None = output
        self.pid = process.pid
        self._exit: asyncio.Future[int] | None = None

    @classmethod
    def launch(cls) -> WorkerInterpreter:
        channel, worker_channel = socket.socketpair()
        output, worker_output = socket.socketpair()
        try:
            process = subprocess.Popen(
                [sys.executable, "-u", "-m", "dms.worker", "--fd", str(worker_channel.fileno())],
                pass_fds=(worker_channel.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=worker_output.fileno(),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except BaseException:
            channel.close()
            output.close()
            raise
        finally:
            worker_channel.close()
            worker_output.close()
        return cls(process, channel, output)

    @property
    def running(self) -> bool:
        return self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        """Its exit status once it has ended and been reaped (negative: the signal that killed it)."""
        return self._process.returncode

    async def forward_output(self, on_line: Callable[[bytes], None]) -> asyncio.Future[None]:
        """Pass each line it writes to ``on_line``, from the running loop; the future is done when its output ends."""
        output, self._output = self._output, None
        assert output is not None, "its output is already being forwarded"
        loop = asyncio.get_running_loop()
        lines = _OutputLines(on_line, loop.create_future())
        try:
            await loop.create_unix_connection(lambda: lines, sock=output)
        except BaseException:
            output.close()
            raise
        return lines.ended

    async def wait(self) -> int:
        """Its exit status, once it has ended; any number of callers may wait, and each may be cancelled."""
        if self._exit is None:
            self._exit = self._watch_exit()
        return await asyncio.shield(self._exit)

    def _watch_exit(self) -> asyncio.Future[int]:
        loop = asyncio.get_running_loop()
        try:
            pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):  # not Linux, or an old kernel
            return asyncio.ensure_future(loop.run_in_executor(None, self._process.wait))
        exited: asyncio.Future[int] = loop.create_future()

        def reap() -> None:
            code = self._process.poll()
            if code is None:
                return
            loop.remove_reader(pidfd)
            os.close(pidfd)
            if not exited.done():
                exited.set_result(code)

        loop.add_reader(pidfd, reap)
        reap()  # it may have ended already
        return exited

    def kill(self) -> None:
        """SIGKILL it, unless it has already been reaped."""
        with contextlib.suppress(ProcessLookupError):
            self._process.kill()

    def close(self) -> None:
        """Close the server's ends of its sockets (those not handed to the loop)."""
        self.channel.close()
        if self._output is not None:
            self._output.close()
            self._output = None


class _OutputLines(asyncio.Protocol):
    def __init__(self, on_line: Callable[[bytes], None], ended: asyncio.Future[None]) -> None:
        self.on_line = on_line
        self.ended = ended
        self._partial = b""

    def data_received(self, data: bytes) -> None:
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            self.on_line(line)
        while len(self._partial) > _LONGEST_LINE:
            self.on_line(self._partial[:_LONGEST_LINE])
            self._partial = self._partial[_LONGEST_LINE:]

    def eof_received(self) -> bool:
        if self._partial:
            self.on_line(self._partial)
            self._partial = b""
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ended.done():
            self.ended.set_result(None)


_prestarted: list[WorkerInterpreter] = []


def prestart(count: int) -> None:
    """Start ``count`` interpreters now, for workers the server is about to start."""
    for _ in range(count):
        _prestarted.append(WorkerInterpreter.launch())


def take() -> WorkerInterpreter:
    """A prestarted interpreter still running, else a new one."""
    while _prestarted:
        interpreter = _prestarted.pop(0)
        if interpreter.running:
            return interpreter
        interpreter.close()
    return WorkerInterpreter.launch()


async def discard_prestarted() -> None:
    """End the prestarted interpreters no worker took: each exits at the end of file on its socket."""
    left = list(_prestarted)
    _prestarted.clear()
    for interpreter in left:
        interpreter.close()
    for interpreter in left:
        try:
            async with asyncio.timeout(_DISCARD_GRACE_S):
                await interpreter.wait()
        except TimeoutError:
            interpreter.kill()
            await interpreter.wait()
