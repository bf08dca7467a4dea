"""One ``ModelInfer`` call on the lean path of a gRPC connection (``dms.grpc.h2_connection``): its state."""

from __future__ import annotations

import asyncio
from typing import Any

from dms.grpc.h2 import CallHeaders
from dms.grpc.servicer import InferCall
from dms.messages import ResponseItem

FRESH = -1.0
"""``heard`` of a call whose request began or brought bytes in the read being handled (timed after it)."""


class LeanCall:
    """A ``ModelInfer`` call the connection answers itself (``GrpcH2Protocol``), from its request head to its status.

    uvicorn's connection code keeps it among its streams' cycles and treats it as one: it reads
    ``body`` (empty: the request gathers in ``buffer``) and ``response_complete``, and when the
    client resets the stream or leaves it sets ``disconnected`` and calls ``message_event.set()``,
    which here ends the call (``GrpcH2Protocol._abandon``). The request's DATA and its end never
    reach uvicorn's dispatch (``GrpcH2Protocol.events``).
    """

    __slots__ = (
        "began",
        "began_bytes",
        "buffer",
        "call",
        "disconnected",
        "expired",
        "future",
        "headers",
        "heard",
        "news",
        "receiving",
        "response_complete",
        "stream_id",
        "timer",
    )
    body = b""  # uvicorn measures each stream's buffered body; this call gathers its own in ``buffer``

    def __init__(self, stream_id: int, headers: CallHeaders, news: Any) -> None:
        self.stream_id = stream_id
        self.headers = headers
        self.news = news
        self.buffer = bytearray()
        self.disconnected = False
        self.response_complete = False
        self.expired = False
        self.call: InferCall | None = None
        self.future: asyncio.Future[ResponseItem] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.receiving = False
        """Its request has begun and not ended (counted in the connection's ``_receiving``)."""
        self.heard = 0.0
        """When (the loop's clock) its request last brought bytes, while ``receiving`` (FRESH within a read)."""
        self.began = 0.0
        """When its request was first heard arriving (or reading last resumed): its body rate counts from then."""
        self.began_bytes = 0
        """Bytes of its request already in ``buffer`` at ``began``."""

    @property
    def message_event(self) -> LeanCall:
        return self

    def set(self) -> None:
        self.news(self)
