"""ResourceService use cases: who may act, where the data lives, then one statement on that shard.

Every call follows the same path, in this order (the order is the contract):

1. input shape (ids, a resource type some catalog has) -> INVALID_ARGUMENT, touching nothing;
2. the business, through the short-lived business cache (no DynamoDB call when warm);
3. permission (``Authorizer.require_resource``) BEFORE existence: a stranger gets
   PERMISSION_DENIED whether or not the business exists; then the business must be active
   and the location must belong to it and be active;
4. the rest of validation that needs the business type (catalog, documents, dates);
5. routing (cache -> Citrus, registering the location on first use);
6. a pooled connection to the shard and ONE statement.

When the shard cannot be reached, Citrus is asked once more (it may have failed the shard
over to a new connection string) and the call is retried there; writes are retried only
when the failure happened before the statement was sent, so no write is applied twice.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from simplu_grpc import context
from simplu_grpc.domain.auth.authz import READ
from simplu_grpc.domain.placement.shards import ShardAssignment
from simplu_grpc.domain.resources import page_tokens
from simplu_grpc.domain.resources.catalog import require_known_type
from simplu_grpc.domain.resources.model import ResourceKey, StoredResource, TimeRange, expected_version
from simplu_grpc.domain.resources.queries import ResourceQueries
from simplu_grpc.domain.resources.results import BatchResult, Page, ResponseBudget, Unbounded
from simplu_grpc.domain.resources.shard_path import (
    CREATE,
    DELETE,
    UPDATE,
    read_all,
    read_one,
    read_page,
    rows_created,
    wrote_one,
)
from simplu_grpc.domain.resources.validation import (
    UpdateRequest,
    validate_batch_names,
    validate_batch_shape,
    validate_list,
    validate_new,
    validate_tenant,
    validate_update,
)


class ResourceOps(ResourceQueries):
    """The ResourceService use cases (see module docstring)."""

    # --- the RPCs ------------------------------------------------------------------

    def create(
        self,
        *,
        business_id: str,
        location_id: str,
        resource_type: str,
        resource_id: str,
        data: Mapping[str, Any],
        start_time: datetime | None,
        end_time: datetime | None,
        request_id: str,
    ) -> tuple[StoredResource, bool]:
        validate_tenant(business_id, location_id, "resource.")
        require_known_type(resource_type, "resource.resource_type")
        business = self._allowed(business_id, location_id, resource_type, CREATE)
        new, generate = validate_new(
            business_id=business_id,
            location_id=location_id,
            resource_type=resource_type,
            business_type=business.type.value,
            resource_id=resource_id,
            data=data,
            start_time=start_time,
            end_time=end_time,
            request_id=request_id,
            max_bytes=self._limits.max_bytes,
            max_depth=self._limits.max_depth,
        )
        if generate:
            new = replace(new, key=replace(new.key, resource_id=self._new_id()))
        new = replace(new, requester=context.principal().subject)
        return self._on_shard(
            business, location_id, lambda s: self._store.create(s, new), idempotent=False, rows=rows_created
        )

    def get(self, key: ResourceKey) -> StoredResource:
        business = self._checked_key(key, READ)
        return self._on_shard(
            business, key.location_id, lambda s: self._store.get(s, key), idempotent=True, rows=read_one
        )

    def batch_get(
        self,
        business_id: str,
        keys: Sequence[ResourceKey],
        *,
        page_token: str = "",
        binding_extra: Sequence[str] = (),
        budget: ResponseBudget | None = None,
    ) -> BatchResult:
        """The keys in request order, found or missing, from the page token's key on, up to
        where the budget stops (then a token for the rest)."""
        validate_batch_shape(business_id, keys)
        principal = context.principal()
        business = self._businesses.get(business_id)
        # Every (location, name) pair must be allowed before anything is read.
        for location_id, resource_type in dict.fromkeys((k.location_id, k.resource_type) for k in keys):
            self._authorizer.require_resource(
                principal,
                business,
                business_id,
                location_id=location_id,
                resource_type=resource_type,
                action=READ,
            )
        assert business is not None  # require_resource raised otherwise
        validate_batch_names(business.type.value, keys)
        binding = {
            "b": business_id,
            "k": [[k.location_id, k.resource_type, k.resource_id] for k in keys],
            "m": sorted(binding_extra),
        }
        offset = page_tokens.decode_offset(page_token, binding, len(keys))
        wanted = keys[offset:]
        # Route each location once, then one statement per shard for all its keys.
        by_shard: dict[str, tuple[str, ShardAssignment, list[ResourceKey]]] = {}
        for location_id, location_keys in group_by_location(wanted).items():
            assignment = self._route(business, location_id)
            by_shard.setdefault(assignment.shard_id, (location_id, assignment, []))[2].extend(location_keys)
        found: dict[ResourceKey, StoredResource] = {}
        for location_id, assignment, shard_keys in by_shard.values():
            rows = self._on_shard(
                business,
                location_id,
                functools.partial(self._store.batch_get, business_id=business_id, keys=shard_keys),
                idempotent=True,
                assignment=assignment,
                rows=read_all,
            )
            for row in rows:
                found[row.key] = row
        taken: list[StoredResource] = []
        missing: list[ResourceKey] = []
        budget = budget or Unbounded()
        for index, key in enumerate(wanted):
            hit = found.get(key)
            if hit is None:
                missing.append(key)
            elif budget.admit(hit):
                taken.append(hit)
            else:
                return BatchResult(taken, missing, page_tokens.encode_offset(binding, offset + index))
        return BatchResult(taken, missing)

    def list(
        self,
        *,
        business_id: str,
        location_id: str,
        resource_type: str,
        start_range: TimeRange,
        overlaps: TimeRange,
        data_contains: Mapping[str, Any] | None,
        order_by: str,
        page_size: int,
        page_token: str,
        budget: ResponseBudget | None = None,
        filter_text: str = "",
    ) -> Page:
        validate_tenant(business_id, location_id)
        require_known_type(resource_type, "resource_type")
        business = self._allowed(business_id, location_id, resource_type, READ)
        query = validate_list(
            business_type=business.type.value,
            business_id=business_id,
            location_id=location_id,
            resource_type=resource_type,
            start_range=start_range,
            overlaps=overlaps,
            data_contains=data_contains,
            order_by=order_by,
            page_size=page_size,
            max_bytes=self._limits.max_bytes,
            max_depth=self._limits.max_depth,
            filter_text=filter_text,
        )
        binding = query.binding()
        after = page_tokens.decode(page_token, binding, [key.is_data for key in query.order_by])
        listed = self._on_shard(
            business,
            location_id,
            lambda s: self._store.list_page(s, query, after),
            idempotent=True,
            rows=read_page,
        )
        rows = listed.resources
        budget = budget or Unbounded()
        taken = 0
        while taken < len(rows) and budget.admit(rows[taken]):
            taken += 1
        if taken == len(rows) and not listed.more:
            return Page(rows, "", listed.total_size)
        return Page(rows[:taken], page_tokens.encode(binding, listed.positions[taken - 1]), listed.total_size)

    def update(self, key: ResourceKey, request: UpdateRequest) -> StoredResource:
        business = self._checked_key(key, UPDATE, prefix="resource.")
        plan = validate_update(request, max_bytes=self._limits.max_bytes, max_depth=self._limits.max_depth)
        principal = context.principal()
        # The request alone is bounded above; the shard bounds the RESULT (masked sets add up).
        return self._on_shard(
            business,
            key.location_id,
            lambda s: self._store.update(
                s, key, plan, principal=principal.subject, max_bytes=self._limits.max_bytes
            ),
            idempotent=False,
            rows=wrote_one,
        )

    def delete(self, key: ResourceKey, *, etag: str) -> None:
        business = self._checked_key(key, DELETE)
        version = expected_version(etag)
        self._on_shard(
            business,
            key.location_id,
            lambda s: self._store.delete(
                s, key, expected_version=version, principal=context.principal().subject
            ),
            idempotent=False,
            rows=wrote_one,
        )


def group_by_location(keys: Sequence[ResourceKey]) -> dict[str, list[ResourceKey]]:
    """Keys per location id (batch get routes each location, then one statement per shard)."""
    grouped: dict[str, list[ResourceKey]] = defaultdict(list)
    for key in keys:
        grouped[key.location_id].append(key)
    return dict(grouped)
