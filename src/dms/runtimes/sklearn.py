"""scikit-learn estimators: ``.skops`` files (safe), pickle/joblib files only for archives marked trusted.

Model config ``runtime:`` options: ``method`` (``predict`` by default, or ``predict_proba``,
``decision_function``, ``transform``), ``trusted: true`` to allow joblib/pickle files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dms.errors import ArchiveError
from dms.tensor_spec import TensorSpec

_SAFE_PREFIXES = ("sklearn.", "numpy.", "scipy.", "builtins.")


class SklearnRuntime:
    platform = "sklearn"

    def __init__(self, path: Path, options: dict[str, Any]) -> None:
        self.model = _load(path, bool(options.get("trusted", False)))
        self.method = str(options.get("method", "predict"))
        if not callable(getattr(self.model, self.method, None)):
            raise ArchiveError(f"the estimator {type(self.model).__name__} has no method {self.method!r}")
        features = getattr(self.model, "n_features_in_", None)
        self.inputs = [TensorSpec("input0", "float64", (-1, int(features)) if features else None)]
        classes = getattr(self.model, "classes_", None)
        if self.method in ("predict_proba", "decision_function") and classes is not None:
            out_shape: tuple[int, ...] = (-1, len(classes))
        else:
            out_shape = (-1,)
        self.outputs = [TensorSpec("output0", "float64", out_shape)]

    def run(self, feeds: dict[str, np.ndarray], output_names: list[str] | None = None) -> dict[str, np.ndarray]:
        return {"output0": np.asarray(getattr(self.model, self.method)(feeds["input0"]))}


def _load(path: Path, trusted: bool) -> Any:
    suffix = path.suffix.lower()
    if suffix == ".skops":
        import skops.io as sio

        unknown = sio.get_untrusted_types(file=str(path))
        refused = [name for name in unknown if not name.startswith(_SAFE_PREFIXES)]
        if refused and not trusted:
            raise ArchiveError(
                f"{path.name} contains types outside scikit-learn, numpy and scipy ({', '.join(refused)}); "
                "set runtime: {trusted: true} in the model config only if you trust this archive"
            )
        return sio.load(str(path), trusted=unknown)
    if not trusted:
        raise ArchiveError(
            f"{path.name} is a pickle-based file, and unpickling can run arbitrary code: save the model with "
            "skops, or set runtime: {trusted: true} in the model config for an archive you trust"
        )
    import joblib

    return joblib.load(str(path))
