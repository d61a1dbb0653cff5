"""What the resource statements' failures mean to the caller: a stale etag (ABORTED, with the
current etag the statement read), a shard CHECK constraint (INVALID_ARGUMENT) and a location
fence (UNAVAILABLE: frozen for a move, or moved away); psycopg's errors stop here."""

from __future__ import annotations

from typing import Any

import psycopg

from simplu_grpc.domain.resources.model import ResourceKey, etag_for
from simplu_grpc.errors import Aborted, FieldViolation, InvalidArgument, LocationFrozen, LocationMoved


def etag_mismatch(key: ResourceKey, current_version: int, expected_version: int | None) -> Aborted:
    """ABORTED for a stale etag, with the current etag the statement saw.

    The statement reads the version in its snapshot. When that is the very version the caller
    expected, the write lost to a concurrent one committed after the snapshot: the current
    version is then newer than anything this statement saw, and no etag is claimed.
    """
    metadata = {"resource_type": key.resource_type, "resource_id": key.resource_id}
    if current_version != expected_version:
        metadata["current_etag"] = etag_for(current_version)
    return Aborted(
        "the etag does not match the resource's current version; read it again",
        metadata=metadata,
    )


def check_violation(
    exc: psycopg.errors.CheckViolation, *, updating: bool, max_bytes: int | None = None
) -> InvalidArgument:
    """INVALID_ARGUMENT for a shard CHECK constraint a create or an update ran into."""
    constraint = exc.diag.constraint_name or ""
    if constraint == "resources_data_max_bytes":
        limit = f"{max_bytes} bytes" if max_bytes is not None else "the size limit"
        if updating:
            return InvalidArgument(
                f"the update would make the document larger than {limit}",
                violations=[FieldViolation("resource.data", f"the updated document would exceed {limit}")],
            )
        return InvalidArgument(
            f"the document is larger than {limit}",
            violations=[FieldViolation("resource.data", f"exceeds {limit}")],
        )
    if constraint == "resources_dates_ordered":
        return InvalidArgument(
            "end_time must not be before start_time",
            violations=[FieldViolation("resource.end_time", "is before start_time")],
        )
    return InvalidArgument("the resource violates a shard constraint")


def refuse_if_fenced(row: dict[str, Any]) -> None:
    """LocationFrozen / LocationMoved when the write statement found the location fenced
    (it then changed nothing; see resource_statements.FENCE)."""
    if row["fence"] is None:
        return
    metadata = {"move_id": row["fence_move"]}
    if row["fence"] == "frozen":
        raise LocationFrozen(
            "the location's writes are frozen for a moment while it moves to another shard; retry",
            metadata=metadata,
        )
    raise LocationMoved("the location has moved to another shard; retry", metadata=metadata)
