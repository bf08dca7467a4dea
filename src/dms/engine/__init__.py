"""The engine: per-model batching and supervised worker processes. Knows nothing of HTTP."""
