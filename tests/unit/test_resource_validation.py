"""Unit tests: ResourceService input validation (ids, catalog, documents, dates, masks, paging)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from simplu_grpc.domain import resources as rules
from simplu_grpc.errors import InvalidArgument

LIMITS: dict[str, int] = {"max_bytes": 256 * 1024, "max_depth": 32}


def _nested(levels: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"leaf": 1}
    for _ in range(levels - 1):
        doc = {"k": doc}
    return doc


def _new(**overrides: Any) -> rules.NewResource:
    args: dict[str, Any] = {
        "business_id": "biz1",
        "location_id": "loc-1",
        "resource_name": "patients",
        "business_type": "dental",
        "resource_id": "",
        "data": {"name": "Ana"},
        "start_date": "",
        "end_date": "",
        "request_id": "",
        **LIMITS,
    }
    args.update(overrides)
    return rules.validate_new(**args)[0]


def _field(exc: pytest.ExceptionInfo[InvalidArgument]) -> str:
    return exc.value.violations[0].field


def test_catalog_is_package_data_with_common_names() -> None:
    """Each business type has its own names plus the common ones; the catalog is read from JSON."""
    catalog = rules.catalog()
    assert {"dental", "gym", "hotel"} <= set(catalog)
    assert "patients" in catalog["dental"]
    assert "rooms" in catalog["hotel"]
    assert "members" in catalog["gym"]
    assert all("invoices" in names for names in catalog.values())
    assert "rooms" not in catalog["dental"]


def test_unknown_resource_name_for_the_type_is_rejected() -> None:
    """A hotel name on a dental business is INVALID_ARGUMENT naming resource_name."""
    with pytest.raises(InvalidArgument) as caught:
        _new(resource_name="rooms")
    assert _field(caught) == "resource.resource_name"


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
            rules.validate_tenant(tenant["business_id"], tenant["location_id"])

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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-01", datetime(2026, 3, 1, tzinfo=UTC)),
        ("2026-03-01T10:00:00+02:00", datetime(2026, 3, 1, 8, tzinfo=UTC)),
        ("2026-03-01T10:00:00Z", datetime(2026, 3, 1, 10, tzinfo=UTC)),
    ],
)
def test_iso_dates_are_parsed_to_utc(text: str, expected: datetime) -> None:
    """Dates and date-times with an offset are accepted and normalised to UTC."""
    assert rules.parse_date("start_date", text) == expected


@pytest.mark.parametrize(
    "text", ["2026-13-01", "yesterday", "2026-03-01T10:00:00", "1' OR '1'='1", "9" * 100]
)
def test_bad_dates_are_rejected(text: str) -> None:
    """Invalid dates, naive date-times and garbage are INVALID_ARGUMENT."""
    with pytest.raises(InvalidArgument):
        rules.parse_date("start_date", text)


def test_end_before_start_is_rejected() -> None:
    """end_date before start_date is INVALID_ARGUMENT on end_date."""
    with pytest.raises(InvalidArgument) as caught:
        _new(start_date="2026-03-02", end_date="2026-03-01")
    assert _field(caught) == "resource.end_date"


def test_format_timestamp_is_rfc3339_utc() -> None:
    """Output dates are RFC 3339 UTC with a Z."""
    assert rules.format_timestamp(datetime(2026, 3, 1, 8, tzinfo=UTC)) == "2026-03-01T08:00:00Z"


def test_format_timestamp_writes_four_digit_years() -> None:
    """RFC 3339 wants four digits for the year: year 1 is 0001, not 1 (strftime's %Y on glibc)."""
    assert rules.format_timestamp(datetime(1, 1, 1, tzinfo=UTC)) == "0001-01-01T00:00:00Z"
    assert (
        rules.format_timestamp(datetime(999, 12, 31, 23, 59, 59, 5, tzinfo=UTC))
        == "0999-12-31T23:59:59.000005Z"
    )


def _plan(paths: list[str], data: dict[str, Any] | None = None, etag: str = "") -> rules.UpdatePlan:
    return rules.validate_update(
        paths=paths, data=data or {}, start_date="", end_date="", etag=etag, **LIMITS
    )


def test_update_mask_paths_become_sets_and_removals() -> None:
    """data.<key> present in data is set, absent is removed; empty mask replaces the document."""
    plan = _plan(
        ["data.status", "data.patient.name", "data.gone"], {"status": "done", "patient": {"name": "B"}}
    )
    assert plan.set_paths == ((("status",), "done"), (("patient", "name"), "B"))
    assert plan.remove_paths == (("gone",),)
    assert plan.replace_data is None
    assert _plan([], {"a": 1}).replace_data == {"a": 1}


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
    assert _plan(["data"], etag=rules.etag_for(7)).expected_version == 7
    assert _plan(["data"], etag="W/whatever").expected_version == rules.NO_VERSION
    assert _plan(["data"], etag="").expected_version is None


def test_expected_version_is_one_rule_for_update_and_delete() -> None:
    """No etag: unconditional; our etag: its version; any other etag: a version no row has."""
    assert rules.expected_version("") is None
    assert rules.expected_version(rules.etag_for(3)) == 3
    assert rules.expected_version("v99999999999999999999") == rules.NO_VERSION
    assert rules.expected_version('"abc"') == rules.NO_VERSION


def _list(**overrides: Any) -> rules.ListQuery:
    args: dict[str, Any] = {
        "business_type": "dental",
        "business_id": "biz1",
        "location_id": "loc1",
        "resource_name": "appointments",
        "start_from": "",
        "start_to": "",
        "data_contains": None,
        "order_by": "",
        "page_size": 0,
        **LIMITS,
    }
    args.update(overrides)
    return rules.validate_list(**args)


def test_page_size_default_and_maximum() -> None:
    """page_size 0 is 50; above 1000 is coerced to 1000; negative is INVALID_ARGUMENT."""
    assert _list().page_size == 50
    assert _list(page_size=5000).page_size == 1000
    with pytest.raises(InvalidArgument):
        _list(page_size=-1)


def test_order_by_values() -> None:
    """Only start_date / update_time, ascending or desc, are accepted."""
    assert _list(order_by="update_time  DESC").order_by is rules.OrderBy.UPDATE_TIME_DESC
    with pytest.raises(InvalidArgument):
        _list(order_by="data->>'x'; DROP TABLE resources")


def test_batch_limits() -> None:
    """BatchGet needs 1-100 keys."""
    key = rules.ResourceKey("biz1", "loc1", "patients", "r1")
    with pytest.raises(InvalidArgument):
        rules.validate_batch_shape("biz1", [])
    with pytest.raises(InvalidArgument):
        rules.validate_batch_shape("biz1", [key] * 101)
    rules.validate_batch_shape("biz1", [key] * 100)
    rules.validate_batch_names("dental", [key] * 100)
    with pytest.raises(InvalidArgument) as caught:
        rules.validate_batch_names("hotel", [key, key])
    assert _field(caught) == "keys[0].resource_name"


def test_known_names_are_the_union_of_every_catalog() -> None:
    """The pre-authorisation name check accepts a name of any business type, nothing else."""
    union: frozenset[str] = frozenset().union(*rules.catalog().values())
    assert union == rules.KNOWN_RESOURCE_NAMES
    assert rules.require_known_name("rooms") == "rooms"
    with pytest.raises(InvalidArgument, match="any business type"):
        rules.require_known_name("nonsense", "keys[3].resource_name")
