"""Several frontends on the same ports (``frontends = N``): the first one's side and the others'.

The process the user started is frontend 0. It binds the inference and gRPC ports with ``SO_REUSEPORT``
and starts frontends 1..N-1 (``dms.replica``), which bind the same ports, so the kernel spreads
new connections over all of them. Each frontend has its own ``DataPlane`` and its own workers for every
model. Frontend 0 alone serves management and metrics. After each management change it sends the others
the registry it now holds (``dms.frontends.group``), which they make their own (``dms.frontends.control``)
before it answers; it adds their workers and queues to ``describe`` and their series to ``/metrics``
(``dms.observability.merging``).
"""
