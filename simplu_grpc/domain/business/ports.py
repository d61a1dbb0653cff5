"""What the business use cases need from outside the domain: the one set of business ports.

``BusinessRepository`` is the business-info store (``adapters.dynamodb.business_store``
implements it; the admin use cases and ``BusinessCache`` read through it). ``BusinessLookup``
is "a business by id" for callers that accept the cache's answer (resource use cases, the
authorization of every resource call): ``BusinessCache`` and the store both satisfy it.
``Registrar`` is the part of the Citrus client that registers a location.
"""

from __future__ import annotations

from typing import Protocol

from simplu_grpc.domain.business.model import Business, BusinessPage, CreateOutcome
from simplu_grpc.domain.placement.shards import ShardAssignment


class BusinessLookup(Protocol):
    """One business by id, None when there is none (from a cache where the caller allows it)."""

    def get(self, business_id: str) -> Business | None: ...


class BusinessRepository(Protocol):
    """The business store: consistent reads, conditional writes, listings."""

    def get(self, business_id: str, *, consistent: bool = True) -> Business | None: ...

    def create(self, business: Business, *, request_key: str | None = None) -> CreateOutcome: ...

    def update(self, business: Business, *, previous: Business) -> Business:
        """Write ``business`` over ``previous`` (the stored business it changes, same version)."""
        ...

    def list(
        self, *, page_size: int, page_token: str, member: str | None, include_deleted: bool
    ) -> BusinessPage: ...


class Registrar(Protocol):
    """The part of the Citrus client registration needs."""

    def register(self, business_id: str, location_id: str, business_type: str) -> ShardAssignment: ...
