"""/metrics shows the top tenants only: label cardinality stays at N whatever the number of tenants."""

from __future__ import annotations

from prometheus_client import generate_latest

from simplu_grpc.domain.admin.tenant_load import TenantLoad
from simplu_grpc.metrics import Metrics
from simplu_grpc.wiring import top_tenants
from tests.fixtures.clock import FakeClock

TENANT_METRICS = (
    "simplu_tenant_top_shard_seconds",
    "simplu_tenant_top_requests",
    "simplu_tenant_top_errors",
    "simplu_tenant_top_rows",
)


def series(text: str, metric: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(metric + "{")]


def test_label_cardinality_stays_at_the_top_n_with_10000_tenants() -> None:
    """10,000 tenants on 4 shards, 5 of them busy: each tenant metric has exactly 5 series, the busy ones."""
    load = TenantLoad(capacity=200, clock=FakeClock(start=120.0))
    metrics = Metrics()
    metrics.watch_tenants(top_tenants(load, 5))
    for i in range(10_000):
        load.record(f"s{i % 4}", "b", f"l{i}", shard_ns=1_000, rows_read=1, rows_written=0, error=False)
    busy = {f"busy{i}" for i in range(5)}
    for name in busy:
        for _ in range(50):
            load.record("s0", "b", name, shard_ns=1_000_000, rows_read=1, rows_written=0, error=False)
    text = generate_latest(metrics.registry).decode()
    for metric in TENANT_METRICS:
        lines = series(text, metric)
        assert len(lines) == 5, metric
        assert {line.split('location="')[1].split('"')[0] for line in lines} == busy


def test_no_series_before_any_traffic() -> None:
    """An idle process exports the metric families without a single tenant series."""
    metrics = Metrics()
    metrics.watch_tenants(top_tenants(TenantLoad(capacity=10), 5))
    text = generate_latest(metrics.registry).decode()
    assert all(series(text, metric) == [] for metric in TENANT_METRICS)
