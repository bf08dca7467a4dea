"""Length-delimited protobuf fields written by hand, for messages put together from parts.

Protobuf's wire format lets a message be the concatenation of its fields, and a repeated field the
concatenation of its elements, so a message can be assembled from pieces serialized once and kept
(``dms.oip.grpc_codec``) or wrapped in another message without decoding it (``dms.grpc.servicer``).
Only the framing is written here: each piece itself comes from the protobuf library.
"""

from __future__ import annotations


def varint(value: int) -> bytes:
    """``value`` (not negative) as a base-128 varint."""
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field_head(field_number: int, length: int) -> bytes:
    """The key and length of a length-delimited field (wire type 2) of ``length`` bytes, which follow it."""
    key = field_number << 3 | 2
    if key < 0x80 and length < 0x80:  # fields 1 to 15 with under 128 bytes: two bytes
        return bytes((key, length))
    return varint(key) + varint(length)


def length_delimited(field_number: int, data: bytes) -> bytes:
    """A length-delimited field: its head and ``data``."""
    return field_head(field_number, len(data)) + data
