"""``simplu-grpc dev`` brings the whole stack up, prints working commands; Ctrl-C leaves nothing behind."""

from __future__ import annotations

import http.client
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from simplu.v1 import business_pb2, business_pb2_grpc, resource_pb2, resource_pb2_grpc

from simplu_grpc.devstack.postgres import PgServer, ThrowawayCluster
from simplu_grpc.devstack.stack import DEV_CITRUS_API_KEY
from tests.fixtures.postgres import new_db_prefix

pytestmark = [pytest.mark.integration, pytest.mark.slow]

READY_LINE = "Ctrl-C stops everything."
START_TIMEOUT = 90.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains ``text`` (this test's own process excluded)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(int(proc.name))
    return found


@dataclass
class DevProcess:
    """A running ``simplu-grpc dev`` child and what it printed."""

    process: subprocess.Popen[str]
    ports: dict[str, int]
    err: IO[str]
    lines: list[str] = field(default_factory=list)
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)

    def read_until(self, marker: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {marker!r} within {timeout}s; got:\n" + "\n".join(self.lines))
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError("dev stack exited early:\n" + "\n".join(self.lines))
            self.lines.append(line)
            if marker in line:
                return "\n".join(self.lines)

    def value(self, pattern: str) -> str:
        for line in self.lines:
            match = re.search(pattern, line)
            if match:
                return match.group(1)
        raise AssertionError(f"{pattern!r} not printed")


def start_dev(tmp_path: Path, dev_tmp: Path, extra_env: dict[str, str]) -> DevProcess:
    ports = {"grpc": free_port(), "citrus": free_port(), "moto": free_port()}
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SIMPLU_", "CITRUS_", "COGNITO_", "DYNAMODB_", "GRPC_", "AWS_"))
    }
    env.update(
        {
            "GRPC_PORT": str(ports["grpc"]),
            "METRICS_PORT": "0",
            "SIMPLU_DEV_CITRUS_PORT": str(ports["citrus"]),
            "SIMPLU_DEV_MOTO_PORT": str(ports["moto"]),
            "TMPDIR": str(dev_tmp),
            **extra_env,
        }
    )
    err = (tmp_path / "dev.err").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "simplu_grpc.cli", "dev"],
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
        env=env,
        start_new_session=True,  # a Ctrl-C in the terminal running pytest is not meant for it
    )
    dev = DevProcess(process=process, ports=ports, err=err)

    def pump() -> None:
        assert process.stdout is not None
        with process.stdout:
            for line in process.stdout:
                dev._queue.put(line.rstrip("\n"))
        dev._queue.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return dev


def stop_dev(dev: DevProcess) -> int:
    if dev.process.poll() is None:
        dev.process.send_signal(signal.SIGINT)
        try:
            dev.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(dev.process.pid, signal.SIGKILL)
            dev.process.wait()
    dev.err.close()
    return dev.process.returncode


