"""Load generators for the capacity bench: h2load when installed, else a multi-process Python client.

Both send one fixed request (a framed protobuf message read from a file) to one method over
``connections`` HTTP/2 connections with ``streams`` requests in flight on each, for a warm-up
then ``duration`` seconds, optionally paced at ``rate`` requests per second in total, and
report throughput and per-request latencies. Neither reads grpc-status: the bench checks
it through the server's metrics.
"""

from __future__ import annotations

import math
import multiprocessing
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import grpc


@dataclass
class LoadResult:
    rps: float
    count: int
    failed: int
    latencies_us: list[float] = field(default_factory=list)

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile of the latencies, in ms (0 for none)."""
        values = sorted(self.latencies_us)
        if not values:
            return 0.0
        rank = max(1, math.ceil(p / 100.0 * len(values)))
        return values[min(rank, len(values)) - 1] / 1000.0


class Generator(Protocol):
    name: str

    def run(
        self,
        *,
        port: int,
        method: str,
        body: Path,
        headers: list[tuple[str, str]],
        connections: int,
        streams: int,
        duration: float,
        warmup: float,
        rate: float | None,
    ) -> LoadResult: ...


_FINISHED = re.compile(r"finished in [\d.]+m?s, ([\d.]+) req/s")
_REQUESTS = re.compile(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed")


class H2Load:
    """nghttp2's h2load: C, so the client costs the shared CPUs little."""

    def __init__(self, path: str) -> None:
        self._path = path
        version = subprocess.run([path, "--version"], capture_output=True, text=True, check=False).stdout
        self.name = version.strip() or "h2load"

    def run(
        self,
        *,
        port: int,
        method: str,
        body: Path,
        headers: list[tuple[str, str]],
        connections: int,
        streams: int,
        duration: float,
        warmup: float,
        rate: float | None,
    ) -> LoadResult:
        with tempfile.NamedTemporaryFile(prefix="h2load-", suffix=".log") as log:
            command = [
                self._path,
                f"--clients={connections}",
                f"--max-concurrent-streams={streams}",
                f"--duration={round(duration * 1000)}ms",
                f"--warm-up-time={round(warmup * 1000)}ms",
                f"--data={body}",
                f"--log-file={log.name}",
            ]
            for name, value in headers:
                command.append(f"--header={name}: {value}")
            if rate:
                command.append(f"--rps={max(1, round(rate / connections))}")
            command.append(f"http://127.0.0.1:{port}{method}")
            done = subprocess.run(
                command, capture_output=True, text=True, check=False, timeout=duration + warmup + 60
            )
            output = done.stdout
            finished = _FINISHED.search(output)
            requests = _REQUESTS.search(output)
            if done.returncode != 0 or finished is None or requests is None:
                raise RuntimeError(
                    f"h2load failed ({done.returncode}): {output[-1500:]} {done.stderr[-500:]}"
                )
            latencies = []
            for line in Path(log.name).read_text().splitlines():
                parts = line.split("\t")
                if len(parts) >= 3 and parts[1].startswith("2"):
                    latencies.append(float(parts[2]))
        return LoadResult(
            rps=float(finished.group(1)),
            count=int(requests.group(2)),
            failed=int(requests.group(3)),
            latencies_us=latencies,
        )


@dataclass(frozen=True)
class _Job:
    port: int
    method: str
    payload: bytes
    metadata: tuple[tuple[str, str], ...]
    streams: int
    warmup: float
    duration: float
    rate: float | None


def _client_process(job: _Job) -> tuple[int, int, list[float]]:
    """One connection with ``job.streams`` threads calling back to back (or paced); returns
    (ok, failed, latencies in µs)."""
    port, method, payload, metadata = job.port, job.method, job.payload, job.metadata
    streams, warmup, duration, rate = job.streams, job.warmup, job.duration, job.rate
    # A channel per process: its own HTTP/2 connection, as h2load's clients have.
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
    call = channel.unary_unary(method)
    start = time.perf_counter() + warmup
    stop = start + duration
    results: list[tuple[int, int, list[float]]] = []
    lock = threading.Lock()

    def worker() -> None:
        ok = failed = 0
        latencies: list[float] = []
        interval = streams / rate if rate else 0.0
        next_at = time.perf_counter()
        while True:
            now = time.perf_counter()
            if now >= stop:
                break
            if interval:
                if next_at > now:
                    time.sleep(next_at - now)
                next_at += interval
            began = time.perf_counter()
            try:
                call(payload, metadata=metadata, timeout=10)
                success = True
            except grpc.RpcError:
                success = False
            ended = time.perf_counter()
            if began >= start:
                if success:
                    ok += 1
                    latencies.append((ended - began) * 1e6)
                else:
                    failed += 1
        with lock:
            results.append((ok, failed, latencies))

    threads = [threading.Thread(target=worker) for _ in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    channel.close()
    merged: list[float] = []
    for _, _, latencies in results:
        merged.extend(latencies)
    return sum(r[0] for r in results), sum(r[1] for r in results), merged


class PythonClient:
    """The bench's own client: one spawned process per connection, one thread per stream."""

    name = "python multi-process client"

    def run(
        self,
        *,
        port: int,
        method: str,
        body: Path,
        headers: list[tuple[str, str]],
        connections: int,
        streams: int,
        duration: float,
        warmup: float,
        rate: float | None,
    ) -> LoadResult:
        payload = body.read_bytes()[5:]  # the gRPC frame's prefix is grpcio's business here
        metadata = tuple((k, v) for k, v in headers if k not in {"content-type", "te", "grpc-timeout"})
        per_connection = rate / connections if rate else None
        spawn = multiprocessing.get_context("spawn")
        with spawn.Pool(connections) as pool:
            job = _Job(port, method, payload, metadata, streams, warmup, duration, per_connection)
            outcomes = pool.map(_client_process, [job] * connections)
        latencies = [value for outcome in outcomes for value in outcome[2]]
        ok = sum(outcome[0] for outcome in outcomes)
        return LoadResult(
            rps=ok / duration,
            count=ok,
            failed=sum(outcome[1] for outcome in outcomes),
            latencies_us=latencies,
        )


def choose(preference: str) -> Generator:
    """h2load when installed (or demanded), else the Python client."""
    path = shutil.which("h2load")
    if preference == "h2load":
        if path is None:
            raise SystemExit("h2load is not installed (apt-get install nghttp2-client)")
        return H2Load(path)
    if preference == "auto" and path is not None:
        return H2Load(path)
    return PythonClient()
