"""Metrics interceptor: counts every RPC by method and final status code, and times it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import grpc

from simplu_grpc.interceptors.base import Behavior, ServerInterceptor
from simplu_grpc.interceptors.errors import status_code_of
from simplu_grpc.metrics import Metrics


class MetricsInterceptor(ServerInterceptor):
    """Reports ``Metrics.rpc(method, code, seconds)`` once per RPC, streams included."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def intercept(
        self,
        method: Behavior,
        request_or_iterator: Any,
        context: grpc.ServicerContext,
        method_name: str,
    ) -> Any:
        started = time.perf_counter()
        try:
            result = method(request_or_iterator, context)
        except BaseException as exc:
            self._record(context, method_name, exc, started)
            raise
        if isinstance(result, Iterator):
            return self._stream(result, context, method_name, started)
        self._record(context, method_name, None, started)
        return result

    def _stream(
        self, responses: Iterator[Any], context: grpc.ServicerContext, method_name: str, started: float
    ) -> Iterator[Any]:
        error: BaseException | None = None
        try:
            yield from responses
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._record(context, method_name, error, started)

    def _record(
        self, context: grpc.ServicerContext, method_name: str, error: BaseException | None, started: float
    ) -> None:
        code = status_code_of(context, error)
        self._metrics.rpc(method_name, code.name, time.perf_counter() - started)
