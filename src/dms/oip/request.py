"""One inference request in the protocol's terms, whichever transport it came by."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dms.errors import InputError


@dataclass(slots=True)
class RequestedOutput:
    name: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class InferRequest:
    inputs: dict[str, np.ndarray]
    id: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    input_parameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: list[RequestedOutput] = field(default_factory=list)

    def select(self, produced: dict[str, np.ndarray]) -> list[tuple[RequestedOutput, np.ndarray]]:
        """The outputs to return: the requested ones, in order, or all when none was named."""
        if not self.outputs:
            return [(RequestedOutput(name), value) for name, value in produced.items()]
        chosen = []
        for wanted in self.outputs:
            if wanted.name not in produced:
                raise InputError(f"unknown output {wanted.name!r}; the model produces {', '.join(produced)}")
            chosen.append((wanted, produced[wanted.name]))
        return chosen
