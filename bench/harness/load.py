"""wrk as the load generator: a Lua script per scenario that sends the body and checks every answer."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

_LUA = """
wrk.method = "POST"
{headers}
local bodies = {{}}
{bodies}
local count = #bodies
local index = 0
local accepted = {{}}
{accepted}
local whole = {whole}
bad = 0
local threads = {{}}

function setup(thread)
  table.insert(threads, thread)
end

function request()
  index = index % count + 1
  return wrk.format(nil, nil, nil, bodies[index])
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    bad = bad + 1
    return
  end
  for _, marker in ipairs(accepted) do
    if (whole and body == marker) or (not whole and string.find(body, marker, 1, true)) then
      return
    end
  end
  bad = bad + 1
end

function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("bad")
  end
  io.write(string.format("BENCH_BAD %d\\n", total))
end
"""


def _lua_string(data: bytes) -> str:
    return '"' + "".join(f"\\{b:03d}" for b in data) + '"'


@dataclass(frozen=True)
class Target:
    """What to send (bodies in turn) and what counts as a correct answer."""

    url: str
    bodies: list[bytes]
    content_type: str
    accepted: list[bytes]
    """Answers that count as correct: exact bodies (``whole``) or markers one of which must occur in it."""
    whole: bool = True
    extra_headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class LoadResult:
    concurrency: int
    requests: int
    seconds: float
    bad: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def write_script(target: Target, path: Path) -> Path:
    headers = [("Content-Type", target.content_type), *target.extra_headers]
    path.write_text(
        _LUA.format(
            headers="\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers),
            bodies="\n".join(f"table.insert(bodies, {_lua_string(b)})" for b in target.bodies),
            accepted="\n".join(f"table.insert(accepted, {_lua_string(a)})" for a in target.accepted),
            whole="true" if target.whole else "false",
        )
    )
    return path


def run_wrk(script: Path, url: str, concurrency: int, seconds: float, cpu: int | None = None) -> LoadResult:
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--latency", "-s", str(script), url]
    if cpu is not None:
        command = ["taskset", "-c", str(cpu), *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return parse_wrk(done.stdout, concurrency)


def parse_wrk(output: str, concurrency: int) -> LoadResult:
    totals = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output)
    if not totals:
        raise RuntimeError(f"cannot read wrk's output:\n{output}")
    unit = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[totals[3]]
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    bad = re.search(r"BENCH_BAD (\d+)", output)
    return LoadResult(
        concurrency=concurrency,
        requests=int(totals[1]),
        seconds=float(totals[2]) * unit,
        bad=int(bad[1]) if bad else -1,
        socket_errors=sum(int(v) for v in errors.groups()) if errors else 0,
        p50_ms=_percentile(output, "50"),
        p90_ms=_percentile(output, "90"),
        p99_ms=_percentile(output, "99"),
    )


def _percentile(output: str, which: str) -> float:
    found = re.search(rf"^\s+{which}(?:\.000)?%\s+([\d.]+)(us|ms|s)", output, re.MULTILINE)
    if not found:
        return float("nan")
    return float(found[1]) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[found[2]]
