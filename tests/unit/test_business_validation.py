"""Business validation: ids, names, enums, locations, contact fields, time zones, sizes."""

from __future__ import annotations

import pytest

from simplu_grpc.domain.business.model import (
    Business,
    BusinessSettings,
    BusinessType,
    Location,
    Member,
    Permissions,
    Role,
    WorkingHours,
)
from simplu_grpc.domain.business.validation import (
    PAGE_SIZE_DEFAULT,
    PAGE_SIZE_MAX,
    SETTINGS_MAX_BYTES,
    check_new_business,
    is_timezone,
    page_size,
)
from simplu_grpc.domain.checks import Violations, check_business_id, check_id, has_control_characters
from simplu_grpc.errors import InvalidArgument


def violations_of(business: Business) -> dict[str, str]:
    v = Violations()
    check_new_business(v, "business", business)
    return {item.field: item.description for item in v.items}


def valid() -> Business:
    return Business(
        id="",
        name="Smile Clinic",
        type=BusinessType.DENTAL,
        locations=(
            Location(
                id="main",
                name="Main",
                address="Str. Lunga 1, Brasov",
                phone="+40 268 123 456",
                email="front@smile.example",
                timezone="Europe/Bucharest",
            ),
        ),
        settings=BusinessSettings(
            currency="RON",
            language="ro-RO",
            timezone="Europe/Bucharest",
            working_hours=(
                WorkingHours(day=1, open="08:00", close="18:00"),
                WorkingHours(day=7, closed=True),
            ),
            features={"sms_reminders": True},
            extras={"note": "ok", "n": 1.5},
        ),
        permissions=Permissions(
            roles={"desk": Role(permissions=("appointments:read", "patients:*"))},
            members={"sub-1": Member(role="desk", location_ids=("main",))},
        ),
    )


def test_a_valid_business_has_no_violations() -> None:
    """The happy path: nothing to report."""
    assert violations_of(valid()) == {}


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("abc", True),
        ("A.b:c_1", True),
        ("a-b", False),
        ("", False),
        ("x" * 64, True),
        ("x" * 65, False),
        ("a b", False),
        ("a/b", False),
        ("é", False),
        ("a#b", False),
    ],
)
def test_business_ids(value: str, ok: bool) -> None:
    """Business ids: 1-64 of [A-Za-z0-9_.:], never '-' (it splits the Citrus key)."""
    v = Violations()
    check_business_id(v, "business_id", value)
    assert (not v) is ok


def test_location_ids_may_contain_dashes() -> None:
    """Location ids follow DESIGN §4 and may contain '-'."""
    v = Violations()
    check_id(v, "id", "loc-1")
    assert not v


def test_hostile_strings_are_reported_per_field() -> None:
    """Long names, control characters, bad email/phone/zone and duplicate location ids: one violation each."""
    business = valid()
    bad = Business(
        id="",
        name="x" * 5000,
        type=BusinessType.GYM,
        locations=(
            Location(
                id="a", name="ok\x00evil", email="not-an-email", phone="call me", timezone="Mars/Olympus"
            ),
            Location(id="a", name="dup"),
            Location(id="b\n", name="  "),
        ),
        settings=business.settings,
        permissions=business.permissions,
    )
    found = violations_of(bad)
    assert "business.name" in found
    assert found["business.locations[0].name"] == "must not contain control characters"
    assert "business.locations[0].email" in found
    assert "business.locations[0].phone" in found
    assert "business.locations[0].timezone" in found
    assert "duplicate" in found["business.locations[1].id"]
    assert "business.locations[2].id" in found
    assert found["business.locations[2].name"] == "is required"


def test_timezones_are_real_iana_zones() -> None:
    """Zone names come from the IANA database; paths and made-up names are not zones."""
    assert is_timezone("Europe/Bucharest")
    assert is_timezone("UTC")
    assert not is_timezone("../../etc/passwd")
    assert not is_timezone("Mars/Olympus")


def test_control_characters() -> None:
    """C0/C1 controls, line separators and bidi overrides count as control characters."""
    assert has_control_characters("a\tb")
    assert has_control_characters("a\u202eb")
    assert has_control_characters("a\x85b")
    assert not has_control_characters("Zâmbet 😀 & Co.")


def test_settings_size_is_bounded() -> None:
    """Settings larger than 64 KiB serialized are rejected as a whole."""
    big = BusinessSettings(extras={"blob": "x" * (SETTINGS_MAX_BYTES + 1)})
    business = Business(id="", name="n", type=BusinessType.HOTEL, settings=big)
    assert "bytes serialized" in violations_of(business)["business.settings"]


