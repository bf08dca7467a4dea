"""Request ids for requests that arrive without an ``X-Request-ID``.

32 hex digits like a UUID4's, but made from a random per-process prefix and a counter: unique
without a system call per request (``uuid.uuid4`` reads the OS's randomness every time). They
identify requests in logs and headers; they are not secrets.
"""

from __future__ import annotations

import itertools
import os

_prefix = os.urandom(8).hex()
_counter = itertools.count(1)


def new_request_id() -> str:
    return f"{_prefix}{next(_counter):016x}"
