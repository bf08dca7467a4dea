"""The gRPC ceiling: grpcio's asyncio server (on uvloop) answering ModelInfer for the tiny model in-process.

The gRPC counterpart of ``bare_app``: the same protobuf messages DMS reads and writes, the matmul in the
call itself, no queue, no worker process. ``python -m bench.handlers.grpc_ceiling PORT PROCESSES``
starts that many processes on one port (gRPC sets SO_REUSEPORT, so the kernel spreads connections).
"""

from __future__ import annotations

import multiprocessing
import sys

import grpc
import numpy as np

from bench.handlers.tiny_handler import WEIGHTS
from dms._generated import inference_pb2 as pb


async def model_infer(request: pb.ModelInferRequest, context: object) -> pb.ModelInferResponse:
    tensor = request.inputs[0]
    rows = np.frombuffer(request.raw_input_contents[0], dtype="<f4").reshape(list(tensor.shape))
    result = (rows @ WEIGHTS).astype("<f4")
    response = pb.ModelInferResponse(model_name=request.model_name, model_version="1")
    response.outputs.add(name="y", datatype="FP32", shape=list(result.shape))
    response.raw_output_contents.append(result.tobytes())
    return response


async def serve(port: int) -> None:
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(
        model_infer,
        request_deserializer=pb.ModelInferRequest.FromString,
        response_serializer=pb.ModelInferResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("inference.GRPCInferenceService", {"ModelInfer": handler}),)
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def run(port: int) -> None:
    import uvloop

    uvloop.run(serve(port))


if __name__ == "__main__":
    port, processes = int(sys.argv[1]), int(sys.argv[2])
    children = [multiprocessing.Process(target=run, args=(port,)) for _ in range(processes)]
    for child in children:
        child.start()
    for child in children:
        child.join()