@pytest.fixture
def dev_tmp() -> Iterator[Path]:
    """The dev stack's TMPDIR: world-traversable, so PostgreSQL running as `postgres` can use it."""
    path = Path(tempfile.mkdtemp(prefix="simplu-devtest-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def dev_runner() -> Iterator[list[DevProcess]]:
    """Started dev stacks, interrupted (and killed if need be) after the test."""
    started: list[DevProcess] = []
    yield started
    for dev in started:
        stop_dev(dev)


def check_plain_user(channel: grpc.Channel, user_token: str) -> None:
    """The plain user's printed token: a staff member of the demo business who may work with
    patients there (as the printed examples do), and nothing more."""
    user = (("authorization", f"Bearer {user_token}"),)
    businesses = business_pb2_grpc.BusinessServiceStub(channel)
    access = businesses.GetMyAccess(
        business_pb2.GetMyAccessRequest(business_id="demo", location_id="main"), metadata=user, timeout=10
    )
    assert (access.platform_admin, access.role, access.location_allowed) == (False, "staff", True)
    resources = resource_pb2_grpc.ResourceServiceStub(channel)
    created = resources.CreateResource(
        resource_pb2.CreateResourceRequest(
            resource=resource_pb2.Resource(business_id="demo", location_id="main", resource_type="patients")
        ),
        metadata=user,
        timeout=20,
    )
    listed = resources.ListResources(
        resource_pb2.ListResourcesRequest(business_id="demo", location_id="main", resource_type="patients"),
        metadata=user,
        timeout=10,
    )
    assert [r.resource_id for r in listed.resources] == [created.resource_id]
    with pytest.raises(grpc.RpcError) as denied:
        resources.ListResources(
            resource_pb2.ListResourcesRequest(
                business_id="demo", location_id="main", resource_type="invoices"
            ),
            metadata=user,
            timeout=10,
        )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


def check_stack(dev: DevProcess) -> None:
    """Health SERVING ('', liveness, readiness); the printed token works; Citrus and the token command too."""
    token = dev.value(r"^export TOKEN=(\S+)$")
    with grpc.insecure_channel(f"localhost:{dev.ports['grpc']}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "liveness", "readiness"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, service
        businesses = business_pb2_grpc.BusinessServiceStub(channel)
        for bad in ("", "Bearer nonsense"):
            with pytest.raises(grpc.RpcError) as rejected:
                businesses.ListBusinesses(
                    business_pb2.ListBusinessesRequest(page_size=10),
                    metadata=(("authorization", bad),),
                    timeout=10,
                )
            assert rejected.value.code() == grpc.StatusCode.UNAUTHENTICATED
        _, call = businesses.ListBusinesses.with_call(
            business_pb2.ListBusinessesRequest(page_size=10),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=10,
        )
        assert call.code() == grpc.StatusCode.OK
        check_plain_user(channel, dev.value(r"^export USER_TOKEN=(\S+)$"))

    conn = http.client.HTTPConnection("127.0.0.1", dev.ports["citrus"], timeout=10)
    try:
        conn.request("GET", "/api/shards/health", headers={"Authorization": f"Bearer {DEV_CITRUS_API_KEY}"})
        shards = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    assert [s["shardId"] for s in shards] == ["shard-01", "shard-02", "shard-03"]
    assert all(s["isActive"] for s in shards)

    token_command = dev.value(r"^\s*export TOKEN=\$\((.*)\)$")
    fresh = subprocess.run(
        ["bash", "-c", token_command], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()
    assert fresh.count(".") == 2
    assert fresh != ""


@pytest.mark.skipif(ThrowawayCluster.available() is not None, reason=str(ThrowawayCluster.available()))
def test_dev_stack_with_a_private_cluster_comes_up_and_ctrl_c_leaves_nothing(
    tmp_path: Path, dev_tmp: Path, dev_runner: list[DevProcess]
) -> None:
    """The default `make run` path: private PostgreSQL, emulator, moto, server; Ctrl-C removes every trace."""
    dev = start_dev(tmp_path, dev_tmp, {})
    dev_runner.append(dev)
    dev.read_until(READY_LINE, START_TIMEOUT)
    pg_dir = dev.value(r"\(dir (\S+)\)")
    assert pg_dir.startswith(str(dev_tmp))
    assert processes_mentioning(pg_dir), "the private PostgreSQL should be running"
    check_stack(dev)

    assert stop_dev(dev) == 0
    dev.read_until("stopped", 10)
    assert not Path(pg_dir).exists()
    assert processes_mentioning(pg_dir) == []
    assert processes_mentioning(f"-p {dev.ports['moto']}") == []
    for name, port in dev.ports.items():
        assert not port_open(port), name
    assert list(dev_tmp.iterdir()) == []


def test_dev_stack_on_a_given_server_drops_its_shard_databases(
    tmp_path: Path, dev_tmp: Path, dev_runner: list[DevProcess], pg: PgServer
) -> None:
    """With SIMPLU_DEV_PG the shard databases are made on that server and dropped again on Ctrl-C."""
    prefix = new_db_prefix("dev")
    dev = start_dev(tmp_path, dev_tmp, {"SIMPLU_DEV_PG": pg.admin_dsn, "SIMPLU_DEV_DB_PREFIX": prefix})
    dev_runner.append(dev)
    dev.read_until(READY_LINE, START_TIMEOUT)
    assert pg.list_databases(prefix) == [f"{prefix}_shard_0{i}" for i in (1, 2, 3)]
    check_stack(dev)
    assert stop_dev(dev) == 0
    assert pg.list_databases(prefix) == []
    for name, port in dev.ports.items():
        assert not port_open(port), name


def test_dev_stack_reports_a_busy_port_and_stops_what_it_started(
    tmp_path: Path, dev_tmp: Path, dev_runner: list[DevProcess], pg: PgServer
) -> None:
    """A taken Citrus port -> exit 1 with a message naming the variable; PostgreSQL work is undone."""
    prefix = new_db_prefix("dev")
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        busy = blocker.getsockname()[1]
        dev = start_dev(
            tmp_path,
            dev_tmp,
            {
                "SIMPLU_DEV_PG": pg.admin_dsn,
                "SIMPLU_DEV_DB_PREFIX": prefix,
                "SIMPLU_DEV_CITRUS_PORT": str(busy),
            },
        )
        dev_runner.append(dev)
        assert dev.process.wait(timeout=60) == 1
    err = (tmp_path / "dev.err").read_text()
    assert f"port {busy} is already in use" in err
    assert "SIMPLU_DEV_CITRUS_PORT" in err
    assert pg.list_databases(prefix) == []


def test_dev_stack_refuses_a_grpc_port_taken_on_one_of_its_addresses(
    tmp_path: Path, dev_tmp: Path, dev_runner: list[DevProcess], pg: PgServer
) -> None:
    """Another process holds 127.0.0.1:GRPC_PORT (::1 is free): the stack does not report itself up
    on ::1 alone; it exits 1 naming GRPC_PORT and undoes what it started."""
    prefix = new_db_prefix("dev")
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        busy = blocker.getsockname()[1]
        dev = start_dev(
            tmp_path,
            dev_tmp,
            {"SIMPLU_DEV_PG": pg.admin_dsn, "SIMPLU_DEV_DB_PREFIX": prefix, "GRPC_PORT": str(busy)},
        )
        dev_runner.append(dev)
        assert dev.process.wait(timeout=90) == 1
    assert READY_LINE not in "\n".join(dev.lines)
    err = (tmp_path / "dev.err").read_text()
    assert f"port {busy} is already in use on 127.0.0.1" in err
    assert "GRPC_PORT" in err
    assert pg.list_databases(prefix) == []
    for name in ("citrus", "moto"):
        assert not port_open(dev.ports[name]), name
