"""The ``context`` object handlers receive, with the attributes MMS 1.x and TorchServe offer."""

from __future__ import annotations

from typing import Any, Protocol


class ChunkSink(Protocol):
    """Where a handler's chunks of a request's answer go while it works (``dms.worker.streaming.BatchStreams``)."""

    def intermediate(self, proc: RequestProcessor, value: Any, status: int) -> None: ...


class RequestProcessor:
    """Per-request headers in, per-request status / content type / headers out."""

    def __init__(self, request_id: str, headers: dict[str, str], batch_index: int = -1) -> None:
        self.request_id = request_id
        self.batch_index = batch_index
        """The request's place in the batch the worker was sent (its chunks are sent under it)."""
        self._headers = headers
        self.status: int | None = None
        self.reason: str = ""
        self.content_type: str | None = None
        self.response_headers: dict[str, str] = {}

    def get_request_header(self, key: str) -> str | None:
        return self._headers.get(key.lower())

    def get_request_headers(self) -> dict[str, str]:
        return dict(self._headers)

    def report_status(self, code: int, reason: str = "") -> None:
        self.status = code
        self.reason = reason

    def add_response_property(self, key: str, value: str) -> None:
        self.response_headers[key] = value


class Context:
    """What a handler knows about its model, its worker and the requests of the current batch."""

    def __init__(
        self,
        model_name: str,
        model_dir: str,
        manifest: dict[str, Any],
        batch_size: int,
        gpu_id: int | None,
        server_name: str,
        server_version: str,
        model_yaml_config: dict[str, Any],
    ) -> None:
        self.model_name = model_name
        self.manifest = manifest
        self.model_yaml_config = model_yaml_config
        self.system_properties: dict[str, Any] = {
            "model_dir": model_dir,
            "gpu_id": gpu_id,
            "batch_size": batch_size,
            "server_name": server_name,
            "server_version": server_version,
        }
        self.request_processor: list[RequestProcessor] = []
        self.metrics: Any = None
        self.chunk_sink: ChunkSink | None = None
        """Takes the chunks a handler sends while it works (TorchServe's ``send_intermediate_predict_response``)."""

    def start_batch(self, processors: list[RequestProcessor]) -> None:
        self.request_processor = processors

    @property
    def request_ids(self) -> dict[int, str]:
        return {idx: proc.request_id for idx, proc in enumerate(self.request_processor)}

    def get_request_id(self, idx: int = 0) -> str | None:
        return self._proc(idx).request_id if idx < len(self.request_processor) else None

    def get_request_header(self, idx: int, key: str) -> str | None:
        return self._proc(idx).get_request_header(key)

    def get_all_request_header(self, idx: int) -> dict[str, str]:
        return self._proc(idx).get_request_headers()

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self._proc(idx).report_status(code, phrase)

    def set_response_content_type(self, idx: int, value: str) -> None:
        self._proc(idx).content_type = value

    def get_response_content_type(self, idx: int) -> str | None:
        return self._proc(idx).content_type

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        self._proc(idx).add_response_property(key, value)

    def get_response_status(self, idx: int) -> int | None:
        return self._proc(idx).status

    def _proc(self, idx: int) -> RequestProcessor:
        if not 0 <= idx < len(self.request_processor):
            raise IndexError(f"request index {idx} is outside this batch of {len(self.request_processor)}")
        return self.request_processor[idx]
