"""The ResourceService reads beyond single resources: aggregates, a location's statistics and
its change history; each checks read permission on every type it reads before reading."""

from __future__ import annotations

from collections.abc import Sequence

from simplu_grpc import context
from simplu_grpc.domain.auth.authz import READ
from simplu_grpc.domain.resources import aggregates as resource_aggregates
from simplu_grpc.domain.resources import changes, page_tokens
from simplu_grpc.domain.resources import statistics as location_statistics
from simplu_grpc.domain.resources.catalog import (
    KNOWN_RESOURCE_TYPES,
    catalog_types,
    require_known_type,
    require_resource_type,
)
from simplu_grpc.domain.resources.model import TimeRange
from simplu_grpc.domain.resources.results import ChangePage
from simplu_grpc.domain.resources.shard_path import ShardPath, read_changes, read_groups, read_recent
from simplu_grpc.domain.resources.validation import validate_tenant


class ResourceQueries(ShardPath):
    """AggregateResources, GetLocationStatistics and ListResourceChanges."""

    def aggregate(
        self,
        *,
        business_id: str,
        location_id: str,
        resource_type: str,
        filter_text: str,
        value_field: str,
        group_by: Sequence[str],
        max_groups: int,
    ) -> resource_aggregates.AggregateResult:
        """Counts (and sum/min/max of a numeric data field) per group; "<type>:read"."""
        validate_tenant(business_id, location_id)
        require_known_type(resource_type, "resource_type")
        business, location = self._authorizer.require_resource(
            context.principal(),
            self._businesses.get(business_id),
            business_id,
            location_id=location_id,
            resource_type=resource_type,
            action=READ,
        )
        query = resource_aggregates.validate_aggregate(
            business_type=business.type.value,
            business_id=business_id,
            location_id=location_id,
            resource_type=resource_type,
            filter_text=filter_text,
            value_field=value_field,
            group_by=group_by,
            max_groups=max_groups,
            zone=resource_aggregates.time_zone(location.timezone, business.settings.timezone),
        )
        return self._on_shard(
            business,
            location_id,
            lambda s: self._store.aggregate(s, query),
            idempotent=True,
            rows=read_groups,
        )

    def statistics(self, *, business_id: str, location_id: str) -> location_statistics.LocationStatistics:
        """The business type's dashboard for one location; read permission on every type it
        summarises is checked before anything is read (PERMISSION_DENIED names none of them)."""
        validate_tenant(business_id, location_id)
        principal = context.principal()
        looked_up = self._businesses.get(business_id)
        # The types summarised follow from the business type; every one must be readable. An
        # unknown business still goes through the authorizer (PERMISSION_DENIED first).
        kinds = location_statistics.definitions(looked_up.type.value.lower()) if looked_up else ()
        types = list(dict.fromkeys(d.resource_type for d in kinds)) or ["activities"]
        for resource_type in types:
            business, location = self._authorizer.require_resource(
                principal,
                looked_up,
                business_id,
                location_id=location_id,
                resource_type=resource_type,
                action=READ,
            )
        zone = resource_aggregates.time_zone(location.timezone, business.settings.timezone)
        now = self._clock()
        query = location_statistics.plan(
            business_type=business.type.value.lower(),
            business_id=business_id,
            location_id=location_id,
            now=now,
            zone=zone,
        )
        found, recent = self._on_shard(
            business,
            location_id,
            lambda s: self._store.statistics(s, query),
            idempotent=True,
            rows=read_recent,
        )
        return location_statistics.LocationStatistics(now, zone, found, recent)

    def list_changes(
        self,
        *,
        business_id: str,
        location_id: str,
        resource_types: Sequence[str],
        resource_id: str,
        principal: str,
        change_time: TimeRange,
        order_by: str,
        page_size: int,
        page_token: str,
    ) -> ChangePage:
        """A location's change history (or one resource's), read permission per type: named
        types must all be readable; no types means every type of the location the caller may
        read (PERMISSION_DENIED when none)."""
        validate_tenant(business_id, location_id)
        named = tuple(resource_types)
        for index, resource_type in enumerate(named):
            require_known_type(resource_type, f"resource_types[{index}]")
        wanted_id, who, descending, size = changes.validate_filters(
            resource_types=named,
            resource_id=resource_id,
            principal=principal,
            change_time=change_time,
            order_by=order_by,
            page_size=page_size,
        )
        known = self._businesses.get(business_id)
        if named:
            candidates = named
        elif known is not None:
            candidates = tuple(sorted(catalog_types(known.type.value)))
        else:
            candidates = tuple(sorted(KNOWN_RESOURCE_TYPES))
        business, readable = self._authorizer.require_readable_types(
            context.principal(),
            known,
            business_id,
            location_id=location_id,
            resource_types=candidates,
            all_required=bool(named),
        )
        for index, resource_type in enumerate(named):
            require_resource_type(business.type.value, resource_type, f"resource_types[{index}]")
        query = changes.ChangeQuery(
            business_id=business_id,
            location_id=location_id,
            resource_types=tuple(sorted(readable)),
            resource_id=wanted_id,
            principal=who,
            change_time=change_time,
            descending=descending,
            page_size=size,
        )
        binding = query.binding()
        after = page_tokens.decode_sequence(page_token, binding)
        rows, more = self._on_shard(
            business,
            location_id,
            lambda s: self._store.list_changes(s, query, after),
            idempotent=True,
            rows=read_changes,
        )
        if not more or not rows:
            return ChangePage(rows, "")
        return ChangePage(rows, page_tokens.encode_sequence(binding, rows[-1].sequence))
