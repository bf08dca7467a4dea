"""Install what the benchmark needs: Debian's wrk, h2load and Java where missing, TorchServe 0.12 and MMS 1.1
each in a throw-away venv (torch from its pinned local wheel first, so nothing pulls a CUDA build)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TORCH = "torch==2.13.0"
VENVS = Path(tempfile.gettempdir()) / "dms-bench-peers"
"""Throw-away venvs, kept between runs under the temp folder (delete it to reinstall)."""
TORCHSERVE = ["torchserve==0.12.0", "torch-model-archiver==0.12.0", "pyyaml", "numpy", "onnxruntime", "pillow"]
MMS = ["multi-model-server==1.1.11", "model-archiver==1.0.3", "numpy", "onnxruntime", "pillow"]


def apt_install(*packages: str) -> None:
    sudo = [] if _is_root() else ["sudo"]
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, timeout=600)
    subprocess.run(
        [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], check=True, timeout=1200
    )


def _is_root() -> bool:
    return os.geteuid() == 0


def ensure_tools(java: bool) -> None:
    missing = [package for tool, package in (("wrk", "wrk"), ("h2load", "nghttp2-client")) if not shutil.which(tool)]
    if java and not shutil.which("java"):
        missing.append("openjdk-17-jre-headless")
    if missing:
        print(f"installing {', '.join(missing)} from Debian", flush=True)
        apt_install(*missing)


def venv(path: Path, packages: list[str], with_torch: bool) -> Path:
    """A venv at ``path`` with ``packages`` (reused when it already has them); returns its bin folder."""
    done = path / ".bench-installed"
    wanted = "\n".join([TORCH if with_torch else "", *packages])
    if done.is_file() and done.read_text() == wanted:
        return path / "bin"
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(path)], check=True, timeout=300)
    pip = [str(path / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    if with_torch:
        subprocess.run([*pip, TORCH], check=True, timeout=1800)
    subprocess.run([*pip, *packages], check=True, timeout=1800)
    done.write_text(wanted)
    return path / "bin"


def torchserve_env(root: Path) -> Path:
    return venv(root / "venv-torchserve", TORCHSERVE, with_torch=True)


def mms_env(root: Path) -> Path:
    return venv(root / "venv-mms", MMS, with_torch=False)
