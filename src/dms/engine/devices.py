"""Which accelerator a worker gets: round-robin over the visible GPUs, or the CPU when there are none.

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


def gpu_for_worker(worker_number: int, gpus: list[int]) -> int | None:
    return gpus[worker_number % len(gpus)] if gpus else None
