"""A short chaos run in CI (bench/chaos.py has the long one): random worker kills under load, then SIGTERM."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import REPO


def test_random_kills_under_load_lose_nothing_and_hang_nothing():
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "chaos.py"), "--duration", "6", "--concurrency", "8", "--json"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["problems"] == [], summary
    assert done.returncode == 0
    assert summary["workers killed"] >= 2
    assert summary["succeeded"] > 100
    assert summary.get("hung", 0) == 0
    assert summary.get("lost (accepted, no answer)", 0) == 0
    assert summary["worker restarts (server's count)"] == summary["workers killed"]
