"""Capacity: requests per second of the service next to a bare echo server on the same transport.

``python -m bench.capacity`` starts the dev stack without its in-process server, then as
separate processes: ``simplu-grpc serve`` with one worker, the same with ``SIMPLU_WORKERS=2``
(sharing one port), and ``bench.echo`` (``server.transport`` with an echo handler and nothing
else). One load generator drives them all — h2load (nghttp2-client, C) when it is installed,
else the bench's own multi-process client (``bench.loadgen``) — in alternating rounds:

* sweep: echo, GetResource (warm), UpdateResource (``data.status`` mask), CreateResource and
  ListResources (page of 50 documents of ~0.5 KB), at 1, 16 and 64 requests in flight;
  the median req/s of the rounds, and its ratio to echo's median in the same sweep step;
* workers: echo, GetResource on one worker, GetResource on two, at 16 in flight;
* half of peak: GetResource paced at half the peak rate, for its p99.

h2load only sees HTTP status (gRPC puts its status in trailers), so every round is checked
through the server's own metrics: each ``simplu_grpc_requests`` increment must be code OK,
and the warm path must have made no Citrus, DynamoDB (other than readiness probes) or JWKS
call. Load average is recorded per round: the machine may be shared, numbers are noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import field_mask_pb2, timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from simplu.v1 import resource_pb2

from bench import echo, load, loadgen, profile
from bench.load import RESOURCE_TYPE
from bench.stack import BenchStack, running_stack
from simplu_grpc.settings import Settings

REPO = Path(__file__).resolve().parents[1]
RPCS = ("get", "update", "create", "list")
METHODS = {
    "echo": echo.METHOD,
    "get": "/simplu.v1.ResourceService/GetResource",
    "update": "/simplu.v1.ResourceService/UpdateResource",
    "create": "/simplu.v1.ResourceService/CreateResource",
    "list": "/simplu.v1.ResourceService/ListResources",
    "health": "/grpc.health.v1.Health/Check",
}
LABELS = {
    "echo": "echo (grpcio, identity bytes)",
    "get": "GetResource (warm)",
    "update": "UpdateResource (data.status mask)",
    "create": "CreateResource",
    "list": "ListResources (page of 50, ~0.5 KB each)",
    "health": "Health/Check",
}
# Issue 8's targets: ratio to echo at 16 in flight.
RATIO_TARGETS = {"get": 0.5, "update": 0.4, "create": 0.4, "list": 0.25}
HALF_PEAK_P99_MS = 5.0
# Issue 9: calls that send headers and never their message (no token) must not stop others.
HELD_CALLS = 64
HELD_P99_MS = 100.0
WORKER_SCALING = 1.5
PAGE = 50
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CALL_TIMEOUT = "10S"  # grpc-timeout on every generated request, as real clients send one
# Citrus calls a request may make ("health" and "capacity" are readiness probes and admin).
CITRUS_REQUEST_PATH = ("get_shard", "register")
DYNAMODB_PROBES = ("describe_table",)

DEFAULTS = {"rounds": 3, "duration": 4.0, "warmup": 1.0, "inflight": "1,16,64"}
QUICK = {"rounds": 1, "duration": 1.0, "warmup": 0.5, "inflight": "1,4"}


# --- requests --------------------------------------------------------------------------


def _document(i: int) -> dict[str, Any]:
    """A patient record of about 0.5 KB as JSON."""
    return {
        "name": f"Patient {i:05d}",
        "status": "new",
        "phone": f"+40 700 {i:06d}",
        "email": f"patient{i:05d}@example.com",
        "birth_date": "1985-04-12",
        "address": {"street": "Strada Lunga 12", "city": "Brasov", "postal_code": "500001"},
        "allergies": ["penicillin", "latex"],
        "notes": "Prefers morning appointments; reminder by SMS two days ahead. " * 4,
    }


def _frame(message: Any) -> bytes:
    """A gRPC length-prefixed message (uncompressed), as it travels in the HTTP/2 DATA frame."""
    payload: bytes = message.SerializeToString()
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def request_bodies(business_id: str, resource_id: str) -> dict[str, bytes]:
    """One request per RPC, framed: get/update/list on location main, creates on annex."""
    get = resource_pb2.GetResourceRequest(
        business_id=business_id, location_id="main", resource_type=RESOURCE_TYPE, resource_id=resource_id
    )
    updated = resource_pb2.Resource(
        business_id=business_id, location_id="main", resource_type=RESOURCE_TYPE, resource_id=resource_id
    )
    updated.data.update({"status": "confirmed"})
    created = resource_pb2.Resource(
        business_id=business_id,
        location_id="annex",
        resource_type=RESOURCE_TYPE,
        start_time=timestamp_pb2.Timestamp(seconds=1_772_442_000),
    )
    created.data.update(_document(0))
    return {
        "health": _frame(health_pb2.HealthCheckRequest(service="")),
        "echo": _frame(get),
        "get": _frame(get),
        "update": _frame(
            resource_pb2.UpdateResourceRequest(
                resource=updated, update_mask=field_mask_pb2.FieldMask(paths=["data.status"])
            )
        ),
        "create": _frame(resource_pb2.CreateResourceRequest(resource=created)),
        "list": _frame(
            resource_pb2.ListResourcesRequest(
                business_id=business_id, location_id="main", resource_type=RESOURCE_TYPE, page_size=PAGE
            )
        ),
    }


# --- processes -------------------------------------------------------------------------


def _free_port(consecutive: int = 1) -> int:
    """A port with ``consecutive - 1`` free ports after it (workers' metrics ports)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port + consecutive > 65535:
            continue
        if all(_is_free(port + n) for n in range(1, consecutive)):
            return port
    raise RuntimeError("no free port range found")


def _is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class Server:
    """A server process the bench started: where it listens and where its metrics are."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    metrics_ports: list[int] = field(default_factory=list)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-2000:]
        return ""

    def access_lines(self) -> int:
        with contextlib.suppress(OSError), self.log_path.open("rb") as f:
            return sum(1 for line in f if b'"simplu_grpc.access"' in line)
        return 0

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server's processes used so far: on a shared machine the
        CPU cost per request is steadier than req/s, which depends on what else runs."""
        total = 0.0
        pids = [self.process.pid]
        with contextlib.suppress(OSError):
            pids += [
                int(p)
                for p in Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
                .read_text()
                .split()
            ]
        for pid in pids:
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
                total += (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
        return total

    def metrics(self) -> dict[str, dict[tuple[str, ...], float]]:
        """Counters summed over the workers: name -> label values -> value."""
        totals: dict[str, dict[tuple[str, ...], float]] = {}
        for port in self.metrics_ports:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                text = response.read().decode()
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if not sample.name.endswith("_total"):
                        continue
                    key = tuple(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                    by_labels = totals.setdefault(sample.name, {})
                    by_labels[key] = by_labels.get(key, 0.0) + sample.value
        return totals


def _wait_ready(server: Server, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if server.process.poll() is not None:
                raise RuntimeError(
                    f"{server.name} exited with {server.process.returncode}:\n{server.log_tail()}"
                )
            try:
                answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server.name} did not become ready:\n{server.log_tail()}")
            time.sleep(0.2)
    for port in server.metrics_ports:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{server.name}: no metrics on {port}:\n{server.log_tail()}") from None
                time.sleep(0.2)


def _start_service(
    stack: BenchStack,
    workers: int,
    settings: dict[str, str],
    scratch: Path,
    *,
    code: Path = REPO,
    name: str = "",
) -> Server:
    # The free ports are chosen before the server binds them; another process (an outgoing
    # connection's ephemeral port) can take one in between: then choose again.
    for attempt in range(3):
        try:
            return _launch_service(stack, workers, settings, scratch, code=code, name=name)
        except RuntimeError as exc:
            if "already in use" not in str(exc) or attempt == 2:
                raise
    raise AssertionError("unreachable")


def _launch_service(
    stack: BenchStack, workers: int, settings: dict[str, str], scratch: Path, *, code: Path, name: str
) -> Server:
    port = _free_port()
    metrics_port = _free_port(workers)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SIMPLU_", "CITRUS_", "COGNITO_", "DYNAMODB_", "GRPC_", "METRICS_"))
    }
    env.update(stack.server_env())
    env.update(settings)
    env.update(
        {
            "GRPC_HOST": "127.0.0.1",
            "GRPC_PORT": str(port),
            "METRICS_PORT": str(metrics_port),
            "SIMPLU_WORKERS": str(workers),
            "LOG_LEVEL": "INFO",
        }
    )
    # That code's own stubs too: they are in its generated/ (installed as simplu-client now,
    # inside the server package before), not in the working directory.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code / "generated"), env.get("PYTHONPATH")]))
    name = name or f"service-{workers}w"
    log_path = scratch / f"{name}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            # ``-m`` puts the working directory first on sys.path: the code of ``code`` runs.
            [sys.executable, "-m", "simplu_grpc.cli", "serve"],
            cwd=code,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = Server(name, port, process, log_path, [metrics_port + n for n in range(workers)])
    _wait_ready(server)
    return server


def _start_echo(scratch: Path) -> Server:
    port = _free_port()
    log_path = scratch / "echo.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.echo", "--port", str(port)],
            cwd=REPO,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = Server("echo", port, process, log_path)
    _wait_ready(server)
    return server


# --- one round -------------------------------------------------------------------------


@dataclass
class Round:
    """One run of the load generator against one target."""

    target: str
    inflight: int
    rps: float
    count: int
    failed: int
    p50_ms: float
    p99_ms: float
    load_average: float
    non_ok: dict[str, float] = field(default_factory=dict)
    cancelled_at_stop: float = 0.0
    cpu_ms_per_request: float = 0.0
    warm_path_calls: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "rps": round(self.rps, 1),
            "count": self.count,
            "failed": self.failed,
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "load_average": round(self.load_average, 2),
            "cpu_ms_per_request": round(self.cpu_ms_per_request, 3),
            "non_ok": self.non_ok,
            "cancelled_at_stop": self.cancelled_at_stop,
            "warm_path_calls": self.warm_path_calls,
        }


