"""Our inference.proto is wire-compatible with the protocol as tritonclient speaks it.

Our messages live in package ``dms.inference`` and tritonclient's in ``inference``, so both load
in one process; names are compared without the package, numbers and types exactly.
"""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import Descriptor

from dms._generated import inference_pb2

service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2", reason="tritonclient[grpc] is a test dependency")


def relative(full_name: str) -> str:
    return full_name.removeprefix("dms.").removeprefix("inference.")


def shape(message: Descriptor) -> dict[str, object]:
    result: dict[str, object] = {
        f.name: (
            f.number,
            f.type,
            f.is_repeated,
            relative(f.message_type.full_name) if f.message_type else None,
            f.containing_oneof.name if f.containing_oneof else None,
        )
        for f in message.fields
    }
    for nested in message.nested_types:
        result[f"<{nested.name}>"] = shape(nested)
    return result


def test_every_message_we_define_matches_field_for_field():
    ours = inference_pb2.DESCRIPTOR.message_types_by_name
    theirs = service_pb2.DESCRIPTOR.message_types_by_name
    shared = [name for name in ours if name != "ModelInferRequestRouting"]
    assert len(shared) >= 30
    for name in shared:
        assert shape(ours[name]) == shape(theirs[name]), name


def test_every_rpc_matches_in_name_types_and_streaming():
    ours = inference_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    theirs = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert theirs.full_name == "inference.GRPCInferenceService"
    for method in ours.methods:
        other = theirs.methods_by_name[method.name]
        assert (
            relative(method.input_type.full_name),
            relative(method.output_type.full_name),
            method.client_streaming,
            method.server_streaming,
        ) == (
            relative(other.input_type.full_name),
            relative(other.output_type.full_name),
            other.client_streaming,
            other.server_streaming,
        )


def test_bytes_cross_between_the_two_definitions():
    theirs = service_pb2.ModelInferRequest(model_name="m", model_version="2", id="x")
    theirs.inputs.add(name="a", datatype="FP32", shape=[1, 2])
    theirs.raw_input_contents.append(b"\0" * 8)
    ours = inference_pb2.ModelInferRequest.FromString(theirs.SerializeToString())
    assert (ours.model_name, ours.inputs[0].name, list(ours.inputs[0].shape)) == ("m", "a", [1, 2])
    routing = inference_pb2.ModelInferRequestRouting.FromString(theirs.SerializeToString())
    assert (routing.model_name, routing.model_version, routing.id) == ("m", "2", "x")
