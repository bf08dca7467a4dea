#!/usr/bin/env bash
# Set up everything the tests need in ./.venv and run the whole suite: lint, types, tests.
# This is exactly what CI runs (.ci/run). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { echo "== $* ($(date +%T))"; }
step "setting up .venv: pip, torch 2.13.0 (CPU), DMS with every extra; a few minutes the first time"
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
pip=(.venv/bin/python -m pip install -q)
"${pip[@]}" --upgrade pip
# torch first and pinned: installed later as a dependency it could pull a CUDA build.
"${pip[@]}" torch==2.13.0
"${pip[@]}" -e '.[all,bench,test,ray]'
step "the peer archivers the tests run (torch-model-archiver, model-archiver)"
# The two peer archivers both ship a top-level `model_archiver` package, so each gets its own
# folder; tests run them with PYTHONPATH pointing there.
[ -d .tools/torch-model-archiver ] || "${pip[@]}" --target .tools/torch-model-archiver torch-model-archiver==0.12.0
[ -d .tools/mms-model-archiver ] || "${pip[@]}" --target .tools/mms-model-archiver model-archiver==1.0.3
# TorchServe's own gRPC protos (inside its frontend jar), from which tests/e2e/test_torchserve_grpc.py generates the
# client stubs a TorchServe user has, to drive DMS's TorchServe gRPC APIs with them.
[ -f .tools/torchserve-protos/inference.proto ] || .venv/bin/python scripts/torchserve_protos.py .tools/torchserve-protos

# Debian tools the tests use for real: Chromium for the browser tests (Playwright's own browser
# download is not used), curl and jq for the tutorials (run as written), wrk and h2load (nghttp2-client)
# for the benchmark smoke run; podman, runc, debootstrap and ip (iproute2) to build and run the image
# (tests/container); kubectl (kubernetes-client) to render the kustomize base offline; openssl for the TLS
# tests' certificate.
declare -A package=([h2load]=nghttp2-client [ip]=iproute2 [kubectl]=kubernetes-client)
missing=()
for tool in chromium curl jq wrk h2load podman runc debootstrap ip kubectl openssl; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${package[$tool]:-$tool}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  step "Debian packages the tests use: ${missing[*]}"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" fonts-dejavu-core >/dev/null
  else
    echo "missing ${missing[*]} and this user cannot apt-get them: the tests that need them will skip" >&2
  fi
fi

echo "== ruff"
.venv/bin/ruff check src tests scripts bench
.venv/bin/ruff format --check src tests scripts bench
echo "== mypy --strict"
.venv/bin/mypy
echo "== import-linter: every import points down (pyproject.toml's [tool.importlinter])"
.venv/bin/lint-imports
echo "== pytest"
# pytest exits 5 when it collected no test; under `set -e` that fails the run, as it should.
.venv/bin/python -m pytest "$@"