def _shape(inflight: int) -> tuple[int, int]:
    """(connections, streams per connection): several connections so SO_REUSEPORT spreads them."""
    connections = min(inflight, 8)
    return connections, max(1, inflight // connections)


def _non_ok(before: dict[str, Any], after: dict[str, Any]) -> tuple[dict[str, float], float]:
    """Requests that did not end OK during the round (by method and code), and the OK count."""
    counts = after.get("simplu_grpc_requests_total", {})
    earlier = before.get("simplu_grpc_requests_total", {})
    bad: dict[str, float] = {}
    ok = 0.0
    for key, value in counts.items():
        delta = value - earlier.get(key, 0.0)
        if not delta:
            continue
        labels = dict(part.split("=", 1) for part in key)
        if labels.get("code") == "OK":
            ok += delta
        else:
            bad[f"{labels.get('method')} {labels.get('code')}"] = delta
    return bad, ok


def _warm_path_calls(
    before: dict[str, Any], after: dict[str, Any], citrus_before: dict[str, int], citrus_after: dict[str, int]
) -> dict[str, float]:
    """Citrus, DynamoDB (without readiness probes) and JWKS calls made during the round."""
    calls: dict[str, float] = {}
    deps = after.get("simplu_dependency_calls_total", {})
    earlier = before.get("simplu_dependency_calls_total", {})
    for key, value in deps.items():
        delta = value - earlier.get(key, 0.0)
        labels = dict(part.split("=", 1) for part in key)
        dependency, operation = labels.get("dependency"), labels.get("operation")
        probe = operation in DYNAMODB_PROBES or (
            dependency == "citrus" and operation not in CITRUS_REQUEST_PATH
        )
        if delta and not probe:
            name = f"{dependency}.{operation}"
            calls[name] = calls.get(name, 0.0) + delta
    for kind in CITRUS_REQUEST_PATH:
        delta = citrus_after.get(kind, 0) - citrus_before.get(kind, 0)
        if delta:
            calls[f"citrus.{kind}"] = float(delta)
    return calls


class Bench:
    """The servers, the request bodies and the load generator; ``round()`` runs one measurement."""

    def __init__(
        self,
        *,
        stack: BenchStack,
        servers: dict[str, Server],
        bodies: dict[str, Path],
        headers: list[tuple[str, str]],
        generator: loadgen.Generator,
        duration: float,
        warmup: float,
        out: Callable[[str], None],
    ) -> None:
        self.stack = stack
        self.servers = servers
        self.bodies = bodies
        self.headers = headers
        self.generator = generator
        self.duration = duration
        self.warmup = warmup
        self.out = out

    def round(self, target: str, kind: str, inflight: int, *, rate: float | None = None) -> Round:
        server = self.servers[target]
        connections, streams = _shape(inflight)
        # The echo gets the service's headers too (token included): the same bytes on the wire.
        headers = self.headers
        before = server.metrics() if server.metrics_ports else {}
        citrus_before = self.stack.citrus_calls()
        cpu_before = server.cpu_seconds()
        result = self.generator.run(
            port=server.port,
            method=METHODS[kind],
            body=self.bodies[kind],
            headers=headers,
            connections=connections,
            streams=streams,
            duration=self.duration,
            warmup=self.warmup,
            rate=rate,
        )
        measured = Round(
            target=f"{target}:{kind}",
            inflight=inflight,
            rps=result.rps,
            count=result.count,
            failed=result.failed,
            p50_ms=result.percentile(50),
            p99_ms=result.percentile(99),
            load_average=os.getloadavg()[0],
        )
        # Over warm-up and measurement alike, so per request of both (h2load reports only the
        # measured ones: the rate over the whole run is assumed the same).
        cpu = server.cpu_seconds() - cpu_before
        measured.cpu_ms_per_request = (
            1000 * cpu / (result.rps * (self.duration + self.warmup)) if result.rps else 0.0
        )
        if server.metrics_ports:
            after = server.metrics()
            measured.non_ok, ok = _non_ok(before, after)
            measured.warm_path_calls = _warm_path_calls(
                before, after, citrus_before, self.stack.citrus_calls()
            )
            # The generator resets the streams still open when its time is up: at most one
            # CANCELLED per stream is the end of the round, not a failure.
            cancelled = sum(n for name, n in measured.non_ok.items() if name.endswith(" CANCELLED"))
            if cancelled <= connections * streams:
                measured.cancelled_at_stop = cancelled
                measured.non_ok = {k: n for k, n in measured.non_ok.items() if not k.endswith(" CANCELLED")}
            if ok < result.count:
                measured.non_ok["missing OK count"] = result.count - ok
        self.out(
            f"  {target:<12} {kind:<7} {inflight:>3} in flight: {result.rps:8.1f} req/s,"
            f" p50 {measured.p50_ms:6.2f} ms, p99 {measured.p99_ms:6.2f} ms,"
            f" cpu {measured.cpu_ms_per_request:5.3f} ms/req,"
            f" load {measured.load_average:.2f}"
            + (f", NOT OK {measured.non_ok}" if measured.non_ok or result.failed else "")
        )
        return measured


def _median(rounds: Sequence[Round], attr: str) -> float:
    return statistics.median(getattr(r, attr) for r in rounds) if rounds else 0.0


def _summary(rounds: Sequence[Round], echo_rps: float | None) -> dict[str, Any]:
    rps = _median(rounds, "rps")
    summary: dict[str, Any] = {
        "median_rps": round(rps, 1),
        "median_p50_ms": round(_median(rounds, "p50_ms"), 3),
        "median_p99_ms": round(_median(rounds, "p99_ms"), 3),
        "median_cpu_ms_per_request": round(_median(rounds, "cpu_ms_per_request"), 3),
        "rounds": [r.as_json() for r in rounds],
    }
    if echo_rps:
        summary["ratio_to_echo"] = round(rps / echo_rps, 3)
    return summary


# --- the run ---------------------------------------------------------------------------


def _seed(target: str, token: str, count: int) -> tuple[str, str]:
    """A business with locations main and annex and ``count`` ~0.5 KB documents on main.

    Returns the business id and one resource id."""
    load.connect(target, token)
    try:
        business_id, _ = load.create_business("Capacity Dental", ("main", "annex"))
        client = load.the_client()
        first = ""
        for i in range(count):
            resource = resource_pb2.Resource(
                business_id=business_id,
                location_id="main",
                resource_type=RESOURCE_TYPE,
                start_time=timestamp_pb2.Timestamp(seconds=1_767_258_000 + (i % 336) * 86_400),
            )
            resource.data.update(_document(i))
            created = client.resource.CreateResource(
                resource_pb2.CreateResourceRequest(resource=resource), metadata=client.metadata, timeout=10
            )
            first = first or created.resource_id
        return business_id, first
    finally:
        load.close()


@contextlib.contextmanager
def _checkout(ref: str, scratch: Path) -> Iterator[Path]:
    """A detached git worktree of ``ref`` (the baseline the current code is compared with)."""
    path = scratch / "baseline"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(path), ref], cwd=REPO, check=True, capture_output=True
    )
    try:
        yield path
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(path)], cwd=REPO, check=False, capture_output=True
        )


