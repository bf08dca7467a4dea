"""Start, measure and stop the servers under test, each by its own process ids.

A server is started either in the foreground (we own the process: DMS, the bare ceiling) or as a
daemon (TorchServe and MMS start a JVM and return): then its processes are found by a marker, the
run's private folder, in their command lines. Everything found is stopped by pid at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil


@dataclass
class Server:
    name: str
    start: list[str]
    probe_url: str
    probe_body: bytes
    probe_type: str
    marker: str
    """A string in the command line of every process of this server (its private folder)."""
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)
    stop_command: list[str] | None = None
    daemon: bool = False
    log: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    cold_start_s: float | None = None
    answers: Callable[[], bool] | None = None
    """For servers that do not speak HTTP (the gRPC ceiling): True once it answers correctly."""

    def launch(self, timeout_s: float = 300.0) -> float:
        """Start it and return the seconds until the first successful answer (the cold start)."""
        log = (self.log or self.cwd / "server.log").open("ab")
        began = time.perf_counter()
        self.process = subprocess.Popen(
            self.start,
            cwd=self.cwd,
            env={**os.environ, **self.env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        deadline = began + timeout_s
        with httpx.Client(timeout=10) as client:
            while time.perf_counter() < deadline:
                if not self.daemon and self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {log.name}")
                try:
                    if self.answers is not None:
                        answered = self.answers()
                    else:
                        answer = client.post(
                            self.probe_url, content=self.probe_body, headers={"Content-Type": self.probe_type}
                        )
                        answered = answer.status_code == 200
                    if answered:
                        self.cold_start_s = time.perf_counter() - began
                        return self.cold_start_s
                except httpx.TransportError:
                    pass
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.name} gave no successful answer within {timeout_s:g} s; see {log.name}")

    def processes(self) -> list[psutil.Process]:
        found: dict[int, psutil.Process] = {}
        roots = []
        if self.process is not None and self.process.poll() is None:
            roots.append(psutil.Process(self.process.pid))
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if self.marker in " ".join(proc.info["cmdline"] or []):
                    roots.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        for root in roots:
            try:
                for proc in [root, *root.children(recursive=True)]:
                    found[proc.pid] = proc
            except psutil.NoSuchProcess:
                continue
        return list(found.values())

    def cpu_seconds(self) -> float:
        return cpu_seconds_of(self.processes())

    def rss_mib(self) -> float:
        total = 0
        for proc in self.processes():
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total / 2**20

    def stop(self) -> None:
        if self.stop_command:
            subprocess.run(
                self.stop_command,
                cwd=self.cwd,
                env={**os.environ, **self.env},
                capture_output=True,
                timeout=120,
                check=False,
            )
        for proc in self.processes():
            try:
                proc.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                continue
        _, alive = psutil.wait_procs(self.processes(), timeout=20)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                continue
        if self.process is not None:
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def cpu_seconds_of(processes: list[psutil.Process]) -> float:
    """User plus system CPU seconds of these processes so far (ones that have ended count 0)."""
    total = 0.0
    for proc in processes:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total
