"""Authorizer: admins, machine scopes, members by role and location; permission before existence."""

from __future__ import annotations

import pytest

from simplu_grpc.domain.auth.authz import (
    SCOPE_ADMIN,
    SCOPE_BUSINESSES_READ,
    SCOPE_BUSINESSES_WRITE,
    SCOPE_RESOURCES_READ,
    SCOPE_RESOURCES_WRITE,
    Authorizer,
)
from simplu_grpc.domain.auth.permissions import grants
from simplu_grpc.domain.auth.principal import Principal
from simplu_grpc.domain.business.model import (
    Business,
    BusinessStatus,
    BusinessType,
    Location,
    Member,
    Permissions,
    Role,
)
from simplu_grpc.errors import FailedPrecondition, NotFound, PermissionDenied

AUTHZ = Authorizer(admin_group="admin")


def person(sub: str, *groups: str) -> Principal:
    return Principal(
        subject=sub, username=f"u-{sub}", token_use="access", client_id="app", groups=frozenset(groups)
    )


def machine(*scopes: str) -> Principal:
    return Principal(
        subject="svc", username="", token_use="access", client_id="svc", scopes=frozenset(scopes)
    )


def clinic(status: BusinessStatus = BusinessStatus.ACTIVE) -> Business:
    return Business(
        id="clinic1",
        name="Clinic",
        type=BusinessType.DENTAL,
        locations=(
            Location(id="L1", name="One"),
            Location(id="L2", name="Two"),
            Location(id="L3", name="Off", active=False),
        ),
        permissions=Permissions(
            roles={
                "owner": Role(permissions=("*",)),
                "reception": Role(permissions=("appointments:read", "appointments:create", "patients:*")),
                "manager": Role(
                    permissions=("admin.business:update", "admin.locations:update", "admin.members:update")
                ),
            },
            members={
                "owner-sub": Member(role="owner"),
                "desk-sub": Member(role="reception", location_ids=("L1",)),
                "mgr-sub": Member(role="manager"),
                "mgr-l1": Member(role="manager", location_ids=("L1",)),
            },
        ),
        owner="owner-sub",
        status=status,
    )


def test_grants_matches_exact_wildcard_resource_and_star() -> None:
    """A permission string grants its own action, "<resource>:*" every action, "*" everything."""
    assert grants(("appointments:read",), "appointments:read")
    assert not grants(("appointments:read",), "appointments:update")
    assert grants(("patients:*",), "patients:delete")
    assert grants(("*",), "anything:delete")
    assert not grants((), "patients:read")


def test_admin_group_and_admin_scope_are_platform_admins() -> None:
    """The admin group (people) or the simplu/admin scope (machines) passes require_admin."""
    AUTHZ.require_admin(person("a", "admin"))
    AUTHZ.require_admin(machine(SCOPE_ADMIN))
    with pytest.raises(PermissionDenied):
        AUTHZ.require_admin(person("b"))
    with pytest.raises(PermissionDenied):
        AUTHZ.require_admin(machine(SCOPE_RESOURCES_WRITE, SCOPE_BUSINESSES_WRITE))


def test_person_scopes_grant_nothing() -> None:
    """A person's token carrying simplu scopes is still only a member (no scope-based access)."""
    someone = Principal(
        subject="x", username="x", token_use="access", client_id="app", scopes=frozenset({SCOPE_ADMIN})
    )
    with pytest.raises(PermissionDenied):
        AUTHZ.require_admin(someone)
    with pytest.raises(PermissionDenied):
        AUTHZ.require_business_read(someone, clinic(), "clinic1")


def test_non_member_is_denied_whether_or_not_the_business_exists() -> None:
    """Permission before existence: a stranger gets the same PERMISSION_DENIED for real and missing ids."""
    stranger = person("stranger")
    with pytest.raises(PermissionDenied) as real:
        AUTHZ.require_business_read(stranger, clinic(), "clinic1")
    with pytest.raises(PermissionDenied) as missing:
        AUTHZ.require_business_read(stranger, None, "clinic1")
    assert str(real.value) == str(missing.value)
    assert real.value.reason == missing.value.reason == "NOT_A_MEMBER"
    with pytest.raises(PermissionDenied):
        AUTHZ.require_resource(
            stranger, None, "clinic1", location_id="L1", resource_type="patients", action="read"
        )


def test_admin_gets_not_found_for_missing_and_sees_deleted() -> None:
    """Admins pass the permission check, so a missing business is NOT_FOUND; a deleted one is visible."""
    admin = person("root", "admin")
    with pytest.raises(NotFound):
        AUTHZ.require_business_read(admin, None, "nope")
    assert AUTHZ.require_business_read(admin, clinic(BusinessStatus.DELETED), "clinic1").id == "clinic1"
    with pytest.raises(FailedPrecondition):
        AUTHZ.require_business_write(
            admin, clinic(BusinessStatus.DELETED), "clinic1", "admin.business:update"
        )


def test_members_of_a_deleted_business_get_not_found() -> None:
    """After a soft delete its members are told NOT_FOUND for reads and writes."""
    with pytest.raises(NotFound):
        AUTHZ.require_business_read(person("owner-sub"), clinic(BusinessStatus.DELETED), "clinic1")
    with pytest.raises(NotFound):
        AUTHZ.require_business_write(person("owner-sub"), clinic(BusinessStatus.DELETED), "clinic1", "*")