@contextlib.contextmanager
def _servers(
    stack: BenchStack,
    *,
    settings: dict[str, str],
    scratch: Path,
    workers: Sequence[int],
    baseline: str | None,
    base_overrides: dict[str, str],
) -> Iterator[dict[str, Server]]:
    started: dict[str, Server] = {}
    with contextlib.ExitStack() as exits:
        exits.callback(lambda: [server.stop() for server in started.values()])
        started["echo"] = _start_echo(scratch)
        for count in workers:
            started[f"{count}w"] = _start_service(stack, count, settings, scratch)
        if baseline:
            code = exits.enter_context(_checkout(baseline, scratch))
            base_settings = {**settings, **base_overrides}
            started["base"] = _start_service(stack, 1, base_settings, scratch, code=code, name="baseline")
        yield started


def run(config: dict[str, Any], settings: dict[str, str], out: Callable[[str], None]) -> dict[str, Any]:
    generator = loadgen.choose(config["client"])
    report: dict[str, Any] = {
        "version": 1,
        "kind": "capacity",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "config": {
            **{k: v for k, v in config.items() if k != "profile_dir"},
            "server_settings": settings,
            "load_generator": generator.name,
        },
    }
    out(f"capacity bench with {generator.name}; starting PostgreSQL, Citrus emulator, moto...")
    with (
        tempfile.TemporaryDirectory(prefix="simplu-capacity-") as tmp,
        running_stack(in_process_server=False) as stack,
    ):
        scratch = Path(tmp)
        report["stack"] = {"postgres": stack.postgres, "db_prefix": stack.db_prefix}
        workers = (1, 2) if config["workers"] else (1,)
        with _servers(
            stack=stack,
            settings=settings,
            scratch=scratch,
            workers=workers,
            baseline=config["against"],
            base_overrides=config["base_set"],
        ) as servers:
            out(f"servers up: {', '.join(f'{n}:{s.port}' for n, s in servers.items())}; seeding...")
            business_id, resource_id = _seed(f"127.0.0.1:{servers['1w'].port}", stack.token, PAGE + 10)
            bodies: dict[str, Path] = {}
            for kind, body in request_bodies(business_id, resource_id).items():
                bodies[kind] = scratch / f"{kind}.bin"
                bodies[kind].write_bytes(body)
            bench = Bench(
                stack=stack,
                servers=servers,
                bodies=bodies,
                headers=[
                    ("content-type", "application/grpc"),
                    ("te", "trailers"),
                    ("grpc-timeout", CALL_TIMEOUT),
                    ("authorization", f"Bearer {stack.token}"),
                ],
                generator=generator,
                duration=config["duration"],
                warmup=config["warmup"],
                out=out,
            )
            _prime(bench, config)
            if config["profile"]:
                report["profile"] = _profile(bench, config)
                return report
            measuring = time.monotonic()
            report["sweep"] = _sweep(bench, config)
            if config["workers"]:
                report["workers"] = _workers(bench, config)
            report["half_peak"] = _half_peak(bench, config, report["sweep"])
            report["held_calls"] = _held_calls(bench, config)
            report["measured_s"] = round(time.monotonic() - measuring, 1)
            report["access_log_lines"] = {
                name: server.access_lines() for name, server in servers.items() if name != "echo"
            }
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report["targets"] = targets(report)
    return report


