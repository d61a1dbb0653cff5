"""The change log: what one resource write recorded, and the validated ListResourceChanges query.

Every create, update and delete records one change on the location's shard in the same
statement as the write (``adapters.postgres.shard_store``): its kind, the resource's key, the version
it left (for a delete: the version deleted), the update's paths, the caller's subject, the
time, and a sequence that orders the shard's changes. Nothing here knows protobuf or SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, Final

from simplu_grpc.domain.paging import STANDARD
from simplu_grpc.domain.resources.documents import check_interval
from simplu_grpc.domain.resources.ids import require_id
from simplu_grpc.domain.resources.model import ResourceKey, TimeRange, etag_for
from simplu_grpc.errors import InvalidArgument

# A principal filter is a token subject (a Cognito sub, or a machine client's app client id).
_MAX_PRINCIPAL_LENGTH: Final = 128


class ChangeKind(Enum):
    """What a write did to a resource (the shard's resource_changes.kind)."""

    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class ResourceChange:
    """One row of the change log."""

    sequence: int
    kind: ChangeKind
    key: ResourceKey
    # The resource's version after the change; for a delete, the version that was deleted.
    version: int
    paths: tuple[str, ...]
    principal: str
    change_time: datetime

    @property
    def etag(self) -> str:
        return etag_for(self.version)


_ORDERINGS: Final = {"sequence": False, "sequence desc": True}


@dataclass(frozen=True, slots=True)
class ChangeQuery:
    """A validated ListResourceChanges query: a location's changes, or one resource's."""

    business_id: str
    location_id: str
    # The types whose changes are listed (the caller may read every one), sorted.
    resource_types: tuple[str, ...]
    # Set: the history of this one resource (of the single type in resource_types).
    resource_id: str | None
    principal: str | None
    change_time: TimeRange
    descending: bool
    page_size: int

    def binding(self) -> dict[str, Any]:
        """What a page token is bound to: everything but the page size (AIP-158)."""
        return {
            "changes": 1,
            "b": self.business_id,
            "l": self.location_id,
            "n": list(self.resource_types),
            "id": self.resource_id,
            "p": self.principal,
            "t": self.change_time.binding(),
            "d": self.descending,
        }


def validate_filters(
    *,
    resource_types: tuple[str, ...],
    resource_id: str,
    principal: str,
    change_time: TimeRange,
    order_by: str,
    page_size: int,
) -> tuple[str | None, str | None, bool, int]:
    """The filters' shape, checked before authorisation (they say nothing about the business):
    (resource id or None, principal or None, descending, page size)."""
    if len(set(resource_types)) != len(resource_types):
        raise InvalidArgument.field("resource_types", "names a type twice")
    wanted_id: str | None = None
    if resource_id:
        require_id("resource_id", resource_id)
        if len(resource_types) != 1:
            raise InvalidArgument.field(
                "resource_types",
                "must name exactly the one type of resource_id to list one resource's history",
            )
        wanted_id = resource_id
    if principal and (len(principal) > _MAX_PRINCIPAL_LENGTH or not principal.isprintable()):
        raise InvalidArgument.field(
            "principal", f"must be a token subject: at most {_MAX_PRINCIPAL_LENGTH} printable characters"
        )
    check_interval("change_time_range", change_time)
    descending = _ORDERINGS.get(" ".join(order_by.lower().split()) or "sequence")
    if descending is None:
        raise InvalidArgument.field("order_by", 'must be "sequence" or "sequence desc"')
    size = STANDARD.resolve(page_size)
    return wanted_id, principal or None, descending, size
