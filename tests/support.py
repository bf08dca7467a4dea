"""Test helpers (kept out of the shipped package): run the real ``dms`` CLI on free ports."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
READY_LINE = "DMS is ready"
RUNNING: set[DmsServer] = set()
"""Servers started and not yet stopped: a failing test's report ends with their logs (conftest)."""


def shared_path(relative: str) -> Path:
    """A file under ../shared, or skip the test naming the missing path."""
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"needs {path} (the shared test data beside the checkout), which is missing")
    return path


def open_descriptors() -> set[str]:
    """This process's open descriptors, each as "number -> what it points to" (Linux: /proc/self/fd)."""
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            found.add(f"{name} -> {os.readlink(f'/proc/self/fd/{name}')}")
        except FileNotFoundError:
            continue  # the directory listing's own descriptor, closed by now
    return found


def free_ports(count: int) -> list[int]:
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
    ports = [s.getsockname()[1] for s in sockets]
    for sock in sockets:
        sock.close()
    return ports


class DmsServer:
    """A ``dms serve`` subprocess; ``start`` returns once it printed its ready line."""

    def __init__(self, workdir: Path, args: list[str], env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        inference, management, metrics, grpc_port = free_ports(4)
        self.grpc_address = f"127.0.0.1:{grpc_port}"
        self.inference_url = f"http://127.0.0.1:{inference}"
        self.management_url = f"http://127.0.0.1:{management}"
        self.metrics_url = f"http://127.0.0.1:{metrics}"
        self.state_dir = workdir / "state"
        self.pid_file = self.state_dir / "dms.pid"
        self.key_file = self.state_dir / "key_file.json"
        self.args = [
            "--inference-address",
            f"127.0.0.1:{inference}",
            "--management-address",
            f"127.0.0.1:{management}",
            "--metrics-address",
            f"127.0.0.1:{metrics}",
            "--grpc-address",
            self.grpc_address,
            "--state-dir",
            str(self.state_dir),
            *args,
        ]
        self.env = {**os.environ, "DMS_ARCHIVE_CACHE_DIR": str(self.state_dir / "cache"), **(env or {})}
        self.command = [sys.executable, "-m", "dms", "serve"]
        self.proc: subprocess.Popen[str] | None = None
        # One keep-alive client per server: test runs open and close many thousands of connections. Idle
        # connections are dropped after 2 s, before the server's 5 s keep-alive timeout closes them: with
        # both at 5 s (httpx's default), a request sent on a connection the server was closing that instant
        # came back as "connection reset by peer".
        self.http = httpx.Client(
            timeout=120,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32, keepalive_expiry=2.0),
        )
        self.lines: list[str] = []
        self.log_lines: list[str] = []
        self._stdout_lines: queue.Queue[str | None] = queue.Queue()

    def start(self, timeout_s: float = 120.0) -> DmsServer:
        self.proc = subprocess.Popen(
            [*self.command, *self.args],
            cwd=self.workdir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        RUNNING.add(self)
        threading.Thread(target=self._pump, args=(self.proc.stdout, self._stdout_lines), daemon=True).start()
        threading.Thread(target=self._collect_log, daemon=True).start()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self._stdout_lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise AssertionError(f"server not ready within {timeout_s} s:\n{self.log()}") from None
            if line is None:
                self.stop()
                raise AssertionError(f"server exited before it was ready:\n{self.log()}")
            self.lines.append(line)
            if line.startswith(READY_LINE):
                return self

    @staticmethod
    def _pump(stream: Any, sink: queue.Queue[str | None]) -> None:
        for line in stream:
            sink.put(line.rstrip("\n"))
        sink.put(None)

    def _collect_log(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log_lines.append(line.rstrip("\n"))

    def log(self) -> str:
        return "\n".join(self.log_lines[-200:])

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> int | None:
        if self.proc is None:
            return None
        RUNNING.discard(self)
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        self.http.close()
        return self.proc.returncode

    # -- convenience ----------------------------------------------------------------------------
    def predict(self, model: str, body: bytes | dict[str, Any] | None = None, **kwargs: Any) -> httpx.Response:
        url = f"{self.inference_url}/predictions/{model}"
        if isinstance(body, dict):
            return self.http.post(url, json=body, **kwargs)
        if body is None and "files" in kwargs:
            return self.http.post(url, **kwargs)
        return self.http.post(url, content=body or b"", **kwargs)

    def key(self, kind: str = "management") -> str:
        return str(json.loads(self.key_file.read_text())[kind]["key"])

    def manage(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A management call with the management key (when the server wrote one)."""
        headers = dict(kwargs.pop("headers", {}))
        if self.key_file.exists():
            headers.setdefault("Authorization", f"Bearer {self.key()}")
        url = f"{self.management_url}{path}"
        try:
            return self.http.request(method, url, headers=headers, **kwargs)
        except httpx.TransportError:
            if method != "GET":
                raise
            return self.http.request(method, url, headers=headers, **kwargs)  # GET is safe to send again

    def describe(self, model: str, version: str | None = None) -> list[dict[str, Any]]:
        response = self.manage("GET", f"/models/{model}" + (f"/{version}" if version else ""))
        assert response.status_code == 200, response.text
        result: list[dict[str, Any]] = response.json()
        return result

    def wait_busy(self, model: str) -> None:
        """Wait until the model's first worker is running a batch."""
        wait_for(lambda: self.describe(model)[0]["workers"][0]["status"] == "BUSY", what=f"{model} worker busy")

    def worker_pids(self, model: str, version: str | None = None) -> set[int]:
        return {w["pid"] for w in self.describe(model, version)[0]["workers"] if w["status"] in ("READY", "BUSY")}


@contextmanager
def running_server(workdir: Path, args: list[str], env: dict[str, str] | None = None) -> Iterator[DmsServer]:
    server = DmsServer(workdir, args, env).start()
    try:
        yield server
    finally:
        server.stop()


def wait_for(predicate: Any, timeout_s: float = 30.0, interval_s: float = 0.05, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy (for state changes with no event to await)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@contextmanager
def http_host(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A loopback HTTP server answering with ``handler`` from threads of its own; yields its base URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@contextmanager
def load_through_a_stop(url: str, clients: int, **request: Any) -> Iterator[Counter[str]]:
    """``clients`` threads posting ``request`` to ``url`` on a new connection each (so each request's fate is its
    own) while the body of the ``with`` stops the server; yields the tally of outcomes, final once the block ends:
    an HTTP status, ``refused`` (the port had closed: never accepted; that client then stops) or ``lost: Error``
    (the connection failed with the request sent)."""
    outcomes: Counter[str] = Counter()
    lock, done = threading.Lock(), threading.Event()

    def client() -> None:
        while not done.is_set():
            try:
                response = httpx.post(url, headers={"Connection": "close"}, timeout=60, **request)
                outcome = str(response.status_code)
            except httpx.ConnectError:
                outcome = "refused"
            except httpx.TransportError as exc:
                outcome = f"lost: {type(exc).__name__}"
            with lock:
                outcomes[outcome] += 1
            if outcome == "refused":
                return

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    try:
        yield outcomes
    finally:
        done.set()
        for thread in threads:
            thread.join(90)
