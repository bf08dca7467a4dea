"""Class scores → probabilities → the best classes, for the classifying handlers."""

from __future__ import annotations

import numpy as np


def softmax(scores: np.ndarray, axis: int) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=axis, keepdims=True))
    normalised: np.ndarray = shifted / shifted.sum(axis=axis, keepdims=True)
    return normalised


def ranked(scores: np.ndarray, k: int | None, apply_softmax: bool) -> list[list[tuple[int, float]]]:
    """Per row of ``scores`` (anything with the batch first), the best ``k`` (class, probability), best first.

    ``k`` of None keeps every class.
    """
    rows = scores.reshape(scores.shape[0], -1).astype(np.float64)
    if apply_softmax:
        rows = softmax(rows, axis=1)
    k = rows.shape[1] if k is None else min(k, rows.shape[1])
    return [[(int(i), float(row[i])) for i in np.argsort(-row, kind="stable")[:k]] for row in rows]
