"""Unit tests: ResourceService input validation (ids, catalog, documents, dates, masks, paging)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from simplu_grpc.domain.resources.catalog import KNOWN_RESOURCE_TYPES, catalog, require_known_type
from simplu_grpc.domain.resources.model import (
    NO_VERSION,
    OPEN_RANGE,
    ListQuery,
    NewResource,
    ResourceKey,
    SortKey,
    UpdatePlan,
    etag_for,
    expected_version,
    format_timestamp,
)
from simplu_grpc.domain.resources.validation import (
    UpdateRequest,
    validate_batch_names,
    validate_batch_shape,
    validate_list,
    validate_new,
    validate_tenant,
    validate_update,
)
from simplu_grpc.errors import InvalidArgument

LIMITS: dict[str, int] = {"max_bytes": 256 * 1024, "max_depth": 32}


def _nested(levels: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"leaf": 1}
    for _ in range(levels - 1):
        doc = {"k": doc}
    return doc


def _new(**overrides: Any) -> NewResource:
    args: dict[str, Any] = {
        "business_id": "biz1",
        "location_id": "loc-1",
        "resource_type": "patients",
        "business_type": "dental",
        "resource_id": "",
        "data": {"name": "Ana"},
        "start_time": None,
        "end_time": None,
        "request_id": "",
        **LIMITS,
    }
    args.update(overrides)
    return validate_new(**args)[0]


def _field(exc: pytest.ExceptionInfo[InvalidArgument]) -> str:
    return exc.value.violations[0].field


def test_catalog_is_package_data_with_common_names() -> None:
    """Each business type has its own names plus the common ones; the catalog is read from JSON."""
    by_type = catalog()
    assert {"dental", "gym", "hotel"} <= set(by_type)
    assert "patients" in by_type["dental"]
    assert "rooms" in by_type["hotel"]
    assert "members" in by_type["gym"]
    assert all("invoices" in names for names in by_type.values())
    assert "rooms" not in by_type["dental"]


def test_unknown_resource_type_for_the_type_is_rejected() -> None:
    """A hotel name on a dental business is INVALID_ARGUMENT naming resource_type."""
    with pytest.raises(InvalidArgument) as caught:
        _new(resource_type="rooms")
    assert _field(caught) == "resource.resource_type"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("business_id", "biz-1"),  # "-" is reserved for the Citrus key
        ("business_id", "x" * 65),
        ("location_id", "loc'; DROP TABLE resources; --"),
        ("location_id", ""),
        ("resource_id", "id with spaces"),
        ("resource_id", "é"),
    ],
)
def test_ids_follow_design_section_4(field: str, value: str) -> None:
    """Ids are 1-64 chars of [A-Za-z0-9_.:-]; business ids without "-" (the tenant ids are
    checked before authorisation by validate_tenant, the resource id by validate_new)."""
    tenant = {"business_id": "biz1", "location_id": "loc-1", field: value}

    def check() -> None:
        if field == "resource_id":
            _new(resource_id=value)
        else:
            validate_tenant(tenant["business_id"], tenant["location_id"])

    with pytest.raises(InvalidArgument):
        check()


def test_document_size_and_depth_are_bounded() -> None:
    """Data above the byte limit or nested deeper than the depth limit is refused; the limit itself passes."""
    with pytest.raises(InvalidArgument, match="bytes"):
        _new(data={"blob": "x" * (300 * 1024)})
    with pytest.raises(InvalidArgument, match="nested"):
        _new(data=_nested(40))
    assert _new(data=_nested(32)).data == _nested(32)


def test_values_postgres_cannot_store_are_refused() -> None:
    """NUL characters and non-finite numbers are INVALID_ARGUMENT rather than a shard error."""
    with pytest.raises(InvalidArgument):
        _new(data={"name": "a\x00b"})
    with pytest.raises(InvalidArgument):
        _new(data={"n": float("nan")})


def test_end_before_start_is_rejected() -> None:
    """end_time before start_time is INVALID_ARGUMENT on end_time."""
    with pytest.raises(InvalidArgument) as caught:
        _new(start_time=datetime(2026, 3, 2, tzinfo=UTC), end_time=datetime(2026, 3, 1, tzinfo=UTC))
    assert _field(caught) == "resource.end_time"


def test_format_timestamp_is_rfc3339_utc() -> None:
    """Output dates are RFC 3339 UTC with a Z."""
    assert format_timestamp(datetime(2026, 3, 1, 8, tzinfo=UTC)) == "2026-03-01T08:00:00Z"


def test_format_timestamp_writes_four_digit_years() -> None:
    """RFC 3339 wants four digits for the year: year 1 is 0001, not 1 (strftime's %Y on glibc)."""
    assert format_timestamp(datetime(1, 1, 1, tzinfo=UTC)) == "0001-01-01T00:00:00Z"
    assert format_timestamp(datetime(999, 12, 31, 23, 59, 59, 5, tzinfo=UTC)) == "0999-12-31T23:59:59.000005Z"


def _plan(
    paths: list[str],
    data: dict[str, Any] | None = None,
    etag: str = "",
    *,
    data_paths: list[str] | None = None,
    start_time: datetime | None = None,
) -> UpdatePlan:
    request = UpdateRequest(
        paths=paths,
        data_paths=data_paths or [],
        data=data or {},
        start_time=start_time,
        end_time=None,
        etag=etag,
    )
    return validate_update(request, **LIMITS)


def test_update_mask_paths_become_sets_and_removals() -> None:
    """data.<key> present in data is set, absent is removed; empty mask replaces the document."""
    plan = _plan(
        ["data.status", "data.patient.name", "data.gone"], {"status": "done", "patient": {"name": "B"}}
    )
    assert plan.set_paths == ((("status",), "done"), (("patient", "name"), "B"))
    assert plan.remove_paths == (("gone",),)
    assert plan.replace_data is None
    assert _plan([], {"a": 1}).replace_data == {"a": 1}


def test_an_empty_mask_updates_only_populated_fields_and_never_empties_data() -> None:
    """AIP-134: no mask and an empty document with no times is refused (nothing to update);
    no mask with only start_time set changes start_time and leaves the document alone."""
    with pytest.raises(InvalidArgument) as caught:
        _plan([], {})
    assert _field(caught) == "update_mask"
    start = datetime(2026, 3, 1, 9, tzinfo=UTC)
    plan = _plan([], {}, start_time=start)
    assert plan.replace_data is None
    assert plan.start_time == start
    assert plan.set_paths == ()
    assert plan.remove_paths == ()


def test_data_paths_are_json_pointers_for_any_key() -> None:
    """data_paths name keys with "_", capitals, "/" (~1) and "~" (~0) that a FieldMask cannot carry."""
    plan = _plan(
        [],
        {"first_name": "Ana", "contact": {"phoneNumber": "07"}, "a/b": 1, "t~x": 2},
        data_paths=["/first_name", "/contact/phoneNumber", "/a~1b", "/t~0x", "/gone_key"],
    )
    assert plan.set_paths == (
        (("first_name",), "Ana"),
        (("contact", "phoneNumber"), "07"),
        (("a/b",), 1),
        (("t~x",), 2),
    )
    assert plan.remove_paths == (("gone_key",),)


@pytest.mark.parametrize(
    ("paths", "data_paths"),
    [
        ([], ["status"]),
        ([], ["/a//b"]),
        ([], ["/a~2"]),
        ([], ["/a\x00"]),
        (["data.status"], ["/status"]),
        (["data"], ["/x"]),
        ([], ["/a", "/a/b"]),
    ],
)
def test_bad_data_paths_are_rejected(paths: list[str], data_paths: list[str]) -> None:
    """Not a pointer, empty or NUL keys, bad escapes, and overlaps with the mask are INVALID_ARGUMENT."""
    with pytest.raises(InvalidArgument) as caught:
        _plan(paths, {"a": {"b": 1}}, data_paths=data_paths)
    assert _field(caught).startswith("data_paths")


@pytest.mark.parametrize(
    "paths",
    [
        ["name"],
        ["data.x;drop"],
        ["data..x"],
        ["data", "data.x"],
        ["data.a", "data.a.b"],
        ["data.a", "data.a"],
    ],
)
def test_bad_update_masks_are_rejected(paths: list[str]) -> None:
    """Unknown, malformed, overlapping or duplicate paths are INVALID_ARGUMENT on update_mask."""
    with pytest.raises(InvalidArgument) as caught:
        _plan(paths)
    assert _field(caught).startswith("update_mask.paths")


def test_etag_parsing() -> None:
    """Our etags name a version; anything else names none (and will not match)."""
    assert _plan(["data"], etag=etag_for(7)).expected_version == 7
    assert _plan(["data"], etag="W/whatever").expected_version == NO_VERSION
    assert _plan(["data"], etag="").expected_version is None


def test_expected_version_is_one_rule_for_update_and_delete() -> None:
    """No etag: unconditional; our etag: its version; any other etag: a version no row has."""
    assert expected_version("") is None
    assert expected_version(etag_for(3)) == 3
    assert expected_version("v99999999999999999999") == NO_VERSION
    assert expected_version('"abc"') == NO_VERSION


def _list(**overrides: Any) -> ListQuery:
    args: dict[str, Any] = {
        "business_type": "dental",
        "business_id": "biz1",
        "location_id": "loc1",
        "resource_type": "appointments",
        "start_range": OPEN_RANGE,
        "overlaps": OPEN_RANGE,
        "data_contains": None,
        "order_by": "",
        "page_size": 0,
        **LIMITS,
    }
    args.update(overrides)
    return validate_list(**args)


def test_page_size_default_and_maximum() -> None:
    """page_size 0 is 50; above 1000 is coerced to 1000; negative is INVALID_ARGUMENT."""
    assert _list().page_size == 50
    assert _list(page_size=5000).page_size == 1000
    with pytest.raises(InvalidArgument):
        _list(page_size=-1)


def test_order_by_values() -> None:
    """Time columns and data key paths, ascending or desc, up to 3 keys; anything else is refused."""
    assert _list(order_by="update_time  DESC").order_by == (SortKey("update_time", True),)
    assert _list(order_by="data.last_name desc, start_time").order_by == (
        SortKey("data.last_name", True, ("last_name",)),
        SortKey("start_time", False),
    )
    for bad in (
        "data->>'x'; DROP TABLE resources",
        "data.a, data.b, data.c, start_time",
        "start_time, start_time desc",
        "data.a-b",
        "data.",
        "status",
        "start_time sideways",
    ):
        with pytest.raises(InvalidArgument) as caught:
            _list(order_by=bad)
        assert _field(caught) == "order_by"


def test_legacy_orderings_bind_page_tokens_as_before() -> None:
    """The four time orderings bind tokens by their old names, and no filter adds nothing, so
    tokens issued before filters and data orderings existed stay valid."""
    assert _list(order_by="start_time").binding()["o"] == "START_TIME"
    assert _list(order_by="update_time desc").binding()["o"] == "UPDATE_TIME_DESC"
    assert "q" not in _list().binding()
    assert (
        _list(filter_text='data.status = "x"').binding()["q"]
        != _list(filter_text='data.status = "y"').binding()["q"]
    )


def test_batch_limits() -> None:
    """BatchGet needs 1-100 keys."""
    key = ResourceKey("biz1", "loc1", "patients", "r1")
    with pytest.raises(InvalidArgument):
        validate_batch_shape("biz1", [])
    with pytest.raises(InvalidArgument):
        validate_batch_shape("biz1", [key] * 101)
    validate_batch_shape("biz1", [key] * 100)
    validate_batch_names("dental", [key] * 100)
    with pytest.raises(InvalidArgument) as caught:
        validate_batch_names("hotel", [key, key])
    assert _field(caught) == "keys[0].resource_type"


def test_known_names_are_the_union_of_every_catalog() -> None:
    """The pre-authorisation name check accepts a name of any business type, nothing else."""
    union: frozenset[str] = frozenset().union(*catalog().values())
    assert union == KNOWN_RESOURCE_TYPES
    assert require_known_type("rooms") == "rooms"
    with pytest.raises(InvalidArgument, match="any business type"):
        require_known_type("nonsense", "keys[3].resource_type")
