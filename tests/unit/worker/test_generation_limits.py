"""A generation request's ``max_tokens`` and ``stop`` inside the worker (``dms.worker.generation``)."""

from __future__ import annotations

import pytest

from dms.errors import InputError
from dms.worker.generation import TextLimits


def run(limits: TextLimits, pieces: list[str]) -> tuple[list[str], str]:
    """What goes out, piece by piece, and the finish reason."""
    out = []
    for piece in pieces:
        text, done = limits.feed(piece)
        if text:
            out.append(text)
        if done:
            return out, limits.finish_reason
    rest = limits.flush()
    return [*out, rest] if rest else out, limits.finish_reason


def test_max_tokens_ends_with_length() -> None:
    assert run(TextLimits(3, []), list("abcdef")) == (["a", "b", "c"], "length")


def test_a_stop_sequence_is_cut_even_across_pieces() -> None:
    limits = TextLimits(100, ["STOP"])
    assert run(limits, ["ab", "cS", "TO", "Pxyz"]) == (["ab", "c"], "stop")
    assert limits.done


def test_text_that_only_looks_like_a_stop_goes_out_late_but_whole() -> None:
    assert run(TextLimits(None, ["STOP"]), ["aS", "T", "x", "y"]) == (["a", "STx", "y"], "stop")


def test_held_text_goes_out_when_the_generator_ends() -> None:
    assert run(TextLimits(None, ["STOP"]), ["aST"]) == (["a", "ST"], "stop")


def test_max_tokens_lets_held_text_out() -> None:
    assert run(TextLimits(2, ["STOP"]), ["a", "ST"]) == (["a", "ST"], "length")


def test_the_earliest_of_several_stops_wins() -> None:
    assert run(TextLimits(None, ["yz", "c"]), ["abcxyz"]) == (["ab"], "stop")


def test_a_whole_answer_is_cut_at_its_stop() -> None:
    assert TextLimits(None, ["\n\n"]).whole("one\n\ntwo") == "one"


@pytest.mark.parametrize(
    "request_",
    [{"max_tokens": 0}, {"max_tokens": "9"}, {"stop": 3}, {"stop": ["a", 1]}, "not an object"],
)
def test_bad_limits_are_the_clients_error(request_: object) -> None:
    with pytest.raises(InputError):
        TextLimits.of(request_)


def test_limits_of_a_request() -> None:
    limits = TextLimits.of({"max_tokens": 5, "stop": "\n"})
    assert (limits.max_tokens, limits.stop) == (5, ["\n"])
    assert limits.headers() == [("x-finish-reason", "stop"), ("x-completion-tokens", "0")]
