"""Business-info store on DynamoDB (boto3 client injected; one item per business, key ``id``).

Library errors stop here (AWS Powertools style): a failed condition becomes the domain error
(``AlreadyExists`` on create, ``Aborted`` on a stale version), throttling and an unreachable
or misconfigured table become ``BusinessStoreUnavailable``. Nothing is ever returned that
DynamoDB did not answer: a failed read raises, it never yields an empty or default business.

Items follow the reference's ``BusinessInfo`` shape (``id``, ``name``, ``type`` lowercase,
``locations``, ``settings``, ``permissions``, ``createdAt``, ``updatedAt``) plus ``kind``,
``status``, ``version`` (optimistic concurrency), ``owner``, ``memberSubs`` (for listing a
person's businesses) and ``unregisteredLocationIds`` (locations Citrus has not registered yet).
Idempotent creates (AIP-155) keep a second item ``id = "request#<digest>"`` written in the
same transaction as the business, so a retried create finds the first one's business id.
Business ids never contain ``#``, so the two kinds of item cannot collide.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import boto3
import botocore.config
import botocore.exceptions
import tenacity

from simplu_grpc import context, tracing
from simplu_grpc.adapters.business_items import KIND_BUSINESS, from_item, iso, to_item
from simplu_grpc.adapters.retry import StopAtDeadline
from simplu_grpc.domain.business import (
    KIND_REQUEST,
    Business,
    BusinessPage,
    BusinessStatus,
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
_READ_OPERATIONS = frozenset({"get_item", "scan", "describe_table"})

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
        if item is None or item.get("kind", {}).get("S") != KIND_BUSINESS:
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
        """One page of businesses in scan order; ``member`` limits it to that person's ones.

        The token is opaque and bound to the query (member, include_deleted): used with
        another query it is INVALID_ARGUMENT. It names the last business returned, so the
        next scan starts right after it however many items the previous scan read.
        """
        query = _query_fingerprint(member, include_deleted)
        start_after = _decode_token(page_token, query) if page_token else None
        names = {"#kind": "kind"}
        values: dict[str, Any] = {":business": {"S": KIND_BUSINESS}}
        conditions = ["#kind = :business"]
        if not include_deleted:
            names["#status"] = "status"
            values[":active"] = {"S": BusinessStatus.ACTIVE.value}
            conditions.append("#status = :active")
        if member is not None:
            values[":member"] = {"S": member}
            conditions.append("contains(memberSubs, :member)")
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
                found.append(from_item(item))
                used += len(json.dumps(item, separators=(",", ":")))
                # A page of large businesses ends early rather than outgrowing a gRPC message.
                if len(found) == page_size or used >= self._page_bytes:
                    more = index < len(items) - 1 or last_key is not None
                    token = _encode_token(found[-1].id, query) if more else ""
                    return BusinessPage(found, token)
            if not last_key:
                return BusinessPage(found, "")
            exclusive_start = last_key

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
        """Create the business (version 1); AlreadyExists when the id is taken.

        With ``request_key``, the key is written in the same transaction; if it already
        exists the earlier create's business is returned instead (``replayed``).
        """
        now = self._now()
        stored = replace(business, version=1, create_time=now, update_time=now)
        item = to_item(stored)
        if request_key is None:
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
        marker = {
            "id": {"S": request_key},
            "kind": {"S": KIND_REQUEST},
            "businessId": {"S": business.id},
            "createdAt": {"S": iso(now)},
            "expiresAt": {"N": str(int(now.timestamp()) + REQUEST_KEY_TTL_SECONDS)},
        }
        try:
            self._call(
                "transact_write_items",
                self._client.transact_write_items,
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": marker,
                            "ConditionExpression": "attribute_not_exists(id)",
                        }
                    },
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": item,
                            "ConditionExpression": "attribute_not_exists(id)",
                        }
                    },
                ],
            )
        except _ItemTooLarge:
            raise _too_large_to_create(business.id) from None
        except _TransactionCancelled as cancelled:
            if cancelled.failed(0):
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
            if cancelled.failed(1):
                raise _already_exists(business.id) from None
            raise BusinessStoreUnavailable("DynamoDB cancelled the create; retry it") from None
        return CreateOutcome(stored, replayed=False)

    def update(self, business: Business) -> Business:
        """Write ``business`` if the stored version is still ``business.version``; else Aborted."""
        updated = replace(business, version=business.version + 1, update_time=self._now())
        try:
            self._call(
                "put_item",
                self._client.put_item,
                TableName=self._table,
                Item=to_item(updated),
                ConditionExpression="attribute_exists(id) AND #version = :version",
                ExpressionAttributeNames={"#version": "version"},
                ExpressionAttributeValues={":version": {"N": str(business.version)}},
            )
        except _ConditionFailed:
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


def _already_exists(business_id: str) -> AlreadyExists:
    return AlreadyExists(f"business {business_id!r} already exists", metadata={"business_id": business_id})


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
