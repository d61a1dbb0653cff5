"""The gRPC server: ``build_server`` (unstarted), ``Service`` and ``serve``; built from ``deps.Deps``.

``build_server(settings, deps)`` returns ``(grpc.Server, port)`` unstarted, so tests build
a real server on ``127.0.0.1:0`` with the dependencies they choose. ``Service`` adds the
lifecycle (start, readiness loop, graceful shutdown); ``serve(settings)`` is what
``simplu-grpc serve`` runs: one process, or ``--workers N`` processes sharing the port.
"""

from __future__ import annotations

import errno
import logging
import multiprocessing
import signal
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_for_processes
from types import FrameType
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from simplu.v1 import business_pb2, resource_pb2, shard_admin_pb2

from simplu_grpc import tracing
from simplu_grpc.deps import Deps
from simplu_grpc.health import HEALTH_SERVICE_NAME, ServerHealth
from simplu_grpc.interceptors.access_log import AccessLogInterceptor
from simplu_grpc.interceptors.auth import AuthInterceptor
from simplu_grpc.interceptors.errors import ErrorMappingInterceptor
from simplu_grpc.interceptors.metrics import MetricsInterceptor
from simplu_grpc.interceptors.tracing import TracingInterceptor
from simplu_grpc.interceptors.work_slots import WorkSlotsInterceptor
from simplu_grpc.logs import configure_logging
from simplu_grpc.services.business import BusinessServicer
from simplu_grpc.services.resource import ResourceServicer
from simplu_grpc.services.servicers import add_service
from simplu_grpc.services.shard_admin import ShardAdminServicer
from simplu_grpc.settings import Settings
from simplu_grpc.tls import ReloadingCertificates
from simplu_grpc.wiring import build_deps

log = logging.getLogger(__name__)

BUSINESS_SERVICE: str = business_pb2.DESCRIPTOR.services_by_name["BusinessService"].full_name
RESOURCE_SERVICE: str = resource_pb2.DESCRIPTOR.services_by_name["ResourceService"].full_name
SHARD_ADMIN_SERVICE: str = shard_admin_pb2.DESCRIPTOR.services_by_name["ShardAdminService"].full_name

# gRPC's default is 4 MiB too; stated so a resource (<= 256 KiB of data) or a page of them
# has a known ceiling, and raising it is a deliberate change.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
READINESS_INTERVAL_SECONDS = 5.0


class StartupError(RuntimeError):
    """The server cannot start (port in use, address not available); the message says why."""


@dataclass(frozen=True)
class Registration:
    """One simplu.v1 service: its descriptor and the servicer.

    Registered with ``services.servicers.add_service``, not the generated ``add_*``: an
    undecodable request (a Struct nested past protobuf's parser limit) must be
    INVALID_ARGUMENT, not grpcio's INTERNAL.
    """

    service: ServiceDescriptor
    servicer: Any

    @property
    def name(self) -> str:
        return self.service.full_name


def simplu_services(settings: Settings, deps: Deps) -> list[Registration]:
    """The simplu.v1 services this server answers, each from its use cases in ``deps``."""
    return [
        Registration(
            business_pb2.DESCRIPTOR.services_by_name["BusinessService"],
            BusinessServicer(
                deps.business_ops,
                deps.business_lifecycle,
                deps.business_discovery,
                invitations=deps.invitation_ops,
                team=deps.team_ops,
            ),
        ),
        Registration(
            resource_pb2.DESCRIPTOR.services_by_name["ResourceService"],
            ResourceServicer(
                deps.resource_ops, response_max_bytes=settings.response_max_bytes, watch=deps.watch_ops
            ),
        ),
        Registration(
            shard_admin_pb2.DESCRIPTOR.services_by_name["ShardAdminService"],
            ShardAdminServicer(admin=deps.shard_admin, authorizer=deps.authorizer, moves=deps.location_moves),
        ),
    ]


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """Channel arguments for the listening server."""
    return [
        # Off unless several worker processes share the port: with it on, a second server
        # on a busy port would silently share it instead of failing at start.
        ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        # Find dead peers (a client behind a NAT that dropped the flow) within ~1.5 min.
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # Accept client keepalive pings as often as every 10 s instead of answering GOAWAY.
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 0),
        *_connection_age(settings),
    ]


