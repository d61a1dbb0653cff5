"""The server's own duration of each RPC, beside the client's round trip.

The bench's server runs in the bench process (``running_stack``), so the duration its access
log records for every RPC (``interceptors/access_log.py``: from the first interceptor until
the handler returned, status included) is read straight from the log record: no parsing,
nothing added to the request path. The client figure adds the loopback, the load process's
protobuf work and grpc's own layers on both sides; the acceptance targets of the query
scenarios (issue 12) are server-side. The metrics endpoint's RPC histogram says the same
thing, but its buckets (5, 10, 25 ms) are too coarse for a p50.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from simplu_grpc.interceptors.access_log import access_logger


class ServerTimings(logging.Handler):
    """Collects ``duration_ms`` of the successful RPCs' access records, by method name."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self._lock = threading.Lock()
        self._durations: dict[str, list[float]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        duration = getattr(record, "duration_ms", None)
        if getattr(record, "code", None) != "OK" or not isinstance(duration, float | int) or not record.args:
            return
        method = str(record.args[0]) if isinstance(record.args, tuple) else ""
        with self._lock:
            self._durations.setdefault(method.rsplit("/", 1)[-1], []).append(float(duration))

    def take(self, method: str) -> list[float]:
        """The durations of ``method`` (its short name, e.g. "ListResources") since the last take."""
        with self._lock:
            return self._durations.pop(method, [])


@contextmanager
def server_timings() -> Iterator[ServerTimings]:
    """Record the access log's durations while the block runs. The records go to this handler
    only (not to the bench's console): the logger is set to INFO and stops propagating for the
    time of the block, then both are restored."""
    handler = ServerTimings()
    level, propagate = access_logger.level, access_logger.propagate
    access_logger.addHandler(handler)
    access_logger.setLevel(logging.INFO)
    access_logger.propagate = False
    try:
        yield handler
    finally:
        access_logger.removeHandler(handler)
        access_logger.setLevel(level)
        access_logger.propagate = propagate
