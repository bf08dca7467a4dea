"""Request bodies sent with ``Content-Encoding: gzip|deflate``; compressed responses for clients that accept them."""

from __future__ import annotations

import gzip
import zlib

from dms.errors import InputError, PayloadTooLargeError, UnsupportedMediaTypeError

_MIN_COMPRESSED_BYTES = 1024


def decode_content(body: bytes, encoding: str | None, max_bytes: int) -> bytes:
    """The body decompressed (never past ``max_bytes``: a compression bomb is a 413)."""
    if not encoding or encoding.strip().lower() == "identity":
        return body
    kind = encoding.strip().lower()
    if kind == "gzip":
        decompressor = zlib.decompressobj(wbits=31)
    elif kind == "deflate":
        decompressor = zlib.decompressobj(wbits=15 if body[:1] == b"\x78" else -15)
    else:
        raise UnsupportedMediaTypeError(f"Content-Encoding {encoding!r} is not supported (use gzip or deflate)")
    try:
        data = decompressor.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise InputError(f"the {kind} body cannot be decompressed: {exc}") from exc
    if len(data) > max_bytes or decompressor.unconsumed_tail:
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
