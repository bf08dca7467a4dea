"""Every tutorial in docs/tutorials runs exactly as written against a real server (see tests/tutorials.py).

A tutorial says what it needs in an HTML comment, e.g. ``<!-- test: needs shared, torch -->``:
``shared`` (../shared beside the checkout), Python modules, or ``torch-model-archiver``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_peer_archives import tool_folder
from tests.support import REPO, SHARED
from tests.tutorials import run_tutorial

TUTORIALS = sorted((REPO / "docs" / "tutorials").glob("[0-9]*.md"))
DEFAULT_PORTS = (8080, 8081, 8082, 7070)
_NEEDS = re.compile(r"<!--\s*test:\s*needs\s+(?P<needs>[^>]*?)\s*-->")


def test_there_are_six_tutorials():
    assert [p.name[:2] for p in TUTORIALS] == ["01", "02", "03", "04", "05", "06"]


def port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def tools_bin(tmp_path: Path) -> Path:
    """``torch-model-archiver`` on PATH, from the folder scripts/test.sh installs it into."""
    folder = tool_folder("torch-model-archiver")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "torch-model-archiver"
    shim.write_text(
        f'#!/bin/sh\nPYTHONPATH="{folder}" exec "{sys.executable}" "{folder}/bin/torch-model-archiver" "$@"\n'
    )
    shim.chmod(0o755)
    return bin_dir


@pytest.mark.parametrize("tutorial", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_runs_as_written(tutorial: Path, tmp_path: Path):
    for tool in ("curl", "jq"):
        if shutil.which(tool) is None:
            pytest.skip(f"the tutorials use {tool} (Debian's package, installed by scripts/test.sh), which is missing")
    found = _NEEDS.search(tutorial.read_text(encoding="utf-8"))
    needs = [n.strip() for n in found["needs"].split(",")] if found else []
    path_entries = [str(Path(sys.executable).parent)]
    for need in needs:
        if need == "shared":
            if not SHARED.is_dir():
                pytest.skip(f"needs {SHARED} (the shared test data beside the checkout), which is missing")
        elif need == "torch-model-archiver":
            path_entries.insert(0, str(tools_bin(tmp_path)))
        elif importlib.util.find_spec(need) is None:
            pytest.skip(f"needs the Python module {need!r} (an optional extra), which is not installed")
    busy = [port for port in DEFAULT_PORTS if port_in_use(port)]
    assert not busy, f"the tutorials use the default ports, and {busy} are taken by something else"
    state = tmp_path / "state"
    env = {
        "PATH": os.pathsep.join([*path_entries, os.environ.get("PATH", "")]),
        "DMS_STATE_DIR": str(state),
        "DMS_ARCHIVE_CACHE_DIR": str(state / "cache"),
    }
    try:
        run_tutorial(tutorial, cwd=REPO, env=env, timeout_s=600)
    finally:
        subprocess.run(
            [sys.executable, "-m", "dms", "stop", "--state-dir", str(state)],
            capture_output=True,
            timeout=90,
            check=False,
        )
