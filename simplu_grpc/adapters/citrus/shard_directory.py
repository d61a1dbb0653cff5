"""Shard directories: which shard holds a business+location (Citrus, or one database without it).

``CitrusDirectory`` asks Citrus (``GET /api/shard/{businessId-locationId}``: None when
Citrus does not know the location) and registers a location (with the business's type,
then tells business info). The two are separate operations: the routing cache registers a
location that exists in business info but was never registered (for instance because
Citrus was down when it was created) on first use by calling ``register`` after a miss.
``SingleDatabaseDirectory`` serves deployments without Citrus: every location lives on
one shard, ``default``, built from the ``DATABASE_*`` settings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from psycopg.conninfo import make_conninfo

from simplu_grpc.adapters.postgres.shard_tls import shard_tls
from simplu_grpc.domain.placement.ports import ShardDirectory
from simplu_grpc.domain.placement.shards import CapacityInfo, ShardAssignment
from simplu_grpc.errors import SimpluError

if TYPE_CHECKING:
    from simplu_grpc.settings import Settings

DEFAULT_SHARD_ID = "default"

log = logging.getLogger(__name__)


class CitrusDirectory:
    """Routing through Citrus; errors stay CitrusUnavailable (the routing cache may serve stale)."""

    def __init__(
        self,
        citrus: ShardDirectory,
        *,
        on_registered: Callable[[str, str], None] | None = None,
    ) -> None:
        self._citrus = citrus
        # Told after a lazy registration so business info stops listing the location as
        # unregistered; best effort (re-registering later is harmless).
        self._on_registered = on_registered

    def get_shard(self, business_id: str, location_id: str) -> ShardAssignment | None:
        """Citrus's answer for the location; None when it is not registered (never registers)."""
        return self._citrus.get_shard(business_id, location_id)

    def register(self, business_id: str, location_id: str, business_type: str) -> ShardAssignment:
        """Register with Citrus (lowercase type) and tell business info; the bookkeeping is best effort."""
        # Registration is idempotent at Citrus: a race with another replica (or with
        # BusinessService) registering the same location returns the same shard.
        assignment = self._citrus.register(business_id, location_id, business_type.lower())
        if self._on_registered is not None:
            try:
                self._on_registered(business_id, location_id)
            except SimpluError as exc:
                # The route is good; only the bookkeeping failed, so the request goes on.
                log.warning(
                    "registered %s/%s lazily but could not record it: %s",
                    business_id,
                    location_id,
                    exc.message,
                )
        return assignment


def single_database_dsn(settings: Settings) -> str:
    """The libpq conninfo of the single database (``DATABASE_*``, with the shards' TLS floor);
    contains the password."""
    dsn = make_conninfo(
        host=settings.database_host,
        port=str(settings.database_port),
        user=settings.database_username,
        password=settings.database_password or None,
        dbname=settings.database_name,
    )
    return shard_tls(settings).secure(DEFAULT_SHARD_ID, dsn)


class SingleDatabaseDirectory:
    """Every location on shard ``default``; also answers the few Citrus calls ShardAdmin makes."""

    def __init__(self, dsn: str) -> None:
        self.assignment = ShardAssignment(shard_id=DEFAULT_SHARD_ID, connection_string=dsn, is_active=True)

    def get_shard(self, business_id: str, location_id: str) -> ShardAssignment | None:
        return self.assignment

    def register(self, business_id: str, location_id: str, business_type: str) -> ShardAssignment:
        return self.assignment

    def shards_health(self) -> list[ShardAssignment]:
        return [self.assignment]

    def capacity(self, shard_id: str) -> CapacityInfo | None:
        if shard_id != DEFAULT_SHARD_ID:
            return None
        return CapacityInfo(shard_id=DEFAULT_SHARD_ID, can_accept_new_business=True)
