"""A batch's streamed answers inside a worker (``dms.worker.streaming``), with an outlet the test plays."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

from dms.context import Context, RequestProcessor
from dms.messages import STREAM_WINDOW, Batch, Chunk, RequestItem, ResponseItem
from dms.worker.streaming import GONE, BatchStreams, is_stream


class FakeOutlet:
    """Room per request as the server would grant it: ``window`` chunks, then more only as the test says."""

    def __init__(self, streamed: list[int], window: int = STREAM_WINDOW) -> None:
        self.room = dict.fromkeys(streamed, window)
        self.sent: list[Chunk] = []
        self.left: set[int] = set()
        self.ended: list[tuple[int, ResponseItem]] = []
        """The last words sent as their streams ended (``StreamEnd``)."""
        self.ended_after: list[int] = []
        """How many chunks had been sent when each of them was."""
        self.waits = 0
        self.on_wait: list[dict[int, int] | set[int]] = []
        """What each ``wait`` brings: more room (a dict) or departures (a set); the server is gone after them."""

    def has_room(self, index: int) -> bool:
        return self.room.get(index, 0) > 0 and index not in self.left

    def gone(self, index: int) -> bool:
        return index in self.left

    def send(self, chunk: Chunk) -> None:
        self.room[chunk.index] -= 1
        self.sent.append(chunk)

    def end(self, index: int, last: ResponseItem) -> None:
        self.ended.append((index, last))
        self.ended_after.append(len(self.sent))

    def wait(self) -> bool:
        self.waits += 1
        if not self.on_wait:
            return False
        news = self.on_wait.pop(0)
        if isinstance(news, dict):
            for index, more in news.items():
                self.room[index] += more
        else:
            self.left |= news
        return True


def batch(*streamed: bool) -> Batch:
    items = [RequestItem(f"r{i}", b"", "", [], [], stream=s) for i, s in enumerate(streamed)]
    return Batch(batch_id=5, items=items)


def procs(count: int) -> list[RequestProcessor]:
    return [RequestProcessor(f"r{i}", {}, i) for i in range(count)]


def letters(text: str) -> Iterator[str]:
    yield from text


def test_what_counts_as_a_stream() -> None:
    async def agen() -> AsyncIterator[str]:
        yield "a"

    assert is_stream(letters("ab")) and is_stream(iter([1])) and is_stream(agen())
    assert not any(is_stream(v) for v in ("ab", b"ab", [1, 2], {"a": 1}, None, 3))


def test_generators_take_turns_one_chunk_each() -> None:
    outlet = FakeOutlet([0, 1])
    streams = BatchStreams(batch(True, True), outlet, "m")
    p = procs(2)
    finals = streams.pump({0: (letters("abc"), p[0]), 1: (letters("xy"), p[1])})
    assert [(c.index, c.body) for c in outlet.sent] == [(0, b"a"), (1, b"x"), (0, b"b"), (1, b"y"), (0, b"c")]
    assert all(c.batch_id == 5 and c.content_type == "text/plain; charset=utf-8" for c in outlet.sent)
    assert {i: (f.status, f.body, f.error) for i, f in finals.items()} == {0: (200, b"", None), 1: (200, b"", None)}


def test_a_stream_that_ends_first_sends_its_last_word_at_once() -> None:
    """The short answer of a batch is over when its generator ends, not when the batch's longest has."""
    outlet = FakeOutlet([0, 1, 2])
    streams = BatchStreams(batch(True, True, False), outlet, "m")
    p = procs(3)
    finals = streams.pump({0: (letters("abcdef"), p[0]), 1: (letters("xy"), p[1]), 2: (letters("jk"), p[2])})
    assert [index for index, _ in outlet.ended] == [1, 0]  # request 2 does not stream: its answer is joined
    assert outlet.ended_after[0] == 5  # a x b y c: request 1 ends at its next turn, long before request 0
    assert outlet.ended[0][1] == finals[1] and finals[1].error is None
    assert len(outlet.sent) == 8 and finals[2].body == b"jk"


def test_a_request_that_does_not_stream_gets_its_chunks_joined() -> None:
    outlet = FakeOutlet([0])
    streams = BatchStreams(batch(True, False), outlet, "m")
    p = procs(2)
    finals = streams.pump({0: (letters("ab"), p[0]), 1: (iter([{"k": 1}, {"k": 2}]), p[1])})
    assert [c.body for c in outlet.sent] == [b"a", b"b"]
    assert finals[1].body == b'{"k":1}{"k":2}' and finals[1].content_type == "application/json"


