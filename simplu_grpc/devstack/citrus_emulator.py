"""Citrus emulator: a real HTTP server speaking the Citrus wire contract (DESIGN §5) over PostgreSQL.

Endpoints (every one needs ``Authorization: Bearer <api key>``; JSON in and out):

- ``GET  /api/shard/{businessId-locationId}`` (URL-encoded) -> CitrusShardResponse; 404 when not registered.
- ``POST /api/register`` ``{businessId, locationId, businessType, shardKey}`` -> CitrusShardResponse.
  Idempotent: the same key answers the same shard. Further locations of a registered business go
  to that business's shard. A new business goes to the first active shard with fewer than
  ``capacity`` businesses; when every shard is full a new, EMPTY database is created (the service
  applies its schema on first use).
- ``GET  /api/shards/health`` -> CitrusShardResponse[]; really connects to each shard database
  (short connect timeout, concurrently) and records the result and time.
- ``GET  /api/shard/{shardId}/capacity`` -> ``{canAcceptNewBusiness, businessCount, maxBusinesses, shardId}``.
- ``DELETE /api/shard/{businessId-locationId}`` -> ``{removed: true, shardId}``; 404 when not registered.
  NOT in DESIGN §5: the purge of a deleted business assumes a Citrus that offers it
  (``adapters.citrus.CitrusClient.unregister``); ``offer_unregister(False)`` answers 405 instead.
- ``PUT  /api/shard/{businessId-locationId}`` ``{shardId}`` -> CitrusShardResponse: places a registered
  location on that shard (a location move's switch; what the client assumes of the real server is in
  adapters/citrus.py). 404 for an unregistered key or an unknown shard. Business counts follow: the
  business counts on the new shard, and on the old one only while another of its locations stays there.

CitrusShardResponse = ``{shardId, connectionString, isActive, lastHealthCheck, businessCount,
maxBusinesses}``.

Errors: 401 without or with a wrong key, 404 for an unknown key/shard/route, 400 for a bad body,
405 for a wrong method; bodies are ``{"error": <code>, "message": <text>}``.

Shards are ``shard-01``, ``shard-02``, ... on databases ``{db_prefix}_shard_01``, ...; by default
one shard is created at the first ``start()`` (``initial_shards``). Connection strings carry the
user and a password (trust auth ignores it; ``shard_password``) so secret redaction is exercised.

Test controls, from Python or over HTTP under ``/_control/`` with the same key (not counted):
``move_shard`` (new connection string, e.g. a fault proxy), ``set_active``, ``registrations``,
``calls``/``reset_calls`` (per endpoint kind: get_shard, register, health, capacity, unregister),
``offer_unregister(bool)``,
``fail_with(status)`` (every API call answers that status), ``set_delay(seconds)``, ``heal``.
``stop()``/``start()`` restart on the same port with the state kept ("Citrus is down" tests);
``stop()`` also cuts kept-alive client connections so a stopped emulator really answers nothing.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg

from simplu_grpc.devstack.postgres import PgServer, valid_db_name

__all__ = ["BUSINESS_TYPES", "CALL_KINDS", "CitrusEmulator", "ShardState"]

log = logging.getLogger(__name__)

BUSINESS_TYPES = frozenset({"dental", "gym", "hotel"})
CALL_KINDS = ("get_shard", "register", "health", "capacity", "unregister", "place")
_MAX_BODY = 64 * 1024
_MAX_ID = 64


def _now_iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class ShardState:
    """One emulated shard (mutable; read copies via ``CitrusEmulator.shards()``)."""

    shard_id: str
    database: str
    connection_string: str = field(repr=False)
    enabled: bool = True  # operator switch (set_active)
    healthy: bool = True  # result of the last health check
    last_health_check: datetime = field(default_factory=lambda: datetime.now(UTC))
    businesses: set[str] = field(default_factory=set)

    @property
    def is_active(self) -> bool:
        return self.enabled and self.healthy

    def to_json(self, capacity: int) -> dict[str, Any]:
        return {
            "shardId": self.shard_id,
            "connectionString": self.connection_string,
            "isActive": self.is_active,
            "lastHealthCheck": _now_iso(self.last_health_check),
            "businessCount": len(self.businesses),
            "maxBusinesses": capacity,
        }


class _HttpError(Exception):
    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message


class CitrusEmulator:
    """In-process Citrus server; thread-safe; restartable on the same port with its state kept."""

    def __init__(
        self,
        *,
        api_key: str,
        pg: PgServer,
        db_prefix: str,
        capacity: int = 3,
        host: str = "127.0.0.1",
        port: int = 0,
        initial_shards: int = 1,
        shard_password: str | None = None,
        health_connect_timeout: int = 2,
    ) -> None:
        if not api_key:
            raise ValueError("api_key must not be empty")
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        if initial_shards < 0:
            raise ValueError("initial_shards must be >= 0")
        valid_db_name(f"{db_prefix}_shard_99")
        self.api_key = api_key
        self.pg = pg
        self.db_prefix = db_prefix
        self.capacity = capacity
        self.host = host
        self._port = port
        self._initial_shards = initial_shards
        # Trust auth ignores the password; a real-looking one makes leaks visible in tests.
        self.shard_password = shard_password or pg.password or f"citrus-{secrets.token_hex(8)}"
        self._health_timeout = max(2, health_connect_timeout)  # libpq rounds anything lower up to 2

        # _lock guards every field below and is held only briefly; _register_lock serialises
        # registrations, which may CREATE DATABASE (slow) without blocking reads meanwhile.
        self._lock = threading.Lock()
        self._register_lock = threading.Lock()
        self._shards: dict[str, ShardState] = {}
        self._registrations: dict[str, str] = {}  # "b-l" -> shard id
        self._business_shard: dict[str, str] = {}  # business id -> shard id
        self._calls: dict[str, int] = dict.fromkeys(CALL_KINDS, 0)
        self._fail_status: int | None = None
        self._delay = 0.0
        self._offers_unregister = True
        self._created_databases: list[str] = []

        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        if self._port == 0:
            raise RuntimeError("emulator never started")
        return f"http://{self.host}:{self._port}"

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def start(self) -> CitrusEmulator:
        """Listen (again) on the same port; the first start creates the initial shards."""
        if self._httpd is not None:
            return self
        with self._register_lock:
            while len(self._shards) < self._initial_shards:
                self._create_shard()
        httpd = _Server((self.host, self._port), _Handler, self)
        self._port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"citrus-{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut open connections; state is kept for a later ``start()``."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        httpd.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def drop_databases(self) -> None:
        """Drop every database this emulator created (test cleanup)."""
        with self._lock:
            names = list(self._created_databases)
        for name in names:
            self.pg.drop_database(name)

    def __enter__(self) -> CitrusEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- test controls -----------------------------------------------------------------
    @property
    def calls(self) -> dict[str, int]:
        with self._lock:
            return dict(self._calls)

    def reset_calls(self) -> None:
        with self._lock:
            self._calls = dict.fromkeys(CALL_KINDS, 0)

    def registrations(self) -> dict[str, str]:
        """Registered ``businessId-locationId`` keys -> shard id."""
        with self._lock:
            return dict(self._registrations)

    def shards(self) -> list[ShardState]:
        """Copies of the shard states, in creation order."""
        with self._lock:
            return [replace(s, businesses=set(s.businesses)) for s in self._shards.values()]

    def shard(self, shard_id: str) -> ShardState:
        with self._lock:
            s = self._get(shard_id)
            return replace(s, businesses=set(s.businesses))

    def move_shard(self, shard_id: str, new_connection_string: str) -> None:
        """Point ``shard_id`` at another connection string (failover, or a fault proxy)."""
        with self._lock:
            self._get(shard_id).connection_string = new_connection_string

    def set_active(self, shard_id: str, active: bool) -> None:
        """Mark a shard (in)active; inactive shards get no new businesses and report isActive false."""
        with self._lock:
            self._get(shard_id).enabled = active

    def offer_unregister(self, offered: bool) -> None:
        """Serve ``DELETE /api/shard/{key}`` (True) or answer 405 like a Citrus without it (False)."""
        with self._lock:
            self._offers_unregister = offered

    def fail_with(self, status: int | None = 503) -> None:
        """Answer every API call with ``status`` (``None`` to stop failing)."""
        with self._lock:
            self._fail_status = status

    def set_delay(self, seconds: float) -> None:
        """Sleep ``seconds`` before answering each API call (client timeout tests)."""
        with self._lock:
            self._delay = max(0.0, seconds)

    def heal(self) -> None:
        """Undo ``fail_with`` and ``set_delay``."""
        with self._lock:
            self._fail_status = None
            self._delay = 0.0

    def _get(self, shard_id: str) -> ShardState:
        try:
            return self._shards[shard_id]
        except KeyError:
            raise KeyError(f"unknown shard {shard_id!r}") from None

    # --- the API -----------------------------------------------------------------------
    def get_shard(self, key: str) -> dict[str, Any]:
        with self._lock:
            shard_id = self._registrations.get(key)
            if shard_id is None:
                raise _HttpError(HTTPStatus.NOT_FOUND, "not_found", "shard key is not registered")
            return self._shards[shard_id].to_json(self.capacity)

    def register(self, business_id: str, location_id: str, business_type: str) -> dict[str, Any]:
        key = f"{business_id}-{location_id}"
        with self._register_lock:
            with self._lock:
                shard_id = self._registrations.get(key) or self._business_shard.get(business_id)
                if shard_id is None:
                    shard_id = self._first_with_room()
            if shard_id is None:
                shard_id = self._create_shard().shard_id
            with self._lock:
                shard = self._shards[shard_id]
                shard.businesses.add(business_id)
                self._business_shard[business_id] = shard_id
                self._registrations[key] = shard_id
                log.debug("registered %s (%s) on %s", key, business_type, shard_id)
                return shard.to_json(self.capacity)

    def unregister(self, key: str) -> dict[str, Any]:
        """Forget a registration (not in DESIGN §5: the purge of a deleted business assumes it);
        the shard counts the business until its last location there is gone."""
        with self._lock:
            shard_id = self._registrations.pop(key, None)
            if shard_id is None:
                raise _HttpError(HTTPStatus.NOT_FOUND, "not_found", "shard key is not registered")
            business_id = key.split("-", 1)[0]
            if not any(
                k.split("-", 1)[0] == business_id and s == shard_id for k, s in self._registrations.items()
            ):
                self._shards[shard_id].businesses.discard(business_id)
                if self._business_shard.get(business_id) == shard_id:
                    del self._business_shard[business_id]
            return {"removed": True, "shardId": shard_id}

    def place(self, key: str, shard_id: str) -> dict[str, Any]:
        """Put a registered location on ``shard_id`` (a move's switch); 404s as documented above."""
        business_id = key.split("-", 1)[0]
        with self._lock:
            old = self._registrations.get(key)
            if old is None:
                raise _HttpError(HTTPStatus.NOT_FOUND, "not_found", "shard key is not registered")
            shard = self._shards.get(shard_id)
            if shard is None:
                raise _HttpError(HTTPStatus.NOT_FOUND, "not_found", "unknown shard id")
            self._registrations[key] = shard_id
            shard.businesses.add(business_id)
            still_there = any(
                k.split("-", 1)[0] == business_id and s == old for k, s in self._registrations.items()
            )
            if not still_there:
                self._shards[old].businesses.discard(business_id)
            if self._business_shard.get(business_id) == old and not still_there:
                self._business_shard[business_id] = shard_id
            log.debug("placed %s on %s (was %s)", key, shard_id, old)
            return shard.to_json(self.capacity)

    def health(self) -> list[dict[str, Any]]:
        with self._lock:
            targets = [(s.shard_id, s.connection_string) for s in self._shards.values()]
        results: dict[str, tuple[bool, datetime]] = {}
        if targets:
            # Concurrent probes: one blackholed shard must not make the whole answer wait N times.
            with ThreadPoolExecutor(max_workers=min(8, len(targets)), thread_name_prefix="citrus-hc") as ex:
                for shard_id, ok in zip(
                    (t[0] for t in targets), ex.map(self._probe, (t[1] for t in targets)), strict=True
                ):
                    results[shard_id] = (ok, datetime.now(UTC))
        with self._lock:
            for shard_id, (ok, when) in results.items():
                shard = self._shards.get(shard_id)
                if shard is not None:
                    shard.healthy = ok
                    shard.last_health_check = when
            return [s.to_json(self.capacity) for s in self._shards.values()]

    def capacity_of(self, shard_id: str) -> dict[str, Any]:
        with self._lock:
            shard = self._shards.get(shard_id)
            if shard is None:
                raise _HttpError(HTTPStatus.NOT_FOUND, "not_found", "unknown shard id")
            count = len(shard.businesses)
            return {
                "shardId": shard.shard_id,
                "canAcceptNewBusiness": shard.is_active and count < self.capacity,
                "businessCount": count,
                "maxBusinesses": self.capacity,
            }

    def _probe(self, connection_string: str) -> bool:
        try:
            with psycopg.connect(connection_string, connect_timeout=self._health_timeout) as conn:
                conn.execute("SELECT 1")
            return True
        except (psycopg.Error, OSError):
            return False

    def _first_with_room(self) -> str | None:
        for shard in self._shards.values():
            if shard.is_active and len(shard.businesses) < self.capacity:
                return shard.shard_id
        return None

    def _create_shard(self) -> ShardState:
        """Create the next shard's empty database (caller holds ``_register_lock``)."""
        with self._lock:
            n = len(self._shards) + 1
        shard_id = f"shard-{n:02d}"
        database = f"{self.db_prefix}_shard_{n:02d}"
        # exist_ok: a dev stack restarted against the same server reuses its databases.
        self.pg.create_database(database, exist_ok=True)
        state = ShardState(
            shard_id=shard_id,
            database=database,
            connection_string=self.pg.dsn(database, password=self.shard_password),
        )
        with self._lock:
            self._shards[shard_id] = state
            self._created_databases.append(database)
        return state

    # --- request plumbing (called by the handler) --------------------------------------
    def _authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[len("Bearer ") :].strip().encode(), self.api_key.encode())

    def _fault(self) -> tuple[int | None, float]:
        with self._lock:
            return self._fail_status, self._delay

    def _count(self, kind: str) -> None:
        with self._lock:
            self._calls[kind] += 1

    def handle(self, method: str, raw_path: str, auth: str | None, body: bytes | None) -> tuple[int, Any]:
        """Route one request; returns (status, JSON-able body)."""
        path = urlsplit(raw_path).path
        if path.startswith("/_control/"):
            if not self._authorized(auth):
                raise _HttpError(HTTPStatus.UNAUTHORIZED, "unauthorized", "missing or invalid API key")
            return self._control(method, path[len("/_control/") :], body)

        kind, arg = _route(method, path)
        self._count(kind)
        if not self._authorized(auth):
            raise _HttpError(HTTPStatus.UNAUTHORIZED, "unauthorized", "missing or invalid API key")
        fail_status, delay = self._fault()
        if delay:
            time.sleep(delay)
        if fail_status is not None:
            raise _HttpError(fail_status, "injected_failure", "failure injected by the test")
        if kind == "get_shard":
            return 200, self.get_shard(arg)
        if kind == "unregister":
            with self._lock:
                offered = self._offers_unregister
            if not offered:
                raise _HttpError(HTTPStatus.METHOD_NOT_ALLOWED, "method_not_allowed", "use GET")
            return 200, self.unregister(arg)
        if kind == "capacity":
            return 200, self.capacity_of(arg)
        if kind == "health":
            return 200, self.health()
        payload = _json_object(body)
        if kind == "place":
            return 200, self.place(arg, _str_field(payload, "shardId"))
        business_id = _id_field(payload, "businessId", allow_dash=False)
        location_id = _id_field(payload, "locationId", allow_dash=True)
        business_type = payload.get("businessType")
        if not isinstance(business_type, str) or business_type not in BUSINESS_TYPES:
            raise _HttpError(
                HTTPStatus.BAD_REQUEST, "bad_request", f"businessType must be one of {sorted(BUSINESS_TYPES)}"
            )
        shard_key = payload.get("shardKey")
        if shard_key != f"{business_id}-{location_id}":
            raise _HttpError(HTTPStatus.BAD_REQUEST, "bad_request", "shardKey must be businessId-locationId")
        return 200, self.register(business_id, location_id, business_type)

    def _control(self, method: str, action: str, body: bytes | None) -> tuple[int, Any]:
        try:
            if method == "GET" and action == "calls":
                return 200, self.calls
            if method == "GET" and action == "registrations":
                return 200, self.registrations()
            if method == "GET" and action == "shards":
                return 200, [
                    {**s.to_json(self.capacity), "database": s.database, "enabled": s.enabled}
                    for s in self.shards()
                ]
            if method != "POST":
                raise _HttpError(HTTPStatus.NOT_FOUND, "not_found", "unknown control")
            payload = _json_object(body) if body else {}
            if action == "reset_calls":
                self.reset_calls()
            elif action == "move_shard":
                self.move_shard(_str_field(payload, "shardId"), _str_field(payload, "connectionString"))
            elif action == "set_active":
                active = payload.get("isActive")
                if not isinstance(active, bool):
                    raise _HttpError(HTTPStatus.BAD_REQUEST, "bad_request", "isActive must be a boolean")
                self.set_active(_str_field(payload, "shardId"), active)
            elif action == "fail":
                status = payload.get("status", 503)
                if not isinstance(status, int) or not 400 <= status <= 599:
                    raise _HttpError(HTTPStatus.BAD_REQUEST, "bad_request", "status must be 400..599")
                self.fail_with(status)
            elif action == "delay":
                seconds = payload.get("seconds")
                if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
                    raise _HttpError(HTTPStatus.BAD_REQUEST, "bad_request", "seconds must be >= 0")
                self.set_delay(float(seconds))
            elif action == "heal":
                self.heal()
            else:
                raise _HttpError(HTTPStatus.NOT_FOUND, "not_found", "unknown control")
        except KeyError as exc:
            raise _HttpError(HTTPStatus.NOT_FOUND, "not_found", str(exc.args[0])) from None
        return 200, {"ok": True}


