"""BusinessStore against a real moto server: conditions, versions, paging, idempotency, outages."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import boto3
import pytest
from botocore.config import Config

from simplu_grpc import context
from simplu_grpc.adapters.dynamodb.business_store import BusinessStore
from simplu_grpc.devstack.moto_server import MotoServer, create_business_table
from simplu_grpc.domain.business.model import (
    Business,
    BusinessSettings,
    BusinessStatus,
    BusinessType,
    Location,
    Member,
    Permissions,
    Role,
    WorkingHours,
    request_key,
)
from simplu_grpc.errors import (
    Aborted,
    AlreadyExists,
    BusinessStoreUnavailable,
    FailedPrecondition,
    InvalidArgument,
)
from simplu_grpc.metrics import Metrics

pytestmark = pytest.mark.integration
REGION = "us-east-1"


def dynamodb(endpoint: str, *, attempts: int = 3) -> Any:
    return boto3.client(
        "dynamodb",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(
            connect_timeout=1, read_timeout=2, retries={"mode": "standard", "max_attempts": attempts}
        ),
    )


@pytest.fixture
def store(moto_server: MotoServer) -> Iterator[BusinessStore]:
    table = f"biz-{secrets.token_hex(4)}"
    create_business_table(moto_server.url, REGION, table)
    client = dynamodb(moto_server.url)
    yield BusinessStore(table=table, client=client, metrics=Metrics())
    client.delete_table(TableName=table)
    client.close()


def sample(business_id: str, *, members: dict[str, Member] | None = None) -> Business:
    return Business(
        id=business_id,
        name="Gym Nine",
        type=BusinessType.GYM,
        locations=(Location(id="north-1", name="North", timezone="Europe/Bucharest"),),
        settings=BusinessSettings(
            currency="EUR",
            working_hours=(WorkingHours(day=1, open="06:00", close="22:00"),),
            features={"classes": True},
            extras={"ratio": 0.25, "nested": {"list": [1, "two", None, True]}},
        ),
        permissions=Permissions(roles={"owner": Role(permissions=("*",))}, members=members or {}),
        owner="owner-sub",
        unregistered_location_ids=("north-1",),
    )


def test_round_trip_keeps_every_field(store: BusinessStore) -> None:
    """What is created is what is read back: nested settings, floats in extras, members, pending ids."""
    created = store.create(sample("gym9", members={"owner-sub": Member(role="owner")})).business
    assert created.version == 1
    assert created.create_time is not None
    read = store.get("gym9")
    assert read == created
    assert read is not None
    assert read.settings.extras == {"ratio": 0.25, "nested": {"list": [1, "two", None, True]}}


def test_create_is_conditional(store: BusinessStore) -> None:
    """A second create of the same id is ALREADY_EXISTS and leaves the first untouched."""
    store.create(sample("dup1"))
    with pytest.raises(AlreadyExists):
        store.create(replace(sample("dup1"), name="Other"))
    found = store.get("dup1")
    assert found is not None
    assert found.name == "Gym Nine"


def test_update_is_conditional_on_version(store: BusinessStore) -> None:
    """Writing from a stale copy is ABORTED; the stored item keeps the newer write."""
    first = store.create(sample("ver1")).business
    newer = store.update(replace(first, name="Renamed"), previous=first)
    assert newer.version == 2
    with pytest.raises(Aborted):
        store.update(replace(first, name="Stale write"), previous=first)
    found = store.get("ver1")
    assert found is not None
    assert found.name == "Renamed"


def test_request_key_replays_the_first_create(store: BusinessStore) -> None:
    """Two creates with one request key: one business, the second answer is the first business."""
    key = request_key("caller-sub", "req-1")
    first = store.create(sample("idem1"), request_key=key)
    again = store.create(sample("idem2"), request_key=key)
    assert not first.replayed
    assert again.replayed
    assert again.business.id == "idem1"
    assert store.get("idem2") is None
    assert request_key("someone-else", "req-1") != key


def test_orphaned_request_key_is_a_failed_precondition_not_unavailable(store: BusinessStore) -> None:
    """A request key whose business was deleted by hand: FAILED_PRECONDITION (REQUEST_ID_ORPHANED),
    not UNAVAILABLE, which clients would retry forever with the same request_id."""
    key = request_key("caller-sub", "req-orphan")
    store.create(sample("orphan1"), request_key=key)
    store._client.delete_item(TableName=store._table, Key={"id": {"S": "orphan1"}})
    with pytest.raises(FailedPrecondition) as raised:
        store.create(sample("orphan2"), request_key=key)
    assert raised.value.reason == "REQUEST_ID_ORPHANED"
    assert "new request_id" in raised.value.message
    assert store.get("orphan2") is None


def test_list_pages_through_everything_once_and_filters(store: BusinessStore) -> None:
    """Paging by 2 over 7 businesses returns each once; deleted ones and request markers are hidden."""
    ids = {f"p{i}" for i in range(7)}
    for business_id in sorted(ids):
        store.create(
            sample(business_id, members={"m1": Member(role="owner")} if business_id < "p3" else None),
            request_key=request_key("s", business_id),
        )
    gone = store.get("p6")
    assert gone is not None
    store.update(replace(gone, status=BusinessStatus.DELETED), previous=gone)
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = store.list(page_size=2, page_token=token, member=None, include_deleted=False)
        pages += 1
        seen.extend(b.id for b in page.businesses)
        token = page.next_token
        if not token:
            break
    assert sorted(seen) == sorted(ids - {"p6"})
    assert pages >= 3
    mine = store.list(page_size=50, page_token="", member="m1", include_deleted=False)
    assert sorted(b.id for b in mine.businesses) == ["p0", "p1", "p2"]
    everything = store.list(page_size=50, page_token="", member=None, include_deleted=True)
    assert "p6" in {b.id for b in everything.businesses}


def test_page_tokens_are_bound_to_the_query(store: BusinessStore) -> None:
    """A token from one query is INVALID_ARGUMENT for another; garbage tokens too."""
    for business_id in ("t1", "t2", "t3"):
        store.create(sample(business_id))
    page = store.list(page_size=1, page_token="", member=None, include_deleted=False)
    assert page.next_token
    with pytest.raises(InvalidArgument):
        store.list(page_size=1, page_token=page.next_token, member=None, include_deleted=True)
    with pytest.raises(InvalidArgument):
        store.list(page_size=1, page_token=page.next_token, member="someone", include_deleted=False)
    for garbage in ("%%%", "eyJ2IjoxfQ", "bm90IGpzb24"):
        with pytest.raises(InvalidArgument):
            store.list(page_size=1, page_token=garbage, member=None, include_deleted=False)


def test_oversized_items_are_a_clear_client_error(store: BusinessStore) -> None:
    """Over DynamoDB's 400 KB item limit: INVALID_ARGUMENT (create) / FAILED_PRECONDITION (update),
    reason BUSINESS_TOO_LARGE, never INTERNAL; nothing is stored."""
    huge = replace(sample("huge1"), settings=BusinessSettings(extras={"blob": "x" * 450_000}))
    for key in (None, request_key("someone", "r1")):
        with pytest.raises(InvalidArgument) as raised:
            store.create(huge, request_key=key)
        assert raised.value.reason == "BUSINESS_TOO_LARGE"
    assert store.get("huge1") is None
    created = store.create(sample("huge2")).business
    with pytest.raises(FailedPrecondition) as grown:
        store.update(replace(created, settings=huge.settings), previous=created)
    assert grown.value.reason == "BUSINESS_TOO_LARGE"
    assert store.get("huge2") == created


def test_missing_table_is_unavailable(moto_server: MotoServer) -> None:
    """A table that does not exist is BUSINESS_STORE_UNAVAILABLE, never "no such business"."""
    store = BusinessStore(table="no-such-table", client=dynamodb(moto_server.url), metrics=Metrics())
    with pytest.raises(BusinessStoreUnavailable):
        store.get("x")
    with pytest.raises(BusinessStoreUnavailable):
        store.probe()


def test_stopped_dynamodb_is_unavailable_quickly() -> None:
    """moto stopped: get, create and list raise BUSINESS_STORE_UNAVAILABLE within a few seconds."""
    with MotoServer() as own:
        table = "down-test"
        create_business_table(own.url, REGION, table)
        metrics = Metrics()
        store = BusinessStore(table=table, client=dynamodb(own.url), metrics=metrics)
        store.create(sample("alive"))
        own.stop()
        started = time.monotonic()
        with context.bind(deadline=context.Deadline.after(10)):
            with pytest.raises(BusinessStoreUnavailable) as raised:
                store.get("alive")
            with pytest.raises(BusinessStoreUnavailable):
                store.create(sample("new"))
            with pytest.raises(BusinessStoreUnavailable):
                store.list(page_size=5, page_token="", member=None, include_deleted=False)
        assert time.monotonic() - started < 10
        assert raised.value.reason == "BUSINESS_STORE_UNAVAILABLE"
        assert (
            metrics.registry.get_sample_value(
                "simplu_dependency_calls_total",
                {"dependency": "dynamodb", "operation": "get_item", "outcome": "unreachable"},
            )
            == 1
        )


def test_large_businesses_make_shorter_pages(moto_server: MotoServer) -> None:
    """A byte budget ends a page early (still at least one business) and paging still sees everything."""
    table = f"biz-{secrets.token_hex(4)}"
    create_business_table(moto_server.url, REGION, table)
    store = BusinessStore(table=table, client=dynamodb(moto_server.url), metrics=Metrics(), page_bytes=1)
    for business_id in ("big1", "big2", "big3"):
        store.create(sample(business_id))
    seen: list[str] = []
    token = ""
    while True:
        page = store.list(page_size=50, page_token=token, member=None, include_deleted=False)
        assert len(page.businesses) == 1
        seen.extend(b.id for b in page.businesses)
        token = page.next_token
        if not token:
            break
    assert sorted(seen) == ["big1", "big2", "big3"]