def _connection_age(settings: Settings) -> list[tuple[str, int]]:
    """GOAWAY after GRPC_MAX_CONNECTION_AGE_SECONDS (with a jitter of grpc's own), so clients
    re-resolve and new pods get traffic; in-flight calls get a grace period to finish."""
    if not settings.grpc_max_connection_age_seconds:
        return []
    age_ms = int(settings.grpc_max_connection_age_seconds * 1000)
    return [
        ("grpc.max_connection_age_ms", age_ms),
        ("grpc.max_connection_age_grace_ms", int(settings.shutdown_grace_seconds * 1000)),
    ]


def interceptors(settings: Settings, deps: Deps) -> list[grpc.ServerInterceptor]:
    """The interceptor chain, outermost first. The order is the design; the reasons:

    1. access log — outermost, so the request id and deadline are bound for everything
       below and the access line sees every outcome, rejections by auth included;
    2. metrics — counts every RPC by its final code, unauthenticated ones included, and
       times the whole of the work (auth and servicer);
    3. work slots — at most GRPC_MAX_WORKERS RPCs do Python work at once (the transport has
       a thread for every admitted call); inside observation, so the wait is logged and
       timed; health and reflection never wait;
    4. auth — after observation (a rejected call is still logged and counted), before any
       servicer code; health and reflection are exempt;
    5. error mapping — innermost, right around the servicer, so a domain error becomes its
       status before anything outside looks at the code.

    While tracing is on, a tracing interceptor comes first of all: its span is current for
    everything below, so the access line and the child spans carry its trace id. Off, it is
    not installed at all.
    """
    traced: list[grpc.ServerInterceptor] = [TracingInterceptor()] if tracing.enabled() else []
    return [
        *traced,
        AccessLogInterceptor(default_deadline_seconds=settings.default_deadline_seconds),
        MetricsInterceptor(deps.metrics),
        WorkSlotsInterceptor(settings.grpc_max_workers),
        AuthInterceptor(deps.verifier),
        ErrorMappingInterceptor(),
    ]


def transport(settings: Settings, *, interceptors: Sequence[grpc.ServerInterceptor] = ()) -> grpc.Server:
    """The gRPC server with no services yet: thread pool, options, concurrency limit.

    One place, so the bench's bare echo server (bench/echo.py) runs on exactly this transport.
    """
    # A thread for every call admitted (GRPC_MAX_CONCURRENT_RPCS): grpc's threaded server gives a
    # call its thread before the request message arrives, so a client that never sends it
    # holds that thread; with fewer threads than admitted calls, such clients can take them
    # all (issue 9). The threads are made on demand; how many do Python work at once is
    # bounded by the work slots (GRPC_MAX_WORKERS, interceptors/work_slots.py).
    # A watch stream counts against GRPC_MAX_CONCURRENT_RPCS for its whole life (grpc admits
    # calls before it knows their kind) but never takes one of these threads: it runs on its own
    # (stream_threads), and WATCH_MAX_STREAMS keeps streams from taking every admission.
    threads = max(settings.grpc_max_workers, settings.grpc_max_concurrent_rpcs)
    return grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="simplu-rpc"),
        interceptors=list(interceptors),
        options=server_options(settings),
        maximum_concurrent_rpcs=settings.grpc_max_concurrent_rpcs,
    )


def stream_threads(settings: Settings) -> futures.ThreadPoolExecutor:
    """The threads server-streaming calls (WatchResources) run on: grpc's threaded server keeps
    a stream on one thread for its life, so streams get threads of their own (made on demand,
    one per stream, idle ones asleep on a condition) and never take the unary calls' pool."""
    return futures.ThreadPoolExecutor(
        max_workers=max(1, settings.watch_max_streams), thread_name_prefix="simplu-watch"
    )


