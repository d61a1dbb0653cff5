"""``simplu-grpc dev``: PostgreSQL, the Citrus emulator, moto and the gRPC server on one machine.

Start order (stopped in reverse, on Ctrl-C or SIGTERM, whatever step failed):

1. PostgreSQL — the server named by ``SIMPLU_DEV_PG`` (a DSN where databases may be created),
   else a ``ThrowawayCluster`` in a temporary directory (as user ``postgres`` when root).
2. The Citrus emulator on ``SIMPLU_DEV_CITRUS_PORT`` (8089) with the dev API key and
   ``DEV_SHARDS`` shard databases ``simplu_dev_shard_NN`` (more appear as businesses fill them;
   ``SIMPLU_DEV_DB_PREFIX`` changes the prefix).
3. moto server on ``SIMPLU_DEV_MOTO_PORT`` (5055): the business-info table, a Cognito pool
   with an app client, an ``admin`` group, an admin user and a plain user.
4. The gRPC server (``GRPC_PORT``, 50051, on every address of ``GRPC_HOST``, localhost by
   default: the start is refused when any of them is taken, since a client may reach the other
   process there), configured through ``Settings.from_env`` with the addresses above, so it
   runs exactly the code production runs.
5. A demo business (``demo``, dental, location ``main``) created through the server by the
   admin, with the plain user as a ``staff`` member who may work with patients and appointments.

It then prints the admin's and the plain user's access tokens and grpcurl commands that work
as printed. Every
process it starts is stopped (moto runs in its own process group, PostgreSQL is stopped with
``pg_ctl``), the temporary directory is removed, and shard databases created on a
``SIMPLU_DEV_PG`` server are dropped. Development tooling only: production never imports it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import signal
import socket
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, TextIO

from simplu_grpc.devstack.citrus_emulator import CitrusEmulator
from simplu_grpc.devstack.moto_server import (
    CognitoSetup,
    MotoServer,
    create_business_table,
    issue_tokens,
    setup_cognito,
)
from simplu_grpc.devstack.postgres import PgServer, ThrowawayCluster, valid_db_name
from simplu_grpc.settings import Settings

if TYPE_CHECKING:
    from simplu_grpc.server import Service

__all__ = ["DEV_CITRUS_API_KEY", "DevConfig", "DevStack", "DevStackError", "run_dev"]

log = logging.getLogger(__name__)

# Not a secret: the emulator only exists on this machine. Printed so curl can talk to it.
DEV_CITRUS_API_KEY = "simplu-dev-citrus-key"
DEV_CITRUS_PORT = 8089
DEV_MOTO_PORT = 5055
DEV_DB_PREFIX = "simplu_dev"
DEV_SHARDS = 3
DEV_REGION = "us-east-1"


EXAMPLE_BUSINESS = {
    "business": {
        "name": "Smile Dental",
        "type": "BUSINESS_TYPE_DENTAL",
        "locations": [{"id": "main", "name": "Main St", "timezone": "Europe/Bucharest"}],
    }
}

# The demo business the plain user is a member of (created by the admin at start).
DEMO_BUSINESS_ID = "demo"
DEMO_LOCATION_ID = "main"
DEMO_ROLE = "staff"
DEMO_ROLE_PERMISSIONS = ("patients:*", "appointments:*")
DEMO_BUSINESS = {
    "business_id": DEMO_BUSINESS_ID,
    "business": {
        "name": "Demo Dental",
        "type": "BUSINESS_TYPE_DENTAL",
        "locations": [{"id": DEMO_LOCATION_ID, "name": "Main St", "timezone": "Europe/Bucharest"}],
        "permissions": {"roles": {DEMO_ROLE: {"permissions": list(DEMO_ROLE_PERMISSIONS)}}},
    },
}
# What the plain user can do as printed: (method, request body) run with $USER_TOKEN.
USER_EXAMPLES: tuple[tuple[str, dict[str, object]], ...] = (
    (
        "simplu.v1.BusinessService/GetMyAccess",
        {"business_id": DEMO_BUSINESS_ID, "location_id": DEMO_LOCATION_ID},
    ),
    (
        "simplu.v1.ResourceService/CreateResource",
        {
            "resource": {
                "business_id": DEMO_BUSINESS_ID,
                "location_id": DEMO_LOCATION_ID,
                "resource_type": "patients",
                "data": {"name": "Ana Pop", "phone": "+40 700 000 000"},
            }
        },
    ),
    (
        "simplu.v1.ResourceService/ListResources",
        {
            "business_id": DEMO_BUSINESS_ID,
            "location_id": DEMO_LOCATION_ID,
            "resource_type": "patients",
            "page_size": 10,
        },
    ),
    (
        "simplu.v1.ResourceService/ListResourceChanges",
        {
            "business_id": DEMO_BUSINESS_ID,
            "location_id": DEMO_LOCATION_ID,
            "order_by": "sequence desc",
            "page_size": 10,
        },
    ),
)


def grpcurl(target: str, method: str, data: object = None, *, bearer_var: str | None = "TOKEN") -> str:
    """A grpcurl command line that works pasted into a POSIX shell with ``$<bearer_var>`` set
    (no authorization header when ``bearer_var`` is None).

    Calls with a request print zero values too (-emit-defaults): `"active": false` or a count of 0
    is an answer; grpcurl would otherwise leave it out.
    """
    parts = ["grpcurl", "-plaintext"]
    if data is not None:
        parts.append("-emit-defaults")
    if bearer_var:
        parts.append(f'-H "authorization: Bearer ${bearer_var}"')
    if data is not None:
        parts += ["-d", shlex.quote(json.dumps(data))]
    parts.append(target)
    parts.append(method)  # "list" is grpcurl's verb, the rest are full method names
    return " ".join(parts)


class DevStackError(RuntimeError):
    """A piece of the dev stack could not start; the message says which and what to do."""


def _port_env(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise DevStackError(f"{name} must be a port number, got {raw!r}") from None
    if not 0 <= value <= 65535:
        raise DevStackError(f"{name} must be between 0 and 65535, got {value}")
    return value


@dataclass(frozen=True)
class DevConfig:
    """Where the dev stack's pieces listen; ``env`` holds the server settings passed through."""

    citrus_port: int = DEV_CITRUS_PORT
    moto_port: int = DEV_MOTO_PORT
    pg_dsn: str | None = field(default=None, repr=False)
    shards: int = DEV_SHARDS
    db_prefix: str = DEV_DB_PREFIX
    env: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str], overrides: Mapping[str, str] | None = None) -> DevConfig:
        merged = {**env, **(overrides or {})}
        prefix = merged.get("SIMPLU_DEV_DB_PREFIX", "").strip() or DEV_DB_PREFIX
        try:
            valid_db_name(f"{prefix}_shard_99")
        except ValueError:
            raise DevStackError("SIMPLU_DEV_DB_PREFIX must be a short lowercase identifier") from None
        return cls(
            citrus_port=_port_env(merged, "SIMPLU_DEV_CITRUS_PORT", DEV_CITRUS_PORT),
            moto_port=_port_env(merged, "SIMPLU_DEV_MOTO_PORT", DEV_MOTO_PORT),
            pg_dsn=merged.get("SIMPLU_DEV_PG", "").strip() or None,
            db_prefix=prefix,
            env=merged,
        )


