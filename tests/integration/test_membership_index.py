"""The membership index against a real moto server: a person's businesses are a Query of the
index, its items follow every membership change in the business's own transaction, and
``simplu-grpc index-members`` backfills businesses written before it existed."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from simplu_grpc import cli
from simplu_grpc.adapters.dynamodb.business_items import to_item
from simplu_grpc.adapters.dynamodb.business_migrations import index_members
from simplu_grpc.adapters.dynamodb.business_store import MAX_MEMBERS_ON_CREATE, BusinessStore
from simplu_grpc.adapters.dynamodb.membership_items import membership_id
from simplu_grpc.devstack.moto_server import MotoServer, client, create_business_table
from simplu_grpc.domain.business.model import (
    Business,
    BusinessStatus,
    BusinessType,
    Location,
    Member,
    Permissions,
    Role,
    request_key,
)
from simplu_grpc.errors import Aborted, BusinessStoreUnavailable, InvalidArgument
from simplu_grpc.metrics import Metrics

pytestmark = pytest.mark.integration
REGION = "us-east-1"


@dataclass
class Reads:
    """What DynamoDB answered the store: operations called and items each read."""

    calls: list[tuple[str, int]] = field(default_factory=list)

    def record(self, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name == "BatchGetItem":
            read = sum(len(items) for items in parsed.get("Responses", {}).values())
        else:
            read = int(parsed.get("ScannedCount", parsed.get("Count", 0)))
        self.calls.append((model.name, read))

    @property
    def items(self) -> int:
        return sum(read for _, read in self.calls)

    @property
    def operations(self) -> set[str]:
        return {name for name, _ in self.calls}


@pytest.fixture
def table(moto_server: MotoServer) -> Iterator[str]:
    name = f"biz-{secrets.token_hex(4)}"
    create_business_table(moto_server.url, REGION, name)
    yield name
    client("dynamodb", moto_server.url, REGION).delete_table(TableName=name)


@pytest.fixture
def store(moto_server: MotoServer, table: str) -> BusinessStore:
    return BusinessStore(table=table, client=client("dynamodb", moto_server.url, REGION), metrics=Metrics())


def business(business_id: str, *members: str, owner: str = "") -> Business:
    return Business(
        id=business_id,
        name=f"Business {business_id}",
        type=BusinessType.DENTAL,
        locations=(Location(id="main", name="Main"),),
        permissions=Permissions(
            roles={"owner": Role(permissions=("*",)), "desk": Role(permissions=("patient:read",))},
            members={sub: Member(role="owner" if sub == owner else "desk") for sub in members},
        ),
        owner=owner,
    )


def raw_ids(store: BusinessStore, prefix: str) -> set[str]:
    """Every item id starting with ``prefix``, read from the table itself (consistent scan)."""
    found: set[str] = set()
    kwargs: dict[str, Any] = {"TableName": store._table, "ConsistentRead": True}
    while True:
        page = store._client.scan(**kwargs)
        found.update(item["id"]["S"] for item in page["Items"] if item["id"]["S"].startswith(prefix))
        if "LastEvaluatedKey" not in page:
            return found
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def listed(store: BusinessStore, member: str, *, page_size: int = 50) -> list[str]:
    """Every business id ``member`` lists, following page tokens to the end."""
    ids: list[str] = []
    token = ""
    while True:
        page = store.list(page_size=page_size, page_token=token, member=member, include_deleted=False)
        ids.extend(b.id for b in page.businesses)
        token = page.next_token
        if not token:
            return ids


def batch_put(store: BusinessStore, items: list[dict[str, Any]]) -> None:
    """Seed items fast, bypassing the store (BatchWriteItem, 25 at a time, a few writers)."""

    def write(chunk: list[dict[str, Any]]) -> None:
        requests: list[dict[str, Any]] = [{"PutRequest": {"Item": item}} for item in chunk]
        while requests:
            answer = store._client.batch_write_item(RequestItems={store._table: requests})
            requests = answer.get("UnprocessedItems", {}).get(store._table, [])

    chunks = [items[start : start + 25] for start in range(0, len(items), 25)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(write, chunks))


def lean_item(business_id: str, owner: str) -> dict[str, Any]:
    """A business item with only what the reader requires (seeding 20,000 full ones takes minutes)."""
    role = {"M": {"role": {"S": "owner"}, "locationIds": {"L": []}}}
    return {
        "id": {"S": business_id},
        "kind": {"S": "business"},
        "name": {"S": f"Business {business_id}"},
        "type": {"S": "dental"},
        "status": {"S": "active"},
        "owner": {"S": owner},
        "version": {"N": "1"},
        "permissions": {
            "M": {"roles": {"M": {"owner": {"L": [{"S": "*"}]}}}, "members": {"M": {owner: role}}}
        },
    }


def membership(subject: str, business_id: str) -> dict[str, Any]:
    return {
        "id": {"S": membership_id(subject, business_id)},
        "kind": {"S": "member"},
        "memberSub": {"S": subject},
        "memberOf": {"S": business_id},
    }


@pytest.mark.slow
def test_a_member_of_3_among_20000_businesses_reads_3_memberships_and_no_scan(store: BusinessStore) -> None:
    """20,000 businesses (each with its owner's membership), one person a member of 3: listing them
    is one Query reading their 3 memberships and one BatchGetItem of the 3 businesses, no Scan."""
    seeded: list[dict[str, Any]] = []
    for index in range(20_000):
        business_id, owner = f"seed{index:05d}", f"owner-{index:05d}"
        seeded += [lean_item(business_id, owner), membership(owner, business_id)]
    batch_put(store, seeded)
    mine = sorted(f"mine{index}" for index in range(3))
    for business_id in mine:
        store.create(business(business_id, "alice", "owner-00007", owner="owner-00007"))

    reads = Reads()
    store._client.meta.events.register("after-call.dynamodb", reads.record)
    page = store.list(page_size=50, page_token="", member="alice", include_deleted=False)

    assert [b.id for b in page.businesses] == mine
    assert page.next_token == ""
    assert reads.operations == {"Query", "BatchGetItem"}
    assert reads.items - len(mine) <= 3  # beyond their own businesses: the 3 membership items
    assert listed(store, "owner-00007") == ["mine0", "mine1", "mine2", "seed00007"]


def test_membership_items_follow_create_set_and_remove_in_the_same_write(store: BusinessStore) -> None:
    """Create writes one membership item per member; a write that adds and removes members puts
    and deletes theirs; a stale write (ABORTED) changes no membership item."""
    created = store.create(business("b1", "ana", "bob", owner="ana"), request_key=request_key("ana", "r1"))
    assert raw_ids(store, "member#") == {membership_id("ana", "b1"), membership_id("bob", "b1")}
    assert listed(store, "bob") == ["b1"]

    members = {"ana": Member(role="owner"), "cem": Member(role="desk")}
    changed = store.update(
        replace(created.business, permissions=replace(created.business.permissions, members=members)),
        previous=created.business,
    )
    assert raw_ids(store, "member#") == {membership_id("ana", "b1"), membership_id("cem", "b1")}
    assert listed(store, "bob") == []
    assert listed(store, "cem") == ["b1"]

    with pytest.raises(Aborted):
        store.update(
            replace(created.business, permissions=replace(created.business.permissions, members={})),
            previous=created.business,
        )
    assert raw_ids(store, "member#") == {membership_id("ana", "b1"), membership_id("cem", "b1")}
    current = store.get("b1")
    assert current == changed


def test_a_members_pages_skip_deleted_stale_and_foreign_businesses(store: BusinessStore) -> None:
    """Pages of 2 over a member's 5 businesses return each once in id order; a deleted business, a
    stale membership item (the business no longer lists them) and a missing business are skipped;
    the token is bound to the person and to show_deleted."""
    for index in range(5):
        store.create(business(f"p{index}", "dana", owner="dana"))
    gone = store.get("p3")
    assert gone is not None
    store.update(replace(gone, status=BusinessStatus.DELETED), previous=gone)
    store.create(business("p9", "eve", owner="eve"))
    batch_put(store, [membership("dana", "p9"), membership("dana", "p8")])  # stale, and no business p8

    assert listed(store, "dana", page_size=2) == ["p0", "p1", "p2", "p4"]
    first = store.list(page_size=2, page_token="", member="dana", include_deleted=False)
    with pytest.raises(InvalidArgument):
        store.list(page_size=2, page_token=first.next_token, member="eve", include_deleted=False)
    with pytest.raises(InvalidArgument):
        store.list(page_size=2, page_token=first.next_token, member=None, include_deleted=False)
    with_deleted = store.list(page_size=10, page_token="", member="dana", include_deleted=True)
    assert [b.id for b in with_deleted.businesses] == ["p0", "p1", "p2", "p3", "p4"]


def test_a_create_with_more_members_than_one_transaction_holds_is_refused(store: BusinessStore) -> None:
    """A create names at most MAX_MEMBERS_ON_CREATE members (one transaction holds the business and
    every membership item): past that INVALID_ARGUMENT on the members field, and nothing is written."""
    crowd = [f"m{index:03d}" for index in range(MAX_MEMBERS_ON_CREATE + 1)]
    with pytest.raises(InvalidArgument) as refused:
        store.create(business("big", *crowd, owner="m000"), request_key=request_key("m000", "r"))
    assert [v.field for v in refused.value.violations] == ["business.permissions.members"]
    assert raw_ids(store, "") == set()
    created = store.create(business("fits", *crowd[:-1], owner="m000"), request_key=request_key("m000", "r"))
    assert len(created.business.permissions.members) == MAX_MEMBERS_ON_CREATE
    assert len(raw_ids(store, "member#")) == MAX_MEMBERS_ON_CREATE


def test_index_members_backfills_once_and_resumes(store: BusinessStore) -> None:
    """Businesses written before the index (no membership items): a dry run counts what is missing
    and writes nothing; a run writes exactly that; a second run finds nothing missing; a run from
    the middle (--start-after) only covers the rest."""
    old = [business(f"old{index:02d}", "fay", f"guest{index}", owner="fay") for index in range(30)]
    batch_put(store, [to_item(replace(b, version=1)) for b in old])
    assert listed(store, "fay") == []

    dry = index_members(store, dry_run=True)
    assert (dry.businesses, dry.memberships, dry.missing) == (30, 60, 60)
    assert raw_ids(store, "member#") == set()

    pages: list[str | None] = []
    done = index_members(store, dry_run=False, on_page=lambda report: pages.append(report.last_id))
    assert done.missing == 60
    assert len(raw_ids(store, "member#")) == 60
    assert listed(store, "fay") == [b.id for b in old]
    assert listed(store, "guest7") == ["old07"]
    assert pages[-1] == done.last_id

    again = index_members(store, dry_run=False)
    assert (again.businesses, again.memberships, again.missing) == (30, 60, 0)

    store._client.delete_item(TableName=store._table, Key={"id": {"S": membership_id("guest29", "old29")}})
    store._client.delete_item(TableName=store._table, Key={"id": {"S": membership_id("guest0", "old00")}})
    scan_order = [item["id"]["S"] for item in store._client.scan(TableName=store._table)["Items"]]
    middle = scan_order.index("old15")
    resumed = index_members(store, dry_run=False, start_after="old15")
    after = {i for i in scan_order[middle + 1 :] if not i.startswith("member#")}
    assert resumed.businesses == len(after)
    assert resumed.missing == (1 if "old29" in after else 0) + (1 if "old00" in after else 0)


def test_index_members_command_dry_run_then_run(
    store: BusinessStore, moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """`simplu-grpc index-members --dry-run` reports the count and writes nothing; without it the
    items are written; run twice, the second run writes nothing."""
    batch_put(
        store, [to_item(replace(business(f"c{index}", "gus", owner="gus"), version=1)) for index in range(4)]
    )
    for key, value in {
        "AWS_REGION": REGION,
        "COGNITO_USER_POOL_ID": "us-east-1_testpool",
        "COGNITO_CLIENT_ID": "test-client",
        "DYNAMODB_ENDPOINT": moto_server.url,
        "DYNAMODB_BUSINESS_INFO_TABLE": store._table,
    }.items():
        monkeypatch.setenv(key, value)

    assert cli.main(["index-members", "--dry-run"]) == 0
    assert (
        "4 businesses, 4 memberships, 4 membership items would be written (dry run)"
        in capsys.readouterr().out
    )
    assert raw_ids(store, "member#") == set()
    assert cli.main(["index-members"]) == 0
    assert "4 membership items written" in capsys.readouterr().out
    assert cli.main(["index-members"]) == 0
    assert "0 membership items written" in capsys.readouterr().out
    assert listed(store, "gus") == ["c0", "c1", "c2", "c3"]


def test_a_table_without_the_index_is_unavailable_and_says_which_index(
    moto_server: MotoServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A table created before the membership index: a person's listing is UNAVAILABLE naming the
    missing index (a deployment step, not a bug), and the log says how to fix it."""
    dynamodb = client("dynamodb", moto_server.url, REGION)
    name = f"old-{secrets.token_hex(4)}"
    dynamodb.create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    try:
        store = BusinessStore(table=name, client=dynamodb, metrics=Metrics())
        with pytest.raises(BusinessStoreUnavailable) as raised:
            store.list(page_size=5, page_token="", member="hal", include_deleted=False)
        assert "member-index" in raised.value.message
        assert "index-members" in caplog.text
    finally:
        dynamodb.delete_table(TableName=name)
