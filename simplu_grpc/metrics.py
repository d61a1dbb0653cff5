"""Prometheus metrics: one registry per server (no module-level singletons), one method per event.

Adapters and interceptors call the methods here; nothing else touches prometheus_client,
so metric names and labels are decided in one place. Labels are bounded sets: gRPC
methods, status codes, dependency names, shard ids (a handful per deployment), and the
tenants (business, location) of the top N only (``watch_tenants``: N series at most per metric).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from simplu_grpc.health import HEALTH_SERVICE_NAME

# Latency buckets for RPCs and dependency calls: 1 ms .. 30 s.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Calls that last as long as the caller likes (a health Watch is a subscription): counted, but
# their duration is not a latency and would only pile up in the histogram's top bucket.
_UNTIMED_METHODS = frozenset({f"/{HEALTH_SERVICE_NAME}/Watch"})


@dataclass(frozen=True, slots=True)
class PoolGauge:
    """One shard pool's numbers as the pool registry reports them for scraping."""

    shard_id: str
    size: int
    available: int
    waiting: int
    max_size: int


class _PoolCollector(Collector):
    """Reads pool stats at scrape time, so gauges are never stale and never leak closed pools."""

    def __init__(self, source: Callable[[], Iterable[PoolGauge]]) -> None:
        self._source = source

    def collect(self) -> Iterable[GaugeMetricFamily]:
        size = GaugeMetricFamily("simplu_shard_pool_size", "Open connections", labels=["shard"])
        available = GaugeMetricFamily(
            "simplu_shard_pool_available", "Idle connections ready for checkout", labels=["shard"]
        )
        waiting = GaugeMetricFamily(
            "simplu_shard_pool_waiting", "Callers waiting for a connection", labels=["shard"]
        )
        max_size = GaugeMetricFamily("simplu_shard_pool_max_size", "Pool max_size", labels=["shard"])
        for gauge in self._source():
            size.add_metric([gauge.shard_id], gauge.size)
            available.add_metric([gauge.shard_id], gauge.available)
            waiting.add_metric([gauge.shard_id], gauge.waiting)
            max_size.add_metric([gauge.shard_id], gauge.max_size)
        yield from (size, available, waiting, max_size)


class _ShardCollector(Collector):
    """Citrus's ``isActive`` of each shard this server routes to, read at scrape time."""

    def __init__(self, source: Callable[[], Mapping[str, bool]]) -> None:
        self._source = source

    def collect(self) -> Iterable[GaugeMetricFamily]:
        active = GaugeMetricFamily(
            "simplu_shard_active",
            "1 while Citrus reports the shard active; 0: it takes no new businesses (its tenants are served)",
            labels=["shard"],
        )
        for shard_id, is_active in sorted(self._source().items()):
            active.add_metric([shard_id], 1.0 if is_active else 0.0)
        yield active


@dataclass(frozen=True, slots=True)
class TenantGauge:
    """One of the top tenants of the last 5 minutes in this process, as /metrics shows it."""

    shard_id: str
    business_id: str
    location_id: str
    shard_seconds: float
    requests: int
    errors: int
    rows: int


class _TenantCollector(Collector):
    """The top tenants at scrape time: a tenant that drops out of the top N drops its series."""

    def __init__(self, source: Callable[[], Iterable[TenantGauge]]) -> None:
        self._source = source

    def collect(self) -> Iterable[GaugeMetricFamily]:
        labels = ["shard", "business", "location"]
        seconds = GaugeMetricFamily(
            "simplu_tenant_top_shard_seconds",
            "Shard time of the top tenants over the last 5 minutes (this process)",
            labels=labels,
        )
        requests = GaugeMetricFamily(
            "simplu_tenant_top_requests",
            "Shard calls of the top tenants over the last 5 minutes",
            labels=labels,
        )
        errors = GaugeMetricFamily(
            "simplu_tenant_top_errors",
            "Failed shard calls of the top tenants over the last 5 minutes",
            labels=labels,
        )
        rows = GaugeMetricFamily(
            "simplu_tenant_top_rows",
            "Rows read and written by the top tenants over the last 5 minutes",
            labels=labels,
        )
        for tenant in self._source():
            key = [tenant.shard_id, tenant.business_id, tenant.location_id]
            seconds.add_metric(key, tenant.shard_seconds)
            requests.add_metric(key, tenant.requests)
            errors.add_metric(key, tenant.errors)
            rows.add_metric(key, tenant.rows)
        yield from (seconds, requests, errors, rows)


