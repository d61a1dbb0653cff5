"""The stack under test: the project's own ``DevStack`` on free ports, plus counters read from it.

PostgreSQL is the server named by ``SIMPLU_BENCH_PG`` (else ``SIMPLU_TEST_PG``), a DSN whose
role may create databases; without either, ``DevStack`` starts a throwaway cluster. The
shard databases get a unique prefix and are dropped (or go with the cluster) at the end.
"""

from __future__ import annotations

import os
import secrets
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from simplu_grpc.devstack.citrus_emulator import CitrusEmulator
from simplu_grpc.devstack.stack import DevConfig, DevStack
from simplu_grpc.metrics import Metrics

PG_VARIABLES = ("SIMPLU_BENCH_PG", "SIMPLU_TEST_PG")


def postgres_source(env: Mapping[str, str]) -> tuple[str | None, str]:
    """The DSN to use (or None for a throwaway cluster) and where it came from, for the report."""
    for name in PG_VARIABLES:
        dsn = env.get(name, "").strip()
        if dsn:
            return dsn, name
    return None, "throwaway cluster"


@dataclass
class BenchStack:
    """A running dev stack: where the server listens, an admin token, the emulator and the metrics."""

    dev: DevStack
    target: str
    token: str
    citrus: CitrusEmulator
    metrics: Metrics | None
    db_prefix: str
    postgres: str

    def ports(self) -> dict[str, int]:
        """Where the pieces listen (the report lists them; the smoke test checks they are closed after)."""
        assert self.dev.moto is not None
        return {"grpc": self.dev.grpc_port, "citrus": self.citrus.port, "moto": self.dev.moto.port}

    def server_env(self) -> dict[str, str]:
        """The environment of a server process running against this stack (addresses, keys, pool ids)."""
        return self.dev._server_env()  # the dev stack's own recipe, not a copy

    def citrus_calls(self) -> dict[str, int]:
        return dict(self.citrus.calls)

    def dependency_calls(self) -> dict[str, dict[str, int]]:
        """``simplu_dependency_calls`` from the server's registry: dependency -> operation -> count."""
        return _counter_by(self.metrics, "simplu_dependency_calls", "dependency", "operation")

    def cache_lookups(self) -> dict[str, dict[str, int]]:
        """``simplu_cache_lookups``: cache -> result (hit, miss, stale) -> count."""
        return _counter_by(self.metrics, "simplu_cache_lookups", "cache", "result")


def _counter_by(metrics: Metrics | None, name: str, outer: str, inner: str) -> dict[str, dict[str, int]]:
    totals: dict[str, dict[str, int]] = defaultdict(dict)
    if metrics is None:
        return {}
    for family in metrics.registry.collect():
        if family.name != name:
            continue
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            key, sub = sample.labels[outer], sample.labels[inner]
            totals[key][sub] = totals[key].get(sub, 0) + int(sample.value)
    return dict(totals)


def _server_metrics(dev: DevStack) -> Metrics | None:
    return dev.service.deps.metrics if dev.service is not None else None


class _DevStackWithoutServer(DevStack):
    """The dev stack minus its in-process server: the capacity bench runs ``simplu-grpc serve``
    processes instead (worker processes, and a server that does not share the bench's GIL)."""

    def _start_server(self) -> None:
        return None

    def _create_demo_business(self) -> None:
        return None  # made through the server, which the bench starts itself (it makes its own)


@contextmanager
def running_stack(
    settings: Mapping[str, str] | None = None, *, in_process_server: bool = True
) -> Iterator[BenchStack]:
    """Start PostgreSQL, the Citrus emulator (one shard to begin with), moto and the server; stop all after.

    ``settings`` are server environment settings (e.g. ``SHARD_POOL_MAX_SIZE``) passed through.
    Without ``in_process_server`` no server is started: ``BenchStack.server_env()`` is the
    environment a ``simplu-grpc serve`` process needs to run against this stack.
    """
    dsn, source = postgres_source(os.environ)
    prefix = f"simplu_bench_{secrets.token_hex(4)}"
    env = {**(settings or {}), "GRPC_HOST": "127.0.0.1", "GRPC_PORT": "0", "METRICS_PORT": "0"}
    config = DevConfig(citrus_port=0, moto_port=0, pg_dsn=dsn, shards=1, db_prefix=prefix, env=env)
    dev = DevStack(config) if in_process_server else _DevStackWithoutServer(config)
    dev.start()
    try:
        assert dev.citrus is not None
        yield BenchStack(
            dev=dev,
            target=f"127.0.0.1:{dev.grpc_port}",
            token=dev.admin_token,
            citrus=dev.citrus,
            metrics=_server_metrics(dev),
            db_prefix=prefix,
            postgres=source,
        )
    finally:
        dev.stop()
