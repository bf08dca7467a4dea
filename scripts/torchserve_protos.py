"""Fetch TorchServe 0.12.0's wheel and keep the gRPC protos its frontend jar holds (inference.proto,
management.proto and the google/ protos they import) in the folder given: what TorchServe's users generate their
gRPC client stubs from. Run by scripts/test.sh; the tests that need them skip when the folder is missing."""

from __future__ import annotations

import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "torchserve==0.12.0"
JAR = "ts/frontend/model-server.jar"
KEPT = ("inference.proto", "management.proto", "google/rpc/status.proto", "google/protobuf/any.proto")


def main(target: Path) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL, "-d", scratch]
        subprocess.run(pip, check=True)
        [wheel] = Path(scratch).glob("torchserve-*.whl")
        with zipfile.ZipFile(wheel) as outer, zipfile.ZipFile(io.BytesIO(outer.read(JAR))) as jar:
            kept = {name: jar.read(name) for name in KEPT if name in jar.namelist()}
    missing = set(KEPT) - set(kept)
    if missing:
        raise SystemExit(f"{WHEEL}'s {JAR} lacks {sorted(missing)}")
    for name, content in kept.items():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_bytes(content)
    print(f"TorchServe's gRPC protos in {target}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
