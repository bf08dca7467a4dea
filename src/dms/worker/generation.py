"""A generation request's limits, held inside the worker: ``max_tokens`` and ``stop`` sequences.

A generative model's handler (``generative: true`` in its config) yields text pieces; each piece counts as one
token. ``TextLimits`` sees every piece before it goes out: after ``max_tokens`` pieces the generator is closed
(finish reason ``length``); text is cut where a stop sequence begins, the stop sequence itself never sent (finish
reason ``stop``). Text that could be the start of a stop sequence is held back until the next piece shows whether
it is one, so that a stop sequence split over pieces is still caught.
"""

from __future__ import annotations

from typing import Any

from dms.errors import InputError

FINISH_HEADER = "x-finish-reason"
TOKENS_HEADER = "x-completion-tokens"
PROMPT_TOKENS_HEADER = "x-prompt-tokens"
"""A handler may set it (``context.set_response_header(i, ...)``) to report the prompt's length in its tokens."""


class TextLimits:
    """One request's limits (see the module's docstring)."""

    __slots__ = ("done", "finish_reason", "held", "max_tokens", "stop", "tokens")

    def __init__(self, max_tokens: int | None, stop: list[str]) -> None:
        self.max_tokens = max_tokens
        self.stop = [s for s in stop if s]
        self.tokens = 0
        self.held = ""
        self.finish_reason = "stop"
        self.done = False
        """A limit was reached: nothing more of this request's text goes out."""

    @classmethod
    def of(cls, request: Any) -> TextLimits:
        """The limits a generation request (the JSON the frontend made of it) asks for."""
        if not isinstance(request, dict):
            raise InputError("a generation request must be a JSON object")
        max_tokens, stop = request.get("max_tokens"), request.get("stop") or []
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise InputError(f"max_tokens must be a positive integer, not {max_tokens!r}")
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise InputError("stop must be a string or a list of strings")
        return cls(max_tokens, stop)

    @property
    def spent(self) -> bool:
        return self.max_tokens is not None and self.tokens >= self.max_tokens

    def feed(self, piece: str) -> tuple[str, bool]:
        """The text of ``piece`` that may go out now, and whether generation is over."""
        self.tokens += 1
        text = self.held + piece
        cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.held = ""
            self.finish_reason, self.done = "stop", True
            return text[:cut], True
        keep = self._stop_prefix(text)
        self.held = text[len(text) - keep :] if keep else ""
        out = text[: len(text) - keep]
        if self.spent:
            self.finish_reason, self.done = "length", True
            out, self.held = out + self.held, ""
            return out, True
        return out, False

    def flush(self) -> str:
        """What was held back, once the generator has ended on its own."""
        out, self.held = self.held, ""
        return out

    def whole(self, text: str) -> str:
        """A handler's whole answer, cut at its first stop sequence."""
        cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
        return text if cut < 0 else text[:cut]

    def _stop_prefix(self, text: str) -> int:
        """The length of the longest end of ``text`` that begins a stop sequence."""
        best = 0
        for stop in self.stop:
            for length in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:length]):
                    best = length
                    break
        return best

    def headers(self) -> list[tuple[str, str]]:
        return [(FINISH_HEADER, self.finish_reason), (TOKENS_HEADER, str(self.tokens))]
