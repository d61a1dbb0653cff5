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

from simplu_grpc.domain.auth.authz import Authorizer
from simplu_grpc.domain.auth.principal import Principal
from simplu_grpc.domain.business.cache import BusinessCache
from simplu_grpc.domain.business.model import Business
from simplu_grpc.domain.business.ports import BusinessRepository, Registrar
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
        citrus: Registrar | None,
        id_factory: Callable[[], str] = new_business_id,
    ) -> None:
        self._store = store
        self._cache = cache
        self._authz = authorizer
        self._citrus = citrus
        self._new_id = id_factory

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
        for attempt in range(_WRITE_ATTEMPTS):
            found = self._store.get(business_id)
            for needed in permissions:
                business = self._authz.require_business_write(
                    principal, found, business_id, needed, location_id=location_id
                )
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
