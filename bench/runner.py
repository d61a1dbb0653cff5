"""The benchmark: start the stack, run the scenarios from a separate client process, report.

Scenarios, in order, all through the generated stubs with a real Cognito (moto) admin token:

1. CreateBusiness with two locations (registers both with Citrus).
2. Seed: CreateResource ``--seed`` times per location (includes the shard's first use).
3. Warm-up (unmeasured), then the warm phase, during which Citrus and DynamoDB calls are
   counted: GetResource sequential, ListResources (page of 50), UpdateResource with
   ``update_mask: data.status``, CreateResource, and GetResource from ``--concurrency`` threads
   for ``--duration`` seconds (throughput).
4. Cold: new businesses until ``--cold`` of them landed on a shard the server never used;
   each one's first request (a CreateResource) is timed: routing miss (Citrus), pool open,
   schema migration. Businesses landing on a known shard are reported separately.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from bench import load, queries
from bench.load import Samples, Workload
from bench.pgwire import PgRoundTripCounter
from bench.server_timing import server_timings
from bench.stack import BenchStack, running_stack
from bench.stats import latency_summary, scenario_result, table

T = TypeVar("T")

LOCATIONS = ("main", "annex")
# Citrus calls a request may make; "health" and "capacity" come from readiness probes and admin.
CITRUS_REQUEST_PATH = ("get_shard", "register")
# DynamoDB operations that are readiness probes, not request work.
DYNAMODB_PROBES = ("describe_table",)

DEFAULTS = {
    "requests": 2000,
    "duration": 10.0,
    "concurrency": 8,
    "cold": 2,
    "seed": 60,
    "query_rows": 100_000,
}
QUICK = {"requests": 40, "duration": 1.0, "concurrency": 2, "cold": 1, "seed": 10, "query_rows": 2000}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Latency and throughput of simplu-grpc on a real local stack (see bench/README.md).",
    )
    parser.add_argument(
        "--requests",
        type=int,
        help="sequential GetResource requests; ListResources runs 1/4 of that, Update and Create 1/2"
        f" (default {DEFAULTS['requests']})",
    )
    parser.add_argument(
        "--duration", type=float, help=f"seconds of the concurrent phase (default {DEFAULTS['duration']:g})"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        help=f"client threads in the concurrent phase (default {DEFAULTS['concurrency']})",
    )
    parser.add_argument(
        "--cold", type=int, help=f"cold first requests to a new shard to time (default {DEFAULTS['cold']})"
    )
    parser.add_argument(
        "--seed",
        type=int,
        help=f"resources created per location before the warm phase (default {DEFAULTS['seed']})",
    )
    parser.add_argument(
        "--query-rows",
        type=int,
        help="resources COPY-ed into the first location for the filter, search and statistics scenarios"
        f" (default {DEFAULTS['query_rows']})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny counts, for smoke-checking that the bench and the service work (numbers mean little)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a server setting (environment name, e.g. SHARD_POOL_MAX_SIZE=4); repeatable",
    )
    return parser


def _config(args: argparse.Namespace) -> dict[str, Any]:
    base = QUICK if args.quick else DEFAULTS
    config: dict[str, Any] = {
        name: getattr(args, name) if getattr(args, name) is not None else base[name] for name in DEFAULTS
    }
    for name in ("requests", "concurrency", "seed", "query_rows"):
        if config[name] < 1:
            raise SystemExit(f"--{name} must be at least 1")
    if config["cold"] < 0 or config["duration"] <= 0:
        raise SystemExit("--cold must be >= 0 and --duration > 0")
    config["quick"] = args.quick
    return config


def _settings(pairs: Sequence[str]) -> dict[str, str]:
    settings = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise SystemExit(f"--set expects NAME=VALUE, got {pair!r}")
        settings[name.strip()] = value
    return settings


def _delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """after - before for flat or one-level nested counters, keeping only non-zero entries."""
    out: dict[str, Any] = {}
    for key, value in after.items():
        if isinstance(value, dict):
            inner = _delta(value, before.get(key, {}))
            if inner:
                out[key] = inner
        elif value - before.get(key, 0):
            out[key] = value - before.get(key, 0)
    return out


class Counters:
    """Snapshots of every counter the bench watches, so a phase reports what it caused."""

    def __init__(self, stack: BenchStack) -> None:
        self._stack = stack

    def snapshot(self) -> dict[str, Any]:
        return {
            "citrus": self._stack.citrus_calls(),
            "dependencies": self._stack.dependency_calls(),
            "caches": self._stack.cache_lookups(),
        }

    @staticmethod
    def summarize(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
        citrus = _delta(after["citrus"], before["citrus"])
        dependencies = _delta(after["dependencies"], before["dependencies"])
        dynamodb = dependencies.get("dynamodb", {})
        return {
            "citrus_calls": citrus,
            "citrus_request_path_calls": sum(citrus.get(kind, 0) for kind in CITRUS_REQUEST_PATH),
            "dependency_calls": dependencies,
            "dynamodb_request_path_calls": sum(n for op, n in dynamodb.items() if op not in DYNAMODB_PROBES),
            "jwks_calls": sum(dependencies.get("jwks", {}).values()),
            "cache_lookups": _delta(after["caches"], before["caches"]),
        }


def run(config: dict[str, Any], settings: dict[str, str], out: Callable[[str], None]) -> dict[str, Any]:
    """Start the stack, run every scenario, stop the stack; return the report."""
    report: dict[str, Any] = {
        "version": 1,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "config": {**config, "server_settings": settings},
        "scenarios": {},
    }
    scenarios: dict[str, dict[str, Any]] = report["scenarios"]
    started = time.perf_counter()
    out("starting PostgreSQL, the Citrus emulator, moto and the server...")
    proxies: list[PgRoundTripCounter] = []
    with contextlib.ExitStack() as exits:
        # Registered first, so it runs last: the server's pools close before the proxy does.
        exits.callback(lambda: [proxy.stop() for proxy in proxies])
        stack = exits.enter_context(running_stack(settings))
        report["stack"] = {
            "postgres": stack.postgres,
            "db_prefix": stack.db_prefix,
            "startup_s": round(time.perf_counter() - started, 2),
            "metrics_available": stack.metrics is not None,
            "ports": stack.ports(),
        }
        out(
            f"stack up in {report['stack']['startup_s']:.1f}s (PostgreSQL: {stack.postgres});"
            " running scenarios..."
        )
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            max_workers=1, mp_context=spawn, initializer=load.connect, initargs=(stack.target, stack.token)
        ) as client:

            def call(fn: Callable[..., T], *args: Any) -> T:
                return client.submit(fn, *args).result()

            try:
                _scenarios(
                    call, stack=stack, config=config, report=report, scenarios=scenarios, proxies=proxies
                )
            finally:
                call(load.close)
        teardown_started = time.perf_counter()
    report["stack"]["teardown_s"] = round(time.perf_counter() - teardown_started, 2)
    report["total_s"] = round(time.perf_counter() - started, 2)
    return report


def _scenarios(
    call: Callable[..., Any],
    *,
    stack: BenchStack,
    config: dict[str, Any],
    report: dict[str, Any],
    scenarios: dict[str, dict[str, Any]],
    proxies: list[PgRoundTripCounter],
) -> None:
    requests = config["requests"]
    counters = Counters(stack)

    business_id, create_ms = call(load.create_business, "Bench Dental", LOCATIONS)
    scenarios["create_business"] = scenario_result(
        f"CreateBusiness ({len(LOCATIONS)} locations)",
        Samples(latencies_ms=[create_ms], elapsed_s=create_ms / 1000.0),
        show_throughput=False,
    )
    workload = Workload(business_id=business_id, location_ids=LOCATIONS)
    seed: Samples = call(load.run_sequential, "create", workload, config["seed"] * len(LOCATIONS))
    scenarios["seed_create"] = scenario_result("CreateResource (seed, first use)", seed)
    ids: dict[str, list[str]] = {loc: [] for loc in LOCATIONS}
    for location, resource_id in seed.created:
        ids[location].append(resource_id)
    if not all(ids.values()):
        raise RuntimeError(f"seeding failed: {seed.first_error or 'no resources created'}")
    workload = Workload(
        business_id=business_id,
        location_ids=LOCATIONS,
        resource_ids={loc: tuple(found) for loc, found in ids.items()},
    )
    for kind in ("get", "list", "update"):
        call(load.run_sequential, kind, workload, 20)

    before = counters.snapshot()
    warm_started = time.perf_counter()
    phases: list[tuple[str, str, Samples]] = []
    phases.append(
        ("get", "GetResource warm, sequential", call(load.run_sequential, "get", workload, requests))
    )
    phases.append(
        (
            "list",
            f"ListResources page {workload.page_size}, sequential",
            call(load.run_sequential, "list", workload, max(1, requests // 4)),
        )
    )
    phases.append(
        (
            "update",
            "UpdateResource data.status, sequential",
            call(load.run_sequential, "update", workload, max(1, requests // 2), requests),
        )
    )
    phases.append(
        (
            "create",
            "CreateResource, sequential",
            call(load.run_sequential, "create", workload, max(1, requests // 2), 10 * requests),
        )
    )
    threads = config["concurrency"]
    phases.append(
        (
            "get_concurrent",
            f"GetResource warm, {threads} threads",
            call(load.run_concurrent, "get", workload, threads, config["duration"]),
        )
    )
    after = counters.snapshot()
    for key, description, samples in phases:
        extra: dict[str, Any] = {}
        if key == "list":
            extra["items_per_page"] = (
                round(sum(samples.items) / len(samples.items), 1) if samples.items else 0
            )
        if key == "get_concurrent":
            extra["threads"] = threads
        scenarios[key] = scenario_result(description, samples, **extra)
    report["warm_phase"] = {
        "elapsed_s": round(time.perf_counter() - warm_started, 2),
        "requests": sum(scenarios[key]["count"] for key, _, _ in phases),
        **Counters.summarize(before, after),
    }

    _query_scenarios(call, stack, workload, config, scenarios)

    report["cold"] = _cold(call, stack, counters, config["cold"], business_id)
    for kind, label in (("new_shard", "new shard"), ("known_shard", "new business, known shard")):
        latencies = [s["first_request_ms"] for s in report["cold"]["samples"] if s["kind"] == kind]
        if latencies:
            scenarios[f"cold_{kind}"] = scenario_result(
                f"Cold first request ({label})",
                Samples(latencies_ms=latencies, elapsed_s=sum(latencies) / 1000.0),
                show_throughput=False,
            )

    report["pg_round_trips"] = _round_trips(call, stack, workload, min(requests, 50), proxies)


def _query_scenarios(
    call: Callable[..., Any],
    stack: BenchStack,
    workload: Workload,
    config: dict[str, Any],
    scenarios: dict[str, dict[str, Any]],
) -> None:
    """Filtered list, text search and statistics on a location COPY-seeded with query_rows resources."""
    location = workload.location_ids[0]
    shard_id = stack.citrus.registrations()[f"{workload.business_id}-{location}"]
    rows = config["query_rows"]
    seeded_s = queries.seed_location(
        stack.citrus.shard(shard_id).connection_string, workload.business_id, location, rows
    )
    count = max(1, config["requests"] // 8)
    for kind, method, description in (
        ("filtered_list", "ListResources", f"ListResources filter, {rows} resources in the location"),
        ("search", "ListResources", f"ListResources text search, {rows} resources in the location"),
        (
            "statistics",
            "GetLocationStatistics",
            f"GetLocationStatistics (dental), {rows} resources in the location",
        ),
    ):
        call(load.run_sequential, kind, workload, 5)
        # The targets of these scenarios are server-side: the server's own duration of each
        # measured call (its access log) is reported beside the client's round trip.
        with server_timings() as timings:
            samples: Samples = call(load.run_sequential, kind, workload, count)
        extra: dict[str, Any] = {"seed_s": round(seeded_s, 1)}
        if samples.items:
            extra["items_per_page"] = round(sum(samples.items) / len(samples.items), 1)
        server = timings.take(method)
        if server:
            extra["server_latency_ms"] = {**latency_summary(server), "count": len(server)}
        scenarios[kind] = scenario_result(description, samples, **extra)


def _round_trips(
    call: Callable[..., Any],
    stack: BenchStack,
    workload: Workload,
    count: int,
    proxies: list[PgRoundTripCounter],
) -> dict[str, Any]:
    """PostgreSQL round trips per warm request, counted by a proxy the bench's shard is moved behind.

    The shard's connection string in Citrus is pointed at the proxy and the business's routes
    are dropped (ShardAdmin.InvalidateRouting), so the server re-asks Citrus and replaces the
    pool, exactly as after a Citrus failover. Untimed: the proxy itself adds latency.
    """
    shard_id = stack.citrus.registrations()[f"{workload.business_id}-{workload.location_ids[0]}"]
    original = stack.citrus.shard(shard_id).connection_string
    parts = urlsplit(original)
    proxy = PgRoundTripCounter(parts.hostname or "127.0.0.1", parts.port or 5432).start()
    proxies.append(proxy)
    stack.citrus.move_shard(shard_id, proxy.rewrite(original))
    call(load.invalidate_routing, workload.business_id)
    for kind in ("get", "list", "update", "create"):
        call(load.run_sequential, kind, workload, 10, 50_000)
    if proxy.round_trips() == 0:
        return {"error": "the server did not reconnect through the counting proxy", "shard": shard_id}
    per_request: dict[str, float] = {}
    messages: dict[str, dict[str, int]] = {}
    for kind in ("get", "list", "update", "create"):
        proxy.reset()
        samples: Samples = call(load.run_sequential, kind, workload, count, 60_000)
        done = len(samples.latencies_ms)
        per_request[kind] = round(proxy.round_trips() / done, 2) if done else 0.0
        messages[kind] = proxy.messages()
    return {"shard": shard_id, "requests_each": count, "per_request": per_request, "messages": messages}


def _cold(
    call: Callable[..., Any], stack: BenchStack, counters: Counters, wanted: int, business_id: str
) -> dict[str, Any]:
    """Create businesses until ``wanted`` landed on a shard never used before; time each first request."""
    registrations = stack.citrus.registrations()
    seen = {shard for key, shard in registrations.items() if key.startswith(f"{business_id}-")}
    samples: list[dict[str, Any]] = []
    new_shards = 0
    # Citrus fills a shard (capacity businesses) before it opens the next one.
    budget = wanted * (stack.citrus.capacity + 1)
    while new_shards < wanted and len(samples) < budget:
        cold_id, create_ms = call(load.create_business, f"Cold Clinic {len(samples)}", ("main",))
        shard = stack.citrus.registrations()[f"{cold_id}-main"]
        kind = "known_shard" if shard in seen else "new_shard"
        seen.add(shard)
        workload = Workload(business_id=cold_id, location_ids=("main",))
        before = counters.snapshot()
        first: Samples = call(load.run_sequential, "create", workload, 1)
        middle = counters.snapshot()
        if not first.latencies_ms:
            raise RuntimeError(f"cold request to {shard} failed: {first.first_error}")
        warm = Workload(
            business_id=cold_id, location_ids=("main",), resource_ids={"main": (first.created[0][1],)}
        )
        second: Samples = call(load.run_sequential, "get", warm, 1)
        summary = Counters.summarize(before, middle)
        samples.append(
            {
                "kind": kind,
                "shard": shard,
                "create_business_ms": round(create_ms, 3),
                "first_request_ms": round(first.latencies_ms[0], 3),
                "next_get_ms": round(second.latencies_ms[0], 3) if second.latencies_ms else None,
                "citrus_calls": summary["citrus_calls"],
                "dynamodb_request_path_calls": summary["dynamodb_request_path_calls"],
            }
        )
        new_shards += kind == "new_shard"
    return {
        "samples": samples,
        "new_shard_first_request_ms": latency_summary(
            [s["first_request_ms"] for s in samples if s["kind"] == "new_shard"]
        ),
    }


def render(report: dict[str, Any]) -> str:
    """The human-readable summary printed at the end."""
    lines = [
        "",
        f"simplu-grpc bench — {report['machine']['cpus']} CPUs, Python {report['machine']['python']},"
        f" PostgreSQL: {report['stack']['postgres']}",
        "",
        table(report["scenarios"]),
        "",
    ]
    warm = report.get("warm_phase")
    if warm:
        citrus = warm["citrus_calls"]
        probes = {k: v for k, v in citrus.items() if k not in CITRUS_REQUEST_PATH}
        dynamodb = warm["dependency_calls"].get("dynamodb", {})
        lines += [
            f"Warm phase: {warm['requests']} requests in {warm['elapsed_s']:.1f}s (after warm-up)",
            f"  Citrus calls on the request path (get_shard, register): {warm['citrus_request_path_calls']}"
            + (f"   [readiness/admin probes: {probes}]" if probes else ""),
        ]
        if report["stack"]["metrics_available"]:
            dyn_probes = {k: v for k, v in dynamodb.items() if k in DYNAMODB_PROBES}
            lines += [
                f"  DynamoDB calls on the request path: {warm['dynamodb_request_path_calls']}"
                + (f"   [readiness probes: {dyn_probes}]" if dyn_probes else ""),
                f"  JWKS calls: {warm['jwks_calls']}",
                f"  cache lookups: {_caches(warm['cache_lookups'])}",
            ]
        else:
            lines.append("  DynamoDB / JWKS calls: not observable (server metrics registry not reachable)")
    trips = report.get("pg_round_trips", {})
    if "per_request" in trips:
        per = ", ".join(f"{kind} {n:g}" for kind, n in trips["per_request"].items())
        lines.append(f"  PostgreSQL round trips per warm request (counted by a wire proxy): {per}")
    elif trips:
        lines.append(f"  PostgreSQL round trips: not counted ({trips.get('error')})")
    server_side = {
        name: r["server_latency_ms"] for name, r in report["scenarios"].items() if "server_latency_ms" in r
    }
    if server_side:
        lines.append("Server-side (the server's access-log duration of the same calls):")
        for name, latency in server_side.items():
            lines.append(
                f"  {name:<14} p50 {latency['p50']:7.2f} ms, p95 {latency['p95']:7.2f} ms,"
                f" p99 {latency['p99']:7.2f} ms, max {latency['max']:7.2f} ms"
            )
    cold = report.get("cold", {}).get("samples", [])
    if cold:
        lines.append("Cold samples (first request of a new business; CreateResource):")
        for sample in cold:
            lines.append(
                f"  {sample['kind']:<11} {sample['shard']:<9} first {sample['first_request_ms']:8.2f} ms,"
                f" next get {sample['next_get_ms'] or 0:6.2f} ms,"
                f" CreateBusiness {sample['create_business_ms']:7.2f} ms,"
                f" Citrus {sample['citrus_calls'] or {}},"
                f" DynamoDB reads {sample['dynamodb_request_path_calls']}"
            )
    lines.append(
        f"Total {report['total_s']:.1f}s (stack start {report['stack']['startup_s']:.1f}s,"
        f" teardown {report['stack']['teardown_s']:.1f}s)."
        " Numbers from a small shared machine are indicative only."
    )
    return "\n".join(lines)


def _caches(lookups: dict[str, dict[str, int]]) -> str:
    parts = []
    for cache, results in sorted(lookups.items()):
        total = sum(results.values())
        hits = results.get("hit", 0)
        parts.append(f"{cache} {hits}/{total} hits")
    return ", ".join(parts) or "none"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config = _config(args)
    settings = _settings(args.set)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def out(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    report = run(config, settings, out)
    print(render(report), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    failed = {name: r["errors"] for name, r in report["scenarios"].items() if r["errors"]}
    if failed:
        print(f"RPC errors: {failed}", file=sys.stderr)
        return 1
    return 0