def require_free(port: int, what: str, variable: str, host: str = "127.0.0.1") -> None:
    """Refuse a port taken on ANY address of ``host`` (``localhost`` is 127.0.0.1 and ::1).

    gRPC binds every address a name resolves to and is content when one succeeds, so a
    process holding 127.0.0.1:port would go on answering the clients that reach it there.
    """
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(
            host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as exc:
        raise DevStackError(f"{what} address {host!r} cannot be resolved ({exc.strerror or exc})") from None
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            # As the servers themselves bind: a port left in TIME_WAIT is free, a listener is not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError:
                raise DevStackError(
                    f"{what} port {port} is already in use on {address[0]}; set {variable} to another port"
                ) from None


def _dummy_aws_credentials() -> None:
    """boto3 in this process talks to moto only: give it dummy credentials, never a real profile."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        os.environ.pop(name, None)
    os.environ["AWS_ACCESS_KEY_ID"] = "testing"
    os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
    os.environ.setdefault("AWS_DEFAULT_REGION", DEV_REGION)


class DevStack:
    """The running stack; ``start()`` then ``stop()`` (also on failure), usable from tests."""

    def __init__(self, config: DevConfig) -> None:
        self.config = config
        self._closers: list[tuple[str, Callable[[], None]]] = []
        self.pg: PgServer | None = None
        self.cluster: ThrowawayCluster | None = None
        self.citrus: CitrusEmulator | None = None
        self.moto: MotoServer | None = None
        self.cognito: CognitoSetup | None = None
        self.settings: Settings | None = None
        self.grpc_port: int = 0
        self.admin_token: str = ""
        self.user_token: str = ""
        self.grpc_target: str = ""
        # The running server, public so tools (the bench) can read its metrics registry.
        self.service: Service | None = None

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> DevStack:
        try:
            self._start_postgres()
            self._start_citrus()
            self._start_moto()
            self._start_server()
            self._create_demo_business()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop everything started, last first; one failure does not keep the rest running."""
        while self._closers:
            name, closer = self._closers.pop()
            try:
                closer()
            except Exception:
                log.exception("dev stack: stopping %s failed", name)

    def __enter__(self) -> DevStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- steps -------------------------------------------------------------------------
    def _start_postgres(self) -> None:
        if self.config.pg_dsn:
            pg = PgServer.from_dsn(self.config.pg_dsn)
            try:
                pg.ping()
            except Exception as exc:
                raise DevStackError(f"SIMPLU_DEV_PG does not answer ({type(exc).__name__})") from None
            # Shard databases of an earlier run that did not stop cleanly: start from nothing,
            # as moto (businesses) and the emulator (registrations) do.
            for name in pg.list_databases(f"{self.config.db_prefix}_shard_"):
                pg.drop_database(name)
            self.pg = pg
            return
        reason = ThrowawayCluster.available()
        if reason is not None:
            raise DevStackError(f"cannot start a private PostgreSQL: {reason}; or set SIMPLU_DEV_PG to a DSN")
        cluster = ThrowawayCluster()
        self._closers.append(("PostgreSQL", cluster.stop))
        self.pg = cluster.start()
        self.cluster = cluster

    def _start_citrus(self) -> None:
        assert self.pg is not None
        require_free(self.config.citrus_port, "Citrus emulator", "SIMPLU_DEV_CITRUS_PORT")
        citrus = CitrusEmulator(
            api_key=DEV_CITRUS_API_KEY,
            pg=self.pg,
            db_prefix=self.config.db_prefix,
            port=self.config.citrus_port,
            initial_shards=self.config.shards,
        )
        if self.cluster is None:
            # On someone else's server, drop the shard databases we made (the cluster's go with it).
            self._closers.append(("shard databases", citrus.drop_databases))
        self._closers.append(("Citrus emulator", citrus.stop))
        citrus.start()
        self.citrus = citrus

    def _start_moto(self) -> None:
        require_free(self.config.moto_port, "moto", "SIMPLU_DEV_MOTO_PORT")
        _dummy_aws_credentials()
        moto = MotoServer(port=self.config.moto_port)
        self._closers.append(("moto", moto.stop))
        moto.start()
        self.moto = moto
        table = self.config.env.get("DYNAMODB_BUSINESS_INFO_TABLE", "").strip() or "business-info"
        create_business_table(moto.url, DEV_REGION, table)
        admin_group = self.config.env.get("SIMPLU_ADMIN_GROUP", "").strip() or "admin"
        self.cognito = setup_cognito(moto.url, DEV_REGION, admin_group=admin_group)
        self.admin_token = self.fresh_token(admin=True)
        self.user_token = self.fresh_token(admin=False)

    def _server_env(self) -> dict[str, str]:
        assert self.citrus is not None
        assert self.moto is not None
        assert self.cognito is not None
        env = {k: v for k, v in self.config.env.items() if not k.startswith("SIMPLU_DEV_")}
        env.setdefault("GRPC_HOST", "localhost")
        env.update(
            {
                "CITRUS_SERVER_URL": self.citrus.url,
                "CITRUS_API_KEY": DEV_CITRUS_API_KEY,
                "AWS_REGION": DEV_REGION,
                "DYNAMODB_ENDPOINT": self.moto.url,
                "COGNITO_USER_POOL_ID": self.cognito.pool_id,
                "COGNITO_CLIENT_ID": self.cognito.client_id,
                "COGNITO_JWKS_URL": self.cognito.jwks_url,
                "COGNITO_ENDPOINT": self.moto.url,
                "SIMPLU_ADMIN_GROUP": self.cognito.admin_group,
            }
        )
        return env

    def _start_server(self) -> None:
        # Imported late: the server pulls in every adapter; the other steps need none of them.
        from simplu_grpc.server import Service
        from simplu_grpc.wiring import build_deps

        settings = Settings.from_env(self._server_env())
        self.settings = settings
        require_free(settings.grpc_port, "gRPC server", "GRPC_PORT", host=settings.grpc_host)
        deps = build_deps(settings)
        try:
            service = Service(settings, deps)
        except BaseException:
            deps.close()
            raise
        self._closers.append(("gRPC server", service.shutdown))
        service.start(metrics_port=settings.metrics_port)
        self.service = service
        self.grpc_port = service.port
        self.grpc_target = f"localhost:{service.port}"

    def _create_demo_business(self) -> None:
        """The demo business, made as a user would: CreateBusiness by the admin over gRPC."""
        import grpc
        from google.protobuf import json_format
        from simplu.v1 import business_pb2, business_pb2_grpc

        assert self.cognito is not None
        request = json_format.ParseDict(DEMO_BUSINESS, business_pb2.CreateBusinessRequest())
        request.business.permissions.members[self.cognito.user_sub].role = DEMO_ROLE
        with grpc.insecure_channel(self.grpc_target) as channel:
            try:
                business_pb2_grpc.BusinessServiceStub(channel).CreateBusiness(
                    request, metadata=(("authorization", f"Bearer {self.admin_token}"),), timeout=30
                )
            except grpc.RpcError as exc:
                raise DevStackError(
                    f"the demo business could not be created: {exc.code().name} {exc.details()}"
                ) from None

    # --- what the user sees ------------------------------------------------------------
    def fresh_token(self, *, admin: bool = True) -> str:
        """A new access token for the admin (or the plain user), signed by moto's Cognito."""
        assert self.moto is not None
        assert self.cognito is not None
        c = self.cognito
        username, password = (
            (c.admin_username, c.admin_password) if admin else (c.user_username, c.user_password)
        )
        return issue_tokens(self.moto.url, DEV_REGION, c, username, password).access

    def token_command(self, *, admin: bool = True) -> str:
        """A shell command printing a fresh access token (moto's Cognito InitiateAuth, unsigned)."""
        assert self.moto is not None
        assert self.cognito is not None
        c = self.cognito
        username, password = (
            (c.admin_username, c.admin_password) if admin else (c.user_username, c.user_password)
        )
        body = (
            f'{{"AuthFlow":"USER_PASSWORD_AUTH","ClientId":"{c.client_id}",'
            f'"AuthParameters":{{"USERNAME":"{username}","PASSWORD":"{password}"}}}}'
        )
        return (
            f"curl -s {self.moto.url}/ -H 'Content-Type: application/x-amz-json-1.1'"
            " -H 'X-Amz-Target: AWSCognitoIdentityProviderService.InitiateAuth'"
            f" -d {shlex.quote(body)}"
            " | python3 -c "
            + shlex.quote(
                'import json,sys; print(json.load(sys.stdin)["AuthenticationResult"]["AccessToken"])'
            )
        )

    def banner(self) -> str:
        assert self.citrus is not None
        assert self.moto is not None
        assert self.cognito is not None
        assert self.pg is not None
        target = f"localhost:{self.grpc_port}"
        where_pg = (
            f"private cluster 127.0.0.1:{self.pg.port} (dir {self.cluster.directory})"
            if self.cluster is not None
            else f"{self.pg.host}:{self.pg.port} (SIMPLU_DEV_PG)"
        )
        shards = ", ".join(f"{s.shard_id}={s.database}" for s in self.citrus.shards())
        lines = [
            "simplu-grpc dev stack is up",
            f"  gRPC server      {target}",
            f"  PostgreSQL       {where_pg}; shards: {shards}",
            f"  Citrus emulator  {self.citrus.url} (API key {DEV_CITRUS_API_KEY})",
            f"  moto             {self.moto.url} (DynamoDB + Cognito pool {self.cognito.pool_id})",
            f"  users            {self.cognito.admin_username} (group {self.cognito.admin_group}),"
            f" {self.cognito.user_username} (plain)",
            "",
            "Admin access token (valid about an hour):",
            f"export TOKEN={self.admin_token}",
            "",
            f"Plain user's access token ({self.cognito.user_username}: role {DEMO_ROLE!r} in business"
            f" {DEMO_BUSINESS_ID!r}, {', '.join(DEMO_ROLE_PERMISSIONS)}):",
            f"export USER_TOKEN={self.user_token}",
            "",
            "Try, as the admin:",
            f"  {grpcurl(target, 'list', bearer_var=None)}",
            f"  {grpcurl(target, 'grpc.health.v1.Health/Check', {'service': 'readiness'}, bearer_var=None)}",
            f"  {grpcurl(target, 'simplu.v1.BusinessService/ListBusinesses', {'page_size': 10})}",
            f"  {grpcurl(target, 'simplu.v1.BusinessService/CreateBusiness', EXAMPLE_BUSINESS)}",
            f"  {grpcurl(target, 'simplu.v1.ShardAdminService/ListShards', {})}",
            "As the plain user:",
            *_commands(target, USER_EXAMPLES, bearer_var="USER_TOKEN"),
            "",
            "Fresh tokens:",
            f"  export TOKEN=$({self.token_command(admin=True)})",
            f"  export USER_TOKEN=$({self.token_command(admin=False)})",
            "",
            "Ctrl-C stops everything.",
        ]
        return "\n".join(lines)


def _commands(target: str, examples: Sequence[tuple[str, object]], *, bearer_var: str) -> list[str]:
    return [f"  {grpcurl(target, method, data, bearer_var=bearer_var)}" for method, data in examples]


def run_dev(
    overrides: Mapping[str, str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    out: TextIO | None = None,
) -> None:
    """Run the dev stack until SIGINT/SIGTERM (main thread only); exit status 1 if it cannot start.

    ``overrides`` are environment-style settings (e.g. ``{"GRPC_PORT": "50052"}``) applied over
    ``env`` (default ``os.environ``).
    """
    from simplu_grpc.logs import configure_logging

    out = out or sys.stdout
    try:
        config = DevConfig.from_env(os.environ if env is None else env, overrides)
    except DevStackError as exc:
        print(f"dev stack error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    configure_logging(config.env.get("LOG_LEVEL", "").strip() or "INFO")
    stop_requested = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        # Also during start-up and tear-down: the stack stops in order, never half-way.
        log.info("received %s, stopping the dev stack", signal.Signals(signum).name)
        stop_requested.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    stack = DevStack(config)
    try:
        try:
            stack.start()
        except RuntimeError as exc:
            # DevStackError, the server's StartupError, ClusterError, moto not answering: each
            # message says what failed; the traceback only helps at DEBUG.
            log.debug("dev stack failed to start", exc_info=True)
            print(f"dev stack error: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        try:
            if not stop_requested.is_set():
                print(stack.banner(), file=out, flush=True)
            # Wake up now and then: a bare Event.wait() in the main thread delays signals.
            while not stop_requested.wait(timeout=1.0):
                pass
            print("stopping...", file=out, flush=True)
        finally:
            stack.stop()
        print("stopped", file=out, flush=True)
    finally:
        for sig, handler in previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, handler)
