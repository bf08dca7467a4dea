"""schemathesis against both ports' OpenAPI documents on a real server: no 5xx, no crash.

Examples are bounded (``DMS_FUZZ_EXAMPLES``, default 25 per operation) so CI stays quick; raise
it for a longer hunt.
"""

from __future__ import annotations

import os

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.conftest import make_probe_archive
from tests.support import DmsServer, running_server

EXAMPLES = int(os.environ.get("DMS_FUZZ_EXAMPLES", "25"))
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("fuzz")
    store = work / "store"
    make_probe_archive(store, "probe", config="initial_workers: 1\n")
    env = {"DMS_MAX_WORKERS_PER_MODEL": "2", "DMS_JOB_QUEUE_SIZE": "1000"}
    with running_server(work, ["--model-store", str(store), "--models", "probe=probe-1.0.mar"], env=env) as running:
        yield running


def load_schema(url: str, headers: dict[str, str] | None = None) -> schemathesis.BaseSchema:
    document = httpx.get(url, headers=headers).json()
    return schemathesis.openapi.from_dict(document)


@pytest.fixture(scope="module")
def inference_schema(server: DmsServer):
    schema = load_schema(f"{server.inference_url}/api-description")
    schema.config.update(base_url=server.inference_url)
    return schema


@pytest.fixture(scope="module")
def management_schema(server: DmsServer):
    schema = load_schema(f"{server.management_url}/api-description", {"Authorization": f"Bearer {server.key()}"})
    schema.config.update(base_url=server.management_url)
    # Rotating the key mid-run would only turn the rest of the run into 403s.
    return schema.exclude(path="/token")


def fuzz(schema: schemathesis.BaseSchema, server: DmsServer, headers: dict[str, str]) -> list[str]:
    """Run every operation with generated cases; return the failures."""
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @FUZZ_SETTINGS
        @given(case=operation.as_strategy())
        def run(case: schemathesis.Case) -> None:
            response = case.call(headers=headers, timeout=60)
            case.validate_response(response, checks=(not_a_server_error,))

        try:
            run()
        except Exception as exc:
            failures.append(f"{operation.label}: {exc}")
        assert server.proc is not None and server.proc.poll() is None, f"server died during {operation.label}"
    return failures


def test_inference_api_never_answers_5xx(inference_schema: schemathesis.BaseSchema, server: DmsServer):
    assert fuzz(inference_schema, server, {}) == []


def test_management_api_never_answers_5xx(management_schema: schemathesis.BaseSchema, server: DmsServer):
    assert fuzz(management_schema, server, {"Authorization": f"Bearer {server.key()}"}) == []
