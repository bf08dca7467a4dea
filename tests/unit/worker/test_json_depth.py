from __future__ import annotations

import json

import pytest

from dms.worker.json_depth import json_depth_exceeds


@pytest.mark.parametrize(
    ("document", "depth"),
    [
        ([1, 2, 3], 1),
        ([[1.5] * 16] * 4, 2),
        ({"inputs": {"x": [[[0]]]}}, 5),
        ({"text": "[[[[[[not nesting]]]]]]", "q": 'a "quoted \\" [ bracket'}, 1),
        ("plain string", 0),
    ],
)
def test_depth_is_measured_outside_strings(document: object, depth: int):
    raw = json.dumps(document).encode()
    assert not json_depth_exceeds(raw, depth)
    assert json_depth_exceeds(raw, depth - 1) is (depth > 0)


def test_a_hostile_nesting_is_caught_before_parsing():
    raw = b"[" * 100_000 + b"]" * 100_000
    assert json_depth_exceeds(raw, 64)
