"""Answers made a piece at a time, inside a worker.

A handler streams a request's answer in one of two ways:

- it returns, for that request, a generator (or any iterator, or an async generator) in place of a result:
  each item it yields is one chunk, encoded as a result is (bytes as they are, text as UTF-8, anything else
  as JSON);
- it calls TorchServe's ``send_intermediate_predict_response`` while it works (``context.chunk_sink``): each
  call sends one chunk per request of the batch, and what it finally returns is each request's last chunk.

``BatchStreams`` takes the chunks of one batch. A request that asked for ``stream`` (its client reads the answer
as it is made) has each chunk sent at once through the worker's ``Outlet``; any other request's chunks are
held and joined into its one answer. Generators are advanced in turn, one chunk each, so that every client of
a batch gets its chunks as they are made. A client that reads slowly holds back its own generator only: at
most ``STREAM_WINDOW`` of its chunks are unwritten at any time (the server grants more with ``StreamCredit``);
one whose client has gone (``Withdraw``) has its generator closed before its next chunk.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Protocol

from dms.context import RequestProcessor
from dms.errors import DMSError, HandlerError, InternalError
from dms.messages import Batch, Chunk, ErrorInfo, ResponseItem
from dms.worker.generation import TextLimits
from dms.worker.outputs import encode_output

log = logging.getLogger("dms.worker")
_MAX_MESSAGE = 1000


class Outlet(Protocol):
    """The worker's way to its server for one batch's chunks (``dms.worker.__main__.ChannelOutlet``)."""

    def has_room(self, index: int) -> bool:
        """The request at ``index`` may send a chunk now (its client has taken enough of those before)."""
        ...

    def gone(self, index: int) -> bool:
        """The request's client has left: its answer is no longer wanted."""
        ...

    def send(self, chunk: Chunk) -> None: ...

    def end(self, index: int, last: ResponseItem) -> None:
        """The request's last word, as soon as its generator has ended (``StreamEnd``)."""
        ...

    def wait(self) -> bool:
        """Block until the server says something about this batch (room, a departure); False once it is gone."""
        ...


_WHOLE = frozenset({str, bytes, bytearray, memoryview, dict, list, tuple, int, float, bool, type(None)})
"""Types a handler's result usually has, none of them a stream: checked first, as the ABC check costs ~1 µs."""


def is_stream(value: Any) -> bool:
    """A handler's result that is a sequence of chunks rather than one answer."""
    kind = type(value)
    if kind in _WHOLE:
        return False
    return isinstance(value, Iterator | AsyncIterator) and not isinstance(value, str | bytes | bytearray | memoryview)


def handler_failure(exc: Exception, model_name: str) -> DMSError:
    """What a request gets when the handler raised ``exc`` for it: the ``DMSError`` itself, else a 500 naming it."""
    if isinstance(exc, DMSError):
        return exc
    return HandlerError(f"model {model_name}: handler raised {type(exc).__name__}: {exc}"[:_MAX_MESSAGE])


def error_item(exc: DMSError) -> ResponseItem:
    error = ErrorInfo(type_name=exc.type_name, message=exc.message[:_MAX_MESSAGE])
    return ResponseItem(status=0, body=b"", content_type="", error=error)


GONE = error_item(InternalError("not finished: its client went away"))
"""The last word of a stream whose client left: a placeholder, as nobody reads it."""


