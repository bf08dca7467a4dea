"""Request bodies sent with ``Content-Encoding: gzip|deflate``; compressed responses for clients that accept them."""

from __future__ import annotations

import gzip
import zlib

from dms.errors import InputError, PayloadTooLargeError, UnsupportedMediaTypeError

_MIN_COMPRESSED_BYTES = 1024


def inflate(data: bytes, wbits: int, max_bytes: int) -> bytes | None:
    """``data`` decompressed by zlib with ``wbits`` (31: gzip, 15: zlib, -15: raw deflate), never past
    ``max_bytes``: None when the result would be over it (a compression bomb). Raises ``zlib.error`` on
    corrupt data. The one bounded decompression of request bodies (here) and gRPC messages (``dms.grpc.call_core``)."""
    decompressor = zlib.decompressobj(wbits=wbits)
    out = decompressor.decompress(data, max_bytes + 1)
    if len(out) > max_bytes or decompressor.unconsumed_tail:
        return None
    return out


def decode_content(body: bytes, encoding: str | None, max_bytes: int) -> bytes:
    """The body decompressed (never past ``max_bytes``: a compression bomb is a 413)."""
    if not encoding or encoding.strip().lower() == "identity":
        return body
    kind = encoding.strip().lower()
    if kind == "gzip":
        wbits = 31
    elif kind == "deflate":
        wbits = 15 if body[:1] == b"\x78" else -15
    else:
        raise UnsupportedMediaTypeError(f"Content-Encoding {encoding!r} is not supported (use gzip or deflate)")
    try:
        data = inflate(body, wbits, max_bytes)
    except zlib.error as exc:
        raise InputError(f"the {kind} body cannot be decompressed: {exc}") from exc
    if data is None:
        raise PayloadTooLargeError(f"the decompressed body is over max_request_size_bytes ({max_bytes})")
    return data


def encode_content(body: bytes, accept_encoding: str | None) -> tuple[bytes, str | None]:
    """(body, Content-Encoding) compressed with what the client accepts, when it is worth it."""
    if not accept_encoding or len(body) < _MIN_COMPRESSED_BYTES:
        return body, None
    accepted = {part.split(";")[0].strip().lower() for part in accept_encoding.split(",")}
    if "gzip" in accepted:
        return gzip.compress(body, compresslevel=5), "gzip"
    if "deflate" in accepted:
        return zlib.compress(body, 5), "deflate"
    return body, None