class Metrics:
    """The service's metrics on a private registry; ``serve(port)`` exposes ``/metrics``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # No "<name>_created" series: a timestamp per label set that doubles what is scraped and
        # that no dashboard of ours reads. The switch is prometheus_client's, process-wide.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated
        self.registry = registry or CollectorRegistry()
        self._rpcs = Counter(
            "simplu_grpc_requests",
            "RPCs handled, by method and status code",
            ["method", "code"],
            registry=self.registry,
        )
        self._rpc_latency = Histogram(
            "simplu_grpc_request_seconds",
            "RPC latency, by method",
            ["method"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self._rpc_children: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._cache_children: dict[tuple[str, str], Any] = {}
        self._dependency_calls = Counter(
            "simplu_dependency_calls",
            "Calls to external systems (citrus, dynamodb, jwks), by outcome (ok or an error kind)",
            ["dependency", "operation", "outcome"],
            registry=self.registry,
        )
        self._dependency_latency = Histogram(
            "simplu_dependency_seconds",
            "Latency of calls to external systems",
            ["dependency", "operation"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self._cache = Counter(
            "simplu_cache_lookups",
            "Cache lookups, by cache and result (hit, miss, stale)",
            ["cache", "result"],
            registry=self.registry,
        )
        self._pool_errors = Counter(
            "simplu_shard_pool_errors",
            "Shard pool failures: exhausted (no connection in time) or unavailable (shard down)",
            ["shard", "kind"],
            registry=self.registry,
        )

        # Capacity as Citrus last reported each shard (on routing lookups and health listings); a shard
        # is one label value, so the cardinality is the fleet's shard count.
        self._shard_businesses = Gauge(
            "simplu_shard_businesses",
            "Businesses on the shard, as Citrus reports",
            ["shard"],
            registry=self.registry,
        )
        self._shard_max_businesses = Gauge(
            "simplu_shard_max_businesses",
            "The shard's business capacity, as Citrus reports",
            ["shard"],
            registry=self.registry,
        )

    def shard_reported(
        self, shard_id: str, *, business_count: int | None, max_businesses: int | None
    ) -> None:
        """Citrus's latest capacity figures for a shard (its isActive flag: ``watch_shards``)."""
        # Unknown counts are left out rather than exported as 0 (which would read as "empty").
        if business_count is not None:
            self._shard_businesses.labels(shard_id).set(business_count)
        if max_businesses is not None:
            self._shard_max_businesses.labels(shard_id).set(max_businesses)

    def rpc(self, method: str, code: str, seconds: float) -> None:
        # Called on every RPC: the labelled children are looked up once per (method, code)
        # (``labels()`` validates and locks each time). Methods and codes are bounded sets.
        children = self._rpc_children.get((method, code))
        if children is None:
            timed = self._rpc_latency.labels(method) if method not in _UNTIMED_METHODS else None
            children = (self._rpcs.labels(method, code), timed)
            self._rpc_children[method, code] = children
        counter, latency = children
        counter.inc()
        if latency is not None:
            latency.observe(seconds)

    def dependency_call(self, dependency: str, operation: str, outcome: str, seconds: float) -> None:
        self._dependency_calls.labels(dependency, operation, outcome).inc()
        self._dependency_latency.labels(dependency, operation).observe(seconds)

    def cache_lookup(self, cache: str, result: str) -> None:
        # Several per warm RPC: the labelled child is looked up once (caches and results are few).
        child = self._cache_children.get((cache, result))
        if child is None:
            child = self._cache_children[cache, result] = self._cache.labels(cache, result)
        child.inc()

    def pool_error(self, shard_id: str, kind: str) -> None:
        self._pool_errors.labels(shard_id, kind).inc()

    def watch_pools(self, source: Callable[[], Iterable[PoolGauge]]) -> None:
        """Register the pool registry's stats, read at every scrape."""
        self.registry.register(_PoolCollector(source))

    def watch_shards(self, source: Callable[[], Mapping[str, bool]]) -> None:
        """Register the routed shards' active flags (shard id -> isActive), read at every scrape."""
        self.registry.register(_ShardCollector(source))

    def watch_tenants(self, source: Callable[[], Iterable[TenantGauge]]) -> None:
        """Register the top tenants (``source`` yields at most N), read at every scrape."""
        self.registry.register(_TenantCollector(source))

    def serve(self, port: int, addr: str = "0.0.0.0") -> Callable[[], None]:
        """Expose /metrics on its own port; return a function that stops the endpoint."""
        server, thread = start_http_server(port, addr=addr, registry=self.registry)

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

        return stop
