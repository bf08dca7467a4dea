"""The Open Inference Protocol over gRPC: a thin servicer over the data plane."""

import os

# Worker processes are started with fork + exec, so gRPC's fork handlers have nothing to protect;
# left on, they log "Other threads are currently calling into gRPC, skipping fork() handlers" at
# every worker start. Read by gRPC's core when it is first imported, hence here.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
