"""``python -m bench``: latency and throughput of the service on a real local stack (see bench/README.md)."""
