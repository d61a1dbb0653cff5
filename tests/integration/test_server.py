"""The server core over a real loopback channel: health, reflection, error mapping, request context,
access log, metrics, bounded concurrency, port conflicts and graceful shutdown."""

from __future__ import annotations

import json
import logging
import re
import socket
import struct
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any, cast

import grpc
import pytest
from google.rpc import code_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_status import rpc_status
from simplu.v1 import (
    business_pb2,
    business_pb2_grpc,
    resource_pb2,
    resource_pb2_grpc,
    shard_admin_pb2,
    shard_admin_pb2_grpc,
)

from simplu_grpc import context as request_context
from simplu_grpc.errors import ERROR_DOMAIN, FieldViolation, InvalidArgument, NotFound, Reason
from simplu_grpc.interceptors.errors import error_info_of, violations_of
from simplu_grpc.logs import JsonFormatter
from simplu_grpc.server import (
    BUSINESS_SERVICE,
    RESOURCE_SERVICE,
    SHARD_ADMIN_SERVICE,
    Deps,
    Service,
    StartupError,
    build_server,
)
from tests.fixtures.server import MakeServer, RunningServer, core_deps, settings_for
from tests.fixtures.tokens import LocalIssuer

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SIMPLU_SERVICES = (BUSINESS_SERVICE, RESOURCE_SERVICE, SHARD_ADMIN_SERVICE)


