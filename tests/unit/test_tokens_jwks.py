"""JwksClient: keys by kid, refetch on unknown kid at most once per interval, old keys kept on failure."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from simplu_grpc import context as request_context
from simplu_grpc.adapters.cognito.jwks import JWKS_UNAVAILABLE, JwksClient
from simplu_grpc.errors import DeadlineExceeded, Unavailable
from simplu_grpc.metrics import Metrics
from tests.fixtures.clock import FakeClock
from tests.fixtures.tokens import LocalIssuer

ISSUER = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_unit"


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    """A fresh local JWKS endpoint per test (tests change its keys and make it fail)."""
    local = LocalIssuer(issuer=ISSUER, client_id="unit-client")
    yield local
    local.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def jwks(issuer: LocalIssuer, clock: FakeClock, metrics: Metrics) -> Iterator[JwksClient]:
    client = JwksClient(url=issuer.jwks_url, timeout_seconds=2.0, clock=clock, metrics=metrics)
    yield client
    client.close()


def calls(metrics: Metrics, operation: str, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "simplu_dependency_calls_total",
        {"dependency": "jwks", "operation": operation, "outcome": outcome},
    )
    return value or 0.0


def test_load_caches_keys_by_kid_and_known_kids_cost_no_fetch(
    jwks: JwksClient, issuer: LocalIssuer, metrics: Metrics
) -> None:
    """After load(), a known kid is answered from memory: no further HTTP request."""
    assert jwks.load() is True
    assert issuer.fetches == 1
    assert calls(metrics, "load", "ok") == 1
    for _ in range(5):
        assert jwks.get_key(issuer.kid) is not None
    assert issuer.fetches == 1
    assert jwks.kids == frozenset({issuer.kid})


def test_unknown_kid_refetches_once_then_is_rate_limited(
    jwks: JwksClient, issuer: LocalIssuer, clock: FakeClock, metrics: Metrics
) -> None:
    """An unknown kid triggers one refetch; more unknown kids within 10 s trigger none."""
    jwks.load()
    assert jwks.get_key("nope-1") is None
    assert issuer.fetches == 2
    clock.advance(9.9)
    assert jwks.get_key("nope-2") is None
    assert jwks.get_key("nope-1") is None
    assert issuer.fetches == 2
    clock.advance(0.1)
    assert jwks.get_key("nope-3") is None
    assert issuer.fetches == 3
    assert calls(metrics, "refetch", "ok") == 2


def test_rotated_key_is_found_by_the_refetch(jwks: JwksClient, issuer: LocalIssuer) -> None:
    """A key published after load() is picked up by the refetch its first token triggers."""
    jwks.load()
    issuer.add_key("rotated")
    assert jwks.get_key("rotated") is not None
    assert issuer.fetches == 2
    assert jwks.get_key(issuer.kid) is not None


def test_concurrent_unknown_kids_make_a_single_fetch(jwks: JwksClient, issuer: LocalIssuer) -> None:
    """Twenty threads meeting a new kid at once cause exactly one fetch, and all find the key."""
    jwks.load()
    issuer.add_key("rotated")
    start = threading.Barrier(20)
    found: list[bool] = []

    def look() -> None:
        start.wait()
        found.append(jwks.get_key("rotated") is not None)

    threads = [threading.Thread(target=look) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert found == [True] * 20
    assert issuer.fetches == 2


def test_failed_refetch_keeps_the_old_keys(
    jwks: JwksClient, issuer: LocalIssuer, clock: FakeClock, metrics: Metrics
) -> None:
    """When the endpoint fails, known keys keep working, the unknown kid is an outage
    (Unavailable, not "no such key") and the failure is recorded in metrics."""
    jwks.load()
    issuer.fail(503)
    with pytest.raises(Unavailable) as caught:
        jwks.get_key("unknown")
    assert caught.value.reason == JWKS_UNAVAILABLE
    assert calls(metrics, "refetch", "http_503") == 1
    assert jwks.last_error is not None
    assert "503" in jwks.last_error
    assert jwks.get_key(issuer.kid) is not None
    issuer.heal()
    issuer.add_key("later")
    clock.advance(1)
    assert jwks.get_key("later") is not None
    assert jwks.get_key(issuer.kid) is not None
    assert jwks.last_error is None


def test_a_failed_refetch_does_not_spend_the_allowance_but_is_itself_held_back(
    jwks: JwksClient, issuer: LocalIssuer, clock: FakeClock, metrics: Metrics
) -> None:
    """After a failed refetch, calls within a second answer Unavailable without fetching (no
    stampede on a dead endpoint); a second later the next call fetches again, and once the
    endpoint is back the key is found, without waiting out the 10 s allowance."""
    jwks.load()
    issuer.fail(503)
    issuer.add_key("rotated")
    with pytest.raises(Unavailable):
        jwks.get_key("rotated")
    fetches = issuer.fetches
    clock.advance(0.5)
    with pytest.raises(Unavailable):
        jwks.get_key("rotated")
    assert issuer.fetches == fetches, "a failed fetch holds the next attempt back"
    issuer.heal()
    clock.advance(0.5)
    assert jwks.get_key("rotated") is not None
    assert issuer.fetches == fetches + 1
    # That success spends the allowance: an unknown kid right after is "no such key", no fetch.
    assert jwks.get_key("nope") is None
    assert issuer.fetches == fetches + 1


def test_the_refetch_uses_the_client_timeout_not_the_callers_tiny_deadline(
    jwks: JwksClient, issuer: LocalIssuer, metrics: Metrics
) -> None:
    """An RPC with almost no deadline left still triggers a fetch with the client's own timeout:
    the endpoint answering a little slowly is not a timeout. The RPC itself stops at its deadline;
    the fetch finishes in the background and the key is there for the next call."""
    jwks.load()
    issuer.add_key("rotated")
    original = issuer.answer

    def slow(path: str) -> tuple[int, bytes]:
        time.sleep(0.2)
        return original(path)

    issuer.answer = slow  # type: ignore[method-assign]
    with (
        request_context.bind(request_id="r", deadline=request_context.Deadline.after(0.01)),
        pytest.raises(DeadlineExceeded),
    ):
        jwks.get_key("rotated")
    deadline = time.monotonic() + 5
    while "rotated" not in jwks.kids:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert jwks.get_key("rotated") is not None
    assert calls(metrics, "refetch", "ok") == 1
    assert calls(metrics, "refetch", "timeout") == 0


def test_the_rpc_that_triggers_a_refetch_never_outlives_its_deadline(
    jwks: JwksClient, issuer: LocalIssuer
) -> None:
    """A hung JWKS endpoint (answering after 1.5 s, within the 2 s client timeout) holds the RPC that
    met a new kid only until its 0.2 s deadline (it used to wait for the whole fetch)."""
    jwks.load()
    issuer.add_key("rotated")
    original = issuer.answer
    release = threading.Event()

    def hung(path: str) -> tuple[int, bytes]:
        release.wait(1.5)
        return original(path)

    issuer.answer = hung  # type: ignore[method-assign]
    try:
        started = time.monotonic()
        with (
            request_context.bind(request_id="r", deadline=request_context.Deadline.after(0.2)),
            pytest.raises(DeadlineExceeded),
        ):
            jwks.get_key("rotated")
        assert time.monotonic() - started < 1.0
    finally:
        release.set()


def test_a_waiter_stops_waiting_for_the_fetch_lock_at_its_deadline(jwks: JwksClient) -> None:
    """While another thread holds the fetch, a caller waits at most its remaining deadline."""
    jwks.load()
    assert jwks._fetch_lock.acquire()
    try:
        started = time.monotonic()
        with (
            request_context.bind(request_id="r", deadline=request_context.Deadline.after(0.2)),
            pytest.raises(DeadlineExceeded),
        ):
            jwks.get_key("unknown")
        assert time.monotonic() - started < 2.0
    finally:
        jwks._fetch_lock.release()


@pytest.mark.parametrize(
    "case",
    [
        (b"<html>oops</html>", "not JSON"),
        (b'{"nokeys": []}', "keys"),
        (b'{"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]}', "no usable"),
        (b'{"keys": [{"kty": "RSA", "kid": "e", "use": "enc", "n": "AQAB", "e": "AQAB"}]}', "no usable"),
    ],
    ids=["html", "no-keys-list", "hmac-key", "encryption-key"],
)
def test_a_key_set_that_is_not_usable_is_refused_and_the_old_one_kept(
    jwks: JwksClient, issuer: LocalIssuer, clock: FakeClock, metrics: Metrics, case: tuple[bytes, str]
) -> None:
    """Garbage, a document without keys, HMAC or encryption-only keys never replace good keys."""
    body, what = case
    jwks.load()
    issuer.fail(200, body)
    clock.advance(10)
    with pytest.raises(Unavailable):
        jwks.get_key("other")
    assert calls(metrics, "refetch", "invalid") == 1
    assert what in (jwks.last_error or "")
    assert jwks.get_key(issuer.kid) is not None


def test_failed_load_is_tolerated_and_the_first_unknown_kid_retries(
    jwks: JwksClient, issuer: LocalIssuer
) -> None:
    """A JWKS outage at start does not stop the server; the first token loads the keys."""
    issuer.fail(500)
    assert jwks.load() is False
    assert not jwks.has_keys
    issuer.heal()
    assert jwks.get_key(issuer.kid) is not None
    assert jwks.has_keys


def test_probe_reports_health_and_outages(jwks: JwksClient, issuer: LocalIssuer) -> None:
    """probe() passes when the endpoint serves keys, raises Unavailable(JWKS_UNAVAILABLE) otherwise,
    and never touches the cached keys (it only observes)."""
    jwks.probe()
    assert not jwks.has_keys
    jwks.load()
    issuer.fail(502)
    with pytest.raises(Unavailable) as caught:
        jwks.probe()
    assert caught.value.reason == JWKS_UNAVAILABLE
    assert "502" in caught.value.message
    assert jwks.get_key(issuer.kid) is not None


def test_connection_refused_is_an_outage_not_a_crash(metrics: Metrics) -> None:
    """Nothing listening: load() returns False, probe() raises Unavailable, counted as connect_error."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = JwksClient(url=f"http://127.0.0.1:{port}/jwks.json", timeout_seconds=1.0, metrics=metrics)
    try:
        assert client.load() is False
        with pytest.raises(Unavailable):
            client.probe()
        assert calls(metrics, "load", "connect_error") == 1
    finally:
        client.close()


