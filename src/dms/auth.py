"""API keys: generated at start-up into a key file only the owner can read, checked in constant time.

There is one key for the management API and one for the inference API; either can be rotated
while the server runs, and the key file is rewritten atomically each time.
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from dms.errors import ForbiddenError, InputError, UnauthorizedError
from dms.state_files import write_atomically

if TYPE_CHECKING:
    from dms.settings import ServerSettings

KeyKind = Literal["management", "inference"]
KEY_KINDS: tuple[KeyKind, ...] = ("management", "inference")


def new_key() -> str:
    return secrets.token_urlsafe(32)


class KeyStore:
    def __init__(self, key_file: Path, supplied: Mapping[KeyKind, str] | None = None) -> None:
        self.key_file = key_file
        self.supplied: dict[KeyKind, str] = dict(supplied or {})
        """Keys the operator gave (a mounted Secret, an environment variable): used as given, never written."""
        self._keys: dict[str, str] = {kind: self.supplied.get(kind) or new_key() for kind in KEY_KINDS}
        self._write(self._keys)

    @classmethod
    def reading(cls, key_file: Path, supplied: Mapping[KeyKind, str] | None = None) -> KeyStore:
        """The keys another process of this server wrote (a second frontend: ``dms.frontends``)."""
        store = cls.__new__(cls)
        store.key_file = key_file
        store.supplied = dict(supplied or {})
        store.reload()
        return store

    def reload(self) -> None:
        """Read the key file again (after the process that owns it rotated a key)."""
        data = json.loads(self.key_file.read_text()) if len(self.supplied) < len(KEY_KINDS) else {}
        self._keys = {kind: self.supplied.get(kind) or data[kind]["key"] for kind in KEY_KINDS}

    def key(self, kind: KeyKind) -> str:
        return self._keys[kind]

    def rotate(self, kind: str) -> str:
        """A new key of ``kind``, in force once the key file holds it: if the file cannot be written
        (``InsufficientStorageError``), the old key stays in force, and in the file."""
        if kind not in KEY_KINDS:
            raise InputError(f"key type must be one of {', '.join(KEY_KINDS)}, got {kind!r}")
        if kind in self.supplied:
            raise InputError(f"the {kind} key was given to the server ({_SOURCES[kind]}): change it there and restart")
        keys = {**self._keys, kind: new_key()}
        self._write(keys)
        self._keys = keys
        return keys[kind]

    def check(self, kind: KeyKind, authorization: str | None) -> None:
        """Raise 401 without a bearer key, 403 with a wrong one."""
        if not authorization:
            where = (
                f"the key is the one given to the server ({_SOURCES[kind]})"
                if kind in self.supplied
                else f"the key is in {self.key_file} (or run 'dms token --type {kind}')"
            )
            raise UnauthorizedError(f"the {kind} API needs 'Authorization: Bearer <key>'; {where}")
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer" or not presented:
            raise UnauthorizedError("the Authorization header must be 'Bearer <key>'")
        if not hmac.compare_digest(presented.strip().encode(), self._keys[kind].encode()):
            raise ForbiddenError(f"the {kind} key is not valid")

    def _write(self, keys: dict[str, str]) -> None:
        generated = {kind: {"key": key} for kind, key in keys.items() if kind not in self.supplied}
        if not generated:  # nothing to tell: no key file, and none left from an earlier run to mislead
            self.key_file.unlink(missing_ok=True)
            return
        write_atomically(self.key_file, json.dumps(generated, indent=2).encode(), mode=0o600)


_SOURCES = {
    "management": "DMS_MANAGEMENT_KEY or management_key_file",
    "inference": "DMS_INFERENCE_KEY or inference_key_file",
}
MIN_SUPPLIED_KEY_LENGTH = 16


def supplied_keys(settings: ServerSettings) -> dict[KeyKind, str]:
    """The keys the operator gave in the settings (a value, or a file such as a mounted Kubernetes Secret);
    raise ``ValueError`` naming the setting of one that is unreadable or shorter than 16 characters."""
    keys: dict[KeyKind, str] = {}
    for kind in KEY_KINDS:
        value = getattr(settings, f"{kind}_key")
        path = getattr(settings, f"{kind}_key_file")
        if path is not None:
            try:
                keys[kind] = path.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"{kind}_key_file {path} cannot be read: {exc}") from None
        elif value is not None:
            keys[kind] = value.get_secret_value().strip()
        if kind in keys and len(keys[kind]) < MIN_SUPPLIED_KEY_LENGTH:
            short = f"is shorter than {MIN_SUPPLIED_KEY_LENGTH} characters"
            raise ValueError(f"the {kind} key given ({_SOURCES[kind]}) {short}")
    return keys


def read_key(key_file: Path, kind: KeyKind) -> str:
    """The current key of ``kind`` from a server's key file (for the CLI and clients)."""
    data = json.loads(key_file.read_text())
    return str(data[kind]["key"])
