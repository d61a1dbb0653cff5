"""Finding businesses and locations: SearchBusinesses, LookupBusinessByDomain, GetLocation, ListLocations.

- **Search** (platform admins only) goes through the ``BusinessIndex`` port: by type, then a
  case-insensitive name prefix, in (type, folded name, id) order, filtered by status. The
  adapter reads an index, never the whole table, and at most ``SEARCH_BUDGET`` index entries
  per call: a page may come back short (even empty) with a token when the status filter
  discards much; the caller keeps paging (AIP-158 allows it).
- **Lookup by domain label** is for the public booking site: any signed-in person, platform
  admins, and machine clients with simplu/businesses.read (or .write). It answers the
  ``PublicBusiness`` view only (no members, roles, owner, flags or extras; active locations).
  The label resolves through the index (one small read), the business through the cache.
- **Locations** read like GetBusiness (members, platform admins, businesses.read), from the
  business itself; a page token names the last location id, bound to the query.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Final, Protocol

from simplu_grpc.domain.auth.authz import SCOPE_BUSINESSES_READ, SCOPE_BUSINESSES_WRITE, Authorizer
from simplu_grpc.domain.auth.principal import Principal
from simplu_grpc.domain.business.cache import BusinessCache
from simplu_grpc.domain.business.domain_labels import check_domain_label
from simplu_grpc.domain.business.lifecycle import require_platform_admin
from simplu_grpc.domain.business.model import (
    Business,
    BusinessSettings,
    BusinessStatus,
    BusinessType,
    Location,
)
from simplu_grpc.domain.business.validation import NAME_MAX, page_size
from simplu_grpc.domain.checks import Violations, check_business_id, check_id
from simplu_grpc.domain.resources import page_tokens
from simplu_grpc.errors import InvalidArgument, NotFound, PermissionDenied

# Index entries one SearchBusinesses call may read beyond its page (the cost bound).
SEARCH_BUDGET: Final = 1000


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """What to search for; ``name_prefix`` as the caller gave it (the index folds it)."""

    name_prefix: str = ""
    business_type: BusinessType | None = None
    status: BusinessStatus | None = None


@dataclass(frozen=True, slots=True)
class SearchPosition:
    """The last index entry a search read: where the next page starts."""

    business_type: BusinessType
    name_key: str
    business_id: str


@dataclass(frozen=True, slots=True)
class SearchResult:
    businesses: list[Business] = field(default_factory=list)
    next: SearchPosition | None = None  # None: nothing more


class BusinessIndex(Protocol):
    """The business store's indexes (``adapters.business_index.BusinessIndexReader``)."""

    def search(
        self, query: SearchQuery, *, after: SearchPosition | None, limit: int, budget: int
    ) -> SearchResult: ...

    def business_id_for_label(self, label: str) -> str | None: ...


@dataclass(frozen=True, slots=True)
class SearchPage:
    businesses: list[Business]
    next_token: str


@dataclass(frozen=True, slots=True)
class LocationPage:
    locations: list[Location]
    next_token: str


