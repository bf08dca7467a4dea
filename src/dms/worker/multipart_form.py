"""Split a ``multipart/form-data`` body into (field name, content type, bytes) with python-multipart."""

from __future__ import annotations

from python_multipart.multipart import MultipartParser, parse_options_header

from dms.errors import InputError, PayloadTooLargeError


class _PartCollector:
    def __init__(self, max_parts: int) -> None:
        self.max_parts = max_parts
        self.parts: list[tuple[str, str, bytes]] = []
        self._headers: dict[bytes, bytes] = {}
        self._header_name = b""
        self._header_value = b""
        self._chunks: list[bytes] = []

    def on_part_begin(self) -> None:
        self._headers = {}
        self._chunks = []
        if len(self.parts) >= self.max_parts:
            raise PayloadTooLargeError(f"multipart body has more than max_multipart_parts ({self.max_parts}) parts")

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name = b""
        self._header_value = b""

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._chunks.append(data[start:end])

    def on_part_end(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = params.get(b"name")
        if name is None:
            raise InputError("multipart part has no name in its Content-Disposition header")
        content_type = self._headers.get(b"content-type", b"").decode("latin-1")
        self.parts.append((name.decode("utf-8", "replace"), content_type, b"".join(self._chunks)))


def parse_multipart(body: bytes, boundary: bytes, max_parts: int) -> list[tuple[str, str, bytes]]:
    collector = _PartCollector(max_parts)
    callbacks = {
        "on_part_begin": collector.on_part_begin,
        "on_header_field": collector.on_header_field,
        "on_header_value": collector.on_header_value,
        "on_header_end": collector.on_header_end,
        "on_part_data": collector.on_part_data,
        "on_part_end": collector.on_part_end,
    }
    parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
    try:
        parser.write(body)
        parser.finalize()
    except (InputError, PayloadTooLargeError):
        raise
    except Exception as exc:
        raise InputError(f"malformed multipart/form-data body: {exc}") from exc
    if not collector.parts:
        raise InputError("multipart/form-data body has no parts")
    return collector.parts
