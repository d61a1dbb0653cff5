"""WatchResources: how fast a change reaches a watcher, what idle watchers cost, what NOTIFY costs.

``python -m bench.watch`` starts the dev stack without its in-process server, then server
processes (``simplu-grpc serve``, like the capacity bench) and measures, through real channels:

1. **latency** — watchers on one server; writes (create, update, delete in turn) through a
   second server process, one at a time: the time from just before the write call to the change
   arriving at each watcher (p50/p99 over every watcher and write), and from the write's answer;
2. **idle watchers** — GetResource throughput (the capacity bench's load generator) on one
   server, without watchers, then with ``--watchers`` idle streams open on it (another location,
   so they never wake), then without again; the server's RSS and thread count beside each, and
   whether health still answers;
3. **notify cost** — CreateResource/UpdateResource throughput with the change log's NOTIFY
   trigger (migration 0008) and with it dropped, on the same shard;
4. **replicas** (``--replicas-seconds``) — two servers, watchers on both, writes through both for
   that long, one watcher cut off and resumed on the other replica every few seconds: every
   watcher must see every change exactly once, in sequence order (the 5-minute acceptance run
   is ``--replicas-seconds 300``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from simplu.v1 import resource_pb2, resource_pb2_grpc

from bench import loadgen
from bench.capacity import METHODS, Server, _checkout, _seed, _start_service, request_bodies
from bench.load import RESOURCE_TYPE
from bench.stack import BenchStack, running_stack


def _percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(min(rank, len(ordered))) - 1]


class Stream:
    """One watcher: a thread reading a stream, noting when each change arrived."""

    def __init__(self, target: str, token: str, business_id: str, location_id: str, resume: str = "") -> None:
        self.channel = grpc.insecure_channel(target)
        stub = resource_pb2_grpc.ResourceServiceStub(self.channel)
        self.call: Any = stub.WatchResources(
            resource_pb2.WatchResourcesRequest(
                business_id=business_id, location_id=location_id, resume_token=resume
            ),
            metadata=(("authorization", f"Bearer {token}"),),
        )
        self.arrivals: list[tuple[str, int, float]] = []  # (resource id, sequence, monotonic)
        self.token = ""
        self.started = threading.Event()
        self.error: str = ""
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for message in self.call:
                now = time.monotonic()
                self.token = message.resume_token
                if message.HasField("change"):
                    self.arrivals.append((message.change.resource_id, message.change.sequence, now))
                self.started.set()
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                self.error = f"{exc.code().name}: {exc.details()}"
        self.started.set()

    def close(self) -> None:
        self.call.cancel()
        self._thread.join(10)
        self.channel.close()


def _resource_stub(target: str) -> tuple[resource_pb2_grpc.ResourceServiceStub, grpc.Channel]:
    channel = grpc.insecure_channel(target)
    return resource_pb2_grpc.ResourceServiceStub(channel), channel


def _wait(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.005)
    return True


def _process(server: Server) -> dict[str, float]:
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "rss_mib": round(int(fields["VmRSS"].split()[0]) / 1024, 1),
        "threads": int(fields["Threads"].strip()),
    }


def latency(
    stack: BenchStack, watch_on: Server, write_on: Server, business_id: str, writes: int
) -> dict[str, Any]:
    streams = [Stream(f"127.0.0.1:{watch_on.port}", stack.token, business_id, "main") for _ in range(4)]
    for stream in streams:
        stream.started.wait(30)
    stub, channel = _resource_stub(f"127.0.0.1:{write_on.port}")
    md = (("authorization", f"Bearer {stack.token}"),)
    sent: list[float] = []
    answered: list[float] = []
    kinds = itertools.cycle(("create", "update", "delete"))
    made = 0
    for index in range(writes):
        kind = next(kinds)
        started = time.monotonic()
        if kind == "create":
            made += 1
        resource_id = f"lat{made:05d}"
        resource = resource_pb2.Resource(
            business_id=business_id, location_id="main", resource_type=RESOURCE_TYPE, resource_id=resource_id
        )
        if kind == "create":
            resource.data.update({"status": "new"})
            request: Any = resource_pb2.CreateResourceRequest(resource=resource, resource_id=resource_id)
            stub.CreateResource(request, metadata=md, timeout=10)
        elif kind == "update":
            resource.data.update({"status": "seen"})
            stub.UpdateResource(
                resource_pb2.UpdateResourceRequest(resource=resource), metadata=md, timeout=10
            )
        else:
            request = resource_pb2.DeleteResourceRequest(
                business_id=business_id,
                location_id="main",
                resource_type=RESOURCE_TYPE,
                resource_id=resource_id,
            )
            stub.DeleteResource(request, metadata=md, timeout=10)
        sent.append(started)
        answered.append(time.monotonic())
        _wait(lambda count=index + 1: all(len(s.arrivals) >= count for s in streams), 10)
    channel.close()
    from_call, from_answer = [], []
    for stream in streams:
        for index, (_, _, arrived) in enumerate(stream.arrivals[:writes]):
            from_call.append((arrived - sent[index]) * 1000)
            from_answer.append((arrived - answered[index]) * 1000)
        stream.close()
    return {
        "writes": writes,
        "watchers": len(streams),
        "delivered": len(from_call),
        "ms_from_call_p50": round(statistics.median(from_call), 2) if from_call else None,
        "ms_from_call_p99": round(_percentile(from_call, 99), 2),
        "ms_from_answer_p50": round(statistics.median(from_answer), 2) if from_answer else None,
        "ms_from_answer_p99": round(_percentile(from_answer, 99), 2),
        "ms_from_call_max": round(max(from_call), 2) if from_call else None,
    }


def _rps(
    server: Server, kind: str, bodies: dict[str, Path], headers: list[tuple[str, str]], duration: float
) -> float:
    """Requests per second of one RPC on ``server`` (the capacity bench's Python load generator)."""
    result = loadgen.choose("python").run(
        port=server.port,
        method=METHODS[kind],
        body=bodies[kind],
        headers=headers,
        connections=4,
        streams=4,
        duration=duration,
        warmup=1.0,
        rate=None,
    )
    return round(result.rps, 1)


class IdleStreams:
    """``count`` watch streams held open by another process (asyncio, one thread): the server's
    cost of idle watchers, without this process's threads (grpc's blocking iterators wake ten
    times a second each) competing for the same CPUs."""

    def __init__(self, target: str, token: str, business_id: str, location_id: str, count: int) -> None:
        spawn = multiprocessing.get_context("spawn")
        self._stop = spawn.Event()
        self._parent, child = spawn.Pipe()
        self._process = spawn.Process(
            target=_hold_streams, args=((target, token, business_id, location_id, count), self._stop, child)
        )
        self._process.start()
        self.opened = int(self._parent.recv()) if self._parent.poll(120) else 0

    def cpu_seconds(self) -> float:
        """CPU time the holder process used so far (it must stay idle to measure the server)."""
        fields = Path(f"/proc/{self._process.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> list[str]:
        self._stop.set()
        errors = self._parent.recv() if self._parent.poll(60) else ["no answer from the stream holder"]
        self._process.join(30)
        return list(errors)


def _hold_streams(spec: tuple[str, str, str, str, int], stop: Any, pipe: Any) -> None:
    import asyncio

    target, token, business_id, location_id, count = spec

    async def hold() -> None:
        errors: list[str] = []
        async with grpc.aio.insecure_channel(target) as channel:
            stub = resource_pb2_grpc.ResourceServiceStub(channel)
            request = resource_pb2.WatchResourcesRequest(business_id=business_id, location_id=location_id)
            calls = [
                stub.WatchResources(request, metadata=(("authorization", f"Bearer {token}"),))
                for _ in range(count)
            ]
            opened = 0
            for call in calls:
                try:
                    await call.read()  # the first message: established
                    opened += 1
                except grpc.aio.AioRpcError as exc:
                    errors.append(f"{exc.code().name}: {exc.details()}")
            pipe.send(opened)
            while not stop.is_set():
                await asyncio.sleep(0.5)
            for call in calls:
                call.cancel()
        pipe.send(sorted(set(errors)))

    asyncio.run(hold())


def idle_watchers(
    stack: BenchStack,
    server: Server,
    business_id: str,
    bodies: dict[str, Path],
    headers: list[tuple[str, str]],
    *,
    watchers: int,
    duration: float,
    rounds: int = 3,
) -> dict[str, Any]:
    """GetResource throughput without and with ``watchers`` idle streams, alternately ``rounds``
    times each (a shared machine drifts: alternating keeps the drift out of the ratio)."""
    without: list[float] = []
    with_: list[float] = []
    found: dict[str, Any] = {"watchers": watchers, "rounds": rounds}
    errors: set[str] = set()
    cpu_without: list[float] = []
    cpu_with: list[float] = []
    holder_cpu: list[float] = []
    for round_ in range(rounds):
        before = server.cpu_seconds()
        without.append(_rps(server, "get", bodies, headers, duration))
        cpu_without.append(round(1000 * (server.cpu_seconds() - before) / (without[-1] * (duration + 1)), 3))
        if round_ == 0:
            found["process_before_any_watcher"] = _process(server)
        idle = IdleStreams(f"127.0.0.1:{server.port}", stack.token, business_id, "annex", watchers)
        found["watchers_opened"] = idle.opened
        time.sleep(1)
        before, held = server.cpu_seconds(), idle.cpu_seconds()
        with_.append(_rps(server, "get", bodies, headers, duration))
        cpu_with.append(round(1000 * (server.cpu_seconds() - before) / (with_[-1] * (duration + 1)), 3))
        holder_cpu.append(round(idle.cpu_seconds() - held, 2))
        found["process_with_watchers"] = _process(server)
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        found["health_with_watchers"] = health_pb2.HealthCheckResponse.ServingStatus.Name(health.status)
        errors |= set(idle.close())
        time.sleep(1)
    found["process_after_watchers"] = _process(server)
    found["get_rps_without"] = without
    found["get_rps_with"] = with_
    found["server_cpu_ms_per_get_without"] = cpu_without
    found["server_cpu_ms_per_get_with"] = cpu_with
    found["stream_holder_cpu_seconds_per_round"] = holder_cpu
    found["stream_errors"] = sorted(errors)
    base = statistics.median(without)
    found["ratio_with_to_without"] = round(statistics.median(with_) / base, 3) if base else None
    return found


def notify_cost(
    stack: BenchStack,
    server: Server,
    *,
    scratch: Path,
    bodies: dict[str, Path],
    headers: list[tuple[str, str]],
    duration: float,
    against: str,
) -> dict[str, Any]:
    """Create/Update throughput of this code and of ``against`` (a git ref: its write statements
    without the NOTIFY), served alternately against the same shard."""
    found: dict[str, Any] = {"against": against}
    with _checkout(against, scratch) as code:
        baseline = _start_service(stack, 1, {}, scratch, code=code, name="baseline")
        try:
            for kind in ("update", "create"):
                rounds = [
                    (
                        _rps(server, kind, bodies, headers, duration),
                        _rps(baseline, kind, bodies, headers, duration),
                    )
                    for _ in range(2)
                ]
                ours = statistics.mean(r[0] for r in rounds)
                theirs = statistics.mean(r[1] for r in rounds)
                found[kind] = {
                    "rps_with_notify": round(ours, 1),
                    "rps_baseline": round(theirs, 1),
                    "cost_percent": round(100 * (theirs - ours) / theirs, 1) if theirs else None,
                }
        finally:
            baseline.stop()
    return found


def replicas(stack: BenchStack, one: Server, two: Server, business_id: str, seconds: float) -> dict[str, Any]:
    targets = [f"127.0.0.1:{one.port}", f"127.0.0.1:{two.port}"]
    streams = {f"w{n}": Stream(targets[n % 2], stack.token, business_id, "main") for n in range(4)}
    for stream in streams.values():
        stream.started.wait(30)
    earlier: dict[str, list[tuple[str, int, float]]] = {name: [] for name in streams}
    stubs = [_resource_stub(t) for t in targets]
    md = (("authorization", f"Bearer {stack.token}"),)
    written: list[str] = []
    stop = threading.Event()

    def write(n: int) -> None:
        stub = stubs[n][0]
        for count in itertools.count():
            if stop.is_set():
                return
            resource = resource_pb2.Resource(
                business_id=business_id, location_id="main", resource_type=RESOURCE_TYPE
            )
            resource.data.update({"writer": n, "count": count})
            made = stub.CreateResource(
                resource_pb2.CreateResourceRequest(resource=resource), metadata=md, timeout=10
            )
            written.append(made.resource_id)
            time.sleep(0.01)

    writers = [threading.Thread(target=write, args=(n,), daemon=True) for n in range(2)]
    for writer in writers:
        writer.start()
    end = time.monotonic() + seconds
    resumes = 0
    for cycle in itertools.count():
        if time.monotonic() >= end:
            break
        time.sleep(min(3.0, max(0.0, end - time.monotonic())))
        name = f"w{cycle % 4}"
        moving = streams[name]
        moving.close()
        earlier[name] += moving.arrivals
        streams[name] = Stream(targets[(cycle + 1) % 2], stack.token, business_id, "main", moving.token)
        resumes += 1
    stop.set()
    for writer in writers:
        writer.join(20)
    expected = set(written)
    _wait(
        lambda: all(
            len({a[0] for a in earlier[n] + s.arrivals}) >= len(expected) for n, s in streams.items()
        ),
        60,
    )
    verdict: dict[str, Any] = {"seconds": seconds, "writes": len(written), "resumes": resumes, "watchers": {}}
    for name, stream in streams.items():
        got = earlier[name] + stream.arrivals
        ids = [a[0] for a in got]
        sequences = [a[1] for a in got]
        verdict["watchers"][name] = {
            "received": len(ids),
            "lost": len(expected - set(ids)),
            "duplicated": len(ids) - len(set(ids)),
            "in_sequence_order": sequences == sorted(sequences),
            "error": stream.error,
        }
        stream.close()
    for _, channel in stubs:
        channel.close()
    return verdict


def run(config: argparse.Namespace, out: Callable[[str], None]) -> dict[str, Any]:
    report: dict[str, Any] = {"kind": "watch", "config": vars(config).copy()}
    report["config"].pop("json", None)
    with (
        tempfile.TemporaryDirectory(prefix="simplu-watch-") as tmp,
        running_stack(in_process_server=False) as stack,
    ):
        scratch = Path(tmp)
        # Streams count against the admission bound: room for the watchers and the unary load.
        settings = {
            "WATCH_MAX_STREAMS": str(config.watchers + 100),
            "GRPC_MAX_CONCURRENT_RPCS": str(config.watchers + 100 + 256),
        }
        one = _start_service(stack, 1, settings, scratch, name="watch-one")
        two = _start_service(stack, 1, settings, scratch, name="watch-two")
        try:
            out(f"servers up on {one.port} and {two.port}; seeding")
            business_id, resource_id = _seed(f"127.0.0.1:{one.port}", stack.token, 20)
            bodies: dict[str, Path] = {}
            for kind, body in request_bodies(business_id, resource_id).items():
                bodies[kind] = scratch / f"{kind}.bin"
                bodies[kind].write_bytes(body)
            headers = [
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                ("grpc-timeout", "10S"),
                ("authorization", f"Bearer {stack.token}"),
            ]
            report["latency"] = latency(stack, one, two, business_id, config.writes)
            out(f"latency: {json.dumps(report['latency'])}")
            report["idle_watchers"] = idle_watchers(
                stack, one, business_id, bodies, headers, watchers=config.watchers, duration=config.duration
            )
            out(f"idle watchers: {json.dumps(report['idle_watchers'])}")
            report["notify_cost"] = notify_cost(
                stack,
                one,
                scratch=scratch,
                bodies=bodies,
                headers=headers,
                duration=config.duration,
                against=config.against,
            )
            out(f"notify cost: {json.dumps(report['notify_cost'])}")
            if config.replicas_seconds:
                report["replicas"] = replicas(stack, one, two, business_id, config.replicas_seconds)
                out(f"replicas: {json.dumps(report['replicas'])}")
        finally:
            one.stop()
            two.stop()
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.watch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=300, help="writes timed in the latency row")
    parser.add_argument("--watchers", type=int, default=500, help="idle watchers in the idle row")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of each throughput measurement")
    parser.add_argument("--replicas-seconds", type=float, default=30.0, help="0: skip the replicas run")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: few writes, 20 watchers, 2 s rounds"
    )
    parser.add_argument("--against", default="main", help="git ref whose writes carry no NOTIFY")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON to PATH")
    config = parser.parse_args(argv)
    if config.quick:
        config.writes, config.watchers, config.duration, config.replicas_seconds = 15, 20, 2.0, 5.0
    report = run(config, lambda text: print(text, flush=True))
    if config.json:
        config.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
