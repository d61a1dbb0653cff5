"""The load generator: generated typed stubs over one loopback channel, in a process of its own.

The runner calls these functions through a one-process ``ProcessPoolExecutor`` (spawned), so
the client's protobuf encoding and grpc's Python layer do not compete with the server for
the same GIL. Everything crossing the process boundary is a plain picklable value.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import field_mask_pb2, timestamp_pb2
from simplu.v1 import (
    business_pb2,
    business_pb2_grpc,
    resource_pb2,
    resource_pb2_grpc,
    shard_admin_pb2,
    shard_admin_pb2_grpc,
)

RESOURCE_TYPE = "patients"
CALL_TIMEOUT_SECONDS = 10.0
STATUSES = ("new", "confirmed", "done")
# Text searches of the query scenarios: fragments of the seeded surnames (bench/queries.py).
SEARCH_TERMS = ("abc", "pop", "xyz", "ion", "mar", "ele", "dan", "qua")


@dataclass(frozen=True)
class Workload:
    """What a scenario works on: one business, its locations, and known resource ids per location."""

    business_id: str
    location_ids: tuple[str, ...]
    resource_ids: dict[str, tuple[str, ...]] = field(default_factory=dict)
    page_size: int = 50


@dataclass
class Samples:
    """Latencies of the successful calls (ms), errors by status code, and wall time of the run."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    first_error: str = ""
    elapsed_s: float = 0.0
    # CreateResource: (location_id, resource_id) of what was created; ListResources: items per page.
    created: list[tuple[str, str]] = field(default_factory=list)
    items: list[int] = field(default_factory=list)


class _Client:
    def __init__(self, target: str, token: str) -> None:
        self.channel = grpc.insecure_channel(target)
        grpc.channel_ready_future(self.channel).result(timeout=10)
        self.business = business_pb2_grpc.BusinessServiceStub(self.channel)
        self.resource = resource_pb2_grpc.ResourceServiceStub(self.channel)
        self.admin = shard_admin_pb2_grpc.ShardAdminServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {token}"),)


_client: _Client | None = None


def connect(target: str, token: str) -> None:
    """Open the channel (the executor's initializer); every later call reuses it."""
    global _client  # noqa: PLW0603 - one channel per load process, like a real client
    _client = _Client(target, token)


def close() -> None:
    """Close the channel before the load process exits."""
    global _client  # noqa: PLW0603 - see connect()
    if _client is not None:
        _client.channel.close()
        _client = None


def the_client() -> _Client:
    """The load process's connected client (stubs and the token metadata)."""
    return _the_client()


def _the_client() -> _Client:
    if _client is None:
        raise RuntimeError("load process not connected")
    return _client


def create_business(name: str, location_ids: tuple[str, ...]) -> tuple[str, float]:
    """CreateBusiness (dental) with these locations; returns its id and the latency in ms."""
    client = _the_client()
    business = business_pb2.Business(
        name=name,
        type=business_pb2.BUSINESS_TYPE_DENTAL,
        locations=[
            business_pb2.Location(id=loc, name=f"Location {loc}", timezone="Europe/Bucharest")
            for loc in location_ids
        ],
    )
    started = time.perf_counter()
    response = client.business.CreateBusiness(
        business_pb2.CreateBusinessRequest(business=business),
        metadata=client.metadata,
        timeout=CALL_TIMEOUT_SECONDS,
    )
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    if response.unregistered_location_ids:
        raise RuntimeError(f"Citrus did not register {list(response.unregistered_location_ids)}")
    return response.business.id, elapsed_ms


def invalidate_routing(business_id: str) -> int:
    """ShardAdmin.InvalidateRouting for one business; returns how many routes were dropped."""
    client = _the_client()
    response = client.admin.InvalidateRouting(
        shard_admin_pb2.InvalidateRoutingRequest(business_id=business_id),
        metadata=client.metadata,
        timeout=CALL_TIMEOUT_SECONDS,
    )
    return int(response.dropped)


