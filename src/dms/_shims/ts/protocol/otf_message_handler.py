"""``ts.protocol.otf_message_handler``: the one call of TorchServe's worker protocol that handlers make,
``send_intermediate_predict_response``, which streams a piece of each request's answer while the handler works.

DMS sends each piece as one chunk of the request's answer (``dms.worker.streaming``): a client of ``/predictions``
over HTTP/1.1 gets it at once, as a piece of a chunked answer; any other client gets the pieces joined, followed
by what the handler finally returns, as one answer.
"""

from __future__ import annotations

from typing import Any

from dms.context import Context


def send_intermediate_predict_response(
    ret: list[Any], req_id_map: dict[int, str], message: str, code: int, context: Context | None = None
) -> bool:
    """Send ``ret[i]`` as the next piece of the answer to the batch's request ``i`` (``req_id_map`` names the
    requests, as ``context.request_ids`` does; ``message`` is TorchServe's status text, unused here)."""
    if context is None or context.chunk_sink is None:
        raise RuntimeError("send_intermediate_predict_response needs the context of the batch being handled")
    if len(ret) > len(context.request_processor):
        raise ValueError(
            f"send_intermediate_predict_response got {len(ret)} results for a batch of "
            f"{len(context.request_processor)} requests"
        )
    for index, value in enumerate(ret):
        context.chunk_sink.intermediate(context.request_processor[index], value, code)
    return True
