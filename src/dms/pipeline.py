"""``ModelPipe``: chain functions into stages; run a stage's items concurrently, with a timeout, or in batches.

    pipe = ModelPipe()
    pipe.add(preprocess, num_workers=4)                       # items run concurrently
    pipe.add(model, batch_size=32, batcher=numpy.vstack)      # items stacked, one call, split again
    pipe.add(postprocess, timeout=2.0)                        # an item over 2 s fails clearly
    results = pipe([item1, item2, ...])    # or pipe(item) for one

A wrapper's ``create_model`` may return a ModelPipe as its model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from dms.errors import HandlerError, RequestTimeoutError

__all__ = ["ModelPipe"]


@dataclass
class _Stage:
    fn: Callable[[Any], Any]
    num_workers: int
    timeout: float | None
    batch_size: int | None
    batcher: Callable[[Sequence[Any]], Any] | None

    @property
    def name(self) -> str:
        return getattr(self.fn, "__name__", type(self.fn).__name__)


class ModelPipe:
    def __init__(self) -> None:
        self.stages: list[_Stage] = []
        self._executors: dict[int, ThreadPoolExecutor] = {}

    def add(
        self,
        fn: Callable[[Any], Any],
        num_workers: int = 1,
        timeout: float | None = None,
        batch_size: int | None = None,
        batcher: Callable[[Sequence[Any]], Any] | None = None,
    ) -> ModelPipe:
        """Append a stage; checked here so a mistake shows when the pipe is built, not on a request."""
        if not callable(fn):
            raise TypeError(f"a pipe stage must be callable, got {type(fn).__name__}")
        if num_workers < 1:
            raise ValueError("num_workers must be at least 1")
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive")
        if (batch_size is None) != (batcher is None):
            raise ValueError("batch_size and batcher go together: batcher stacks items, batch_size bounds how many")
        if batch_size is not None and batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.stages.append(_Stage(fn, num_workers, timeout, batch_size, batcher))
        return self

    def __call__(self, items: Any) -> Any:
        if isinstance(items, list):
            return self.run(items)
        return self.run([items])[0]

    def run(self, items: list[Any]) -> list[Any]:
        for index, stage in enumerate(self.stages):
            items = self._run_batched(stage, items) if stage.batch_size else self._run_each(index, stage, items)
        return items

    def _run_each(self, index: int, stage: _Stage, items: list[Any]) -> list[Any]:
        if stage.num_workers == 1 and stage.timeout is None:
            return [stage.fn(item) for item in items]
        executor = self._executors.get(index)
        if executor is None:
            executor = self._executors[index] = ThreadPoolExecutor(stage.num_workers, f"pipe-{stage.name}")
        futures = [executor.submit(stage.fn, item) for item in items]
        results = []
        for future in futures:
            try:
                results.append(future.result(timeout=stage.timeout))
            except FutureTimeout:
                raise RequestTimeoutError(f"pipe stage {stage.name} took longer than {stage.timeout:g} s") from None
        return results

    def _run_batched(self, stage: _Stage, items: list[Any]) -> list[Any]:
        assert stage.batch_size is not None and stage.batcher is not None
        results: list[Any] = []
        for start in range(0, len(items), stage.batch_size):
            group = items[start : start + stage.batch_size]
            answers = stage.fn(stage.batcher(group))
            if len(answers) != len(group):
                raise HandlerError(
                    f"pipe stage {stage.name} returned {len(answers)} results for a batch of {len(group)} items"
                )
            results.extend(answers[i] for i in range(len(group)))
        return results

    def close(self) -> None:
        for executor in self._executors.values():
            executor.shutdown(wait=False, cancel_futures=True)
        self._executors.clear()
