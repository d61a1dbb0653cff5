"""A business's lifecycle past creation: suspend and resume (billing), undelete within the retention window.

- **Suspend / resume** (platform admins only): a suspended business keeps its metadata, members
  and data; BusinessService works on it as before, but every ResourceService call on its data
  answers FAILED_PRECONDITION / BUSINESS_SUSPENDED (``Authorizer.require_resource``, on the
  business already loaded, and cached, for the permission check). Both are idempotent.
- **Undelete** (platform admins, businesses.write, the owner role ``"*"``): a deleted business
  comes back (ACTIVE, or SUSPENDED if it was suspended when deleted: deleting never lifts a
  suspension) while ``delete_time + retention`` has not passed and its purge has not begun
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

from simplu_grpc.domain.auth.authz import Authorizer, require_live
from simplu_grpc.domain.auth.permissions import ALL_PERMISSIONS
from simplu_grpc.domain.auth.principal import Principal
from simplu_grpc.domain.business.model import Business, BusinessStatus
from simplu_grpc.domain.checks import Violations, check_business_id
from simplu_grpc.errors import FailedPrecondition, NotFound, PermissionDenied


class BusinessWriter(Protocol):
    """BusinessService's one read-decide-write loop (``BusinessOps.rewrite``): etags, retries, cache."""

    def rewrite(
        self,
        business_id: str,
        etag: str,
        allowed: Callable[[Business | None], Business],
        change: Callable[[Business], Business],
    ) -> Business: ...


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
        writer: BusinessWriter,
        authorizer: Authorizer,
        retention: timedelta,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if retention < timedelta(0):
            raise ValueError("retention must not be negative")
        self._writer = writer
        self._authz = authorizer
        self._retention = retention
        self._now = clock

    def purge_time(self, business: Business) -> datetime | None:
        return purge_time(business, self._retention)

    def suspend(self, principal: Principal, business_id: str, *, etag: str) -> Business:
        def suspended(business: Business) -> Business:
            if business.status is BusinessStatus.SUSPENDED:
                return business
            return replace(business, status=BusinessStatus.SUSPENDED, suspend_time=self._now())

        return self._admin_write(principal, business_id, etag, "SuspendBusiness", suspended)

    def resume(self, principal: Principal, business_id: str, *, etag: str) -> Business:
        def resumed(business: Business) -> Business:
            return replace(business, status=BusinessStatus.ACTIVE, suspend_time=None)

        return self._admin_write(principal, business_id, etag, "ResumeBusiness", resumed)

    def _admin_write(
        self,
        principal: Principal,
        business_id: str,
        etag: str,
        call: str,
        change: Callable[[Business], Business],
    ) -> Business:
        _check_id(business_id)
        require_platform_admin(self._authz, principal, call)

        def allowed(found: Business | None) -> Business:
            return require_live(found, business_id, sees_deleted=True)

        return self._writer.rewrite(business_id, etag, allowed, change)

    def undelete(self, principal: Principal, business_id: str, *, etag: str) -> Business:
        _check_id(business_id)

        def allowed(found: Business | None) -> Business:
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
                    f"business {business_id!r} was deleted longer ago than the retention window "
                    "and can no longer be undeleted",
                    reason="RETENTION_EXPIRED",
                    metadata={"business_id": business_id, "purge_time": ends.isoformat() if ends else ""},
                )
            return found

        def restored(business: Business) -> Business:
            # Deleting never lifts a suspension: a business suspended when deleted comes back suspended.
            status = BusinessStatus.ACTIVE if business.suspend_time is None else BusinessStatus.SUSPENDED
            return replace(business, status=status, delete_time=None)

        return self._writer.rewrite(business_id, etag, allowed, restored)


def _check_id(business_id: str) -> None:
    v = Violations()
    check_business_id(v, "business_id", business_id)
    v.raise_if_any()
