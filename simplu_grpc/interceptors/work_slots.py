"""Work slots: at most ``GRPC_MAX_WORKERS`` RPCs run their Python work at once; the rest wait here.

The transport gives every admitted call a thread (``server.transport``), so a client that
sends its headers and never its message holds only its own thread, never one another call
needs (issue 9). Threads are not free under the GIL, though: the more of them run Python at
once, the more the process spends switching between them (measured by the capacity bench:
256 threads cost 15-20 % more CPU per request than 32). So the work itself is bounded
here, after the request has arrived: a waiting call sleeps on a semaphore, which costs no
GIL time, and never past its deadline. Health checks and reflection never wait for a slot.
"""

from __future__ import annotations

import threading
from typing import Any

import grpc

from simplu_grpc import context as request_context
from simplu_grpc.errors import DeadlineExceeded
from simplu_grpc.interceptors.auth import is_exempt
from simplu_grpc.interceptors.base import Behavior, ServerInterceptor
from simplu_grpc.interceptors.errors import abort_with


class WorkSlotsInterceptor(ServerInterceptor):
    """Holds one of ``slots`` for the duration of each non-exempt RPC's work."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self._slots = threading.BoundedSemaphore(slots)

    def intercept(
        self,
        method: Behavior,
        request_or_iterator: Any,
        context: grpc.ServicerContext,
        method_name: str,
    ) -> Any:
        if is_exempt(method_name):
            return method(request_or_iterator, context)
        # A unary RPC's work is done when ``method`` returns. A stream's ``method`` only opens it
        # (validation, permission) and returns the iterator: the slot is given back then, so a
        # stream that lives for hours never holds one (WatchResources waits on its own thread).
        if not self._slots.acquire(timeout=request_context.deadline().remaining()):
            abort_with(context, DeadlineExceeded("deadline exceeded while waiting for a free worker"))
        try:
            return method(request_or_iterator, context)
        finally:
            self._slots.release()
