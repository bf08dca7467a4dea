"""Run a tutorial from ``docs/tutorials/`` exactly as written, and check the outputs it shows.

A tutorial is Markdown. Its fenced blocks mean, in order:

- ```` ```bash ````: commands; every bash block of a tutorial runs in one shell session (``set -euo pipefail``),
  from the checkout's root, as a reader would paste them.
- ```` ```<lang> title="NAME" ````: a file the reader saves as NAME (in the shell's current folder at that point).
- ```` ```json ```` or ```` ```text ```` right after a bash block: what that block prints. JSON is compared
  as data (numbers within ``abs_tol``, keys in the order shown); text line by line after trimming.

Blocks of any other kind are illustration and are not run.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_TITLE = re.compile(r'title="(?P<name>[^"]+)"')
_MARK = "@@tutorial-step-{}@@"


@dataclass
class Step:
    commands: str
    expected: str | None = None
    expected_kind: str | None = None
    files: list[tuple[str, str]] = field(default_factory=list)
    """Files to write before the commands run: (name, content)."""


def parse_tutorial(text: str) -> list[Step]:
    steps: list[Step] = []
    pending_files: list[tuple[str, str]] = []
    for match in _FENCE.finditer(text):
        info, body = match["info"].strip(), match["body"]
        language = info.split(" ", 1)[0]
        title = _TITLE.search(info)
        if title:
            pending_files.append((title["name"], body))
        elif language == "bash":
            steps.append(Step(commands=body, files=pending_files))
            pending_files = []
        elif language in ("json", "text") and steps and steps[-1].expected is None:
            steps[-1].expected, steps[-1].expected_kind = body, language
    if pending_files:
        steps.append(Step(commands="", files=pending_files))
    return steps


def build_script(steps: list[Step]) -> str:
    lines = ["set -euo pipefail"]
    for index, step in enumerate(steps):
        # A newline first: the previous step's last command (curl, say) may not have ended its line.
        lines.append(f"printf '\\n{_MARK.format(index)}\\n'; printf '\\n{_MARK.format(index)}\\n' >&2")
        for name, content in step.files:
            delimiter = "TUTORIAL_FILE_END"
            lines.append(f'mkdir -p "$(dirname {shlex.quote(name)})"')
            lines.append(f"cat > {shlex.quote(name)} <<'{delimiter}'\n{content}{delimiter}")
        lines.append(step.commands)
    lines.append(f"printf '\\n{_MARK.format(len(steps))}\\n'")
    return "\n".join(lines) + "\n"


def run_tutorial(path: Path, cwd: Path, env: dict[str, str], timeout_s: float, abs_tol: float = 2e-3) -> None:
    """Run every step; raise AssertionError naming the step whose command failed or whose output differs."""
    steps = parse_tutorial(path.read_text(encoding="utf-8"))
    assert any(step.commands.strip() for step in steps), f"{path.name} has no bash blocks"
    done = subprocess.run(
        ["bash", "-c", build_script(steps)],
        cwd=cwd,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    outputs = _split(done.stdout, len(steps) + 1)
    errors = _split(done.stderr, len(steps) + 1)
    if done.returncode != 0:
        failed = max((i for i in range(len(steps)) if outputs[i] is not None), default=0)
        raise AssertionError(
            f"{path.name}: step {failed + 1} exited with {done.returncode}:\n{steps[failed].commands}\n"
            f"--- stdout ---\n{outputs[failed]}\n--- stderr ---\n{(errors[failed] or '')[-4000:]}"
        )
    for index, step in enumerate(steps):
        if step.expected is None:
            continue
        got = outputs[index] or ""
        where = f"{path.name}: step {index + 1} ({step.commands.strip().splitlines()[0]!r})"
        if step.expected_kind == "json":
            try:
                actual = json.loads(got)
            except ValueError:
                raise AssertionError(f"{where} printed no JSON:\n{got}\n{errors[index]}") from None
            mismatch = _json_mismatch(json.loads(step.expected), actual, abs_tol, "$")
            assert mismatch is None, f"{where}: {mismatch}\nshown:\n{step.expected}\nprinted:\n{got}"
        else:
            shown = [line.strip() for line in step.expected.strip().splitlines()]
            printed = [line.strip() for line in got.strip().splitlines()]
            assert printed == shown, f"{where}: printed\n{got}\nbut the tutorial shows\n{step.expected}"


def _split(stream: str, count: int) -> list[str | None]:
    parts: list[str | None] = [None] * count
    pieces = re.split(r"^@@tutorial-step-(\d+)@@\n", stream, flags=re.MULTILINE)
    for number, content in zip(pieces[1::2], pieces[2::2], strict=True):
        parts[int(number)] = content
    return parts


def _json_mismatch(expected: Any, actual: Any, tol: float, where: str) -> str | None:
    if isinstance(expected, dict):
        if not isinstance(actual, dict) or list(actual) != list(expected):
            return f"{where}: keys {list(actual) if isinstance(actual, dict) else actual!r} != {list(expected)}"
        for key, value in expected.items():
            found = _json_mismatch(value, actual[key], tol, f"{where}.{key}")
            if found:
                return found
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return f"{where}: {actual!r} is not a list of {len(expected)}"
        for i, (want, got) in enumerate(zip(expected, actual, strict=True)):
            found = _json_mismatch(want, got, tol, f"{where}[{i}]")
            if found:
                return found
        return None
    if isinstance(expected, float) and isinstance(actual, int | float) and not isinstance(actual, bool):
        return None if math.isclose(expected, actual, abs_tol=tol) else f"{where}: {actual} != {expected} ± {tol}"
    return None if expected == actual else f"{where}: {actual!r} != {expected!r}"