def _route(method: str, path: str) -> tuple[str, str]:
    """Endpoint kind and its (decoded) path argument; raise 404/405."""
    if path == "/api/register":
        kind, arg = "register", ""
        allowed = "POST"
    elif path == "/api/shards/health":
        kind, arg = "health", ""
        allowed = "GET"
    elif path.startswith("/api/shard/"):
        rest = path[len("/api/shard/") :]
        # Split before decoding so an encoded "/" inside a key stays part of the key.
        if rest.endswith("/capacity") and "/" not in rest[: -len("/capacity")]:
            kind, arg = "capacity", unquote(rest[: -len("/capacity")])
        elif rest and "/" not in rest:
            kind, arg = "get_shard", unquote(rest)
            if method == "DELETE":
                kind = "unregister"
            elif method == "PUT":
                kind = "place"
        else:
            raise _HttpError(HTTPStatus.NOT_FOUND, "not_found", "no such endpoint")
        allowed = {"unregister": "DELETE", "place": "PUT"}.get(kind, "GET")
        if not arg:
            raise _HttpError(HTTPStatus.NOT_FOUND, "not_found", "no such endpoint")
    else:
        raise _HttpError(HTTPStatus.NOT_FOUND, "not_found", "no such endpoint")
    if method != allowed:
        raise _HttpError(HTTPStatus.METHOD_NOT_ALLOWED, "method_not_allowed", f"use {allowed}")
    return kind, arg


