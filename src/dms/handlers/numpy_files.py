"""``.npy`` and ``.npz`` request bodies, sized from their headers before anything is allocated.

A ``.npy`` header states its array's dtype and shape; each ``.npz`` member is a ``.npy`` file in a zip,
whose directory also states the member's inflated size. Both are read first (numpy's documented
``numpy.lib.format`` readers, and ``zipfile``'s directory), so a shape over ``max_tensor_elements`` or
a member whose data would inflate past what its shape needs is refused before numpy allocates the
array or inflates a byte of its data. Object arrays are never loaded (no unpickling).
"""

from __future__ import annotations

import io
import zipfile
from typing import IO

import numpy as np
from numpy.lib import format as npy_format

from dms.errors import InputError, PayloadTooLargeError
from dms.oip.tensors import element_count

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
MAX_NPZ_MEMBERS = 64
"""More arrays than any model takes as inputs; an ``.npz`` with more is refused before any is read."""


def load_numpy_body(raw: bytes, max_elements: int) -> np.ndarray | dict[str, np.ndarray]:
    """A ``.npy`` body as its array, a ``.npz`` body as its arrays by name; sizes checked first."""
    if raw[:6] == NPY_MAGIC:
        _check_npy(io.BytesIO(raw), len(raw), max_elements, "the .npy body")
        return _loaded(raw)
    if raw[:4] == ZIP_MAGIC:
        _check_npz(raw, max_elements)
        return _loaded(raw)
    raise InputError("a binary request body must be a .npy or .npz file (or send JSON)")


def load_npz_body(raw: bytes, max_elements: int) -> dict[str, np.ndarray]:
    """A ``.npz`` body's arrays by name, each member's size checked from its headers first."""
    loaded = load_numpy_body(raw, max_elements) if raw[:4] == ZIP_MAGIC else None
    if not isinstance(loaded, dict):
        raise InputError("the .npz body is not a zip of .npy files")
    return loaded


def _loaded(raw: bytes) -> np.ndarray | dict[str, np.ndarray]:
    try:
        loaded = np.load(io.BytesIO(raw), allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                return {name: loaded[name] for name in loaded.files}
        return loaded  # type: ignore[no-any-return]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"could not read the .npy/.npz body: {exc}") from exc


def _check_npy(stream: io.IOBase, size: int, max_elements: int, what: str) -> None:
    """Read the header of the ``.npy`` file ``stream`` (``size`` bytes in all) and refuse it if it claims
    more elements than ``max_elements`` or more data than the file holds."""
    try:
        version = npy_format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = npy_format.read_array_header_1_0(stream)
        elif version in ((2, 0), (3, 0)):
            shape, _, dtype = npy_format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unknown .npy format version {version}")
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as exc:
        raise InputError(f"{what} has no valid .npy header: {exc}") from exc
    if dtype.hasobject:
        raise InputError(f"could not read the .npy/.npz body: {what} holds Python objects, which are never unpickled")
    try:
        count = element_count(shape, max_elements)
    except PayloadTooLargeError as exc:
        raise PayloadTooLargeError(f"{what}: {exc.message}") from None
    needed = count * dtype.itemsize
    left = size - stream.tell()
    if needed != left:
        raise InputError(f"{what} has {left} bytes of data; its header's shape {list(shape)} needs {needed}")


def _check_npz(raw: bytes, max_elements: int) -> None:
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
    except (zipfile.BadZipFile, ValueError) as exc:
        raise InputError(f"the .npz body is not a valid zip: {exc}") from exc
    with archive:
        members = archive.infolist()
        if len(members) > MAX_NPZ_MEMBERS:
            raise InputError(f"the .npz body has {len(members)} arrays; at most {MAX_NPZ_MEMBERS} are read")
        for info in members:
            what = f"array {info.filename!r} of the .npz body"
            try:
                # zipfile stops inflating at the directory's stated size, so the check below bounds it all.
                with archive.open(info) as member:
                    _check_npy(_Prefix(member), info.file_size, max_elements, what)
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError) as exc:
                raise InputError(f"{what} cannot be read: {exc}") from exc


class _Prefix(io.RawIOBase):
    """The start of a zip member, for the header readers: counts what they read (``tell``)."""

    def __init__(self, member: IO[bytes]) -> None:
        self._member = member
        self._read = 0

    def read(self, size: int | None = -1) -> bytes:
        data = self._member.read(-1 if size is None else size)
        self._read += len(data)
        return data

    def tell(self) -> int:
        return self._read

    def readable(self) -> bool:
        return True
