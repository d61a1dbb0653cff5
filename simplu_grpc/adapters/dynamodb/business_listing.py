"""ListBusinesses on DynamoDB: every business (a filtered scan) or one person's (the membership index).

Pages are bounded by count and by bytes (well under gRPC's message size); the page token is
opaque, bound to the query, and names the last business read.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from simplu_grpc import context
from simplu_grpc.adapters.dynamodb.business_items import KIND_BUSINESS, from_item, is_business_item
from simplu_grpc.adapters.dynamodb.calls import TableCalls
from simplu_grpc.adapters.dynamodb.membership_items import MEMBER_INDEX, MEMBER_OF, MEMBER_SUB, membership_key
from simplu_grpc.domain.business.model import Business, BusinessPage
from simplu_grpc.domain.checks import Violations, check_business_id
from simplu_grpc.errors import InvalidArgument

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# Keys in one BatchGetItem (DynamoDB's limit).
BATCH_GET_KEYS = 100


class BusinessListing:
    """The listing queries of ``BusinessStore.list``."""

    def __init__(self, calls: TableCalls, *, table: str, client: DynamoDBClient, page_bytes: int) -> None:
        self._calls = calls
        self._table = table
        self._client = client
        self._page_bytes = page_bytes

    def list(
        self,
        *,
        page_size: int,
        page_token: str,
        member: str | None,
        include_deleted: bool,
    ) -> BusinessPage:
        """One page of businesses; ``member`` limits it to that person's ones (a Query of the
        membership index, in business id order), without it every business (scan order).

        The token is opaque and bound to the query (member, include_deleted): used with
        another query it is INVALID_ARGUMENT. It names the last business read, so the next
        page starts right after it however many items the previous one read.
        """
        query = _query_fingerprint(member, include_deleted)
        start_after = _decode_token(page_token, query) if page_token else None
        if member is not None:
            return self._list_memberships(member, page_size, start_after, query, include_deleted)
        # Businesses, the original system's included (no kind); their status is read in full
        # (the original's may be missing or spelled otherwise), so it is checked here.
        names = {"#kind": "kind"}
        values: dict[str, Any] = {":business": {"S": KIND_BUSINESS}}
        conditions = ["(#kind = :business OR attribute_not_exists(#kind))"]
        # Scan reads `Limit` items before filtering: read a little more than a page each time.
        scan_limit = min(1000, max(page_size + 1, 100))
        found: list[Business] = []
        used = 0
        exclusive_start: Mapping[str, Any] | None = {"id": {"S": start_after}} if start_after else None
        while True:
            context.deadline().check("listing businesses")
            kwargs: dict[str, Any] = {
                "TableName": self._table,
                "FilterExpression": " AND ".join(conditions),
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
                "Limit": scan_limit,
            }
            if exclusive_start:
                kwargs["ExclusiveStartKey"] = exclusive_start
            response = self._calls.call("scan", self._client.scan, **kwargs)
            items = response.get("Items", [])
            last_key = response.get("LastEvaluatedKey")
            for index, item in enumerate(items):
                if not is_business_item(item):
                    continue
                business = from_item(item)
                if not include_deleted and not business.is_active:
                    continue
                found.append(business)
                used += _size(item)
                # A page of large businesses ends early rather than outgrowing a gRPC message.
                if len(found) == page_size or used >= self._page_bytes:
                    more = index < len(items) - 1 or last_key is not None
                    token = _encode_token(found[-1].id, query) if more else ""
                    return BusinessPage(found, token)
            if not last_key:
                return BusinessPage(found, "")
            exclusive_start = last_key

    def _list_memberships(
        self, subject: str, page_size: int, start_after: str | None, query: str, include_deleted: bool
    ) -> BusinessPage:
        """A person's businesses: Query the membership index a page at a time, then read just
        those businesses. A membership whose business is gone, deleted (unless asked for) or no
        longer lists the person is skipped: the answer is always what the businesses say."""
        found: list[Business] = []
        used = 0
        exclusive_start = membership_key(subject, start_after) if start_after else None
        while True:
            context.deadline().check("listing businesses")
            kwargs: dict[str, Any] = {
                "TableName": self._table,
                "IndexName": MEMBER_INDEX,
                "KeyConditionExpression": "#sub = :sub",
                "ExpressionAttributeNames": {"#sub": MEMBER_SUB},
                "ExpressionAttributeValues": {":sub": {"S": subject}},
                # Only as many memberships as the page still needs: a member of 3 reads 3.
                "Limit": min(BATCH_GET_KEYS, page_size - len(found)),
            }
            if exclusive_start:
                kwargs["ExclusiveStartKey"] = exclusive_start
            response = self._calls.call("query", self._client.query, **kwargs)
            ids = [str(item[MEMBER_OF]["S"]) for item in response.get("Items", [])]
            last_key = response.get("LastEvaluatedKey")
            businesses = self._get_many(ids)
            for index, business_id in enumerate(ids):
                business, size = businesses.get(business_id, (None, 0))
                if business is None or subject not in business.permissions.members:
                    continue
                if not include_deleted and not business.is_active:
                    continue
                found.append(business)
                used += size
                if len(found) == page_size or used >= self._page_bytes:
                    more = index < len(ids) - 1 or last_key is not None
                    return BusinessPage(found, _encode_token(business_id, query) if more else "")
            if not last_key:
                return BusinessPage(found, "")
            exclusive_start = last_key

    def _get_many(self, business_ids: Sequence[str]) -> dict[str, tuple[Business, int]]:
        """The businesses among ``business_ids`` (at most 100) that exist, with their item sizes."""
        found: dict[str, tuple[Business, int]] = {}
        for item in self._calls.batch_get([{"id": {"S": business_id}} for business_id in business_ids]):
            if is_business_item(item):
                business = from_item(item)
                found[business.id] = (business, _size(item))
        return found


def _size(item: Mapping[str, Any]) -> int:
    """About what an item weighs in an answer (the page byte budget)."""
    return len(json.dumps(item, separators=(",", ":")))


# --- page tokens ---------------------------------------------------------------------------


def _query_fingerprint(member: str | None, include_deleted: bool) -> str:
    raw = json.dumps([member or "*", include_deleted])
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _encode_token(last_id: str, query: str) -> str:
    raw = json.dumps({"v": 1, "after": last_id, "q": query}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str, query: str) -> str:
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgument.field("page_token", "is not a token this service issued") from None
    if (
        not isinstance(data, dict)
        or data.get("v") != 1
        or not isinstance(data.get("after"), str)
        or not data["after"]
        or _not_a_business_id(data["after"])
    ):
        raise InvalidArgument.field("page_token", "is not a token this service issued")
    if data.get("q") != query:
        raise InvalidArgument.field("page_token", "was issued for a different query")
    after: str = data["after"]
    return after


def _not_a_business_id(value: str) -> bool:
    check = Violations()
    check_business_id(check, "after", value)
    return bool(check)