def _call(kind: str, workload: Workload, i: int) -> Callable[[], Any]:
    """The i-th request of a scenario, as a zero-argument stub call."""
    client = _the_client()
    location = workload.location_ids[i % len(workload.location_ids)]
    md = client.metadata
    if kind == "get":
        ids = workload.resource_ids[location]
        request = resource_pb2.GetResourceRequest(
            business_id=workload.business_id,
            location_id=location,
            resource_type=RESOURCE_TYPE,
            resource_id=ids[(i // len(workload.location_ids)) % len(ids)],
        )
        return lambda: client.resource.GetResource(request, metadata=md, timeout=CALL_TIMEOUT_SECONDS)
    if kind == "list":
        list_request = resource_pb2.ListResourcesRequest(
            business_id=workload.business_id,
            location_id=location,
            resource_type=RESOURCE_TYPE,
            page_size=workload.page_size,
        )
        return lambda: client.resource.ListResources(list_request, metadata=md, timeout=CALL_TIMEOUT_SECONDS)
    if kind == "update":
        ids = workload.resource_ids[location]
        resource = resource_pb2.Resource(
            business_id=workload.business_id,
            location_id=location,
            resource_type=RESOURCE_TYPE,
            resource_id=ids[(i // len(workload.location_ids)) % len(ids)],
        )
        resource.data.update({"status": STATUSES[i % len(STATUSES)]})
        update_request = resource_pb2.UpdateResourceRequest(
            resource=resource, update_mask=field_mask_pb2.FieldMask(paths=["data.status"])
        )
        return lambda: client.resource.UpdateResource(
            update_request, metadata=md, timeout=CALL_TIMEOUT_SECONDS
        )
    if kind == "create":
        resource = resource_pb2.Resource(
            business_id=workload.business_id,
            location_id=location,
            resource_type=RESOURCE_TYPE,
            start_time=timestamp_pb2.Timestamp(seconds=1_767_258_000 + (i % 336) * 86_400),
        )
        resource.data.update({"name": f"Patient {i}", "status": "new", "phone": f"+40 700 {i:06d}"})
        create_request = resource_pb2.CreateResourceRequest(resource=resource)
        return lambda: client.resource.CreateResource(
            create_request, metadata=md, timeout=CALL_TIMEOUT_SECONDS
        )
    if kind in ("filtered_list", "search"):
        if kind == "filtered_list":
            # A selective filter on a large type, in an order an index does not give for free.
            text = f'data.status = "{STATUSES[i % len(STATUSES)]}" AND data.price >= {1000 + i % 500}'
            resource_type = "appointments"
        else:
            text = f'"{SEARCH_TERMS[i % len(SEARCH_TERMS)]}"'
            resource_type = RESOURCE_TYPE
        query_request = resource_pb2.ListResourcesRequest(
            business_id=workload.business_id,
            location_id=workload.location_ids[0],
            resource_type=resource_type,
            filter=text,
            page_size=workload.page_size,
        )
        return lambda: client.resource.ListResources(query_request, metadata=md, timeout=CALL_TIMEOUT_SECONDS)
    if kind == "statistics":
        statistics_request = resource_pb2.GetLocationStatisticsRequest(
            business_id=workload.business_id, location_id=workload.location_ids[0]
        )
        return lambda: client.resource.GetLocationStatistics(
            statistics_request, metadata=md, timeout=CALL_TIMEOUT_SECONDS
        )
    raise ValueError(f"unknown scenario kind {kind!r}")


def _record(kind: str, response: Any, samples: Samples) -> None:
    if kind == "create":
        samples.created.append((response.location_id, response.resource_id))
    elif kind in ("list", "filtered_list", "search"):
        samples.items.append(len(response.resources))


def run_sequential(kind: str, workload: Workload, count: int, offset: int = 0) -> Samples:
    """``count`` requests one after the other; each latency is one full round trip through the stub."""
    samples = Samples()
    calls = [_call(kind, workload, offset + i) for i in range(count)]
    run_started = time.perf_counter()
    for call in calls:
        started = time.perf_counter()
        try:
            response = call()
        except grpc.RpcError as exc:
            _error(samples, exc)
            continue
        samples.latencies_ms.append((time.perf_counter() - started) * 1000.0)
        _record(kind, response, samples)
    samples.elapsed_s = time.perf_counter() - run_started
    return samples


def run_concurrent(kind: str, workload: Workload, threads: int, duration_s: float) -> Samples:
    """``threads`` client threads sharing the channel, each calling back to back for ``duration_s``."""
    per_thread = [Samples() for _ in range(threads)]
    start = threading.Barrier(threads + 1)
    stop_at: list[float] = []

    def worker(index: int) -> None:
        samples = per_thread[index]
        start.wait()
        i = index
        while time.perf_counter() < stop_at[0]:
            call = _call(kind, workload, i)
            i += threads
            started = time.perf_counter()
            try:
                response = call()
            except grpc.RpcError as exc:
                _error(samples, exc)
                continue
            samples.latencies_ms.append((time.perf_counter() - started) * 1000.0)
            _record(kind, response, samples)

    pool = [threading.Thread(target=worker, args=(n,), name=f"bench-client-{n}") for n in range(threads)]
    for thread in pool:
        thread.start()
    run_started = time.perf_counter()
    stop_at.append(run_started + duration_s)
    start.wait()
    for thread in pool:
        thread.join()
    merged = Samples(elapsed_s=time.perf_counter() - run_started)
    errors: Counter[str] = Counter()
    for samples in per_thread:
        merged.latencies_ms.extend(samples.latencies_ms)
        merged.created.extend(samples.created)
        merged.items.extend(samples.items)
        errors.update(samples.errors)
        merged.first_error = merged.first_error or samples.first_error
    merged.errors = dict(errors)
    return merged


def _error(samples: Samples, exc: grpc.RpcError) -> None:
    code = exc.code().name if isinstance(exc, grpc.Call) else "UNKNOWN"
    samples.errors[code] = samples.errors.get(code, 0) + 1
    if not samples.first_error:
        details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        samples.first_error = f"{code}: {details}"
