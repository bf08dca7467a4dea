"""Measure JSON nesting depth on the raw bytes, before any parser recurses into them.

Only brackets, braces, quotes and backslashes matter, so the body is first reduced to those
bytes (in C, by ``bytes.translate``); numeric tensors shrink to a few bytes per row.
"""

from __future__ import annotations

_STRUCTURE = frozenset(b'[]{}"\\')
_DROP = bytes(b for b in range(256) if b not in _STRUCTURE)
_OPEN = frozenset(b"[{")
_CLOSE = frozenset(b"]}")
_QUOTE = ord('"')
_BACKSLASH = ord("\\")


def json_depth_exceeds(raw: bytes, limit: int) -> bool:
    depth = 0
    in_string = False
    escaped = False
    for byte in raw.translate(None, _DROP):
        if in_string:
            if escaped:
                escaped = False
            elif byte == _BACKSLASH:
                escaped = True
            elif byte == _QUOTE:
                in_string = False
        elif byte == _QUOTE:
            in_string = True
        elif byte in _OPEN:
            depth += 1
            if depth > limit:
                return True
        elif byte in _CLOSE:
            depth -= 1
    return False
