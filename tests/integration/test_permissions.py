"""Permissions end to end (issue 17, item 8): the server wired as in production (wiring.build_deps)
with moto DynamoDB, the Citrus emulator on PostgreSQL, signed tokens and a real channel.

- administration has its own namespace: a gym role holding ``members:update`` on gym-member
  records cannot administer members; roles stored with the old bare strings are read safely;
- hyphenated catalog types (``treatment-plans``, ``check-ins``) are grantable and work;
- a replayed ``request_id`` answers only the caller who sent it;
- members who may not see members do not see other members' Cognito subs.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import boto3
import grpc
import pytest
from google.protobuf import field_mask_pb2
from grpc_status import rpc_status
from simplu.v1 import business_pb2 as pb
from simplu.v1 import resource_pb2

from simplu_grpc.adapters.dynamodb.business_store import BusinessStore
from simplu_grpc.devstack.citrus_emulator import CitrusEmulator
from simplu_grpc.devstack.moto_server import MotoServer, client, create_business_table
from simplu_grpc.domain.business.model import Business, BusinessType, Location, Member, Permissions, Role
from simplu_grpc.interceptors.errors import error_info_of, violations_of
from simplu_grpc.metrics import Metrics
from tests.fixtures.citrus import CITRUS_API_KEY
from tests.fixtures.server import MakeServer, RunningServer
from tests.fixtures.tokens import LocalIssuer

pytestmark = pytest.mark.integration

REGION = "us-east-1"
Metadata = tuple[tuple[str, str], ...]


class Stack:
    """A wired server, its business table, and people with signed tokens."""

    def __init__(self, server: RunningServer, table: str, moto_url: str, issuer: LocalIssuer) -> None:
        self.server = server
        self.table = table
        self.moto_url = moto_url
        self._issuer = issuer

    def person(self) -> tuple[str, Metadata]:
        sub = str(uuid.uuid4())
        token = self._issuer.user_token(sub=sub, username=f"user-{sub[:8]}")
        return sub, (("authorization", f"Bearer {token}"),)

    def store(self) -> BusinessStore:
        return BusinessStore(
            table=self.table, client=client("dynamodb", self.moto_url, REGION), metrics=Metrics()
        )

    def items(self) -> list[dict[str, Any]]:
        """Every item of the business table: the ground truth for "nothing changed"."""
        dynamodb = boto3.client(
            "dynamodb",
            region_name=REGION,
            endpoint_url=self.moto_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        try:
            items = dynamodb.scan(TableName=self.table, ConsistentRead=True)["Items"]
        finally:
            dynamodb.close()
        return sorted(items, key=lambda item: item["id"]["S"])

    def create_business(
        self,
        owner: Metadata,
        business_type: int,
        roles: dict[str, Sequence[str]],
        *,
        locations: Sequence[str] = ("main",),
    ) -> pb.Business:
        business = pb.Business(
            name="Test",
            type=business_type,
            locations=[pb.Location(id=loc, name=loc) for loc in locations],
            permissions=pb.BusinessPermissions(
                roles={name: pb.Role(permissions=list(perms)) for name, perms in roles.items()}
            ),
        )
        created = self.server.business.CreateBusiness(
            pb.CreateBusinessRequest(business=business), metadata=owner, timeout=20
        )
        return created.business

    def set_member(
        self, caller: Metadata, business_id: str, sub: str, role: str, locations: Sequence[str] = ()
    ) -> pb.Business:
        return self.server.business.SetMember(
            pb.SetMemberRequest(
                business_id=business_id,
                member=sub,
                membership=pb.Member(role=role, location_ids=list(locations)),
            ),
            metadata=caller,
            timeout=10,
        )

    def get_business(self, caller: Metadata, business_id: str) -> pb.Business:
        return self.server.business.GetBusiness(
            pb.GetBusinessRequest(business_id=business_id), metadata=caller, timeout=10
        )

    def create_resource(
        self,
        caller: Metadata,
        business_id: str,
        resource_type: str,
        data: dict[str, Any],
        *,
        request_id: str = "",
    ) -> resource_pb2.Resource:
        resource = resource_pb2.Resource(
            business_id=business_id, location_id="main", resource_type=resource_type
        )
        resource.data.update(data)
        return self.server.resource.CreateResource(
            resource_pb2.CreateResourceRequest(resource=resource, request_id=request_id),
            metadata=caller,
            timeout=20,
        )


@pytest.fixture
def stack(
    make_server: MakeServer, moto_server: MotoServer, citrus: CitrusEmulator, local_issuer: LocalIssuer
) -> Stack:
    table = f"biz-{secrets.token_hex(4)}"
    create_business_table(moto_server.url, REGION, table)
    server = make_server(
        dynamodb_endpoint=moto_server.url,
        dynamodb_business_info_table=table,
        citrus_server_url=citrus.url,
        citrus_api_key=CITRUS_API_KEY,
    )
    return Stack(server, table, moto_server.url, local_issuer)


def rpc_error(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value


def reason_and_metadata(error: grpc.RpcError) -> tuple[str, dict[str, str]]:
    status = rpc_status.from_call(error)
    assert status is not None, f"{error.code()} without rich details: {error.details()}"
    info = error_info_of(status)
    assert info is not None
    return str(info.reason), dict(info.metadata)


def violations(error: grpc.RpcError) -> dict[str, str]:
    status = rpc_status.from_call(error)
    assert status is not None
    return dict(violations_of(status))


# --- 8a: administration is not a catalog permission ------------------------------------------


def test_gym_role_on_member_records_cannot_administer_the_business(stack: Stack) -> None:
    """A gym coach with members:* works on gym-member records, yet cannot add anyone to the
    business nor change or remove memberships; admin.members:update can, within the caller's role."""
    _, owner = stack.person()
    coach_sub, coach = stack.person()
    desk_sub, _ = stack.person()
    manager_sub, manager = stack.person()
    stranger_sub, _ = stack.person()
    roles = {"coach": ["members:*", "classes:read"], "front-desk": ["members:read"]}
    business = stack.create_business(owner, pb.BUSINESS_TYPE_GYM, roles)
    stack.set_member(owner, business.id, coach_sub, "coach")
    stack.set_member(owner, business.id, desk_sub, "front-desk")

    # The coach's members:* is about gym-member records: those work.
    record = stack.create_resource(coach, business.id, "members", {"name": "Ana", "plan": "gold"})
    assert record.resource_type == "members"

    # ...and grants no administration: adding a member or changing one is refused, nothing changes.
    before = stack.items()
    for sub, role in ((stranger_sub, "front-desk"), (stranger_sub, "coach"), (desk_sub, "coach")):
        error = rpc_error(lambda sub=sub, role=role: stack.set_member(coach, business.id, sub, role))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert reason_and_metadata(error) == ("MISSING_PERMISSION", {"permission": "admin.members:update"})
    removed = rpc_error(
        lambda: stack.server.business.RemoveMember(
            pb.RemoveMemberRequest(business_id=business.id, member=desk_sub), metadata=coach, timeout=10
        )
    )
    assert removed.code() == grpc.StatusCode.PERMISSION_DENIED
    assert stack.items() == before

    # The administration string does administer members (a role within the manager's own).
    stack.server.business.UpdateBusiness(
        pb.UpdateBusinessRequest(
            business=pb.Business(
                id=business.id,
                permissions=pb.BusinessPermissions(
                    roles={
                        "owner": pb.Role(permissions=["*"]),
                        **{name: pb.Role(permissions=perms) for name, perms in roles.items()},
                        "manager": pb.Role(permissions=["admin.members:update", "members:read"]),
                    }
                ),
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["permissions.roles"]),
        ),
        metadata=owner,
        timeout=10,
    )
    stack.set_member(owner, business.id, manager_sub, "manager")
    added = stack.set_member(manager, business.id, stranger_sub, "front-desk")
    assert added.permissions.members[stranger_sub].role == "front-desk"


