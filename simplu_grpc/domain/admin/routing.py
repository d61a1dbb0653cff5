"""Operators' routing use cases: GetLocationShard, RegisterLocation, InvalidateRouting.

A lookup here never registers; RegisterLocation is the explicit registration (under the
business's own type) and tells business info through ``on_registered``. Connection strings
leave only as ``host:port/db`` targets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from simplu_grpc.domain.admin.arguments import require_location_key
from simplu_grpc.domain.admin.dependencies import CALL_TIMEOUT_SECONDS, within
from simplu_grpc.domain.admin.ports import Routing
from simplu_grpc.domain.auth.authz import require_live
from simplu_grpc.domain.business.model import Business, BusinessType
from simplu_grpc.domain.business.ports import BusinessRepository
from simplu_grpc.domain.placement.ports import ShardDirectory
from simplu_grpc.domain.placement.shards import ShardAssignment
from simplu_grpc.errors import FailedPrecondition, InvalidArgument, NotFound, SimpluError
from simplu_grpc.redact import describe_error, dsn_target

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LocationShardView:
    business_id: str
    location_id: str
    shard_id: str
    active: bool
    from_cache: bool
    cache_age_seconds: float
    target: str


class LocationRouting:
    """Where locations live, their registration, and the routing cache's entries.

    ``on_registered(business_id, location_id)`` records a registration made here in business
    info (BusinessOps.note_registered).
    """

    def __init__(
        self,
        *,
        shards: ShardDirectory,
        routing: Routing,
        businesses: BusinessRepository,
        on_registered: Callable[[str, str], None] | None = None,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self._shards = shards
        self._routing = routing
        self._businesses = businesses
        self._on_registered = on_registered
        self._secrets = tuple(s for s in secrets if s)

    def location_shard(self, business_id: str, location_id: str, *, refresh: bool) -> LocationShardView:
        """Where a location lives: from the routing cache unless ``refresh`` (or a miss); never registers."""
        require_location_key(business_id, location_id)
        self._existing_location(business_id, location_id)
        if not refresh:
            cached = self._routing.peek(business_id, location_id)
            if cached is not None:
                return _location_view(
                    business_id, location_id, cached.assignment, from_cache=True, age=cached.age_seconds
                )
        with within(CALL_TIMEOUT_SECONDS):
            assignment_or_none = self._shards.get_shard(business_id, location_id)
        if assignment_or_none is None:
            raise NotFound(
                f"location {business_id}/{location_id} is not registered with Citrus",
                reason="LOCATION_NOT_REGISTERED",
                metadata={"business_id": business_id, "location_id": location_id},
            )
        if refresh:
            # The next resource request must see what Citrus says now, not the old entry. Only
            # once Citrus answered: while it is down the cached route is what keeps tenants up.
            self._routing.invalidate(business_id, location_id)
        return _location_view(business_id, location_id, assignment_or_none, from_cache=False, age=0.0)

    def register_location(
        self, business_id: str, location_id: str, business_type: BusinessType | None
    ) -> LocationShardView:
        """Register with Citrus (idempotent there) under the business's own type.

        ``business_type``, when given, must be that type: Citrus places a business by its type,
        and a location registered under another would be routed as a business it is not. The
        request is well formed either way; it is refused because of what business info holds,
        hence FAILED_PRECONDITION (BUSINESS_TYPE_MISMATCH), not INVALID_ARGUMENT. A deleted
        business is not registered (``require_live``: FAILED_PRECONDITION / BUSINESS_DELETED).
        """
        require_location_key(business_id, location_id)
        business = self._existing_location(business_id, location_id)
        require_live(business, business_id, sees_deleted=True)
        if business_type is not None and business_type is not business.type:
            raise FailedPrecondition(
                f"business {business_id!r} is of type {business.type.value!r}, not {business_type.value!r}; "
                "leave business_type unset to use the business's own",
                reason="BUSINESS_TYPE_MISMATCH",
                metadata={"business_id": business_id, "business_type": business.type.value},
            )
        with within(CALL_TIMEOUT_SECONDS):
            assignment = self._shards.register(business_id, location_id, business.type.value)
        # A cached entry from before (e.g. another shard) must not outlive the registration.
        self._routing.invalidate(business_id, location_id)
        self._note_registered(business_id, location_id)
        log.info("registered %s/%s with Citrus on %s", business_id, location_id, assignment.shard_id)
        return _location_view(business_id, location_id, assignment, from_cache=False, age=0.0)

    def _note_registered(self, business_id: str, location_id: str) -> None:
        """Tell business info (through ``on_registered``) that the location is registered."""
        if self._on_registered is None:
            return
        try:
            with within(CALL_TIMEOUT_SECONDS):
                self._on_registered(business_id, location_id)
        except SimpluError as exc:
            # The registration itself succeeded; a stale pending entry is only retried later
            # (idempotently at Citrus), so this must not fail the call.
            log.warning(
                "registered %s/%s but could not update its pending list: %s",
                business_id,
                location_id,
                describe_error(exc, self._secrets),
            )

    def _existing_location(self, business_id: str, location_id: str) -> Business:
        return existing_location(self._businesses, business_id, location_id)

    def invalidate_routing(self, business_id: str, location_id: str, everything: bool) -> int:
        """Drop routing entries: one location, one business, or all; how many were dropped."""
        if everything:
            if business_id or location_id:
                raise InvalidArgument.field("all", "must not be combined with business_id or location_id")
            dropped = self._routing.invalidate()
        elif business_id:
            require_location_key(business_id, location_id, location_required=False)
            dropped = self._routing.invalidate(business_id, location_id or None)
        elif location_id:
            raise InvalidArgument.field("business_id", "is required with location_id")
        else:
            raise InvalidArgument.field("business_id", "give business_id (and location_id), or all = true")
        log.info(
            "routing invalidated (%s/%s all=%s): %d dropped", business_id, location_id, everything, dropped
        )
        return dropped


def _location_view(
    business_id: str, location_id: str, assignment: ShardAssignment, *, from_cache: bool, age: float
) -> LocationShardView:
    return LocationShardView(
        business_id=business_id,
        location_id=location_id,
        shard_id=assignment.shard_id,
        active=assignment.is_active,
        from_cache=from_cache,
        cache_age_seconds=max(0.0, age),
        target=dsn_target(assignment.connection_string),
    )


def existing_location(businesses: BusinessRepository, business_id: str, location_id: str) -> Business:
    """The business, read fresh within the call budget; NOT_FOUND when it or the location is not there
    (also used by location moves)."""
    with within(CALL_TIMEOUT_SECONDS):
        business = businesses.get(business_id)
    if business is None:
        raise NotFound(f"business {business_id!r} not found", metadata={"business_id": business_id})
    if business.location(location_id) is None:
        raise NotFound(
            f"location {location_id!r} not found in business {business_id!r}",
            metadata={"business_id": business_id, "location_id": location_id},
        )
    return business
