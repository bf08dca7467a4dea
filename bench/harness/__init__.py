"""The benchmark harness: servers, load, peers' installs, report. Entry point: ``python -m bench.run``."""