def test_roles_stored_with_the_old_administration_strings_are_read_safely(stack: Stack) -> None:
    """Roles written before the admin. namespace: a dental "members:update" (no such catalog type)
    still administers members and is shown as admin.members:update; a gym "members:update"
    (gym-member records) does not administer anything."""
    owner_sub, owner = stack.person()
    desk_sub, desk = stack.person()
    coach_sub, coach = stack.person()
    newcomer_sub, _ = stack.person()
    store = stack.store()

    def legacy(business_type: BusinessType, member: str, role: str, perms: tuple[str, ...]) -> Business:
        business = Business(
            id=f"legacy{secrets.token_hex(5)}",
            name="Legacy",
            type=business_type,
            locations=(Location(id="main", name="Main"),),
            owner=owner_sub,
            permissions=Permissions(
                roles={"owner": Role(permissions=("*",)), role: Role(permissions=perms)},
                members={owner_sub: Member(role="owner"), member: Member(role=role)},
            ),
        )
        return store.create(business).business

    dental = legacy(BusinessType.DENTAL, desk_sub, "desk", ("patients:read", "members:update", "locations:*"))
    gym = legacy(BusinessType.GYM, coach_sub, "coach", ("members:update", "members:read"))

    seen = stack.get_business(owner, dental.id)
    assert list(seen.permissions.roles["desk"].permissions) == [
        "patients:read",
        "admin.members:update",
        "admin.locations:*",
    ]
    assert (
        stack.set_member(desk, dental.id, newcomer_sub, "desk").permissions.members[newcomer_sub].role
        == "desk"
    )

    assert list(stack.get_business(owner, gym.id).permissions.roles["coach"].permissions) == [
        "members:update",
        "members:read",
    ]
    before = stack.items()
    error = rpc_error(lambda: stack.set_member(coach, gym.id, newcomer_sub, "coach"))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert reason_and_metadata(error)[0] == "MISSING_PERMISSION"
    assert stack.items() == before


