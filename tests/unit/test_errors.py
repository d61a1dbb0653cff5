"""Error mapping without a network: each domain error's status, ErrorInfo, BadRequest, and final codes."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.rpc import status_pb2

from simplu_grpc import errors
from simplu_grpc.interceptors.errors import (
    abort_with,
    error_info_of,
    status_code_of,
    to_status,
    violations_of,
)

CASES = [
    (errors.InvalidArgument("bad"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
    (errors.NotFound("gone"), grpc.StatusCode.NOT_FOUND, "NOT_FOUND"),
    (errors.AlreadyExists("dup"), grpc.StatusCode.ALREADY_EXISTS, "ALREADY_EXISTS"),
    (errors.Aborted("stale"), grpc.StatusCode.ABORTED, "ETAG_MISMATCH"),
    (errors.FailedPrecondition("no"), grpc.StatusCode.FAILED_PRECONDITION, "FAILED_PRECONDITION"),
    (errors.Unauthenticated("who"), grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"),
    (errors.PermissionDenied("no"), grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED"),
    (errors.ResourceExhausted("full"), grpc.StatusCode.RESOURCE_EXHAUSTED, "RESOURCE_EXHAUSTED"),
    (errors.ShardUnavailable("down"), grpc.StatusCode.UNAVAILABLE, "SHARD_UNAVAILABLE"),
    (errors.CommitOutcomeUnknown("lost"), grpc.StatusCode.UNAVAILABLE, "COMMIT_OUTCOME_UNKNOWN"),
    (errors.CitrusUnavailable("down"), grpc.StatusCode.UNAVAILABLE, "CITRUS_UNAVAILABLE"),
    (errors.BusinessStoreUnavailable("down"), grpc.StatusCode.UNAVAILABLE, "BUSINESS_STORE_UNAVAILABLE"),
    (errors.DeadlineExceeded("late"), grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED"),
]


def decode(status: grpc.Status) -> Any:
    (key, value), *_ = status.trailing_metadata
    assert key == "grpc-status-details-bin"
    return status_pb2.Status.FromString(value)


@pytest.mark.parametrize(("error", "code", "reason"), CASES, ids=lambda v: getattr(v, "name", None))
def test_each_domain_error_maps_to_its_code_and_reason(
    error: errors.SimpluError, code: Any, reason: str
) -> None:
    """Every error class maps to its status code, with ErrorInfo(reason, domain simplu.api)."""
    status = to_status(error)
    assert status.code == code
    assert status.details == error.message
    detail = decode(status)
    assert detail.code == code.value[0]
    assert detail.message == error.message
    info = error_info_of(detail)
    assert (info.reason, info.domain) == (reason, errors.ERROR_DOMAIN)
    assert violations_of(detail) == []


def test_reason_and_metadata_are_carried() -> None:
    """An explicit reason and metadata reach the ErrorInfo unchanged."""
    error = errors.NotFound("no b1", reason="BUSINESS_NOT_FOUND", metadata={"business_id": "b1"})
    info = error_info_of(decode(to_status(error)))
    assert info.reason == "BUSINESS_NOT_FOUND"
    assert dict(info.metadata) == {"business_id": "b1"}


def test_invalid_argument_lists_each_violation() -> None:
    """InvalidArgument carries a BadRequest with one field violation per bad field, in order."""
    error = errors.InvalidArgument(
        "two bad fields",
        violations=[
            errors.FieldViolation("business.locations[1].id", "duplicate id"),
            errors.FieldViolation("business.name", "must not be empty"),
        ],
    )
    detail = decode(to_status(error))
    assert violations_of(detail) == [
        ("business.locations[1].id", "duplicate id"),
        ("business.name", "must not be empty"),
    ]
    single = decode(to_status(errors.InvalidArgument.field("page_size", "must be at most 1000")))
    assert violations_of(single) == [("page_size", "must be at most 1000")]


def test_messages_are_redacted_as_a_last_defence() -> None:
    """A DSN password that slipped into a message does not reach the caller."""
    status = to_status(errors.ShardUnavailable("cannot reach postgresql://app:pw123@db:5432/x"))
    assert "pw123" not in status.details
    assert "pw123" not in repr(status.trailing_metadata)


class _Aborted(Exception):
    pass


class FakeContext:
    """The part of grpc.ServicerContext the mapping uses, recording what was done."""

    def __init__(
        self, *, code: Any = None, active: bool = True, trailing: Any = None, remaining: float = 10.0
    ) -> None:
        self._code = code
        self._active = active
        self._remaining = remaining
        self._trailing = trailing
        self.aborted_with: grpc.Status | None = None

    def code(self) -> Any:
        return self._code

    def is_active(self) -> bool:
        return self._active

    def time_remaining(self) -> float:
        return self._remaining

    def trailing_metadata(self) -> Any:
        return self._trailing

    def abort_with_status(self, status: grpc.Status) -> None:
        self.aborted_with = status
        self._code = status.code
        raise _Aborted


def test_abort_with_keeps_earlier_trailing_metadata() -> None:
    """abort_with adds the details to trailing metadata already set instead of replacing it."""
    context = FakeContext(trailing=(("x-request-id", "r1"),))
    with pytest.raises(_Aborted):
        abort_with(context, errors.NotFound("x"))  # type: ignore[arg-type]  # a recording stand-in for the context
    assert context.aborted_with is not None
    keys = [key for key, _ in context.aborted_with.trailing_metadata]
    assert keys == ["x-request-id", "grpc-status-details-bin"]
    assert context.aborted_with.code == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("context", "error", "expected"),
    [
        (FakeContext(), None, grpc.StatusCode.OK),
        (FakeContext(code=grpc.StatusCode.NOT_FOUND), None, grpc.StatusCode.NOT_FOUND),
        (FakeContext(), errors.Aborted("stale"), grpc.StatusCode.ABORTED),
        (FakeContext(code=grpc.StatusCode.UNAUTHENTICATED), Exception(), grpc.StatusCode.UNAUTHENTICATED),
        (FakeContext(active=False), RuntimeError(), grpc.StatusCode.CANCELLED),
        (FakeContext(active=False), None, grpc.StatusCode.CANCELLED),
        (FakeContext(active=False, remaining=0.0), None, grpc.StatusCode.DEADLINE_EXCEEDED),
        (FakeContext(), RuntimeError(), grpc.StatusCode.UNKNOWN),
    ],
)
def test_final_code_as_outer_interceptors_see_it(context: Any, error: Any, expected: Any) -> None:
    """The code logged and counted: a domain error's, else the one the context chose, else OK/UNKNOWN."""
    assert status_code_of(context, error) == expected