class ProbeBusiness(business_pb2_grpc.BusinessServiceServicer):
    """A BusinessService whose GetBusiness behaves according to the business id asked for."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def GetBusiness(self, request: Any, context: grpc.ServicerContext) -> Any:
        match request.business_id:
            case "boom":
                raise RuntimeError("postgresql://app:hunter2@db/x exploded")
            case "invalid":
                raise InvalidArgument(
                    "2 bad fields",
                    violations=[
                        FieldViolation("business_id", "must not contain '-'"),
                        FieldViolation("name", "must not be empty"),
                    ],
                )
            case "missing":
                raise NotFound(
                    "business b1 not found", reason="BUSINESS_NOT_FOUND", metadata={"business_id": "b1"}
                )
            case "unlisted":
                # A reason mypy would refuse: what the interceptor does if one slips through.
                raise NotFound("business u1 not found", reason=cast(Reason, "NO_SUCH_REASON"))
            case "hold":
                self.entered.set()
                if not self.release.wait(timeout=20):
                    raise TimeoutError("test never released the held RPC")
                return business_pb2.Business(id="held")
            case "outlive":
                time.sleep(request_context.deadline().remaining() + 0.2)
                return business_pb2.Business(id="too late")
            case "deadline":
                return business_pb2.Business(name=f"{request_context.deadline().remaining():.3f}")
            case "whoami":
                return business_pb2.Business(
                    id=request_context.request_id(), name=request_context.principal().subject
                )
        return business_pb2.Business(id=request.business_id)


@pytest.fixture
def probe() -> Iterator[ProbeBusiness]:
    servicer = ProbeBusiness()
    yield servicer
    servicer.release.set()  # never leave a pool thread blocked


@pytest.fixture
def core_server(
    make_server: MakeServer, core_auth: dict[str, Any], probe: ProbeBusiness
) -> Callable[..., RunningServer]:
    """``core_server(**settings_overrides)``: a server with the probe BusinessService and core deps."""

    def make(*, deps: Deps | None = None, metrics_port: int = 0, **overrides: Any) -> RunningServer:
        settings = settings_for(**{**core_auth, **overrides})
        return make_server(
            deps=deps or core_deps(settings),
            auth=core_auth,
            servicers={BUSINESS_SERVICE: probe},
            metrics_port=metrics_port,
            readiness_interval_seconds=0.1,
            **overrides,
        )

    return make


@pytest.fixture
def bearer(core_issuer: LocalIssuer) -> Callable[..., list[tuple[str, str]]]:
    """``bearer(sub=...)`` -> call metadata with a fresh valid token of the core issuer."""

    def make(**claims: Any) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {core_issuer.user_token(**claims)}")]

    return make


def get(server: RunningServer, business_id: str, metadata: Any = (), timeout: float | None = 10) -> Any:
    return server.business.GetBusiness(
        business_pb2.GetBusinessRequest(business_id=business_id), metadata=metadata, timeout=timeout
    )


def rpc_error(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def poll(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# --- health and reflection ---------------------------------------------------------------


def test_health_reports_serving_for_overall_liveness_readiness_and_each_service(core_server: Any) -> None:
    """Health/Check answers SERVING for "", liveness, readiness and each simplu.v1 service, tokenless."""
    server = core_server()
    for name in ("", "liveness", "readiness", *SIMPLU_SERVICES):
        assert server.health_status(name) == SERVING, name
    unknown = rpc_error(lambda: server.health_status("no.such.Service"))
    assert unknown.code() == grpc.StatusCode.NOT_FOUND


def test_service_names_come_from_the_descriptors(core_server: Any) -> None:
    """The health service names are the full names declared in the protos."""
    assert business_pb2.DESCRIPTOR.services_by_name["BusinessService"].full_name == BUSINESS_SERVICE
    assert SIMPLU_SERVICES == (
        "simplu.v1.BusinessService",
        "simplu.v1.ResourceService",
        "simplu.v1.ShardAdminService",
    )


def test_reflection_lists_every_service_without_a_token(core_server: Any) -> None:
    """The Python reflection client sees the three simplu.v1 services, health and reflection itself."""
    server = core_server()
    database = ProtoReflectionDescriptorDatabase(server.channel)
    services = set(database.get_services())
    assert {*SIMPLU_SERVICES, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services
    described = database.FindFileContainingSymbol("simplu.v1.ResourceService")
    assert described.package == "simplu.v1"


def test_reflection_can_be_turned_off(core_server: Any) -> None:
    """With GRPC_REFLECTION off the reflection service is not there."""
    server = core_server(grpc_reflection=False)
    database = ProtoReflectionDescriptorDatabase(server.channel)
    error = rpc_error(lambda: list(database.get_services()))
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED


def test_readiness_follows_dependency_checks_while_liveness_stays_serving(
    core_server: Any, core_auth: Any
) -> None:
    """Readiness is NOT_SERVING while every dependency check fails, SERVING once any passes."""
    reachable = {"dynamodb": False, "citrus": False}

    def failing_check() -> bool:
        raise OSError("connection refused")

    deps = core_deps(settings_for(**core_auth))
    deps.readiness_checks.extend([lambda: reachable["dynamodb"], lambda: reachable["citrus"], failing_check])
    server = core_server(deps=deps)
    assert server.health_status("readiness") == NOT_SERVING
    assert server.health_status("liveness") == SERVING
    reachable["citrus"] = True
    poll(lambda: server.health_status("readiness") == SERVING, what="readiness SERVING")
    reachable["citrus"] = False
    poll(lambda: server.health_status("readiness") == NOT_SERVING, what="readiness NOT_SERVING")
    assert server.health_status("") == SERVING


# --- error mapping -----------------------------------------------------------------------


def test_unimplemented_rpcs_answer_unimplemented(
    make_server: MakeServer, core_auth: Any, bearer: Any
) -> None:
    """Every RPC of a service whose servicer is still the generated base answers UNIMPLEMENTED."""
    settings = settings_for(**core_auth)
    bases = {
        BUSINESS_SERVICE: business_pb2_grpc.BusinessServiceServicer(),
        RESOURCE_SERVICE: resource_pb2_grpc.ResourceServiceServicer(),
        SHARD_ADMIN_SERVICE: shard_admin_pb2_grpc.ShardAdminServiceServicer(),
    }
    server = make_server(deps=core_deps(settings), auth=core_auth, servicers=bases)
    metadata = bearer()
    for module in (business_pb2, resource_pb2, shard_admin_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                call = server.channel.unary_unary(f"/{service.full_name}/{method.name}")
                error = rpc_error(lambda call=call: call(b"", metadata=metadata, timeout=10))
                assert error.code() == grpc.StatusCode.UNIMPLEMENTED, method.full_name
                assert "not implemented" in error.details()


def test_domain_error_becomes_its_status_with_error_info(core_server: Any, bearer: Any) -> None:
    """A servicer's NotFound reaches the client as NOT_FOUND with ErrorInfo reason, domain, metadata."""
    server = core_server()
    error = rpc_error(lambda: get(server, "missing", bearer()))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "business b1 not found"
    status = rpc_status.from_call(error)
    assert status.code == code_pb2.NOT_FOUND
    info = error_info_of(status)
    assert info is not None
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "BUSINESS_NOT_FOUND",
        ERROR_DOMAIN,
        {"business_id": "b1"},
    )


