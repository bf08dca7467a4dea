"""Describe a gRPC service's messages and methods as plain data (no generated code imported here)."""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor, FileDescriptor


def shape(message: Descriptor) -> dict[str, object]:
    result: dict[str, object] = {
        f.name: [
            f.number,
            f.type,
            f.is_repeated,
            f.message_type.full_name if f.message_type else None,
            f.containing_oneof.name if f.containing_oneof else None,
        ]
        for f in message.fields
    }
    for nested in message.nested_types:
        result[f"<{nested.name}>"] = shape(nested)
    return result


def describe_file(descriptor: FileDescriptor) -> dict[str, object]:
    service = descriptor.services_by_name["GRPCInferenceService"]
    return {
        "service": service.full_name,
        "messages": {name: shape(message) for name, message in descriptor.message_types_by_name.items()},
        "methods": {
            m.name: [m.input_type.full_name, m.output_type.full_name, m.client_streaming, m.server_streaming]
            for m in service.methods
        },
    }
