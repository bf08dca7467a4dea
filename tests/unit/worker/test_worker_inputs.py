"""How one forwarded request becomes the ``data`` dict a handler sees, and how outputs encode."""

from __future__ import annotations

import numpy as np
import pytest

from dms.context import Context, RequestProcessor
from dms.errors import HandlerError, InputError
from dms.messages import RequestItem
from dms.worker.inputs import build_request_data
from dms.worker.outputs import encode_output


def request(body: bytes, content_type: str = "", query: list[tuple[str, str]] | None = None) -> RequestItem:
    return RequestItem(request_id="r", body=body, content_type=content_type, headers=[], query=query or [])


def test_body_is_decoded_by_media_type():
    assert build_request_data(request(b'{"a": [1, 2]}', "application/json")) == {"body": {"a": [1, 2]}}
    assert build_request_data(request(b"hello", "text/plain; charset=utf-8")) == {"body": "hello"}
    assert build_request_data(request(b"\x00\x01", "image/png")) == {"body": b"\x00\x01"}
    assert build_request_data(request(b"x", "", [("topk", "3")])) == {"body": b"x", "topk": "3"}


def test_multipart_fields_and_urlencoded_forms_arrive_by_name():
    body = (
        b'--B\r\nContent-Disposition: form-data; name="data"; filename="k.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\nJPEGBYTES\r\n"
        b'--B\r\nContent-Disposition: form-data; name="note"\r\n\r\nhi\r\n--B--\r\n'
    )
    data = build_request_data(request(body, "multipart/form-data; boundary=B"))
    assert data == {"data": b"JPEGBYTES", "note": b"hi"}
    assert build_request_data(request(b"a=1&b=two", "application/x-www-form-urlencoded")) == {"a": "1", "b": "two"}


@pytest.mark.parametrize("body", [b"\xff\xd8\xff\xe0JFIF", b'{"instances": [[1, 2]]}'], ids=["jpeg", "json"])
def test_a_body_labelled_as_a_form_that_is_not_one_arrives_as_it_came(body: bytes):
    """curl's --data-binary @kitten.jpg and -d @request.json label their bodies as forms."""
    assert build_request_data(request(body, "application/x-www-form-urlencoded")) == {"body": body}


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"{oops", "application/json", "not valid JSON"),
        (b"\xff\xfe", "text/plain", "UTF-8"),
        (b"--B\r\nno headers end", "multipart/form-data; boundary=B", "multipart"),
        (b"x", "multipart/form-data", "no boundary"),
    ],
)
def test_undecodable_bodies_are_input_errors(body: bytes, content_type: str, message: str):
    with pytest.raises(InputError, match=message):
        build_request_data(request(body, content_type))


def test_outputs_encode_by_type_and_honour_the_handler_settings():
    proc = RequestProcessor("r", {})
    assert encode_output(b"raw", proc, "m").content_type == "application/octet-stream"
    assert encode_output("text", proc, "m").content_type.startswith("text/plain")
    encoded = encode_output({"p": np.float32(0.5), "a": np.arange(2)}, proc, "m")
    assert (encoded.body, encoded.content_type) == (b'{"p":0.5,"a":[0,1]}', "application/json")
    proc.report_status(201)
    proc.content_type = "application/x-custom"
    proc.add_response_property("X-Extra", "1")
    custom = encode_output(b"x", proc, "m")
    assert (custom.status, custom.content_type, custom.headers) == (201, "application/x-custom", [("X-Extra", "1")])
    with pytest.raises(HandlerError, match="cannot be encoded"):
        encode_output({"x": object()}, RequestProcessor("r", {}), "m")


def test_context_offers_the_mms_and_torchserve_accessors():
    context = Context("m", "/models/m", {"model": {}}, 4, None, "DMS", "0.1", {"handler": {"k": 1}})
    context.start_batch([RequestProcessor("id-0", {"x-a": "1"}), RequestProcessor("id-1", {})])
    assert context.get_request_id(1) == "id-1"
    assert context.get_request_header(0, "X-A") == "1"
    assert context.system_properties["batch_size"] == 4
    assert context.request_ids == {0: "id-0", 1: "id-1"}
    context.set_response_status(418, "teapot", idx=1)
    assert context.get_response_status(1) == 418
    with pytest.raises(IndexError):
        context.set_response_content_type(5, "x")