def _json_object(body: bytes | None) -> dict[str, Any]:
    try:
        payload = json.loads(body or b"")
    except (ValueError, UnicodeDecodeError):
        raise _HttpError(HTTPStatus.BAD_REQUEST, "bad_request", "body must be a JSON object") from None
    if not isinstance(payload, dict):
        raise _HttpError(HTTPStatus.BAD_REQUEST, "bad_request", "body must be a JSON object")
    return payload


def _str_field(payload: dict[str, Any], name: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value:
        raise _HttpError(HTTPStatus.BAD_REQUEST, "bad_request", f"{name} must be a non-empty string")
    return value


def _id_field(payload: dict[str, Any], name: str, *, allow_dash: bool) -> str:
    value = _str_field(payload, name)
    if len(value) > _MAX_ID or any(c.isspace() or not c.isprintable() for c in value):
        raise _HttpError(HTTPStatus.BAD_REQUEST, "bad_request", f"{name} is not a valid id")
    if not allow_dash and "-" in value:
        raise _HttpError(HTTPStatus.BAD_REQUEST, "bad_request", f"{name} must not contain '-'")
    return value


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that remembers open client sockets so ``stop()`` can cut them."""

    daemon_threads = True
    allow_reuse_address = True  # restart on the same port while old sockets sit in TIME_WAIT
    request_queue_size = 128  # the default backlog of 5 resets bursts of concurrent clients

    def __init__(self, address: tuple[str, int], handler: type[_Handler], emulator: CitrusEmulator) -> None:
        self.emulator = emulator
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, handler)

    @contextmanager
    def tracking(self, sock: socket.socket) -> Iterator[None]:
        with self._open_lock:
            self._open.add(sock)
        try:
            yield
        finally:
            with self._open_lock:
                self._open.discard(sock)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away (or stop() cutting a connection) is not worth a traceback.
        log.debug("citrus emulator connection error from %s", client_address, exc_info=True)

    def close_connections(self) -> None:
        with self._open_lock:
            open_sockets = list(self._open)
        for sock in open_sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real client pools connections
    # Headers and body go out as two small writes; with Nagle on, the second waits for the
    # client's delayed ACK (~40 ms per response on a kept-alive connection).
    disable_nagle_algorithm = True
    server_version = "CitrusEmulator/1"
    timeout = 60  # idle keep-alive connections end eventually
    server: _Server

    def handle(self) -> None:
        with self.server.tracking(self.connection):
            super().handle()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("citrus %s", format % args)

    def _dispatch(self, method: str) -> None:
        body: bytes | None = None
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length < 0 or length > _MAX_BODY:
                raise _HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too_large", "body too large")
            if length:
                body = self.rfile.read(length)
            status, payload = self.server.emulator.handle(
                method, self.path, self.headers.get("Authorization"), body
            )
        except _HttpError as exc:
            status, payload = exc.status, {"error": exc.error, "message": exc.message}
        except ValueError:
            status, payload = 400, {"error": "bad_request", "message": "bad Content-Length"}
        except Exception:
            log.exception("citrus emulator failed on %s %s", method, urlsplit(self.path).path)
            status, payload = 500, {"error": "internal", "message": "emulator error"}
        data = json.dumps(payload).encode()
        self.send_response(int(status))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if int(status) == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="citrus"')
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")
