"""CitrusClient against a scripted local HTTP server: retries, timeouts, deadline, errors, keep-alive."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from simplu_grpc import context
from simplu_grpc.adapters.citrus.client import CitrusClient
from simplu_grpc.errors import CitrusUnavailable
from simplu_grpc.metrics import Metrics
from tests.fixtures.scripted_http import ScriptedHTTPServer, serve

API_KEY = "citrus-unit-key-0123456789"
SECRET_DSN = "postgresql://postgres:s3cret-pw@127.0.0.1:5432/shard_01"
SHARD = {
    "shardId": "shard-01",
    "connectionString": SECRET_DSN,
    "isActive": True,
    "lastHealthCheck": "2026-11-23T10:00:00Z",
    "businessCount": 1,
    "maxBusinesses": 3,
}


@pytest.fixture
def fake() -> Iterator[ScriptedHTTPServer]:
    yield from serve(ScriptedHTTPServer((200, SHARD)))


def make_client(
    fake: ScriptedHTTPServer,
    *,
    attempts: int = 3,
    timeout_ms: int = 2000,
    metrics: Metrics | None = None,
    sleeps: list[float] | None = None,
) -> CitrusClient:
    host, port = fake.server_address[:2]
    recorded = sleeps if sleeps is not None else []
    return CitrusClient(
        base_url=f"http://{host!s}:{port}",
        api_key=API_KEY,
        timeout_ms=timeout_ms,
        retry_attempts=attempts,
        metrics=metrics or Metrics(),
        sleep=recorded.append,
    )


def test_register_sends_the_documented_request(fake: ScriptedHTTPServer) -> None:
    """POST /api/register with the bearer key, lowercase type and shardKey "{b}-{l}"; parses the answer."""
    client = make_client(fake)
    assignment = client.register("biz1", "loc-1", "DENTAL")
    request = fake.requests[0]
    assert request["method"] == "POST"
    assert request["path"] == "/api/register"
    assert request["auth"] == f"Bearer {API_KEY}"
    assert request["body"] == {
        "businessId": "biz1",
        "locationId": "loc-1",
        "businessType": "dental",
        "shardKey": "biz1-loc-1",
    }
    assert assignment.shard_id == "shard-01"
    assert assignment.connection_string == SECRET_DSN
    assert assignment.max_businesses == 3
    assert assignment.last_health_check is not None
    assert SECRET_DSN not in repr(assignment)


def test_get_shard_url_encodes_the_key_and_404_is_none(fake: ScriptedHTTPServer) -> None:
    """The key is URL-encoded in the path; 404 means "not registered" (None), not an error, no retry."""
    fake.set((404, {"error": "not_found"}))
    sleeps: list[float] = []
    assert make_client(fake, sleeps=sleeps).get_shard("b1", "a/b:c d") is None
    assert fake.requests[0]["path"] == "/api/shard/b1-a%2Fb%3Ac%20d"
    assert len(fake.requests) == 1
    assert sleeps == []


def test_transient_errors_are_retried_then_succeed(fake: ScriptedHTTPServer) -> None:
    """503 then 429 then 200: three attempts, two backoff sleeps through the injected sleep."""
    fake.set((503, {}), (429, {}), (200, SHARD))
    sleeps: list[float] = []
    metrics = Metrics()
    assert make_client(fake, sleeps=sleeps, metrics=metrics).get_shard("b1", "l1") is not None
    assert len(fake.requests) == 3
    assert len(sleeps) == 2
    assert all(0 <= s <= 2.0 for s in sleeps)
    sample = metrics.registry.get_sample_value
    assert (
        sample(
            "simplu_dependency_calls_total",
            {"dependency": "citrus", "operation": "get_shard", "outcome": "ok"},
        )
        == 1
    )
    assert (
        sample(
            "simplu_dependency_calls_total",
            {"dependency": "citrus", "operation": "get_shard", "outcome": "http_5xx"},
        )
        == 1
    )


def test_attempts_are_bounded(fake: ScriptedHTTPServer) -> None:
    """Always 500: exactly retry_attempts requests, then CitrusUnavailable."""
    fake.set((500, {}))
    with pytest.raises(CitrusUnavailable) as raised:
        make_client(fake, attempts=4).shards_health()
    assert len(fake.requests) == 4
    assert raised.value.reason == "CITRUS_UNAVAILABLE"


def test_client_errors_are_not_retried(fake: ScriptedHTTPServer) -> None:
    """400 is not transient: one request."""
    fake.set((400, {"error": "bad_request"}))
    with pytest.raises(CitrusUnavailable):
        make_client(fake).register("b", "l", "gym")
    assert len(fake.requests) == 1


def test_refused_key_says_so_without_the_key(
    fake: ScriptedHTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    """401: CITRUS_UNAVAILABLE saying the API key was refused; the key appears in no message or log."""
    fake.set((401, {"error": "unauthorized"}))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(CitrusUnavailable) as raised:
        make_client(fake).get_shard("b", "l")
    assert "API key" in raised.value.message
    assert API_KEY not in raised.value.message
    assert API_KEY not in caplog.text
    assert len(fake.requests) == 1


def test_malformed_answer(fake: ScriptedHTTPServer) -> None:
    """A 200 whose body is not the documented JSON is CITRUS_UNAVAILABLE and never echoed."""
    fake.set((200, b"<html>" + SECRET_DSN.encode()))
    with pytest.raises(CitrusUnavailable) as raised:
        make_client(fake).get_shard("b", "l")
    assert SECRET_DSN not in raised.value.message
    fake.set((200, {"shardId": 7}))
    with pytest.raises(CitrusUnavailable):
        make_client(fake).get_shard("b", "l")


def test_connection_refused_is_retried_and_reported() -> None:
    """Nobody listening: every attempt fails to connect; the error says Citrus is unreachable."""
    sleeps: list[float] = []
    client = CitrusClient(
        base_url="http://127.0.0.1:1",
        api_key=API_KEY,
        timeout_ms=500,
        retry_attempts=3,
        metrics=Metrics(),
        sleep=sleeps.append,
    )
    with pytest.raises(CitrusUnavailable) as raised:
        client.get_shard("b", "l")
    assert "unreachable" in raised.value.message
    assert len(sleeps) == 2


def test_read_timeout_per_attempt(fake: ScriptedHTTPServer) -> None:
    """An answer slower than CITRUS_TIMEOUT is a timeout, retried like any transient failure."""
    fake.set((200, SHARD, 0.5), (200, SHARD))
    started = time.monotonic()
    assert make_client(fake, timeout_ms=150).get_shard("b", "l") is not None
    assert len(fake.requests) == 2
    assert time.monotonic() - started < 1.0


def test_never_beyond_the_rpc_deadline(fake: ScriptedHTTPServer) -> None:
    """With 10 attempts of 1 s each allowed, a 0.4 s deadline still ends the call in about 0.4 s."""
    fake.set((200, SHARD, 1.0))
    client = CitrusClient(
        base_url="http://{}:{}".format(*fake.server_address[:2]),
        api_key=API_KEY,
        timeout_ms=1000,
        retry_attempts=10,
        metrics=Metrics(),
    )
    started = time.monotonic()
    with context.bind(deadline=context.Deadline.after(0.4)), pytest.raises(CitrusUnavailable):
        client.get_shard("b", "l")
    assert time.monotonic() - started < 0.8


def test_connections_are_kept_alive(fake: ScriptedHTTPServer) -> None:
    """Several calls reuse one TCP connection (keep-alive)."""
    client = make_client(fake)
    for _ in range(5):
        client.get_shard("b", "l")
    assert len({r["peer"] for r in fake.requests}) == 1
    client.close()


def test_capacity_and_health_parsing(fake: ScriptedHTTPServer) -> None:
    """capacity() parses canAcceptNewBusiness (404 -> None); shards_health() parses a list."""
    fake.set(
        (200, {"canAcceptNewBusiness": False, "businessCount": 3, "maxBusinesses": 3, "shardId": "shard-01"})
    )
    info = make_client(fake).capacity("shard/01")
    assert info is not None
    assert not info.can_accept_new_business
    assert info.business_count == 3
    assert fake.requests[-1]["path"] == "/api/shard/shard%2F01/capacity"
    fake.set((404, {}))
    assert make_client(fake).capacity("nope") is None
    fake.set((200, [SHARD, {**SHARD, "shardId": "shard-02", "isActive": False}]))
    shards = make_client(fake).shards_health()
    assert [s.shard_id for s in shards] == ["shard-01", "shard-02"]
    assert not shards[1].is_active


@pytest.mark.parametrize(
    "body",
    [
        {**SHARD, "connectionString": ""},
        {key: value for key, value in SHARD.items() if key != "connectionString"},
        {**SHARD, "isActive": "false"},
        {key: value for key, value in SHARD.items() if key != "isActive"},
        {**SHARD, "isActive": None},
        {**SHARD, "shardId": ""},
        [SHARD],
        b"[" * 100_000,
        b"\xff\xfe not utf-8",
    ],
)
def test_malformed_routing_answers_are_citrus_unavailable_without_the_body(
    fake: ScriptedHTTPServer, body: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A shard answer without a usable connection string, with a non-boolean isActive, or not even
    JSON is CITRUS_UNAVAILABLE (never a guessed shard, never INTERNAL); the body is not echoed."""
    fake.set((200, body))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(CitrusUnavailable) as raised:
        make_client(fake).get_shard("b", "l")
    assert "malformed" in raised.value.message
    assert SECRET_DSN not in raised.value.message
    assert SECRET_DSN not in caplog.text
    assert API_KEY not in caplog.text


