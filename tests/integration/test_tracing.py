"""Tracing: the caller's trace continues through the server span into shard, Citrus and DynamoDB spans."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from simplu.v1 import resource_pb2

from simplu_grpc import tracing
from simplu_grpc.devstack.citrus_emulator import CitrusEmulator
from simplu_grpc.devstack.moto_server import MotoServer
from tests.fixtures.server import MakeServer
from tests.integration.resource_stack import ResourceStack, build_stack

pytestmark = pytest.mark.integration

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    stop = tracing.use(provider)
    try:
        yield exporter
    finally:
        stop()


@pytest.fixture
def traced_stack(
    request: pytest.FixtureRequest, make_server: MakeServer, citrus: CitrusEmulator, moto_server: MotoServer
) -> Iterator[ResourceStack]:
    # Built after tracing is on: the interceptor chain is chosen when the server is built.
    request.getfixturevalue("spans")
    built = build_stack(
        make_server=make_server,
        citrus=citrus,
        moto_server=moto_server,
        auth_settings=request.getfixturevalue("auth_settings"),
        admin_token=request.getfixturevalue("admin_token"),
    )
    yield built
    built.server.stop(0)
    built.server.deps.close()


def test_a_traced_request_continues_the_callers_trace_into_every_dependency(
    traced_stack: ResourceStack, spans: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    """A CreateResource sent with a W3C traceparent yields a SERVER span that is the caller span's
    child, and CLIENT spans for DynamoDB, Citrus and the shard under it, all in the caller's trace;
    the access line carries that trace id."""
    caplog.set_level(logging.INFO, logger="simplu_grpc.access")
    business = traced_stack.add_business()
    spans.clear()
    traceparent = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    request = resource_pb2.CreateResourceRequest(
        resource=resource_pb2.Resource(business_id=business.id, location_id="main", resource_type="patients")
    )
    traced_stack.stub.CreateResource(
        request, metadata=(*traced_stack.md(), ("traceparent", traceparent)), timeout=10
    )
    finished = spans.get_finished_spans()
    server = [s for s in finished if s.kind == SpanKind.SERVER]
    assert [s.name for s in server] == ["simplu.v1.ResourceService/CreateResource"]
    root = server[0]
    assert format(root.context.trace_id, "032x") == CALLER_TRACE
    assert root.parent is not None
    assert format(root.parent.span_id, "016x") == CALLER_SPAN
    assert root.attributes is not None
    assert root.attributes["rpc.grpc.status_code"] == 0
    children = {s.name: s for s in finished if s.kind == SpanKind.CLIENT}
    assert {"dynamodb get_item", "postgresql shard"} <= set(children)
    assert any(name.startswith("citrus ") for name in children)
    for child in children.values():
        assert child.context.trace_id == root.context.trace_id
        assert child.parent is not None
    access = [r for r in caplog.records if r.name == "simplu_grpc.access"]
    assert access
    assert getattr(access[-1], "trace_id", None) == CALLER_TRACE


def test_tracing_off_installs_nothing_on_the_request_path() -> None:
    """Without OTEL_TRACES_EXPORTER there is no tracer: spans are one shared null context."""
    assert not tracing.enabled()
    assert tracing.span("x") is tracing.span("y")


def test_a_dependency_call_outside_any_request_starts_no_trace(spans: InMemorySpanExporter) -> None:
    """Background work (cache refreshes, change feeds, probes) calls the same adapters as requests:
    outside a span its CLIENT spans are not recorded (each would be a one-span trace of its own);
    under a span they are its children."""
    with tracing.span("postgresql shard", kind=SpanKind.CLIENT):
        pass
    assert spans.get_finished_spans() == ()
    request = tracing.start_server_span("/simplu.v1.ResourceService/GetResource", None)
    with trace.use_span(request, end_on_exit=True), tracing.span("postgresql shard", kind=SpanKind.CLIENT):
        pass
    finished = {s.name: s for s in spans.get_finished_spans()}
    assert set(finished) == {"simplu.v1.ResourceService/GetResource", "postgresql shard"}
    child = finished["postgresql shard"]
    assert child.parent is not None
    assert child.parent.span_id == request.get_span_context().span_id
