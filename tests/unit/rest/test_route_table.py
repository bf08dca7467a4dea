"""The route table claims exactly the forwarding routes' paths and methods, and leaves the rest to Starlette."""

from __future__ import annotations

import pytest

from dms.rest.inference import InferenceForwarders, inference_routes

PREDICTIONS, INFER, V1, EXPLAIN, V1_EXPLAIN, V2_EXPLAIN = (object() for _ in range(6))
TABLE = inference_routes(InferenceForwarders(PREDICTIONS, INFER, V1, EXPLAIN, V1_EXPLAIN, V2_EXPLAIN))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/predictions/m", (PREDICTIONS, "m", None)),
        ("PUT", "/predictions/m/2.0", (PREDICTIONS, "m", "2.0")),
        ("POST", "/v2/models/m/infer", (INFER, "m", None)),
        ("POST", "/v2/models/m/versions/3/infer", (INFER, "m", "3")),
        ("POST", "/v1/models/m:predict", (V1, "m", None)),
        ("POST", "/v1/models/a:b:predict", (V1, "a:b", None)),
        ("POST", "/explanations/m", (EXPLAIN, "m", None)),
        ("PUT", "/explanations/m/2.0", (EXPLAIN, "m", "2.0")),
        ("POST", "/v1/models/m:explain", (V1_EXPLAIN, "m", None)),
        ("POST", "/v2/models/m/explain", (V2_EXPLAIN, "m", None)),
        ("POST", "/v2/models/m/versions/3/explain", (V2_EXPLAIN, "m", "3")),
        ("GET", "/explanations/m", None),
        # left to the Starlette app: other methods, empty or extra segments, other routes
        ("GET", "/predictions/m", None),
        ("POST", "/predictions/", None),
        ("POST", "/predictions/m/", None),
        ("POST", "/predictions/m/1/x", None),
        ("PUT", "/v2/models/m/infer", None),
        ("POST", "/v2/models//infer", None),
        ("POST", "/v2/models/infer", None),
        ("POST", "/v2/models/m/versions//infer", None),
        ("POST", "/v2/models/m/other/3/infer", None),
        ("POST", "/v1/models/:predict", None),
        ("POST", "/v1/models/a/b:predict", None),
        ("POST", "/m/predict", (PREDICTIONS, "m", None)),  # the original DMS interface
        ("GET", "/m/predict", None),
        ("POST", "/predictions/predict", (PREDICTIONS, "predict", None)),  # the earlier route wins
        ("GET", "/ping", None),
    ],
)
def test_matches(method: str, path: str, expected: object):
    assert TABLE.match(method, path) == expected