def _prime(bench: Bench, config: dict[str, Any]) -> None:
    """Unmeasured: every RPC on every service process once under load, so each worker's caches
    and pools are warm (a worker's first request asks Citrus and DynamoDB, by design)."""
    bench.out("priming every service process (unmeasured)")
    for name in bench.servers:
        if name == "echo":
            continue
        for kind in config["rpcs"]:
            bench.generator.run(
                port=bench.servers[name].port,
                method=METHODS[kind],
                body=bench.bodies[kind],
                headers=bench.headers,
                connections=8,
                streams=2,
                duration=1.0,
                warmup=0.2,
                rate=None,
            )


def _profile(bench: Bench, config: dict[str, Any]) -> dict[str, Any]:
    """py-spy on the one-worker service while the generator drives one RPC at 16 in flight:
    once sampling every thread, once only the thread holding the GIL."""
    kind, server = config["profile"], bench.servers["1w"]
    found: dict[str, Any] = {}
    for gil in (False, True):
        raw = config["profile_dir"] / f"{kind}-{'gil' if gil else 'all'}.txt"
        sampler = profile.record(server.process.pid, bench.duration, raw, gil=gil)
        measured = bench.round("1w", kind, 16)
        _, errors = sampler.communicate(timeout=bench.duration + 60)
        if sampler.returncode != 0:
            raise RuntimeError(f"py-spy failed: {errors.decode(errors='replace')[-1000:]}")
        summary = profile.summarize(raw)
        bench.out(f"--- {kind}, {'GIL holder only' if gil else 'all threads'} ({raw}) ---")
        bench.out(profile.render(summary))
        found["gil" if gil else "all"] = {"raw": str(raw), "rps": measured.rps, **summary}
    return found


