"""One ``ModelInfer`` call on the lean path of a gRPC connection (``dms.grpc.h2_connection``): its state."""

from __future__ import annotations

import asyncio
from typing import Any

from dms.engine.messages import ResponseItem
from dms.grpc.h2 import CallHeaders
from dms.grpc.servicer import InferCall


class LeanCall:
    """A ``ModelInfer`` call the connection answers itself (``GrpcH2Protocol``), from its request head to its status.

    uvicorn's connection code keeps it among its streams' cycles and treats it as one: it appends DATA
    to ``body``, clears ``more_body`` at the end of the request, sets ``disconnected`` when the client
    resets the stream or leaves, reads ``response_complete``, and calls ``message_event.set()`` after
    each of those; here that call is what moves the call on (``GrpcH2Protocol._on_news``).
    """

    __slots__ = (
        "body",
        "buffer",
        "call",
        "disconnected",
        "expired",
        "future",
        "headers",
        "heard",
        "more_body",
        "news",
        "receiving",
        "response_complete",
        "stream_id",
        "timer",
    )

    def __init__(self, stream_id: int, headers: CallHeaders, news: Any) -> None:
        self.stream_id = stream_id
        self.headers = headers
        self.news = news
        self.body = bytearray()
        self.buffer = bytearray()
        self.more_body = True
        self.disconnected = False
        self.response_complete = False
        self.expired = False
        self.call: InferCall | None = None
        self.future: asyncio.Future[ResponseItem] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.receiving = False
        """Its request has begun and not ended (counted in the connection's ``_receiving``)."""
        self.heard = 0.0
        """When (the loop's clock) its request last brought bytes, while ``receiving``."""

    @property
    def message_event(self) -> LeanCall:
        return self

    def set(self) -> None:
        self.news(self)