def test_an_endpoint_that_never_answers_times_out(metrics: Metrics) -> None:
    """A blackholed endpoint (accepts, never answers) costs at most the timeout (or the probe's)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # never accepted: the kernel completes the handshake, nobody reads
        port = listener.getsockname()[1]
        client = JwksClient(url=f"http://127.0.0.1:{port}/jwks.json", timeout_seconds=0.2, metrics=metrics)
        try:
            assert client.load() is False
            assert calls(metrics, "load", "timeout") == 1
            assert "timed out" in (client.last_error or "")
        finally:
            client.close()
        patient = JwksClient(url=f"http://127.0.0.1:{port}/jwks.json", timeout_seconds=30.0, metrics=metrics)
        try:
            started = time.monotonic()
            with pytest.raises(Unavailable, match="timed out"):
                patient.probe(timeout_seconds=0.1)
            assert time.monotonic() - started < 5.0, "probe(timeout_seconds) bounds the fetch"
        finally:
            patient.close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": "ftp://x/jwks.json", "timeout_seconds": 1.0}, "http"),
        ({"url": "http://x/jwks.json", "timeout_seconds": 0.0}, "timeout_seconds"),
        ({"url": "http://x/jwks.json", "timeout_seconds": 1.0, "min_refetch_interval": -1.0}, "interval"),
    ],
)
def test_bad_configuration_is_refused_at_construction(kwargs: dict[str, object], message: str) -> None:
    """Nonsense settings fail fast with a message naming the argument."""
    with pytest.raises(ValueError, match=message):
        JwksClient(metrics=Metrics(), **kwargs)  # type: ignore[arg-type]  # deliberately loose test input
