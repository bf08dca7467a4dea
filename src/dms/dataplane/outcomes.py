"""How a request handed to the data plane ended, read off the future ``DataPlane.submit`` returned.

The transports that answer from a callback on that future (``dms.rest.calls``,
``dms.grpc.answering``) and the ones that await it (``Forwarder.forward``,
``InferenceServicer.model_infer``) all turn it into an ``Outcome`` before building their answer.
"""

from __future__ import annotations

import asyncio
from typing import TypeAlias

from dms.errors import DMSError, InternalError
from dms.messages import ResponseItem

Outcome: TypeAlias = ResponseItem | DMSError | None
"""How a request ended: the model's answer, an error, or None when the client went away first."""


def outcome_of(future: asyncio.Future[ResponseItem], *, gone: bool) -> Outcome:
    """The outcome of a finished future; ``gone``: the client left (so a cancellation is its doing).

    A cancellation nobody asked for is an ``InternalError``. An exception that is not a ``DMSError`` is a
    bug on the way, and is raised.
    """
    if future.cancelled():
        return None if gone else InternalError("the request was cancelled")
    error = future.exception()
    if error is None:
        return future.result()
    if isinstance(error, DMSError):
        return error
    raise error
