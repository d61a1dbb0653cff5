"""Migration 0005 needs pg_trgm: what happens when the shard role may not create it."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from simplu_grpc.adapters.postgres import migrator
from tests.fixtures.postgres import PgServer, new_db_prefix

pytestmark = pytest.mark.integration


@pytest.fixture
def restricted(pg: PgServer) -> Iterator[tuple[str, str]]:
    """A fresh database and a login role that may create tables but not extensions."""
    name = new_db_prefix("trgm")
    admin_dsn = pg.create_database(name)
    role = f"shard_{secrets.token_hex(4)}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")  # role: generated hex, not input
        conn.execute(f"GRANT CONNECT ON DATABASE {name} TO {role}")
        conn.execute(f"GRANT CREATE ON SCHEMA public TO {role}")
    yield admin_dsn, make_conninfo(admin_dsn, user=role)
    pg.drop_database(name)
    with psycopg.connect(make_conninfo(admin_dsn, dbname="postgres"), autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {role}")


def test_without_pg_trgm_rights_the_upgrade_is_refused_whole_until_an_operator_creates_it(
    restricted: tuple[str, str],
) -> None:
    """A role without CREATE on the database cannot create pg_trgm: the migration run fails
    with InsufficientPrivilege and applies nothing (one transaction). Once a superuser has
    created the extension, the same role migrates to the latest version."""
    admin_dsn, role_dsn = restricted
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        migrator.migrate(role_dsn)
    with psycopg.connect(admin_dsn) as conn:
        assert conn.execute("SELECT to_regclass('resources')").fetchone() == (None,)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_trgm")
    result = migrator.migrate(role_dsn)
    assert result.after == migrator.latest_version()
