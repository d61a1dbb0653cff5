"""The dashboard definitions and their local time windows."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from simplu_grpc.domain.resources import statistics as stats
from simplu_grpc.domain.resources.catalog import catalog
from simplu_grpc.domain.resources.filter_parser import parse


def test_windows_are_local_days_months_and_nights() -> None:
    """At 23:30 UTC on Dec 31 it is already Jan 1 in Bucharest: today, this month and
    tonight are January's, as local instants."""
    found = stats.windows(datetime(2026, 12, 31, 23, 30, tzinfo=UTC), "Europe/Bucharest")
    assert found["today"].start.astimezone(UTC) == datetime(2026, 12, 31, 22, 0, tzinfo=UTC)
    assert found["today"].end.astimezone(UTC) == datetime(2027, 1, 1, 22, 0, tzinfo=UTC)
    assert found["month"].start.astimezone(UTC) == datetime(2026, 12, 31, 22, 0, tzinfo=UTC)
    assert found["month"].end.astimezone(UTC) == datetime(2027, 1, 31, 22, 0, tzinfo=UTC)
    assert found["tonight"].start.astimezone(UTC) == datetime(2027, 1, 1, 16, 0, tzinfo=UTC)
    assert found["tonight"].end.astimezone(UTC) == datetime(2027, 1, 2, 8, 0, tzinfo=UTC)


def test_a_day_across_the_spring_change_is_23_hours() -> None:
    """March 29, 2026 in Bucharest is 23 hours long (DST starts)."""
    found = stats.windows(datetime(2026, 3, 29, 12, tzinfo=UTC), "Europe/Bucharest")
    day = found["today"]
    assert (day.end.astimezone(UTC) - day.start.astimezone(UTC)).total_seconds() == 23 * 3600


@pytest.mark.parametrize("business_type", ["dental", "gym", "hotel"])
def test_every_definition_names_a_catalog_type_and_a_valid_filter(business_type: str) -> None:
    """Each statistic of a type is over a resource type of its catalog, with a filter that parses."""
    definitions = stats.DEFINITIONS[business_type]
    assert stats.definitions(business_type) == definitions
    for definition in definitions:
        assert definition.resource_type in catalog()[business_type]
        parse(definition.filter, definition.resource_type)
        assert definition.window in ("", "today", "month", "tonight")
