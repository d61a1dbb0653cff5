"""BusinessStore error translation against a scripted DynamoDB endpoint: every botocore failure
becomes a domain error, nothing is invented, and no attempt starts after the RPC's deadline."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

from simplu_grpc import context
from simplu_grpc.adapters.dynamodb.business_store import BusinessStore
from simplu_grpc.domain.business.model import Business, BusinessType, Location
from simplu_grpc.errors import (
    Aborted,
    AlreadyExists,
    BusinessStoreUnavailable,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
)
from simplu_grpc.metrics import Metrics
from tests.fixtures.scripted_http import ScriptedHTTPServer, serve

_PREFIX = "com.amazonaws.dynamodb.v20120810#"


class FakeDynamo(ScriptedHTTPServer):
    """DynamoDB's JSON protocol, scripted: ``fail`` makes every call answer that error."""

    def __init__(self) -> None:
        super().__init__(content_type="application/x-amz-json-1.0")

    def fail(self, code: str, message: str = "no", delay: float = 0.0, **extra: Any) -> None:
        self.set((400, {"__type": _PREFIX + code, "message": message, **extra}, delay))


@pytest.fixture
def fake() -> Iterator[FakeDynamo]:
    yield from serve(FakeDynamo())


def make_store(url: str, *, attempts: int = 1, read_timeout: float = 2.0) -> BusinessStore:
    client = boto3.client(
        "dynamodb",
        region_name="us-east-1",
        endpoint_url=url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(
            connect_timeout=1,
            read_timeout=read_timeout,
            retries={"mode": "standard", "total_max_attempts": attempts},
        ),
    )
    return BusinessStore(table="business-info", client=client, metrics=Metrics())


def business(business_id: str = "b1") -> Business:
    return Business(
        id=business_id, name="Gym", type=BusinessType.GYM, locations=(Location(id="l1", name="L"),), version=1
    )


@pytest.mark.parametrize(
    "code",
    [
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "ResourceNotFoundException",
        "InternalServerError",
        "AccessDeniedException",
        "UnrecognizedClientException",
    ],
)
def test_unavailable_codes_are_business_store_unavailable(fake: FakeDynamo, code: str) -> None:
    """Throttling, a missing table, a refused identity: UNAVAILABLE BUSINESS_STORE_UNAVAILABLE, never None."""
    fake.fail(code)
    store = make_store(fake.url)
    for call in (
        lambda: store.get("b1"),
        lambda: store.create(business()),
        lambda: store.update(business(), previous=business()),
        lambda: store.list(page_size=5, page_token="", member=None, include_deleted=False),
        store.probe,
    ):
        with pytest.raises(BusinessStoreUnavailable) as raised:
            call()
        assert raised.value.reason == "BUSINESS_STORE_UNAVAILABLE"
        assert code in raised.value.message


def test_conditional_failures_become_domain_errors(fake: FakeDynamo) -> None:
    """ConditionalCheckFailed: ALREADY_EXISTS on create, ABORTED on a stale update."""
    fake.fail("ConditionalCheckFailedException", "The conditional request failed")
    store = make_store(fake.url)
    with pytest.raises(AlreadyExists):
        store.create(business())
    with pytest.raises(Aborted):
        store.update(business(), previous=business())


def test_transaction_cancellation_reasons_are_read(fake: FakeDynamo) -> None:
    """TransactionCanceled: a taken id is ALREADY_EXISTS; a conflict or throttle is UNAVAILABLE; an
    oversized item is INVALID_ARGUMENT (BUSINESS_TOO_LARGE), never INTERNAL."""
    store = make_store(fake.url)
    fake.fail(
        "TransactionCanceledException",
        "Transaction cancelled",
        CancellationReasons=[{"Code": "None"}, {"Code": "ConditionalCheckFailed", "Message": "taken"}],
    )
    with pytest.raises(AlreadyExists):
        store.create(business(), request_key="request#abc")
    fake.fail(
        "TransactionCanceledException",
        "Transaction cancelled",
        CancellationReasons=[{"Code": "TransactionConflict"}, {"Code": "None"}],
    )
    with pytest.raises(BusinessStoreUnavailable):
        store.create(business(), request_key="request#abc")
    fake.fail(
        "TransactionCanceledException",
        "Transaction cancelled",
        CancellationReasons=[
            {"Code": "None"},
            {"Code": "ValidationError", "Message": "Item size has exceeded the maximum allowed size"},
        ],
    )
    with pytest.raises(InvalidArgument) as raised:
        store.create(business(), request_key="request#abc")
    assert raised.value.reason == "BUSINESS_TOO_LARGE"


