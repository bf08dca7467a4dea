"""Tensors of the Open Inference Protocol: datatypes, the JSON form and the binary form.

Binary data is little-endian, row-major; a BYTES tensor's elements are each a 4-byte
little-endian length followed by that many bytes. Fixed-size types decode with
``numpy.frombuffer`` (no copy); BF16 arrives only in binary form and decodes to float32.
"""

from __future__ import annotations

import math
import struct
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from dms.errors import InputError, PayloadTooLargeError

_NUMPY: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
_FIXED_SIZE = {name: dtype for name, dtype in _NUMPY.items() if name != "BYTES"}
_DATATYPE_OF_KIND = {np.dtype(v).str if k != "BYTES" else "|O": k for k, v in _NUMPY.items()}
DATATYPES = (*_NUMPY, "BF16")
_LENGTH = struct.Struct("<I")
_LITTLE_ENDIAN_HOST = sys.byteorder == "little"


def numpy_dtype(datatype: str) -> np.dtype[Any]:
    """The numpy dtype that holds ``datatype`` (BF16 is widened to float32)."""
    if datatype == "BF16":
        return np.dtype("<f4")
    try:
        return _NUMPY[datatype]
    except KeyError:
        raise InputError(f"unsupported datatype {datatype!r}; expected one of {', '.join(DATATYPES)}") from None


def datatype_of(array: np.ndarray) -> str:
    """The protocol datatype of a numpy array (strings and bytes are BYTES)."""
    dtype = array.dtype
    known = _DATATYPE_OF_DTYPE.get(dtype)
    if known is not None:
        return known
    if dtype.kind in ("O", "S", "U"):
        return "BYTES"
    if dtype.name == "bfloat16":
        name: str | None = "BF16"
    else:
        name = _DATATYPE_OF_KIND.get(dtype.newbyteorder("<").str if dtype.itemsize > 1 else dtype.str)
    if name is None:
        raise InputError(f"arrays of dtype {dtype} have no protocol datatype")
    _DATATYPE_OF_DTYPE[dtype] = name  # a handful of numeric dtypes at most
    return name


_DATATYPE_OF_DTYPE: dict[np.dtype[Any], str] = {}
"""Numeric dtypes already looked up: the lookup above costs microseconds (``dtype.name`` is Python code)."""


def datatype_of_numpy_name(name: str) -> str:
    """Protocol datatype for a numpy dtype name such as ``float32`` (runtime signatures)."""
    if name == "object":
        return "BYTES"
    return datatype_of(np.empty(0, dtype=name))


DEFAULT_MAX_ELEMENTS = 50_000_000
"""``max_tensor_elements``'s default: the most elements one input tensor may have."""


def element_count(shape: Sequence[int], max_elements: int = DEFAULT_MAX_ELEMENTS, name: str = "") -> int:
    """The number of elements ``shape`` describes, checked before anything of that size is allocated.

    A negative dimension is an ``InputError``; a shape over ``max_elements`` a ``PayloadTooLargeError``,
    also when a zero elsewhere makes its product 0 (numpy cannot describe ``[0, 2**40, 2**40]`` either).
    The product stops growing past the cap, so no shape makes a huge integer.
    """
    what = f"input {name!r}: shape" if name else "shape"
    count = 1
    nonzero_product = 1
    for dimension in shape:
        if dimension < 0:
            raise InputError(f"{what} {list(shape)} has a negative dimension")
        count *= dimension
        if dimension:
            nonzero_product *= dimension
            if nonzero_product > max_elements:
                raise PayloadTooLargeError(
                    f"{what} {list(shape)} describes over max_tensor_elements ({max_elements}) elements"
                )
    return count


def from_json(
    name: str, datatype: str, shape: Sequence[int], data: Any, max_elements: int = DEFAULT_MAX_ELEMENTS
) -> np.ndarray:
    """Decode the JSON ``data`` of one tensor (nested or flat, row-major) and check its size."""
    dtype = numpy_dtype(datatype)
    if datatype == "BF16":
        raise InputError(f"input {name!r}: BF16 tensors must use the binary data extension")
    count = element_count(shape, max_elements, name)
    try:
        if datatype == "BYTES":
            values = list(_flatten(data))  # as many as the body holds: counted before anything is sized by shape
            if len(values) != count:
                raise InputError(f"input {name!r} has {len(values)} elements; shape {list(shape)} needs {count}")
            if not all(isinstance(v, str) for v in values):
                raise InputError(f"input {name!r}: BYTES elements in JSON must be strings")
            flat = np.empty(count, dtype=object)
            flat[:] = [v.encode("utf-8") for v in values]
            return flat.reshape(shape)
        array = _numeric(data, dtype)
    except FloatingPointError as exc:
        raise InputError(f"input {name!r}: a value is out of range for {datatype}") from exc
    except (ValueError, TypeError, OverflowError) as exc:
        raise InputError(f"input {name!r}: data is not {datatype}: {exc}") from exc
    if array.size != count:
        raise InputError(f"input {name!r} has {array.size} elements; shape {list(shape)} needs {count}")
    return array.reshape(shape)


