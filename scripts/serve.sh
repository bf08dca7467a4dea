#!/usr/bin/env bash
# Set up DMS in ./.venv (core install: no torch, no Java, no compiler) and serve.
# With no arguments it serves the bundled digits model on 127.0.0.1:8080; any arguments go to
# `dms serve` (for example: --model-store model_store --models squeezenet=squeezenet.mar).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
exec .venv/bin/dms serve "$@"
