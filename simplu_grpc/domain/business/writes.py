"""The read-modify-write every business change goes through, and the state the use cases share.

Every write reads the business (strongly consistent), checks permission before existence,
checks the caller's etag, applies the change to an immutable copy and writes it back on
the condition that nobody else wrote in between (``BusinessRepository.update``). A conflict
with a caller-supplied etag is ABORTED; without an etag the change is simply re-applied to
the fresh copy (up to three times), since the caller asked for "this change", not "this version".
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from simplu_grpc.domain.auth.authz import Authorizer
from simplu_grpc.domain.auth.principal import Principal
from simplu_grpc.domain.business.cache import BusinessCache
from simplu_grpc.domain.business.model import Business
from simplu_grpc.domain.business.ports import BusinessRepository
from simplu_grpc.domain.placement.ports import ShardRegistrar
from simplu_grpc.errors import Aborted

_WRITE_ATTEMPTS = 3


def new_business_id() -> str:
    """32 hex characters: unguessable, collision-free, and never a ``-``."""
    return uuid.uuid4().hex


class BusinessWriter:
    """The store, cache, authorizer, Citrus registrar and id source of the business use cases; ``_mutate``."""

    def __init__(
        self,
        *,
        store: BusinessRepository,
        cache: BusinessCache,
        authorizer: Authorizer,
        citrus: ShardRegistrar | None,
        id_factory: Callable[[], str] = new_business_id,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._cache = cache
        self._authz = authorizer
        self._citrus = citrus
        self._new_id = id_factory
        self._now = clock

    def _mutate(
        self,
        principal: Principal,
        business_id: str,
        etag: str,
        permission: str | tuple[str, ...],
        *,
        location_id: str | None,
        change: Callable[[Business], Business],
    ) -> Business:
        permissions = (permission,) if isinstance(permission, str) else permission

        def allowed(found: Business | None) -> Business:
            for needed in permissions:
                business = self._authz.require_business_write(
                    principal, found, business_id, needed, location_id=location_id
                )
            return business

        return self.rewrite(business_id, etag, allowed, change)

    def rewrite(
        self,
        business_id: str,
        etag: str,
        allowed: Callable[[Business | None], Business],
        change: Callable[[Business], Business],
    ) -> Business:
        """Read (strongly consistent), let ``allowed`` decide on what was read (permission, then
        existence and state; it answers the business to change), check the caller's etag, write
        ``change`` of it conditional on the version read. With an etag a conflict is ABORTED;
        without, everything is decided again on a fresh read (up to three times)."""
        for attempt in range(_WRITE_ATTEMPTS):
            business = allowed(self._store.get(business_id))
            if etag and etag != business.etag:
                raise Aborted(
                    f"etag {etag!r} is not the current one for business {business_id!r}; read it again",
                    metadata={"business_id": business_id, "current_etag": business.etag},
                )
            changed = change(business)
            if changed == business:
                return business
            try:
                saved = self._store.update(changed, previous=business)
            except Aborted:
                self._cache.invalidate(business_id)
                if etag or attempt == _WRITE_ATTEMPTS - 1:
                    raise
                continue
            self._cache.put(saved)
            return saved
        raise AssertionError("unreachable")  # pragma: no cover

    def mutate(
        self,
        principal: Principal,
        business_id: str,
        etag: str,
        permission: str | tuple[str, ...],
        *,
        change: Callable[[Business], Business],
    ) -> Business:
        """A business-wide ``_mutate`` for the use cases outside this class tree (domain.business.team)."""
        return self._mutate(principal, business_id, etag, permission, location_id=None, change=change)