def test_health_may_omit_connection_strings(fake: ScriptedHTTPServer) -> None:
    """shards/health without connection strings still lists the shards (only counts are needed)."""
    fake.set((200, [{key: value for key, value in SHARD.items() if key != "connectionString"}]))
    [shard] = make_client(fake).shards_health()
    assert (shard.shard_id, shard.connection_string, shard.business_count) == ("shard-01", "", 1)


def test_missing_or_non_integer_counts_are_unknown_not_zero(fake: ScriptedHTTPServer) -> None:
    """businessCount / maxBusinesses Citrus did not give (or gave as non-integers) are None, not 0."""
    without = {key: value for key, value in SHARD.items() if key not in ("businessCount", "maxBusinesses")}
    fake.set((200, without))
    assignment = make_client(fake).get_shard("b", "l")
    assert assignment is not None
    assert (assignment.business_count, assignment.max_businesses) == (None, None)
    fake.set((200, [{**SHARD, "businessCount": "3", "maxBusinesses": True}]))
    [shard] = make_client(fake).shards_health()
    assert (shard.business_count, shard.max_businesses) == (None, None)


def test_register_without_is_active_is_malformed(fake: ScriptedHTTPServer) -> None:
    """A register answer without isActive is CITRUS_UNAVAILABLE, not an assumed-active shard."""
    fake.set((200, {key: value for key, value in SHARD.items() if key != "isActive"}))
    with pytest.raises(CitrusUnavailable) as raised:
        make_client(fake).register("b", "l", "dental")
    assert "malformed" in raised.value.message
    assert SECRET_DSN not in raised.value.message


