"""GetLocationStatistics: the dashboard of the original system per business type, as data.

Each statistic is a count or a sum over one resource type, optionally within a local time
window (today, this month, tonight) on one time field, optionally restricted by a filter in
the ListResources language, optionally broken down by a data field (top N). The shard
computes them all, plus the most recently changed resources, in one statement. Windows are
computed here from the clock and the location's time zone (pure; no I/O).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from simplu_grpc.domain.resources.catalog import catalog
from simplu_grpc.domain.resources.filter_parser import parse
from simplu_grpc.domain.resources.filter_tree import Node

RECENT_ACTIVITIES: Final = 10
TOP: Final = 5


@dataclass(frozen=True, slots=True)
class StatisticDef:
    name: str
    resource_type: str
    kind: str = "count"  # "count" | "sum"
    window: str = ""  # "" | "today" | "month" | "tonight"
    time_field: str = "start_time"
    filter: str = ""
    value_path: tuple[str, ...] = ()
    breakdown_path: tuple[str, ...] = ()


_DENTAL: Final = (
    StatisticDef("appointments_today", "appointments", window="today", breakdown_path=("status",)),
    StatisticDef("appointments_this_month", "appointments", window="month", breakdown_path=("status",)),
    StatisticDef("new_patients_this_month", "patients", window="month", time_field="create_time"),
    StatisticDef(
        "revenue_this_month",
        "invoices",
        kind="sum",
        window="month",
        time_field="create_time",
        filter='-data.status = "cancelled"',
        value_path=("total",),
    ),
    StatisticDef("top_treatments_this_month", "appointments", window="month", breakdown_path=("treatment",)),
)
_GYM: Final = (
    StatisticDef("active_members", "members", filter='data.status = "active"'),
    StatisticDef("check_ins_today", "check-ins", window="today"),
    StatisticDef("check_ins_this_month", "check-ins", window="month"),
    StatisticDef("packages_sold_this_month", "memberships", window="month", time_field="create_time"),
)
_HOTEL: Final = (
    StatisticDef("rooms", "rooms"),
    StatisticDef("occupied_tonight", "reservations", window="tonight", filter='-data.status = "cancelled"'),
    StatisticDef(
        "reservations_this_month", "reservations", window="month", filter='-data.status = "cancelled"'
    ),
    StatisticDef("arrivals_today", "reservations", window="today", filter='-data.status = "cancelled"'),
    StatisticDef(
        "departures_today",
        "reservations",
        window="today",
        time_field="end_time",
        filter='-data.status = "cancelled"',
    ),
    StatisticDef(
        "revenue_this_month",
        "reservations",
        kind="sum",
        window="month",
        filter='-data.status = "cancelled"',
        value_path=("total",),
    ),
)
DEFINITIONS: Final = {"dental": _DENTAL, "gym": _GYM, "hotel": _HOTEL}


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class PlannedStatistic:
    """A definition made concrete: its parsed filter and its window's instants."""

    definition: StatisticDef
    filter: Node | None
    window: Window | None


@dataclass(frozen=True, slots=True)
class StatisticsQuery:
    business_id: str
    location_id: str
    statistics: tuple[PlannedStatistic, ...]
    resource_types: tuple[str, ...]
    recent: int = RECENT_ACTIVITIES


@dataclass(frozen=True, slots=True)
class Statistic:
    name: str
    resource_type: str
    value: float
    breakdown: dict[str, int]


@dataclass(frozen=True, slots=True)
class Activity:
    resource_type: str
    resource_id: str
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True, slots=True)
class LocationStatistics:
    as_of: datetime
    time_zone: str
    statistics: list[Statistic]
    recent_activities: list[Activity]


def definitions(business_type: str) -> tuple[StatisticDef, ...]:
    """The statistics of a business type (only of types its catalog has)."""
    names = catalog().get(business_type, frozenset())
    return tuple(d for d in DEFINITIONS.get(business_type, ()) if d.resource_type in names)


def windows(now: datetime, zone: str) -> dict[str, Window]:
    """Today, this month and tonight (the night from today's 18:00 to tomorrow's 10:00,
    i.e. whoever stays overnight), local to ``zone``, as aware instants."""
    tz = ZoneInfo(zone)
    local = now.astimezone(tz)
    midnight = datetime.combine(local.date(), time(), tz)
    tomorrow = datetime.combine(local.date() + timedelta(days=1), time(), tz)
    first = datetime.combine(local.date().replace(day=1), time(), tz)
    next_month = (first.replace(day=28) + timedelta(days=4)).replace(day=1)
    return {
        "today": Window(midnight, tomorrow),
        "month": Window(first, next_month),
        "tonight": Window(
            datetime.combine(local.date(), time(18), tz), datetime.combine(tomorrow.date(), time(10), tz)
        ),
    }


def plan(
    *, business_type: str, business_id: str, location_id: str, now: datetime, zone: str
) -> StatisticsQuery:
    found = windows(now, zone)
    planned = tuple(
        PlannedStatistic(d, parse(d.filter, d.resource_type), found.get(d.window))
        for d in definitions(business_type)
    )
    types = tuple(dict.fromkeys(d.resource_type for d in definitions(business_type)))
    return StatisticsQuery(business_id, location_id, planned, types)
