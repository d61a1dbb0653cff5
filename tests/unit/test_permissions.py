"""Permission strings: grammar, what grants what, legacy reading, and the catalog's name rule."""

from __future__ import annotations

import pytest

from simplu_grpc.domain.auth import permissions as perm
from simplu_grpc.domain.resources.catalog import catalog, parse_catalog

GYM = catalog()["gym"]
DENTAL = catalog()["dental"]


def test_every_catalog_type_is_grantable_and_none_can_take_an_administration_string() -> None:
    """Each type of each business type (hyphenated ones included) is a valid permission subject;
    no type contains the "." or ":" an administration string needs."""
    for types in catalog().values():
        for name in types:
            for action in (*perm.ACTIONS, "*"):
                assert perm.permission_problem(f"{name}:{action}", types) is None, name
            assert "." not in name
            assert ":" not in name
            assert perm.admin_area(f"{name}:read") is None


def test_administration_strings_are_their_own_namespace() -> None:
    """A gym's members:update is about records; it never grants admin.members:update, and back."""
    assert not perm.grants(("members:update",), perm.MEMBERS_UPDATE)
    assert not perm.grants((perm.MEMBERS_UPDATE,), "members:update")
    assert perm.grants(("admin.members:*",), perm.MEMBERS_DELETE)
    assert perm.grants(("*",), perm.MEMBERS_UPDATE)
    assert not perm.grants((perm.MEMBERS_UPDATE,), perm.ALL_PERMISSIONS)
    assert perm.grants(("treatment-plans:*",), "treatment-plans:delete")


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("members:update", "admin.members:update"),  # dental: no members type, a bare admin string
        ("admin.roles:update", "administration areas"),
        ("rooms:read", "not a resource type"),
        ("patients:list", "must be"),
        ("patients", "must be"),
        ("", "must be"),
    ],
)
def test_invalid_strings_say_what_is_wrong(value: str, fragment: str) -> None:
    """Each refused string gets a reason naming what would be right."""
    problem = perm.permission_problem(value, DENTAL)
    assert problem is not None
    assert fragment in problem


def test_legacy_strings_become_administration_only_where_the_catalog_has_no_such_type() -> None:
    """members:update in a dental role is member administration; in a gym role it stays the
    gym-member records permission; other strings are kept; reading twice changes nothing."""
    stored = ("patients:read", "members:update", "locations:create", "business:update", "settings:*")
    dental = perm.upgrade_legacy(stored, DENTAL)
    assert dental == (
        "patients:read",
        "admin.members:update",
        "admin.locations:create",
        "admin.business:update",
        "admin.settings:*",
    )
    assert perm.upgrade_legacy(dental, DENTAL) == dental
    gym = perm.upgrade_legacy(("members:update", "locations:update"), GYM)
    assert gym == ("members:update", "admin.locations:update")


def test_a_catalog_name_outside_the_rule_is_refused_at_load() -> None:
    """Names must be lowercase words joined by "-": a "." or ":" could collide with admin strings."""
    assert parse_catalog({"_comment": "x", "common": ["clients"], "gym": ["check-ins"]}) == {
        "gym": frozenset({"clients", "check-ins"})
    }
    for bad in ("admin.members", "a:b", "Rooms", "room_types", "-x", "x-", ""):
        with pytest.raises(ValueError, match="lowercase words"):
            parse_catalog({"common": [], "gym": [bad]})
