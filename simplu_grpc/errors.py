"""Domain errors: one small tree, each class carrying its gRPC status code and a reason.

Every failure a caller can see is one of these. Adapters translate their library's
errors (botocore ``ClientError``, psycopg / psycopg_pool errors, urllib3 errors) into
them with ``raise ... from exc``; nothing above the adapters sees a library error. The
error-mapping interceptor turns them into a status with ``google.rpc.Status`` details
(``ErrorInfo`` with ``reason``, domain ``simplu.api`` and ``metadata``; ``BadRequest``
field violations for ``InvalidArgument``). Anything that is not a ``SimpluError`` becomes
INTERNAL with a generic message; its traceback goes to the log only.

    SimpluError
    ├── InvalidArgument          INVALID_ARGUMENT    (field violations)
    ├── NotFound                 NOT_FOUND
    ├── AlreadyExists            ALREADY_EXISTS
    ├── Aborted                  ABORTED             (etag mismatch)
    ├── FailedPrecondition       FAILED_PRECONDITION
    ├── Unauthenticated          UNAUTHENTICATED
    ├── PermissionDenied         PERMISSION_DENIED
    ├── ResourceExhausted        RESOURCE_EXHAUSTED  (pool / server saturated)
    ├── Unavailable              UNAVAILABLE
    │   ├── ShardUnavailable          reason SHARD_UNAVAILABLE
    │   │   └── CommitOutcomeUnknown  reason COMMIT_OUTCOME_UNKNOWN
    │   ├── LocationFrozen            reason LOCATION_FROZEN (a move's write freeze)
    │   ├── LocationMoved             reason LOCATION_MOVED (the shard fenced a moved location)
    │   ├── CitrusUnavailable         reason CITRUS_UNAVAILABLE
    │   └── BusinessStoreUnavailable  reason BUSINESS_STORE_UNAVAILABLE
    └── DeadlineExceeded         DEADLINE_EXCEEDED

Every reason is a value of the proto enum ``simplu.v1.ErrorReason``
(protos/simplu/v1/error_reason.proto) without its ``ERROR_REASON_`` prefix: ``Reason`` is the
``Literal`` type ``make protos`` generates from that enum, so mypy refuses any other string at a
raise site, and the error interceptor refuses (INTERNAL, logged) any that slips through anyway.
UNAVAILABLE, RESOURCE_EXHAUSTED and ABORTED answers carry a ``google.rpc.RetryInfo`` with
``err.retry_delay``.

Messages are shown to callers: they never contain a secret (connection string
password, API key, token) nor another tenant's data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import grpc
from simplu.v1.error_reasons import REASONS, Reason

# REASONS and Reason are re-exported: code imports them from here, next to the errors that carry them.
__all__ = [
    "ERROR_DOMAIN",
    "REASONS",
    "RETRY_DELAY_BY_CODE",
    "RETRY_DELAY_BY_REASON",
    "Aborted",
    "AlreadyExists",
    "BusinessStoreUnavailable",
    "CitrusUnavailable",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "InvalidArgument",
    "LocationFrozen",
    "LocationMoved",
    "NotFound",
    "PermissionDenied",
    "Reason",
    "ResourceExhausted",
    "ShardUnavailable",
    "SimpluError",
    "Unauthenticated",
    "Unavailable",
]

ERROR_DOMAIN = "simplu.api"

# The least time to wait before retrying, sent as google.rpc.RetryInfo on the codes where a
# retry of the same request can succeed. A reason listed here overrides its code's delay.
RETRY_DELAY_BY_CODE: Mapping[grpc.StatusCode, timedelta] = {
    # A dependency is down: give it a moment to fail over or come back.
    grpc.StatusCode.UNAVAILABLE: timedelta(seconds=1),
    # Saturated: back off long enough for the queue ahead to drain.
    grpc.StatusCode.RESOURCE_EXHAUSTED: timedelta(seconds=1),
    # Optimistic concurrency lost a race: re-read and retry at once.
    grpc.StatusCode.ABORTED: timedelta(milliseconds=100),
}
RETRY_DELAY_BY_REASON: Mapping[Reason, timedelta] = {
    # The concurrent create with this request_id usually finishes within a statement's time.
    "CONFLICT": timedelta(milliseconds=500),
    # A pool's connections turn over in milliseconds; the wait already spent part of the deadline.
    "SHARD_POOL_EXHAUSTED": timedelta(milliseconds=500),
    # A shard or Citrus failover takes seconds; retrying sooner only adds to the reconnect storm.
    "SHARD_UNAVAILABLE": timedelta(seconds=2),
    "CITRUS_UNAVAILABLE": timedelta(seconds=2),
    # After a failed fetch the JWKS client waits 1 s (adapters/cognito/jwks.py _FAILED_RETRY_SECONDS)
    # before fetching again: a retry sooner meets the same remembered failure.
    "JWKS_UNAVAILABLE": timedelta(seconds=1),
    # A move's write freeze lasts well under 2 s (final catch-up, verification, switch).
    "LOCATION_FROZEN": timedelta(milliseconds=250),
    # The shard directory is about to name the new shard (a route refresh is already under way).
    "LOCATION_MOVED": timedelta(milliseconds=250),
}


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: its path (``business.locations[1].id``) and why."""

    field: str
    description: str


