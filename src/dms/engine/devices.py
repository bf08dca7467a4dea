"""Which accelerator a worker gets: round-robin over the visible GPUs, or the CPU when there are none.

With several frontends (``dms.frontends``) each frontend numbers its own workers from 0, so the
round-robin runs over slots that interleave the frontends: worker n of frontend i (of N) takes slot
n * N + i. Two frontends of one worker on two GPUs then use both, as one pool of two workers would.

The server never imports a framework to find out: it reads ``CUDA_VISIBLE_DEVICES`` when set, and
otherwise counts the NVIDIA device files.
"""

from __future__ import annotations

import glob
import os
import re


def visible_gpus() -> list[int]:
    declared = os.environ.get("CUDA_VISIBLE_DEVICES")
    if declared is not None:
        entries = [entry.strip() for entry in declared.split(",") if entry.strip() and entry.strip() != "-1"]
        return list(range(len(entries)))
    return sorted(
        int(m.group(1)) for path in glob.glob("/dev/nvidia*") if (m := re.fullmatch(r"/dev/nvidia(\d+)", path))
    )


def gpu_for_worker(worker_number: int, gpus: list[int], frontend_index: int = 0, frontends: int = 1) -> int | None:
    """The GPU of a pool's ``worker_number``-th worker, in frontend ``frontend_index`` of ``frontends``."""
    return gpus[(worker_number * frontends + frontend_index) % len(gpus)] if gpus else None


def device_for_new_worker(
    worker_number: int,
    gpus: list[int],
    on_gpus: int,
    gpu_workers: int | None,
    frontend_index: int = 0,
    frontends: int = 1,
) -> int | None:
    """The GPU of a new worker, or None for the CPU: at most ``gpu_workers`` of a pool's workers on GPUs (TorchServe's
    ``number_gpu``; ``on_gpus`` of them are there already), the rest on the CPU; None: every worker on a GPU when
    there are any."""
    if gpu_workers is not None and on_gpus >= gpu_workers:
        return None
    return gpu_for_worker(worker_number, gpus, frontend_index, frontends)