def test_item_size_limit_is_a_clear_client_error(fake: FakeDynamo) -> None:
    """400 KB exceeded: INVALID_ARGUMENT with a violation on create, FAILED_PRECONDITION on update."""
    fake.fail("ValidationException", "Item size has exceeded the maximum allowed size")
    store = make_store(fake.url)
    with pytest.raises(InvalidArgument) as created:
        store.create(business())
    assert created.value.reason == "BUSINESS_TOO_LARGE"
    assert [v.field for v in created.value.violations] == ["business"]
    with pytest.raises(FailedPrecondition) as updated:
        store.update(business(), previous=business())
    assert updated.value.reason == "BUSINESS_TOO_LARGE"


def test_other_validation_errors_are_not_disguised(fake: FakeDynamo) -> None:
    """An unexpected ValidationException is a bug here: it propagates (INTERNAL), it is not "not found"."""
    fake.fail("ValidationException", "One or more parameter values were invalid")
    with pytest.raises(botocore.exceptions.ClientError):
        make_store(fake.url).get("b1")


def test_unreachable_and_read_timeout_are_unavailable(fake: FakeDynamo) -> None:
    """Nothing listening (EndpointConnectionError) and a silent endpoint (ReadTimeout): UNAVAILABLE."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with pytest.raises(BusinessStoreUnavailable) as refused:
        make_store(f"http://127.0.0.1:{closed_port}").get("b1")
    assert "EndpointConnectionError" in refused.value.message
    fake.set((200, {}, 1.0))
    with pytest.raises(BusinessStoreUnavailable) as slow:
        make_store(fake.url, read_timeout=0.2).get("b1")
    assert "ReadTimeout" in slow.value.message


def test_no_attempt_starts_after_the_deadline(fake: FakeDynamo) -> None:
    """botocore's own retries stop at the RPC deadline: 10 attempts allowed, a 0.3 s deadline."""
    fake.fail("ProvisionedThroughputExceededException", delay=0.1)
    store = make_store(fake.url, attempts=10)
    started = time.monotonic()
    with context.bind(deadline=context.Deadline.after(0.3)), pytest.raises(DeadlineExceeded):
        store.get("b1")
    assert time.monotonic() - started < 2.5
    assert 1 <= len(fake.requests) <= 3
    # And nothing at all is sent once the deadline has passed.
    fake.requests.clear()
    with context.bind(deadline=context.Deadline(time.monotonic() - 1)), pytest.raises(DeadlineExceeded):
        store.get("b1")
    assert fake.requests == []


def test_a_silent_dynamodb_is_abandoned_at_the_deadline_not_after_the_read_timeout(fake: FakeDynamo) -> None:
    """Each attempt waits no longer than the deadline leaves: with a 3 s read timeout and an endpoint
    that answers after 2 s, a call on a 0.4 s deadline gives up with the deadline (it used to wait
    the full read timeout past it), with one request sent."""
    fake.set((200, {}, 2.0))
    store = make_store(fake.url, read_timeout=3.0)
    started = time.monotonic()
    with context.bind(deadline=context.Deadline.after(0.4)), pytest.raises(BusinessStoreUnavailable):
        store.get("b1")
    assert time.monotonic() - started < 1.5
    assert len(fake.requests) == 1


def test_reads_are_retried_after_timeouts_writes_only_when_never_applied(fake: FakeDynamo) -> None:
    """A read that timed out is retried (3 attempts); a write that timed out may have been applied,
    so it is not; a throttled write certainly was not, so it is."""
    fake.set((200, {}, 0.5))
    store = make_store(fake.url, read_timeout=0.1)
    with context.bind(deadline=context.Deadline.after(10)):
        with pytest.raises(BusinessStoreUnavailable):
            store.get("b1")
        assert len(fake.requests) == 3
        fake.requests.clear()
        with pytest.raises(BusinessStoreUnavailable):
            store.create(business())
        assert len(fake.requests) == 1
        fake.requests.clear()
        fake.fail("ProvisionedThroughputExceededException")
        with pytest.raises(BusinessStoreUnavailable):
            store.update(business(), previous=business())
        assert len(fake.requests) == 3


def test_forged_page_tokens_are_invalid_argument_before_any_scan(fake: FakeDynamo) -> None:
    """A well-formed token whose position is not a business id (forged) is INVALID_ARGUMENT; no scan."""
    import base64

    store = make_store(fake.url)
    for after in ("request#abc", "a-b", "x" * 65, "\n"):
        raw = json.dumps({"v": 1, "after": after, "q": "0" * 16}).encode()
        token = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        with pytest.raises(InvalidArgument):
            store.list(page_size=5, page_token=token, member=None, include_deleted=False)
    assert fake.requests == []


def test_a_request_botocore_refuses_to_send_is_not_reported_as_an_outage(fake: FakeDynamo) -> None:
    """ParamValidationError means this adapter built a bad request: it is not UNAVAILABLE (which
    would send callers retrying and flip readiness), and nothing reaches DynamoDB."""
    store = make_store(fake.url)
    with pytest.raises(botocore.exceptions.ParamValidationError):
        store.get(123)  # type: ignore[arg-type]  # a number where DynamoDB wants a string: refused locally
    assert fake.requests == []
