"""API keys: generated at start-up into a key file only the owner can read, checked in constant time.

There is one key for the management API and one for the inference API; either can be rotated
while the server runs, and the key file is rewritten atomically each time.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Literal

from dms.errors import ForbiddenError, InputError, UnauthorizedError

KeyKind = Literal["management", "inference"]
KEY_KINDS: tuple[KeyKind, ...] = ("management", "inference")


def new_key() -> str:
    return secrets.token_urlsafe(32)


class KeyStore:
    def __init__(self, key_file: Path) -> None:
        self.key_file = key_file
        self._keys: dict[str, str] = {kind: new_key() for kind in KEY_KINDS}
        self._write()

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
        if kind not in KEY_KINDS:
            raise InputError(f"key type must be one of {', '.join(KEY_KINDS)}, got {kind!r}")
        self._keys[kind] = new_key()
        self._write()
        return self._keys[kind]

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

    def _write(self) -> None:
        self.key_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.key_file.with_name(f".{self.key_file.name}.{os.getpid()}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            json.dump({kind: {"key": key} for kind, key in self._keys.items()}, out, indent=2)
        os.chmod(temporary, 0o600)
        os.replace(temporary, self.key_file)


def read_key(key_file: Path, kind: KeyKind) -> str:
    """The current key of ``kind`` from a server's key file (for the CLI and clients)."""
    data = json.loads(key_file.read_text())
    return str(data[kind]["key"])
