"""What runs inside a worker process: load one model version, then answer batches."""
