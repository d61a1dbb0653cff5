"""Placement for location moves: the shard directory (Citrus, or the single database) as a move
sees it, plus this replica's routing cache (dropped for the moved location at the switch)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from simplu_grpc.domain.placement.ports import ShardDirectory
from simplu_grpc.domain.placement.shards import CapacityInfo, ShardAssignment
from simplu_grpc.errors import FailedPrecondition

# The shard listing (Citrus probes every shard to answer it) is reused this long.
_LISTING_TTL = 5.0


class ShardCatalog(Protocol):
    """The Citrus calls a move needs (CitrusClient; SingleDatabaseDirectory answers the first two)."""

    def shards_health(self) -> list[ShardAssignment]: ...

    def capacity(self, shard_id: str) -> CapacityInfo | None: ...


class Placer(Protocol):
    def place(self, business_id: str, location_id: str, shard_id: str) -> ShardAssignment: ...


class DirectoryPlacement:
    """Placement on a shard directory; ``placer`` is Citrus (None: single database, nothing to move to)."""

    def __init__(
        self,
        *,
        directory: ShardDirectory,
        catalog: ShardCatalog,
        placer: Placer | None,
        forget: Callable[[str, str], object],
        extra_shards: Sequence[ShardAssignment] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._directory = directory
        self._catalog = catalog
        self._placer = placer
        self._forget = forget
        self._extra = list(extra_shards)
        self._clock = clock
        # Guards the listing cache below (read by RPC threads and the move runner).
        self._lock = threading.Lock()
        self._listing: tuple[float, list[ShardAssignment]] | None = None

    def current(self, business_id: str, location_id: str, business_type: str) -> ShardAssignment:
        found = self._directory.get_shard(business_id, location_id)
        if found is not None:
            return found
        # Known to business info but never used: registered now, as on its first request.
        return self._directory.register(business_id, location_id, business_type)

    def shards(self) -> list[ShardAssignment]:
        with self._lock:
            if self._listing is not None and self._clock() - self._listing[0] < _LISTING_TTL:
                return list(self._listing[1])
        listed = [s for s in self._catalog.shards_health() if s.connection_string]
        known = {s.shard_id for s in listed}
        listed += [s for s in self._extra if s.shard_id not in known]
        with self._lock:
            self._listing = (self._clock(), listed)
        return list(listed)

    def shard(self, shard_id: str) -> ShardAssignment | None:
        return next((s for s in self.shards() if s.shard_id == shard_id), None)

    def can_accept(self, shard_id: str) -> bool:
        capacity = self._catalog.capacity(shard_id)
        return capacity is not None and capacity.can_accept_new_business

    def place(self, business_id: str, location_id: str, shard_id: str) -> None:
        if self._placer is None:
            raise FailedPrecondition("single-database mode has one shard: there is nowhere to move to")
        self._placer.place(business_id, location_id, shard_id)

    def forget_route(self, business_id: str, location_id: str) -> None:
        self._forget(business_id, location_id)


class _CitrusRoutes(Protocol):
    def get_shard(self, business_id: str, location_id: str) -> ShardAssignment | None: ...


class RegisteredPlacement:
    """Placer for ``move-to-citrus``: Citrus assigned each location when it was registered (before
    its copy), so the switch places nothing; it checks that Citrus still routes there."""

    def __init__(self, citrus: _CitrusRoutes) -> None:
        self._citrus = citrus

    def place(self, business_id: str, location_id: str, shard_id: str) -> ShardAssignment:
        found = self._citrus.get_shard(business_id, location_id)
        if found is None or found.shard_id != shard_id:
            raise FailedPrecondition(
                f"Citrus no longer routes {business_id}/{location_id} to {shard_id}; the move stops"
            )
        return found
