"""Business items written by the original system (AdrianTuci1/simplu-api's management server and
business-info readers) against a real moto server: read correctly, rewritten in the current shape
on the next write without losing what this service does not model, and ``simplu-grpc
rewrite-items`` rewrites them all in place, once."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from simplu_grpc import cli
from simplu_grpc.adapters.dynamodb.business_items import from_item, to_item
from simplu_grpc.adapters.dynamodb.business_migrations import rewrite_items
from simplu_grpc.adapters.dynamodb.business_store import BusinessStore
from simplu_grpc.adapters.dynamodb.membership_items import membership_id
from simplu_grpc.devstack.moto_server import MotoServer, client, create_business_table
from simplu_grpc.domain.business.model import Business, BusinessStatus, BusinessType, Location, Permissions
from simplu_grpc.errors import Aborted
from simplu_grpc.metrics import Metrics

pytestmark = pytest.mark.integration
REGION = "us-east-1"

# The management server's BusinessEntity: configured, not launched yet (suspended, inactive).
MANAGED = {
    "id": "B2500002",
    "businessId": "B2500002",
    "companyName": "Clinica Zâmbet S.R.L.",
    "registrationNumber": "RO12345678",
    "businessType": "DENTAL",
    "locations": [
        {"id": "L2500003", "name": "Zâmbet Centru", "address": "Cluj-Napoca", "timezone": "Europe/Bucharest"},
        {"id": "L2500004", "name": "Zâmbet Nord", "address": "Cluj-Napoca", "active": False},
    ],
    "settings": {"currency": "RON", "language": "ro"},
    "configureForEmail": "owner@zambet.ro",
    "domainType": "subdomain",
    "domainLabel": "zambet",
    "clientPageType": "website",
    "subscriptionType": "solo",
    "credits": {"total": 100, "available": Decimal("12.5"), "currency": "RON"},
    "active": False,
    "status": "suspended",
    "ownerUserId": "sub-owner-zambet",
    "ownerEmail": "owner@zambet.ro",
    "createdByUserId": "sub-admin-1",
    "nextPaymentDate": None,
    "paymentStatus": "unpaid",
    "createdAt": "2025-08-13T01:07:50.527Z",
    "updatedAt": "2025-08-13T01:08:05.303Z",
    "deletedAt": None,
}
# The business-info readers' shape: businessName, locationId/isActive, hours by day name.
GYM = {
    "id": "B2400007",
    "businessId": "B2400007",
    "businessName": "FitZone",
    "businessType": "gym",
    "locations": [
        {
            "locationId": "L2400010",
            "name": "FitZone Floreasca",
            "address": "Bucuresti",
            "phone": "+40700000000",
            "email": "floreasca@fitzone.ro",
            "timezone": "Europe/Bucharest",
            "isActive": True,
        }
    ],
    "settings": {
        "currency": "EUR",
        "language": "en",
        "dateFormat": "DD/MM/YYYY",
        "timeFormat": "24h",
        "workingHours": {
            "sunday": {"open": "00:00", "close": "00:00", "isOpen": False},
            "monday": {"open": "06:00", "close": "22:00", "isOpen": True},
            "saturday": {"open": "08:00", "close": "14:00", "isOpen": True},
        },
        "features": ["classes", "lockers"],
    },
    "permissions": ["read:resources", "manage:memberships"],
    "createdAt": "2024-11-02T09:00:00.000Z",
    "updatedAt": "2025-01-20T16:45:12.100Z",
}
SPARSE = {"id": "B2400009", "businessType": "hotel"}
DELETED = {
    "id": "B2300001",
    "businessId": "B2300001",
    "companyName": "Old Gym",
    "businessType": "gym",
    "status": "deleted",
    "deletedAt": "2025-03-01T00:00:00.000Z",
}
BROKEN = {"id": "B2300002", "companyName": "No type at all"}
ORIGINAL = (MANAGED, GYM, SPARSE, DELETED)

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def raw(document: dict[str, Any]) -> dict[str, Any]:
    """An item as the original's DynamoDB DocumentClient wrote it (typed attribute values)."""
    return {key: _serializer.serialize(value) for key, value in document.items()}


def plain(item: dict[str, Any]) -> dict[str, Any]:
    return {key: _deserializer.deserialize(value) for key, value in item.items()}