def test_invalid_argument_carries_bad_request_field_violations(core_server: Any, bearer: Any) -> None:
    """InvalidArgument reaches the client with one BadRequest field violation per bad field."""
    server = core_server()
    error = rpc_error(lambda: get(server, "invalid", bearer()))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(error)
    assert violations_of(status) == [
        ("business_id", "must not contain '-'"),
        ("name", "must not be empty"),
    ]
    assert error_info_of(status).reason == "INVALID_ARGUMENT"


def test_unknown_exception_is_internal_with_a_generic_message(
    core_server: Any, bearer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """An unexpected exception answers INTERNAL naming only the request id; the traceback is logged only."""
    server = core_server()
    metadata = [*bearer(), ("x-request-id", "req-boom-1")]
    with caplog.at_level(logging.ERROR):
        error = rpc_error(lambda: get(server, "boom", metadata))
    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details() == "internal error (request id req-boom-1)"
    assert ("x-request-id", "req-boom-1") in [(m.key, m.value) for m in error.initial_metadata()]
    trailing = repr(error.trailing_metadata())
    for secret in ("hunter2", "RuntimeError", "Traceback", "exploded"):
        assert secret not in error.details()
        assert secret not in trailing
    assert error_info_of(rpc_status.from_call(error)).reason == "INTERNAL"
    logged = [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], RuntimeError)]
    assert logged, "the traceback must be logged"
    assert "hunter2" not in JsonFormatter().format(logged[0]), "the log line redacts the DSN password"


