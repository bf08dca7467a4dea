"""What an operator sees: Prometheus metrics, the access log, log formats."""
