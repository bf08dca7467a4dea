"""The tiny model every server runs in the benchmark: one JSON row of 16 numbers → 4 numbers (x @ W).

Plain ``handle(data, context)`` with numpy only, so DMS, TorchServe and MMS run the same code.
Weights are small integers and inputs multiples of 0.5, so every answer is exact in float32 and
byte-identical whatever the batch: the load generator can check every response.
"""

import json

import numpy as np

WEIGHTS = np.random.default_rng(0).integers(-3, 4, size=(16, 4)).astype(np.float32)
ROW = [0.5 * k for k in range(16)]


def answer(rows):
    return (np.asarray(rows, dtype=np.float32).reshape(len(rows), 16) @ WEIGHTS).tolist()


def handle(data, context):
    if data is None:
        return None
    rows = []
    for row in data:
        body = row.get("body") if row.get("body") is not None else row.get("data")
        if isinstance(body, bytes | bytearray):
            body = json.loads(body)
        rows.append(body)
    return [json.dumps([values]) for values in answer(rows)]
