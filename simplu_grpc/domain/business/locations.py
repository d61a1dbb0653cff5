"""AddLocation, UpdateLocation, RemoveLocation: a business's locations (registered with Citrus)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from simplu_grpc.domain.auth import permissions as perm
from simplu_grpc.domain.auth.principal import Principal
from simplu_grpc.domain.business.model import Business, Location
from simplu_grpc.domain.business.registration import Registered, Registration
from simplu_grpc.domain.business.validation import MAX_LOCATIONS, check_location, check_update_mask
from simplu_grpc.domain.checks import Violations, check_business_id, check_id
from simplu_grpc.errors import AlreadyExists, FailedPrecondition, NotFound

LOCATION_PATHS = ("name", "address", "phone", "email", "timezone", "active")
_IGNORED_LOCATION_PATHS = frozenset({"id"})


class LocationCommands(Registration):
    """The location use cases; new and changed locations are registered with Citrus."""

    def add_location(
        self,
        principal: Principal,
        business_id: str,
        location: Location,
        *,
        etag: str,
        violations: Violations | None = None,
    ) -> Registered:
        v = Violations() if violations is None else violations
        check_business_id(v, "business_id", business_id)
        check_location(v, "location", location)
        v.raise_if_any()
        added = replace(location, active=True)

        def change(business: Business) -> Business:
            if business.location(added.id) is not None:
                raise AlreadyExists(
                    f"location {added.id!r} already exists in business {business_id!r}",
                    reason="LOCATION_EXISTS",
                )
            if len(business.locations) >= MAX_LOCATIONS:
                raise FailedPrecondition(f"a business has at most {MAX_LOCATIONS} locations")
            updated = business.with_location(added)
            if self._citrus is not None:
                updated = updated.with_unregistered((*business.unregistered_location_ids, added.id))
            return updated

        business = self._mutate(
            principal, business_id, etag, perm.LOCATIONS_CREATE, location_id=None, change=change
        )
        return self.register_pending(business)

    def update_location(
        self,
        principal: Principal,
        business_id: str,
        location: Location,
        *,
        etag: str,
        paths: Iterable[str],
        violations: Violations | None = None,
    ) -> Registered:
        v = Violations() if violations is None else violations
        check_business_id(v, "business_id", business_id)
        check_id(v, "location.id", location.id)
        given = list(paths)
        fields = check_update_mask(
            v, "update_mask", given, LOCATION_PATHS, refused={}, ignored=_IGNORED_LOCATION_PATHS
        )
        if not given:
            # AIP-134: an empty mask updates the populated fields. proto3 cannot tell an unset
            # string or bool from "" / false, so clearing a field or deactivating takes a mask.
            fields = tuple(path for path in LOCATION_PATHS if getattr(location, path) not in ("", False))
            if not fields:
                v.add(
                    "update_mask",
                    "is empty and location has no populated field besides id: nothing to update",
                )
        v.raise_if_any()

        def change(business: Business) -> Business:
            current = _existing_location(business, location.id)
            merged = replace(current, **{path: getattr(location, path) for path in fields})
            check = Violations()
            check_location(check, "location", merged)
            check.raise_if_any()
            return business.with_location(merged)

        business = self._mutate(
            principal, business_id, etag, perm.LOCATIONS_UPDATE, location_id=location.id, change=change
        )
        return self.register_pending(business)

    def remove_location(
        self, principal: Principal, business_id: str, location_id: str, *, etag: str
    ) -> Business:
        v = Violations()
        check_business_id(v, "business_id", business_id)
        check_id(v, "location_id", location_id)
        v.raise_if_any()

        def change(business: Business) -> Business:
            return business.with_location(replace(_existing_location(business, location_id), active=False))

        return self._mutate(
            principal, business_id, etag, perm.LOCATIONS_DELETE, location_id=location_id, change=change
        )


def _existing_location(business: Business, location_id: str) -> Location:
    found = business.location(location_id)
    if found is None:
        raise NotFound(
            f"location {location_id!r} not found in business {business.id!r}", reason="LOCATION_NOT_FOUND"
        )
    return found
