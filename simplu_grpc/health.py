"""Health statuses: ``""``, ``liveness``, ``readiness`` and each service's full name, and the readiness loop.

Kubernetes probes ``liveness`` (restart me) and ``readiness`` (send me traffic). Liveness
stays SERVING while the process answers at all. Readiness is SERVING while any of the
dependency checks passes (with none registered: always) and goes NOT_SERVING when they
all fail — DynamoDB and Citrus both unreachable — or when shutdown begins, when every
status goes NOT_SERVING for good (``enter_graceful_shutdown``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent import futures
from typing import Any

from grpc_health.v1 import health, health_pb2

from simplu_grpc import context as rpc_context

log = logging.getLogger(__name__)

OVERALL = ""
LIVENESS = "liveness"
READINESS = "readiness"
HEALTH_SERVICE_NAME: str = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

ReadinessCheck = Callable[[], bool]


class _HealthServicer(health.HealthServicer):  # type: ignore[misc]  # grpc_health ships no type hints
    """grpc's HealthServicer whose Watch streams can be ended, so they never hold a shutdown.

    A Watch stream is an RPC in flight: left open, it would keep ``server.stop(grace)`` waiting
    for the whole grace period. At shutdown each watcher first receives NOT_SERVING, then
    its stream ends.
    """

    def __init__(self) -> None:
        # Blocking watchers: the interceptors wrap every handler, which drops grpc's
        # experimental non-blocking flag anyway.
        super().__init__(experimental_non_blocking=False)
        self._watches_lock = threading.Lock()
        self._watches: set[Any] = set()

    def Watch(self, request: Any, context: Any, send_response_callback: Any = None) -> Any:  # noqa: N802 - grpc's name
        stream = super().Watch(request, context)
        with self._watches_lock:
            self._watches.add(stream)

        def forget() -> None:
            with self._watches_lock:
                self._watches.discard(stream)

        context.add_callback(forget)
        return stream

    def end_watches(self) -> None:
        """End every open Watch stream after the responses already queued on it."""
        with self._watches_lock:
            streams = list(self._watches)
        for stream in streams:
            stream.close()


# Threads of the health checks' own: a probe is answered even while every request thread is
# busy or held (a client that sends headers and never its message holds one).
CHECK_THREADS = 2


class _ChecksOnOwnThreads:
    """The health servicer as registered: Check and List run on ``pool``, not the request threads.

    grpc runs a behaviour on its ``experimental_thread_pool`` when it has one (grpc_health
    uses the same hook for Watch); the interceptors keep the attribute when they wrap it.
    Watch streams stay on the request threads: they are long-lived, and a probe's Check must
    never wait behind them.
    """

    def __init__(self, servicer: _HealthServicer, pool: futures.ThreadPoolExecutor) -> None:
        def check(request: Any, context: Any) -> Any:
            return servicer.Check(request, context)

        def list_(request: Any, context: Any) -> Any:
            return servicer.List(request, context)

        for behaviour in (check, list_):
            # grpc reads this attribute off the behaviour function; mypy knows no such attribute.
            behaviour.experimental_thread_pool = pool  # type: ignore[attr-defined]
        self.Check = check
        self.List = list_
        self.Watch = servicer.Watch


class ServerHealth:
    """Owns the grpc HealthServicer and decides every status this server reports."""

    def __init__(self, *, readiness_checks: Sequence[ReadinessCheck] = ()) -> None:
        self.servicer = _HealthServicer()
        self._check_pool = futures.ThreadPoolExecutor(
            max_workers=CHECK_THREADS, thread_name_prefix="simplu-health"
        )
        # What to register with the server (health_pb2_grpc.add_HealthServicer_to_server).
        self.registered = _ChecksOnOwnThreads(self.servicer, self._check_pool)
        self._checks = tuple(readiness_checks)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        for name in (OVERALL, LIVENESS):
            self.servicer.set(name, SERVING)
        # With checks registered, not ready until the first round says a dependency answers.
        self.servicer.set(READINESS, NOT_SERVING if self._checks else SERVING)

    def add_services(self, names: Iterable[str]) -> None:
        """Report each service (by its full name) SERVING while the server runs."""
        for name in names:
            self.servicer.set(name, SERVING)

    def evaluate_readiness(self) -> bool:
        """Run the checks once (stopping at the first that passes) and publish the result."""
        ready = not self._checks or any(_passes(check) for check in self._checks)
        if not self._stop.is_set():
            self.servicer.set(READINESS, SERVING if ready else NOT_SERVING)
        return ready

    def start_readiness_loop(self, interval_seconds: float = 5.0) -> None:
        """Re-evaluate readiness every ``interval_seconds`` on a daemon thread (no-op without checks)."""
        if not self._checks or self._thread is not None:
            return

        def loop() -> None:
            # First round at once: readiness starts NOT_SERVING until a dependency answers.
            while not self._stop.is_set():
                self.evaluate_readiness()
                self._stop.wait(interval_seconds)

        self._thread = threading.Thread(target=loop, name="simplu-readiness", daemon=True)
        self._thread.start()

    def enter_graceful_shutdown(self) -> None:
        """Every status NOT_SERVING, permanently; the readiness loop stops."""
        self._stop.set()
        self.servicer.enter_graceful_shutdown()
        self.servicer.end_watches()
        if self._thread is not None:
            # A check may be in the middle of a network timeout: don't hold shutdown for it.
            self._thread.join(timeout=1.0)

    def close(self) -> None:
        """Release the health checks' threads (after the server stopped)."""
        self._check_pool.shutdown(wait=False)


def _passes(check: ReadinessCheck) -> bool:
    try:
        return bool(check())
    except Exception:
        log.warning("readiness check %r failed", check, exc_info=True)
        return False


def probe_check(probe: Callable[[], None], *, seconds: float = 2.0) -> ReadinessCheck:
    """A readiness check from an adapter's ``probe``: True when it answers within ``seconds``.

    Never raises (the readiness loop must keep going); the probe runs under its own short
    deadline so a slow dependency cannot stall the loop for a whole RPC deadline.
    """

    def check() -> bool:
        try:
            with rpc_context.bind(deadline=rpc_context.Deadline.after(seconds)):
                probe()
        except Exception as exc:
            log.info("readiness probe %s failed: %s", getattr(probe, "__qualname__", probe), exc)
            return False
        return True

    return check