def test_without_an_outlet_everything_is_joined() -> None:
    streams = BatchStreams(batch(True), None, "m")
    assert streams.pump({0: (letters("abc"), procs(1)[0])})[0].body == b"abc"


def test_a_slow_client_holds_back_only_its_own_generator() -> None:
    outlet = FakeOutlet([0, 1], window=2)
    outlet.on_wait = [{0: 2}, {0: 5, 1: 5}]
    streams = BatchStreams(batch(True, True), outlet, "m")
    p = procs(2)
    made: list[str] = []

    def tracked(name: str, count: int) -> Iterator[str]:
        for i in range(count):
            made.append(f"{name}{i}")
            yield name

    streams.pump({0: (tracked("a", 5), p[0]), 1: (tracked("b", 3), p[1])})
    # two of each go out; then request 1 waits for room while request 0, granted more, goes on
    assert made[:4] == ["a0", "b0", "a1", "b1"]
    assert made.index("a3") < made.index("b2")
    assert "".join(c.body.decode() for c in outlet.sent).count("a") == 5
    assert outlet.waits == 2


def test_a_client_that_leaves_closes_its_generator_before_the_next_chunk() -> None:
    outlet = FakeOutlet([0], window=2)
    outlet.on_wait = [{0}]
    closed: list[bool] = []

    def endless() -> Iterator[str]:
        try:
            while True:
                yield "z"
        finally:
            closed.append(True)

    finals = BatchStreams(batch(True), outlet, "m").pump({0: (endless(), procs(1)[0])})
    assert len(outlet.sent) == 2 and closed == [True] and finals[0] is GONE


def test_the_server_gone_ends_every_stream() -> None:
    outlet = FakeOutlet([0], window=1)
    finals = BatchStreams(batch(True), outlet, "m").pump({0: (letters("abc"), procs(1)[0])})
    assert len(outlet.sent) == 1 and finals[0] is GONE


def test_a_generator_that_raises_ends_its_request_with_the_error() -> None:
    def broken() -> Iterator[str]:
        yield "a"
        raise ValueError("no more")

    outlet = FakeOutlet([0, 1])
    p = procs(2)
    finals = BatchStreams(batch(True, True), outlet, "m").pump({0: (broken(), p[0]), 1: (letters("xy"), p[1])})
    assert finals[0].error is not None and "ValueError: no more" in finals[0].error.message
    assert finals[1].error is None and [c.body for c in outlet.sent if c.index == 1] == [b"x", b"y"]


def test_async_generators_stream_too() -> None:
    async def words() -> AsyncIterator[str]:
        for word in ("one", "two"):
            await asyncio.sleep(0)
            yield word

    outlet = FakeOutlet([0])
    BatchStreams(batch(True), outlet, "m").pump({0: (words(), procs(1)[0])})
    assert [c.body for c in outlet.sent] == [b"one", b"two"]


def test_a_chunk_over_the_response_limit_ends_the_request() -> None:
    outlet = FakeOutlet([0])
    finals = BatchStreams(batch(True), outlet, "m", max_chunk_bytes=3).pump({0: (iter(["ab", "abcd"]), procs(1)[0])})
    assert [c.body for c in outlet.sent] == [b"ab"]
    assert finals[0].error is not None and "max_response_size_bytes" in finals[0].error.message


def test_torchserve_intermediate_responses_then_the_last_word() -> None:
    from dms._shims.ts.protocol.otf_message_handler import send_intermediate_predict_response

    outlet = FakeOutlet([0])
    streams = BatchStreams(batch(True, False), outlet, "m")
    context = Context("m", "/tmp", {}, 2, None, "DMS", "0", {})
    p = procs(2)
    context.start_batch(p)
    context.chunk_sink = streams
    for step in ("a", "b"):
        send_intermediate_predict_response([step, step.upper()], context.request_ids, "ok", 200, context)
    from dms.worker.outputs import encode_output

    last = [streams.last_word(proc, encode_output(value, proc, "m")) for proc, value in zip(p, ["c", "C"], strict=True)]
    assert [c.body for c in outlet.sent] == [b"a", b"b", b"c"]  # the last word goes as the last chunk
    assert last[0].body == b"" and last[0].error is None
    assert last[1].body == b"ABC"  # the request that does not stream gets it joined
