"""Business-info store on DynamoDB (boto3 client injected; one item per business, key ``id``).

Library errors stop here (AWS Powertools style): a failed condition becomes the domain error
(``AlreadyExists`` on create, ``Aborted`` on a stale version), throttling and an unreachable
or misconfigured table become ``BusinessStoreUnavailable``. Nothing is ever returned that
DynamoDB did not answer: a failed read raises, it never yields an empty or default business.

Business items are shaped by ``adapters.business_items``. Two other kinds of item share the
table (business ids never contain ``#``, so no kind can collide with another):

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

import base64
import binascii
import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import boto3
import botocore.config
import botocore.exceptions
import tenacity

from simplu_grpc import context, tracing
from simplu_grpc.adapters.business_items import KIND_BUSINESS, from_item, is_business_item, iso, to_item
from simplu_grpc.adapters.business_lifecycle_items import domain_claim_id, domain_claim_item
from simplu_grpc.adapters.retry import StopAtDeadline
from simplu_grpc.domain.business import (
    KIND_REQUEST,
    Business,
    BusinessPage,
    CreateOutcome,
    request_key,
)
from simplu_grpc.domain.validation import Violations, check_business_id
from simplu_grpc.errors import (
    Aborted,
    AlreadyExists,
    BusinessStoreUnavailable,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
)
from simplu_grpc.metrics import Metrics

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

    from simplu_grpc.settings import Settings

log = logging.getLogger(__name__)

# A list page stops growing past this many bytes of items, well under gRPC's 4 MiB message.
PAGE_BYTES = 2 * 1024 * 1024
# How long an idempotency key is remembered (DynamoDB TTL attribute ``expiresAt``).
REQUEST_KEY_TTL_SECONDS = 7 * 24 * 3600

# Error codes that mean "try later", not "your request is wrong".
_UNAVAILABLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "LimitExceededException",
        "ResourceNotFoundException",  # the table is missing: misconfiguration, nothing to serve
        "UnrecognizedClientException",
        "AccessDeniedException",
        "TransactionInProgressException",
    }
)

# Retry policy (BusinessStore._call): what a retry can never apply twice, and what may have been applied.
_THROTTLED_CODES = frozenset(
    {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"}
)
_SERVER_ERROR_CODES = frozenset({"InternalServerError", "ServiceUnavailable"})
_READ_OPERATIONS = frozenset({"get_item", "scan", "describe_table", "query", "batch_get_item"})

# Raw DynamoDB items (a module-level alias: inside BusinessStore, ``list`` names its method).
_Items = list[dict[str, Any]]

KIND_MEMBER = "member"
MEMBER_INDEX = "member-index"
MEMBER_SUB = "memberSub"
MEMBER_OF = "memberOf"
# DynamoDB's limits: actions in one TransactWriteItems, keys in one BatchGetItem, puts in one BatchWriteItem.
_TRANSACTION_ITEMS = 100
_BATCH_GET_KEYS = 100
_BATCH_WRITE_ITEMS = 25
# A create writes the business, its request key and one item per member in one transaction.
MAX_MEMBERS_ON_CREATE = _TRANSACTION_ITEMS - 2


def make_dynamodb_client(settings: Settings) -> DynamoDBClient:
    """A DynamoDB client with explicit timeouts and no retries of its own (``BusinessStore`` retries).

    ``read_timeout`` is the most one attempt may wait for an answer; each attempt gets less when
    the RPC's deadline is nearer (``BusinessStore``'s ``before-send`` hook).
    """
    seconds = settings.dynamodb_timeout_ms / 1000.0
    config = botocore.config.Config(
        connect_timeout=seconds,
        read_timeout=seconds,
        # One attempt per call: botocore's retries would sleep without looking at the deadline.
        retries={"mode": "standard", "total_max_attempts": 1},
        max_pool_connections=max(10, settings.grpc_max_workers),
    )
    session = boto3.session.Session(region_name=settings.aws_region)
    key_id: str | None = None
    secret: str | None = None
    if settings.dynamodb_endpoint and session.get_credentials() is None:
        # A local emulator (moto, DynamoDB Local) accepts any credentials; without some,
        # boto3 would refuse to sign the request at all. Not a secret.
        key_id, secret = "local", "local"
    client: DynamoDBClient = session.client(
        "dynamodb",
        endpoint_url=settings.dynamodb_endpoint,
        config=config,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
    )
    return client


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
        self._page_bytes = page_bytes
        self._table = table
        self._client = client
        self._metrics = metrics
        self._now = clock or (lambda: datetime.now(UTC))
        # Runs before every request botocore sends (retries included, should a client retry):
        # none starts once the RPC's deadline has passed, and each waits for its answer no
        # longer than the deadline leaves (botocore's per-request ``read_timeout`` override).
        client.meta.events.register(
            "before-send.dynamodb",
            functools.partial(
                _bound_by_deadline,
                # Always set (botocore's default is 60 s); the stubs do not declare Config's fields.
                read_timeout=float(client.meta.config.read_timeout),  # type: ignore[attr-defined]
            ),
            unique_id="simplu-dynamodb-deadline",
        )

    # --- reads ---------------------------------------------------------------------------

    def get(self, business_id: str, *, consistent: bool = True) -> Business | None:
        """The business, or None when there is no such item. Raises when DynamoDB fails."""
        response = self._call(
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
            response = self._call("scan", self._client.scan, **kwargs)
            items = response.get("Items", [])
            last_key = response.get("LastEvaluatedKey")
            for index, item in enumerate(items):
                if not is_business_item(item):
                    continue
                business = from_item(item)
                if not include_deleted and business.is_deleted:
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
        exclusive_start = _membership_key(subject, start_after) if start_after else None
        while True:
            context.deadline().check("listing businesses")
            kwargs: dict[str, Any] = {
                "TableName": self._table,
                "IndexName": MEMBER_INDEX,
                "KeyConditionExpression": "#sub = :sub",
                "ExpressionAttributeNames": {"#sub": MEMBER_SUB},
                "ExpressionAttributeValues": {":sub": {"S": subject}},
                # Only as many memberships as the page still needs: a member of 3 reads 3.
                "Limit": min(_BATCH_GET_KEYS, page_size - len(found)),
            }
            if exclusive_start:
                kwargs["ExclusiveStartKey"] = exclusive_start
            response = self._call("query", self._client.query, **kwargs)
            ids = [str(item[MEMBER_OF]["S"]) for item in response.get("Items", [])]
            last_key = response.get("LastEvaluatedKey")
            businesses = self._get_many(ids)
            for index, business_id in enumerate(ids):
                business, size = businesses.get(business_id, (None, 0))
                if business is None or subject not in business.permissions.members:
                    continue
                if not include_deleted and business.is_deleted:
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
        for item in self._batch_get([{"id": {"S": business_id}} for business_id in business_ids]):
            if is_business_item(item):
                business = from_item(item)
                found[business.id] = (business, _size(item))
        return found

    def _batch_get(self, keys: _Items, *, projection: str = "") -> _Items:
        """The items of ``keys`` (at most 100) that exist: one BatchGetItem, again for any keys
        DynamoDB left unprocessed (throttling), within the adapter's attempts."""
        found: _Items = []
        for attempt in range(self._attempts):
            if not keys:
                return found
            if attempt:
                self._sleep(min(1.0, 0.05 * 2**attempt))
            request: dict[str, Any] = {"Keys": keys}
            if projection:
                request["ProjectionExpression"] = projection
            response = self._call(
                "batch_get_item", self._client.batch_get_item, RequestItems={self._table: request}
            )
            found.extend(response.get("Responses", {}).get(self._table, []))
            keys = response.get("UnprocessedKeys", {}).get(self._table, {}).get("Keys", [])
        if keys:
            raise BusinessStoreUnavailable(
                "the business store is throttling reads; retry", metadata={"operation": "batch_get_item"}
            )
        return found

    def find_request(self, request_key: str) -> str | None:
        """The business id an earlier create with this idempotency key produced, if any."""
        response = self._call(
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
        if request_key is None and not members and not business.domain_label:
            try:
                self._call(
                    "put_item",
                    self._client.put_item,
                    TableName=self._table,
                    Item=item,
                    ConditionExpression="attribute_not_exists(id)",
                )
            except _ConditionFailed:
                raise _already_exists(business.id) from None
            except _ItemTooLarge:
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
        actions.extend(self._put(_membership_item(subject, business.id)) for subject in members)
        claim_action = len(actions)
        if business.domain_label:
            claim = domain_claim_item(business.domain_label, business.id)
            actions.append(self._put(claim, condition="attribute_not_exists(id)"))
        try:
            self._call("transact_write_items", self._client.transact_write_items, TransactItems=actions)
        except _ItemTooLarge:
            raise _too_large_to_create(business.id) from None
        except _TransactionCancelled as cancelled:
            if business.domain_label and cancelled.failed(claim_action):
                raise domain_label_taken(business.domain_label) from None
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
        memberships = [self._put(_membership_item(s, business.id)) for s in sorted(after - before)]
        memberships += [self._delete(membership_id(s, business.id)) for s in sorted(before - after)]
        claims = self._claim_changes(business, previous)
        memberships += claims
        if len(memberships) >= _TRANSACTION_ITEMS:
            # Members change through SetMember and RemoveMember, one at a time.
            raise ValueError(f"{len(memberships)} membership changes do not fit in one transaction")
        business_put = self._put(item, condition=condition)
        business_put["Put"]["ExpressionAttributeNames"] = names
        if values:
            business_put["Put"]["ExpressionAttributeValues"] = values
        try:
            if not memberships:
                self._call("put_item", self._client.put_item, **business_put["Put"])
            else:
                self._call(
                    "transact_write_items",
                    self._client.transact_write_items,
                    TransactItems=[business_put, *memberships],
                )
        except (_ConditionFailed, _TransactionCancelled) as failed:
            if isinstance(failed, _TransactionCancelled) and claims and not failed.failed(0):
                claim_at = len(memberships) - len(claims) + 1
                if any(failed.failed(claim_at + index) for index in range(len(claims))):
                    raise domain_label_taken(business.domain_label) from None
            if isinstance(failed, _TransactionCancelled) and not failed.failed(0):
                raise BusinessStoreUnavailable("DynamoDB cancelled the update; retry it") from None
            raise Aborted(
                f"business {business.id!r} was changed by another request; read it again and retry",
                metadata={"business_id": business.id},
            ) from None
        except _ItemTooLarge:
            raise FailedPrecondition(
                f"this change would make business {business.id!r} larger than DynamoDB's 400 KB item "
                "limit; remove members, roles, locations or settings first",
                reason="BUSINESS_TOO_LARGE",
                metadata={"business_id": business.id},
            ) from None
        return updated

    def _claim_changes(self, business: Business, previous: Business) -> _Items:
        """The domain-label claim actions of a write: claim its label, release one no longer
        used. Both conditional on the claim being free or this business's, so no write ever
        takes or frees another's. The label is claimed on every write, not only when it
        changes: items written before claims existed (the original system's, or this service's
        earlier versions) get theirs on their next write or `simplu-grpc rewrite-items`; the
        price is that a labelled business's writes are transactions (2x the write units)."""
        mine = {
            "ConditionExpression": "attribute_not_exists(id) OR businessId = :business",
            "ExpressionAttributeValues": {":business": {"S": business.id}},
        }
        actions: _Items = []
        label, before = business.domain_label, previous.domain_label
        if label:
            put = self._put(domain_claim_item(label, business.id))
            put["Put"].update(mine)
            actions.append(put)
        if before and before != label:
            delete = self._delete(domain_claim_id(before))
            delete["Delete"].update(mine)
            actions.append(delete)
        return actions

    def execute(self, operation: str, /, **kwargs: Any) -> Any:
        """One DynamoDB call on this table's client with this adapter's retries and error
        translation (for the adapters that share the table: search, lookup, purge)."""
        return self._call(operation, getattr(self._client, operation), **kwargs)

    @property
    def table(self) -> str:
        return self._table

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

    def scan_page(self, *, start_after: str | None, limit: int) -> tuple[_Items, str | None]:
        """One page of raw items of every kind in scan order, and the id to resume after (None: the end)."""
        kwargs: dict[str, Any] = {"TableName": self._table, "Limit": limit}
        if start_after:
            kwargs["ExclusiveStartKey"] = {"id": {"S": start_after}}
        response = self._call("scan", self._client.scan, **kwargs)
        last = response.get("LastEvaluatedKey")
        return list(response.get("Items", [])), (str(last["id"]["S"]) if last else None)

    def existing_ids(self, item_ids: Sequence[str]) -> set[str]:
        """Which of these item ids exist (keys only, 100 per BatchGetItem)."""
        found: set[str] = set()
        for start in range(0, len(item_ids), _BATCH_GET_KEYS):
            keys = [{"id": {"S": item_id}} for item_id in item_ids[start : start + _BATCH_GET_KEYS]]
            found.update(str(item["id"]["S"]) for item in self._batch_get(keys, projection="id"))
        return found

    def put_memberships(self, memberships: Sequence[tuple[str, str]]) -> None:
        """Write membership items for these (subject, business id) pairs (25 per BatchWriteItem).

        Unconditional: a membership item holds nothing but its keys, so writing one twice is a no-op.
        """
        for start in range(0, len(memberships), _BATCH_WRITE_ITEMS):
            requests: _Items = [
                {"PutRequest": {"Item": _membership_item(subject, business_id)}}
                for subject, business_id in memberships[start : start + _BATCH_WRITE_ITEMS]
            ]
            for attempt in range(self._attempts):
                if not requests:
                    break
                if attempt:
                    self._sleep(min(1.0, 0.05 * 2**attempt))
                response = self._call(
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
        self._call("describe_table", self._client.describe_table, TableName=self._table)

    # --- error translation ---------------------------------------------------------------

    def _call(self, operation: str, method: Callable[..., Any], /, **kwargs: Any) -> Any:
        with tracing.span(
            f"dynamodb {operation}",
            kind=tracing.SpanKind.CLIENT,
            attributes={"db.system": "dynamodb", "db.operation": operation, "peer.service": "dynamodb"},
        ):
            return self._call_untraced(operation, method, **kwargs)

    def _call_untraced(self, operation: str, method: Callable[..., Any], /, **kwargs: Any) -> Any:
        """``method(**kwargs)`` with this adapter's retry policy, its errors translated.

        Up to ``attempts`` attempts with jittered exponential backoff, never sleeping into or
        starting after the deadline; only what cannot have been applied is retried for a
        write (throttled, or never connected), transient failures too for a read.
        """
        with self._translated(operation):
            retrying = tenacity.Retrying(
                stop=tenacity.stop_after_attempt(self._attempts) | StopAtDeadline(context.deadline()),
                wait=tenacity.wait_random_exponential(multiplier=0.05, max=1.0),
                retry=tenacity.retry_if_exception(
                    _retry_read if operation in _READ_OPERATIONS else _retry_write
                ),
                sleep=self._sleep,
                reraise=True,
            )
            return retrying(method, **kwargs)

    @contextmanager
    def _translated(self, operation: str) -> Iterator[None]:
        context.deadline().check(f"calling DynamoDB ({operation})")
        started = time.perf_counter()
        outcome = "ok"
        try:
            yield
        except DeadlineExceeded:
            outcome = "deadline"
            raise
        except botocore.exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code == "ConditionalCheckFailedException":
                outcome = "condition_failed"
                raise _ConditionFailed() from exc
            if code == "TransactionCanceledException":
                reasons = exc.response.get("CancellationReasons", [])
                codes = [str(r.get("Code", "")) for r in reasons]
                if any(_is_size_error(str(r.get("Message", ""))) for r in reasons):
                    outcome = "too_large"
                    raise _ItemTooLarge() from exc
                outcome = "condition_failed" if "ConditionalCheckFailed" in codes else "cancelled"
                raise _TransactionCancelled(codes) from exc
            if code == "ValidationException" and _is_size_error(str(error.get("Message", ""))):
                outcome = "too_large"
                raise _ItemTooLarge() from exc
            outcome = "throttled" if "Throttl" in code or "Exceeded" in code else "error"
            if code in {"ValidationException", "ResourceNotFoundException"} and MEMBER_INDEX in str(
                error.get("Message", "")
            ):
                # The table predates the membership index: a deployment step was missed (AWS
                # answers ValidationException, moto ResourceNotFoundException, both naming it).
                log.error(
                    "dynamodb %s failed: table %r has no index %r (add it, then run"
                    " `simplu-grpc index-members`)",
                    operation,
                    self._table,
                    MEMBER_INDEX,
                )
                raise BusinessStoreUnavailable(
                    f"the business store is missing its index {MEMBER_INDEX!r}",
                    metadata={"operation": operation},
                ) from exc
            if code == "ResourceNotFoundException":
                # A missing table is a deployment mistake, not "no such business": answer
                # UNAVAILABLE (readiness fails too) and say loudly what to fix.
                log.error(
                    "dynamodb %s failed: table %r not found (check DYNAMODB_BUSINESS_INFO_TABLE)",
                    operation,
                    self._table,
                )
            elif code in _UNAVAILABLE_CODES:
                log.warning("dynamodb %s failed: %s", operation, code)
            if code in _UNAVAILABLE_CODES:
                raise BusinessStoreUnavailable(
                    f"the business store is unavailable ({code})", metadata={"operation": operation}
                ) from exc
            # Anything else is a bug in how this adapter calls DynamoDB: INTERNAL for the
            # caller (generic message), the code and traceback in the log.
            log.error("dynamodb %s failed with unexpected %s", operation, code or "error")
            raise
        except botocore.exceptions.ParamValidationError:
            # The request never left: a bug in this adapter, not an outage (INTERNAL, logged).
            outcome = "error"
            raise
        except botocore.exceptions.BotoCoreError as exc:
            # EndpointConnectionError, Connect/ReadTimeoutError, ConnectionClosedError, NoCredentialsError...
            outcome = "unreachable"
            log.warning("dynamodb %s failed: %s", operation, type(exc).__name__)
            raise BusinessStoreUnavailable(
                f"the business store is unreachable ({type(exc).__name__})", metadata={"operation": operation}
            ) from exc
        finally:
            self._metrics.dependency_call("dynamodb", operation, outcome, time.perf_counter() - started)


class _ConditionFailed(Exception):
    """A ConditionExpression was false (internal: callers see the domain error)."""


class _ItemTooLarge(Exception):
    """DynamoDB refused an item over its 400 KB limit (internal: create and update say what it means)."""


def _is_size_error(message: str) -> bool:
    # "Item size has exceeded the maximum allowed size" (PutItem and TransactWriteItems alike).
    return "item size" in message.lower()


def _bound_by_deadline(request: Any, read_timeout: float, **_: Any) -> None:
    """botocore ``before-send`` hook: no attempt starts once the RPC's deadline passed, and the
    attempt waits for DynamoDB's answer no longer than the deadline leaves.

    A connection that must be opened first may still take up to ``connect_timeout`` to do so:
    botocore takes no per-request connect timeout (connections are kept alive and reused).
    """
    left = context.deadline().check("calling DynamoDB")
    request.context["read_timeout"] = max(0.001, min(read_timeout, left))


def _code(exc: BaseException) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def _retry_write(exc: BaseException) -> bool:
    """A write is retried only when it certainly was not applied: throttled, or never connected."""
    return _code(exc) in _THROTTLED_CODES or isinstance(exc, botocore.exceptions.EndpointConnectionError)


def _retry_read(exc: BaseException) -> bool:
    """A read is also retried after a server error, a lost connection or a timeout."""
    return (
        _retry_write(exc)
        or _code(exc) in _SERVER_ERROR_CODES
        or isinstance(exc, botocore.exceptions.ReadTimeoutError | botocore.exceptions.ConnectionClosedError)
    )


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


class _TransactionCancelled(Exception):
    def __init__(self, reasons: list[str]) -> None:
        super().__init__(", ".join(reasons))
        self.reasons = reasons

    def failed(self, index: int) -> bool:
        return index < len(self.reasons) and self.reasons[index] == "ConditionalCheckFailed"


def domain_label_taken(label: str) -> AlreadyExists:
    return AlreadyExists(
        f"domain label {label!r} is taken by another business",
        reason="DOMAIN_LABEL_TAKEN",
        metadata={"domain_label": label},
    )


def _already_exists(business_id: str) -> AlreadyExists:
    return AlreadyExists(f"business {business_id!r} already exists", metadata={"business_id": business_id})


# --- membership items ----------------------------------------------------------------------


def membership_id(subject: str, business_id: str) -> str:
    """The id of the item saying ``subject`` is a member of ``business_id``."""
    return f"{KIND_MEMBER}#{subject}#{business_id}"


def _membership_item(subject: str, business_id: str) -> dict[str, Any]:
    return {
        "id": {"S": membership_id(subject, business_id)},
        "kind": {"S": KIND_MEMBER},
        MEMBER_SUB: {"S": subject},
        MEMBER_OF: {"S": business_id},
    }


def _membership_key(subject: str, business_id: str) -> dict[str, Any]:
    """The index position of a membership (a Query's ExclusiveStartKey: index keys and table key)."""
    item = _membership_item(subject, business_id)
    return {key: item[key] for key in ("id", MEMBER_SUB, MEMBER_OF)}


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


__all__ = ["BusinessPage", "BusinessStore", "CreateOutcome", "make_dynamodb_client", "request_key"]
