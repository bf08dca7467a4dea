"""API keys: generated at start-up into a key file only the owner can read, checked in constant time.

There is one key for the management API and one for the inference API; either can be rotated
while the server runs, and the key file is rewritten atomically each time.
"""

from __future__ import annotations

import hmac
import json
import secrets
from pathlib import Path
from typing import Literal

from dms.errors import ForbiddenError, InputError, UnauthorizedError
from dms.state_files import write_atomically

KeyKind = Literal["management", "inference"]
KEY_KINDS: tuple[KeyKind, ...] = ("management", "inference")


def new_key() -> str:
    return secrets.token_urlsafe(32)


class KeyStore:
    def __init__(self, key_file: Path) -> None:
        self.key_file = key_file
        self._keys: dict[str, str] = {kind: new_key() for kind in KEY_KINDS}
        self._write(self._keys)

    @classmethod
    def reading(cls, key_file: Path) -> KeyStore:
        """The keys another process of this server wrote (a second frontend: ``dms.frontends``)."""
        store = cls.__new__(cls)
        store.key_file = key_file
        store.reload()
        return store

    def reload(self) -> None:
        """Read the key file again (after the process that owns it rotated a key)."""
        data = json.loads(self.key_file.read_text())
        self._keys = {kind: data[kind]["key"] for kind in KEY_KINDS}

    def key(self, kind: KeyKind) -> str:
        return self._keys[kind]

    def rotate(self, kind: str) -> str:
        """A new key of ``kind``, in force once the key file holds it: if the file cannot be written
        (``InsufficientStorageError``), the old key stays in force, and in the file."""
        if kind not in KEY_KINDS:
            raise InputError(f"key type must be one of {', '.join(KEY_KINDS)}, got {kind!r}")
        keys = {**self._keys, kind: new_key()}
        self._write(keys)
        self._keys = keys
        return keys[kind]

    def check(self, kind: KeyKind, authorization: str | None) -> None:
        """Raise 401 without a bearer key, 403 with a wrong one."""
        if not authorization:
            raise UnauthorizedError(
                f"the {kind} API needs 'Authorization: Bearer <key>'; the key is in {self.key_file} "
                f"(or run 'dms token --type {kind}')"
            )
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer" or not presented:
            raise UnauthorizedError("the Authorization header must be 'Bearer <key>'")
        if not hmac.compare_digest(presented.strip().encode(), self._keys[kind].encode()):
            raise ForbiddenError(f"the {kind} key is not valid")

    def _write(self, keys: dict[str, str]) -> None:
        document = json.dumps({kind: {"key": key} for kind, key in keys.items()}, indent=2)
        write_atomically(self.key_file, document.encode(), mode=0o600)


def read_key(key_file: Path, kind: KeyKind) -> str:
    """The current key of ``kind`` from a server's key file (for the CLI and clients)."""
    data = json.loads(key_file.read_text())
    return str(data[kind]["key"])
