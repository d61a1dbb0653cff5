"""Citrus's JSON answers (DESIGN §5) read into ShardAssignment, checked field by field.

A malformed answer is ``CitrusUnavailable`` and is never echoed (it may quote a password).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from simplu_grpc.domain.placement.shards import ShardAssignment
from simplu_grpc.errors import CitrusUnavailable
from simplu_grpc.redact import normalize_dsn


def malformed(operation: str) -> CitrusUnavailable:
    """The error for an answer to ``operation`` that does not follow the contract."""
    return CitrusUnavailable(
        f"Citrus sent a malformed answer to {operation}", metadata={"operation": operation}
    )


def assignment(body: Any, *, operation: str, require_connection: bool = True) -> ShardAssignment:
    """Parse a ``CitrusShardResponse``; raise ``CitrusUnavailable`` (never echoing it) when malformed.

    Routing answers (``get_shard``, ``register``) must carry a connection string: an empty one
    would make libpq connect to a local default database, i.e. invent a shard. Health lists
    may omit it (only their counts are needed there). ``isActive`` must be a boolean in every
    answer: assuming "active" would be inventing it (DESIGN §8). Counts Citrus did not give
    (or gave as non-integers) are ``None``, never 0. Connection strings are normalised
    (``normalize_dsn``: a raw ``@`` in the password is encoded); a routing answer whose string
    libpq cannot use (a malformed port) is malformed, a health entry keeps it as sent.
    """
    if not isinstance(body, Mapping):
        raise malformed(operation)
    shard_id = body.get("shardId")
    connection_string = body.get("connectionString", None if require_connection else "")
    is_active = body.get("isActive")
    if (
        not isinstance(shard_id, str)
        or not shard_id
        or not isinstance(connection_string, str)
        or (require_connection and not connection_string.strip())
        or not isinstance(is_active, bool)
    ):
        raise malformed(operation)
    try:
        connection_string = normalize_dsn(connection_string) if connection_string else ""
    except ValueError:
        if require_connection:  # a route nobody can connect to (a bad port): not an answer
            raise malformed(operation) from None
    return ShardAssignment(
        shard_id=shard_id,
        connection_string=connection_string,
        is_active=is_active,
        last_health_check=_timestamp(body.get("lastHealthCheck")),
        business_count=_count(body.get("businessCount")),
        max_businesses=_count(body.get("maxBusinesses")),
        observed_at=time.monotonic(),
    )


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _count(value: Any) -> int | None:
    """A count Citrus reported, or None when it is missing or not an integer (unknown, not 0)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None