class BusinessDiscovery:
    """The read-side use cases of issue 14, independent of protobuf."""

    def __init__(
        self, *, index: BusinessIndex, cache: BusinessCache, authorizer: Authorizer, reader: BusinessReader
    ) -> None:
        self._index = index
        self._cache = cache
        self._authz = authorizer
        self._reader = reader

    # --- search --------------------------------------------------------------------------

    def search(self, principal: Principal, query: SearchQuery, *, size: int, page_token: str) -> SearchPage:
        v = Violations()
        if len(query.name_prefix) > NAME_MAX:
            v.add("name_prefix", f"must be at most {NAME_MAX} characters")
        resolved = page_size(v, "page_size", size)
        binding = {
            "call": "SearchBusinesses",
            "prefix": query.name_prefix,
            "type": query.business_type.value if query.business_type else "",
            "status": query.status.value if query.status else "",
        }
        v.raise_if_any()
        require_platform_admin(self._authz, principal, "SearchBusinesses")
        after = _search_position(page_token, binding)
        result = self._index.search(query, after=after, limit=resolved, budget=SEARCH_BUDGET + resolved)
        token = ""
        if result.next is not None:
            last = result.next
            key = (_json(last.business_type.value), _json(last.name_key))
            token = page_tokens.encode(binding, page_tokens.Position(key, last.business_id))
        return SearchPage(result.businesses, token)

    # --- lookup by domain label ------------------------------------------------------------

    def lookup_by_domain(self, principal: Principal, label: str) -> Business:
        """The business whose label this is, as the public may see it (``public_view``)."""
        v = Violations()
        if not label.strip():
            v.add("domain_label", "is required")
        value = check_domain_label(v, "domain_label", label)
        v.raise_if_any()
        if principal.is_machine and not (
            self._authz.is_admin(principal)
            or self._authz.has_scope(principal, SCOPE_BUSINESSES_READ, SCOPE_BUSINESSES_WRITE)
        ):
            raise PermissionDenied(
                f"requires the {SCOPE_BUSINESSES_READ} scope",
                reason="MISSING_SCOPE",
                metadata={"scope": SCOPE_BUSINESSES_READ},
            )
        business_id = self._index.business_id_for_label(value)
        business = self._cache.get(business_id) if business_id else None
        # A claim outlives nothing it names: a business renamed its label (the cache may lag a
        # moment) or is deleted reads as unknown, as a label never claimed does.
        if business is None or business.is_deleted or business.domain_label != value:
            raise NotFound(f"no business has the domain label {value!r}", reason="BUSINESS_NOT_FOUND")
        return public_view(business)

    # --- locations ---------------------------------------------------------------------------

    def get_location(self, principal: Principal, business_id: str, location_id: str) -> Location:
        v = Violations()
        check_business_id(v, "business_id", business_id)
        check_id(v, "location_id", location_id)
        v.raise_if_any()
        business = self._reader.get(principal, business_id)
        location = business.location(location_id)
        if location is None:
            raise NotFound(
                f"location {location_id!r} not found in business {business_id!r}", reason="LOCATION_NOT_FOUND"
            )
        return location

    def list_locations(
        self, principal: Principal, business_id: str, *, size: int, page_token: str, show_inactive: bool
    ) -> LocationPage:
        v = Violations()
        check_business_id(v, "business_id", business_id)
        resolved = page_size(v, "page_size", size)
        v.raise_if_any()
        binding = {"call": "ListLocations", "business_id": business_id, "inactive": show_inactive}
        position = page_tokens.decode(page_token, binding, data_keys=())
        business = self._reader.get(principal, business_id)
        chosen = sorted(
            (loc for loc in business.locations if show_inactive or loc.active), key=lambda loc: loc.id
        )
        if position is not None:
            chosen = [loc for loc in chosen if loc.id > position.resource_id]
        page = chosen[:resolved]
        more = len(chosen) > resolved
        token = page_tokens.encode(binding, page_tokens.Position((), page[-1].id)) if more else ""
        return LocationPage(page, token)


class BusinessReader(Protocol):
    """GetBusiness's rule (``BusinessOps.get``): read with permission before existence."""

    def get(self, principal: Principal, business_id: str) -> Business: ...


def public_view(business: Business) -> Business:
    """What the public booking site may see: identity, active locations, the presentation
    settings; no members, roles, owner, version, feature flags, extras or unmodelled attributes."""
    settings = business.settings
    return Business(
        id=business.id,
        name=business.name,
        type=business.type,
        status=business.status,
        domain_label=business.domain_label,
        locations=tuple(loc for loc in business.locations if loc.active),
        settings=BusinessSettings(
            currency=settings.currency,
            language=settings.language,
            timezone=settings.timezone,
            date_format=settings.date_format,
            time_format=settings.time_format,
            working_hours=settings.working_hours,
        ),
    )


def _json(text: str) -> str:
    return json.dumps(text, ensure_ascii=True)


def _search_position(token: str, binding: dict[str, str]) -> SearchPosition | None:
    position = page_tokens.decode(token, binding, data_keys=(True, True))
    if position is None:
        return None
    kind, name_key = (json.loads(str(value)) for value in position.sort_values)
    try:
        business_type = BusinessType(kind)
    except (ValueError, TypeError):
        business_type = None
    if business_type is None or not isinstance(name_key, str):
        raise InvalidArgument.field("page_token", "is malformed")
    return SearchPosition(business_type, name_key, position.resource_id)
