"""PostgreSQL for development and tests: a server value (PgServer) and a throwaway local cluster.

``PgServer`` names a server on which the caller may create and drop databases (the one in
``SIMPLU_TEST_PG``/``SIMPLU_DEV_PG``, a testcontainer, or a ``ThrowawayCluster``).

``ThrowawayCluster`` runs ``initdb`` + ``pg_ctl`` from the local PostgreSQL binaries in a
private temporary directory: trust auth, listening on 127.0.0.1 only, its unix socket in its
own directory, durability switched off for speed. PostgreSQL refuses to run as root, so when
this process is root every binary runs as the ``postgres`` OS user (``runuser``) and the
directory is handed to that user; a normal user runs them directly. ``stop()`` stops the
server and removes the directory, so nothing is left behind.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import random
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from urllib.parse import quote, unquote, urlsplit

import psycopg
from psycopg import sql

__all__ = [
    "ClusterError",
    "PgServer",
    "ThrowawayCluster",
    "find_pg_bin",
    "process_alive",
    "valid_db_name",
]

_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# Ports below 32768 stay clear of Linux's ephemeral range (32768-60999), so a port we pick
# is not taken a moment later by some outgoing connection.
_PORT_RANGE = (20000, 32767)


class ClusterError(RuntimeError):
    """The throwaway cluster could not be created, started or stopped."""


def valid_db_name(name: str) -> str:
    """Return ``name`` if it is a plain lowercase identifier usable as a database name, else raise."""
    if not _DB_NAME.match(name):
        raise ValueError(f"database name must match {_DB_NAME.pattern}, got {name!r}")
    return name


@dataclass(frozen=True, slots=True)
class PgServer:
    """A PostgreSQL server where the holder may create and drop databases."""

    host: str
    port: int
    user: str = "postgres"
    password: str = field(default="", repr=False)
    admin_db: str = "postgres"

    @classmethod
    def from_dsn(cls, dsn: str) -> PgServer:
        """Parse a ``postgresql://user:password@host:port/db`` URL (the db becomes the admin db)."""
        parts = urlsplit(dsn)
        if parts.scheme not in {"postgres", "postgresql"}:
            raise ValueError("expected a postgresql:// URL")
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5432,
            user=unquote(parts.username or "postgres"),
            password=unquote(parts.password or ""),
            admin_db=unquote(parts.path.lstrip("/")) or "postgres",
        )

    def dsn(self, db: str, *, password: str | None = None) -> str:
        """URL for database ``db``; ``password`` overrides the server's (trust auth ignores it)."""
        pw = self.password if password is None else password
        auth = quote(self.user, safe="")
        if pw:
            auth += ":" + quote(pw, safe="")
        return f"postgresql://{auth}@{self.host}:{self.port}/{quote(db, safe='')}"

    @property
    def admin_dsn(self) -> str:
        return self.dsn(self.admin_db)

    def connect(
        self, db: str | None = None, *, connect_timeout: int = 5
    ) -> psycopg.Connection[tuple[object, ...]]:
        """An autocommit connection to ``db`` (default: the admin database)."""
        return psycopg.connect(
            self.dsn(db or self.admin_db), autocommit=True, connect_timeout=connect_timeout
        )

    def ping(self, *, connect_timeout: int = 3) -> None:
        """Raise ``psycopg.OperationalError`` unless the server answers a query."""
        with self.connect(connect_timeout=connect_timeout) as conn:
            conn.execute("SELECT 1")

    def database_exists(self, name: str) -> bool:
        with self.connect() as conn:
            row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        return row is not None

    def create_database(self, name: str, *, exist_ok: bool = False) -> str:
        """Create an empty database ``name`` and return its DSN."""
        valid_db_name(name)
        with self.connect() as conn:
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except psycopg.errors.DuplicateDatabase:
                if not exist_ok:
                    raise
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name`` if it exists, terminating its sessions first (pools may still hold some)."""
        valid_db_name(name)
        with self.connect() as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            # FORCE (PostgreSQL 13+) covers sessions that connected after the terminate above.
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def list_databases(self, prefix: str = "") -> list[str]:
        """Names of the databases starting with ``prefix`` (sorted)."""
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT datname FROM pg_database WHERE NOT datistemplate AND starts_with(datname, %s)"
                " ORDER BY datname",
                (prefix,),
            ).fetchall()
        return [str(row[0]) for row in rows]


def find_pg_bin(name: str = "initdb") -> Path | None:
    """Directory holding PostgreSQL server binaries (``initdb``, ``pg_ctl``), newest version first."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(re.sub(r"\D", "", Path(p).parent.name) or 0),
        reverse=True,
    )
    for directory in candidates:
        if (Path(directory) / name).is_file() and (Path(directory) / "pg_ctl").is_file():
            return Path(directory)
    found = shutil.which(name)
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    return None


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (exited, not yet reaped by its parent) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    # The state follows the parenthesised command name, which may itself contain ") ".
    return stat.rsplit(")", 1)[-1].split()[0] not in {"Z", "X"}


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick_port() -> int:
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randint(*_PORT_RANGE)
        if _port_is_free(port):
            return port
    raise ClusterError(f"no free port found in {_PORT_RANGE}")