def _sweep(bench: Bench, config: dict[str, Any]) -> dict[str, Any]:
    sweep: dict[str, Any] = {}
    for inflight in config["inflight"]:
        bench.out(f"sweep: {inflight} in flight, {config['rounds']} rounds")
        plan = [("echo", "echo")]
        for kind in config["rpcs"]:
            plan.append(("1w", kind))
            if "base" in bench.servers:
                plan.append(("base", kind))
        rounds: dict[tuple[str, str], list[Round]] = {step: [] for step in plan}
        for _ in range(config["rounds"]):
            for target, kind in plan:
                rounds[target, kind].append(bench.round(target, kind, inflight))
        echo_rps = _median(rounds["echo", "echo"], "rps")
        sweep[str(inflight)] = {
            (kind if target in {"echo", "1w"} else f"{target}:{kind}"): _summary(
                found, None if kind == "echo" else echo_rps
            )
            for (target, kind), found in rounds.items()
        }
    return sweep


def _workers(bench: Bench, config: dict[str, Any]) -> dict[str, Any]:
    inflight = 16
    bench.out(f"workers: GetResource on 1 and 2 workers, {inflight} in flight")
    rounds: dict[str, list[Round]] = {"echo": [], "1w": [], "2w": []}
    for _ in range(config["rounds"]):
        rounds["echo"].append(bench.round("echo", "echo", inflight))
        rounds["1w"].append(bench.round("1w", "get", inflight))
        rounds["2w"].append(bench.round("2w", "get", inflight))
    echo_rps = _median(rounds["echo"], "rps")
    result: dict[str, Any] = {
        "inflight": inflight,
        "echo": _summary(rounds["echo"], None),
        "1": _summary(rounds["1w"], echo_rps),
        "2": _summary(rounds["2w"], echo_rps),
    }
    one = result["1"]["median_rps"]
    result["scaling"] = round(result["2"]["median_rps"] / one, 3) if one else 0.0
    return result


