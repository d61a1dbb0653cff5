"""One DynamoDB table's calls: the client's config, the retry policy, the deadline, error translation.

Library errors stop here (AWS Powertools style): throttling and an unreachable or
misconfigured table become ``BusinessStoreUnavailable``; a failed condition, a cancelled
transaction and an oversized item become the small internal exceptions below, which the
store turns into what they mean for the call (``AlreadyExists``, ``Aborted``, ...).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import boto3
import botocore.config
import botocore.exceptions
import tenacity

from simplu_grpc import context, tracing
from simplu_grpc.adapters.dynamodb.membership_items import MEMBER_INDEX
from simplu_grpc.adapters.retry import StopAtDeadline
from simplu_grpc.errors import BusinessStoreUnavailable, DeadlineExceeded
from simplu_grpc.metrics import Metrics

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

    from simplu_grpc.settings import Settings

log = logging.getLogger(__name__)

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

# Retry policy (TableCalls.call): what a retry can never apply twice, and what may have been applied.
_THROTTLED_CODES = frozenset(
    {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"}
)
_SERVER_ERROR_CODES = frozenset({"InternalServerError", "ServiceUnavailable"})
_READ_OPERATIONS = frozenset({"get_item", "scan", "describe_table", "query", "batch_get_item"})

# Raw DynamoDB items.
Items = list[dict[str, Any]]


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


class TableCalls:
    """Every call on one table goes through ``call``: retried per this adapter's policy, bounded by
    the RPC's deadline, traced, measured, its errors translated."""

    def __init__(
        self,
        *,
        table: str,
        client: DynamoDBClient,
        metrics: Metrics,
        attempts: int,
        sleep: Callable[[float], None],
    ) -> None:
        self._table = table
        self._client = client
        self._metrics = metrics
        self._attempts = attempts
        self._sleep = sleep
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

    def batch_get(self, keys: Items, *, projection: str = "") -> Items:
        """The items of ``keys`` (at most 100) that exist: one BatchGetItem, again for any keys
        DynamoDB left unprocessed (throttling), within the adapter's attempts."""
        found: Items = []
        for attempt in range(self._attempts):
            if not keys:
                return found
            if attempt:
                self._sleep(min(1.0, 0.05 * 2**attempt))
            request: dict[str, Any] = {"Keys": keys}
            if projection:
                request["ProjectionExpression"] = projection
            response = self.call(
                "batch_get_item", self._client.batch_get_item, RequestItems={self._table: request}
            )
            found.extend(response.get("Responses", {}).get(self._table, []))
            keys = response.get("UnprocessedKeys", {}).get(self._table, {}).get("Keys", [])
        if keys:
            raise BusinessStoreUnavailable(
                "the business store is throttling reads; retry", metadata={"operation": "batch_get_item"}
            )
        return found

    def call(self, operation: str, method: Callable[..., Any], /, **kwargs: Any) -> Any:
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
                raise ConditionFailed() from exc
            if code == "TransactionCanceledException":
                reasons = exc.response.get("CancellationReasons", [])
                codes = [str(r.get("Code", "")) for r in reasons]
                if any(is_size_error(str(r.get("Message", ""))) for r in reasons):
                    outcome = "too_large"
                    raise ItemTooLarge() from exc
                outcome = "condition_failed" if "ConditionalCheckFailed" in codes else "cancelled"
                raise TransactionCancelled(codes) from exc
            if code == "ValidationException" and is_size_error(str(error.get("Message", ""))):
                outcome = "too_large"
                raise ItemTooLarge() from exc
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


class ConditionFailed(Exception):
    """A ConditionExpression was false (internal: callers see the domain error)."""


class ItemTooLarge(Exception):
    """DynamoDB refused an item over its 400 KB limit (internal: create and update say what it means)."""


def is_size_error(message: str) -> bool:
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


class TransactionCancelled(Exception):
    def __init__(self, reasons: list[str]) -> None:
        super().__init__(", ".join(reasons))
        self.reasons = reasons

    def failed(self, index: int) -> bool:
        return index < len(self.reasons) and self.reasons[index] == "ConditionalCheckFailed"
