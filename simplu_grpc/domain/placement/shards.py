"""Shard assignments and capacity as Citrus reports them (connection strings are secrets)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardAssignment:
    """Where a business+location lives: a shard id and how to connect to it.

    ``connection_string`` carries a password: it is excluded from ``repr`` and must go
    through ``redact()`` before it is logged or shown anywhere.
    """

    shard_id: str
    connection_string: str = field(repr=False)
    is_active: bool = True
    last_health_check: datetime | None = None
    # None when Citrus did not report them (unknown, not 0).
    business_count: int | None = None
    max_businesses: int | None = None
    # When (time.monotonic()) the directory gave this answer: of two answers naming different
    # connection strings for one shard, the later one is where the shard is now (a move, or a
    # move back). 0.0 for fixed assignments.
    observed_at: float = field(default=0.0, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class CapacityInfo:
    """Citrus's answer to "can this shard take another business?"."""

    shard_id: str
    can_accept_new_business: bool
    business_count: int | None = None
    max_businesses: int | None = None
