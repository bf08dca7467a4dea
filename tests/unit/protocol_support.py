"""What the connection-protocol tests share: a transport that keeps what is written and a data plane the
test answers for (the ``loop`` fixture they run in is in ``conftest.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from dms.engine.chunk_streams import ChunkReader
from dms.errors import ModelNotFoundError
from dms.messages import RequestItem, ResponseItem
from dms.settings import ServerSettings


class FakeTransport(asyncio.Transport):
    """The transport methods uvicorn's protocols call; each write is kept, and nothing may follow a close."""

    def __init__(self, port: int = 8080) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.reading = True
        """False while the protocol has paused reading (a real transport would take no more data)."""
        self._addresses = {"sockname": ("127.0.0.1", port), "peername": ("127.0.0.1", 50000)}

    def write(self, data: Any) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def take(self) -> bytes:
        """Everything written since the last ``take``."""
        data, self.writes = b"".join(self.writes), []
        return data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = self.aborted = True

    aborted = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._addresses.get(name, default)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


class FakeDataPlane:
    """Records what reaches the model and lets the test answer it; the model ``missing`` is not registered."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.submitted: list[tuple[str, str | None, RequestItem, asyncio.Future[ResponseItem]]] = []
        self.readers: list[ChunkReader | None] = []
        """Each submitted request's reader of streamed chunks (None: its transport does not stream)."""

    def submit(
        self, name: str, version: str | None, item: RequestItem, reader: ChunkReader | None = None
    ) -> asyncio.Future[ResponseItem]:
        if name == "missing":
            raise ModelNotFoundError(f"model {name} is not registered, 100% sure")
        future: asyncio.Future[ResponseItem] = asyncio.get_running_loop().create_future()
        self.submitted.append((name, version, item, future))
        self.readers.append(reader)
        return future

    def version_of(self, name: str, version: str | None) -> str:
        return version or "1.0"


def run(loop: asyncio.AbstractEventLoop, test: Callable[[], Awaitable[None]]) -> None:
    loop.run_until_complete(test())


class FakeStreamControl:
    """The worker's side of one streamed request, as ``dms.engine.chunk_streams.StreamControl`` offers it: the
    credits given and whether it was stopped."""

    def __init__(self) -> None:
        self.credits = 0
        self.stopped = False

    def credit(self, chunks: int = 1) -> None:
        self.credits += chunks

    def stop(self) -> None:
        self.stopped = True
