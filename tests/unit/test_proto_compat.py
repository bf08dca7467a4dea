"""Our inference.proto is wire-compatible with the protocol as tritonclient speaks it.

Both define the ``inference.*`` symbols in protobuf's default pool, so tritonclient's descriptors
are read in a subprocess and compared here as plain data.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from dms._generated import inference_pb2
from tests.unit.proto_shape import describe_file

DESCRIBE = """
import json, sys
from tritonclient.grpc import service_pb2
sys.path.insert(0, {here!r})
from proto_shape import describe_file
print(json.dumps(describe_file(service_pb2.DESCRIPTOR)))
"""


@pytest.fixture(scope="module")
def theirs() -> dict[str, object]:
    if importlib.util.find_spec("tritonclient") is None:
        pytest.skip("needs tritonclient[grpc] (a test dependency), which is missing")
    here = str(__import__("pathlib").Path(__file__).parent)
    done = subprocess.run(
        [sys.executable, "-c", DESCRIBE.format(here=here)], capture_output=True, text=True, check=True
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_every_message_we_define_matches_field_for_field(theirs):
    ours = describe_file(inference_pb2.DESCRIPTOR)
    shared = [name for name in ours["messages"] if name != "ModelInferRequestRouting"]
    assert len(shared) >= 30
    for name in shared:
        assert ours["messages"][name] == theirs["messages"][name], name


def test_every_rpc_we_serve_matches_in_name_types_and_streaming(theirs):
    ours = describe_file(inference_pb2.DESCRIPTOR)
    assert ours["service"] == theirs["service"] == "inference.GRPCInferenceService"
    for name, signature in ours["methods"].items():
        assert signature == theirs["methods"][name], name


def test_the_routing_message_reads_a_full_request():
    request = inference_pb2.ModelInferRequest(
        model_name="m", model_version="2", id="x", raw_input_contents=[b"\0" * 64]
    )
    routing = inference_pb2.ModelInferRequestRouting.FromString(request.SerializeToString())
    assert (routing.model_name, routing.model_version, routing.id) == ("m", "2", "x")
