"""`simplu-grpc serve` as an operator runs it: configuration errors, port conflicts, SIGTERM, --workers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from simplu_grpc import cli
from tests.fixtures.server import CORE_CLIENT_ID, CORE_POOL_ID
from tests.fixtures.tokens import LocalIssuer

SERVING = health_pb2.HealthCheckResponse.SERVING


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def serve_env(core_issuer: LocalIssuer) -> dict[str, str]:
    """Environment for a `serve` subprocess on a free loopback port, metrics off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRPC_", "COGNITO_", "SIMPLU_"))}
    env.update(
        GRPC_HOST="127.0.0.1",
        GRPC_PORT=str(free_port()),
        METRICS_PORT="0",
        SHUTDOWN_GRACE_SECONDS="2",
        COGNITO_USER_POOL_ID=CORE_POOL_ID,
        COGNITO_CLIENT_ID=CORE_CLIENT_ID,
        COGNITO_JWKS_URL=core_issuer.jwks_url,
    )
    return env


@pytest.fixture
def spawn() -> Iterator[Any]:
    """Start `python -m simplu_grpc.cli ...`; anything still running at the end is killed."""
    started: list[subprocess.Popen[str]] = []

    def run(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-m", "simplu_grpc.cli", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        return process

    yield run
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


def wait_serving(port: int, process: subprocess.Popen[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if process.poll() is not None:
                raise AssertionError(f"server exited early: {process.communicate()[1]}")
            try:
                # Liveness: readiness also depends on DynamoDB, which these tests do not run.
                reply = stub.Check(health_pb2.HealthCheckRequest(service="liveness"), timeout=1)
                if reply.status == SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("server never answered its liveness check")
            time.sleep(0.1)


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_configuration_error_names_the_variable_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing or bad variable prints `configuration error: <message>` and exits with status 2."""
    for name in ("COGNITO_USER_POOL_ID", "COGNITO_CLIENT_ID", "GRPC_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COGNITO_CLIENT_ID", "c")
    assert cli.main(["serve"]) == 2
    assert capsys.readouterr().err.startswith("configuration error: COGNITO_USER_POOL_ID is required")
    monkeypatch.setenv("COGNITO_USER_POOL_ID", "us-east-1_x")
    monkeypatch.setenv("GRPC_PORT", "fifty")
    assert cli.main(["migrate"]) == 2
    assert "configuration error: GRPC_PORT must be an integer" in capsys.readouterr().err


def test_every_bad_variable_is_named_in_one_go(serve_env: dict[str, str], spawn: Any) -> None:
    """Three bad variables and a missing one: `serve` exits 2 naming all four, so one fix round is enough."""
    env = {k: v for k, v in serve_env.items() if k != "COGNITO_USER_POOL_ID"}
    env.update(GRPC_PORT="fifty", CITRUS_RETRY_ATTEMPTS="99", LOG_LEVEL="LOUD")
    process = spawn("serve", env=env)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 2, stderr
    assert stderr.startswith("configuration error: 4 problems:"), stderr
    for name in ("COGNITO_USER_POOL_ID", "GRPC_PORT", "CITRUS_RETRY_ATTEMPTS", "LOG_LEVEL"):
        assert name in stderr


@pytest.mark.integration
def test_serve_stops_cleanly_on_sigterm(serve_env: dict[str, str], spawn: Any) -> None:
    """`serve` becomes ready, then on SIGTERM shuts down gracefully and exits 0, logging JSON lines."""
    process = spawn("serve", env=serve_env)
    wait_serving(int(serve_env["GRPC_PORT"]), process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    messages = [json.loads(line)["message"] for line in stderr.splitlines() if line.startswith("{")]
    assert any(m.startswith("serving on 127.0.0.1:") for m in messages)
    assert "received SIGTERM" in messages
    assert messages[-1] == "stopped"


@pytest.mark.integration
def test_serve_on_a_busy_port_fails_with_a_clear_message(serve_env: dict[str, str], spawn: Any) -> None:
    """Another process listening on GRPC_PORT makes `serve` exit 1 saying the port is in use."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        process = spawn("serve", env={**serve_env, "GRPC_PORT": str(port)})
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 1
    assert f"startup error: port {port} on 127.0.0.1 is already in use" in stderr


@pytest.mark.integration
@pytest.mark.slow
def test_serve_with_workers_shares_the_port_and_forwards_sigterm(
    serve_env: dict[str, str], spawn: Any
) -> None:
    """`serve --workers 2` runs two worker processes on one port; SIGTERM to the parent stops them all."""
    process = spawn("serve", "--workers", "2", env=serve_env)
    port = int(serve_env["GRPC_PORT"])
    wait_serving(port, process)
    deadline = time.monotonic() + 30
    while len(workers := [p for p in children_of(process.pid) if _is_worker(p)]) < 2:
        assert time.monotonic() < deadline, "two workers never appeared"
        time.sleep(0.1)
    for _ in range(10):  # new connections are spread by the kernel; every answer is SERVING
        wait_serving(port, process, timeout=5)
    assert len(workers) == 2
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)


def _is_worker(pid: int) -> bool:
    """A spawned worker (not multiprocessing's resource tracker, also a child)."""
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.integration
def test_migrate_applies_the_schema_once_and_never_prints_the_password(
    fresh_database: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`simplu-grpc migrate` in single-database mode migrates the database, then finds nothing to do;
    its output names host:port/db and never the password."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(fresh_database())
    env = {
        "COGNITO_USER_POOL_ID": CORE_POOL_ID,
        "COGNITO_CLIENT_ID": CORE_CLIENT_ID,
        "DATABASE_HOST": parts.hostname or "127.0.0.1",
        "DATABASE_PORT": str(parts.port or 5432),
        "DATABASE_USERNAME": unquote(parts.username or "postgres"),
        "DATABASE_PASSWORD": unquote(parts.password or "") or "pw-never-printed",
        "DATABASE_NAME": unquote(parts.path.lstrip("/")),
    }
    monkeypatch.delenv("CITRUS_SERVER_URL", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["migrate"]) == 0
    first = capsys.readouterr().out
    assert first.startswith(
        f"default ({env['DATABASE_HOST']}:{env['DATABASE_PORT']}/{env['DATABASE_NAME']}): version 0 -> "
    )
    assert cli.main(["migrate"]) == 0
    second = capsys.readouterr().out
    assert "nothing to apply" in second
    assert env["DATABASE_PASSWORD"] not in first + second


def test_migrate_with_citrus_down_prints_one_line_and_exits_1() -> None:
    """`simplu-grpc migrate` when Citrus does not answer (retries included): exactly one
    `error: ...` line on stderr, no traceback, no retry warnings, no API key, exit status 1."""
    api_key = "citrus-key-never-printed"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CITRUS_", "DATABASE_", "COGNITO_"))}
    env.update(
        COGNITO_USER_POOL_ID=CORE_POOL_ID,
        COGNITO_CLIENT_ID=CORE_CLIENT_ID,
        CITRUS_SERVER_URL=f"http://127.0.0.1:{free_port()}",
        CITRUS_API_KEY=api_key,
        CITRUS_TIMEOUT="300",
        CITRUS_RETRY_ATTEMPTS="2",
    )
    finished = subprocess.run(
        [sys.executable, "-m", "simplu_grpc.cli", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert finished.returncode == 1, finished.stderr
    assert finished.stdout == ""
    lines = finished.stderr.splitlines()
    assert len(lines) == 1, finished.stderr
    assert lines[0].startswith("error: "), lines
    assert "Citrus" in lines[0], lines
    assert api_key not in finished.stderr


@pytest.fixture
def ten_proxied_shards(
    make_citrus: Any, moto_server: Any, cognito: Any, local_issuer: LocalIssuer, fault_proxy: Any
) -> tuple[dict[str, str], list[tuple[Any, Any]]]:
    """10 businesses in a moto table, each on its own Citrus emulator shard reached through a fault
    proxy; returns the environment a `serve` process needs for them, and (business, proxy) pairs."""
    from urllib.parse import urlsplit

    from simplu_grpc.adapters.dynamodb.business_store import BusinessStore
    from simplu_grpc.devstack.moto_server import client, create_business_table
    from simplu_grpc.domain.business.model import Business, BusinessType, Location, Permissions, Role
    from simplu_grpc.metrics import Metrics
    from tests.fixtures.citrus import CITRUS_API_KEY

    citrus = make_citrus(capacity=1, initial_shards=10)
    table = f"biz-{os.urandom(4).hex()}"
    create_business_table(moto_server.url, cognito.region, table)
    store = BusinessStore(
        table=table, client=client("dynamodb", moto_server.url, cognito.region), metrics=Metrics()
    )
    businesses = []
    for index in range(10):
        business = Business(
            id=f"b{os.urandom(5).hex()}",
            name=f"Shard test {index}",
            type=BusinessType.DENTAL,
            locations=(Location(id="main", name="main"),),
            permissions=Permissions(roles={"owner": Role(permissions=("*",))}, members={}),
        )
        store.create(business)
        shard = str(citrus.register(business.id, "main", business.type.value)["shardId"])
        direct = citrus.pg.dsn(citrus.shard(shard).database, password=citrus.shard_password)
        target = urlsplit(direct)
        proxy = fault_proxy(target.hostname or "127.0.0.1", target.port or 5432)
        citrus.move_shard(shard, proxy.dsn(direct))
        businesses.append((business, proxy))
    assert len({citrus.registrations()[f"{b.id}-main"] for b, _ in businesses}) == 10
    env = {
        "AWS_REGION": cognito.region,
        "COGNITO_USER_POOL_ID": cognito.pool_id,
        "COGNITO_CLIENT_ID": cognito.client_id,
        "COGNITO_JWKS_URL": local_issuer.jwks_url,
        "DYNAMODB_ENDPOINT": moto_server.url,
        "DYNAMODB_BUSINESS_INFO_TABLE": table,
        "CITRUS_SERVER_URL": citrus.url,
        "CITRUS_API_KEY": CITRUS_API_KEY,
    }
    return env, businesses


@pytest.mark.integration
def test_sigterm_with_10_blackholed_shards_exits_within_the_grace_period(
    spawn: Any, ten_proxied_shards: tuple[dict[str, str], list[tuple[Any, Any]]], admin_token: str
) -> None:
    """`serve` with 10 shards that swallow every packet, each with a request stuck on a query and a
    connection attempt hanging: SIGTERM ends the process within SHUTDOWN_GRACE_SECONDS + 2 s, exit 0."""
    from concurrent.futures import ThreadPoolExecutor

    from simplu.v1 import resource_pb2, resource_pb2_grpc

    shard_env, businesses = ten_proxied_shards
    grace = 2.0
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("GRPC_", "COGNITO_", "SIMPLU_", "CITRUS_"))
    }
    env.update(
        shard_env,
        GRPC_HOST="127.0.0.1",
        GRPC_PORT=str(free_port()),
        METRICS_PORT="0",
        SHUTDOWN_GRACE_SECONDS=str(grace),
        SHARD_CONNECT_TIMEOUT_SECONDS="20",
    )
    process = spawn("serve", env=env)
    port = int(env["GRPC_PORT"])
    wait_serving(port, process)
    metadata = (("authorization", f"Bearer {admin_token}"),)

    def create_request(business: Any) -> resource_pb2.CreateResourceRequest:
        return resource_pb2.CreateResourceRequest(
            resource=resource_pb2.Resource(
                business_id=business.id, location_id="main", resource_type="patients"
            )
        )

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, ThreadPoolExecutor(max_workers=20) as calls:
        stub = resource_pb2_grpc.ResourceServiceStub(channel)
        for business, _ in businesses:  # opens each shard's pool and migrates it
            stub.CreateResource(create_request(business), metadata=metadata, timeout=30)
        for _, proxy in businesses:
            proxy.blackhole()
        stuck = []
        for business, _ in businesses:
            # One request takes the pool's connection and hangs on it (deadline far away) ...
            stuck.append(
                calls.submit(stub.CreateResource, create_request(business), metadata=metadata, timeout=120)
            )
            # ... one more waits, so the pool starts a connection attempt that hangs too.
            with pytest.raises(grpc.RpcError) as short:
                stub.CreateResource(create_request(business), metadata=metadata, timeout=1.0)
            assert short.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert not any(call.done() for call in stuck)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
        took = time.monotonic() - started
        for call in stuck:
            with pytest.raises(grpc.RpcError):
                call.result(timeout=10)
    assert process.returncode == 0, stderr
    phases = [line for line in stderr.splitlines() if '"received SIGTERM"' in line or '"stopped"' in line]
    assert took <= grace + 2.0, (took, phases)