def _half_peak(bench: Bench, config: dict[str, Any], sweep: dict[str, Any]) -> dict[str, Any]:
    peak = max((step["get"]["median_rps"] for step in sweep.values() if "get" in step), default=0.0)
    if not peak:
        return {}
    inflight = 16
    connections, _ = _shape(inflight)
    rate = peak / 2
    bench.out(f"half of peak: GetResource at {rate:.0f} req/s ({connections} connections)")
    rounds = [bench.round("1w", "get", inflight, rate=rate) for _ in range(config["rounds"])]
    return {"peak_rps": peak, "rate_rps": round(rate, 1), **_summary(rounds, None)}


def _held_calls(bench: Bench, config: dict[str, Any]) -> dict[str, Any]:
    """Health checks and authenticated GetResource while HELD_CALLS calls without a token have
    sent their headers and never send their message (issue 9 item 9)."""
    bench.out(
        f"held calls: {HELD_CALLS} calls that never send their message; health and GetResource meanwhile"
    )
    release = threading.Event()

    def never() -> Iterator[bytes]:
        release.wait()
        yield from ()

    found: dict[str, Any] = {"held": HELD_CALLS}
    with grpc.insecure_channel(f"127.0.0.1:{bench.servers['1w'].port}") as channel:
        hold = channel.stream_unary(METHODS["get"])
        held = [hold.future(never(), timeout=600) for _ in range(HELD_CALLS)]
        try:
            for kind in ("health", "get"):
                rounds = [bench.round("1w", kind, 1) for _ in range(config["rounds"])]
                found[kind] = _summary(rounds, None)
            found["still_held"] = sum(not call.done() for call in held)
        finally:
            release.set()
            for call in held:
                call.cancel()
    return found


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 8's targets, each with the measured value and whether it is met."""
    found: list[dict[str, Any]] = []
    sweep = report.get("sweep", {})
    at16 = sweep.get("16", {})
    for kind, wanted in RATIO_TARGETS.items():
        if kind in at16:
            value = at16[kind].get("ratio_to_echo", 0.0)
            found.append(
                {"target": f"{LABELS[kind]} ratio at 16 >= {wanted}", "value": value, "met": value >= wanted}
            )
    at1 = sweep.get("1", {})
    for kind in RPCS:
        if kind not in at1:
            continue
        for inflight in ("16", "64"):
            if kind in sweep.get(inflight, {}):
                value = sweep[inflight][kind]["median_rps"]
                base = at1[kind]["median_rps"]
                found.append(
                    {
                        "target": f"{LABELS[kind]} req/s at {inflight} >= at 1 ({base:.0f})",
                        "value": value,
                        "met": value >= base,
                    }
                )
    half = report.get("half_peak", {})
    if half:
        value = half["median_p99_ms"]
        found.append(
            {
                "target": f"GetResource p99 at half of peak <= {HALF_PEAK_P99_MS} ms",
                "value": value,
                "met": value <= HALF_PEAK_P99_MS,
            }
        )
    held = report.get("held_calls")
    if held:
        for kind in ("health", "get"):
            value = held[kind]["median_p99_ms"]
            found.append(
                {
                    "target": f"{LABELS[kind]} p99 with {held['held']} held calls <= {HELD_P99_MS:g} ms",
                    "value": value,
                    "met": value <= HELD_P99_MS and held["still_held"] == held["held"],
                }
            )
    workers = report.get("workers")
    if workers:
        value = workers["scaling"]
        found.append(
            {
                "target": f"SIMPLU_WORKERS=2 >= {WORKER_SCALING} x one worker",
                "value": value,
                "met": value >= WORKER_SCALING,
            }
        )
    calls: dict[str, float] = {}
    non_ok: dict[str, float] = {}
    for summary in _summaries(report):
        for r in summary["rounds"]:
            for name, n in r["warm_path_calls"].items():
                calls[name] = calls.get(name, 0) + n
            for name, n in r["non_ok"].items():
                non_ok[name] = non_ok.get(name, 0) + n
    # The business and routing caches expire (BUSINESS_CACHE_TTL_SECONDS, ROUTING_CACHE_TTL_SECONDS)
    # in each process, and every request in flight at that moment reads DynamoDB or asks Citrus
    # (no single flight in those caches yet): up to that many calls per process, per location,
    # per TTL are the caches working. Anything else is a warm-path call.
    processes = 1 + (2 if report.get("workers") else 0) + (1 if report["config"].get("against") else 0)
    inflight = max([int(n) for n in report.get("sweep", {})] or [1])
    measured = report.get("measured_s", 0.0)
    defaults = Settings()

    def allowance(ttl: float, per_process: int) -> float:
        return processes * per_process * inflight * (math.ceil(measured / ttl) + 1)

    allowed = {
        "dynamodb.get_item": allowance(defaults.business_cache_ttl_seconds, 1),
        "citrus.get_shard": allowance(defaults.routing_cache_ttl_seconds, 2),
    }
    found.append(
        {
            "target": "0 Citrus / DynamoDB / JWKS calls per warm request (cache expiries aside: at most"
            f" {', '.join(f'{name} {n:g}' for name, n in allowed.items())})",
            "value": calls,
            "met": all(n <= allowed.get(name, 0) for name, n in calls.items()),
        }
    )
    found.append({"target": "every request answered OK (server metrics)", "value": non_ok, "met": not non_ok})
    return found


