"""A connection's two deadlines, kept with one timer per connection rather than one per request.

- **Idle.** A connection with no request in progress is closed after ``timeout_keep_alive`` (uvicorn's
  keep-alive timeout), counted from its last answer or, before its first request, from its opening.
- **Reading.** A request must keep arriving: over HTTP/1.1 its head whole within ``request_read_timeout``
  of its first byte, and its body with no pause longer than that between reads. A request that
  overruns gets ``read_timed_out`` (408 and a closed connection). Over HTTP/2 (``dms.grpc.request_arrival``)
  ``reading_since`` brings the timer round no later than the earliest read deadline of the requests still
  arriving, and ``read_timed_out`` ends the calls whose requests paused too long, each on its own.
  uvicorn sets no such limit, so a client could hold a connection, and the file descriptor behind it,
  for ever with a request that never ends (slowloris): 3,000 of them stayed open on one server here.
- **Body rate.** A deadline on pauses alone still lets a client hold a request for ever by sending a byte
  now and then. Over HTTP/1.1 a request's body must also average ``min_body_rate`` bytes a second, counted
  from the request's first byte once ``body_rate_grace`` has passed (its head counts as no bytes, so a
  head still arriving after the grace is too slow as well): ``body_too_slow``, 408 and a closed
  connection, as for a pause. The timer comes round when the bytes so far stop covering the time
  taken, so a request that keeps up costs one comparison more than before.

uvicorn's protocols arm a timer (``loop.call_later``) each time a connection goes idle and cancel it
when the next request arrives: about 3 µs of every request on the benchmark host, for a timer that
never fires while clients keep sending. Here a connection notes the time it went idle, or the time
its request last made progress, and keeps at most one timer. When the timer fires it closes the
connection if a deadline has passed, sleeps again until the earliest one that has not, and stops when
the connection is busy with no deadline (a request being answered: the next ``went_idle`` or
``request_began`` arms it again).

It relies on three things both of uvicorn's protocols (``HttpToolsProtocol``, ``ZttpH2Protocol``)
do: they keep the timer in ``timeout_keep_alive_task``, call ``_unset_keepalive_if_required`` when
data arrives or the connection is lost, and close an idle connection in
``timeout_keep_alive_handler``. In ``dms.grpc.h2_connection`` the
places where they would arm a new timer call ``went_idle`` instead, and their ``connection_lost``
calls ``stop_timer``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from dms.settings import ServerSettings


class ConnectionBudget:
    """The connections this process may have open across all its ports (``max_connections``): one object
    shared by every port's protocol, which takes a place as a connection opens and gives it back as it
    closes. A connection over the budget is refused at once (HTTP/1.1: 503 with ``Retry-After``; HTTP/2: a
    GOAWAY), so the descriptors the server needs for itself (workers' sockets, files) are never all taken."""

    __slots__ = ("limit", "open")

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.open = 0

    def take(self) -> bool:
        """One place for a new connection; False (and nothing taken) when none is left."""
        if self.limit is not None and self.open >= self.limit:
            return False
        self.open += 1
        return True

    def give_back(self) -> None:
        self.open -= 1


class ConnectionDeadlines:
    """Mixed into an uvicorn protocol before it; ``close_idle`` and ``read_timed_out`` are the protocol's
    own ways to close."""

    loop: asyncio.AbstractEventLoop
    timeout_keep_alive: int  # uvicorn's type (seconds)
    timeout_keep_alive_task: asyncio.TimerHandle | None
    request_read_timeout: ClassVar[float] = 60.0
    """Seconds a request's head may take to arrive, and its body may pause (``request_read_timeout_s``)."""
    idle_since: float | None = None
    """When the connection last went idle (no request in progress); None while it is busy."""
    reading_since: float | None = None
    """When the request being read began, or its body last brought bytes; None when no request is arriving."""
    min_body_rate: ClassVar[float] = 0.0
    """Bytes a second a request's body must average once ``body_rate_grace`` has passed; 0: no floor."""
    body_rate_grace: ClassVar[float] = 10.0
    """Seconds from a request's first byte before its rate is looked at."""
    first_look: ClassVar[float] = 60.0
    """Seconds from a request's first byte to the timer's first look at it: the read timeout, or the grace
    when that is sooner and there is a floor (``ReadLimits.attributes``)."""
    request_since: float | None = None
    """With a floor, when the request being read (or the last one) began."""
    body_bytes = 0
    """With a floor, the bytes of its body received so far (the protocol adds each read's)."""
    _timer_due = 0.0
    connection_budget: ClassVar[ConnectionBudget] = ConnectionBudget()
    """The process's budget of open connections (``ReadLimits.connections``)."""
    counted = False
    """This connection holds a place in ``connection_budget``."""

    def admitted(self) -> bool:
        """Take a place in the connection budget as the connection opens; False: refuse it (no place taken)."""
        self.counted = self.connection_budget.take()
        return self.counted

    def released(self) -> None:
        """Give the connection's place back as it closes (once)."""
        if self.counted:
            self.counted = False
            self.connection_budget.give_back()

    def _unset_keepalive_if_required(self) -> None:
        """Data arrived, or the connection is gone: it is busy. The timer stays, and stops when it fires."""
        self.idle_since = None

    def stop_timer(self) -> None:
        """The connection is gone: drop its timer now rather than keep the protocol alive until it fires."""
        self.idle_since = self.reading_since = None
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None

    def went_idle(self) -> None:
        """No request is in progress or waiting: close the connection after the idle timeout."""
        now = self.loop.time()
        self.idle_since = now
        due = now + self.timeout_keep_alive
        if self.timeout_keep_alive_task is None or self._timer_due > due:
            self._wake_by(due)

    def request_began(self) -> None:
        """The first byte of a request came: the rest must follow within the read timeout.

        While its body arrives the protocol moves ``reading_since`` on at each read (a later deadline: the
        timer, due sooner, finds it when it fires); ``reading_since = None`` once it arrived whole.
        """
        now = self.loop.time()
        self.reading_since = now
        if self.min_body_rate:
            self.request_since = now
            self.body_bytes = 0
        due = now + self.first_look
        if self.timeout_keep_alive_task is None or self._timer_due > due:
            self._wake_by(due)

    def _too_slow_at(self) -> float | None:
        """When the body's bytes so far stop covering the request's time at ``min_body_rate``; None: no floor."""
        if self.request_since is None:
            return None
        return too_slow_at(self.request_since, self.body_bytes, self.min_body_rate, self.body_rate_grace)

    def _wake_by(self, due: float) -> None:
        """Have the timer fire at ``due`` (it was not armed, or due later)."""
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
        self._timer_due = due
        self.timeout_keep_alive_task = self.loop.call_at(due, self.timeout_keep_alive_handler)

    def timeout_keep_alive_handler(self) -> None:
        self.timeout_keep_alive_task = None
        now = self.loop.time()
        if self.reading_since is not None:
            due = self.reading_since + self.request_read_timeout
            if due <= now:
                self.read_timed_out()
                return
            slow_at = self._too_slow_at()
            if slow_at is not None:
                if slow_at <= now:
                    self.body_too_slow()
                    return
                due = min(due, slow_at)
        elif self.idle_since is not None:
            due = self.idle_since + self.timeout_keep_alive
            if due <= now:
                self.close_idle()
                return
        else:
            return
        self._wake_by(due)

    def close_idle(self) -> None:
        raise NotImplementedError

    def read_timed_out(self) -> None:
        raise NotImplementedError

    def body_too_slow(self) -> None:
        raise NotImplementedError


def too_slow_at(since: float, received: int, min_rate: float, grace_s: float) -> float:
    """When ``received`` bytes since ``since`` stop covering the time taken at ``min_rate`` (not before the grace):
    a request still arriving then, with nothing more come, is under the floor."""
    return since + max(grace_s, received / min_rate)


def too_slow_message(min_rate: float, grace_s: float) -> str:
    """What a request under the body-rate floor is told, on either protocol."""
    return (
        f"the request arrived slower than min_request_body_rate_bytes_s ({min_rate:g} bytes/s, on average from "
        f"its first byte once request_body_rate_grace_s, {grace_s:g} s, had passed)"
    )


@dataclass(frozen=True)
class ReadLimits:
    """How a request must keep arriving (``ServerSettings``' ``request_read_timeout_s``,
    ``min_request_body_rate_bytes_s`` and ``request_body_rate_grace_s``) and how large its head may be
    (``max_header_bytes``, ``max_header_count``)."""

    timeout_s: float = 60.0
    min_body_rate: float = 0.0
    body_rate_grace_s: float = 10.0
    max_header_bytes: int = 64 * 1024
    max_header_count: int = 100
    connections: ConnectionBudget = field(default_factory=ConnectionBudget)
    """Shared by every port built with these limits."""

    @classmethod
    def of(cls, settings: ServerSettings, connections: ConnectionBudget | None = None) -> ReadLimits:
        return cls(
            settings.request_read_timeout_s,
            settings.min_request_body_rate_bytes_s,
            settings.request_body_rate_grace_s,
            settings.max_header_bytes,
            settings.max_header_count,
            connections or ConnectionBudget(),
        )

    def attributes(self) -> dict[str, float | ConnectionBudget]:
        """The class attributes of a protocol (``ConnectionDeadlines``) that keep these limits."""
        first_look = min(self.timeout_s, self.body_rate_grace_s) if self.min_body_rate else self.timeout_s
        return {
            "request_read_timeout": self.timeout_s,
            "min_body_rate": self.min_body_rate,
            "body_rate_grace": self.body_rate_grace_s,
            "first_look": first_look,
            "max_header_bytes": self.max_header_bytes,
            "max_header_count": self.max_header_count,
            "connection_budget": self.connections,
        }
