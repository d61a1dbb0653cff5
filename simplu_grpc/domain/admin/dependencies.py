"""Dependency status: light probes of every dependency, run concurrently, each bounded, secrets scrubbed.

An operator asks "what is up?" during an incident, usually because something is down. So
the answer must come back quickly even when every dependency hangs: each probe runs in
its own thread under a short deadline (adapters bound their calls by
``context.deadline()``), and the caller waits at most ``probe_timeout`` plus a little
for all of them together. A probe that has not answered by then is reported down
("no answer within ..."); its thread is left to finish on its own deadline rather
than holding the RPC.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from simplu_grpc import context
from simplu_grpc.context import Deadline
from simplu_grpc.domain.admin.ports import Pools
from simplu_grpc.errors import NotFound
from simplu_grpc.redact import describe_error

log = logging.getLogger(__name__)

# A probe raises when its dependency is down; what it returns is ignored.
Probe = Callable[[], object]

# How long one admin call may wait on Citrus or the business store (the RPC's deadline wins
# when shorter): an operator in an incident wants "Citrus is down" now, not after retries.
CALL_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class DependencyCheck:
    """The outcome of one probe: ``error`` is empty when up and never holds a secret.

    ``latency_seconds`` is None when the probe did not answer within the budget: how long it
    would have taken is not known.
    """

    name: str
    up: bool
    latency_seconds: float | None
    error: str
    checked_at: datetime


class DependencyProber:
    """Runs named probes concurrently and reports each within ``probe_timeout`` seconds.

    ``secrets`` (the Citrus API key, the single-database password) are scrubbed from every
    error text on top of ``redact()``, in case some library echoes them.
    """

    def __init__(
        self,
        *,
        probe_timeout: float = 1.5,
        max_workers: int = 16,
        secrets: Iterable[str] = (),
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if probe_timeout <= 0:
            raise ValueError(f"probe_timeout must be > 0, got {probe_timeout}")
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        self.probe_timeout = probe_timeout
        self._max_workers = max_workers
        self._secrets = tuple(s for s in secrets if s)
        self._clock = clock
        self._now = now

    def run(self, probes: Mapping[str, Probe]) -> list[DependencyCheck]:
        """Every probe's outcome, in the order given; returns within about ``probe_timeout``."""
        if not probes:
            return []
        # Never beyond the RPC's own deadline, never beyond the probe budget (+ a margin for
        # the threads to report an adapter-level timeout themselves, which reads better).
        budget = min(self.probe_timeout, max(0.05, context.deadline().remaining() - 0.1))
        wait_for = budget + 0.25
        request_id = context.request_id()
        checked_at = self._now()
        # A fresh executor per call: a probe stuck past its deadline must not occupy a worker
        # that the next GetDependencyStatus needs. shutdown(wait=False) below lets it finish alone.
        executor = ThreadPoolExecutor(
            max_workers=min(self._max_workers, len(probes)), thread_name_prefix="simplu-probe"
        )
        try:
            futures: dict[str, Future[DependencyCheck]] = {
                name: executor.submit(self._one, name, probe, budget, request_id, checked_at)
                for name, probe in probes.items()
            }
            wait_futures(futures.values(), timeout=wait_for)
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
        results: list[DependencyCheck] = []
        for name, future in futures.items():
            if future.done() and not future.cancelled():
                results.append(future.result())
            else:
                results.append(
                    DependencyCheck(
                        name=name,
                        up=False,
                        latency_seconds=None,
                        error=f"no answer within {budget:.1f} s",
                        checked_at=checked_at,
                    )
                )
        return results

    def _one(
        self, name: str, probe: Probe, budget: float, request_id: str, checked_at: datetime
    ) -> DependencyCheck:
        # Context variables do not follow work into executor threads: bind them here so the
        # adapters bound their I/O by the probe's deadline and log with the request id.
        started = self._clock()
        with context.bind(request_id=request_id, deadline=Deadline.after(budget)):
            try:
                probe()
            except Exception as exc:  # every failure is a finding here, never a crash
                error = describe_error(exc, self._secrets)
                log.info("dependency %s is down: %s", name, error)
                return DependencyCheck(name, False, self._clock() - started, error, checked_at)
        return DependencyCheck(name, True, self._clock() - started, "", checked_at)


@contextmanager
def within(seconds: float) -> Iterator[None]:
    """Run the block under the earlier of the RPC's deadline and ``seconds`` from now."""
    current = context.deadline()
    proposed = Deadline.after(seconds)
    with context.bind(deadline=proposed if proposed.expires_at < current.expires_at else current):
        yield


def run_bounded(
    calls: Mapping[str, Callable[[], object]],
    *,
    timeout: float,
) -> dict[str, object | BaseException]:
    """Run ``calls`` concurrently; each name maps to its result, its exception, or TimeoutError.

    For the parts of other admin answers that touch several shards at once (schema versions in
    ListShards, consistency checks): one slow shard must not make the whole answer wait.
    """
    if not calls:
        return {}
    budget = min(timeout, max(0.05, context.deadline().remaining() - 0.1))
    request_id = context.request_id()
    outcomes: dict[str, object | BaseException] = {}
    lock = threading.Lock()

    def call(name: str, fn: Callable[[], object]) -> None:
        with context.bind(request_id=request_id, deadline=Deadline.after(budget)):
            try:
                value: object | BaseException = fn()
            except Exception as exc:  # reported to the caller, which decides what it means
                value = exc
        with lock:
            outcomes[name] = value

    executor = ThreadPoolExecutor(max_workers=min(16, len(calls)), thread_name_prefix="simplu-admin")
    try:
        futures = [executor.submit(call, name, fn) for name, fn in calls.items()]
        wait_futures(futures, timeout=budget + 0.25)
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
    with lock:
        done = dict(outcomes)
    return {name: done.get(name, TimeoutError(f"no answer within {budget:.1f} s")) for name in calls}


class DependencyStatus:
    """GetDependencyStatus: the given probes (``dynamodb``, ``citrus`` when there is one,
    ``jwks``, ...) plus one per shard pool, added at call time."""

    def __init__(
        self,
        *,
        probes: Mapping[str, Probe],
        pools: Pools,
        prober: DependencyProber,
    ) -> None:
        self._probes = dict(probes)
        self._pools = pools
        self._prober = prober

    def dependency_status(self) -> list[DependencyCheck]:
        """DynamoDB, Citrus, JWKS and each shard pool, probed concurrently; answers within ~2 s."""
        probes: dict[str, Callable[[], object]] = dict(self._probes)
        for stats in sorted(self._pools.stats(), key=lambda s: s.shard_id):
            probes[f"shard/{stats.shard_id}"] = self._pool_probe(stats.shard_id)
        return self._prober.run(probes)

    def _pool_probe(self, shard_id: str) -> Callable[[], object]:
        # Through the registry's own checkout: bounded by the probe's deadline, and a shard
        # that stopped answering mid-query is cut off by its watchdog instead of hanging.
        def probe() -> object:
            assignment = self._pools.assignment(shard_id)
            if assignment is None:
                raise NotFound(f"the pool of shard {shard_id} was closed meanwhile")
            with self._pools.connection(assignment) as session:
                return session.run("SELECT 1")

        return probe
