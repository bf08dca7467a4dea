"""The Open Inference Protocol over gRPC: a thin servicer over the data plane."""
