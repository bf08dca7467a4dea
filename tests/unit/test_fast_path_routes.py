"""The fast path claims exactly the forwarding routes' paths and methods, and leaves the rest to Starlette."""

from __future__ import annotations

import pytest

from dms.rest.fastpath import InferenceFastPath
from dms.rest.inference import InferenceForwarders

PREDICTIONS, INFER, V1 = object(), object(), object()
FAST = InferenceFastPath(app=None, routes=InferenceForwarders(PREDICTIONS, INFER, V1), keys=None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/predictions/m", (PREDICTIONS, "m", None)),
        ("PUT", "/predictions/m/2.0", (PREDICTIONS, "m", "2.0")),
        ("POST", "/v2/models/m/infer", (INFER, "m", None)),
        ("POST", "/v2/models/m/versions/3/infer", (INFER, "m", "3")),
        ("POST", "/v1/models/m:predict", (V1, "m", None)),
        ("POST", "/v1/models/a:b:predict", (V1, "a:b", None)),
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
        ("POST", "/m/predict", None),
        ("GET", "/ping", None),
    ],
)
def test_matches(method: str, path: str, expected: object):
    assert FAST.match(method, path) == expected
