"""Citrus bookkeeping: which locations Citrus has taken, registered after the business is saved.

Citrus registration happens after the business is saved, so a Citrus outage never loses a
business: locations not yet registered are kept in ``unregistered_location_ids`` and retried
(idempotently) on the next create retry, AddLocation or UpdateLocation, or by ShardAdmin.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from simplu_grpc import context as rpc_context
from simplu_grpc.domain.business.model import Business
from simplu_grpc.domain.business.writes import BusinessWriter
from simplu_grpc.errors import Aborted, CitrusUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Registered:
    """A business after a write that registers locations, and those Citrus has not taken yet."""

    business: Business
    unregistered_location_ids: tuple[str, ...]


class Registration(BusinessWriter):
    """Registers a business's pending locations with Citrus and records what Citrus took."""

    def register_pending(self, business: Business) -> Registered:
        """Register every active location Citrus has not taken yet; record what succeeded.

        Stops at the first Citrus failure (Citrus is then most likely down, and each call
        already retried within the deadline); the rest stay pending. Registration is
        idempotent at Citrus, so a location registered twice is still registered once.
        """
        pending = tuple(business.unregistered_location_ids)
        if self._citrus is None or not pending or not business.is_active:
            return Registered(business, pending if self._citrus is not None else ())
        done = self._register(business, pending)
        if not done:
            return Registered(business, pending)
        remaining = tuple(lid for lid in pending if lid not in done)
        try:
            saved = self._store.update(business.with_unregistered(remaining), previous=business)
        except Aborted:
            # Someone changed the business meanwhile; their copy still lists these locations,
            # and registering them again later is harmless (idempotent).
            self._cache.invalidate(business.id)
            return Registered(business, remaining)
        self._cache.put(saved)
        return Registered(saved, remaining)

    def note_registered(self, business_id: str, location_id: str) -> None:
        """Record that someone else (ShardAdmin.RegisterLocation, a lazy registration on first
        resource use) registered a location; best effort, since re-registering is harmless."""
        business = self._store.get(business_id)
        if business is None or location_id not in business.unregistered_location_ids:
            return
        remaining = tuple(lid for lid in business.unregistered_location_ids if lid != location_id)
        try:
            self._cache.put(self._store.update(business.with_unregistered(remaining), previous=business))
        except Aborted:
            self._cache.invalidate(business_id)

    def _register(self, business: Business, pending: tuple[str, ...]) -> tuple[str, ...]:
        """Register what it can; the ids that Citrus took."""
        if self._citrus is None:
            return ()
        # Keep part of the deadline for saving the outcome and answering: a slow Citrus must
        # not turn a saved business into a DEADLINE_EXCEEDED for the caller.
        outer = rpc_context.deadline()
        reserve = min(1.0, 0.25 * outer.remaining())
        done: list[str] = []
        with rpc_context.bind(deadline=rpc_context.Deadline(outer.expires_at - reserve)):
            for location_id in pending:
                location = business.location(location_id)
                if location is None or not location.active:
                    continue
                try:
                    self._citrus.register(business.id, location_id, business.type.value)
                except CitrusUnavailable as exc:
                    log.warning(
                        "citrus registration of %s/%s deferred: %s", business.id, location_id, exc.message
                    )
                    break
                done.append(location_id)
        return tuple(done)