def _summaries(report: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every per-target summary in the report (those with rounds against a service process)."""
    for step in report.get("sweep", {}).values():
        yield from (summary for kind, summary in step.items() if kind in RPCS)
    workers = report.get("workers", {})
    yield from (workers[key] for key in ("1", "2") if key in workers)
    if report.get("half_peak"):
        yield report["half_peak"]
    if report.get("held_calls"):
        yield report["held_calls"]["get"]


def render(report: dict[str, Any]) -> str:
    lines = [
        "",
        f"simplu-grpc capacity — {report['machine']['cpus']} CPUs, load generator"
        f" {report['config']['load_generator']}, {report['config']['rounds']} rounds of"
        f" {report['config']['duration']:g} s, medians",
        f"load average at start {report['machine']['load_average_at_start']},"
        f" at end {report['machine']['load_average_at_end']}",
    ]
    for inflight, step in report.get("sweep", {}).items():
        lines += ["", f"{inflight} in flight", table(step)]
    workers = report.get("workers")
    if workers:
        lines += [
            "",
            f"GetResource, {workers['inflight']} in flight: 1 worker {workers['1']['median_rps']:.0f} req/s,"
            f" 2 workers {workers['2']['median_rps']:.0f} req/s ({workers['scaling']:.2f} x);"
            f" echo {workers['echo']['median_rps']:.0f} req/s",
        ]
    half = report.get("half_peak")
    if half:
        lines.append(
            f"GetResource at half of peak ({half['rate_rps']:.0f} of {half['peak_rps']:.0f} req/s):"
            f" {half['median_rps']:.0f} req/s, p50 {half['median_p50_ms']:.2f} ms,"
            f" p99 {half['median_p99_ms']:.2f} ms"
        )
    held = report.get("held_calls")
    if held:
        lines.append(
            f"With {held['held']} held calls (headers, no message, no token; {held['still_held']} still held"
            f" at the end): Health/Check p99 {held['health']['median_p99_ms']:.2f} ms,"
            f" GetResource p99 {held['get']['median_p99_ms']:.2f} ms (1 in flight)"
        )
    lines += ["", "Targets (issues 8 and 9):"]
    for target in report.get("targets", []):
        lines.append(f"  [{'x' if target['met'] else ' '}] {target['target']}: {target['value']}")
    return "\n".join(lines)


def table(step: dict[str, Any]) -> str:
    header = ("RPC", "req/s", "ratio", "p50 ms", "p99 ms", "CPU ms/req", "load avg")
    rows = [header]
    for kind, summary in step.items():
        loads = [r["load_average"] for r in summary["rounds"]]
        rows.append(
            (
                LABELS[kind] if kind in LABELS else f"  {kind.split(':')[0]}: {LABELS[kind.split(':')[1]]}",
                f"{summary['median_rps']:.0f}",
                f"{summary.get('ratio_to_echo', 1.0):.2f}",
                f"{summary['median_p50_ms']:.2f}",
                f"{summary['median_p99_ms']:.2f}",
                f"{summary['median_cpu_ms_per_request']:.3f}",
                f"{statistics.median(loads):.2f}" if loads else "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        lines.append(
            "  ".join([row[0].ljust(widths[0])] + [c.rjust(widths[i]) for i, c in enumerate(row) if i])
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.capacity",
        description="Capacity of simplu-grpc next to a bare echo server on its transport (bench/README.md).",
    )
    parser.add_argument("--rounds", type=int, help=f"alternating rounds (default {DEFAULTS['rounds']})")
    parser.add_argument(
        "--duration", type=float, help=f"seconds measured per round (default {DEFAULTS['duration']:g})"
    )
    parser.add_argument(
        "--warmup", type=float, help=f"unmeasured seconds before each round (default {DEFAULTS['warmup']:g})"
    )
    parser.add_argument(
        "--inflight", help=f"requests in flight, comma-separated (default {DEFAULTS['inflight']})"
    )
    parser.add_argument("--rpcs", default=",".join(RPCS), help=f"which RPCs (default {','.join(RPCS)})")
    parser.add_argument("--no-workers", action="store_true", help="skip the SIMPLU_WORKERS=2 comparison")
    parser.add_argument(
        "--client",
        choices=("auto", "h2load", "python"),
        default="auto",
        help="load generator (default auto: h2load if installed)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny rounds: checks that it works, numbers mean little"
    )
    parser.add_argument(
        "--profile",
        choices=RPCS,
        help="instead of measuring: profile the one-worker service with py-spy under this RPC's load",
    )
    parser.add_argument(
        "--profile-dir", type=Path, default=Path(tempfile.gettempdir()), help="where py-spy's raw stacks go"
    )
    parser.add_argument(
        "--against",
        metavar="GIT_REF",
        help="also run the service as of GIT_REF (a git worktree), alternating with the current code",
    )
    parser.add_argument(
        "--base-set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a server setting for the --against service only (compare settings: --against HEAD)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="a server setting; repeatable"
    )
    return parser


def _pairs(pairs: Sequence[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise SystemExit(f"--set expects NAME=VALUE, got {pair!r}")
        found[name.strip()] = value
    return found


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    base = QUICK if args.quick else DEFAULTS
    rpcs = tuple(name for name in args.rpcs.split(",") if name)
    if not set(rpcs) <= set(RPCS):
        raise SystemExit(f"--rpcs: choose among {','.join(RPCS)}")
    config: dict[str, Any] = {
        "rounds": args.rounds or base["rounds"],
        "duration": args.duration or base["duration"],
        "warmup": args.warmup if args.warmup is not None else base["warmup"],
        "inflight": [int(n) for n in (args.inflight or base["inflight"]).split(",")],
        "rpcs": rpcs,
        "workers": not args.no_workers,
        "client": args.client,
        "quick": args.quick,
        "profile": args.profile,
        "against": args.against,
        "profile_dir": args.profile_dir,
    }
    settings = _pairs(args.set)
    config["base_set"] = _pairs(args.base_set)

    def out(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    report = run(config, settings, out)
    if config["profile"]:
        return 0
    print(render(report), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    bad = [t["target"] for t in report["targets"] if not t["met"] and t["target"].startswith(("0 ", "every"))]
    if bad:
        print(f"capacity bench: {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
