"""CitrusDirectory: lookup never registers; registering tells business info (best effort).

Register-on-miss itself is the routing cache's (tests/unit/test_routing_cache.py)."""

from __future__ import annotations

import pytest

from simplu_grpc.adapters.citrus.shard_directory import CitrusDirectory
from simplu_grpc.domain.placement.shards import ShardAssignment
from simplu_grpc.errors import BusinessStoreUnavailable

SHARD = ShardAssignment(shard_id="shard-01", connection_string="postgresql://u:p@h/db", is_active=True)


class _Citrus:
    def __init__(self, known: bool) -> None:
        self.known = known
        self.registered: list[tuple[str, str, str]] = []

    def get_shard(self, business_id: str, location_id: str) -> ShardAssignment | None:
        return SHARD if self.known else None

    def register(self, business_id: str, location_id: str, business_type: str) -> ShardAssignment:
        self.registered.append((business_id, location_id, business_type))
        return SHARD


def test_a_known_location_is_not_registered_again() -> None:
    """A location Citrus knows is routed without registering it or touching business info."""
    citrus, noted = _Citrus(known=True), []
    directory = CitrusDirectory(citrus, on_registered=lambda b, loc: noted.append((b, loc)))
    assert directory.get_shard("acme", "main") is SHARD
    assert citrus.registered == []
    assert noted == []


def test_lookup_of_an_unknown_location_registers_nothing() -> None:
    """A 404 at Citrus is None: lookup is not registration (the caller decides to register)."""
    citrus, noted = _Citrus(known=False), []
    directory = CitrusDirectory(citrus, on_registered=lambda b, loc: noted.append((b, loc)))
    assert directory.get_shard("acme", "main") is None
    assert citrus.registered == []
    assert noted == []


def test_an_unknown_location_is_registered_and_recorded() -> None:
    """Registering sends the lowercase type to Citrus and reports the registration to business info."""
    citrus, noted = _Citrus(known=False), []
    directory = CitrusDirectory(citrus, on_registered=lambda b, loc: noted.append((b, loc)))
    assert directory.register("acme", "main", "DENTAL") is SHARD
    assert citrus.registered == [("acme", "main", "dental")]
    assert noted == [("acme", "main")]


def test_failing_bookkeeping_does_not_fail_the_route(caplog: pytest.LogCaptureFixture) -> None:
    """When recording the registration fails, the request still gets its shard and the failure is logged."""

    def fail(business_id: str, location_id: str) -> None:
        raise BusinessStoreUnavailable("dynamodb down")

    directory = CitrusDirectory(_Citrus(known=False), on_registered=fail)
    assert directory.register("acme", "main", "GYM") is SHARD
    assert "could not record it" in caplog.text
    assert "u:p@" not in caplog.text
