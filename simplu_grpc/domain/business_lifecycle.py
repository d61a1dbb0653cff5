"""A business's lifecycle past creation: suspend and resume (billing), undelete within the retention window.

- **Suspend / resume** (platform admins only): a suspended business keeps its metadata, members
  and data; BusinessService works on it as before, but every ResourceService call on its data
  answers FAILED_PRECONDITION / BUSINESS_SUSPENDED (``Authorizer.require_resource``, on the
  business already loaded, and cached, for the permission check). Both are idempotent.
- **Undelete** (platform admins, businesses.write, the owner role ``"*"``): a deleted business
  comes back ACTIVE while ``delete_time + retention`` has not passed and its purge has not begun
  (``domain.business_retention``). The purge marks the business before removing anything, and
  both writes are conditional on the version read, so an undelete and a purge racing at the
  window's end cannot both win.

Permission is checked before existence, as everywhere: a caller who may not act learns nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from simplu_grpc.domain.authz import Authorizer, require_live
from simplu_grpc.domain.business import Business, BusinessStatus
from simplu_grpc.domain.business_cache import BusinessCache
from simplu_grpc.domain.permissions import ALL_PERMISSIONS
from simplu_grpc.domain.principal import Principal
from simplu_grpc.domain.validation import Violations, check_business_id
from simplu_grpc.errors import Aborted, FailedPrecondition, NotFound, PermissionDenied

_WRITE_ATTEMPTS = 3


class LifecycleStore(Protocol):
    """What the lifecycle needs of the business store (``adapters.business_store.BusinessStore``)."""

    def get(self, business_id: str, *, consistent: bool = True) -> Business | None: ...

    def update(self, business: Business, *, previous: Business) -> Business: ...


def require_platform_admin(authorizer: Authorizer, principal: Principal, call: str) -> None:
    """Only platform admins (the admin group, or the simplu/admin scope) may make ``call``."""
    if not authorizer.is_admin(principal):
        raise PermissionDenied(f"{call} is for platform admins", reason="ADMIN_ONLY")


def purge_time(business: Business, retention: timedelta) -> datetime | None:
    """When a deleted business stops being recoverable (None unless it is deleted)."""
    if not business.is_deleted or business.delete_time is None:
        return None
    return business.delete_time + retention


class BusinessLifecycle:
    """SuspendBusiness, ResumeBusiness and UndeleteBusiness, independent of protobuf."""

    def __init__(
        self,
        *,
        store: LifecycleStore,
        cache: BusinessCache,
        authorizer: Authorizer,
        retention: timedelta,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if retention < timedelta(0):
            raise ValueError("retention must not be negative")
        self._store = store
        self._cache = cache
        self._authz = authorizer
        self._retention = retention
        self._now = clock

    def purge_time(self, business: Business) -> datetime | None:
        return purge_time(business, self._retention)

    def suspend(self, principal: Principal, business_id: str, *, etag: str) -> Business:
        return self._set_status(principal, business_id, etag, BusinessStatus.SUSPENDED, "SuspendBusiness")

    def resume(self, principal: Principal, business_id: str, *, etag: str) -> Business:
        return self._set_status(principal, business_id, etag, BusinessStatus.ACTIVE, "ResumeBusiness")

    def _set_status(
        self, principal: Principal, business_id: str, etag: str, status: BusinessStatus, call: str
    ) -> Business:
        _check_id(business_id)
        require_platform_admin(self._authz, principal, call)

        def change(found: Business | None) -> Business:
            business = require_live(found, business_id, sees_deleted=True)
            return replace(business, status=status)

        return self._write(business_id, etag, change)

    def undelete(self, principal: Principal, business_id: str, *, etag: str) -> Business:
        _check_id(business_id)

        def change(found: Business | None) -> Business:
            self._authz.require_business_permission(principal, found, business_id, ALL_PERMISSIONS)
            if found is None:
                raise NotFound(f"business {business_id!r} not found", reason="BUSINESS_NOT_FOUND")
            if not found.is_deleted:
                raise FailedPrecondition(
                    f"business {business_id!r} is not deleted",
                    reason="BUSINESS_NOT_DELETED",
                    metadata={"business_id": business_id},
                )
            ends = self.purge_time(found)
            if found.purge_start_time is not None or (ends is not None and self._now() >= ends):
                raise FailedPrecondition(
                    f"business {business_id!r} was deleted longer ago than the retention window; "
                    "its data is being removed",
                    reason="RETENTION_EXPIRED",
                    metadata={"business_id": business_id, "purge_time": ends.isoformat() if ends else ""},
                )
            return replace(found, status=BusinessStatus.ACTIVE, delete_time=None)

        return self._write(business_id, etag, change)

    def _write(self, business_id: str, etag: str, change: Callable[[Business | None], Business]) -> Business:
        """Read (strongly consistent), decide, write conditional on the version read. With the
        caller's etag a conflict is ABORTED; without, the decision is made again on a fresh read."""
        for attempt in range(_WRITE_ATTEMPTS):
            found = self._store.get(business_id)
            changed = change(found)
            assert found is not None  # change() raised otherwise
            if etag and etag != found.etag:
                raise Aborted(
                    f"etag {etag!r} is not the current one for business {business_id!r}; read it again",
                    metadata={"business_id": business_id, "current_etag": found.etag},
                )
            if changed == found:
                return found
            try:
                saved = self._store.update(changed, previous=found)
            except Aborted:
                self._cache.invalidate(business_id)
                if etag or attempt == _WRITE_ATTEMPTS - 1:
                    raise
                continue
            self._cache.put(saved)
            return saved
        raise AssertionError("unreachable")  # pragma: no cover


def _check_id(business_id: str) -> None:
    v = Violations()
    check_business_id(v, "business_id", business_id)
    v.raise_if_any()