class BatchStreams:
    """The chunks of one batch's answers (see the module's docstring)."""

    __slots__ = (
        "_live",
        "_loop",
        "batch_id",
        "defer",
        "deferred",
        "encoders",
        "final_forms",
        "generators",
        "held",
        "items",
        "limits",
        "max_chunk_bytes",
        "model_name",
        "outlet",
        "sent",
        "touched",
    )

    def __init__(self, batch: Batch, outlet: Outlet | None, model_name: str, max_chunk_bytes: int = 0) -> None:
        self.batch_id = batch.batch_id
        self.outlet = outlet
        self.model_name = model_name
        self.max_chunk_bytes = max_chunk_bytes
        self.items = batch.items
        self._live: set[int] | None = None if outlet is not None else set()
        self.generators = False
        """Some request's answer is a generator (``pump`` runs them)."""
        self.touched = False
        """Some request has chunks or limits: its answer is not simply what the handler returns for it."""
        self.held: dict[int, list[ResponseItem]] = {}
        """Chunks of the other requests, joined into their answers when they end."""
        self.sent: set[int] = set()
        self.limits: dict[int, TextLimits] = {}
        """The generation requests' ``max_tokens`` and ``stop`` (``dms.worker.generation``)."""
        self.encoders: dict[int, Callable[[Any, RequestProcessor], ResponseItem]] = {}
        """How a request's chunks are encoded, where not as a handler's result is (``encode_output``): a tensor
        protocol's (``dms.worker.tensor_streams``)."""
        self.defer = False
        """The handler's generators are not run here but handed back (``deferred``) to take turns with other
        batches' (continuous batching, ``dms.worker.joined``)."""
        self.deferred: dict[int, tuple[Any, RequestProcessor]] = {}
        self.final_forms: dict[int, Callable[[ResponseItem], ResponseItem]] = {}
        """How a request's last word is put once its generator ends, where not as it is (a tensor protocol's)."""
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- one chunk -----------------------------------------------------------------------------------
    def put(self, index: int, item: ResponseItem) -> bool:
        """One chunk of the answer of the request at ``index``: sent (once its client has room) or held. False
        when its client has gone (the chunk is dropped; the caller stops making more)."""
        if self.max_chunk_bytes and len(item.body) > self.max_chunk_bytes:
            raise InternalError(
                f"model {self.model_name}: a chunk of {len(item.body)} bytes is over "
                f"max_response_size_bytes ({self.max_chunk_bytes})"
            )
        self.touched = True
        outlet = self.outlet
        if outlet is None or index not in self.live:
            self.held.setdefault(index, []).append(item)
            return True
        while not outlet.has_room(index):
            if outlet.gone(index) or not outlet.wait():
                return False
        if outlet.gone(index):
            return False
        outlet.send(Chunk(self.batch_id, index, item.body, item.status, item.content_type, item.headers))
        self.sent.add(index)
        return True

    @property
    def live(self) -> set[int]:
        """The requests whose chunks go out as they are made (found when first asked: most batches never ask)."""
        if self._live is None:
            self._live = {i for i, item in enumerate(self.items) if item.stream}
        return self._live

    def gone(self, index: int) -> bool:
        return self.outlet is not None and index in self.live and self.outlet.gone(index)

    def finish(self, index: int, last: ResponseItem) -> ResponseItem:
        """The request's final answer: its held chunks joined, ``last`` after them (its error, if it failed)."""
        held = self.held.pop(index, None)
        if not held or last.error is not None:
            return last
        first = held[0]
        body = b"".join([*(chunk.body for chunk in held), last.body])
        return ResponseItem(first.status, body, first.content_type, last.headers or first.headers)

    # -- TorchServe's intermediate responses ---------------------------------------------------------------
    def limit(self, index: int, limits: TextLimits) -> None:
        """Hold the request at ``index`` to a generation request's limits."""
        self.limits[index] = limits
        self.touched = True

    def intermediate(self, proc: RequestProcessor, value: Any, status: int) -> None:
        """One chunk a handler sent for ``proc``'s request while it works (``send_intermediate_predict_response``)."""
        index = proc.batch_index
        if index < 0 or self.gone(index):
            return
        limits = self.limits.get(index)
        if limits is not None:
            if limits.done:
                return
            value, _ = limits.feed(_text(value))
            if not value:
                return
        item = encode_output(value, proc, self.model_name)
        item.status = status
        self.put(index, item)

    def last_word(self, proc: RequestProcessor, item: ResponseItem) -> ResponseItem:
        """What a request whose handler returned ``item`` finally answers: ``item`` itself, or the last chunk of
        the intermediate ones sent before it (``finish``)."""
        index = proc.batch_index
        limits = self.limits.get(index)
        if limits is not None and item.error is None:
            item = self._limited(index, item, limits)
        if index in self.sent:
            if item.error is None and item.body and not self.gone(index):
                self.put(index, item)
            return ResponseItem(item.status, b"", item.content_type, item.headers, item.error)
        return self.finish(index, item) if index in self.held else item

    def _limited(self, index: int, item: ResponseItem, limits: TextLimits) -> ResponseItem:
        """A generation request's last word under its limits, with its finish reason and token count."""
        if limits.done:
            body = b""
        elif index in self.sent or index in self.held:  # the last of its pieces
            text, _ = limits.feed(item.body.decode("utf-8", "replace"))
            body = (text + limits.flush()).encode()
        else:  # a handler's whole answer
            body = limits.whole(item.body.decode("utf-8", "replace")).encode()
        return ResponseItem(item.status, body, item.content_type, [*item.headers, *limits.headers()])

    # -- generators ------------------------------------------------------------------------------------
    def pump(self, streams: dict[int, tuple[Any, RequestProcessor]]) -> dict[int, ResponseItem]:
        """Run each request's generator to its end (or its client's departure), one chunk of each in turn; the
        last word of each request."""
        finals: dict[int, ResponseItem] = {}
        active = dict(streams)
        try:
            while active:
                if not self.step(active, finals) and active and self.outlet is not None and not self.outlet.wait():
                    self.abandon(active, finals)
        finally:
            self.close_loop()
        return finals

    def step(self, active: dict[int, tuple[Any, RequestProcessor]], finals: dict[int, ResponseItem]) -> bool:
        """One turn: a chunk of each ``active`` generator whose client has room (those that end move to
        ``finals``); whether any moved (if none did, their clients must drain before the next turn)."""
        moved = False
        for index, (stream, proc) in list(active.items()):
            if self.gone(index):
                self._close(stream)
                del active[index]
                finals[index] = GONE
                continue
            if self.outlet is not None and index in self.live and not self.outlet.has_room(index):
                continue
            moved = True
            ended = self._advance(index, stream, proc)
            if ended is not None:
                del active[index]
                finals[index] = self._last_word(index, ended)
        return moved

    def abandon(self, active: dict[int, tuple[Any, RequestProcessor]], finals: dict[int, ResponseItem]) -> None:
        """The server is gone: nobody reads any of ``active``; each generator is closed."""
        for index, (stream, _) in active.items():
            self._close(stream)
            finals[index] = GONE
        active.clear()

    def _last_word(self, index: int, ended: ResponseItem) -> ResponseItem:
        """A generator's request's final answer; one that streams has it sent at once (its client is done)."""
        last = self.finish(index, ended)
        form = self.final_forms.get(index)
        if form is not None:
            last = form(last)
        if ended is not GONE and self.outlet is not None and index in self.live:
            self.outlet.end(index, last)
        return last

    def first_two(self, stream: Any) -> list[Any]:
        """The first two chunks of a stream nobody reads piece by piece (fewer if it ends first), for an answer
        that must be one piece (``dms.worker.tensor_streams``); the stream is closed. What it raises propagates."""
        values: list[Any] = []
        try:
            while len(values) < 2:
                values.append(self._next(stream))
        except StopIteration:
            pass
        finally:
            self._close(stream)
            self.close_loop()
        return values

    def close_loop(self) -> None:
        """Close the event loop that ran the batch's async generators, if any did."""
        if self._loop is not None:
            self._loop.close()
            self._loop = None

    def _encoded(self, index: int, value: Any, proc: RequestProcessor) -> ResponseItem:
        encoder = self.encoders.get(index)
        return encode_output(value, proc, self.model_name) if encoder is None else encoder(value, proc)

    def _advance(self, index: int, stream: Any, proc: RequestProcessor) -> ResponseItem | None:
        """Take the next chunk of one request's generator; its last word once it has ended, else None."""
        limits = self.limits.get(index)
        try:
            value = self._next(stream)
            if limits is not None:
                value, ended = limits.feed(_text(value))
                if ended:
                    self._close(stream)
                    if value and not self.put(index, self._encoded(index, value, proc)):
                        return GONE
                    return self._ended(proc, limits)
                if not value:
                    return None  # held back: it may begin a stop sequence
        except StopIteration:
            if limits is not None:
                rest = limits.flush()
                if rest and not self.put(index, self._encoded(index, rest, proc)):
                    return GONE
            return self._ended(proc, limits)
        except DMSError as exc:
            self._close(stream)
            return error_item(exc)
        except Exception as exc:
            log.error(
                "model %s, request %s: the handler's stream raised\n%s",
                self.model_name,
                proc.request_id,
                traceback.format_exc(),
            )
            return error_item(handler_failure(exc, self.model_name))
        try:
            if not self.put(index, self._encoded(index, value, proc)):
                self._close(stream)
                return GONE
        except DMSError as exc:
            self._close(stream)
            return error_item(exc)
        return None

    def _ended(self, proc: RequestProcessor, limits: TextLimits | None) -> ResponseItem:
        headers = list(proc.response_headers.items())
        if limits is not None:
            headers += limits.headers()
        return ResponseItem(proc.status or 200, b"", proc.content_type or "", headers)

    def _next(self, stream: Any) -> Any:
        if isinstance(stream, Iterator):
            return next(stream)
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        try:
            return self._loop.run_until_complete(anext(stream))
        except StopAsyncIteration:
            raise StopIteration from None

    def _close(self, stream: Any) -> None:
        """Stop a generator where it is (it sees ``GeneratorExit``): its model stops working for that request."""
        try:
            if isinstance(stream, Iterator):
                close = getattr(stream, "close", None)
                if close is not None:
                    close()
            elif hasattr(stream, "aclose"):
                if self._loop is None:
                    self._loop = asyncio.new_event_loop()
                self._loop.run_until_complete(stream.aclose())
        except Exception:
            log.exception("model %s: closing a handler's stream raised", self.model_name)


def _text(value: Any) -> str:
    """A generative model's piece as text."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    raise HandlerError(f"a generative model's pieces must be text, not {type(value).__name__}")
