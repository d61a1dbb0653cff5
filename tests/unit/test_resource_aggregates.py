"""AggregateResources validation: group keys, value field, limits and the time zone rule."""

from __future__ import annotations

import pytest

from simplu_grpc.domain.resources import aggregates as agg
from simplu_grpc.errors import FailedPrecondition, InvalidArgument


def _query(**overrides: object) -> agg.AggregateQuery:
    args: dict[str, object] = {
        "business_type": "dental",
        "business_id": "b1",
        "location_id": "main",
        "resource_type": "appointments",
        "filter_text": "",
        "value_field": "",
        "group_by": [],
        "max_groups": 0,
        "zone": "UTC",
        **overrides,
    }
    return agg.validate_aggregate(**args)  # type: ignore[arg-type]


def test_group_keys_parse_into_data_and_time_groups() -> None:
    """data paths and <time>:<day|week|month> become typed keys; the default limit is 100."""
    query = _query(group_by=["data.patient.city", "create_time:week"], value_field="data.price")
    assert query.group_by == (agg.DataGroup(("patient", "city")), agg.TimeGroup("create_time", "week"))
    assert query.value_path == ("price",)
    assert query.max_groups == agg.DEFAULT_MAX_GROUPS
    assert _query(max_groups=5000).max_groups == agg.MAX_GROUPS


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"group_by": ["data.a", "data.b", "data.c"]}, "group_by"),
        ({"group_by": ["data.a", "data.a"]}, "group_by"),
        ({"group_by": ["start_time:year"]}, "group_by[0]"),
        ({"group_by": ["data.a-b"]}, "group_by[0]"),
        ({"value_field": "price"}, "value_field"),
        ({"value_field": "data."}, "value_field"),
        ({"max_groups": -1}, "max_groups"),
        ({"filter_text": "data.a = "}, "filter"),
        ({"resource_type": "rooms"}, "resource_type"),
    ],
)
def test_bad_requests_name_their_field(overrides: dict[str, object], field: str) -> None:
    """Each malformed part is INVALID_ARGUMENT on its own field."""
    with pytest.raises(InvalidArgument) as caught:
        _query(**overrides)
    assert [v.field for v in caught.value.violations] == [field]


def test_time_zone_is_the_locations_then_the_business_then_utc() -> None:
    """The first zone set wins; none is UTC; an unknown name is FAILED_PRECONDITION."""
    assert agg.time_zone("Europe/Bucharest", "America/New_York") == "Europe/Bucharest"
    assert agg.time_zone("", "America/New_York") == "America/New_York"
    assert agg.time_zone("", "") == "UTC"
    with pytest.raises(FailedPrecondition):
        agg.time_zone("Mars/Olympus_Mons")
    with pytest.raises(FailedPrecondition):
        agg.time_zone("../../etc/passwd")