@pytest.fixture
def store(moto_server: MotoServer) -> Iterator[BusinessStore]:
    name = f"orig-{secrets.token_hex(4)}"
    create_business_table(moto_server.url, REGION, name)
    dynamodb = client("dynamodb", moto_server.url, REGION)
    for document in (*ORIGINAL, BROKEN):
        dynamodb.put_item(TableName=name, Item=raw(document))
    yield BusinessStore(table=name, client=dynamodb, metrics=Metrics())
    dynamodb.delete_table(TableName=name)


def table(store: BusinessStore) -> dict[str, dict[str, Any]]:
    """Every item of the table by id (consistent scan): the ground truth for "nothing changed"."""
    items: dict[str, dict[str, Any]] = {}
    kwargs: dict[str, Any] = {"TableName": store._table, "ConsistentRead": True}
    while True:
        page = store._client.scan(**kwargs)
        items.update((item["id"]["S"], item) for item in page["Items"])
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def read(store: BusinessStore, business_id: str) -> Business:
    found = store.get(business_id)
    assert found is not None
    return found


def test_the_management_servers_item_reads_with_its_owner_as_a_member(store: BusinessStore) -> None:
    """companyName, an upper-case businessType, locations without or with `active`, ownerUserId (a
    member with an owner role of "*", as a creator here), version 0; a suspended status reads as
    active and is kept as legacyStatus with every attribute not modelled here."""
    business = read(store, "B2500002")
    assert (business.name, business.type, business.status) == (
        "Clinica Zâmbet S.R.L.",
        BusinessType.DENTAL,
        BusinessStatus.ACTIVE,
    )
    assert business.locations == (
        Location(id="L2500003", name="Zâmbet Centru", address="Cluj-Napoca", timezone="Europe/Bucharest"),
        Location(id="L2500004", name="Zâmbet Nord", address="Cluj-Napoca", active=False),
    )
    assert (business.settings.currency, business.settings.language) == ("RON", "ro")
    assert business.owner == "sub-owner-zambet"
    assert business.permissions.members["sub-owner-zambet"].role == "owner"
    assert business.permissions.roles["owner"].permissions == ("*",)
    assert business.version == 0
    assert business.create_time is not None
    assert business.create_time.isoformat() == "2025-08-13T01:07:50.527000+00:00"
    kept = plain(dict(business.unmodelled))
    assert kept["legacyStatus"] == "suspended"
    assert kept["domainLabel"] == "zambet"
    assert kept["credits"] == {"total": 100, "available": Decimal("12.5"), "currency": "RON"}
    assert {"companyName", "businessType", "ownerUserId", "businessId"}.isdisjoint(kept)


def test_the_readers_item_reads_hours_by_day_name_features_and_location_ids(store: BusinessStore) -> None:
    """businessName, locationId/isActive, working hours keyed by day name with isOpen (ISO days,
    closed when not open), features as a list; string permissions are kept, not read as roles."""
    business = read(store, "B2400007")
    assert business.name == "FitZone"
    assert business.type is BusinessType.GYM
    [location] = business.locations
    assert (location.id, location.phone, location.active) == ("L2400010", "+40700000000", True)
    hours = [(wh.day, wh.open, wh.close, wh.closed) for wh in business.settings.working_hours]
    assert hours == [(1, "06:00", "22:00", False), (6, "08:00", "14:00", False), (7, "00:00", "00:00", True)]
    assert dict(business.settings.features) == {"classes": True, "lockers": True}
    assert (business.settings.date_format, business.settings.time_format) == ("DD/MM/YYYY", "24h")
    assert business.permissions == Permissions()
    assert plain(dict(business.unmodelled))["legacyPermissions"] == ["read:resources", "manage:memberships"]


def test_missing_fields_read_empty_a_deleted_one_is_deleted_and_no_type_is_malformed(
    store: BusinessStore,
) -> None:
    """An item with only a type reads with empty fields; status deleted (or deletedAt) is deleted;
    an item without a type cannot be read without guessing its catalog: malformed, never defaulted."""
    sparse = read(store, "B2400009")
    assert (sparse.name, sparse.locations, sparse.owner, sparse.create_time) == ("", (), "", None)
    assert sparse.type is BusinessType.HOTEL
    assert read(store, "B2300001").status is BusinessStatus.DELETED
    with pytest.raises(ValueError, match="B2300002"):
        store.get("B2300002")
    with pytest.raises(ValueError, match="B2300002"):
        store.list(page_size=50, page_token="", member=None, include_deleted=True)


