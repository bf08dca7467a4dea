"""HTTP rules both transports share (HTTP/1.1 in ``dms.rest``, gRPC's HTTP/2 in ``dms.grpc``): request deadlines and
the body-rate floor, content decoding. They know no socket and no framework."""
