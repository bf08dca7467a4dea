"""The limits on how a request must arrive, shared by DMS's HTTP/1.1 and gRPC connections.

- **Reading.** A request must keep arriving: its head whole within ``request_read_timeout_s`` of its first byte
  (HTTP/1.1), and its body with no pause longer than that. uvicorn set no such limit, so a client could hold a
  connection, and the file descriptor behind it, for ever with a request that never ends (slowloris): 3,000 of
  them stayed open on one server here.
- **Body rate.** A deadline on pauses alone still lets a client hold a request for ever by sending a byte now and
  then; a request must also average ``min_request_body_rate_bytes_s`` from its first byte once
  ``request_body_rate_grace_s`` has passed (``too_slow_at``).
- **Connections.** ``ConnectionBudget``: the process's open connections across its ports (``max_connections``).

Each protocol applies them on one timer per connection: ``dms.httputil.http1_wire`` (HTTP/1.1: 408 and a closed
connection) and ``dms.grpc.call_core.GrpcCall.overdue`` (a unary gRPC call: DEADLINE_EXCEEDED, the connection
serving on).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

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