class SimpluError(Exception):
    """Base of every error a caller may see; subclasses fix the status code."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    default_reason: Reason = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: Reason | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason: Reason = reason or self.default_reason
        self.metadata: dict[str, str] = dict(metadata or {})

    @property
    def retry_delay(self) -> timedelta | None:
        """How long to wait before retrying (RetryInfo), or None when retrying unchanged is futile."""
        if self.code not in RETRY_DELAY_BY_CODE:
            return None
        return RETRY_DELAY_BY_REASON.get(self.reason, RETRY_DELAY_BY_CODE[self.code])


class InvalidArgument(SimpluError):
    """The request is malformed; ``violations`` names each bad field."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason: Reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        *,
        violations: list[FieldViolation] | None = None,
        reason: Reason | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.violations: list[FieldViolation] = list(violations or [])

    @classmethod
    def field(cls, field: str, description: str) -> InvalidArgument:
        """One bad field: the message and the single violation say the same thing."""
        return cls(f"{field}: {description}", violations=[FieldViolation(field, description)])


class NotFound(SimpluError):
    code = grpc.StatusCode.NOT_FOUND
    default_reason: Reason = "NOT_FOUND"


class AlreadyExists(SimpluError):
    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason: Reason = "ALREADY_EXISTS"


class Aborted(SimpluError):
    """Optimistic concurrency failed: the etag sent is not the current one."""

    code = grpc.StatusCode.ABORTED
    default_reason: Reason = "ETAG_MISMATCH"


class FailedPrecondition(SimpluError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason: Reason = "FAILED_PRECONDITION"


class Unauthenticated(SimpluError):
    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason: Reason = "UNAUTHENTICATED"


class PermissionDenied(SimpluError):
    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason: Reason = "PERMISSION_DENIED"


class ResourceExhausted(SimpluError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason: Reason = "RESOURCE_EXHAUSTED"


class Unavailable(SimpluError):
    code = grpc.StatusCode.UNAVAILABLE
    default_reason: Reason = "UNAVAILABLE"


class ShardUnavailable(Unavailable):
    default_reason: Reason = "SHARD_UNAVAILABLE"


class ShardUnreachable(ShardUnavailable):
    """Connecting to the shard failed: no statement of this request reached it, so a retry is safe
    (even of a write). Raised by the shard adapters only when they know nothing was sent."""


class CommitOutcomeUnknown(ShardUnavailable):
    """The connection to the shard was lost after a write was sent (it commits on its own): the
    write may or may not have been applied. A retry with the same ``request_id`` is the safe way on."""

    default_reason: Reason = "COMMIT_OUTCOME_UNKNOWN"


class LocationFrozen(Unavailable):
    """The shard refused a write: the location is in a move's short write freeze (reads are served)."""

    default_reason: Reason = "LOCATION_FROZEN"


class LocationMoved(Unavailable):
    """The shard refused a write: the location now lives on another shard. ResourceOps refreshes
    the route and retries there; a caller sees this only while the directory still names this shard."""

    default_reason: Reason = "LOCATION_MOVED"


class CitrusUnavailable(Unavailable):
    default_reason: Reason = "CITRUS_UNAVAILABLE"


class BusinessStoreUnavailable(Unavailable):
    default_reason: Reason = "BUSINESS_STORE_UNAVAILABLE"


class DeadlineExceeded(SimpluError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    default_reason: Reason = "DEADLINE_EXCEEDED"
