"""Where the gRPC model-repository calls (``RepositoryModelLoad`` / ``Unload``) make their change.

gRPC shares its port across frontends, so such a call can reach any of them, but a change must be made
by frontend 0, which holds the registry the others follow. On frontend 0 the change is made here and the
others follow before the call returns; on another frontend the call is passed to frontend 0's management
API (``/v2/repository/models/{name}/load``, with the management key when one is required), which does the
same, this frontend included.
"""

from __future__ import annotations

import httpx

from dms.auth import KeyStore
from dms.dataplane import DataPlane
from dms.dataplane.queries import repository_load, repository_unload
from dms.errors import DMSError, InputError, InternalError, ModelNotFoundError, ModelUnavailableError
from dms.frontends.group import FrontendGroup
from dms.settings import ServerSettings, parse_address

_ERRORS: dict[int, type[DMSError]] = {400: InputError, 404: ModelNotFoundError, 503: ModelUnavailableError}


class SyncedRepository:
    """Frontend 0: the change here, then on every other frontend."""

    def __init__(self, dataplane: DataPlane, frontends: FrontendGroup) -> None:
        self.dataplane = dataplane
        self.frontends = frontends

    async def load(self, name: str) -> None:
        await repository_load(self.dataplane, name)
        await self.frontends.sync()

    async def unload(self, name: str) -> None:
        await repository_unload(self.dataplane, name)
        await self.frontends.sync()


class FrontendZeroRepository:
    """A frontend after the first: the change through frontend 0's management API."""

    def __init__(self, settings: ServerSettings, keys: KeyStore | None) -> None:
        self.settings = settings
        self.keys = keys

    async def load(self, name: str) -> None:
        await self._post(name, "load")

    async def unload(self, name: str) -> None:
        await self._post(name, "unload")

    async def _post(self, name: str, action: str) -> None:
        headers = {}
        if self.keys is not None and self.settings.token_auth:
            self.keys.reload()
            headers["Authorization"] = f"Bearer {self.keys.key('management')}"
        url = f"{_management_url(self.settings)}/v2/repository/models/{name}/{action}"
        try:
            async with httpx.AsyncClient(timeout=None) as client:
                answer = await client.post(url, headers=headers)
        except httpx.TransportError as exc:
            raise ModelUnavailableError(f"frontend 0 did not answer the {action} of {name}: {exc!r}") from exc
        if answer.status_code != 200:
            try:
                message = str(answer.json().get("error", answer.text))
            except ValueError:
                message = answer.text
            raise _ERRORS.get(answer.status_code, InternalError)(message)


def _management_url(settings: ServerSettings) -> str:
    """Frontend 0's management API as this machine reaches it (a wildcard address by its loopback)."""
    host, port = parse_address(settings.management_address)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
