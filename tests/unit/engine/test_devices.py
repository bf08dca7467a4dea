from __future__ import annotations

import pytest

from dms.engine.devices import gpu_for_worker, visible_gpus


def test_workers_take_visible_gpus_in_turn_and_the_cpu_when_there_are_none(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    gpus = visible_gpus()
    assert gpus == [0, 1]  # CUDA renumbers the visible devices from 0
    assert [gpu_for_worker(n, gpus) for n in range(5)] == [0, 1, 0, 1, 0]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []
    assert gpu_for_worker(0, []) is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert visible_gpus() == []


def test_the_workers_of_several_frontends_take_the_gpus_in_turn_across_frontends():
    gpus = [0, 1, 2, 3]
    # Two frontends of two workers each: frontend 0's workers 0 and 1, then frontend 1's.
    assert [gpu_for_worker(n, gpus, 0, 2) for n in range(2)] == [0, 2]
    assert [gpu_for_worker(n, gpus, 1, 2) for n in range(2)] == [1, 3]
    # More frontends than GPUs: they wrap around.
    assert [gpu_for_worker(0, [0, 1], index, 3) for index in range(3)] == [0, 1, 0]
    assert gpu_for_worker(0, [], 1, 2) is None


def test_number_gpu_keeps_at_most_that_many_workers_on_gpus():
    from dms.engine.devices import device_for_new_worker

    gpus = [0, 1]
    placed: list[int | None] = []
    for number in range(4):
        on_gpus = sum(1 for gpu in placed if gpu is not None)
        placed.append(device_for_new_worker(number, gpus, on_gpus, gpu_workers=1))
    assert placed == [0, None, None, None]
    assert [device_for_new_worker(n, gpus, n, None) for n in range(3)] == [0, 1, 0]  # not given: every worker
    assert device_for_new_worker(0, [], 0, 2) is None  # no GPU: the CPU
