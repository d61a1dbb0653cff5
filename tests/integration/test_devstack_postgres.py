"""PgServer manages databases on a real server; ThrowawayCluster starts, serves and leaves nothing behind."""

from __future__ import annotations

import socket

import psycopg
import pytest

from simplu_grpc.devstack.postgres import PgServer, ThrowawayCluster, process_alive, valid_db_name
from tests.fixtures.postgres import new_db_prefix

pytestmark = pytest.mark.integration


def test_create_and_drop_database_even_with_open_sessions(pg: PgServer) -> None:
    """create_database makes a connectable database; drop_database terminates its sessions and drops it."""
    name = new_db_prefix("pgs")
    dsn = pg.create_database(name)
    try:
        assert pg.database_exists(name)
        assert name in pg.list_databases(name)
        with pytest.raises(psycopg.errors.DuplicateDatabase):
            pg.create_database(name)
        assert pg.create_database(name, exist_ok=True) == dsn
        holder = psycopg.connect(dsn, autocommit=True, connect_timeout=5)
        try:
            pg.drop_database(name)
            with pytest.raises(psycopg.OperationalError):
                holder.execute("SELECT 1")
        finally:
            holder.close()
        assert not pg.database_exists(name)
    finally:
        pg.drop_database(name)


def test_database_names_are_validated_before_any_sql() -> None:
    """Names that are not plain lowercase identifiers are rejected (no identifier comes from input)."""
    for bad in ('x"; DROP DATABASE postgres; --', "Upper", "1abc", "a" * 64, ""):
        with pytest.raises(ValueError, match="database name"):
            valid_db_name(bad)
    assert valid_db_name("t_abc_123") == "t_abc_123"


def test_dsn_round_trips_user_password_and_database() -> None:
    """PgServer.from_dsn/dsn keep host, port, user and a URL-escaped password."""
    server = PgServer.from_dsn("postgresql://app:p%40ss@db.local:6543/main")
    assert (server.host, server.port, server.user, server.password, server.admin_db) == (
        "db.local",
        6543,
        "app",
        "p@ss",
        "main",
    )
    assert server.dsn("x") == "postgresql://app:p%40ss@db.local:6543/x"
    assert server.dsn("x", password="s3cret") == "postgresql://app:s3cret@db.local:6543/x"
    assert "p@ss" not in repr(server)


@pytest.mark.skipif(ThrowawayCluster.available() is not None, reason=str(ThrowawayCluster.available()))
def test_throwaway_cluster_starts_on_loopback_and_stop_leaves_nothing() -> None:
    """A throwaway cluster listens on 127.0.0.1 below 32768, serves queries; stop() removes it all."""
    cluster = ThrowawayCluster()
    try:
        server = cluster.start()
        assert 0 < server.port < 32768
        directory = cluster.directory
        assert directory is not None
        assert directory.is_dir()
        with psycopg.connect(cluster.admin_dsn, connect_timeout=5) as conn:
            settings = dict(
                conn.execute(
                    "SELECT name, setting FROM pg_settings"
                    " WHERE name IN ('listen_addresses', 'fsync', 'max_connections')"
                ).fetchall()
            )
        assert settings == {"listen_addresses": "127.0.0.1", "fsync": "off", "max_connections": "200"}
        server.create_database("throwaway_db")
        assert "throwaway_db" in server.list_databases()
        pid = int((directory / "data" / "postmaster.pid").read_text().splitlines()[0])
    finally:
        cluster.stop()
    assert not directory.exists()
    assert not process_alive(pid)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
    cluster.stop()  # idempotent
