"""CitrusClient against the real Citrus emulator over HTTP: every endpoint, errors and outages."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest

from simplu_grpc import context
from simplu_grpc.adapters.citrus.client import CitrusClient
from simplu_grpc.devstack.citrus_emulator import CitrusEmulator
from simplu_grpc.errors import CitrusUnavailable
from simplu_grpc.metrics import Metrics
from tests.fixtures.citrus import CITRUS_API_KEY

pytestmark = pytest.mark.integration


def client_for(emulator: CitrusEmulator, *, api_key: str = CITRUS_API_KEY, attempts: int = 3) -> CitrusClient:
    return CitrusClient(
        base_url=emulator.url,
        api_key=api_key,
        timeout_ms=2000,
        retry_attempts=attempts,
        metrics=Metrics(),
        sleep=lambda _seconds: None,
    )


def test_register_then_lookup_health_and_capacity(
    citrus: CitrusEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """register and get_shard agree; a second location joins its business's shard; health, capacity parse."""
    caplog.set_level(logging.DEBUG)
    client = client_for(citrus)
    assert client.get_shard("bizA", "loc-1") is None
    first = client.register("bizA", "loc-1", "dental")
    again = client.register("bizA", "loc-1", "dental")
    second = client.register("bizA", "loc-2", "dental")
    assert first.shard_id == again.shard_id == second.shard_id == "shard-01"
    found = client.get_shard("bizA", "loc-1")
    assert found is not None
    assert found.shard_id == "shard-01"
    assert found.connection_string.startswith("postgresql://")
    assert citrus.registrations()["bizA-loc-1"] == "shard-01"
    shards = client.shards_health()
    assert [s.shard_id for s in shards] == ["shard-01"]
    assert shards[0].is_active
    assert shards[0].business_count == 1
    capacity = client.capacity("shard-01")
    assert capacity is not None
    assert capacity.can_accept_new_business
    assert client.capacity("shard-99") is None
    assert found.connection_string not in caplog.text
    assert CITRUS_API_KEY not in caplog.text


def test_what_citrus_says_of_a_shard_is_exported_as_gauges(citrus: CitrusEmulator) -> None:
    """After a lookup, /metrics carries each shard's business count and capacity as Citrus reported
    them (the near-capacity alert reads them), updated by a health listing."""
    metrics = Metrics()
    client = CitrusClient(
        base_url=citrus.url,
        api_key=CITRUS_API_KEY,
        timeout_ms=2000,
        retry_attempts=1,
        metrics=metrics,
        sleep=lambda _seconds: None,
    )
    client.register("bizG", "loc-1", "dental")
    shard = client.get_shard("bizG", "loc-1")
    assert shard is not None
    value = metrics.registry.get_sample_value
    assert value("simplu_shard_businesses", {"shard": shard.shard_id}) == shard.business_count == 1
    assert value("simplu_shard_max_businesses", {"shard": shard.shard_id}) == shard.max_businesses
    client.register("bizH", "loc-1", "dental")
    client.shards_health()
    assert value("simplu_shard_businesses", {"shard": shard.shard_id}) == 2


def test_a_full_shard_sends_new_businesses_to_a_new_one(citrus: CitrusEmulator) -> None:
    """Capacity 3: the fourth business lands on shard-02."""
    client = client_for(citrus)
    shards = [client.register(f"biz{i}", "main", "gym").shard_id for i in range(4)]
    assert shards == ["shard-01", "shard-01", "shard-01", "shard-02"]
    capacity = client.capacity("shard-01")
    assert capacity is not None
    assert not capacity.can_accept_new_business


def test_wrong_key_is_reported_without_the_key(citrus: CitrusEmulator) -> None:
    """The emulator answers 401: CITRUS_UNAVAILABLE naming the refused key, not showing it."""
    with pytest.raises(CitrusUnavailable) as raised:
        client_for(citrus, api_key="wrong-key-123").get_shard("b", "l")
    assert "API key" in raised.value.message
    assert "wrong-key-123" not in raised.value.message


def test_failing_citrus_is_retried_up_to_the_limit(citrus: CitrusEmulator) -> None:
    """503 from every call: exactly CITRUS_RETRY_ATTEMPTS requests reach the emulator."""
    citrus.fail_with(503)
    citrus.reset_calls()
    with pytest.raises(CitrusUnavailable):
        client_for(citrus, attempts=3).register("b", "l", "hotel")
    assert citrus.calls["register"] == 3
    citrus.heal()
    assert client_for(citrus).register("b", "l", "hotel").shard_id == "shard-01"


def test_stopped_citrus_fails_fast_and_recovers(make_citrus: Callable[..., CitrusEmulator]) -> None:
    """Stopped: CITRUS_UNAVAILABLE quickly (connection refused); started again: the same client works."""
    emulator = make_citrus()
    client = client_for(emulator)
    client.register("kept", "l1", "gym")
    emulator.stop()
    started = time.monotonic()
    with context.bind(deadline=context.Deadline.after(3)), pytest.raises(CitrusUnavailable):
        client.get_shard("kept", "l1")
    assert time.monotonic() - started < 3
    emulator.start()
    found = client.get_shard("kept", "l1")
    assert found is not None
    assert found.shard_id == "shard-01"


def test_slow_citrus_is_cut_at_the_deadline(citrus: CitrusEmulator) -> None:
    """An emulator delaying 2 s, a 0.5 s deadline: the call ends near 0.5 s, never waiting it out."""
    citrus.set_delay(2.0)
    client = CitrusClient(
        base_url=citrus.url, api_key=CITRUS_API_KEY, timeout_ms=5000, retry_attempts=5, metrics=Metrics()
    )
    started = time.monotonic()
    with context.bind(deadline=context.Deadline.after(0.5)), pytest.raises(CitrusUnavailable):
        client.shards_health()
    assert time.monotonic() - started < 1.0
    citrus.heal()
