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
    │   ├── CitrusUnavailable         reason CITRUS_UNAVAILABLE
    │   └── BusinessStoreUnavailable  reason BUSINESS_STORE_UNAVAILABLE
    └── DeadlineExceeded         DEADLINE_EXCEEDED

Messages are shown to callers: they never contain a secret (connection string
password, API key, token) nor another tenant's data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import grpc

ERROR_DOMAIN = "simplu.api"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: its path (``business.locations[1].id``) and why."""

    field: str
    description: str


class SimpluError(Exception):
    """Base of every error a caller may see; subclasses fix the status code."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    default_reason: str = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata: dict[str, str] = dict(metadata or {})


class InvalidArgument(SimpluError):
    """The request is malformed; ``violations`` names each bad field."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        *,
        violations: list[FieldViolation] | None = None,
        reason: str | None = None,
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
    default_reason = "NOT_FOUND"


class AlreadyExists(SimpluError):
    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class Aborted(SimpluError):
    """Optimistic concurrency failed: the etag sent is not the current one."""

    code = grpc.StatusCode.ABORTED
    default_reason = "ETAG_MISMATCH"


class FailedPrecondition(SimpluError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class Unauthenticated(SimpluError):
    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(SimpluError):
    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class ResourceExhausted(SimpluError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"


class Unavailable(SimpluError):
    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class ShardUnavailable(Unavailable):
    default_reason = "SHARD_UNAVAILABLE"


class CommitOutcomeUnknown(ShardUnavailable):
    """The connection to the shard was lost after a write's COMMIT was sent: the write may or may
    not have been applied. A retry with the same ``request_id`` is the safe way on."""

    default_reason = "COMMIT_OUTCOME_UNKNOWN"


class CitrusUnavailable(Unavailable):
    default_reason = "CITRUS_UNAVAILABLE"


class BusinessStoreUnavailable(Unavailable):
    default_reason = "BUSINESS_STORE_UNAVAILABLE"


class DeadlineExceeded(SimpluError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_EXCEEDED"