def test_a_deleted_business_is_the_same_answer_for_resources_as_for_business_writes() -> None:
    """One rule for every service: members NOT_FOUND, admins FAILED_PRECONDITION (BUSINESS_DELETED)."""
    gone = clinic(BusinessStatus.DELETED)
    admin = person("root", "admin")
    with pytest.raises(FailedPrecondition) as for_admin:
        AUTHZ.require_resource(
            admin, gone, "clinic1", location_id="L1", resource_type="patients", action="read"
        )
    assert for_admin.value.reason == "BUSINESS_DELETED"
    with pytest.raises(NotFound) as for_owner:
        AUTHZ.require_resource(
            person("owner-sub"), gone, "clinic1", location_id="L1", resource_type="patients", action="read"
        )
    assert for_owner.value.reason == "BUSINESS_NOT_FOUND"


def test_role_without_update_can_read_but_not_update() -> None:
    """A role lacking appointments:update may read appointments but not update them."""
    desk = person("desk-sub")
    _, location = AUTHZ.require_resource(
        desk, clinic(), "clinic1", location_id="L1", resource_type="appointments", action="read"
    )
    assert location.id == "L1"
    with pytest.raises(PermissionDenied) as denied:
        AUTHZ.require_resource(
            desk, clinic(), "clinic1", location_id="L1", resource_type="appointments", action="update"
        )
    assert denied.value.reason == "MISSING_PERMISSION"


def test_location_limited_member_cannot_touch_other_locations() -> None:
    """A member limited to L1 is denied in L2, and in a location that does not exist."""
    desk = person("desk-sub")
    for location_id in ("L2", "L9"):
        with pytest.raises(PermissionDenied) as denied:
            AUTHZ.require_resource(
                desk, clinic(), "clinic1", location_id=location_id, resource_type="patients", action="read"
            )
        assert denied.value.reason == "LOCATION_NOT_ALLOWED"


def test_business_wide_changes_need_an_all_locations_membership() -> None:
    """admin.business:update granted to a location-limited member still cannot change the whole business."""
    AUTHZ.require_business_write(person("mgr-sub"), clinic(), "clinic1", "admin.business:update")
    with pytest.raises(PermissionDenied):
        AUTHZ.require_business_write(person("mgr-l1"), clinic(), "clinic1", "admin.business:update")
    AUTHZ.require_business_write(
        person("mgr-l1"), clinic(), "clinic1", "admin.locations:update", location_id="L1"
    )
    with pytest.raises(PermissionDenied):
        AUTHZ.require_business_write(
            person("mgr-l1"), clinic(), "clinic1", "admin.locations:update", location_id="L2"
        )


def test_owner_only_actions_need_star() -> None:
    """ "*"-only actions (delete, roles) pass for the owner role and fail for a role without "*"."""
    AUTHZ.require_business_write(person("owner-sub"), clinic(), "clinic1", "*")
    with pytest.raises(PermissionDenied):
        AUTHZ.require_business_write(person("mgr-sub"), clinic(), "clinic1", "*")


def test_inactive_location_and_missing_location_after_permission() -> None:
    """Allowed callers learn that a location is missing (NOT_FOUND) or inactive (FAILED_PRECONDITION)."""
    owner = person("owner-sub")
    with pytest.raises(NotFound):
        AUTHZ.require_resource(
            owner, clinic(), "clinic1", location_id="L9", resource_type="patients", action="read"
        )
    with pytest.raises(FailedPrecondition):
        AUTHZ.require_resource(
            owner, clinic(), "clinic1", location_id="L3", resource_type="patients", action="read"
        )


def test_machine_scopes() -> None:
    """businesses.read reads but cannot write; resources.read reads resources only; write implies read."""
    reader = machine(SCOPE_BUSINESSES_READ)
    assert AUTHZ.require_business_read(reader, clinic(), "clinic1").id == "clinic1"
    with pytest.raises(PermissionDenied) as denied:
        AUTHZ.require_business_write(reader, clinic(), "clinic1", "admin.business:update")
    assert denied.value.reason == "MISSING_SCOPE"
    with pytest.raises(PermissionDenied):
        AUTHZ.may_create_business(reader)
    AUTHZ.may_create_business(machine(SCOPE_BUSINESSES_WRITE))
    resources_reader = machine(SCOPE_RESOURCES_READ)
    AUTHZ.require_resource(
        resources_reader, clinic(), "clinic1", location_id="L2", resource_type="patients", action="read"
    )
    with pytest.raises(PermissionDenied):
        AUTHZ.require_resource(
            resources_reader, clinic(), "clinic1", location_id="L2", resource_type="patients", action="create"
        )
    AUTHZ.require_resource(
        machine(SCOPE_RESOURCES_WRITE),
        clinic(),
        "clinic1",
        location_id="L2",
        resource_type="x",
        action="read",
    )
    with pytest.raises(PermissionDenied):
        AUTHZ.require_business_read(resources_reader, clinic(), "clinic1")


def test_access_describes_members_admins_and_strangers() -> None:
    """access() answers role, permissions and locations for members; nothing for strangers."""
    desk = AUTHZ.access(person("desk-sub"), clinic())
    assert desk.role == "reception"
    assert desk.location_ids == ("L1",)
    assert not desk.all_locations
    assert "patients:*" in desk.permissions
    assert AUTHZ.access(person("stranger"), clinic()).permissions == ()
    admin = AUTHZ.access(person("root", "admin"), None)
    assert admin.platform_admin
    assert admin.all_locations
    reader = AUTHZ.access(machine(SCOPE_RESOURCES_READ), clinic())
    assert reader.permissions == ("*:read",)