def test_old_administration_strings_and_unknown_types_are_refused_on_write(stack: Stack) -> None:
    """A new role naming administration with a bare string, an unknown area or a type outside the
    business type's catalog is INVALID_ARGUMENT naming the string, and nothing is written."""
    _, owner = stack.person()
    before = stack.items()
    error = rpc_error(
        lambda: stack.create_business(
            owner,
            pb.BUSINESS_TYPE_DENTAL,
            {"desk": ["patients:read", "members:update", "admin.roles:update"]},
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = violations(error)
    assert "admin.members:update" in found["business.permissions.roles['desk'].permissions[1]"]
    assert "business.permissions.roles['desk'].permissions[2]" in found
    assert "business.permissions.roles['desk'].permissions[0]" not in found
    assert stack.items() == before

    # A type of another business type's catalog: refused on update too, once the type is known.
    business = stack.create_business(owner, pb.BUSINESS_TYPE_DENTAL, {})
    before = stack.items()
    error = rpc_error(
        lambda: stack.server.business.UpdateBusiness(
            pb.UpdateBusinessRequest(
                business=pb.Business(
                    id=business.id,
                    permissions=pb.BusinessPermissions(
                        roles={
                            "owner": pb.Role(permissions=["*"]),
                            "desk": pb.Role(permissions=["rooms:read"]),
                        }
                    ),
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["permissions.roles"]),
            ),
            metadata=owner,
            timeout=10,
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "business.permissions.roles['desk'].permissions[0]" in violations(error)
    assert stack.items() == before


# --- 8b: hyphenated catalog types are grantable ---------------------------------------------


def test_hyphenated_catalog_types_can_be_granted_and_used(stack: Stack) -> None:
    """treatment-plans (dental) and check-ins (gym) are accepted in roles and grant exactly what
    they say over ResourceService."""
    _, owner = stack.person()
    planner_sub, planner = stack.person()
    dental = stack.create_business(
        owner, pb.BUSINESS_TYPE_DENTAL, {"planner": ["treatment-plans:*", "dental-chart:read"]}
    )
    assert list(dental.permissions.roles["planner"].permissions) == ["treatment-plans:*", "dental-chart:read"]
    stack.set_member(owner, dental.id, planner_sub, "planner")
    plan = stack.create_resource(planner, dental.id, "treatment-plans", {"patient": "p1", "steps": 3})
    got = stack.server.resource.GetResource(
        resource_pb2.GetResourceRequest(
            business_id=dental.id,
            location_id="main",
            resource_type="treatment-plans",
            resource_id=plan.resource_id,
        ),
        metadata=planner,
        timeout=10,
    )
    assert dict(got.data) == {"patient": "p1", "steps": 3}
    denied = rpc_error(lambda: stack.create_resource(planner, dental.id, "patients", {"name": "x"}))
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED

    desk_sub, desk = stack.person()
    gym = stack.create_business(owner, pb.BUSINESS_TYPE_GYM, {"desk": ["check-ins:create", "check-ins:read"]})
    stack.set_member(owner, gym.id, desk_sub, "desk")
    assert stack.create_resource(desk, gym.id, "check-ins", {"member": "m1"}).resource_type == "check-ins"


# --- 8c: request ids belong to their caller --------------------------------------------------


def test_replayed_request_id_answers_only_the_caller_who_sent_it(stack: Stack) -> None:
    """Two members send the same request_id: the second one, who may create but not read
    patients, gets a new patient of its own, never the first one's; each retry replays its own."""
    _, owner = stack.person()
    doctor_sub, doctor = stack.person()
    intake_sub, intake = stack.person()
    business = stack.create_business(
        owner,
        pb.BUSINESS_TYPE_DENTAL,
        {"doctor": ["patients:create", "patients:read"], "intake": ["patients:create"]},
    )
    stack.set_member(owner, business.id, doctor_sub, "doctor")
    stack.set_member(owner, business.id, intake_sub, "intake")
    request_id = str(uuid.uuid4())

    first = stack.create_resource(
        doctor, business.id, "patients", {"diagnosis": "secret"}, request_id=request_id
    )
    other = stack.create_resource(intake, business.id, "patients", {"name": "Ion"}, request_id=request_id)
    assert other.resource_id != first.resource_id
    assert dict(other.data) == {"name": "Ion"}

    retried = stack.create_resource(
        doctor, business.id, "patients", {"diagnosis": "secret"}, request_id=request_id
    )
    assert retried == first
    retried_other = stack.create_resource(
        intake, business.id, "patients", {"name": "Ion"}, request_id=request_id
    )
    assert retried_other == other


# --- 8d: members' subs only for those who may see members ------------------------------------


def test_members_are_shown_only_to_callers_who_may_see_members(stack: Stack) -> None:
    """GetBusiness, ListBusinesses and write answers show a receptionist (or a location manager)
    only their own membership and no owner sub; admin.members:read and the owner see everyone."""
    owner_sub, owner = stack.person()
    desk_sub, desk = stack.person()
    site_sub, site = stack.person()
    hr_sub, hr = stack.person()
    business = stack.create_business(owner, pb.BUSINESS_TYPE_DENTAL, {"reception": ["patients:read"]})
    stack.set_member(owner, business.id, desk_sub, "reception")

    def only_self_in_get_and_list(sub: str, md: Metadata) -> None:
        seen = stack.get_business(md, business.id)
        assert set(seen.permissions.members) == {sub}
        assert seen.owner == ""
        assert "reception" in seen.permissions.roles
        listed = stack.server.business.ListBusinesses(
            pb.ListBusinessesRequest(page_size=10), metadata=md, timeout=10
        )
        assert [(b.id, set(b.permissions.members), b.owner) for b in listed.businesses] == [
            (business.id, {sub}, "")
        ]

    only_self_in_get_and_list(desk_sub, desk)

    roles = {
        "owner": pb.Role(permissions=["*"]),
        "reception": pb.Role(permissions=["patients:read"]),
        "site": pb.Role(permissions=["admin.locations:update"]),
        "hr": pb.Role(permissions=["admin.members:read"]),
    }
    stack.server.business.UpdateBusiness(
        pb.UpdateBusinessRequest(
            business=pb.Business(id=business.id, permissions=pb.BusinessPermissions(roles=roles)),
            update_mask=field_mask_pb2.FieldMask(paths=["permissions.roles"]),
        ),
        metadata=owner,
        timeout=10,
    )
    stack.set_member(owner, business.id, site_sub, "site")
    stack.set_member(owner, business.id, hr_sub, "hr")
    everyone = {owner_sub, desk_sub, site_sub, hr_sub}
    only_self_in_get_and_list(site_sub, site)

    updated = stack.server.business.UpdateLocation(
        pb.UpdateLocationRequest(
            business_id=business.id,
            location=pb.Location(id="main", name="Main street"),
            update_mask=field_mask_pb2.FieldMask(paths=["name"]),
        ),
        metadata=site,
        timeout=20,
    )
    assert updated.business.locations[0].name == "Main street"
    assert set(updated.business.permissions.members) == {site_sub}

    for md in (hr, owner):
        seen = stack.get_business(md, business.id)
        assert set(seen.permissions.members) == everyone
        assert seen.owner == owner_sub
