"""Business-info store on DynamoDB (boto3 client injected; one item per business, key ``id``).

Library errors stop here (AWS Powertools style; ``calls`` runs and translates every call): a
failed condition becomes the domain error (``AlreadyExists`` on create, ``Aborted`` on a stale
version), throttling and an unreachable or misconfigured table become
``BusinessStoreUnavailable``. Nothing is ever returned that DynamoDB did not answer: a
failed read raises, it never yields an empty or default business.

Business items are shaped by ``business_items``, listings run in ``business_listing``. Two
other kinds of item share the table (business ids never contain ``#``, so no kind can collide with another):

- ``id = "request#<digest>"``: an idempotent create's key (AIP-155), written in the same
  transaction as the business, so a retried create finds the first one's business id.
- ``id = "member#<sub>#<business id>"``: one per membership, carrying ``memberSub`` and
  ``memberOf``, the keys of the sparse global secondary index ``member-index``. A person's
  businesses are one Query of that index (then one BatchGetItem of the page's businesses),
  never a scan. A GSI, not a sort key: the table's key is ``id`` alone, fixed by the existing
  deployments, and a person's memberships must be one Query. Every write that changes the
  members writes their membership items in the same TransactWriteItems as the business item
  (conditional on its version), so the index cannot drift from the businesses; ``index_members``
  backfills it for businesses written before it existed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from simplu_grpc.adapters.dynamodb.business_items import from_item, is_business_item, iso, to_item
from simplu_grpc.adapters.dynamodb.business_listing import BATCH_GET_KEYS, BusinessListing
from simplu_grpc.adapters.dynamodb.calls import (
    ConditionFailed,
    Items,
    ItemTooLarge,
    TableCalls,
    TransactionCancelled,
)
from simplu_grpc.adapters.dynamodb.membership_items import membership_id, membership_item
from simplu_grpc.domain.business.model import KIND_REQUEST, Business, BusinessPage, CreateOutcome
from simplu_grpc.errors import (
    Aborted,
    AlreadyExists,
    BusinessStoreUnavailable,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
)
from simplu_grpc.metrics import Metrics

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

log = logging.getLogger(__name__)

# A list page stops growing past this many bytes of items, well under gRPC's 4 MiB message.
PAGE_BYTES = 2 * 1024 * 1024
# How long an idempotency key is remembered (DynamoDB TTL attribute ``expiresAt``).
REQUEST_KEY_TTL_SECONDS = 7 * 24 * 3600

# DynamoDB's limits: actions in one TransactWriteItems, puts in one BatchWriteItem.
_TRANSACTION_ITEMS = 100
_BATCH_WRITE_ITEMS = 25
# A create writes the business, its request key and one item per member in one transaction.
MAX_MEMBERS_ON_CREATE = _TRANSACTION_ITEMS - 2


class BusinessStore:
    """get / create / update (conditional on version) / list (paginated scan) / probe."""

    def __init__(
        self,
        *,
        table: str,
        client: DynamoDBClient,
        metrics: Metrics,
        clock: Any = None,
        page_bytes: int = PAGE_BYTES,
        attempts: int = 3,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not table:
            raise ValueError("table must not be empty")
        if page_bytes < 1:
            raise ValueError("page_bytes must be positive")
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._attempts = attempts
        self._sleep = sleep
        self._table = table
        self._client = client
        self._now = clock or (lambda: datetime.now(UTC))
        self._calls = TableCalls(table=table, client=client, metrics=metrics, attempts=attempts, sleep=sleep)
        self._listing = BusinessListing(self._calls, table=table, client=client, page_bytes=page_bytes)

    # --- reads ---------------------------------------------------------------------------

    def list(
        self,
        *,
        page_size: int,
        page_token: str,
        member: str | None,
        include_deleted: bool,
    ) -> BusinessPage:
        """One page of businesses, a person's (``member``) or all (``business_listing``)."""
        return self._listing.list(
            page_size=page_size, page_token=page_token, member=member, include_deleted=include_deleted
        )

    def get(self, business_id: str, *, consistent: bool = True) -> Business | None:
        """The business, or None when there is no such item. Raises when DynamoDB fails."""
        response = self._calls.call(
            "get_item",
            self._client.get_item,
            TableName=self._table,
            Key={"id": {"S": business_id}},
            ConsistentRead=consistent,
        )
        item = response.get("Item")
        if item is None or not is_business_item(item):
            return None
        return from_item(item)

    def find_request(self, request_key: str) -> str | None:
        """The business id an earlier create with this idempotency key produced, if any."""
        response = self._calls.call(
            "get_item",
            self._client.get_item,
            TableName=self._table,
            Key={"id": {"S": request_key}},
            ConsistentRead=True,
        )
        item = response.get("Item")
        if item is None or item.get("kind", {}).get("S") != KIND_REQUEST:
            return None
        return str(item["businessId"]["S"])

    # --- writes --------------------------------------------------------------------------

    def create(self, business: Business, *, request_key: str | None = None) -> CreateOutcome:
        """Create the business (version 1) and its membership items; AlreadyExists when the id is taken.

        With ``request_key``, the key is written in the same transaction; if it already
        exists the earlier create's business is returned instead (``replayed``).
        """
        members = sorted(business.permissions.members)
        if len(members) > MAX_MEMBERS_ON_CREATE:
            # One transaction holds the business and every membership item (DynamoDB: 100 actions).
            raise InvalidArgument.field(
                "business.permissions.members",
                f"at most {MAX_MEMBERS_ON_CREATE} members when creating a business (got {len(members)});"
                " add the others with SetMember",
            )
        now = self._now()
        stored = replace(business, version=1, create_time=now, update_time=now)
        item = to_item(stored)
        if request_key is None and not members:
            try:
                self._calls.call(
                    "put_item",
                    self._client.put_item,
                    TableName=self._table,
                    Item=item,
                    ConditionExpression="attribute_not_exists(id)",
                )
            except ConditionFailed:
                raise _already_exists(business.id) from None
            except ItemTooLarge:
                raise _too_large_to_create(business.id) from None
            return CreateOutcome(stored, replayed=False)
        actions: list[dict[str, Any]] = []
        if request_key is not None:
            marker = {
                "id": {"S": request_key},
                "kind": {"S": KIND_REQUEST},
                "businessId": {"S": business.id},
                "createdAt": {"S": iso(now)},
                "expiresAt": {"N": str(int(now.timestamp()) + REQUEST_KEY_TTL_SECONDS)},
            }
            actions.append(self._put(marker, condition="attribute_not_exists(id)"))
        business_action = len(actions)
        actions.append(self._put(item, condition="attribute_not_exists(id)"))
        actions.extend(self._put(membership_item(subject, business.id)) for subject in members)
        try:
            self._calls.call("transact_write_items", self._client.transact_write_items, TransactItems=actions)
        except ItemTooLarge:
            raise _too_large_to_create(business.id) from None
        except TransactionCancelled as cancelled:
            if request_key is not None and cancelled.failed(0):
                earlier = self.find_request(request_key)
                previous = self.get(earlier) if earlier else None
                if previous is None:
                    # The key exists but its business does not: only a manual deletion does this.
                    # Not UNAVAILABLE: retrying the same request_id can never succeed.
                    raise FailedPrecondition(
                        "the earlier create with this request_id left no business; use a new request_id",
                        reason="REQUEST_ID_ORPHANED",
                    ) from None
                return CreateOutcome(previous, replayed=True)
            if cancelled.failed(business_action):
                raise _already_exists(business.id) from None
            raise BusinessStoreUnavailable("DynamoDB cancelled the create; retry it") from None
        return CreateOutcome(stored, replayed=False)

    def update(self, business: Business, *, previous: Business) -> Business:
        """Write ``business`` if the stored version is still ``business.version``; else Aborted.

        ``previous`` is the stored business (same id and version) that ``business`` changes:
        members it had and ``business`` has not lose their membership items, new ones get
        theirs, in the same transaction as the business item.
        """
        if previous.id != business.id or previous.version != business.version:
            raise ValueError("previous must be the stored business (same id and version) being changed")
        updated = replace(business, version=business.version + 1, update_time=self._now())
        item = to_item(updated)
        condition = "attribute_exists(id) AND #version = :version"
        names = {"#version": "version"}
        values: dict[str, Any] = {":version": {"N": str(business.version)}}
        if business.version == 0:
            # An item of the original system (no version yet): this write gives it the current shape.
            condition, values = "attribute_exists(id) AND attribute_not_exists(#version)", {}
        before, after = set(previous.permissions.members), set(business.permissions.members)
        memberships = [self._put(membership_item(s, business.id)) for s in sorted(after - before)]
        memberships += [self._delete(membership_id(s, business.id)) for s in sorted(before - after)]
        if len(memberships) >= _TRANSACTION_ITEMS:
            # Members change through SetMember and RemoveMember, one at a time.
            raise ValueError(f"{len(memberships)} membership changes do not fit in one transaction")
        business_put = self._put(item, condition=condition)
        business_put["Put"]["ExpressionAttributeNames"] = names
        if values:
            business_put["Put"]["ExpressionAttributeValues"] = values
        try:
            if not memberships:
                self._calls.call("put_item", self._client.put_item, **business_put["Put"])
            else:
                self._calls.call(
                    "transact_write_items",
                    self._client.transact_write_items,
                    TransactItems=[business_put, *memberships],
                )
        except (ConditionFailed, TransactionCancelled) as failed:
            if isinstance(failed, TransactionCancelled) and not failed.failed(0):
                raise BusinessStoreUnavailable("DynamoDB cancelled the update; retry it") from None
            raise Aborted(
                f"business {business.id!r} was changed by another request; read it again and retry",
                metadata={"business_id": business.id},
            ) from None
        except ItemTooLarge:
            raise FailedPrecondition(
                f"this change would make business {business.id!r} larger than DynamoDB's 400 KB item "
                "limit; remove members, roles, locations or settings first",
                reason="BUSINESS_TOO_LARGE",
                metadata={"business_id": business.id},
            ) from None
        return updated

    def _put(self, item: dict[str, Any], *, condition: str = "") -> dict[str, Any]:
        """A Put action of a TransactWriteItems on this table."""
        put: dict[str, Any] = {"TableName": self._table, "Item": item}
        if condition:
            put["ConditionExpression"] = condition
        return {"Put": put}

    def _delete(self, item_id: str) -> dict[str, Any]:
        """A Delete action of a TransactWriteItems on this table."""
        return {"Delete": {"TableName": self._table, "Key": {"id": {"S": item_id}}}}

    # --- table-wide maintenance (the one-shot migrations in ``business_migrations``) -------

    def scan_page(self, *, start_after: str | None, limit: int) -> tuple[Items, str | None]:
        """One page of raw items of every kind in scan order, and the id to resume after (None: the end)."""
        kwargs: dict[str, Any] = {"TableName": self._table, "Limit": limit}
        if start_after:
            kwargs["ExclusiveStartKey"] = {"id": {"S": start_after}}
        response = self._calls.call("scan", self._client.scan, **kwargs)
        last = response.get("LastEvaluatedKey")
        return list(response.get("Items", [])), (str(last["id"]["S"]) if last else None)

    def existing_ids(self, item_ids: Sequence[str]) -> set[str]:
        """Which of these item ids exist (keys only, 100 per BatchGetItem)."""
        found: set[str] = set()
        for start in range(0, len(item_ids), BATCH_GET_KEYS):
            keys = [{"id": {"S": item_id}} for item_id in item_ids[start : start + BATCH_GET_KEYS]]
            found.update(str(item["id"]["S"]) for item in self._calls.batch_get(keys, projection="id"))
        return found

    def put_memberships(self, memberships: Sequence[tuple[str, str]]) -> None:
        """Write membership items for these (subject, business id) pairs (25 per BatchWriteItem).

        Unconditional: a membership item holds nothing but its keys, so writing one twice is a no-op.
        """
        for start in range(0, len(memberships), _BATCH_WRITE_ITEMS):
            requests: Items = [
                {"PutRequest": {"Item": membership_item(subject, business_id)}}
                for subject, business_id in memberships[start : start + _BATCH_WRITE_ITEMS]
            ]
            for attempt in range(self._attempts):
                if not requests:
                    break
                if attempt:
                    self._sleep(min(1.0, 0.05 * 2**attempt))
                response = self._calls.call(
                    "batch_write_item", self._client.batch_write_item, RequestItems={self._table: requests}
                )
                requests = response.get("UnprocessedItems", {}).get(self._table, [])
            if requests:
                raise BusinessStoreUnavailable(
                    "the business store is throttling writes; run again to resume",
                    metadata={"operation": "batch_write_item"},
                )

    def probe(self) -> None:
        """A light call for readiness and dependency status: the table exists and answers."""
        self._calls.call("describe_table", self._client.describe_table, TableName=self._table)


def _too_large_to_create(business_id: str) -> InvalidArgument:
    description = (
        "is larger than DynamoDB's 400 KB item limit; use fewer or shorter locations, members or settings"
    )
    return InvalidArgument(
        f"business: {description}",
        violations=[FieldViolation("business", description)],
        reason="BUSINESS_TOO_LARGE",
        metadata={"business_id": business_id},
    )


def _already_exists(business_id: str) -> AlreadyExists:
    return AlreadyExists(f"business {business_id!r} already exists", metadata={"business_id": business_id})
