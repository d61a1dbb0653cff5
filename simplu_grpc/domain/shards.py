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
    business_count: int = 0
    max_businesses: int = 0

    @property
    def usage_percent(self) -> float:
        """Business count as a percentage of the maximum (0 when the maximum is unknown)."""
        if self.max_businesses <= 0:
            return 0.0
        return 100.0 * self.business_count / self.max_businesses


@dataclass(frozen=True, slots=True, kw_only=True)
class CapacityInfo:
    """Citrus's answer to "can this shard take another business?"."""

    shard_id: str
    can_accept_new_business: bool
    business_count: int | None = None
    max_businesses: int | None = None
