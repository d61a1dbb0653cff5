"""AggregateResources: counts, sums, minima and maxima per group, with the ListResources filter.

Pure values and validation (no SQL, no I/O). Groups are by data fields and/or by the
day, ISO week (starting Monday) or month of a time field in the location's time zone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from simplu_grpc.domain.resources.catalog import require_resource_type
from simplu_grpc.domain.resources.filter_parser import parse
from simplu_grpc.domain.resources.filter_tree import Node
from simplu_grpc.domain.resources.validation import MASK_KEY_PATTERN
from simplu_grpc.errors import FailedPrecondition, InvalidArgument

MAX_GROUP_KEYS: Final = 2
DEFAULT_MAX_GROUPS: Final = 100
MAX_GROUPS: Final = 1000
TIME_UNITS: Final = ("day", "week", "month")
_TIME_GROUP: Final = re.compile(r"(start_time|end_time|create_time|update_time):(day|week|month)")


@dataclass(frozen=True, slots=True)
class DataGroup:
    path: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TimeGroup:
    column: str
    unit: str


GroupKey = DataGroup | TimeGroup


@dataclass(frozen=True, slots=True)
class AggregateQuery:
    business_id: str
    location_id: str
    resource_type: str
    filter: Node | None
    value_path: tuple[str, ...] | None
    group_by: tuple[GroupKey, ...]
    time_zone: str
    max_groups: int


@dataclass(frozen=True, slots=True)
class Group:
    """One group: its key values (JSON values for data keys, None for missing; the period's
    first instant for time keys), the row count and, over the numeric values of the value
    field, sum/min/max (None when the group has none)."""

    keys: tuple[Any, ...]
    count: int
    sum: float | None
    min: float | None
    max: float | None


@dataclass(frozen=True, slots=True)
class AggregateResult:
    groups: list[Group]
    truncated: bool


def _data_path(field_name: str, text: str) -> tuple[str, ...]:
    if not text.startswith("data."):
        raise InvalidArgument.field(field_name, 'must be "data.<key>[.<key>...]"')
    path = tuple(text.split(".")[1:])
    if not 1 <= len(path) <= 8 or not all(MASK_KEY_PATTERN.fullmatch(key) for key in path):
        raise InvalidArgument.field(field_name, "a data path has 1-8 keys of 1-64 characters of [A-Za-z0-9_]")
    return path


def parse_group_by(values: Sequence[str]) -> tuple[GroupKey, ...]:
    if len(values) > MAX_GROUP_KEYS:
        raise InvalidArgument.field("group_by", f"at most {MAX_GROUP_KEYS} keys")
    keys: list[GroupKey] = []
    for index, text in enumerate(values):
        where = f"group_by[{index}]"
        match = _TIME_GROUP.fullmatch(text)
        if match:
            keys.append(TimeGroup(match.group(1), match.group(2)))
        elif text.startswith("data."):
            keys.append(DataGroup(_data_path(where, text)))
        else:
            raise InvalidArgument.field(
                where,
                'must be "data.<key>[.<key>...]" or '
                '"<start_time|end_time|create_time|update_time>:<day|week|month>"',
            )
    if len(set(keys)) != len(keys):
        raise InvalidArgument.field("group_by", "names a key twice")
    return tuple(keys)


def time_zone(*candidates: str) -> str:
    """The first non-empty zone name (location's, then business default), else UTC; a name
    the zone database does not know is FAILED_PRECONDITION (fix the location, not the call)."""
    for name in candidates:
        if name:
            try:
                ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                raise FailedPrecondition(
                    f"the location's time zone {name[:64]!r} is unknown", reason="UNKNOWN_TIME_ZONE"
                ) from None
            return name
    return "UTC"


def validate_aggregate(
    *,
    business_type: str,
    business_id: str,
    location_id: str,
    resource_type: str,
    filter_text: str,
    value_field: str,
    group_by: Sequence[str],
    max_groups: int,
    zone: str,
) -> AggregateQuery:
    require_resource_type(business_type, resource_type)
    tree = parse(filter_text, resource_type)
    value_path = _data_path("value_field", value_field) if value_field else None
    keys = parse_group_by(group_by)
    if max_groups < 0:
        raise InvalidArgument.field("max_groups", "must not be negative")
    size = DEFAULT_MAX_GROUPS if max_groups == 0 else min(max_groups, MAX_GROUPS)
    return AggregateQuery(business_id, location_id, resource_type, tree, value_path, keys, zone, size)
