"""Tracing interceptor (outermost, only while tracing is on): one SERVER span per RPC.

The span continues the caller's W3C ``traceparent`` and ends with the RPC's final status
code, streams included, so the access line and every child span (shard, Citrus, DynamoDB)
share its trace id.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from simplu_grpc import tracing
from simplu_grpc.interceptors.base import Behavior, ServerInterceptor
from simplu_grpc.interceptors.errors import status_code_of


class TracingInterceptor(ServerInterceptor):
    def intercept(
        self,
        method: Behavior,
        request_or_iterator: Any,
        context: grpc.ServicerContext,
        method_name: str,
    ) -> Any:
        span = tracing.start_server_span(method_name, context.invocation_metadata())
        with trace.use_span(span, end_on_exit=False):
            try:
                result = method(request_or_iterator, context)
            except BaseException as exc:
                _finish(span, context, exc)
                raise
        if isinstance(result, Iterator):
            return self._stream(result, context, span)
        _finish(span, context, None)
        return result

    def _stream(self, responses: Iterator[Any], context: grpc.ServicerContext, span: Any) -> Iterator[Any]:
        # A stream's messages are produced after intercept() returned: the span stays open
        # (and current while they are made) until the last one.
        error: BaseException | None = None
        try:
            with trace.use_span(span, end_on_exit=False):
                yield from responses
        except BaseException as exc:
            error = exc
            raise
        finally:
            _finish(span, context, error)


def _finish(span: Any, context: grpc.ServicerContext, error: BaseException | None) -> None:
    code = status_code_of(context, error)
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code not in (grpc.StatusCode.OK, grpc.StatusCode.CANCELLED):
        span.set_status(Status(StatusCode.ERROR, code.name))
    span.end()