@pytest.mark.parametrize("status", [400, 403, 409, 422])
def test_other_client_errors_are_clear_and_not_retried(fake: ScriptedHTTPServer, status: int) -> None:
    """4xx other than 404/429: one attempt, CITRUS_UNAVAILABLE naming the status, never the body."""
    fake.set((status, {"error": SECRET_DSN}))
    sleeps: list[float] = []
    with pytest.raises(CitrusUnavailable) as raised:
        make_client(fake, sleeps=sleeps).register("b", "l", "dental")
    assert len(fake.requests) == 1
    assert sleeps == []
    assert str(status) in raised.value.message
    assert SECRET_DSN not in raised.value.message
    assert API_KEY not in raised.value.message


def test_a_dripping_answer_is_cut_at_the_attempt_timeout() -> None:
    """A server that sends its answer one byte at a time cannot stretch an attempt past CITRUS_TIMEOUT."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stop = threading.Event()

    def drip() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"
                try:
                    conn.sendall(head)
                    while not stop.wait(0.05):
                        conn.sendall(b" ")
                except OSError:
                    continue

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    client = CitrusClient(
        base_url=f"http://127.0.0.1:{listener.getsockname()[1]}",
        api_key=API_KEY,
        timeout_ms=300,
        retry_attempts=1,
        metrics=Metrics(),
    )
    started = time.monotonic()
    try:
        with pytest.raises(CitrusUnavailable):
            client.get_shard("b", "l")
        assert time.monotonic() - started < 1.5
    finally:
        stop.set()
        listener.close()
        client.close()


def test_probe_is_one_light_authenticated_call(fake: ScriptedHTTPServer) -> None:
    """probe(): a single capacity lookup (404 is "up"), never shards/health; a refused key is down."""
    fake.set((404, {}))
    make_client(fake).probe()
    assert [(r["method"], r["path"], r["auth"]) for r in fake.requests] == [
        ("GET", "/api/shard/simplu-readiness-probe/capacity", f"Bearer {API_KEY}")
    ]
    fake.set((401, {}))
    with pytest.raises(CitrusUnavailable):
        make_client(fake).probe()
