"""Settings: read once from the environment into one frozen object.

Every environment variable the service reads is named here and nowhere else; adapters
take plain arguments. Bad values stop the start with one ``SettingsError`` that names
every bad variable at once (and never echoes a secret's value), so a deployment is fixed
in one round, not one variable per restart.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeVar

# libpq's sslmodes, weakest first (SHARD_SSLMODE_MIN names one).
SSLMODES: Final = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")

T = TypeVar("T")


class SettingsError(ValueError):
    """Missing or malformed environment variables; the message names each of them."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        if len(self.problems) == 1:
            super().__init__(self.problems[0])
        else:
            super().__init__(f"{len(self.problems)} problems: " + "; ".join(self.problems))


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    # --- gRPC server -----------------------------------------------------------------
    grpc_host: str = "[::]"
    grpc_port: int = 50051
    grpc_max_workers: int = 32
    # Beyond this many RPCs in flight the server answers RESOURCE_EXHAUSTED instead of queueing.
    grpc_max_concurrent_rpcs: int = 256
    grpc_reflection: bool = True
    # Worker processes sharing the port (SO_REUSEPORT only when > 1).
    workers: int = 1
    shutdown_grace_seconds: float = 10.0
    # Deadline applied to RPCs whose caller set none, so nothing waits forever.
    default_deadline_seconds: float = 30.0
    metrics_port: int = 9464  # 0 disables the /metrics endpoint
    # Address /metrics listens on ("127.0.0.1" keeps it to the pod / host).
    metrics_host: str = "0.0.0.0"
    log_level: str = "INFO"
    # OpenTelemetry (standard variables): "otlp" or "console" turns tracing on; off by default.
    otel_traces_exporter: str = "none"
    otel_service_name: str = "simplu-grpc"
    # TLS for the gRPC port: certificate chain and key files (PEM), reloaded when they change;
    # with a client CA, clients must present a certificate it signed (mTLS).
    grpc_tls_cert_file: str | None = None
    grpc_tls_key_file: str | None = None
    grpc_tls_client_ca_file: str | None = None
    # Connections are closed (GOAWAY) after this long so clients re-resolve and spread over
    # new pods; 0 keeps them forever.
    grpc_max_connection_age_seconds: float = 300.0

    # --- Citrus ------------------------------------------------------------------------
    citrus_server_url: str | None = None  # None: single-database mode (shard "default")
    citrus_api_key: str = field(default="", repr=False)
    citrus_timeout_ms: int = 5000
    citrus_retry_attempts: int = 3

    # --- AWS ---------------------------------------------------------------------------
    aws_region: str = "us-east-1"
    dynamodb_business_info_table: str = "business-info"
    dynamodb_endpoint: str | None = None
    dynamodb_timeout_ms: int = 3000

    # --- Cognito -----------------------------------------------------------------------
    cognito_user_pool_id: str = ""
    cognito_client_ids: tuple[str, ...] = ()
    cognito_jwks_url: str | None = None  # default derived from region and pool
    jwt_leeway_seconds: int = 10
    admin_group: str = "admin"
    # The user pool's admin API (invitations find or create users there); a local emulator's URL
    # in development, AWS's own endpoint when unset.
    cognito_endpoint: str | None = None
    # How long an invitation's code may be accepted.
    invitation_ttl_seconds: float = 7 * 86_400.0

    # --- Single-database mode (no Citrus) ----------------------------------------------
    database_host: str = "localhost"
    database_port: int = 5432
    database_username: str = "postgres"
    database_password: str = field(default="", repr=False)
    database_name: str = "simplu"

    # --- Shard pools (per shard id; see README for the connection budget) --------------
    shard_pool_min_size: int = 1
    shard_pool_max_size: int = 10
    shard_pool_max_waiting: int = 64
    shard_pool_max_idle_seconds: float = 300.0
    shard_pool_max_lifetime_seconds: float = 3600.0
    # A pool nobody used for this long is closed (its shard may have gone away).
    shard_pool_idle_close_seconds: float = 900.0
    shard_connect_timeout_seconds: float = 5.0
    # The weakest libpq sslmode a shard connection may use; Citrus's strings cannot lower it.
    shard_sslmode_min: str = "disable"
    shard_sslrootcert: str | None = None

    # --- Caches ------------------------------------------------------------------------
    routing_cache_ttl_seconds: float = 300.0
    # How long a routing entry may be served past its TTL while Citrus is failing.
    routing_stale_max_seconds: float = 3600.0
    business_cache_ttl_seconds: float = 30.0
    # How long a business lookup may be served past its TTL while DynamoDB is failing.
    business_cache_stale_max_seconds: float = 300.0
    # After a failed lookup (Citrus, DynamoDB), the same route or business is retried at most this often.
    cache_failure_backoff_seconds: float = 1.0

    # --- Limits ------------------------------------------------------------------------
    resource_data_max_bytes: int = 256 * 1024
    resource_data_max_depth: int = 32
    # A List/BatchGet response stops before it would pass this many bytes (clients refuse
    # messages over 4 MiB by default); the rest comes with next_page_token.
    response_max_bytes: int = 3 * 1024 * 1024
    shard_near_capacity_percent: float = 80.0
    # Per-tenant load: entries of each minute's top-K sketch, and how many of the top tenants
    # /metrics shows (label cardinality: at most this many series per metric).
    tenant_usage_top_k: int = 1000
    tenant_metrics_top: int = 10
    # How long each shard's change log keeps a change (ListResourceChanges' history); older
    # changes are pruned a few at a time by later writes.
    change_retention_seconds: float = 7 * 86_400.0
    # How long a deleted business can be undeleted; past it, `simplu-grpc purge-businesses`
    # removes its data from every shard (0: at once, for tests and dev stacks).
    business_retention_days: float = 30.0
    # WatchResources: streams per process (they count against GRPC_MAX_CONCURRENT_RPCS), and the
    # changes each may have waiting for a slow reader before it ends (WATCH_TOO_SLOW).
    watch_max_streams: int = 128
    watch_buffer_size: int = 1000
    # Location moves (issue 13): how long a replica holds a move it runs before another may take
    # it over (a killed server's move resumes after at most this), how often each replica looks
    # for such moves, rows per copy batch, and how many changes may be left when the write freeze
    # starts (the freeze's length follows it).
    move_lease_seconds: float = 30.0
    move_scan_seconds: float = 10.0
    move_batch_rows: int = 1000
    move_freeze_lag: int = 200

    @property
    def cognito_issuer(self) -> str:
        return f"https://cognito-idp.{self.aws_region}.amazonaws.com/{self.cognito_user_pool_id}"

    @property
    def jwks_url(self) -> str:
        return self.cognito_jwks_url or f"{self.cognito_issuer}/.well-known/jwks.json"

    @property
    def single_database(self) -> bool:
        return self.citrus_server_url is None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default ``os.environ``); raise ``SettingsError``."""
        return _Reader(os.environ if env is None else env).settings()


class _Reader:
    """Parses one variable at a time so every error names its variable.

    A bad variable is noted and its default used, so reading goes on and every problem is
    reported together by ``settings()``.
    """

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        self._problems: list[str] = []

    def _problem(self, message: str, default: T) -> T:
        self._problems.append(message)
        return default

    def _raw(self, name: str) -> str | None:
        value = self._env.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def _parse(self, name: str, default: T, convert: Callable[[str], T], what: str) -> T:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            return convert(raw)
        except ValueError:
            return self._problem(f"{name} must be {what}, got {raw!r}", default)

    def str_(self, name: str, default: str) -> str:
        return self._raw(name) or default

    def opt_str(self, name: str) -> str | None:
        return self._raw(name)

    def required(self, name: str, why: str) -> str:
        raw = self._raw(name)
        if raw is None:
            return self._problem(f"{name} is required ({why})", "")
        return raw

    def int_(self, name: str, default: int, *, minimum: int, maximum: int) -> int:
        value = self._parse(name, default, int, "an integer")
        if not minimum <= value <= maximum:
            return self._problem(f"{name} must be between {minimum} and {maximum}, got {value}", default)
        return value

    def float_(self, name: str, default: float, *, minimum: float, maximum: float) -> float:
        value = self._parse(name, default, float, "a number")
        if not minimum <= value <= maximum:
            return self._problem(f"{name} must be between {minimum} and {maximum}, got {value}", default)
        return value

    def bool_(self, name: str, default: bool) -> bool:
        def convert(raw: str) -> bool:
            lowered = raw.lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)

        return self._parse(name, default, convert, "true or false")

    def readable_file(self, name: str) -> str | None:
        raw = self._raw(name)
        if raw is not None and not os.access(raw, os.R_OK):
            return self._problem(f"{name} names a file that cannot be read: {raw}", None)
        return raw

    def choice(self, name: str, default: str, allowed: Sequence[str]) -> str:
        raw = self._raw(name)
        if raw is None:
            return default
        if raw not in allowed:
            return self._problem(f"{name} must be one of {', '.join(allowed)}, got {raw!r}", default)
        return raw

    def url(self, name: str) -> str | None:
        raw = self._raw(name)
        if raw is not None and not raw.startswith(("http://", "https://")):
            # Never echo the value: a URL may carry credentials.
            return self._problem(f"{name} must be an http:// or https:// URL", None)
        return raw.rstrip("/") if raw else None

    def settings(self) -> Settings:
        """Every variable read; SettingsError naming each problem when there is any."""
        settings = self._read()
        if self._problems:
            raise SettingsError(self._problems)
        return settings

    def _watch_streams(self, d: Settings) -> int:
        """WATCH_MAX_STREAMS, below GRPC_MAX_CONCURRENT_RPCS (unset: at most half of it)."""
        raw_admitted = self._raw("GRPC_MAX_CONCURRENT_RPCS") or ""  # its own problems: reported elsewhere
        admitted = int(raw_admitted) if raw_admitted.isdigit() else d.grpc_max_concurrent_rpcs
        if self._raw("WATCH_MAX_STREAMS") is None:
            return min(d.watch_max_streams, max(0, admitted // 2))
        streams = self.int_("WATCH_MAX_STREAMS", d.watch_max_streams, minimum=0, maximum=100_000)
        if streams >= admitted:
            message = f"WATCH_MAX_STREAMS ({streams}) must be below GRPC_MAX_CONCURRENT_RPCS ({admitted})"
            return self._problem(f"{message}: streams count against it", d.watch_max_streams)
        return streams

    def _read(self) -> Settings:
        d = Settings()
        citrus_url = self.url("CITRUS_SERVER_URL")
        citrus_key = self._raw("CITRUS_API_KEY") or ""
        if citrus_url and not citrus_key:
            self._problem("CITRUS_API_KEY is required when CITRUS_SERVER_URL is set", None)
        client_list = self.required("COGNITO_CLIENT_ID", "the allowed app client ids")
        client_ids = tuple(part.strip() for part in client_list.split(",") if part.strip())
        if client_list and not client_ids:
            self._problem("COGNITO_CLIENT_ID must name at least one app client id", None)
        log_level = self.str_("LOG_LEVEL", d.log_level).upper()
        if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            log_level = self._problem(
                f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {log_level!r}", d.log_level
            )
        cert, key = self._raw("GRPC_TLS_CERT_FILE"), self._raw("GRPC_TLS_KEY_FILE")
        if (cert is None) != (key is None):
            self._problem("GRPC_TLS_CERT_FILE and GRPC_TLS_KEY_FILE go together: set both or neither", None)
        if self._raw("GRPC_TLS_CLIENT_CA_FILE") is not None and cert is None:
            self._problem(
                "GRPC_TLS_CLIENT_CA_FILE (mTLS) needs GRPC_TLS_CERT_FILE and GRPC_TLS_KEY_FILE", None
            )
        pool_min = self.int_("SHARD_POOL_MIN_SIZE", d.shard_pool_min_size, minimum=0, maximum=100)
        pool_max = self.int_("SHARD_POOL_MAX_SIZE", d.shard_pool_max_size, minimum=1, maximum=500)
        if pool_min > pool_max:
            self._problem("SHARD_POOL_MIN_SIZE must not exceed SHARD_POOL_MAX_SIZE", None)
        return Settings(
            grpc_host=self.str_("GRPC_HOST", d.grpc_host),
            grpc_port=self.int_("GRPC_PORT", d.grpc_port, minimum=0, maximum=65535),
            grpc_max_workers=self.int_("GRPC_MAX_WORKERS", d.grpc_max_workers, minimum=1, maximum=1024),
            grpc_max_concurrent_rpcs=self.int_(
                "GRPC_MAX_CONCURRENT_RPCS", d.grpc_max_concurrent_rpcs, minimum=1, maximum=100_000
            ),
            grpc_reflection=self.bool_("GRPC_REFLECTION", d.grpc_reflection),
            workers=self.int_("SIMPLU_WORKERS", d.workers, minimum=1, maximum=64),
            shutdown_grace_seconds=self.float_(
                "SHUTDOWN_GRACE_SECONDS", d.shutdown_grace_seconds, minimum=0, maximum=600
            ),
            default_deadline_seconds=self.float_(
                "DEFAULT_DEADLINE_SECONDS", d.default_deadline_seconds, minimum=0.1, maximum=3600
            ),
            metrics_port=self.int_("METRICS_PORT", d.metrics_port, minimum=0, maximum=65535),
            metrics_host=self.str_("METRICS_HOST", d.metrics_host),
            otel_traces_exporter=self.choice(
                "OTEL_TRACES_EXPORTER", d.otel_traces_exporter, ("none", "otlp", "console")
            ),
            otel_service_name=self.str_("OTEL_SERVICE_NAME", d.otel_service_name),
            grpc_tls_cert_file=self.readable_file("GRPC_TLS_CERT_FILE"),
            grpc_tls_key_file=self.readable_file("GRPC_TLS_KEY_FILE"),
            grpc_tls_client_ca_file=self.readable_file("GRPC_TLS_CLIENT_CA_FILE"),
            grpc_max_connection_age_seconds=self.float_(
                "GRPC_MAX_CONNECTION_AGE_SECONDS",
                d.grpc_max_connection_age_seconds,
                minimum=0,
                maximum=86_400,
            ),
            shard_sslmode_min=self.choice("SHARD_SSLMODE_MIN", d.shard_sslmode_min, SSLMODES),
            shard_sslrootcert=self.readable_file("SHARD_SSLROOTCERT"),
            log_level=log_level,
            citrus_server_url=citrus_url,
            citrus_api_key=citrus_key,
            citrus_timeout_ms=self.int_("CITRUS_TIMEOUT", d.citrus_timeout_ms, minimum=1, maximum=120_000),
            citrus_retry_attempts=self.int_(
                "CITRUS_RETRY_ATTEMPTS", d.citrus_retry_attempts, minimum=1, maximum=10
            ),
            aws_region=self.str_("AWS_REGION", d.aws_region),
            dynamodb_business_info_table=self.str_(
                "DYNAMODB_BUSINESS_INFO_TABLE", d.dynamodb_business_info_table
            ),
            dynamodb_endpoint=self.url("DYNAMODB_ENDPOINT"),
            dynamodb_timeout_ms=self.int_(
                "DYNAMODB_TIMEOUT", d.dynamodb_timeout_ms, minimum=1, maximum=120_000
            ),
            cognito_user_pool_id=self.required("COGNITO_USER_POOL_ID", "the Cognito user pool id"),
            cognito_client_ids=client_ids,
            cognito_jwks_url=self.url("COGNITO_JWKS_URL"),
            jwt_leeway_seconds=self.int_("JWT_LEEWAY_SECONDS", d.jwt_leeway_seconds, minimum=0, maximum=300),
            admin_group=self.str_("SIMPLU_ADMIN_GROUP", d.admin_group),
            cognito_endpoint=self.url("COGNITO_ENDPOINT"),
            invitation_ttl_seconds=self.float_(
                "INVITATION_TTL_SECONDS", d.invitation_ttl_seconds, minimum=300, maximum=30 * 86_400
            ),
            database_host=self.str_("DATABASE_HOST", d.database_host),
            database_port=self.int_("DATABASE_PORT", d.database_port, minimum=1, maximum=65535),
            database_username=self.str_("DATABASE_USERNAME", d.database_username),
            database_password=self._raw("DATABASE_PASSWORD") or "",
            database_name=self.str_("DATABASE_NAME", d.database_name),
            shard_pool_min_size=pool_min,
            shard_pool_max_size=pool_max,
            shard_pool_max_waiting=self.int_(
                "SHARD_POOL_MAX_WAITING", d.shard_pool_max_waiting, minimum=0, maximum=100_000
            ),
            shard_pool_max_idle_seconds=self.float_(
                "SHARD_POOL_MAX_IDLE_SECONDS", d.shard_pool_max_idle_seconds, minimum=1, maximum=86_400
            ),
            shard_pool_max_lifetime_seconds=self.float_(
                "SHARD_POOL_MAX_LIFETIME_SECONDS",
                d.shard_pool_max_lifetime_seconds,
                minimum=1,
                maximum=604_800,
            ),
            shard_pool_idle_close_seconds=self.float_(
                "SHARD_POOL_IDLE_CLOSE_SECONDS", d.shard_pool_idle_close_seconds, minimum=1, maximum=604_800
            ),
            shard_connect_timeout_seconds=self.float_(
                "SHARD_CONNECT_TIMEOUT_SECONDS", d.shard_connect_timeout_seconds, minimum=0.1, maximum=120
            ),
            routing_cache_ttl_seconds=self.float_(
                "ROUTING_CACHE_TTL_SECONDS", d.routing_cache_ttl_seconds, minimum=0, maximum=86_400
            ),
            routing_stale_max_seconds=self.float_(
                "ROUTING_STALE_MAX_SECONDS", d.routing_stale_max_seconds, minimum=0, maximum=604_800
            ),
            business_cache_ttl_seconds=self.float_(
                "BUSINESS_CACHE_TTL_SECONDS", d.business_cache_ttl_seconds, minimum=0, maximum=3600
            ),
            business_cache_stale_max_seconds=self.float_(
                "BUSINESS_CACHE_STALE_MAX_SECONDS",
                d.business_cache_stale_max_seconds,
                minimum=0,
                maximum=86_400,
            ),
            cache_failure_backoff_seconds=self.float_(
                "CACHE_FAILURE_BACKOFF_SECONDS", d.cache_failure_backoff_seconds, minimum=0, maximum=300
            ),
            resource_data_max_bytes=self.int_(
                "RESOURCE_DATA_MAX_BYTES", d.resource_data_max_bytes, minimum=1024, maximum=3 * 1024 * 1024
            ),
            response_max_bytes=self.int_(
                "RESPONSE_MAX_BYTES", d.response_max_bytes, minimum=64 * 1024, maximum=3840 * 1024
            ),
            resource_data_max_depth=self.int_(
                "RESOURCE_DATA_MAX_DEPTH", d.resource_data_max_depth, minimum=1, maximum=100
            ),
            shard_near_capacity_percent=self.float_(
                "SHARD_NEAR_CAPACITY_PERCENT", d.shard_near_capacity_percent, minimum=1, maximum=100
            ),
            tenant_usage_top_k=self.int_(
                "TENANT_USAGE_TOP_K", d.tenant_usage_top_k, minimum=10, maximum=100_000
            ),
            tenant_metrics_top=self.int_("TENANT_METRICS_TOP", d.tenant_metrics_top, minimum=0, maximum=100),
            change_retention_seconds=self.float_(
                "CHANGE_RETENTION_SECONDS", d.change_retention_seconds, minimum=60, maximum=366 * 86_400
            ),
            business_retention_days=self.float_(
                "BUSINESS_RETENTION_DAYS", d.business_retention_days, minimum=0, maximum=3650
            ),
            watch_max_streams=self._watch_streams(d),
            watch_buffer_size=self.int_(
                "WATCH_BUFFER_SIZE", d.watch_buffer_size, minimum=1, maximum=1_000_000
            ),
            move_lease_seconds=self.float_(
                "MOVE_LEASE_SECONDS", d.move_lease_seconds, minimum=1, maximum=3600
            ),
            move_scan_seconds=self.float_(
                "MOVE_SCAN_SECONDS", d.move_scan_seconds, minimum=0.1, maximum=3600
            ),
            move_batch_rows=self.int_("MOVE_BATCH_ROWS", d.move_batch_rows, minimum=10, maximum=100_000),
            move_freeze_lag=self.int_("MOVE_FREEZE_LAG", d.move_freeze_lag, minimum=0, maximum=100_000),
        )
