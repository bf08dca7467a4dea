"""``ts.protocol``: what TorchServe handlers import from TorchServe's worker protocol."""
