"""Runs moves in the background of a server: the ones it started, and any whose runner died.

Each move runs on its own thread, one bounded step at a time: claim the lease (which also reads
the current record, operator requests included), run the step, save it under the lease. A step
that fails is logged and retried after ``retry_delay`` (the database or Citrus may be back); a
lost lease ends the thread (another replica has the move). A scan every ``scan_interval`` seconds
takes over moves whose lease expired: a killed server's moves resume on the next replica that
looks, or on the same server after its restart. The scan covers the shards this replica already
works with (serves requests for, or read moves from): a shard nobody uses is not connected to just
to look; Get/ListLocationMoves read every shard, which also brings its moves into the next scan.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

from simplu_grpc.domain.location_moves.engine import MoveEngine
from simplu_grpc.domain.location_moves.model import Move
from simplu_grpc.domain.location_moves.ports import MoveRecords, Placement
from simplu_grpc.domain.placement.shards import ShardAssignment
from simplu_grpc.errors import SimpluError

log = logging.getLogger(__name__)


class MoveRunner:
    """Background move execution with leases (see module docstring); thread-safe."""

    def __init__(
        self,
        *,
        records: MoveRecords,
        engine: MoveEngine,
        placement: Placement,
        owner: str,
        lease_seconds: float = 30.0,
        scan_interval: float = 10.0,
        retry_delay: float = 1.0,
        on_step: Callable[[Move], None] | None = None,
        background: Callable[[], AbstractContextManager[object]] = nullcontext,
    ) -> None:
        if lease_seconds <= 0 or scan_interval <= 0 or retry_delay < 0:
            raise ValueError("lease_seconds and scan_interval must be positive, retry_delay >= 0")
        self._records = records
        self._engine = engine
        self._placement = placement
        self.owner = owner
        self._lease = lease_seconds
        self._scan_interval = scan_interval
        self._retry_delay = retry_delay
        self._on_step = on_step
        # Entered by every thread of the runner (the wiring passes tracing.untraced: maintenance
        # does not start a trace per statement).
        self._background = background
        # Guards _running (move ids with a live thread here) and _scanner.
        self._lock = threading.Lock()
        self._running: dict[str, threading.Thread] = {}
        self._stop = threading.Event()
        self._scanner: threading.Thread | None = None

    def start(self) -> None:
        """Start the periodic scan for moves to take over."""
        with self._lock:
            if self._scanner is None:
                self._scanner = threading.Thread(target=self._scan_loop, name="move-scan", daemon=True)
                self._scanner.start()

    def close(self, timeout: float = 1.0) -> None:
        """Stop scanning and stepping, waiting at most ``timeout`` in all: a step still under way
        is abandoned (its threads are daemons) and resumed by whoever takes the lease next."""
        self._stop.set()
        with self._lock:
            threads = [*self._running.values(), *([self._scanner] if self._scanner else [])]
        until = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, until - time.monotonic()))

    def kick(self, source_shard: str, move_id: str) -> None:
        """Run the move here now (unless it already runs here)."""
        with self._lock:
            if self._stop.is_set() or move_id in self._running:
                return
            thread = threading.Thread(
                target=self._run, args=(source_shard, move_id), name=f"move-{move_id[:8]}", daemon=True
            )
            self._running[move_id] = thread
        thread.start()

    def scan(self) -> None:
        """Take over every move with work whose lease has expired (on the shards this replica
        already has pools for: the scan never opens a connection to a shard by itself)."""
        for shard_id, move_id in self._records.claimable():
            self.kick(shard_id, move_id)

    def _scan_loop(self) -> None:
        with self._background():
            self._scan_until_stopped()

    def _scan_until_stopped(self) -> None:
        while not self._stop.is_set():
            try:
                self.scan()
            except SimpluError as exc:
                log.warning("move scan failed: %s", exc.message)
            except Exception:
                log.exception("move scan failed")
            self._stop.wait(self._scan_interval)

    def _run(self, source_shard: str, move_id: str) -> None:
        with self._background():
            self._steps(source_shard, move_id)

    def _steps(self, source_shard: str, move_id: str) -> None:
        try:
            while not self._stop.is_set():
                try:
                    if not self._one_step(source_shard, move_id):
                        return
                except SimpluError as exc:
                    log.warning("move %s: step failed (%s); retrying", move_id, exc.message)
                    self._stop.wait(self._retry_delay)
                except Exception:
                    log.exception("move %s: step failed; retrying", move_id)
                    self._stop.wait(self._retry_delay)
        finally:
            with self._lock:
                self._running.pop(move_id, None)

    def _shard(self, shard_id: str) -> ShardAssignment:
        shard = self._placement.shard(shard_id)
        if shard is None:
            raise _ShardGone(f"shard {shard_id} is not known to the directory")
        return shard

    def _one_step(self, source_shard: str, move_id: str) -> bool:
        """One step; False when there is nothing more to do here (done, waiting, or lease lost)."""
        source = self._shard(source_shard)
        move = self._records.claim(source, move_id, owner=self.owner, lease_seconds=self._lease)
        if move is None:
            return False
        target = self._shard(move.target_shard)

        def save(progress: Move) -> None:
            # Mid-step checkpoint (before the freeze, before the switch): renew the lease and
            # write the progress, or stop if another replica holds the move now.
            renewed = self._records.claim(source, move_id, owner=self.owner, lease_seconds=self._lease)
            if renewed is None or not self._records.save(source, progress, owner=self.owner, consumed=False):
                raise _LeaseLost(f"move {move_id}: another replica took the lease")

        try:
            after, consumed = self._engine.step(move, source, target, save)
        except _LeaseLost:
            return False
        if not self._records.save(source, after, owner=self.owner, consumed=consumed):
            return False
        if self._on_step is not None:
            self._on_step(after)
        if not after.phase.has_work:
            self._records.release(source, move_id, owner=self.owner)
            return False
        return True


class _LeaseLost(Exception):
    """Another replica holds the move now."""


class _ShardGone(SimpluError):
    """A move's shard is not (or no longer) listed by the directory; retried later."""
