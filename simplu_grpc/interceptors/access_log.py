"""Outermost interceptor: a request id and a deadline for every RPC, and one JSON access line.

The request id comes from the caller's ``x-request-id`` metadata when it is sane (so a trace
can cross services), else it is generated; it is echoed in the initial metadata. The deadline
is the caller's, or ``default_deadline_seconds`` when the caller set none, so adapters can
bound their waits. Both are bound for the RPC (``context.bind``) and restored afterwards.
The access line names method, principal, peer, status code and duration — never a token.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc

from simplu_grpc import context as request_context
from simplu_grpc import logs
from simplu_grpc.interceptors.base import Behavior, ServerInterceptor
from simplu_grpc.interceptors.errors import status_code_of

REQUEST_ID_KEY = "x-request-id"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
# grpcio reports "no deadline" as a remaining time of centuries.
_NO_DEADLINE_ABOVE_SECONDS = 10 * 365 * 24 * 3600.0
# Probes and reflection are frequent and uninteresting: logged at DEBUG.
_QUIET_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

access_logger = logging.getLogger("simplu_grpc.access")


def incoming_request_id(context: grpc.ServicerContext) -> str:
    """The caller's ``x-request-id`` if it is short and plain, else a fresh one."""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and _SANE_REQUEST_ID.fullmatch(value):
            return value
    return uuid.uuid4().hex


def rpc_deadline(context: grpc.ServicerContext, default_seconds: float) -> request_context.Deadline:
    """The caller's deadline, or ``default_seconds`` from now when the caller set none."""
    remaining = context.time_remaining()
    if remaining is None or remaining > _NO_DEADLINE_ABOVE_SECONDS:
        return request_context.Deadline.after(default_seconds)
    return request_context.Deadline.after(remaining)


class AccessLogInterceptor(ServerInterceptor):
    """Binds request id, deadline and log context; writes one access line per RPC."""

    def __init__(self, *, default_deadline_seconds: float) -> None:
        self._default_deadline_seconds = default_deadline_seconds

    def intercept(
        self,
        method: Behavior,
        request_or_iterator: Any,
        context: grpc.ServicerContext,
        method_name: str,
    ) -> Any:
        request_id = incoming_request_id(context)
        deadline = rpc_deadline(context, self._default_deadline_seconds)
        # Fails only when the caller already left: nothing to echo to then.
        with contextlib.suppress(grpc.RpcError, ValueError):
            context.send_initial_metadata(((REQUEST_ID_KEY, request_id),))
        started = time.perf_counter()
        with (
            request_context.bind(request_id=request_id, deadline=deadline),
            logs.bind_rpc(method_name) as rpc,
        ):
            try:
                result = method(request_or_iterator, context)
            except BaseException as exc:
                self._log(context, method_name, rpc, exc, started)
                raise
            if not isinstance(result, Iterator):
                self._log(context, method_name, rpc, None, started)
                return result
        return self._stream(
            result,
            context,
            method_name=method_name,
            request_id=request_id,
            deadline=deadline,
            started=started,
        )

    def _stream(
        self,
        responses: Iterator[Any],
        context: grpc.ServicerContext,
        *,
        method_name: str,
        request_id: str,
        deadline: request_context.Deadline,
        started: float,
    ) -> Iterator[Any]:
        # A streaming response is produced while grpc iterates, after intercept() returned:
        # bind again around the iteration and log when the stream ends.
        with (
            request_context.bind(request_id=request_id, deadline=deadline),
            logs.bind_rpc(method_name) as rpc,
        ):
            error: BaseException | None = None
            try:
                yield from responses
            except BaseException as exc:
                error = exc
                raise
            finally:
                self._log(context, method_name, rpc, error, started)

    @staticmethod
    def _log(
        context: grpc.ServicerContext,
        method_name: str,
        rpc: logs.RpcLogContext,
        error: BaseException | None,
        started: float,
    ) -> None:
        code = status_code_of(context, error)
        duration_ms = round((time.perf_counter() - started) * 1000, 3)
        level = logging.DEBUG if method_name.startswith(_QUIET_PREFIXES) else logging.INFO
        access_logger.log(
            level,
            "%s %s %.1fms",
            method_name,
            code.name,
            duration_ms,
            extra={
                "code": code.name,
                "duration_ms": duration_ms,
                "principal": rpc.principal,
                "peer": context.peer(),
            },
        )
