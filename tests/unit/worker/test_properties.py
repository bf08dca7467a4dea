"""Properties of the decoders that face hostile input: they refuse cleanly or decode faithfully."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import warnings
import zipfile
from pathlib import Path

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dms.archive.reader import open_archive
from dms.errors import ArchiveError, InputError, PayloadTooLargeError
from dms.messages import RequestItem, RequestLimits
from dms.worker.inputs import build_request_data

MANIFEST = json.dumps({"model": {"modelName": "m", "modelVersion": "1.0", "handler": "h"}}).encode()
PROPERTY_SETTINGS = settings(
    max_examples=int(os.environ.get("DMS_PROPERTY_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

member_names = st.lists(
    st.sampled_from(["a", "b", ".", "..", "/", "\\", "_", "-", "\x00", "C:", "~"]), min_size=1, max_size=10
).map("".join)


@PROPERTY_SETTINGS
@given(members=st.lists(st.tuples(member_names, st.binary(max_size=64)), max_size=6))
def test_archive_extraction_stays_inside_or_refuses(members: list[tuple[str, bytes]]):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        archive = root / "in" / "a.mar"
        archive.parent.mkdir()
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as zf, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # duplicates are part of the attack
            zf.writestr("MAR-INF/MANIFEST.json", MANIFEST)
            for name, data in members:
                with contextlib.suppress(IndexError, ValueError):  # names zipfile itself cannot write
                    zf.writestr(name, data)
        archive.write_bytes(buffer.getvalue())
        cache = root / "cache"
        try:
            opened = open_archive(archive, cache, 10**6)
        except ArchiveError:
            extracted = []
        else:
            extracted = [p for p in opened.model_dir.rglob("*")]
            assert all(p.resolve().is_relative_to(cache.resolve()) for p in extracted)
        outside = [p for p in root.rglob("*") if not p.is_relative_to(cache) and p.parent != archive.parent]
        assert outside == [archive.parent]


@PROPERTY_SETTINGS
@given(body=st.binary(max_size=512), boundary=st.binary(min_size=1, max_size=20))
def test_multipart_decoding_refuses_cleanly(body: bytes, boundary: bytes):
    content_type = "multipart/form-data; boundary=" + boundary.decode("latin-1")
    item = RequestItem(request_id="r", body=body, content_type=content_type, headers=[], query=[])
    try:
        data = build_request_data(item, RequestLimits(max_multipart_parts=5))
    except (InputError, PayloadTooLargeError):
        return
    assert isinstance(data, dict)


field_names = st.text(alphabet=st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=8)


@PROPERTY_SETTINGS
@given(fields=st.dictionaries(field_names, st.binary(max_size=200), min_size=1, max_size=5))
def test_multipart_round_trips_what_a_real_client_encodes(fields: dict[str, bytes]):
    request = httpx.Request(
        "POST", "http://x/", files={k: (f"{k}.bin", v, "application/octet-stream") for k, v in fields.items()}
    )
    body = request.read()
    item = RequestItem(request_id="r", body=body, content_type=request.headers["content-type"], headers=[], query=[])
    assert build_request_data(item) == fields


@PROPERTY_SETTINGS
@given(body=st.binary(max_size=256), content_type=st.sampled_from(["application/json", "text/plain", ""]))
def test_raw_bodies_decode_or_refuse_cleanly(body: bytes, content_type: str):
    item = RequestItem(request_id="r", body=body, content_type=content_type, headers=[], query=[])
    try:
        data = build_request_data(item)
    except InputError:
        return
    assert set(data) == {"body"}
