"""The Citrus emulator speaks DESIGN §5 over real HTTP: keys, status codes, capacity, health, controls."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote

import psycopg
import pytest

from simplu_grpc.devstack.citrus_emulator import CitrusEmulator
from simplu_grpc.devstack.postgres import PgServer
from tests.fixtures.citrus import CITRUS_API_KEY
from tests.fixtures.faultproxy import FaultProxy

pytestmark = pytest.mark.integration

RESPONSE_FIELDS = {
    "shardId",
    "connectionString",
    "isActive",
    "lastHealthCheck",
    "businessCount",
    "maxBusinesses",
}


def call(
    emulator: CitrusEmulator,
    method: str,
    path: str,
    body: Any = None,
    *,
    key: str | None = CITRUS_API_KEY,
    raw_body: bytes | None = None,
    timeout: float = 10.0,
) -> tuple[int, Any, http.client.HTTPResponse]:
    """One HTTP request on a new connection; returns (status, decoded JSON, response)."""
    conn = http.client.HTTPConnection(emulator.host, emulator.port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        data = raw_body if raw_body is not None else (json.dumps(body).encode() if body is not None else None)
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        payload = json.loads(resp.read() or b"null")
        return resp.status, payload, resp
    finally:
        conn.close()


def register(emulator: CitrusEmulator, business: str, location: str, btype: str = "dental") -> dict[str, Any]:
    status, body, _ = call(
        emulator,
        "POST",
        "/api/register",
        {
            "businessId": business,
            "locationId": location,
            "businessType": btype,
            "shardKey": f"{business}-{location}",
        },
    )
    assert status == 200, body
    return dict(body)


def reuse(conn: http.client.HTTPConnection, path: str, headers: dict[str, str]) -> bytes:
    """Another request on an already open (kept-alive) connection."""
    conn.request("GET", path, headers=headers)
    return conn.getresponse().read()


def shard_path(key: str) -> str:
    return "/api/shard/" + quote(key, safe="")


def test_every_endpoint_answers_401_without_or_with_a_wrong_key(citrus: CitrusEmulator) -> None:
    """No Authorization header, a wrong key, or a non-Bearer scheme -> 401 JSON error on every endpoint."""
    register(citrus, "b1", "l1")
    endpoints = [
        ("GET", shard_path("b1-l1"), None),
        (
            "POST",
            "/api/register",
            {"businessId": "b2", "locationId": "l", "businessType": "gym", "shardKey": "b2-l"},
        ),
        ("GET", "/api/shards/health", None),
        ("GET", "/api/shard/shard-01/capacity", None),
        ("GET", "/_control/registrations", None),
        ("POST", "/_control/set_active", {"shardId": "shard-01", "isActive": False}),
    ]
    for method, path, body in endpoints:
        for key in (None, "wrong-key", CITRUS_API_KEY + "x", ""):
            status, payload, resp = call(citrus, method, path, body, key=key)
            assert status == 401, (method, path, key)
            assert payload["error"] == "unauthorized"
            assert resp.getheader("WWW-Authenticate", "").startswith("Bearer")
            assert CITRUS_API_KEY not in json.dumps(payload)
    conn = http.client.HTTPConnection(citrus.host, citrus.port, timeout=5)
    try:
        conn.request("GET", "/api/shards/health", headers={"Authorization": f"Basic {CITRUS_API_KEY}"})
        assert conn.getresponse().status == 401
    finally:
        conn.close()
    # The rejected calls changed nothing.
    assert citrus.registrations() == {"b1-l1": "shard-01"}
    assert citrus.shard("shard-01").enabled


def test_register_answers_a_shard_response_whose_database_really_exists(citrus: CitrusEmulator) -> None:
    """POST /api/register -> a full CitrusShardResponse; its connection string opens the database."""
    body = register(citrus, "acme", "main")
    assert set(body) == RESPONSE_FIELDS
    assert body["shardId"] == "shard-01"
    assert body["isActive"] is True
    assert body["businessCount"] == 1
    assert body["maxBusinesses"] == 3
    assert datetime.fromisoformat(body["lastHealthCheck"]).tzinfo is not None
    # User and a password are in the string, so the service's redaction has something to hide.
    assert f":{citrus.shard_password}@" in body["connectionString"]
    with psycopg.connect(body["connectionString"], connect_timeout=5) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (citrus.shard("shard-01").database,)


def test_get_shard_finds_registered_keys_and_404s_unknown_ones(citrus: CitrusEmulator) -> None:
    """GET /api/shard/{key} answers the registration; an unregistered key -> 404 with a JSON error."""
    registered = register(citrus, "acme", "main")
    status, body, _ = call(citrus, "GET", shard_path("acme-main"))
    assert status == 200
    assert body == registered
    for key in ("acme-other", "nobody-main", "acme"):
        status, body, _ = call(citrus, "GET", shard_path(key))
        assert status == 404, key
        assert body["error"] == "not_found"
    status, _, _ = call(citrus, "GET", "/api/nothing-here")
    assert status == 404
    status, _, _ = call(citrus, "POST", shard_path("acme-main"), {})
    assert status == 405


def test_keys_are_url_decoded_and_an_encoded_slash_stays_inside_the_key(citrus: CitrusEmulator) -> None:
    """Keys with '-', ':', '.', '/' and '%' in the location id round-trip when URL-encoded."""
    odd = [("acme.co:1", "loc-a"), ("acme.co:1", "main/2"), ("b_2", "x%y"), ("b_2", "a:b.c")]
    for business, location in odd:
        register(citrus, business, location)
    for business, location in odd:
        status, body, _ = call(citrus, "GET", shard_path(f"{business}-{location}"))
        assert status == 200, (business, location)
        assert body["shardId"] == "shard-01"
    # Unencoded, "main/2" is two path segments: no such endpoint.
    status, _, _ = call(citrus, "GET", "/api/shard/acme.co:1-main/2")
    assert status == 404
    assert set(citrus.registrations()) == {f"{b}-{loc}" for b, loc in odd}


def test_register_is_idempotent_for_the_same_key(citrus: CitrusEmulator) -> None:
    """Registering the same business+location again answers the same shard and counts the business once."""
    first = register(citrus, "acme", "main")
    again = register(citrus, "acme", "main")
    assert again["shardId"] == first["shardId"]
    assert again["businessCount"] == 1
    assert citrus.registrations() == {"acme-main": "shard-01"}


def test_fourth_business_goes_to_a_new_shard_with_a_new_empty_database(
    citrus: CitrusEmulator, pg: PgServer
) -> None:
    """3 businesses fill shard-01; the 4th gets shard-02 on a newly created, empty database."""
    for i in range(3):
        assert register(citrus, f"biz{i}", "l1")["shardId"] == "shard-01"
    # More locations of a registered business follow the business and do not count again.
    assert register(citrus, "biz0", "l2") == {**register(citrus, "biz0", "l1")}
    assert citrus.shard("shard-01").businesses == {"biz0", "biz1", "biz2"}
    assert pg.list_databases(citrus.db_prefix) == [f"{citrus.db_prefix}_shard_01"]

    fourth = register(citrus, "biz3", "l1")
    assert fourth["shardId"] == "shard-02"
    assert fourth["businessCount"] == 1
    new_db = f"{citrus.db_prefix}_shard_02"
    assert pg.list_databases(citrus.db_prefix) == [f"{citrus.db_prefix}_shard_01", new_db]
    with psycopg.connect(fourth["connectionString"], connect_timeout=5) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (new_db,)
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
        assert tables == (0,)
    # ...and the business's other locations land there too.
    assert register(citrus, "biz3", "l2")["shardId"] == "shard-02"


def test_concurrent_registrations_never_overfill_a_shard(citrus: CitrusEmulator) -> None:
    """20 businesses registering at once end up 3 per shard on exactly 7 shards."""
    results: dict[str, str] = {}
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            results[f"c{i}"] = register(citrus, f"c{i}", "l")["shardId"]
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    per_shard: dict[str, int] = {}
    for shard_id in results.values():
        per_shard[shard_id] = per_shard.get(shard_id, 0) + 1
    assert len(per_shard) == 7
    assert max(per_shard.values()) == 3
    assert sum(per_shard.values()) == 20


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not an object"),
        (b"{}", "missing fields"),
        (
            json.dumps(
                {"businessId": "b", "locationId": "l", "businessType": "bakery", "shardKey": "b-l"}
            ).encode(),
            "type",
        ),
        (
            json.dumps(
                {"businessId": "b", "locationId": "l", "businessType": "DENTAL", "shardKey": "b-l"}
            ).encode(),
            "case",
        ),
        (
            json.dumps(
                {"businessId": "b", "locationId": "l", "businessType": "gym", "shardKey": "x-l"}
            ).encode(),
            "key",
        ),
        (
            json.dumps(
                {"businessId": "b-c", "locationId": "l", "businessType": "gym", "shardKey": "b-c-l"}
            ).encode(),
            "dash",
        ),
        (
            json.dumps(
                {"businessId": 7, "locationId": "l", "businessType": "gym", "shardKey": "7-l"}
            ).encode(),
            "int",
        ),
        (
            json.dumps(
                {"businessId": "b" * 65, "locationId": "l", "businessType": "gym", "shardKey": "x"}
            ).encode(),
            "long",
        ),
        (
            json.dumps(
                {"businessId": "b\n", "locationId": "l", "businessType": "gym", "shardKey": "b\n-l"}
            ).encode(),
            "ctl",
        ),
    ],
)
def test_bad_register_bodies_answer_400_and_register_nothing(
    module_citrus: CitrusEmulator, raw: bytes, why: str
) -> None:
    """A malformed register body -> 400 with a JSON error; no registration is made."""
    before = module_citrus.registrations()
    status, body, _ = call(module_citrus, "POST", "/api/register", raw_body=raw)
    assert status == 400, why
    assert body["error"] == "bad_request"
    assert module_citrus.registrations() == before


def test_health_really_connects_and_reflects_a_stopped_shard(
    citrus: CitrusEmulator, fault_proxy: Callable[[str, int], FaultProxy]
) -> None:
    """A shard whose server refuses connections shows isActive false after a health call; healed -> true."""
    shard = citrus.shard("shard-01")
    proxy = fault_proxy(citrus.pg.host, citrus.pg.port)
    citrus.move_shard("shard-01", proxy.dsn(shard.connection_string))

    status, body, _ = call(citrus, "GET", "/api/shards/health")
    assert status == 200
    assert [s["shardId"] for s in body] == ["shard-01"]
    assert set(body[0]) == RESPONSE_FIELDS
    assert body[0]["isActive"] is True
    assert proxy.accepted >= 1  # the check really went through to the database
    first_check = datetime.fromisoformat(body[0]["lastHealthCheck"])

    proxy.refuse()
    status, body, _ = call(citrus, "GET", "/api/shards/health")
    assert body[0]["isActive"] is False
    assert datetime.fromisoformat(body[0]["lastHealthCheck"]) > first_check
    # The other endpoints report the recorded state.
    assert call(citrus, "GET", "/api/shard/shard-01/capacity")[1]["canAcceptNewBusiness"] is False

    proxy.heal()
    status, body, _ = call(citrus, "GET", "/api/shards/health")
    assert body[0]["isActive"] is True


def test_health_answers_promptly_with_a_blackholed_shard(
    citrus: CitrusEmulator, fault_proxy: Callable[[str, int], FaultProxy]
) -> None:
    """A shard that accepts but never answers is marked inactive within the short connect timeout."""
    register(citrus, "b1", "l")
    register(citrus, "b2", "l")
    register(citrus, "b3", "l")
    register(citrus, "b4", "l")  # shard-02
    proxy = fault_proxy(citrus.pg.host, citrus.pg.port)
    citrus.move_shard("shard-02", proxy.dsn(citrus.shard("shard-02").connection_string))
    proxy.blackhole()
    started = time.monotonic()
    status, body, _ = call(citrus, "GET", "/api/shards/health")
    elapsed = time.monotonic() - started
    assert status == 200
    assert {s["shardId"]: s["isActive"] for s in body} == {"shard-01": True, "shard-02": False}
    assert elapsed < 6


def test_set_active_marks_a_shard_inactive_and_stops_new_businesses(citrus: CitrusEmulator) -> None:
    """An inactive shard reports isActive false (even if healthy), cannot accept, gets no new business."""
    register(citrus, "b1", "l")
    citrus.set_active("shard-01", False)
    _, health, _ = call(citrus, "GET", "/api/shards/health")
    assert health[0]["isActive"] is False
    assert call(citrus, "GET", shard_path("b1-l"))[1]["isActive"] is False
    assert call(citrus, "GET", "/api/shard/shard-01/capacity")[1]["canAcceptNewBusiness"] is False
    # Existing businesses stay where they are; a new one goes to a new shard.
    assert register(citrus, "b1", "l2")["shardId"] == "shard-01"
    assert register(citrus, "b2", "l")["shardId"] == "shard-02"
    citrus.set_active("shard-01", True)
    assert call(citrus, "GET", shard_path("b1-l"))[1]["isActive"] is True


def test_capacity_reports_room_until_the_shard_is_full_and_404s_unknown_shards(
    citrus: CitrusEmulator,
) -> None:
    """GET /api/shard/{id}/capacity: true below 3 businesses, false at 3; unknown id -> 404."""
    for i in range(3):
        status, body, _ = call(citrus, "GET", "/api/shard/shard-01/capacity")
        assert status == 200
        assert body == {
            "shardId": "shard-01",
            "canAcceptNewBusiness": True,
            "businessCount": i,
            "maxBusinesses": 3,
        }
        register(citrus, f"b{i}", "l")
    _, body, _ = call(citrus, "GET", "/api/shard/shard-01/capacity")
    assert body["canAcceptNewBusiness"] is False
    assert body["businessCount"] == 3
    for unknown in ("shard-99", "shard-01/x", "shard 01"):
        status, body, _ = call(citrus, "GET", f"/api/shard/{quote(unknown, safe='')}/capacity")
        assert status == 404, unknown
        assert body["error"] == "not_found"
    # An encoded id is decoded before lookup.
    assert call(citrus, "GET", "/api/shard/shard%2D01/capacity")[0] == 200


def test_calls_are_counted_per_endpoint_kind_and_reset(citrus: CitrusEmulator) -> None:
    """Each API call (even a rejected one) counts under its kind; control calls do not; reset zeroes."""
    assert citrus.calls == {
        "get_shard": 0,
        "register": 0,
        "health": 0,
        "capacity": 0,
        "unregister": 0,
        "place": 0,
    }
    register(citrus, "b", "l")
    call(citrus, "GET", shard_path("b-l"))
    call(citrus, "GET", shard_path("nobody-l"))
    call(citrus, "GET", shard_path("b-l"), key="wrong")
    call(citrus, "GET", "/api/shards/health")
    call(citrus, "GET", "/api/shard/shard-01/capacity")
    call(citrus, "GET", "/_control/calls")
    assert citrus.calls == {
        "get_shard": 3,
        "register": 1,
        "health": 1,
        "capacity": 1,
        "unregister": 0,
        "place": 0,
    }
    assert call(citrus, "GET", "/_control/calls")[1] == citrus.calls
    assert call(citrus, "POST", "/_control/reset_calls")[0] == 200
    assert citrus.calls == {
        "get_shard": 0,
        "register": 0,
        "health": 0,
        "capacity": 0,
        "unregister": 0,
        "place": 0,
    }
    citrus.reset_calls()


def test_unregister_removes_a_registration_and_the_business_leaves_its_shard_with_its_last_one(
    citrus: CitrusEmulator,
) -> None:
    """DELETE /api/shard/{key} (beyond DESIGN §5, which the purge assumes): 200 and the key is
    unknown after; the shard counts the business until its last location goes; 404 for an
    unknown key; 405 when the emulator plays a Citrus without it."""
    register(citrus, "gone", "a")
    register(citrus, "gone", "b")
    shard_id = citrus.registrations()["gone-a"]
    count = lambda: call(citrus, "GET", f"/api/shard/{shard_id}/capacity")[1]["businessCount"]  # noqa: E731
    before = count()
    status, body, _ = call(citrus, "DELETE", shard_path("gone-a"))
    assert (status, body) == (200, {"removed": True, "shardId": shard_id})
    assert call(citrus, "GET", shard_path("gone-a"))[0] == 404
    assert count() == before
    assert call(citrus, "DELETE", shard_path("gone-b"))[0] == 200
    assert count() == before - 1
    assert call(citrus, "DELETE", shard_path("gone-b"))[0] == 404
    register(citrus, "kept", "a")
    citrus.offer_unregister(False)
    try:
        assert call(citrus, "DELETE", shard_path("kept-a"))[0] == 405
        assert call(citrus, "GET", shard_path("kept-a"))[0] == 200
    finally:
        citrus.offer_unregister(True)


def test_http_controls_move_shards_toggle_activity_and_list_registrations(
    citrus: CitrusEmulator, pg: PgServer
) -> None:
    """/_control/ endpoints do what the Python controls do; unknown shard -> 404, bad body -> 400."""
    register(citrus, "b", "l")
    new_cs = pg.dsn("elsewhere", password="rotated-secret")
    assert (
        call(citrus, "POST", "/_control/move_shard", {"shardId": "shard-01", "connectionString": new_cs})[0]
        == 200
    )
    assert call(citrus, "GET", shard_path("b-l"))[1]["connectionString"] == new_cs
    assert call(citrus, "POST", "/_control/set_active", {"shardId": "shard-01", "isActive": False})[0] == 200
    assert call(citrus, "GET", shard_path("b-l"))[1]["isActive"] is False
    assert call(citrus, "GET", "/_control/registrations")[1] == {"b-l": "shard-01"}
    shards = call(citrus, "GET", "/_control/shards")[1]
    assert [(s["shardId"], s["enabled"]) for s in shards] == [("shard-01", False)]
    assert (
        call(citrus, "POST", "/_control/move_shard", {"shardId": "shard-09", "connectionString": "x"})[0]
        == 404
    )
    assert call(citrus, "POST", "/_control/set_active", {"shardId": "shard-01", "isActive": "no"})[0] == 400
    assert call(citrus, "POST", "/_control/move_shard", {"shardId": "shard-01"})[0] == 400
    assert call(citrus, "POST", "/_control/nonsense", {})[0] == 404
    with pytest.raises(KeyError):
        citrus.move_shard("shard-09", "x")


def test_fail_and_delay_controls_inject_errors_and_latency(citrus: CitrusEmulator) -> None:
    """fail_with answers that status on every API call; delay slows each answer; heal undoes both."""
    register(citrus, "b", "l")
    assert call(citrus, "POST", "/_control/fail", {"status": 503})[0] == 200
    status, body, _ = call(citrus, "GET", shard_path("b-l"))
    assert (status, body["error"]) == (503, "injected_failure")
    citrus.fail_with(429)
    assert call(citrus, "GET", "/api/shards/health")[0] == 429
    assert call(citrus, "POST", "/_control/fail", {"status": 200})[0] == 400
    assert call(citrus, "POST", "/_control/heal")[0] == 200
    assert call(citrus, "GET", shard_path("b-l"))[0] == 200

    assert call(citrus, "POST", "/_control/delay", {"seconds": 0.3})[0] == 200
    started = time.monotonic()
    assert call(citrus, "GET", shard_path("b-l"))[0] == 200
    assert time.monotonic() - started >= 0.3
    citrus.heal()
    started = time.monotonic()
    assert call(citrus, "GET", shard_path("b-l"))[0] == 200
    assert time.monotonic() - started < 0.3


def test_stop_refuses_connections_and_restart_keeps_port_and_state(citrus: CitrusEmulator) -> None:
    """Stopped: new and kept-alive connections fail; start() returns on the same port with the same data."""
    register(citrus, "b", "l")
    port = citrus.port
    keepalive = http.client.HTTPConnection(citrus.host, port, timeout=5)
    headers = {"Authorization": f"Bearer {CITRUS_API_KEY}"}
    try:
        keepalive.request("GET", shard_path("b-l"), headers=headers)
        assert keepalive.getresponse().read()
        citrus.stop()
        with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
            reuse(keepalive, shard_path("b-l"), headers)
    finally:
        keepalive.close()
    with pytest.raises(ConnectionRefusedError):
        call(citrus, "GET", shard_path("b-l"))

    citrus.start()
    assert citrus.port == port
    status, body, _ = call(citrus, "GET", shard_path("b-l"))
    assert status == 200
    assert body["shardId"] == "shard-01"
    assert register(citrus, "b2", "l")["businessCount"] == 2