def test_a_reason_outside_the_error_reason_enum_is_never_sent(
    core_server: Any, bearer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """An error whose reason is not in simplu.v1.ErrorReason is answered INTERNAL (reason INTERNAL,
    the generic message) and logged: a caller only ever sees reasons the contract lists."""
    server = core_server()
    metadata = [*bearer(), ("x-request-id", "req-unlisted-1")]
    with caplog.at_level(logging.ERROR):
        error = rpc_error(lambda: get(server, "unlisted", metadata))
    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details() == "internal error (request id req-unlisted-1)"
    info = error_info_of(rpc_status.from_call(error))
    assert (info.reason, info.domain) == ("INTERNAL", ERROR_DOMAIN)
    assert "NO_SUCH_REASON" not in repr(error.trailing_metadata())
    assert any("'NO_SUCH_REASON'" in record.getMessage() for record in caplog.records)


def test_auth_rejection_passes_through_error_mapping(core_server: Any) -> None:
    """A call without a token is UNAUTHENTICATED with reason MISSING_TOKEN (not turned into INTERNAL)."""
    server = core_server()
    error = rpc_error(lambda: get(server, "anything"))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info_of(rpc_status.from_call(error)).reason == "MISSING_TOKEN"


# --- request context ---------------------------------------------------------------------


def test_request_id_is_taken_from_metadata_when_sane_and_echoed(
    core_server: Any, bearer: Any, core_issuer: Any
) -> None:
    """A sane x-request-id is used and echoed; a hostile one is replaced by a generated id."""
    server = core_server()
    token = core_issuer.user_token(sub="sub-42")
    auth = [("authorization", f"Bearer {token}")]
    reply, call = server.business.GetBusiness.with_call(
        business_pb2.GetBusinessRequest(business_id="whoami"),
        metadata=[*auth, ("x-request-id", "trace-abc.123")],
        timeout=10,
    )
    assert reply.id == "trace-abc.123"
    assert reply.name == "sub-42"
    assert ("x-request-id", "trace-abc.123") in [(m.key, m.value) for m in call.initial_metadata()]

    reply, call = server.business.GetBusiness.with_call(
        business_pb2.GetBusinessRequest(business_id="whoami"),
        metadata=[*auth, ("x-request-id", "x" * 300 + " ;<script>")],
        timeout=10,
    )
    assert re.fullmatch(r"[0-9a-f]{32}", reply.id)
    assert ("x-request-id", reply.id) in [(m.key, m.value) for m in call.initial_metadata()]


def test_deadline_is_the_callers_or_the_default(core_server: Any, bearer: Any) -> None:
    """Servicers see the caller's deadline, or DEFAULT_DEADLINE_SECONDS when the caller set none."""
    server = core_server(default_deadline_seconds=7.0)
    with_deadline = float(get(server, "deadline", bearer(), timeout=3).name)
    # The grpc-timeout header is rounded up on the wire, so the server may see a few ms more
    # than the caller's 3 s; what matters is that it is the caller's, far from the 7 s default.
    assert 1.0 < with_deadline < 3.1
    without = float(get(server, "deadline", bearer(), timeout=None).name)
    assert 6.0 < without <= 7.0


# --- access log and metrics --------------------------------------------------------------


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def json_lines() -> Iterator[_Lines]:
    handler = _Lines()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(previous)


def test_access_log_is_one_json_line_with_request_context_and_never_the_token(
    core_server: Any, core_issuer: LocalIssuer, json_lines: _Lines
) -> None:
    """One JSON access line per RPC (request id, method, principal, code, duration); never a token."""
    server = core_server()
    token = core_issuer.user_token(sub="sub-log")
    get(server, "ok", [("authorization", f"Bearer {token}"), ("x-request-id", "log-1")])
    forged = LocalIssuer.tampered(token, sub="someone-else")
    rpc_error(lambda: get(server, "ok", [("authorization", f"Bearer {forged}"), ("x-request-id", "log-2")]))

    entries = [json.loads(line) for line in json_lines.lines]
    access = [e for e in entries if e["logger"] == "simplu_grpc.access"]
    first = next(e for e in access if e.get("request_id") == "log-1")
    assert first["method"] == "/simplu.v1.BusinessService/GetBusiness"
    assert first["principal"] == "user:sub-log"
    assert first["code"] == "OK"
    assert isinstance(first["duration_ms"], float)
    assert first["peer"].startswith("ipv4:127.0.0.1:")
    assert {"time", "level", "message"} <= first.keys()
    second = next(e for e in access if e.get("request_id") == "log-2")
    assert second["code"] == "UNAUTHENTICATED"
    assert "principal" not in second
    assert len([e for e in access if e.get("request_id") in {"log-1", "log-2"}]) == 2
    everything = "\n".join(json_lines.lines)
    signature = token.rsplit(".", 1)[1]
    for secret in (token, forged, signature):
        assert secret not in everything


def test_an_rpc_that_outlives_its_deadline_is_logged_as_deadline_exceeded(
    core_server: Any, bearer: Any, json_lines: _Lines
) -> None:
    """When the caller's deadline passes before the servicer answers, the access line says
    DEADLINE_EXCEEDED (what the caller saw), not OK."""
    server = core_server()
    metadata = [*bearer(), ("x-request-id", "late-1")]
    error = rpc_error(lambda: get(server, "outlive", metadata, timeout=1.0))
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    def access_line() -> dict[str, Any] | None:
        for line in list(json_lines.lines):
            entry = json.loads(line)
            if entry["logger"] == "simplu_grpc.access" and entry.get("request_id") == "late-1":
                return entry
        return None

    poll(lambda: access_line() is not None, what="the access line")
    entry = access_line()
    assert entry is not None
    assert entry["code"] == "DEADLINE_EXCEEDED"


def test_metrics_endpoint_counts_rpcs_by_method_and_code(core_server: Any, bearer: Any) -> None:
    """/metrics on its own port counts each RPC under its method and final status code."""
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    server = core_server(metrics_port=port)
    get(server, "ok", bearer())
    rpc_error(lambda: get(server, "missing", bearer()))
    rpc_error(lambda: get(server, "missing", bearer()))
    rpc_error(lambda: get(server, "nobody"))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    method = "/simplu.v1.BusinessService/GetBusiness"

    def count(code: str) -> float:
        pattern = rf'simplu_grpc_requests_total\{{code="{code}",method="{method}"\}} ([0-9.]+)'
        found = re.search(pattern, text)
        return float(found.group(1)) if found else 0.0

    assert (count("OK"), count("NOT_FOUND"), count("UNAUTHENTICATED")) == (1.0, 2.0, 1.0)
    assert f'simplu_grpc_request_seconds_count{{method="{method}"}} 4.0' in text


def test_metrics_have_no_created_series_and_watch_streams_are_not_timed(
    core_server: Any, bearer: Any
) -> None:
    """/metrics carries no ``_created`` series, and a health Watch stream is counted but kept out of
    the latency histogram (its duration is the watcher's patience, not a latency)."""
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    server = core_server(metrics_port=port)
    get(server, "ok", bearer())
    watch = server.health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
    assert next(watch).status == SERVING
    watch.cancel()
    watch_method = "/grpc.health.v1.Health/Watch"

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return str(response.read().decode())

    poll(lambda: f'method="{watch_method}"' in scrape(), what="the Watch stream to be counted")
    text = scrape()
    assert re.search(rf'simplu_grpc_requests_total\{{code="\w+",method="{watch_method}"\}} 1\.0', text)
    assert f'simplu_grpc_request_seconds_count{{method="{watch_method}"}}' not in text
    assert 'simplu_grpc_request_seconds_count{method="/simplu.v1.BusinessService/GetBusiness"} 1.0' in text
    assert "_created" not in text


# --- capacity, ports, shutdown -------------------------------------------------------------


def test_concurrency_beyond_the_bound_is_resource_exhausted(
    core_server: Any, probe: ProbeBusiness, bearer: Any
) -> None:
    """With GRPC_MAX_CONCURRENT_RPCS=1 and one RPC in flight, the next one gets RESOURCE_EXHAUSTED."""
    server = core_server(grpc_max_concurrent_rpcs=1)
    held = server.business.GetBusiness.future(
        business_pb2.GetBusinessRequest(business_id="hold"), metadata=bearer(), timeout=20
    )
    assert probe.entered.wait(10)
    error = rpc_error(lambda: get(server, "ok", bearer()))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    probe.release.set()
    assert held.result(timeout=10).id == "held"
    assert get(server, "ok", bearer()).id == "ok"


def test_health_answers_and_a_call_waits_its_deadline_out_while_every_worker_is_busy(
    core_server: Any, probe: ProbeBusiness, bearer: Any
) -> None:
    """With GRPC_MAX_WORKERS=1 and that worker busy, health checks are still answered (their own
    threads, no work slot), and another call waits for the slot until its deadline:
    DEADLINE_EXCEEDED, then served once the worker is free."""
    server = core_server(grpc_max_workers=1)
    held = server.business.GetBusiness.future(
        business_pb2.GetBusinessRequest(business_id="hold"), metadata=bearer(), timeout=20
    )
    assert probe.entered.wait(10)
    for _ in range(5):
        assert server.health_status(timeout=5) == SERVING
    error = rpc_error(lambda: get(server, "ok", bearer(), timeout=0.5))
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    probe.release.set()
    assert held.result(timeout=10).id == "held"
    assert get(server, "ok", bearer()).id == "ok"


def test_a_port_in_use_is_a_clear_startup_error(core_server: Any, core_auth: Any) -> None:
    """Binding a port someone listens on fails with StartupError naming port and host."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        settings = settings_for(**core_auth, grpc_port=port)
        with pytest.raises(StartupError, match=rf"^port {port} on 127\.0\.0\.1 is already in use$"):
            build_server(settings, core_deps(settings))


def test_a_second_server_cannot_share_the_port_unless_running_workers(
    core_server: Any, core_auth: Any
) -> None:
    """SO_REUSEPORT is off for one worker (a second server fails) and on with several workers."""
    first = core_server()
    single = settings_for(**core_auth, grpc_port=first.port)
    with pytest.raises(StartupError, match="already in use"):
        build_server(single, core_deps(single))

    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    shared = settings_for(**core_auth, grpc_port=port, workers=2)
    one, port_one = build_server(shared, core_deps(shared))
    two, port_two = build_server(shared, core_deps(shared))
    try:
        assert port_one == port_two == port
    finally:
        one.stop(0)
        two.stop(0)


def test_graceful_shutdown_flips_readiness_first_finishes_in_flight_and_refuses_new(
    core_server: Any, probe: ProbeBusiness, bearer: Any
) -> None:
    """On shutdown readiness goes NOT_SERVING while an in-flight RPC is still running; that RPC
    completes; new RPCs are refused; the service then reports stopped."""
    server = core_server()
    watch_channel = server.new_channel()
    watch = health_pb2_grpc.HealthStub(watch_channel).Watch(
        health_pb2.HealthCheckRequest(service="readiness"), timeout=30
    )
    try:
        assert next(watch).status == SERVING
        held = server.business.GetBusiness.future(
            business_pb2.GetBusinessRequest(business_id="hold"), metadata=bearer(), timeout=30
        )
        assert probe.entered.wait(10)

        stopper = threading.Thread(target=server.service.shutdown, kwargs={"grace": 20})
        stopper.start()
        assert next(watch).status == NOT_SERVING  # readiness flipped while the RPC is in flight
        assert not held.done()

        def refused() -> bool:
            try:
                get(server, "ok", bearer(), timeout=2)
            except grpc.RpcError as exc:
                return exc.code() == grpc.StatusCode.UNAVAILABLE
            return False

        poll(refused, what="new RPCs refused")
        assert not held.done()
        probe.release.set()
        assert held.result(timeout=10).id == "held"
        stopper.join(timeout=20)
        assert not stopper.is_alive()
        assert list(watch) == []  # the Watch stream was ended, not left to run out the grace
    finally:
        watch.cancel()
        watch_channel.close()


def test_open_watch_streams_do_not_hold_shutdown_for_the_grace_period(core_server: Any) -> None:
    """A health Watch stream gets NOT_SERVING and then ends, so shutdown needs no grace at all."""
    server = core_server()
    watch = server.health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
    assert next(watch).status == SERVING
    started = time.monotonic()
    server.service.shutdown(grace=20)
    assert time.monotonic() - started < 5
    assert [reply.status for reply in watch] == [NOT_SERVING]


def test_shutdown_closes_dependencies_after_the_server_stopped(core_auth: Any) -> None:
    """Shutdown closes every dependency (last registered first) only once the server has stopped,
    and a second shutdown is a no-op."""
    settings = settings_for(**core_auth)
    deps = core_deps(settings)
    events: list[str] = []
    service = Service(settings, deps)
    deps.closers.append(lambda: events.append("pools"))
    deps.closers.append(lambda: events.append("citrus"))
    original_stop = service.server.stop

    def stop(grace: float | None) -> Any:
        events.append("server stopped")
        return original_stop(grace)

    service.server.stop = stop  # type: ignore[method-assign]  # observe the stop the service makes
    service.start()
    service.shutdown(grace=0)
    service.shutdown(grace=0)
    assert events == ["server stopped", "citrus", "pools"]
    assert service.health.servicer.Check(health_pb2.HealthCheckRequest(service="readiness"), None).status == (
        NOT_SERVING
    )


def test_the_default_fixture_serves_real_dependencies_and_accepts_moto_tokens(
    grpc_server: RunningServer, admin_token: str
) -> None:
    """The shared ``grpc_server`` fixture (wiring.build_deps, moto's pool) lets a real Cognito token
    through the auth interceptor and refuses a call without one."""
    assert grpc_server.health_status("liveness") == SERVING
    request = business_pb2.GetMyAccessRequest()
    denied = rpc_error(lambda: grpc_server.business.GetMyAccess(request, timeout=10))
    assert denied.code() == grpc.StatusCode.UNAUTHENTICATED
    metadata = [("authorization", f"Bearer {admin_token}")]
    try:
        grpc_server.business.GetMyAccess(request, metadata=metadata, timeout=10)
        code = grpc.StatusCode.OK
    except grpc.RpcError as exc:
        code = exc.code()  # e.g. INVALID_ARGUMENT: the servicer answered, so auth let it through
    assert code != grpc.StatusCode.UNAUTHENTICATED


def _length_delimited(field_number: int, payload: bytes) -> bytes:
    """One protobuf length-delimited field (tag, varint length, bytes), encoded by hand."""
    tag = (field_number << 3) | 2
    length = len(payload)
    varint = bytearray()
    while True:
        byte = length & 0x7F
        length >>= 7
        varint.append(byte | (0x80 if length else 0))
        if not length:
            break
    return bytes([tag]) + bytes(varint) + payload


def _struct_nested(levels: int) -> bytes:
    """A google.protobuf.Struct {"k": {"k": ... {"leaf": 1.0}}} ``levels`` deep, as bytes: the
    Python protobuf would refuse to build (or re-parse) it past its own recursion limit."""
    value = b"\x11" + struct.pack("<d", 1.0)  # Value.number_value = 1.0
    body = _length_delimited(1, _length_delimited(1, b"leaf") + _length_delimited(2, value))
    for _ in range(levels):
        value = _length_delimited(5, body)  # Value.struct_value
        body = _length_delimited(1, _length_delimited(1, b"k") + _length_delimited(2, value))  # fields entry
    return body


def test_an_undecodable_request_is_invalid_argument_on_every_simplu_service(
    core_server: Any, bearer: Any
) -> None:
    """A CreateBusiness whose settings.extras is nested 200 levels (past protobuf's parser limit)
    is INVALID_ARGUMENT with a violation on the request, through the interceptors, not grpcio's
    INTERNAL "Exception deserializing request!"; so is a CreateResource with such data."""
    server = core_server()
    settings = _length_delimited(8, _struct_nested(200))  # BusinessSettings.extras
    business = _length_delimited(2, b"Deep") + _length_delimited(5, settings)  # Business.name, .settings
    cases = {"/simplu.v1.BusinessService/CreateBusiness": _length_delimited(1, business)}
    resource_data_field = resource_pb2.Resource.DESCRIPTOR.fields_by_name["data"].number
    resource = _length_delimited(resource_data_field, _struct_nested(200))
    cases["/simplu.v1.ResourceService/CreateResource"] = _length_delimited(1, resource)
    for method, raw in cases.items():
        call = server.channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        error = rpc_error(lambda call=call, raw=raw: call(raw, metadata=bearer(), timeout=10))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, error.code(), error.details())
        status = rpc_status.from_call(error)
        assert status is not None
        assert [field for field, _ in violations_of(status)] == ["request"], method