def test_the_next_write_rewrites_the_item_in_the_current_shape_keeping_the_rest(store: BusinessStore) -> None:
    """A write to an original item (version 0) is conditional on it still having no version; it
    writes the current shape, version 1, with the unmodelled attributes as they were, and the
    derived owner's membership item in the same transaction; reading it back gives the same."""
    business = read(store, "B2500002")
    without_owner = replace(business, permissions=replace(business.permissions, members={}))
    renamed = store.update(replace(business, name="Clinica Zâmbet"), previous=without_owner)
    item = table(store)["B2500002"]
    assert plain(item)["kind"] == "business"
    assert plain(item)["version"] == 1
    assert plain(item)["name"] == "Clinica Zâmbet"
    assert plain(item)["legacyStatus"] == "suspended"
    assert plain(item)["credits"]["available"] == Decimal("12.5")
    assert {"companyName", "businessType", "ownerUserId"}.isdisjoint(item)
    assert membership_id("sub-owner-zambet", "B2500002") in table(store)
    assert read(store, "B2500002") == renamed
    assert to_item(renamed) == item
    with pytest.raises(Aborted):
        store.update(replace(business, name="Stale"), previous=business)


def test_rewrite_items_counts_rewrites_once_and_the_second_run_changes_nothing(store: BusinessStore) -> None:
    """Dry run: 4 to rewrite, 1 unreadable, nothing written. Run: each original item in the current
    shape (reading the same business), the owner indexed, the unreadable one untouched. A second
    run rewrites nothing and the table is exactly as it was."""
    current = store.create(
        Business(id="C1", name="Current", type=BusinessType.GYM, permissions=Permissions(), owner="svc")
    ).business
    before = table(store)
    dry = rewrite_items(store, dry_run=True)
    assert (dry.businesses, dry.current, dry.rewritten, dry.unreadable) == (5, 1, 4, ["B2300002"])
    assert table(store) == before

    expected = {document["id"]: from_item(raw(document)) for document in ORIGINAL}
    done = rewrite_items(store, dry_run=False)
    assert (done.businesses, done.current, done.rewritten, done.changed_meanwhile) == (5, 1, 4, 0)
    after = table(store)
    for business_id, original in expected.items():
        rewritten = read(store, business_id)
        assert rewritten.version == 1
        assert replace(rewritten, version=0, update_time=original.update_time) == original
        assert plain(after[business_id])["kind"] == "business"
    assert after["B2300002"] == before["B2300002"]
    assert after["C1"] == before["C1"]
    assert read(store, "C1") == current
    owned = store.list(page_size=10, page_token="", member="sub-owner-zambet", include_deleted=False)
    assert [b.id for b in owned.businesses] == ["B2500002"]

    again = rewrite_items(store, dry_run=False)
    assert (again.businesses, again.current, again.rewritten) == (5, 5, 0)
    assert table(store) == after


def test_rewrite_items_command_reports_and_exits_non_zero_while_items_are_unreadable(
    store: BusinessStore, moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """`simplu-grpc rewrite-items --dry-run` prints the counts and writes nothing; the run names the
    unreadable item on stderr and exits 1 so an operator notices; run again it rewrites nothing."""
    for key, value in {
        "AWS_REGION": REGION,
        "COGNITO_USER_POOL_ID": "us-east-1_testpool",
        "COGNITO_CLIENT_ID": "test-client",
        "DYNAMODB_ENDPOINT": moto_server.url,
        "DYNAMODB_BUSINESS_INFO_TABLE": store._table,
    }.items():
        monkeypatch.setenv(key, value)
    before = table(store)
    assert cli.main(["rewrite-items", "--dry-run"]) == 1
    output = capsys.readouterr()
    assert "4 businesses, 0 already current, 4 would be rewritten (dry run)" in output.out
    assert "unreadable (left as it is): B2300002" in output.err
    assert table(store) == before
    assert cli.main(["rewrite-items"]) == 1
    assert "4 rewritten" in capsys.readouterr().out
    assert cli.main(["rewrite-items"]) == 1
    assert "4 already current, 0 rewritten" in capsys.readouterr().out
