"""SearchBusinesses, LookupBusinessByDomain, GetLocation and ListLocations through a real server
(moto with the name index, Citrus emulator, PostgreSQL, a loopback channel)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import struct_pb2
from simplu.v1 import business_pb2

from simplu_grpc.devstack.moto_server import MotoServer, client
from tests.integration.lifecycle_stack import REGION, Metadata, Stack, answer, dynamodb_calls

pytestmark = pytest.mark.integration

ADMIN_ONLY = (grpc.StatusCode.PERMISSION_DENIED, "ADMIN_ONLY")
NOT_A_MEMBER = (grpc.StatusCode.PERMISSION_DENIED, "NOT_A_MEMBER")
DENTAL, GYM = business_pb2.BUSINESS_TYPE_DENTAL, business_pb2.BUSINESS_TYPE_GYM


@pytest.fixture
def stack(lifecycle_stack: Stack) -> Stack:
    return lifecycle_stack


def search(stack: Stack, md: Metadata, **fields: object) -> business_pb2.SearchBusinessesResponse:
    request = business_pb2.SearchBusinessesRequest(**fields)  # type: ignore[arg-type]
    return stack.server.business.SearchBusinesses(request, metadata=md, timeout=10)


def search_all(stack: Stack, **fields: object) -> list[str]:
    """Every name a search answers, following page tokens."""
    names: list[str] = []
    token = ""
    while True:
        page = search(stack, stack.admin, page_token=token, **fields)
        names.extend(b.name for b in page.businesses)
        token = page.next_page_token
        if not token:
            return names


def lookup(stack: Stack, md: Metadata, label: str) -> business_pb2.PublicBusiness:
    request = business_pb2.LookupBusinessByDomainRequest(domain_label=label)
    return stack.server.business.LookupBusinessByDomain(request, metadata=md, timeout=10)


def test_search_is_for_platform_admins_by_name_prefix_type_and_status_across_pages(stack: Stack) -> None:
    """Owners and businesses.read clients get ADMIN_ONLY. An admin finds businesses by a
    case-insensitive name prefix, by type and by status, in type-then-name order, two per page with
    no duplicates; a token replayed with another query is INVALID_ARGUMENT. The table is never scanned."""
    _, owner = stack.person()
    for name, kind in (
        ("Zen Dental", DENTAL),
        ("zenith Smile", DENTAL),
        ("Zest Gym", GYM),
        ("ZEN Fitness", GYM),
        ("Other Clinic", DENTAL),
    ):
        stack.create(owner, name, type=kind)
    suspended = stack.create(owner, "Zen Suspended", type=DENTAL)
    stack.server.business.SuspendBusiness(
        business_pb2.SuspendBusinessRequest(business_id=suspended.id), metadata=stack.admin, timeout=10
    )
    assert answer(lambda: search(stack, owner, name_prefix="zen")) == ADMIN_ONLY
    reader = stack.machine("simplu/businesses.read")
    assert answer(lambda: search(stack, reader, name_prefix="zen")) == ADMIN_ONLY

    scans_before = dynamodb_calls(stack, "scan")
    assert search_all(stack, name_prefix="ZEN", page_size=2) == [
        "Zen Dental",
        "Zen Suspended",
        "zenith Smile",
        "ZEN Fitness",
    ]
    assert search_all(stack, name_prefix="ze", type=GYM, page_size=2) == ["ZEN Fitness", "Zest Gym"]
    assert search_all(stack, name_prefix="zen", status=business_pb2.BUSINESS_STATUS_SUSPENDED) == [
        "Zen Suspended"
    ]
    assert len(search_all(stack, page_size=1)) == 6
    assert dynamodb_calls(stack, "scan") == scans_before

    first = search(stack, stack.admin, name_prefix="zen", page_size=1)
    assert first.next_page_token

    def replayed() -> object:
        return search(stack, stack.admin, name_prefix="ze", page_size=1, page_token=first.next_page_token)

    assert answer(replayed) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert (
        answer(lambda: search(stack, stack.admin, name_prefix="x" * 201))[0]
        == grpc.StatusCode.INVALID_ARGUMENT
    )


def test_lookup_by_domain_label_answers_public_fields_only(stack: Stack) -> None:
    """A label is stored lower case and resolves for a businesses.read client and any signed-in
    person: id, name, type, label, status, active locations, presentation settings; never members,
    roles, owner, etag, feature flags or extras. A client with resources.read only is MISSING_SCOPE;
    an unknown label NOT_FOUND; a malformed or reserved one INVALID_ARGUMENT."""
    owner_sub, owner = stack.person()
    extras = struct_pb2.Struct(fields={"iban": struct_pb2.Value(string_value="RO49AAAA1B31007593840000")})
    business = stack.create(
        owner,
        "Zâmbet",
        domain_label="Zambet-Cluj",
        settings=business_pb2.BusinessSettings(
            currency="RON", language="ro", features={"beta": True}, extras=extras
        ),
    )
    assert business.domain_label == "zambet-cluj"
    stack.server.business.RemoveLocation(
        business_pb2.RemoveLocationRequest(business_id=business.id, location_id="second"),
        metadata=owner,
        timeout=10,
    )
    _, visitor = stack.person()
    for md in (stack.machine("simplu/businesses.read"), visitor, stack.admin):
        found = lookup(stack, md, "ZAMBET-cluj")
        assert (found.id, found.name, found.type, found.domain_label, found.status) == (
            business.id,
            "Zâmbet",
            DENTAL,
            "zambet-cluj",
            business_pb2.BUSINESS_STATUS_ACTIVE,
        )
        assert [loc.id for loc in found.locations] == ["main"]
        assert (found.settings.currency, found.settings.language) == ("RON", "ro")
        assert not found.settings.features
        assert not found.settings.HasField("extras")
        assert owner_sub.encode() not in found.SerializeToString()
        assert b"RO49" not in found.SerializeToString()
    resources_only = stack.machine("simplu/resources.read")
    assert answer(lambda: lookup(stack, resources_only, "zambet-cluj")) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "MISSING_SCOPE",
    )
    assert answer(lambda: lookup(stack, visitor, "nobody-here")) == (
        grpc.StatusCode.NOT_FOUND,
        "BUSINESS_NOT_FOUND",
    )
    for bad in ("a", "-bad", "bad-", "xn--abc", "www", "under_score", ""):
        assert answer(lambda bad=bad: lookup(stack, visitor, bad))[0] == grpc.StatusCode.INVALID_ARGUMENT, bad


def test_a_domain_label_is_unique_moves_with_updates_and_leaves_with_deletion(
    stack: Stack, moto_server: MotoServer
) -> None:
    """A second business cannot take a label (create or update: ALREADY_EXISTS /
    DOMAIN_LABEL_TAKEN, nothing written); changing a label frees the old one, which another
    business can then take; a deleted business no longer resolves but keeps its claim until purged."""
    _, owner = stack.person()
    first = stack.create(owner, "First", domain_label="shared")
    taken = (grpc.StatusCode.ALREADY_EXISTS, "DOMAIN_LABEL_TAKEN")
    assert answer(lambda: stack.create(owner, "Second", domain_label="shared")) == taken
    second = stack.create(owner, "Second", domain_label="second")

    def relabel(business_id: str, label: str) -> business_pb2.Business:
        request = business_pb2.UpdateBusinessRequest(
            business=business_pb2.Business(id=business_id, domain_label=label),
            update_mask={"paths": ["domain_label"]},
        )
        return stack.server.business.UpdateBusiness(request, metadata=owner, timeout=10)

    assert answer(lambda: relabel(second.id, "shared")) == taken
    get = business_pb2.GetBusinessRequest(business_id=second.id)
    assert stack.server.business.GetBusiness(get, metadata=owner, timeout=10).domain_label == "second"
    assert answer(lambda: relabel(second.id, "no"))[0] == grpc.StatusCode.INVALID_ARGUMENT

    assert relabel(first.id, "first-new").domain_label == "first-new"
    assert lookup(stack, stack.admin, "first-new").id == first.id
    assert answer(lambda: lookup(stack, stack.admin, "shared"))[0] == grpc.StatusCode.NOT_FOUND
    assert relabel(second.id, "shared").domain_label == "shared"
    assert lookup(stack, stack.admin, "shared").id == second.id
    assert answer(lambda: lookup(stack, stack.admin, "second"))[0] == grpc.StatusCode.NOT_FOUND

    stack.server.business.DeleteBusiness(
        business_pb2.DeleteBusinessRequest(business_id=second.id), metadata=owner, timeout=10
    )
    assert answer(lambda: lookup(stack, stack.admin, "shared"))[0] == grpc.StatusCode.NOT_FOUND
    assert answer(lambda: relabel(first.id, "shared")) == taken  # kept for UndeleteBusiness
    dynamodb = client("dynamodb", moto_server.url, REGION)
    claim = dynamodb.get_item(
        TableName=stack.env["DYNAMODB_BUSINESS_INFO_TABLE"], Key={"id": {"S": "domain#shared"}}
    )
    assert claim["Item"]["businessId"]["S"] == second.id


def test_locations_read_like_the_business_with_permission_before_existence(stack: Stack) -> None:
    """Members, admins and businesses.read clients get a location and a page of them (id order,
    inactive ones only with show_inactive); a stranger gets NOT_A_MEMBER for a real and a made-up
    business alike; an unknown location is LOCATION_NOT_FOUND; a token of another query is refused."""
    _, owner = stack.person()
    business = stack.create(
        owner,
        locations=[business_pb2.Location(id=lid, name=lid.upper()) for lid in ("c", "a", "d", "b")],
    )
    stack.server.business.RemoveLocation(
        business_pb2.RemoveLocationRequest(business_id=business.id, location_id="b"),
        metadata=owner,
        timeout=10,
    )
    bs = stack.server.business

    def get(md: Metadata, business_id: str, location_id: str) -> business_pb2.Location:
        request = business_pb2.GetLocationRequest(business_id=business_id, location_id=location_id)
        return bs.GetLocation(request, metadata=md, timeout=10)

    def listed(md: Metadata, **fields: object) -> list[str]:
        ids: list[str] = []
        token = ""
        while True:
            request = business_pb2.ListLocationsRequest(
                business_id=business.id,
                page_size=1,
                page_token=token,
                **fields,  # type: ignore[arg-type]
            )
            page = bs.ListLocations(request, metadata=md, timeout=10)
            ids.extend(loc.id for loc in page.locations)
            token = page.next_page_token
            if not token:
                return ids

    for md in (owner, stack.admin, stack.machine("simplu/businesses.read")):
        assert get(md, business.id, "a").name == "A"
        assert listed(md) == ["a", "c", "d"]
        assert listed(md, show_inactive=True) == ["a", "b", "c", "d"]
    assert not get(owner, business.id, "b").active
    assert answer(lambda: get(owner, business.id, "zzz")) == (grpc.StatusCode.NOT_FOUND, "LOCATION_NOT_FOUND")
    _, stranger = stack.person()
    for business_id in (business.id, "nosuchbusiness"):
        assert answer(lambda b=business_id: get(stranger, b, "a")) == NOT_A_MEMBER
        request = business_pb2.ListLocationsRequest(business_id=business_id)
        assert answer(lambda r=request: bs.ListLocations(r, metadata=stranger, timeout=10)) == NOT_A_MEMBER
    first = bs.ListLocations(
        business_pb2.ListLocationsRequest(business_id=business.id, page_size=1), metadata=owner, timeout=10
    )
    other_query = business_pb2.ListLocationsRequest(
        business_id=business.id, page_size=1, page_token=first.next_page_token, show_inactive=True
    )
    assert answer(lambda: bs.ListLocations(other_query, metadata=owner, timeout=10))[0] == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
