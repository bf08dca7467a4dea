"""Chaos run: load a real server, SIGKILL random workers, then SIGTERM it mid-load; account for every request.

    python bench/chaos.py --duration 120 --output bench/results/chaos-$(date +%F).md

Every request must end one of three ways: 200; a 500 ``WorkerDiedError`` from the batch a killed
worker held; or, after SIGTERM, a refused connection (never accepted). A request that hangs
past the client timeout, or that was accepted and then lost, fails the run. Exit status 0 means
every check held.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

HANDLER = """
import os, time

def handle(data, context):
    if data is None:
        return None
    time.sleep(0.002 * len(data))
    return [{"pid": os.getpid(), "echo": row["body"]["n"]} for row in data]
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(work: Path, workers: int, batch_size: int) -> tuple[subprocess.Popen[str], dict[str, str]]:
    from dms.archive.writer import ArchiveSpec, write_archive

    (work / "chaos_handler.py").write_text(HANDLER)
    (work / "config.yaml").write_text(f"initial_workers: {workers}\nbatch_size: {batch_size}\njob_queue_size: 10000\n")
    write_archive(
        ArchiveSpec(
            model_name="chaos", version="1.0", handler=str(work / "chaos_handler.py"), config_file=work / "config.yaml"
        ),
        work / "store",
    )
    ports = {name: free_port() for name in ("inference", "management", "metrics")}
    command = [
        sys.executable,
        "-m",
        "dms",
        "serve",
        "--model-store",
        str(work / "store"),
        "--models",
        "chaos=chaos.mar",
        "--state-dir",
        str(work / "state"),
        "--no-snapshot",
        *[arg for name, port in ports.items() for arg in (f"--{name}-address", f"127.0.0.1:{port}")],
    ]
    env = {**os.environ, "DMS_ARCHIVE_CACHE_DIR": str(work / "cache"), "DMS_RESTART_BACKOFF_MAX_S": "0.5"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("DMS is ready"):
            break
    else:
        raise SystemExit("the server exited before it was ready")
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    urls["key"] = json.loads((work / "state" / "key_file.json").read_text())["management"]["key"]
    return proc, urls


async def load(
    urls: dict[str, str],
    stop: asyncio.Event,
    stats: Counter[str],
    concurrency: int,
    sigterm_sent: asyncio.Event,
    timeout_s: float,
) -> None:
    async def one_client(index: int) -> None:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            n = 0
            while not stop.is_set():
                n += 1
                after_sigterm = sigterm_sent.is_set()
                try:
                    response = await client.post(f"{urls['inference']}/predictions/chaos", json={"n": n})
                except httpx.ConnectError:
                    stats["refused after SIGTERM" if after_sigterm else "refused before SIGTERM"] += 1
                    await asyncio.sleep(0.05)
                    continue
                except httpx.TimeoutException:
                    stats["hung"] += 1
                    continue
                except httpx.TransportError:
                    # After SIGTERM the server closes idle keep-alive connections; a request already on
                    # the wire to one was never accepted. Before SIGTERM nothing may end this way.
                    if after_sigterm:
                        stats["connection closed by shutdown (not accepted)"] += 1
                    else:
                        stats["lost (accepted, no answer)"] += 1
                    continue
                stats["sent"] += 1
                if response.status_code == 200 and response.json()["echo"] == n:
                    stats["succeeded"] += 1
                elif response.status_code == 500 and response.json().get("type") == "WorkerDiedError":
                    stats["failed: worker killed in flight"] += 1
                else:
                    stats[f"unexpected {response.status_code}"] += 1

    await asyncio.gather(*(one_client(i) for i in range(concurrency)))


async def killer(urls: dict[str, str], stop: asyncio.Event, stats: Counter[str], interval_s: float) -> None:
    headers = {"Authorization": f"Bearer {urls['key']}"}
    async with httpx.AsyncClient(timeout=10, headers=headers) as client:
        while not stop.is_set():
            await asyncio.sleep(random.uniform(0.5, 1.5) * interval_s)
            described = (await client.get(f"{urls['management']}/models/chaos")).json()[0]
            pids = [w["pid"] for w in described["workers"] if w["status"] in ("READY", "BUSY")]
            if pids:
                os.kill(random.choice(pids), signal.SIGKILL)
                stats["workers killed"] += 1


async def run(args: argparse.Namespace) -> Counter[str]:
    stats: Counter[str] = Counter()
    with tempfile.TemporaryDirectory(prefix="dms-chaos-") as tmp:
        proc, urls = start_server(Path(tmp), args.workers, args.batch_size)
        stop_load, stop_killing, sigterm_sent = asyncio.Event(), asyncio.Event(), asyncio.Event()
        load_task = asyncio.create_task(
            load(urls, stop_load, stats, args.concurrency, sigterm_sent, args.client_timeout_s)
        )
        kill_task = asyncio.create_task(killer(urls, stop_killing, stats, args.kill_interval_s))
        await asyncio.sleep(args.duration)
        stop_killing.set()
        await kill_task
        await asyncio.sleep(1.0)  # let the last replacement come up before the graceful stop
        described = httpx.get(
            f"{urls['management']}/models/chaos", headers={"Authorization": f"Bearer {urls['key']}"}
        ).json()[0]
        stats["worker restarts (server's count)"] = described["restarts"]
        sigterm_sent.set()
        proc.send_signal(signal.SIGTERM)
        exit_code = await asyncio.to_thread(proc.wait, 60)
        stop_load.set()
        await load_task
        stats["server exit code"] = exit_code
    return stats


def verdict(stats: Counter[str], batch_size: int) -> list[str]:
    problems = []
    for bad in ("hung", "lost (accepted, no answer)", "refused before SIGTERM"):
        if stats[bad]:
            problems.append(f"{stats[bad]} requests {bad}")
    problems += [f"{n} x {key}" for key, n in stats.items() if key.startswith("unexpected")]
    if stats["failed: worker killed in flight"] > stats["workers killed"] * batch_size:
        problems.append("more failures than the killed workers' batches can explain")
    if stats["server exit code"] != 0:
        problems.append(f"server exited with {stats['server exit code']}")
    if stats["succeeded"] == 0:
        problems.append("nothing succeeded")
    return problems


def report(stats: Counter[str], args: argparse.Namespace, problems: list[str]) -> str:
    lines = [
        f"# Chaos run, {time.strftime('%Y-%m-%d %H:%M')}",
        "",
        f"{args.duration:g} s of load at concurrency {args.concurrency} on one model with {args.workers} workers "
        f"(batch size {args.batch_size}); a random worker SIGKILLed about every {args.kill_interval_s:g} s; "
        "then SIGTERM to the server while the load kept coming.",
        "",
        "| outcome | requests |",
        "|---|---|",
        *[f"| {key} | {value} |" for key, value in sorted(stats.items())],
        "",
        "Verdict: " + ("every request accounted for." if not problems else "; ".join(problems)),
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load with killing")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--kill-interval-s", type=float, default=1.0)
    parser.add_argument("--client-timeout-s", type=float, default=30.0)
    parser.add_argument("--output", type=Path, help="write the report (markdown) here")
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    args = parser.parse_args()
    stats = asyncio.run(run(args))
    problems = verdict(stats, args.batch_size)
    text = report(stats, args, problems)
    if args.output:
        args.output.write_text(text)
    print(json.dumps({**stats, "problems": problems}) if args.json else text)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
