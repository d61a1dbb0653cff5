"""BusinessService end to end: real moto (DynamoDB, Cognito), Citrus emulator, channel and tokens.

Covers issue 3's acceptance list: the full lifecycle, tenant isolation without existence
leaks, roles and location limits, machine scopes, DynamoDB and Citrus outages, idempotent
creates, and hostile input that leaves the table unchanged.
"""

from __future__ import annotations

import inspect
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import grpc
import pytest
from google.protobuf import field_mask_pb2, struct_pb2
from google.type import dayofweek_pb2, timeofday_pb2
from grpc_status import rpc_status
from simplu.v1 import business_pb2 as pb

from simplu_grpc.devstack.citrus_emulator import CitrusEmulator
from simplu_grpc.devstack.moto_server import MotoServer, create_business_table
from simplu_grpc.interceptors.errors import error_info_of, retry_info_of, violations_of
from tests.fixtures.citrus import CITRUS_API_KEY
from tests.fixtures.server import MakeServer, RunningServer
from tests.fixtures.tokens import LocalIssuer

pytestmark = pytest.mark.integration

REGION = "us-east-1"
Bearer = list[tuple[str, str]]


def bearer(token: str) -> Bearer:
    return [("authorization", f"Bearer {token}")]


def rpc_error(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value


def reason_of(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)
    assert status is not None, f"{error.code()} without rich details: {error.details()}"
    info = error_info_of(status)
    assert info is not None
    return str(info.reason)


def fields_of(error: grpc.RpcError) -> set[str]:
    status = rpc_status.from_call(error)
    assert status is not None
    return {field for field, _ in violations_of(status)}


def dynamodb_client(endpoint: str) -> Any:
    return boto3.client(
        "dynamodb",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def scan_table(endpoint: str, table: str) -> list[dict[str, Any]]:
    """Every item of the table, sorted by id: the ground truth for "nothing changed"."""
    client = dynamodb_client(endpoint)
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        page = client.scan(**kwargs)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    client.close()
    return sorted(items, key=lambda item: item["id"]["S"])


def new_table(endpoint: str) -> str:
    table = f"business-{secrets.token_hex(4)}"
    create_business_table(endpoint, REGION, table)
    return table


def server_env(dynamodb_endpoint: str, table: str, citrus: CitrusEmulator | None) -> dict[str, str]:
    env = {
        "DYNAMODB_ENDPOINT": dynamodb_endpoint,
        "DYNAMODB_BUSINESS_INFO_TABLE": table,
        "CITRUS_TIMEOUT": "1000",
        "CITRUS_RETRY_ATTEMPTS": "2",
    }
    if citrus is not None:
        env.update(CITRUS_SERVER_URL=citrus.url, CITRUS_API_KEY=CITRUS_API_KEY)
    return env


@pytest.fixture(scope="module")
def table(moto_server: MotoServer) -> str:
    return new_table(moto_server.url)


@pytest.fixture
def server(
    make_server: MakeServer, moto_server: MotoServer, table: str, module_citrus: CitrusEmulator
) -> RunningServer:
    return make_server(env=server_env(moto_server.url, table, module_citrus))


@pytest.fixture
def person(local_issuer: LocalIssuer) -> Callable[[], tuple[str, Bearer]]:
    """A new person (fresh Cognito-shaped sub) signed by the local issuer: (sub, metadata)."""

    def make() -> tuple[str, Bearer]:
        sub = str(uuid.uuid4())
        return sub, bearer(local_issuer.user_token(sub=sub, username=f"user-{sub[:8]}"))

    return make


def unique_id(prefix: str = "b") -> str:
    return f"{prefix}{secrets.token_hex(6)}"


def new_business(
    name: str = "Smile Dental", *locations: str, business_type: int = pb.BUSINESS_TYPE_DENTAL
) -> pb.Business:
    return pb.Business(
        name=name,
        type=business_type,
        locations=[
            pb.Location(id=loc, name=f"Location {loc}", timezone="Europe/Bucharest") for loc in locations
        ],
        settings=pb.BusinessSettings(currency="RON", language="ro-RO", timezone="Europe/Bucharest"),
    )


def create(
    server: RunningServer, md: Bearer, business: pb.Business, **kwargs: Any
) -> pb.CreateBusinessResponse:
    request = pb.CreateBusinessRequest(business=business, **kwargs)
    return server.business.CreateBusiness(request, metadata=md, timeout=20)


# --- lifecycle ------------------------------------------------------------------------------


def test_full_lifecycle(
    server: RunningServer,
    module_citrus: CitrusEmulator,
    make_user_token: Callable[..., tuple[str, str]],
    admin_token: str,
) -> None:
    """Create (registered with Citrus), get, mask update, stale etag, settings, locations, members, delete."""
    owner_sub, owner_token = make_user_token(f"owner-{secrets.token_hex(3)}")
    staff_sub, staff_token = make_user_token(f"staff-{secrets.token_hex(3)}")
    owner, staff, admin = bearer(owner_token), bearer(staff_token), bearer(admin_token)
    svc = server.business
    business_id = unique_id("life")

    # Create: the owner becomes a member with the "*" role; both locations registered with Citrus.
    created = create(server, owner, new_business("Smile", "L1", "L2"), business_id=business_id)
    business = created.business
    assert business.id == business_id
    assert list(created.unregistered_location_ids) == []
    assert business.owner == owner_sub
    assert business.permissions.members[owner_sub].role == "owner"
    assert list(business.permissions.roles["owner"].permissions) == ["*"]
    assert business.status == pb.BUSINESS_STATUS_ACTIVE
    registrations = module_citrus.registrations()
    assert f"{business_id}-L1" in registrations
    assert f"{business_id}-L2" in registrations

    # Get.
    got = svc.GetBusiness(pb.GetBusinessRequest(business_id=business_id), metadata=owner, timeout=10)
    assert got == business

    # Update with a mask: only the name changes, settings stay.
    renamed = svc.UpdateBusiness(
        pb.UpdateBusinessRequest(
            business=pb.Business(
                id=business_id,
                name="Smile Bright",
                etag=got.etag,
                settings=pb.BusinessSettings(currency="EUR"),
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["name"]),
        ),
        metadata=owner,
        timeout=10,
    )
    assert renamed.name == "Smile Bright"
    assert renamed.settings.currency == "RON"
    assert renamed.etag != got.etag

    # A stale etag is ABORTED and nothing changes.
    error = rpc_error(
        lambda: svc.UpdateBusiness(
            pb.UpdateBusinessRequest(
                business=pb.Business(id=business_id, name="Lost update", etag=got.etag),
                update_mask=field_mask_pb2.FieldMask(paths=["name"]),
            ),
            metadata=owner,
            timeout=10,
        )
    )
    assert error.code() == grpc.StatusCode.ABORTED
    assert reason_of(error) == "ETAG_MISMATCH"
    status = rpc_status.from_call(error)
    assert status is not None
    assert error_info_of(status).metadata["current_etag"] == renamed.etag
    retry = retry_info_of(status)
    assert retry is not None
    assert retry.retry_delay.ToTimedelta().total_seconds() > 0
    unchanged = svc.GetBusiness(pb.GetBusinessRequest(business_id=business_id), metadata=owner, timeout=10)
    assert unchanged == renamed

    # Settings update through its own RPC, with a mask inside settings.
    extras = struct_pb2.Struct()
    extras.update({"reminder_hours": 24})
    with_settings = svc.UpdateBusinessSettings(
        pb.UpdateBusinessSettingsRequest(
            business_id=business_id,
            settings=pb.BusinessSettings(currency="EUR", language="en-GB", extras=extras),
            update_mask=field_mask_pb2.FieldMask(paths=["currency", "extras"]),
            etag=unchanged.etag,
        ),
        metadata=owner,
        timeout=10,
    )
    assert with_settings.settings.currency == "EUR"
    assert with_settings.settings.language == "ro-RO"
    assert with_settings.settings.extras["reminder_hours"] == 24

    # Add a location (registered), update one, remove (deactivate) another.
    added = svc.AddLocation(
        pb.AddLocationRequest(
            business_id=business_id, location=pb.Location(id="L3", name="Third", email="l3@smile.example")
        ),
        metadata=owner,
        timeout=20,
    )
    assert list(added.unregistered_location_ids) == []
    assert f"{business_id}-L3" in module_citrus.registrations()
    assert [loc.id for loc in added.business.locations] == ["L1", "L2", "L3"]
    updated = svc.UpdateLocation(
        pb.UpdateLocationRequest(
            business_id=business_id,
            location=pb.Location(id="L1", name="Central", phone="+40 700 000 000"),
            update_mask=field_mask_pb2.FieldMask(paths=["name", "phone"]),
        ),
        metadata=owner,
        timeout=20,
    )
    l1 = next(loc for loc in updated.business.locations if loc.id == "L1")
    assert (l1.name, l1.phone, l1.timezone) == ("Central", "+40 700 000 000", "Europe/Bucharest")
    removed = svc.RemoveLocation(
        pb.RemoveLocationRequest(business_id=business_id, location_id="L2"), metadata=owner, timeout=10
    )
    assert [loc.active for loc in removed.locations] == [True, False, True]

    # Members: a role, then a member with it; the member can read; removed, they cannot.
    svc.UpdateBusiness(
        pb.UpdateBusinessRequest(
            business=pb.Business(
                id=business_id,
                permissions=pb.BusinessPermissions(
                    roles={
                        "owner": pb.Role(permissions=["*"]),
                        "reception": pb.Role(permissions=["appointments:read", "patients:read"]),
                    }
                ),
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["permissions.roles"]),
        ),
        metadata=owner,
        timeout=10,
    )
    with_member = svc.SetMember(
        pb.SetMemberRequest(
            business_id=business_id,
            member=staff_sub,
            membership=pb.Member(role="reception", location_ids=["L1"]),
        ),
        metadata=owner,
        timeout=10,
    )
    assert with_member.permissions.members[staff_sub].role == "reception"
    # The membership index follows SetMember: the new member lists the business (a Query of it).
    listed = svc.ListBusinesses(pb.ListBusinessesRequest(), metadata=staff, timeout=10)
    assert [b.id for b in listed.businesses] == [business_id]
    assert (
        svc.GetBusiness(pb.GetBusinessRequest(business_id=business_id), metadata=staff, timeout=10).id
        == business_id
    )
    access = svc.GetMyAccess(
        pb.GetMyAccessRequest(business_id=business_id, location_id="L1"), metadata=staff, timeout=10
    )
    assert (access.role, list(access.location_ids), access.location_allowed) == ("reception", ["L1"], True)
    svc.RemoveMember(
        pb.RemoveMemberRequest(business_id=business_id, member=staff_sub), metadata=owner, timeout=10
    )
    listed = svc.ListBusinesses(pb.ListBusinessesRequest(), metadata=staff, timeout=10)
    assert list(listed.businesses) == []
    error = rpc_error(
        lambda: svc.GetBusiness(pb.GetBusinessRequest(business_id=business_id), metadata=staff, timeout=10)
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED

    # The owner cannot be removed.
    error = rpc_error(
        lambda: svc.RemoveMember(
            pb.RemoveMemberRequest(business_id=business_id, member=owner_sub), metadata=owner, timeout=10
        )
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION

    # Delete (soft): members get NOT_FOUND, admins still see it as DELETED.
    deleted = svc.DeleteBusiness(
        pb.DeleteBusinessRequest(business_id=business_id), metadata=owner, timeout=10
    )
    assert deleted.status == pb.BUSINESS_STATUS_DELETED
    error = rpc_error(
        lambda: svc.GetBusiness(pb.GetBusinessRequest(business_id=business_id), metadata=owner, timeout=10)
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    seen_by_admin = svc.GetBusiness(
        pb.GetBusinessRequest(business_id=business_id), metadata=admin, timeout=10
    )
    assert seen_by_admin.status == pb.BUSINESS_STATUS_DELETED
    mine = svc.ListBusinesses(pb.ListBusinessesRequest(page_size=1000), metadata=owner, timeout=10)
    assert business_id not in {b.id for b in mine.businesses}


def test_list_paginates_across_more_than_two_pages(
    server: RunningServer, person: Callable[[], tuple[str, Bearer]], admin_token: str
) -> None:
    """A member's 7 businesses in pages of 3: three pages, each business exactly once; tokens are bound."""
    _, md = person()
    created = {
        create(server, md, new_business(f"Gym {i}", business_type=pb.BUSINESS_TYPE_GYM)).business.id
        for i in range(7)
    }
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = server.business.ListBusinesses(
            pb.ListBusinessesRequest(page_size=3, page_token=token), metadata=md, timeout=10
        )
        pages += 1
        assert len(page.businesses) <= 3
        seen.extend(b.id for b in page.businesses)
        token = page.next_page_token
        if not token:
            break
    assert pages >= 3
    assert sorted(seen) == sorted(created)

    admin = bearer(admin_token)
    first = server.business.ListBusinesses(pb.ListBusinessesRequest(page_size=2), metadata=admin, timeout=10)
    assert first.next_page_token
    for bad in (
        pb.ListBusinessesRequest(page_size=2, page_token=first.next_page_token, show_deleted=True),
        pb.ListBusinessesRequest(page_size=2, page_token="not-a-token"),
        pb.ListBusinessesRequest(page_size=-1),
    ):
        error = rpc_error(lambda bad=bad: server.business.ListBusinesses(bad, metadata=admin, timeout=10))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    # The member's token is bound to the member: another person cannot continue it.
    _, other = person()
    member_first = server.business.ListBusinesses(
        pb.ListBusinessesRequest(page_size=3), metadata=md, timeout=10
    )
    error = rpc_error(
        lambda: server.business.ListBusinesses(
            pb.ListBusinessesRequest(page_size=3, page_token=member_first.next_page_token),
            metadata=other,
            timeout=10,
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    error = rpc_error(
        lambda: server.business.ListBusinesses(
            pb.ListBusinessesRequest(show_deleted=True), metadata=md, timeout=10
        )
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


# --- tenancy and permissions --------------------------------------------------------------


def every_business_rpc(server: RunningServer, business_id: str) -> dict[str, Callable[[Bearer], Any]]:
    """Each BusinessService RPC aimed at ``business_id`` (GetMyAccess and the collection calls excluded)."""
    svc = server.business
    mask = field_mask_pb2.FieldMask
    return {
        "GetBusiness": lambda md: svc.GetBusiness(
            pb.GetBusinessRequest(business_id=business_id), metadata=md, timeout=10
        ),
        "UpdateBusiness": lambda md: svc.UpdateBusiness(
            pb.UpdateBusinessRequest(
                business=pb.Business(id=business_id, name="Hijack"), update_mask=mask(paths=["name"])
            ),
            metadata=md,
            timeout=10,
        ),
        "UpdateBusinessSettings": lambda md: svc.UpdateBusinessSettings(
            pb.UpdateBusinessSettingsRequest(
                business_id=business_id, settings=pb.BusinessSettings(currency="USD")
            ),
            metadata=md,
            timeout=10,
        ),
        "DeleteBusiness": lambda md: svc.DeleteBusiness(
            pb.DeleteBusinessRequest(business_id=business_id), metadata=md, timeout=10
        ),
        "AddLocation": lambda md: svc.AddLocation(
            pb.AddLocationRequest(business_id=business_id, location=pb.Location(id="evil", name="Evil")),
            metadata=md,
            timeout=10,
        ),
        "UpdateLocation": lambda md: svc.UpdateLocation(
            pb.UpdateLocationRequest(
                business_id=business_id,
                location=pb.Location(id="L1", name="X"),
                update_mask=mask(paths=["name"]),
            ),
            metadata=md,
            timeout=10,
        ),
        "RemoveLocation": lambda md: svc.RemoveLocation(
            pb.RemoveLocationRequest(business_id=business_id, location_id="L1"), metadata=md, timeout=10
        ),
        "SetMember": lambda md: svc.SetMember(
            pb.SetMemberRequest(
                business_id=business_id, member="intruder", membership=pb.Member(role="owner")
            ),
            metadata=md,
            timeout=10,
        ),
        "RemoveMember": lambda md: svc.RemoveMember(
            pb.RemoveMemberRequest(business_id=business_id, member="someone"), metadata=md, timeout=10
        ),
    }


def test_member_of_a_cannot_touch_b_even_ids_that_do_not_exist(
    server: RunningServer, person: Callable[[], tuple[str, Bearer]], moto_server: MotoServer, table: str
) -> None:
    """PERMISSION_DENIED for every RPC on B and on missing ids alike; B unchanged; no leak."""
    _, owner_a = person()
    _, owner_b = person()
    create(server, owner_a, new_business("A", "L1"))
    b_id = create(server, owner_b, new_business("B", "L1")).business.id
    missing_id = unique_id("ghost")
    before = scan_table(moto_server.url, table)
    for target in (b_id, missing_id):
        for name, call in every_business_rpc(server, target).items():
            error = rpc_error(lambda call=call: call(owner_a))
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED, (name, target, error.details())
            assert reason_of(error) == "NOT_A_MEMBER", name
    assert scan_table(moto_server.url, table) == before
    real = server.business.GetMyAccess(
        pb.GetMyAccessRequest(business_id=b_id, location_id="L1"), metadata=owner_a, timeout=10
    )
    fake = server.business.GetMyAccess(
        pb.GetMyAccessRequest(business_id=missing_id, location_id="L1"), metadata=owner_a, timeout=10
    )
    for answer in (real, fake):
        assert (answer.role, list(answer.permissions), answer.location_allowed, answer.platform_admin) == (
            "",
            [],
            False,
            False,
        )


def test_a_taken_client_id_does_not_reveal_another_tenants_business(
    server: RunningServer, person: Callable[[], tuple[str, Bearer]], moto_server: MotoServer, table: str
) -> None:
    """CreateBusiness with an id another tenant holds: PERMISSION_DENIED like any other id of theirs
    (not ALREADY_EXISTS); the holder retrying gets ALREADY_EXISTS; nothing is written."""
    _, holder = person()
    _, stranger = person()
    taken = unique_id("taken")
    create(server, holder, new_business("Mine", "L1"), business_id=taken)
    before = scan_table(moto_server.url, table)
    error = rpc_error(lambda: create(server, stranger, new_business("Probe", "L1"), business_id=taken))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert reason_of(error) == "NOT_A_MEMBER"
    again = rpc_error(lambda: create(server, holder, new_business("Mine", "L1"), business_id=taken))
    assert again.code() == grpc.StatusCode.ALREADY_EXISTS
    assert scan_table(moto_server.url, table) == before


def test_role_without_update_reads_and_location_limits_hold(
    server: RunningServer, person: Callable[[], tuple[str, Bearer]]
) -> None:
    """A role lacking appointments:update and business:update reads, cannot update; L1-only stays in L1."""
    _, owner = person()
    reader_sub, reader = person()
    l1_sub, l1_only = person()
    svc = server.business
    created = create(server, owner, new_business("Roles", "L1", "L2")).business
    business_id = created.id
    svc.UpdateBusiness(
        pb.UpdateBusinessRequest(
            business=pb.Business(
                id=business_id,
                permissions=pb.BusinessPermissions(
                    roles={
                        "owner": pb.Role(permissions=["*"]),
                        "assistant": pb.Role(permissions=["appointments:read", "appointments:create"]),
                        "site": pb.Role(permissions=["admin.locations:update", "appointments:*"]),
                    }
                ),
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["permissions.roles"]),
        ),
        metadata=owner,
        timeout=10,
    )
    svc.SetMember(
        pb.SetMemberRequest(
            business_id=business_id, member=reader_sub, membership=pb.Member(role="assistant")
        ),
        metadata=owner,
        timeout=10,
    )
    svc.SetMember(
        pb.SetMemberRequest(
            business_id=business_id, member=l1_sub, membership=pb.Member(role="site", location_ids=["L1"])
        ),
        metadata=owner,
        timeout=10,
    )

    # The assistant reads, but may not update the business; its access lacks appointments:update.
    assert (
        svc.GetBusiness(pb.GetBusinessRequest(business_id=business_id), metadata=reader, timeout=10).id
        == business_id
    )
    error = rpc_error(
        lambda: svc.UpdateBusiness(
            pb.UpdateBusinessRequest(
                business=pb.Business(id=business_id, name="Mine now"),
                update_mask=field_mask_pb2.FieldMask(paths=["name"]),
            ),
            metadata=reader,
            timeout=10,
        )
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert reason_of(error) == "MISSING_PERMISSION"
    access = svc.GetMyAccess(pb.GetMyAccessRequest(business_id=business_id), metadata=reader, timeout=10)
    assert "appointments:update" not in access.permissions
    assert "appointments:read" in access.permissions

    # The L1-only member may update L1 but not L2, and is told so.
    svc.UpdateLocation(
        pb.UpdateLocationRequest(
            business_id=business_id,
            location=pb.Location(id="L1", name="Renamed"),
            update_mask=field_mask_pb2.FieldMask(paths=["name"]),
        ),
        metadata=l1_only,
        timeout=10,
    )
    error = rpc_error(
        lambda: svc.UpdateLocation(
            pb.UpdateLocationRequest(
                business_id=business_id,
                location=pb.Location(id="L2", name="Nope"),
                update_mask=field_mask_pb2.FieldMask(paths=["name"]),
            ),
            metadata=l1_only,
            timeout=10,
        )
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert reason_of(error) == "LOCATION_NOT_ALLOWED"
    l2 = svc.GetMyAccess(
        pb.GetMyAccessRequest(business_id=business_id, location_id="L2"), metadata=l1_only, timeout=10
    )
    assert not l2.location_allowed
    assert not l2.all_locations

    # Handing out more than you hold is refused (no escalation through SetMember).
    svc.UpdateBusiness(
        pb.UpdateBusinessRequest(
            business=pb.Business(
                id=business_id,
                permissions=pb.BusinessPermissions(
                    roles={
                        "owner": pb.Role(permissions=["*"]),
                        "assistant": pb.Role(permissions=["appointments:read", "admin.members:update"]),
                        "site": pb.Role(permissions=["admin.locations:update", "appointments:*"]),
                    }
                ),
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["permissions.roles"]),
        ),
        metadata=owner,
        timeout=10,
    )
    error = rpc_error(
        lambda: svc.SetMember(
            pb.SetMemberRequest(
                business_id=business_id, member=reader_sub, membership=pb.Member(role="owner")
            ),
            metadata=reader,
            timeout=10,
        )
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert reason_of(error) == "ESCALATION"


def test_machine_with_businesses_read_cannot_write(
    server: RunningServer, person: Callable[[], tuple[str, Bearer]], machine_token: Callable[..., str]
) -> None:
    """simplu/businesses.read: Get and List work; Create, Update and Delete are PERMISSION_DENIED."""
    _, owner = person()
    business_id = create(server, owner, new_business("Readable", "L1")).business.id
    reader = bearer(machine_token(["simplu/businesses.read"]))
    svc = server.business
    assert (
        svc.GetBusiness(pb.GetBusinessRequest(business_id=business_id), metadata=reader, timeout=10).id
        == business_id
    )
    assert svc.ListBusinesses(pb.ListBusinessesRequest(page_size=5), metadata=reader, timeout=10).businesses
    error = rpc_error(lambda: create(server, reader, new_business("Nope", "L1")))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    for name, call in every_business_rpc(server, business_id).items():
        if name == "GetBusiness":
            continue
        error = rpc_error(lambda call=call: call(reader))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED, name
        assert reason_of(error) == "MISSING_SCOPE", name
    writer = bearer(machine_token(["simplu/businesses.write"]))
    made = create(server, writer, new_business("By a machine", "L1"))
    assert made.business.owner
    assert not made.business.permissions.members


def test_plain_user_is_not_a_platform_admin(server: RunningServer, user_token: str, admin_token: str) -> None:
    """GetMyAccess says who is a platform admin (the moto admin group) and who is not."""
    user = server.business.GetMyAccess(
        pb.GetMyAccessRequest(business_id="anything"), metadata=bearer(user_token), timeout=10
    )
    admin = server.business.GetMyAccess(
        pb.GetMyAccessRequest(business_id="anything"), metadata=bearer(admin_token), timeout=10
    )
    assert not user.platform_admin
    assert admin.platform_admin
    assert "admin" in admin.groups


def test_plain_user_cannot_call_shard_admin(
    make_server: MakeServer,
    moto_server: MotoServer,
    table: str,
    user_token: str,
    machine_token: Callable[..., str],
) -> None:
    """Every ShardAdmin RPC answers PERMISSION_DENIED to a plain user's real moto token and to a
    machine without simplu/admin: the authorizer runs before any admin component is touched."""
    from simplu.v1 import shard_admin_pb2

    from simplu_grpc.domain.auth.authz import Authorizer
    from simplu_grpc.server import SHARD_ADMIN_SERVICE
    from simplu_grpc.services.shard_admin import ShardAdminServicer

    # The admin components are never reached on this path: every one is None (any use would
    # fail), whatever the servicer's constructor currently asks for besides the authorizer.
    components = {
        name: None for name in inspect.signature(ShardAdminServicer).parameters if name != "authorizer"
    }
    guarded = ShardAdminServicer(**components, authorizer=Authorizer(admin_group="admin"))
    server = make_server(
        env=server_env(moto_server.url, table, None), servicers={SHARD_ADMIN_SERVICE: guarded}
    )
    service = shard_admin_pb2.DESCRIPTOR.services_by_name["ShardAdminService"]
    for token in (user_token, machine_token()):
        for method in service.methods:
            call = server.channel.unary_unary(f"/{service.full_name}/{method.name}")
            error = rpc_error(lambda call=call, token=token: call(b"", metadata=bearer(token), timeout=10))
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED, method.full_name


# --- idempotency and hostile input ----------------------------------------------------------


def test_retried_create_with_the_same_request_id_makes_one_business(
    server: RunningServer, person: Callable[[], tuple[str, Bearer]], moto_server: MotoServer, table: str
) -> None:
    """Three creates with one request_id: one business, the same answer; another caller's key is separate."""
    _, md = person()
    request_id = str(uuid.uuid4())
    answers = [create(server, md, new_business("Once Only", "L1"), request_id=request_id) for _ in range(3)]
    assert len({a.business.id for a in answers}) == 1
    items = [i for i in scan_table(moto_server.url, table) if i.get("name", {}).get("S") == "Once Only"]
    assert len(items) == 1
    _, other = person()
    theirs = create(server, other, new_business("Once Only", "L1"), request_id=request_id)
    assert theirs.business.id != answers[0].business.id


def test_hostile_input_is_invalid_argument_and_changes_nothing(
    server: RunningServer, person: Callable[[], tuple[str, Bearer]], moto_server: MotoServer, table: str
) -> None:
    """Long strings, control characters, '-' in ids, duplicate locations, unknown enums, 1 MB settings."""
    _, md = person()
    existing = create(server, md, new_business("Target", "L1")).business
    before = scan_table(moto_server.url, table)
    huge = struct_pb2.Struct()
    huge.update({"blob": "x" * (1024 * 1024)})
    svc = server.business
    cases: list[tuple[Callable[[], Any], str]] = [
        (lambda: create(server, md, new_business("x" * 10_000, "L1")), "business.name"),
        (lambda: create(server, md, new_business("Bad\x00Name\n", "L1")), "business.name"),
        (lambda: create(server, md, new_business("Dash", "L1"), business_id="has-dash"), "business_id"),
        (lambda: create(server, md, new_business("Dup", "L1", "L1")), "business.locations[1].id"),
        (lambda: create(server, md, new_business("Enum", "L1", business_type=42)), "business.type"),
        (lambda: create(server, md, new_business("NoType", "L1", business_type=0)), "business.type"),
        (lambda: create(server, md, new_business("Loc", "bad id!")), "business.locations[0].id"),
        (lambda: create(server, md, new_business("Loc", "L" * 65)), "business.locations[0].id"),
        (
            lambda: create(
                server,
                md,
                pb.Business(name="Big", type=pb.BUSINESS_TYPE_GYM, settings=pb.BusinessSettings(extras=huge)),
            ),
            "business.settings",
        ),
        (
            lambda: create(
                server,
                md,
                pb.Business(
                    name="Contact",
                    type=pb.BUSINESS_TYPE_GYM,
                    locations=[pb.Location(id="a", name="A", email="x@", timezone="Nowhere/City")],
                ),
            ),
            "business.locations[0].email",
        ),
        (lambda: create(server, md, new_business("Req", "L1"), request_id="bad\x07id"), "request_id"),
        (
            lambda: svc.UpdateBusinessSettings(
                pb.UpdateBusinessSettingsRequest(
                    business_id=existing.id, settings=pb.BusinessSettings(extras=huge)
                ),
                metadata=md,
                timeout=20,
            ),
            "settings",
        ),
        (
            lambda: svc.UpdateBusiness(
                pb.UpdateBusinessRequest(
                    business=pb.Business(id=existing.id, name="\u202eevil"),
                    update_mask=field_mask_pb2.FieldMask(paths=["name"]),
                ),
                metadata=md,
                timeout=10,
            ),
            "business.name",
        ),
        (
            lambda: svc.UpdateBusiness(
                pb.UpdateBusinessRequest(
                    business=pb.Business(id=existing.id, name="ok"),
                    update_mask=field_mask_pb2.FieldMask(paths=["type"]),
                ),
                metadata=md,
                timeout=10,
            ),
            "update_mask.paths[0]",
        ),
        (
            lambda: svc.AddLocation(
                pb.AddLocationRequest(
                    business_id=existing.id,
                    location=pb.Location(id="L2", name="T", timezone="Europe/Atlantis"),
                ),
                metadata=md,
                timeout=10,
            ),
            "location.timezone",
        ),
        (
            lambda: svc.GetBusiness(pb.GetBusinessRequest(business_id="a-b"), metadata=md, timeout=10),
            "business_id",
        ),
        # proto3 carries enum numbers the enum does not define; they are rejected, not defaulted.
        (
            lambda: create(
                server,
                md,
                pb.Business(
                    name="Hours",
                    type=pb.BUSINESS_TYPE_GYM,
                    settings=pb.BusinessSettings(
                        working_hours=[
                            pb.WorkingHours(
                                day=99,  # type: ignore[arg-type]  # an undefined enum number on purpose
                                open_time=timeofday_pb2.TimeOfDay(hours=8),
                                close_time=timeofday_pb2.TimeOfDay(hours=10),
                            )
                        ]
                    ),
                ),
            ),
            "business.settings.working_hours[0].day",
        ),
        (
            lambda: svc.UpdateBusinessSettings(
                pb.UpdateBusinessSettingsRequest(
                    business_id=existing.id,
                    settings=pb.BusinessSettings(currency="USD"),
                    update_mask=field_mask_pb2.FieldMask(paths=["currency", "nonsense"]),
                ),
                metadata=md,
                timeout=10,
            ),
            "update_mask.paths[1]",
        ),
        (
            lambda: svc.UpdateLocation(
                pb.UpdateLocationRequest(
                    business_id=existing.id,
                    location=pb.Location(id="L1", name="x"),
                    update_mask=field_mask_pb2.FieldMask(paths=["name", "shard"]),
                ),
                metadata=md,
                timeout=10,
            ),
            "update_mask.paths[1]",
        ),
        (
            lambda: svc.SetMember(
                pb.SetMemberRequest(
                    business_id=existing.id,
                    member="someone\x00",
                    membership=pb.Member(role="owner", location_ids=["L1", "L1"]),
                ),
                metadata=md,
                timeout=10,
            ),
            "membership.location_ids",
        ),
    ]
    for call, field in cases:
        error = rpc_error(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, error.code(), error.details())
        assert field in fields_of(error), (field, fields_of(error))
    assert scan_table(moto_server.url, table) == before
    # Adding a location that already exists is ALREADY_EXISTS, also without a change.
    error = rpc_error(
        lambda: svc.AddLocation(
            pb.AddLocationRequest(business_id=existing.id, location=pb.Location(id="L1", name="Again")),
            metadata=md,
            timeout=10,
        )
    )
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert scan_table(moto_server.url, table) == before


# --- field behaviour: what the protos' annotations promise ----------------------------------


def get(server: RunningServer, md: Bearer, business_id: str) -> pb.Business:
    return server.business.GetBusiness(
        pb.GetBusinessRequest(business_id=business_id), metadata=md, timeout=10
    )


def test_an_id_given_in_two_places_must_agree(
    server: RunningServer, person: Callable[[], tuple[str, Bearer]], moto_server: MotoServer, table: str
) -> None:
    """CreateBusinessRequest.business_id and business.id: different is INVALID_ARGUMENT and creates
    nothing (never a silent choice); the same id twice, or either alone, names the business."""
    _, md = person()
    first, second = unique_id("twice"), unique_id("twice")
    before = scan_table(moto_server.url, table)
    draft = new_business("Twice", "L1")
    draft.id = second
    error = rpc_error(lambda: create(server, md, draft, business_id=first))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fields_of(error) == {"business.id"}
    assert scan_table(moto_server.url, table) == before

    assert create(server, md, draft, business_id=second).business.id == second
    only_inside = new_business("Inside", "L1")
    only_inside.id = first
    assert create(server, md, only_inside).business.id == first


def test_output_only_fields_sent_by_a_caller_are_ignored(
    server: RunningServer, person: Callable[[], tuple[str, Bearer]]
) -> None:
    """status, owner, create_time, update_time (and etag on create) are the server's: ignored on
    create and when an update_mask names them, never an error and never stored."""
    sub, md = person()
    forged = new_business("Forged", "L1")
    forged.status = pb.BUSINESS_STATUS_DELETED
    forged.owner = "someone-else"
    forged.create_time.FromSeconds(946684800)  # 2000-01-01
    forged.update_time.FromSeconds(946684800)
    forged.etag = "v999"
    created = create(server, md, forged).business
    assert (created.status, created.owner) == (pb.BUSINESS_STATUS_ACTIVE, sub)
    assert created.create_time.seconds > 946684800
    assert created.update_time.seconds > 946684800
    assert created.etag != "v999"

    svc = server.business
    renamed = svc.UpdateBusiness(
        pb.UpdateBusinessRequest(
            business=pb.Business(
                id=created.id, name="Renamed", owner="someone-else", status=pb.BUSINESS_STATUS_DELETED
            ),
            update_mask=field_mask_pb2.FieldMask(
                paths=["name", "owner", "status", "create_time", "update_time", "etag", "id"]
            ),
        ),
        metadata=md,
        timeout=10,
    )
    assert (renamed.name, renamed.owner, renamed.status) == ("Renamed", sub, pb.BUSINESS_STATUS_ACTIVE)
    assert renamed.create_time == created.create_time
    # A mask naming only output-only fields changes nothing, and writes nothing.
    same = svc.UpdateBusiness(
        pb.UpdateBusinessRequest(
            business=pb.Business(id=created.id, owner="someone-else"),
            update_mask=field_mask_pb2.FieldMask(paths=["owner"]),
        ),
        metadata=md,
        timeout=10,
    )
    assert same == renamed
    assert get(server, md, created.id) == renamed


def test_the_business_type_is_immutable(
    server: RunningServer, person: Callable[[], tuple[str, Bearer]]
) -> None:
    """Asking for the current type is accepted; asking for another, with or without a mask naming
    "type", is INVALID_ARGUMENT on business.type and changes nothing."""
    _, md = person()
    created = create(server, md, new_business("Typed", "L1")).business
    svc = server.business
    same = svc.UpdateBusiness(
        pb.UpdateBusinessRequest(
            business=pb.Business(id=created.id, name="Still dental", type=pb.BUSINESS_TYPE_DENTAL),
            update_mask=field_mask_pb2.FieldMask(paths=["name", "type"]),
        ),
        metadata=md,
        timeout=10,
    )
    assert (same.name, same.type) == ("Still dental", pb.BUSINESS_TYPE_DENTAL)
    for paths in (["name", "type"], []):
        error = rpc_error(
            lambda paths=paths: svc.UpdateBusiness(
                pb.UpdateBusinessRequest(
                    business=pb.Business(id=created.id, name="Now a gym", type=pb.BUSINESS_TYPE_GYM),
                    update_mask=field_mask_pb2.FieldMask(paths=paths),
                ),
                metadata=md,
                timeout=10,
            )
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, paths
        assert fields_of(error) == {"business.type"}
        assert "immutable" in (error.details() or "")
    assert get(server, md, created.id) == same


def hours(day: int, opens: tuple[int, ...] | None, closes: tuple[int, ...] | None) -> pb.WorkingHours:
    """A WorkingHours; each time is (hours, minutes[, seconds[, nanos]]), None leaves it unset."""
    entry = pb.WorkingHours(day=day)  # type: ignore[arg-type]  # plain ints stand for the enum
    for name, value in (("open_time", opens), ("close_time", closes)):
        if value is not None:
            getattr(entry, name).CopyFrom(
                timeofday_pb2.TimeOfDay(
                    **dict(zip(("hours", "minutes", "seconds", "nanos"), value, strict=False))
                )
            )
    return entry


def test_working_hours_are_day_of_week_and_time_of_day(
    server: RunningServer, person: Callable[[], tuple[str, Bearer]], moto_server: MotoServer, table: str
) -> None:
    """google.type.DayOfWeek/TimeOfDay round-trip exactly and are stored as "HH:MM" (the DynamoDB
    format is unchanged); a time the store cannot keep is INVALID_ARGUMENT, never rounded."""
    _, md = person()
    business = new_business("Hours", "L1")
    business.settings.working_hours.extend(
        [
            hours(dayofweek_pb2.MONDAY, (8, 0), (18, 30)),
            hours(dayofweek_pb2.FRIDAY, (22, 15), (0, 0)),  # past midnight
            hours(dayofweek_pb2.SUNDAY, None, None),
        ]
    )
    business.settings.working_hours[2].closed = True
    created = create(server, md, business).business
    assert list(created.settings.working_hours) == list(business.settings.working_hours)
    assert get(server, md, created.id).settings.working_hours == business.settings.working_hours
    [item] = [i for i in scan_table(moto_server.url, table) if i["id"]["S"] == created.id]
    stored = [
        (int(wh["M"]["day"]["N"]), wh["M"]["open"]["S"], wh["M"]["close"]["S"])
        for wh in item["settings"]["M"]["workingHours"]["L"]
    ]
    assert stored == [(1, "08:00", "18:30"), (5, "22:15", "00:00"), (7, "", "")]

    before = scan_table(moto_server.url, table)
    bad = {
        "24:00 is not a time the store keeps": (hours(1, (8, 0), (24, 0)), "close_time"),
        "minutes out of range": (hours(1, (8, 60), (18, 0)), "open_time"),
        "seconds are dropped by the store": (hours(1, (8, 0, 30), (18, 0)), "open_time"),
        "nanos are dropped by the store": (hours(1, (8, 0), (18, 0, 0, 1)), "close_time"),
        "negative hours": (hours(1, (-1, 0), (18, 0)), "open_time"),
        "a missing time on an open day": (hours(1, (8, 0), None), "close_time"),
        "open equals close": (hours(1, (8, 0), (8, 0)), "close_time"),
    }
    for why, (entry, name) in bad.items():
        draft = new_business("Bad hours", "L1")
        draft.settings.working_hours.append(entry)
        error = rpc_error(lambda draft=draft: create(server, md, draft))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, why
        assert fields_of(error) == {f"business.settings.working_hours[0].{name}"}, why
        status = rpc_status.from_call(error)
        assert status is not None
        assert len(violations_of(status)) == 1, why  # one violation, not two for one field
        settings_error = rpc_error(
            lambda entry=entry: server.business.UpdateBusinessSettings(
                pb.UpdateBusinessSettingsRequest(
                    business_id=created.id,
                    settings=pb.BusinessSettings(working_hours=[entry]),
                    update_mask=field_mask_pb2.FieldMask(paths=["working_hours"]),
                ),
                metadata=md,
                timeout=10,
            )
        )
        assert settings_error.code() == grpc.StatusCode.INVALID_ARGUMENT, why
        assert fields_of(settings_error) == {f"settings.working_hours[0].{name}"}, why
    assert scan_table(moto_server.url, table) == before


def test_empty_update_masks_update_only_populated_fields(
    server: RunningServer, person: Callable[[], tuple[str, Bearer]]
) -> None:
    """AIP-134: no mask updates what the request populates; it never erases settings, clears a
    location's details or deactivates it; a request populating nothing is INVALID_ARGUMENT."""
    _, md = person()
    created = create(server, md, new_business("Populated", "L1")).business
    svc = server.business
    renamed = svc.UpdateBusiness(
        pb.UpdateBusinessRequest(business=pb.Business(id=created.id, name="Only the name")),
        metadata=md,
        timeout=10,
    )
    assert renamed.name == "Only the name"
    assert renamed.settings == created.settings  # settings were not sent: kept, not emptied
    nothing = rpc_error(
        lambda: svc.UpdateBusiness(
            pb.UpdateBusinessRequest(business=pb.Business(id=created.id)), metadata=md, timeout=10
        )
    )
    assert nothing.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fields_of(nothing) == {"update_mask"}

    located = svc.UpdateLocation(
        pb.UpdateLocationRequest(business_id=created.id, location=pb.Location(id="L1", phone="+40 21 000")),
        metadata=md,
        timeout=10,
    )
    [l1] = located.business.locations
    assert (l1.name, l1.phone, l1.timezone, l1.active) == (
        "Location L1",
        "+40 21 000",
        "Europe/Bucharest",
        True,
    )
    for request in (
        pb.UpdateLocationRequest(business_id=created.id, location=pb.Location(id="L1")),
        pb.UpdateLocationRequest(business_id=created.id),
    ):
        error = rpc_error(lambda request=request: svc.UpdateLocation(request, metadata=md, timeout=10))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Deactivating takes the path; "id" in a mask is ignored (it names the location).
    deactivated = svc.UpdateLocation(
        pb.UpdateLocationRequest(
            business_id=created.id,
            location=pb.Location(id="L1"),
            update_mask=field_mask_pb2.FieldMask(paths=["id", "active"]),
        ),
        metadata=md,
        timeout=10,
    )
    assert [loc.active for loc in deactivated.business.locations] == [False]

    # UpdateBusinessSettings' settings are REQUIRED: leaving them out does not reset them.
    error = rpc_error(
        lambda: svc.UpdateBusinessSettings(
            pb.UpdateBusinessSettingsRequest(business_id=created.id), metadata=md, timeout=10
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fields_of(error) == {"settings"}
    assert get(server, md, created.id).settings == created.settings


def test_get_my_access_token_use_and_location_allowed(
    server: RunningServer, person: Callable[[], tuple[str, Bearer]]
) -> None:
    """token_use is an enum; location_allowed is absent unless a location was asked about."""
    _, md = person()
    created = create(server, md, new_business("Access", "L1")).business
    svc = server.business
    plain = svc.GetMyAccess(pb.GetMyAccessRequest(business_id=created.id), metadata=md, timeout=10)
    assert plain.token_use == pb.TOKEN_USE_ACCESS
    assert plain.role == "owner"
    assert not plain.HasField("location_allowed")
    asked = svc.GetMyAccess(
        pb.GetMyAccessRequest(business_id=created.id, location_id="L1"), metadata=md, timeout=10
    )
    assert asked.HasField("location_allowed")
    assert asked.location_allowed
    unknown = svc.GetMyAccess(
        pb.GetMyAccessRequest(business_id=created.id, location_id="L9"), metadata=md, timeout=10
    )
    assert unknown.HasField("location_allowed")
    assert not unknown.location_allowed


# --- outages --------------------------------------------------------------------------------


@pytest.fixture
def own_moto() -> Iterator[MotoServer]:
    """A moto server of this test alone: it gets stopped."""
    with MotoServer() as server:
        yield server


def test_dynamodb_down_is_unavailable_within_the_deadline(
    make_server: MakeServer, own_moto: MotoServer, person: Callable[[], tuple[str, Bearer]], admin_token: str
) -> None:
    """moto stopped: UNAVAILABLE (BUSINESS_STORE_UNAVAILABLE) well within the deadline, nothing invented."""
    table = new_table(own_moto.url)
    server = make_server(env=server_env(own_moto.url, table, None))
    _, md = person()
    business_id = create(server, md, new_business("Soon unreachable", "L1")).business.id
    own_moto.stop()
    svc = server.business
    calls: list[Callable[[], Any]] = [
        lambda: svc.GetBusiness(pb.GetBusinessRequest(business_id=business_id), metadata=md, timeout=8),
        lambda: svc.ListBusinesses(pb.ListBusinessesRequest(), metadata=md, timeout=8),
        lambda: svc.ListBusinesses(pb.ListBusinessesRequest(), metadata=bearer(admin_token), timeout=8),
        lambda: create(server, md, new_business("Lost", "L1")),
        lambda: svc.UpdateBusiness(
            pb.UpdateBusinessRequest(
                business=pb.Business(id=business_id, name="x"),
                update_mask=field_mask_pb2.FieldMask(paths=["name"]),
            ),
            metadata=md,
            timeout=8,
        ),
    ]
    for call in calls:
        started = time.monotonic()
        error = rpc_error(call)
        assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
        assert reason_of(error) == "BUSINESS_STORE_UNAVAILABLE"
        status = rpc_status.from_call(error)
        assert status is not None
        retry = retry_info_of(status)
        assert retry is not None
        assert retry.retry_delay.ToTimedelta().total_seconds() == 1
        assert time.monotonic() - started < 8


def test_citrus_down_saves_the_business_and_a_retry_registers_once(
    make_server: MakeServer,
    moto_server: MotoServer,
    make_citrus: Callable[..., CitrusEmulator],
    person: Callable[[], tuple[str, Bearer]],
) -> None:
    """Citrus stopped: saved, unregistered ids listed; once back, a retried create registers each once."""
    citrus = make_citrus()
    server = make_server(env=server_env(moto_server.url, new_table(moto_server.url), citrus))
    _, md = person()
    citrus.stop()
    request_id = str(uuid.uuid4())
    started = time.monotonic()
    first = create(server, md, new_business("Offline", "L1", "L2"), request_id=request_id)
    assert time.monotonic() - started < 10
    business_id = first.business.id
    assert sorted(first.unregistered_location_ids) == ["L1", "L2"]
    assert (
        server.business.GetBusiness(
            pb.GetBusinessRequest(business_id=business_id), metadata=md, timeout=10
        ).id
        == business_id
    )

    citrus.start()
    citrus.reset_calls()
    retried = create(server, md, new_business("Offline", "L1", "L2"), request_id=request_id)
    assert retried.business.id == business_id
    assert list(retried.unregistered_location_ids) == []
    assert citrus.calls["register"] == 2
    registrations = citrus.registrations()
    assert sorted(key for key in registrations if key.startswith(business_id)) == [
        f"{business_id}-L1",
        f"{business_id}-L2",
    ]

    # Nothing is pending any more: another retry and an UpdateLocation register nothing again.
    create(server, md, new_business("Offline", "L1", "L2"), request_id=request_id)
    server.business.UpdateLocation(
        pb.UpdateLocationRequest(
            business_id=business_id,
            location=pb.Location(id="L1", name="Back"),
            update_mask=field_mask_pb2.FieldMask(paths=["name"]),
        ),
        metadata=md,
        timeout=10,
    )
    assert citrus.calls["register"] == 2


def test_pending_registration_completes_on_update_location(
    make_server: MakeServer,
    moto_server: MotoServer,
    make_citrus: Callable[..., CitrusEmulator],
    person: Callable[[], tuple[str, Bearer]],
) -> None:
    """Citrus failing (503) at AddLocation: the location is pending; the next UpdateLocation registers it."""
    citrus = make_citrus()
    server = make_server(env=server_env(moto_server.url, new_table(moto_server.url), citrus))
    _, md = person()
    business_id = create(server, md, new_business("Flaky", "L1")).business.id
    citrus.fail_with(503)
    added = server.business.AddLocation(
        pb.AddLocationRequest(business_id=business_id, location=pb.Location(id="L2", name="Two")),
        metadata=md,
        timeout=10,
    )
    assert list(added.unregistered_location_ids) == ["L2"]
    citrus.heal()
    updated = server.business.UpdateLocation(
        pb.UpdateLocationRequest(
            business_id=business_id,
            location=pb.Location(id="L1", name="One"),
            update_mask=field_mask_pb2.FieldMask(paths=["name"]),
        ),
        metadata=md,
        timeout=10,
    )
    assert list(updated.unregistered_location_ids) == []
    assert f"{business_id}-L2" in citrus.registrations()


def test_slow_citrus_still_answers_create_within_the_deadline(
    make_server: MakeServer,
    moto_server: MotoServer,
    make_citrus: Callable[..., CitrusEmulator],
    person: Callable[[], tuple[str, Bearer]],
) -> None:
    """Citrus answering after 3 s, a 2.5 s RPC deadline: the business is saved, the answer comes in time."""
    citrus = make_citrus()
    server = make_server(env=server_env(moto_server.url, new_table(moto_server.url), citrus))
    _, md = person()
    citrus.set_delay(3.0)
    started = time.monotonic()
    response = server.business.CreateBusiness(
        pb.CreateBusinessRequest(business=new_business("Slow", "L1")), metadata=md, timeout=2.5
    )
    assert time.monotonic() - started < 2.5
    assert list(response.unregistered_location_ids) == ["L1"]
    citrus.heal()
    found = server.business.GetBusiness(
        pb.GetBusinessRequest(business_id=response.business.id), metadata=md, timeout=10
    )
    assert found.id == response.business.id
