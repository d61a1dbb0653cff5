"""The TCP fault proxy really passes, refuses, resets, delays and blackholes PostgreSQL traffic, and heals."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from simplu_grpc.devstack.postgres import PgServer
from tests.fixtures.faultproxy import FaultProxy

pytestmark = pytest.mark.integration

ProxyFactory = Callable[[str, int], FaultProxy]
Conns = list[psycopg.Connection[tuple[object, ...]]]
SSL_REQUEST = b"\x00\x00\x00\x08\x04\xd2\x16\x2f"  # a live server answers it with one byte


@pytest.fixture
def proxy(pg: PgServer, fault_proxy: ProxyFactory) -> FaultProxy:
    """A fault proxy in front of the session's PostgreSQL."""
    return fault_proxy(pg.host, pg.port)


@pytest.fixture
def proxied_dsn(pg: PgServer, proxy: FaultProxy) -> str:
    return proxy.dsn(pg.admin_dsn)


@pytest.fixture
def connections() -> Iterator[Conns]:
    """Connections opened by the test, closed after it whatever state they are in."""
    opened: Conns = []
    yield opened
    for conn in opened:
        conn.close()


def connect(dsn: str, opened: Conns, timeout: int = 5) -> psycopg.Connection[tuple[object, ...]]:
    # sslmode=disable: one round trip fewer, and the proxy sees plain PostgreSQL protocol.
    conn = psycopg.connect(dsn, connect_timeout=timeout, autocommit=True, sslmode="disable")
    opened.append(conn)
    return conn


def talk(address: tuple[str, int]) -> bytes:
    """Connect, send an SSLRequest and read one byte (the RST may land at any of the three steps)."""
    with socket.create_connection(address, timeout=2) as raw:
        raw.sendall(SSL_REQUEST)
        return raw.recv(1)


def select_one(conn: psycopg.Connection[tuple[object, ...]]) -> object:
    row = conn.execute("SELECT 1").fetchone()
    assert row is not None
    return row[0]


def test_pass_mode_forwards_queries(proxy: FaultProxy, proxied_dsn: str, connections: Conns) -> None:
    """By default the proxy is transparent: a connection through it runs queries."""
    conn = connect(proxied_dsn, connections)
    assert select_one(conn) == 1
    assert proxy.accepted == 1
    assert proxy.open_connections == 1


def test_refuse_rejects_new_connects_cuts_open_ones_and_heals_on_the_same_port(
    proxy: FaultProxy, proxied_dsn: str, connections: Conns
) -> None:
    """refuse(): connect refused at once, open connections fail; heal() accepts again on the same port."""
    conn = connect(proxied_dsn, connections)
    port = proxy.port
    proxy.refuse()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(proxy.address, timeout=2).close()
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        connect(proxied_dsn, connections)
    assert time.monotonic() - started < 1.5
    with pytest.raises(psycopg.OperationalError):
        select_one(conn)

    proxy.heal()
    assert proxy.port == port
    assert select_one(connect(proxied_dsn, connections)) == 1


def test_reset_aborts_connections_with_rst(proxy: FaultProxy, proxied_dsn: str, connections: Conns) -> None:
    """reset(): an open connection and each new one are aborted with a TCP RST; heal() restores service."""
    conn = connect(proxied_dsn, connections)
    proxy.reset()
    with pytest.raises(psycopg.OperationalError):
        select_one(conn)
    with pytest.raises(ConnectionResetError):
        talk(proxy.address)
    with pytest.raises(psycopg.OperationalError):
        connect(proxied_dsn, connections)
    proxy.heal()
    assert select_one(connect(proxied_dsn, connections)) == 1


def test_delay_slows_every_round_trip_by_the_set_amount(
    proxy: FaultProxy, proxied_dsn: str, connections: Conns
) -> None:
    """delay(0.3): a query on an open connection takes >= 0.3 s; after heal() it is fast again."""
    conn = connect(proxied_dsn, connections)
    select_one(conn)
    proxy.delay(0.3)
    started = time.monotonic()
    assert select_one(conn) == 1
    slow = time.monotonic() - started
    assert slow >= 0.3
    proxy.heal()
    started = time.monotonic()
    assert select_one(conn) == 1
    assert time.monotonic() - started < 0.25


def test_blackhole_accepts_but_never_answers_until_healed(
    proxy: FaultProxy, proxied_dsn: str, connections: Conns
) -> None:
    """blackhole(): TCP connect works, reads time out, a PostgreSQL connect times out; heal() recovers."""
    proxy.blackhole()
    raw = socket.create_connection(proxy.address, timeout=2)
    try:
        raw.settimeout(0.5)
        raw.sendall(SSL_REQUEST)
        with pytest.raises(TimeoutError):
            raw.recv(1)
    finally:
        raw.close()
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        connect(proxied_dsn, connections, timeout=2)
    assert 1.5 <= time.monotonic() - started < 5

    proxy.heal()
    assert select_one(connect(proxied_dsn, connections)) == 1


def test_stop_closes_everything(pg: PgServer, connections: Conns) -> None:
    """stop() closes the listener and every proxied connection."""
    proxy = FaultProxy(pg.host, pg.port).start()
    conn = connect(proxy.dsn(pg.admin_dsn), connections)
    select_one(conn)
    proxy.stop()
    with pytest.raises(psycopg.OperationalError):
        select_one(conn)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(proxy.address, timeout=2).close()
    assert proxy.open_connections == 0
