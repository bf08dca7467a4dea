"""ModelPipe alone: chaining, concurrency, timeouts, batching and the checks made when stages are added."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from dms.errors import HandlerError, RequestTimeoutError
from dms.pipeline import ModelPipe


def test_stages_chain_for_one_item_or_a_list():
    pipe = ModelPipe().add(lambda x: x + 1).add(lambda x: x * 10)
    assert pipe(1) == 20
    assert pipe([1, 2, 3]) == [20, 30, 40]


def test_a_stage_with_workers_runs_items_concurrently_and_keeps_order():
    inside, peak, lock = [0], [0], threading.Lock()

    def slow(x: int) -> int:
        with lock:
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
        time.sleep(0.05)
        with lock:
            inside[0] -= 1
        return x * 2

    pipe = ModelPipe().add(slow, num_workers=4)
    assert pipe(list(range(8))) == [0, 2, 4, 6, 8, 10, 12, 14]
    assert peak[0] > 1
    pipe.close()


def test_a_stage_over_its_timeout_fails_clearly():
    pipe = ModelPipe().add(lambda x: time.sleep(0.5) or x, timeout=0.05)
    with pytest.raises(RequestTimeoutError, match=r"longer than 0\.05 s"):
        pipe(1)
    pipe.close()


def test_a_batched_stage_stacks_calls_once_per_batch_and_splits():
    calls = []

    def model(batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape)
        return batch.sum(axis=1)

    pipe = ModelPipe().add(model, batch_size=3, batcher=np.vstack)
    rows = [np.full((1, 2), i) for i in range(5)]
    assert [float(r) for r in pipe(rows)] == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert calls == [(3, 2), (2, 2)]
    with pytest.raises(HandlerError, match="returned 1 results for a batch of 3"):
        ModelPipe().add(lambda b: [0], batch_size=3, batcher=np.vstack)(rows)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_workers": 0}, "num_workers"),
        ({"timeout": 0}, "timeout"),
        ({"batch_size": 2}, "go together"),
        ({"batcher": np.vstack}, "go together"),
    ],
)
def test_bad_stage_arguments_are_refused_when_added(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelPipe().add(lambda x: x, **kwargs)
    with pytest.raises(TypeError):
        ModelPipe().add("not callable")  # type: ignore[arg-type]
