"""OpenTelemetry tracing: a server span per RPC (continuing the caller's W3C ``traceparent``)
and child spans for shard sessions, Citrus and DynamoDB calls. Off by default.

``OTEL_TRACES_EXPORTER`` turns it on (``otlp``: OTLP over HTTP, configured by the standard
``OTEL_EXPORTER_OTLP_*`` variables; ``console``: spans printed to stderr); ``none`` or unset
leaves it off, and then ``span()`` is a shared null context and no interceptor is installed, so
the request path pays nothing. ``OTEL_SERVICE_NAME`` names the service (default
``simplu-grpc``). While a span is recording, log lines carry its ``trace_id``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

SpanKind = trace.SpanKind


class _State:
    """The process's tracer while tracing is on (configured once at start, read per RPC)."""

    tracer: trace.Tracer | None = None


_state = _State()
_NULL = contextlib.nullcontext()
# Set by ``untraced`` (per thread / context): spans are not started there.
_untraced: ContextVar[bool] = ContextVar("simplu_untraced", default=False)


def enabled() -> bool:
    return _state.tracer is not None


def configure(exporter: str, service_name: str = "simplu-grpc") -> Callable[[], None]:
    """Start tracing with ``exporter`` (``otlp``, ``console`` or ``none``); return its shutdown."""
    if exporter == "none":
        return lambda: None
    chosen: SpanExporter
    if exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        chosen = OTLPSpanExporter()
    else:
        chosen = ConsoleSpanExporter()
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    provider.add_span_processor(BatchSpanProcessor(chosen))
    return use(provider)


def use(provider: TracerProvider) -> Callable[[], None]:
    """Trace through ``provider`` (tests pass one with an in-memory exporter); return the shutdown."""
    _state.tracer = provider.get_tracer("simplu_grpc")
    log_filter = _TraceIdFilter()
    for handler in logging.getLogger().handlers:
        handler.addFilter(log_filter)

    def shutdown() -> None:
        _state.tracer = None
        for handler in logging.getLogger().handlers:
            handler.removeFilter(log_filter)
        provider.shutdown()

    return shutdown


@contextlib.contextmanager
def untraced() -> Iterator[None]:
    """No spans in this context: background maintenance (location moves) that would otherwise
    start a new trace for every statement it runs."""
    token = _untraced.set(True)
    try:
        yield
    finally:
        _untraced.reset(token)


def span(
    name: str, *, kind: trace.SpanKind = SpanKind.INTERNAL, attributes: Mapping[str, Any] | None = None
) -> contextlib.AbstractContextManager[Any]:
    """A child span of the current one; a null context while tracing is off, under ``untraced``,
    or outside any span: background work (cache refreshes, change feeds, readiness probes) would
    otherwise start a one-span trace of its own for every call it makes."""
    tracer = _state.tracer
    if tracer is None or _untraced.get() or not trace.get_current_span().get_span_context().is_valid:
        return _NULL
    return tracer.start_as_current_span(name, kind=kind, attributes=attributes)


def start_server_span(method: str, metadata: Sequence[tuple[str, Any]] | None) -> trace.Span:
    """The RPC's span, a child of the caller's ``traceparent`` when it sent one; the caller ends it."""
    tracer = _state.tracer
    assert tracer is not None  # the interceptor is installed only while tracing is on
    carrier = {key: value for key, value in metadata or () if isinstance(value, str)}
    service, _, rpc = method.lstrip("/").partition("/")
    return tracer.start_span(
        method.lstrip("/"),
        context=propagate.extract(carrier),
        kind=SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc},
    )


def current_trace_id() -> str | None:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


class _TraceIdFilter(logging.Filter):
    """Adds ``trace_id`` to records logged inside a span (the JSON formatter keeps extras)."""

    def filter(self, record: logging.LogRecord) -> bool:
        trace_id = current_trace_id()
        if trace_id is not None:
            record.trace_id = trace_id
        return True
