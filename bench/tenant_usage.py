"""What per-tenant load tracking costs on the warm request path, next to a warm GetResource.

    .venv/bin/python -m bench.tenant_usage             # micro-benchmarks + a warm GetResource (~40 s)
    .venv/bin/python -m bench.tenant_usage --no-stack  # micro-benchmarks only (~5 s)

Micro-benchmarks (in this process, no I/O):

* ``hook``: ``ResourceOps._run`` — the one place every shard call passes — with a pool that hands
  out a dummy session and a statement that does nothing, with ``TenantLoad``, minus the same
  call without any tracking (``_bare_run``: what ``_run`` did before, the inactive-shard check and
  the checkout); the difference per call is everything the tracking adds to a request (two clock
  reads, the row count, the locked update).
* ``record (warm tenant)``: ``TenantLoad.record`` for tenants that already have an entry (the
  common case: a busy tenant calls many times a minute).
* ``record (new tenant each call, sketch full)``: the worst case, every call evicts the smallest.

Then the warm GetResource of the project's own dev stack (``bench.stack.running_stack``, as
``make bench``), sequential, client in a separate process (``bench.load``): the hook's cost is
reported as a share of it. Nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from simplu_grpc.domain.admin.tenant_load import IgnoreLoad, LoadRecorder, TenantLoad
from simplu_grpc.domain.placement.shards import ShardAssignment
from simplu_grpc.domain.resources.ops import ResourceOps

ASSIGNMENT = ShardAssignment(shard_id="shard-01", connection_string="postgresql://bench@nowhere/x")


class _NoPool:
    """Hands out a placeholder session: the statement below never uses it."""

    @contextlib.contextmanager
    def connection(self, assignment: ShardAssignment) -> Iterator[object]:
        yield None


def _ops(load: LoadRecorder) -> ResourceOps:
    return ResourceOps(
        businesses=None,  # type: ignore[arg-type]  # _run touches only the pool and the recorder
        authorizer=None,  # type: ignore[arg-type]
        routing=None,  # type: ignore[arg-type]
        pools=_NoPool(),  # type: ignore[arg-type]
        store=None,  # type: ignore[arg-type]  # the statement below is a plain callable
        load=load,
    )


def _bare_run(pools: _NoPool) -> Callable[..., object]:
    """``ResourceOps._run`` as it was before load tracking (the baseline of ``hook_ns``)."""

    def run(assignment: ShardAssignment, work: Callable[[object], object], *_: object) -> object:
        if not assignment.is_active:
            raise RuntimeError("inactive")
        with pools.connection(assignment) as session:
            return work(session)

    return run


def _per_call_ns(fn: Callable[[int], object], calls: int, rounds: int = 5) -> float:
    """The best of ``rounds`` runs of ``calls`` calls, per call (the least disturbed run)."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter_ns()
        for i in range(calls):
            fn(i)
        best = min(best, (time.perf_counter_ns() - started) / calls)
    return best


def micro(calls: int) -> dict[str, float]:
    """Per-call cost in ns of the hook and of ``record`` (see module docstring)."""
    tenants = [f"l{i}" for i in range(100)]

    def one_row(_: object) -> tuple[int, int]:
        return 1, 0

    def nothing(_: object) -> str:
        return "row"

    def run_with(run: Callable[..., object]) -> Callable[[int], object]:
        return lambda i: run(ASSIGNMENT, nothing, "b1", tenants[i % 100], one_row)

    tracked = _per_call_ns(run_with(_ops(TenantLoad(capacity=1000))._run), calls)
    ignored = _per_call_ns(run_with(_ops(IgnoreLoad())._run), calls)
    bare = _per_call_ns(run_with(_bare_run(_NoPool())), calls)

    warm = TenantLoad(capacity=1000)

    def record_warm(i: int) -> None:
        warm.record(
            "shard-01", "b1", tenants[i % 100], shard_ns=400_000, rows_read=1, rows_written=0, error=False
        )

    full = TenantLoad(capacity=1000)
    for i in range(1000):
        full.record("shard-01", "b1", f"seed{i}", shard_ns=1, rows_read=1, rows_written=0, error=False)
    serial = iter(range(10**12))

    def record_new(_: int) -> None:
        full.record(
            "shard-01", "b1", f"n{next(serial)}", shard_ns=400_000, rows_read=1, rows_written=0, error=False
        )

    return {
        "hook_ns": round(tracked - bare, 1),
        "run_with_tracking_ns": round(tracked, 1),
        "run_with_ignore_load_ns": round(ignored, 1),
        "run_before_tracking_ns": round(bare, 1),
        "record_warm_tenant_ns": round(_per_call_ns(record_warm, calls), 1),
        "record_new_tenant_full_sketch_ns": round(_per_call_ns(record_new, calls), 1),
    }


def warm_get(requests: int) -> dict[str, float]:
    """Sequential warm GetResource on the dev stack; client in its own process (``bench.load``)."""
    from bench import load
    from bench.stack import running_stack

    with running_stack() as stack:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            max_workers=1, mp_context=context, initializer=load.connect, initargs=(stack.target, stack.token)
        ) as client:
            business_id, _ = client.submit(load.create_business, "Tenant usage bench", ("l1",)).result()
            seed = load.Workload(business_id=business_id, location_ids=("l1",))
            created = client.submit(load.run_sequential, "create", seed, 20).result()
            workload = load.Workload(
                business_id=business_id,
                location_ids=("l1",),
                resource_ids={"l1": tuple(rid for _, rid in created.created)},
            )
            client.submit(load.run_sequential, "get", workload, 300).result()  # warm-up
            samples = client.submit(load.run_sequential, "get", workload, requests).result()
            client.submit(load.close).result()
    if samples.errors:
        raise RuntimeError(f"GetResource failed: {samples.errors} {samples.first_error}")
    return {
        "get_resource_mean_us": round(statistics.fmean(samples.latencies_ms) * 1000, 1),
        "get_resource_p50_us": round(statistics.median(samples.latencies_ms) * 1000, 1),
        "requests": float(len(samples.latencies_ms)),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tenant_usage", description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200_000, help="calls per micro-benchmark round")
    parser.add_argument("--requests", type=int, default=3000, help="warm GetResource calls to time")
    parser.add_argument("--no-stack", action="store_true", help="micro-benchmarks only")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"micro": micro(args.calls)}
    for name, value in report["micro"].items():
        print(f"{name:36} {value:>10.1f} ns")
    if not args.no_stack:
        report["warm"] = warm_get(args.requests)
        mean_ns = report["warm"]["get_resource_mean_us"] * 1000
        p50_ns = report["warm"]["get_resource_p50_us"] * 1000
        report["hook_share_of_warm_get_percent"] = round(100 * report["micro"]["hook_ns"] / mean_ns, 3)
        report["hook_share_of_warm_get_p50_percent"] = round(100 * report["micro"]["hook_ns"] / p50_ns, 3)
        p50 = report["warm"]["get_resource_p50_us"]
        print(f"{'warm GetResource (mean)':36} {mean_ns:>10.1f} ns  (p50 {p50} us)")
        print(f"{'hook / warm GetResource (mean)':36} {report['hook_share_of_warm_get_percent']:>10.3f} %")
        print(f"{'hook / warm GetResource (p50)':36} {report['hook_share_of_warm_get_p50_percent']:>10.3f} %")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(report, out, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
