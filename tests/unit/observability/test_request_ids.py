from __future__ import annotations

import re
import subprocess
import sys

from dms.observability.request_ids import new_request_id


def test_request_ids_look_like_uuid4_hex_and_never_repeat():
    ids = [new_request_id() for _ in range(10_000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_each_process_has_its_own_prefix():
    code = "from dms.observability.request_ids import new_request_id; print(new_request_id())"
    first, second = (subprocess.check_output([sys.executable, "-c", code], text=True).strip() for _ in range(2))
    assert first[:16] != second[:16]
