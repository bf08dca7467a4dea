"""The Open Inference Protocol (KServe v2) and KServe v1: tensor codecs and message forms.

Transport-neutral: the REST apps and the gRPC servicer route requests; decoding and encoding
of tensors happens here, inside the worker processes.
"""