def test_settings_fields() -> None:
    """Currency, language, working-hour times and feature names are checked."""
    settings = BusinessSettings(
        currency="euro",
        language="!!",
        working_hours=(WorkingHours(day=9, open="25:00", close="10:00"),),
        features={"bad name": True},
    )
    found = violations_of(Business(id="", name="n", type=BusinessType.GYM, settings=settings))
    assert {
        "business.settings.currency",
        "business.settings.language",
        "business.settings.working_hours[0].day",
        "business.settings.working_hours[0].open_time",
        "business.settings.features",
    } <= set(found)


def test_permissions_grammar_and_references() -> None:
    """Permission strings follow the grammar; members name existing roles and locations."""
    perms = Permissions(
        roles={"desk": Role(permissions=("appointments:read", "drop table", "patients:write"))},
        members={"sub-1": Member(role="ghost", location_ids=("nowhere",)), "bad sub!": Member(role="desk")},
    )
    found = violations_of(Business(id="", name="n", type=BusinessType.GYM, permissions=perms))
    assert "business.permissions.roles['desk'].permissions[1]" in found
    assert "business.permissions.roles['desk'].permissions[2]" in found
    assert "business.permissions.members['bad sub!']" in found


def test_member_references_checked_once_shapes_are_valid() -> None:
    """An undefined role or a location outside the business is reported on the member."""
    perms = Permissions(
        roles={"desk": Role(permissions=("members:read",))},
        members={"s": Member(role="ghost", location_ids=("zz",))},
    )
    found = violations_of(Business(id="", name="n", type=BusinessType.GYM, permissions=perms))
    assert "business.permissions.members['s'].role" in found
    assert "business.permissions.members['s'].location_ids[0]" in found


def test_raise_if_any_carries_every_violation() -> None:
    """One INVALID_ARGUMENT lists all violations; its message names the first."""
    v = Violations()
    v.add("a", "bad")
    v.add("b", "worse")
    with pytest.raises(InvalidArgument) as raised:
        v.raise_if_any()
    assert [f.field for f in raised.value.violations] == ["a", "b"]
    assert raised.value.message.startswith("a: bad")


def test_page_size_rules() -> None:
    """0 means the default, too large is coerced to the maximum, negative is an error."""
    v = Violations()
    assert page_size(v, "page_size", 0) == PAGE_SIZE_DEFAULT
    assert page_size(v, "page_size", 10**6) == PAGE_SIZE_MAX
    assert not v
    page_size(v, "page_size", -1)
    assert v


def test_an_undefined_working_day_is_one_violation() -> None:
    """A working-hours day outside MONDAY..SUNDAY coming off the wire is reported once (by the domain
    check), not once by the proto conversion and again by the domain."""
    from google.type import timeofday_pb2
    from simplu.v1 import business_pb2

    from simplu_grpc.domain.business.validation import check_settings
    from simplu_grpc.services.business_proto import settings_from_proto

    v = Violations()
    pb = business_pb2.BusinessSettings(
        working_hours=[
            business_pb2.WorkingHours(
                day=99,  # type: ignore[arg-type]  # an undefined enum number on purpose
                open_time=timeofday_pb2.TimeOfDay(hours=8),
                close_time=timeofday_pb2.TimeOfDay(hours=10),
            )
        ]
    )
    settings = settings_from_proto(v, "settings", pb)
    check_settings(v, "settings", settings)
    found = [item for item in v.items if item.field == "settings.working_hours[0].day"]
    assert len(found) == 1
    assert "99" in found[0].description
    assert len(v.items) == 1


@pytest.mark.parametrize(
    "value", ["a", "a-b", "a.b:c_d", "x" * 64, "x" * 65, "a b", "a/b", "ä", "a\n", "-", "a-"]
)
def test_business_and_resource_id_rules_agree(value: str) -> None:
    """BusinessService and ResourceService accept exactly the same location and business ids (DESIGN §4)."""
    from simplu_grpc.domain.resources.validation import validate_tenant

    for business in (False, True):
        v = Violations()
        (check_business_id if business else check_id)(v, "id", value)
        try:
            if business:
                validate_tenant(value, "location")
            else:
                validate_tenant("business", value)
            resource_ok = True
        except InvalidArgument:
            resource_ok = False
        assert (not v) == resource_ok, (value, business)
