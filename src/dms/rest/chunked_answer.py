"""A model's answer sent to an HTTP/1.1 client as it is made: TorchServe's streamed ``/predictions``.

The head goes out with the first chunk (its status, content type and headers are the answer's), each chunk
after it as one piece of chunked transfer encoding (HTTP/1.0 clients read to the end of the connection), and
the request's final answer ends it: its body, if any, as the last piece. A model that fails after the head
went out can no longer change the status: the connection is closed without the last piece, which every HTTP
client reads as a broken answer (and the server's log says why).

Flow control: each chunk written while the client takes what it is sent is credited to the worker at once
(``StreamControl.credit``); while the client's connection holds more than its high-water mark, the credits wait
for it to drain, so the worker, a few chunks ahead at most, waits too. A client that takes nothing for
``stream_stall_timeout_s`` is given up: its connection is closed and the worker stops making the answer.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from dms.dataplane.outcomes import Outcome
from dms.errors import DMSError, error_from_wire
from dms.rest.errors import HTTP_STATUS
from dms.rest.forwarding import Reply

if TYPE_CHECKING:
    from dms.engine.chunk_streams import StreamControl
    from dms.messages import Chunk
    from dms.observability.tallies import Count
    from dms.rest.exchange import Exchange
    from dms.rest.generation import AnswerForm

log = logging.getLogger("dms.rest")


class ChunkedAnswer:
    """One streamed answer on one connection (see the module's docstring)."""

    __slots__ = ("control", "count", "exchange", "form", "owed", "request_id", "stall_s", "status", "waiter")

    def __init__(
        self,
        exchange: Exchange,
        control: StreamControl,
        head: Reply,
        request_id: str,
        stall_s: float,
        form: AnswerForm | None = None,
        count: Count | None = None,
    ) -> None:
        self.exchange = exchange
        self.count = count
        """The model version's count of streamed chunks (``dms_stream_chunks_total``)."""
        self.form = form
        """A generation protocol's form (server-sent events); None: the chunks go out as the model made them."""
        self.control = control
        self.request_id = request_id
        self.stall_s = stall_s
        self.status = head.status
        self.owed = 0
        """Chunks written whose credit waits for the client to drain its connection."""
        self.waiter: asyncio.Task[None] | None = None
        exchange.start(head.status, head.headers, head.body, more=True)
        self._counted()
        self._credit()

    def more(self, chunk: Chunk) -> None:
        self.exchange.send_body(chunk.body if self.form is None else self.form.piece(chunk.body), more=True)
        self._counted()
        self._credit()

    def _counted(self) -> None:
        if self.count is not None:
            self.count.inc()

    def gone(self) -> None:
        """The client left: the worker stops making the answer."""
        self.control.stop()

    def end(self, outcome: Outcome) -> int:
        """Finish the answer with the request's final outcome; the status to report for it."""
        if self.waiter is not None:
            self.waiter.cancel()
        if outcome is None or self.exchange.gone or self.control.stopped:
            self.control.stop()
            return 499  # the client left, or was given up
        if isinstance(outcome, DMSError):
            return self._break_off(outcome)
        if outcome.error is not None:
            return self._break_off(error_from_wire(outcome.error.type_name, outcome.error.message))
        self.exchange.send_body(outcome.body if self.form is None else self.form.last(outcome), more=False)
        return self.status

    def _break_off(self, error: DMSError) -> int:
        log.error("request %s: its streamed answer broke off: %s", self.request_id, error.message)
        ending = self.form.failed(error) if self.form is not None else None
        if ending is None:
            self.exchange.abort()
        else:  # the protocol has a way to say it in the stream (an error event)
            self.exchange.send_body(ending, more=False)
        return HTTP_STATUS[error.kind]

    def _credit(self) -> None:
        exchange = self.exchange
        if exchange.gone:
            self.control.stop()
        elif not exchange.paused and self.waiter is None:
            self.control.credit(1)
        else:
            self.owed += 1
            if self.waiter is None:
                self.waiter = asyncio.ensure_future(self._credit_when_drained())

    async def _credit_when_drained(self) -> None:
        exchange = self.exchange
        try:
            async with asyncio.timeout(self.stall_s):
                while exchange.paused and not exchange.gone:
                    await exchange.drained()
        except TimeoutError:
            log.warning(
                "request %s: its client took none of the streamed answer for %g s (stream_stall_timeout_s); "
                "giving it up",
                self.request_id,
                self.stall_s,
            )
            self.control.stop()
            exchange.abort()
            return
        finally:
            self.waiter = None
        if exchange.gone:
            self.control.stop()
            return
        owed, self.owed = self.owed, 0
        self.control.credit(owed)
