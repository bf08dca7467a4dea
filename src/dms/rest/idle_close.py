"""Closing idle keep-alive connections with one timer per connection, not one per request.

uvicorn's HTTP protocols arm a timer (``loop.call_later``) each time a connection goes idle and
cancel it when the next request arrives: about 3 µs of every request on the benchmark host, for a
timer that never fires while clients keep sending. ``IdleClose`` notes the time a connection went
idle instead and keeps at most one timer. When the timer fires it closes the connection if it has
been idle for the whole ``timeout_keep_alive``, sleeps again until that moment if it went idle
later, and stops if the connection is busy (the next ``went_idle`` arms it again).

It relies on three things both of uvicorn's protocols (``HttpToolsProtocol``, ``ZttpH2Protocol``)
do: they keep the timer in ``timeout_keep_alive_task``, call ``_unset_keepalive_if_required`` when
data arrives or the connection is lost, and close an idle connection in
``timeout_keep_alive_handler``. In ``dms.rest.http1`` and ``dms.grpc.h2_connection`` the places where
they would arm a new timer call ``went_idle`` instead, and their ``connection_lost`` calls
``stop_idle_timer``.
"""

from __future__ import annotations

import asyncio


class IdleClose:
    """Mixed into an uvicorn protocol before it; ``close_idle`` is the protocol's own way to close."""

    loop: asyncio.AbstractEventLoop
    timeout_keep_alive: int  # uvicorn's type (seconds)
    timeout_keep_alive_task: asyncio.TimerHandle | None
    idle_since: float | None = None
    """When the connection last went idle (no request in progress); None while it is busy."""

    def _unset_keepalive_if_required(self) -> None:
        """Data arrived, or the connection is gone: it is busy. The timer stays, and stops when it fires."""
        self.idle_since = None

    def stop_idle_timer(self) -> None:
        """The connection is gone: drop its timer now rather than keep the protocol alive until it fires."""
        self.idle_since = None
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None

    def went_idle(self) -> None:
        """The last request was answered and none is waiting: close the connection after the idle timeout."""
        self.idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def timeout_keep_alive_handler(self) -> None:
        self.timeout_keep_alive_task = None
        since = self.idle_since
        if since is None:
            return
        left = since + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self.timeout_keep_alive_task = self.loop.call_later(left, self.timeout_keep_alive_handler)
            return
        self.close_idle()

    def close_idle(self) -> None:
        raise NotImplementedError