@np.errstate(over="raise", invalid="raise")  # as a decorator it costs ~1.4 µs less than a with block
def _numeric(data: Any, dtype: np.dtype[Any]) -> np.ndarray:
    """``data`` as an array of ``dtype``; a value out of its range raises ``FloatingPointError``."""
    return np.asarray(data, dtype=dtype)


def _flatten(data: Any) -> Any:
    if isinstance(data, list):
        for item in data:
            yield from _flatten(item)
    else:
        yield data


def from_raw(
    name: str, datatype: str, shape: Sequence[int], raw: bytes | memoryview, max_elements: int = DEFAULT_MAX_ELEMENTS
) -> np.ndarray:
    """Decode the binary form of one tensor; fixed-size types share ``raw``'s memory.

    Nothing is allocated by the shape's size before the shape is checked against ``raw`` and
    ``max_elements``: a view shares the bytes that came, and BYTES elements are counted against them.
    """
    dtype = _FIXED_SIZE.get(datatype)
    if dtype is not None and len(raw) == math.prod(shape) * dtype.itemsize:  # the usual case, checked in one step
        try:
            return np.ndarray(shape, dtype, raw)  # one step where frombuffer + reshape take two; read-only, no copy
        except ValueError:
            pass  # negative dimensions (an even number of them), or too many with a zero: explained below
    count = element_count(shape, max_elements, name)
    if datatype == "BYTES":
        if count * _LENGTH.size > len(raw):  # each element takes its 4-byte length at least
            raise InputError(f"input {name!r} has {len(raw)} bytes: too few for {count} BYTES elements")
        return _bytes_elements(name, raw, count).reshape(shape)
    if datatype == "BF16":
        if len(raw) != count * 2:
            raise InputError(f"input {name!r} has {len(raw)} bytes; {count} BF16 elements need {count * 2}")
        widened = np.frombuffer(raw, dtype="<u2").astype("<u4") << 16
        return widened.view("<f4").reshape(shape)
    dtype = numpy_dtype(datatype)
    if len(raw) != count * dtype.itemsize:
        raise InputError(
            f"input {name!r} has {len(raw)} bytes; {count} {datatype} elements need {count * dtype.itemsize}"
        )
    return np.ndarray(shape, dtype, raw)


def _bytes_elements(name: str, raw: bytes | memoryview, count: int) -> np.ndarray:
    view = memoryview(raw)
    elements = np.empty(count, dtype=object)
    offset = 0
    for index in range(count):
        if offset + 4 > len(view):
            raise InputError(f"input {name!r}: BYTES data ends inside element {index} of {count}")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > len(view):
            raise InputError(f"input {name!r}: BYTES element {index} runs past the end of the data")
        elements[index] = bytes(view[offset : offset + length])
        offset += length
    if offset != len(view):
        raise InputError(f"input {name!r}: {len(view) - offset} bytes left after {count} BYTES elements")
    return elements


def to_raw(array: np.ndarray) -> bytes:
    """The binary form of an output tensor."""
    datatype = datatype_of(array)
    if datatype == "BYTES":
        parts = []
        for element in array.ravel():
            data = element if isinstance(element, bytes) else str(element).encode("utf-8")
            parts.append(_LENGTH.pack(len(data)))
            parts.append(data)
        return b"".join(parts)
    if datatype == "BF16" or (_LITTLE_ENDIAN_HOST and array.dtype.isnative):
        return array.tobytes()  # row-major whatever the array's layout
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def to_json_data(array: np.ndarray) -> list[Any]:
    """The flat, row-major JSON form of an output tensor (BYTES as UTF-8 strings)."""
    datatype = datatype_of(array)
    if datatype == "BYTES":
        return [
            e.decode("utf-8", "backslashreplace") if isinstance(e, bytes) else str(e) for e in array.ravel().tolist()
        ]
    if datatype == "BF16":
        return array.astype(np.float32).ravel().tolist()
    flat: list[Any] = array.ravel().tolist()
    return flat
