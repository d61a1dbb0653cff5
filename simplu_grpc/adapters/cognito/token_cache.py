"""Verified tokens remembered by digest, so a warm RPC costs one SHA-256 and no RSA verification.

Not ``domain.cache.Cache`` (the one cache for dependency lookups), on purpose: that cache
gives every entry one TTL and then serves it stale while it refreshes, or while the
dependency fails; a token's answer must end exactly when the token does (its ``exp`` plus
the leeway, capped at ``max_seconds``) and must never be served past it. There is nothing to
refresh either: a miss is verified on the caller's own thread (CPU only, no I/O), where the
general cache would hand loads to a worker thread. What is left is a bounded LRU map with a
per-entry expiry, below.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from simplu_grpc.domain.auth.principal import Principal
from simplu_grpc.metrics import Metrics


class VerifiedTokens:
    """digest -> (principal, valid until); least recently stored dropped past ``max_entries``."""

    def __init__(
        self, *, max_entries: int, max_seconds: float, clock: Callable[[], float], metrics: Metrics
    ) -> None:
        self._max_entries = max_entries
        self._max_seconds = max_seconds
        self._clock = clock
        self._metrics = metrics
        # Pool threads share it: the lock guards the map (never held while verifying).
        self._entries: OrderedDict[bytes, tuple[Principal, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, digest: bytes) -> Principal | None:
        """The principal a still-valid token proved, or None (an expired entry is dropped)."""
        now = self._clock()
        with self._lock:
            entry = self._entries.get(digest)
            if entry is not None and entry[1] <= now:
                del self._entries[digest]
                entry = None
        self._metrics.cache_lookup("token", "miss" if entry is None else "hit")
        return None if entry is None else entry[0]

    def put(self, digest: bytes, principal: Principal, valid_until: float) -> None:
        """Remember a verified token until ``valid_until`` (at most ``max_seconds`` from now)."""
        now = self._clock()
        until = min(valid_until, now + self._max_seconds)
        if until <= now or self._max_entries <= 0:
            return
        with self._lock:
            self._entries[digest] = (principal, until)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
