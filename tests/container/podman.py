"""Podman driven as ../shared/CLUSTER.md says works on these machines: runc and cgroupfs, overlay storage of the
tests' own, a Debian base image made with debootstrap (no image registry is reachable), and each container in a
network namespace of its own that the test reaches over a veth pair."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import REPO

WORK = REPO / ".tools" / "podman"
"""Storage, configuration and the debootstrapped base, kept between local runs (CI starts without them)."""
RUNROOT = f"/run/dms-tests-podman-{hashlib.sha256(str(WORK).encode()).hexdigest()[:12]}"
"""Podman's run-time state, one per checkout: two checkouts' test runs on one machine never share it."""
BASE_IMAGE = "localhost/dms-base:bookworm"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
TRIMMED = ["var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info"]
"""What the base image need not carry: Debian's package caches and lists, documentation, translations."""


def require_podman() -> None:
    """Skip, saying what is missing, where podman cannot run containers here."""
    for tool in ("podman", "runc", "debootstrap", "ip"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (scripts/test.sh installs podman, runc and debootstrap as root)")
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces and podman's rootful storage")


def podman(
    *args: str, timeout_s: float = 600, check: bool = True, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["podman", *args], env=environment(), capture_output=True, text=True, timeout=timeout_s, check=False, **kwargs
    )
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def environment() -> dict[str, str]:
    WORK.mkdir(parents=True, exist_ok=True)
    containers_conf = WORK / "containers.conf"
    containers_conf.write_text(
        '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'
        '[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
        f'tmp_dir = "{RUNROOT}/libpod"\n'
    )
    storage_conf = WORK / "storage.conf"
    storage_conf.write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{WORK / "storage"}"\nrunroot = "{RUNROOT}"\n')
    return {**os.environ, "CONTAINERS_CONF": str(containers_conf), "CONTAINERS_STORAGE_CONF": str(storage_conf)}


def base_image() -> str:
    """The local Debian bookworm base (python3, its venv module, CA certificates), made once."""
    if podman("image", "exists", BASE_IMAGE, check=False).returncode == 0:
        return BASE_IMAGE
    rootfs = WORK / "rootfs"
    if not (rootfs / "usr" / "bin" / "python3").exists():
        shutil.rmtree(rootfs, ignore_errors=True)
        made = subprocess.run(
            ["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates", "bookworm", rootfs],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
        for relative in TRIMMED:
            shutil.rmtree(rootfs / relative, ignore_errors=True)
            (rootfs / relative).mkdir(parents=True, exist_ok=True)
    with subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE) as tar:
        podman("import", "-", BASE_IMAGE, stdin=tar.stdout)
    assert tar.returncode == 0
    return BASE_IMAGE


def build_image(tag: str, extras: str = "") -> float:
    """``podman build`` of the repository's Dockerfile on the local base; returns the seconds it took."""
    started = time.monotonic()
    args = ["build", "--network", "host", "--build-arg", f"BASE_IMAGE={base_image()}", "-t", tag]
    if CA_BUNDLE.exists():  # pip inside the build verifies PyPI against the host's CAs
        args += ["-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro"]
    if extras:
        args += ["--build-arg", f"EXTRAS={extras}"]
    podman(*args, str(REPO), timeout_s=1500)
    return time.monotonic() - started


def image_bytes(tag: str) -> int:
    return int(podman("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())


def image_config(tag: str) -> dict[str, object]:
    config: dict[str, object] = json.loads(podman("image", "inspect", tag).stdout)[0]["Config"]
    return config


@dataclass
class Network:
    """A network namespace of a container's own, reached from here at ``address``."""

    name: str
    address: str


_NETWORKS = itertools.count()


@contextmanager
def private_network() -> Iterator[Network]:
    """A namespace joined to this one by a veth pair on a /30 of its own (from the test's pid), torn down after."""
    slot = (os.getpid() * 31 + next(_NETWORKS)) % (250 * 64)
    third, quad = divmod(slot, 64)
    name, outside, inside = f"dms-ct-{slot:05d}", f"dmsh{slot:05d}", f"dmsn{slot:05d}"
    here, there = f"10.213.{third}.{quad * 4 + 1}", f"10.213.{third}.{quad * 4 + 2}"
    commands = [
        ["ip", "netns", "add", name],
        ["ip", "link", "add", outside, "type", "veth", "peer", "name", inside],
        ["ip", "link", "set", inside, "netns", name],
        ["ip", "addr", "add", f"{here}/30", "dev", outside],
        ["ip", "link", "set", outside, "up"],
        ["ip", "-n", name, "addr", "add", f"{there}/30", "dev", inside],
        ["ip", "-n", name, "link", "set", inside, "up"],
        ["ip", "-n", name, "link", "set", "lo", "up"],
    ]
    try:
        for command in commands:
            subprocess.run(command, check=True, capture_output=True, timeout=30)
        yield Network(name, there)
    finally:
        subprocess.run(["ip", "link", "del", outside], capture_output=True, timeout=30, check=False)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30, check=False)