def build_server(
    settings: Settings,
    deps: Deps,
    *,
    health: ServerHealth | None = None,
    servicers: Mapping[str, Any] | None = None,
    extra_handlers: Sequence[grpc.GenericRpcHandler] = (),
) -> tuple[grpc.Server, int]:
    """A configured, bound, unstarted server and the port it is bound to.

    ``servicers`` replaces the servicer of a simplu.v1 service by full name (tests);
    ``extra_handlers`` adds services outside simplu.v1 (tests). Raises ``StartupError``
    when the address cannot be bound.
    """
    registrations = simplu_services(settings, deps)
    overrides = dict(servicers or {})
    unknown = set(overrides) - {r.name for r in registrations}
    if unknown:
        raise ValueError(f"no such service to override: {sorted(unknown)}")
    health = health or ServerHealth()
    health.add_services(r.name for r in registrations)

    server = transport(settings, interceptors=interceptors(settings, deps))
    streams = stream_threads(settings)
    for registration in registrations:
        add_service(
            registration.service,
            overrides.get(registration.name, registration.servicer),
            server,
            stream_threads=streams,
        )
    health_pb2_grpc.add_HealthServicer_to_server(health.registered, server)
    if extra_handlers:
        server.add_generic_rpc_handlers(tuple(extra_handlers))
    if settings.grpc_reflection:
        names = [r.name for r in registrations]
        reflection.enable_server_reflection((*names, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = _bind(server, settings.grpc_host, settings.grpc_port, server_credentials(settings))
    return server, port


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS (mTLS with a client CA) from GRPC_TLS_* files, reloaded when they change; None: plaintext."""
    if settings.grpc_tls_cert_file is None or settings.grpc_tls_key_file is None:
        return None
    try:
        certificates = ReloadingCertificates(
            settings.grpc_tls_cert_file, settings.grpc_tls_key_file, settings.grpc_tls_client_ca_file
        )
    except (OSError, ValueError) as exc:
        raise StartupError(f"TLS certificate files: {exc}") from exc
    return certificates.credentials()


def _bind(
    server: grpc.Server, host: str, port: int, credentials: grpc.ServerCredentials | None = None
) -> int:
    address = f"{host}:{port}"
    try:
        if credentials is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, credentials)
    except RuntimeError:
        bound = 0
    if bound == 0:
        server.stop(None)
        raise StartupError(_bind_failure(host, port))
    return bound


def _bind_failure(host: str, port: int) -> str:
    """Why ``host:port`` cannot be bound, found out by trying with a plain socket."""
    plain_host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(plain_host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, sockaddr = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.bind(sockaddr)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return f"port {port} on {host} is already in use"
        return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return f"cannot listen on {host}:{port} (grpc refused the address)"


class Service:
    """One running server: start, readiness loop, graceful shutdown, dependencies closed last."""

    def __init__(
        self,
        settings: Settings,
        deps: Deps,
        *,
        servicers: Mapping[str, Any] | None = None,
        extra_handlers: Sequence[grpc.GenericRpcHandler] = (),
        close_deps: bool = True,
        readiness_interval_seconds: float = READINESS_INTERVAL_SECONDS,
    ) -> None:
        self.settings = settings
        self.deps = deps
        self.health = ServerHealth(readiness_checks=deps.readiness_checks)
        self.server, self.port = build_server(
            settings, deps, health=self.health, servicers=servicers, extra_handlers=extra_handlers
        )
        self._close_deps = close_deps
        self._readiness_interval = readiness_interval_seconds
        self._stop_metrics: Callable[[], None] | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._shutdown_started = False

    def start(self, *, metrics_port: int = 0) -> None:
        """Start serving; expose /metrics on ``metrics_port`` unless it is 0."""
        if metrics_port:
            try:
                self._stop_metrics = self.deps.metrics.serve(metrics_port, addr=self.settings.metrics_host)
            except OSError as exc:
                raise StartupError(f"metrics port {metrics_port}: {exc.strerror or exc}") from exc
        self.server.start()
        self.health.start_readiness_loop(self._readiness_interval)
        log.info(
            "serving on %s:%s",
            self.settings.grpc_host,
            self.port,
            extra={"port": self.port, "metrics_port": metrics_port or None},
        )

    def shutdown(self, grace: float | None = None) -> None:
        """Stop gracefully (idempotent): readiness NOT_SERVING first, then in-flight RPCs get ``grace``
        seconds while new ones are refused, then dependencies and the metrics endpoint close."""
        with self._lock:
            if self._shutdown_started:
                first = False
            else:
                self._shutdown_started = first = True
        if not first:
            self._stopped.wait()
            return
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        log.info("shutting down (grace %.1fs)", grace)
        try:
            self.health.enter_graceful_shutdown()
            if self.deps.watch_ops is not None:
                # Streams never finish on their own: end them now, each with its resume token
                # (UNAVAILABLE, WATCH_INTERRUPTED), so the grace is left to the unary calls.
                self.deps.watch_ops.shutdown()
            self.server.stop(grace).wait()
            self.health.close()
            if self._close_deps:
                self.deps.close()
            if self._stop_metrics is not None:
                self._stop_metrics()
        finally:
            self._stopped.set()
            log.info("stopped")

    def wait(self) -> None:
        """Block until ``shutdown`` has finished."""
        self._stopped.wait()


def serve(settings: Settings) -> None:
    """Run the server until SIGTERM/SIGINT: one process, or ``settings.workers`` sharing the port."""
    configure_logging(settings.log_level)
    if settings.workers > 1:
        _serve_workers(settings)
    else:
        _serve_one(settings, worker=0)


def _serve_one(settings: Settings, *, worker: int) -> None:
    stop_tracing = tracing.configure(settings.otel_traces_exporter, settings.otel_service_name)
    deps = build_deps(settings)
    try:
        service = Service(settings, deps)
    except BaseException:
        deps.close()
        stop_tracing()
        raise
    stop_requested = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stop_requested.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # With several workers each exposes its own /metrics: metrics_port + worker index.
    metrics_port = settings.metrics_port + worker if settings.metrics_port else 0
    try:
        service.start(metrics_port=metrics_port)
    except BaseException:
        service.shutdown(grace=0)
        raise
    # Wake up periodically: a bare Event.wait() in the main thread delays signal handling.
    while not stop_requested.wait(timeout=1.0):
        pass
    service.shutdown()
    stop_tracing()  # flushes the spans still batched


def _worker_main(settings: Settings, worker: int) -> None:
    """Entry point of one worker process (spawned, so nothing is inherited but ``settings``)."""
    configure_logging(settings.log_level)
    try:
        _serve_one(settings, worker=worker)
    except StartupError as exc:
        log.error("worker %d cannot start: %s", worker, exc)
        raise SystemExit(1) from None


def _serve_workers(settings: Settings) -> None:
    """Spawn ``settings.workers`` processes sharing the port (SO_REUSEPORT); forward SIGTERM/SIGINT."""
    if settings.grpc_port == 0:
        raise StartupError("--workers needs a fixed GRPC_PORT: port 0 would give each worker its own port")
    # Fail early and clearly when someone else holds the port (workers would each fail).
    probe_settings_port(settings)
    spawn = multiprocessing.get_context("spawn")
    processes = [
        spawn.Process(target=_worker_main, args=(settings, index), name=f"simplu-worker-{index}")
        for index in range(settings.workers)
    ]
    stopping = threading.Event()

    def forward(signum: int, _frame: FrameType | None) -> None:
        stopping.set()
        for process in processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: each worker shuts down gracefully

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for process in processes:
        process.start()
    log.info("started %d workers on port %d", len(processes), settings.grpc_port)
    exit_code = 0
    remaining = list(processes)
    while remaining:
        ended = wait_for_processes([p.sentinel for p in remaining], timeout=1.0)
        for process in [p for p in remaining if p.sentinel in ended]:
            process.join()
            remaining.remove(process)
            if not stopping.is_set():
                # A worker died on its own: stop the rest so the supervisor restarts us whole.
                log.error("worker %s exited with %s; stopping the others", process.name, process.exitcode)
                exit_code = 1
                forward(signal.SIGTERM, None)
    if exit_code:
        raise SystemExit(exit_code)


def probe_settings_port(settings: Settings) -> None:
    """Raise ``StartupError`` when the configured port is taken (checked with a plain socket)."""
    plain_host = settings.grpc_host.strip("[]")
    infos = socket.getaddrinfo(
        plain_host or None, settings.grpc_port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    family, kind, proto, _, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as probe:
        try:
            probe.bind(sockaddr)
        except OSError as exc:
            raise StartupError(_bind_failure(settings.grpc_host, settings.grpc_port)) from exc