class ThrowawayCluster:
    """A private PostgreSQL cluster in a temporary directory; ``stop()`` removes every trace."""

    OS_USER = "postgres"

    def __init__(
        self,
        base_dir: str | os.PathLike[str] | None = None,
        port: int | None = None,
        *,
        max_connections: int = 200,
        start_timeout_seconds: int = 60,
        bin_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if port is not None and not 0 < port < 32768:
            raise ValueError("port must be between 1 and 32767")
        self._base_dir = base_dir
        self._requested_port = port
        self._max_connections = max_connections
        self._start_timeout = start_timeout_seconds
        self._bin_dir = Path(bin_dir) if bin_dir else find_pg_bin()
        self._as_root = os.geteuid() == 0
        self._dir: Path | None = None
        self._port: int | None = None
        self._running = False

    # --- public surface ----------------------------------------------------------------
    @staticmethod
    def available() -> str | None:
        """``None`` when a cluster can be started here, else the reason it cannot."""
        if find_pg_bin() is None:
            return "no PostgreSQL server binaries (initdb, pg_ctl) found"
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                return "running as root and runuser is missing"
            try:
                pwd.getpwnam(ThrowawayCluster.OS_USER)
            except KeyError:
                return "running as root and there is no 'postgres' OS user to run PostgreSQL as"
        return None

    @property
    def port(self) -> int:
        if self._port is None:
            raise ClusterError("cluster not started")
        return self._port

    @property
    def directory(self) -> Path | None:
        return self._dir

    @property
    def running(self) -> bool:
        return self._running

    @property
    def server(self) -> PgServer:
        return PgServer(host="127.0.0.1", port=self.port, user="postgres")

    def dsn(self, dbname: str = "postgres") -> str:
        return self.server.dsn(dbname)

    @property
    def admin_dsn(self) -> str:
        return self.dsn("postgres")

    def start(self) -> PgServer:
        """initdb (first time) and start the server; return it as a ``PgServer``."""
        if self._running:
            return self.server
        if self._bin_dir is None:
            raise ClusterError(self.available() or "no PostgreSQL server binaries found")
        try:
            if self._dir is None:
                self._init()
            self._start_server()
        except BaseException:
            self.stop()
            raise
        return self.server

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove the directory. Safe to call twice."""
        directory, self._dir = self._dir, None
        if directory is None:
            return
        data = directory / "data"
        if self._running or (data / "postmaster.pid").exists():
            self._pg_ctl_stop(data)
        self._running = False
        shutil.rmtree(directory, ignore_errors=True)

    def __enter__(self) -> ThrowawayCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- internals ---------------------------------------------------------------------
    def _run(self, args: Sequence[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self._as_root:
            cmd = ["runuser", "-u", self.OS_USER, "--", *cmd]
        result = subprocess.run(
            cmd,
            check=False,  # the return code is checked below, with the output in the error
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd="/",  # runuser keeps the cwd; root's may not be readable by postgres
            env={**os.environ, "LC_ALL": "C", "LANG": "C"},
        )
        if result.returncode != 0:
            raise ClusterError(
                f"{Path(args[0]).name} failed ({result.returncode}): {result.stderr.strip() or result.stdout}"
            )
        return result

    def _init(self) -> None:
        assert self._bin_dir is not None
        directory = Path(tempfile.mkdtemp(prefix="simplu-pg-", dir=self._base_dir))
        self._dir = directory
        (directory / "sock").mkdir()
        if self._as_root:
            user = pwd.getpwnam(self.OS_USER)
            for path in (directory, directory / "sock"):
                os.chown(path, user.pw_uid, user.pw_gid)
            try:
                self._run(["test", "-w", str(directory)], timeout=10)
            except ClusterError:
                raise ClusterError(
                    f"the {self.OS_USER} user cannot reach {directory}: a parent directory is private;"
                    " use a base directory under /tmp"
                ) from None
        data = directory / "data"
        self._run(
            [
                str(self._bin_dir / "initdb"),
                "-D",
                str(data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
            timeout=120,
        )
        # Appended lines win over the defaults earlier in postgresql.conf. The file belongs to
        # the cluster's owner; root may write it and the owner keeps reading it.
        conf = "\n".join(
            [
                "",
                "# simplu-grpc throwaway cluster",
                "listen_addresses = '127.0.0.1'",
                f"unix_socket_directories = '{directory / 'sock'}'",
                f"max_connections = {self._max_connections}",
                "fsync = off",
                "synchronous_commit = off",
                "full_page_writes = off",
                "shared_buffers = 32MB",
                "log_min_messages = warning",
                "",
            ]
        )
        with (data / "postgresql.conf").open("a", encoding="utf-8") as fh:
            fh.write(conf)

    def _start_server(self) -> None:
        assert self._dir is not None
        assert self._bin_dir is not None
        attempts = 1 if self._requested_port else 5
        last: ClusterError | None = None
        for _ in range(attempts):
            port = self._requested_port or _pick_port()
            try:
                self._run(
                    [
                        str(self._bin_dir / "pg_ctl"),
                        "-D",
                        str(self._dir / "data"),
                        "-l",
                        str(self._dir / "server.log"),
                        "-w",
                        "-t",
                        str(self._start_timeout),
                        "-o",
                        f"-p {port}",
                        "start",
                    ],
                    timeout=self._start_timeout + 10,
                )
            except ClusterError as exc:
                # Another process may have taken the port between the check and the start.
                last = exc
                continue
            self._port = port
            self._running = True
            self._wait_ready()
            return
        log = ""
        with contextlib.suppress(OSError):
            log = (self._dir / "server.log").read_text(encoding="utf-8")[-2000:]
        raise ClusterError(f"PostgreSQL did not start: {last}\n{log}")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._start_timeout
        while True:
            try:
                self.server.ping(connect_timeout=2)
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _pg_ctl_stop(self, data: Path) -> None:
        assert self._bin_dir is not None
        try:
            self._run(
                [str(self._bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "30", "stop"],
                timeout=40,
            )
        except (ClusterError, subprocess.TimeoutExpired):
            self._kill_postmaster(data)

    @staticmethod
    def _kill_postmaster(data: Path) -> None:
        """Last resort when pg_ctl cannot stop it: SIGQUIT (immediate shutdown) to the postmaster."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((data / "postmaster.pid").read_text(encoding="utf-8").splitlines()[0])
            os.kill(pid, 3)
            for _ in range(100):
                if not process_alive(pid):
                    return
                time.sleep(0.05)
