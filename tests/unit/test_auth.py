"""AuthInterceptor without a network: header parsing, exempt methods, principal bound only for the call."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from simplu_grpc import context as request_context
from simplu_grpc.adapters.cognito import token_verifier as tokens
from simplu_grpc.domain.auth.principal import Principal
from simplu_grpc.errors import Unauthenticated
from simplu_grpc.interceptors.auth import AuthInterceptor, bearer_token, is_exempt

PRINCIPAL = Principal(subject="sub-1", username="alice", token_use="access", client_id="c")


class Aborted(Exception):
    """What the fake context raises on abort, like grpc does."""


class FakeContext:
    """Just enough of grpc.ServicerContext for the interceptor."""

    def __init__(self, metadata: list[tuple[str, str]]) -> None:
        self._metadata = metadata
        self.status: Any = None

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return self._metadata

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    def abort_with_status(self, status: Any) -> None:
        self.status = status
        raise Aborted


class FakeVerifier:
    """Accepts the token "good", rejects everything else; records what it saw."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def verify(self, token: str) -> Principal:
        self.seen.append(token)
        if token != "good":
            raise Unauthenticated("bad token", reason=tokens.BAD_SIGNATURE)
        return PRINCIPAL


@pytest.fixture
def verifier() -> FakeVerifier:
    return FakeVerifier()


@pytest.fixture
def interceptor(verifier: FakeVerifier) -> Iterator[AuthInterceptor]:
    yield AuthInterceptor(verifier)  # type: ignore[arg-type]  # duck-typed fake verifier
    assert request_context.principal_or_none() is None, "principal leaked out of the RPC"


def whoami(request: Any, context: Any) -> Principal:
    return request_context.principal()


@pytest.mark.parametrize(
    ("metadata", "token"),
    [
        ([("authorization", "Bearer abc.def.ghi")], "abc.def.ghi"),
        ([("authorization", "bearer abc")], "abc"),
        ([("authorization", "  Bearer   abc  ")], "abc"),
        ([("x-request-id", "r"), ("authorization", b"Bearer abc")], "abc"),
    ],
)
def test_bearer_token_is_read_from_authorization_metadata(metadata: Any, token: str) -> None:
    """The scheme is case-insensitive, surrounding space is ignored, binary values are decoded."""
    assert bearer_token(metadata) == token


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        (None, tokens.MISSING_TOKEN),
        ([], tokens.MISSING_TOKEN),
        ([("x-other", "Bearer abc")], tokens.MISSING_TOKEN),
        ([("authorization", "Bearer")], tokens.MISSING_TOKEN),
        ([("authorization", "Bearer   ")], tokens.MISSING_TOKEN),
        ([("authorization", "Basic dTpw")], tokens.MALFORMED_TOKEN),
        ([("authorization", "abc.def.ghi")], tokens.MALFORMED_TOKEN),
        ([("authorization", "Bearer a"), ("authorization", "Bearer b")], tokens.MALFORMED_TOKEN),
    ],
    ids=["none", "empty", "other-header", "bare-scheme", "blank-token", "basic", "no-scheme", "two-headers"],
)
def test_missing_or_malformed_authorization_is_rejected(metadata: Any, reason: str) -> None:
    """No header -> MISSING_TOKEN; wrong scheme, no scheme, or two headers -> MALFORMED_TOKEN."""
    with pytest.raises(Unauthenticated) as caught:
        bearer_token(metadata)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("method", "exempt"),
    [
        ("/grpc.health.v1.Health/Check", True),
        ("/grpc.health.v1.Health/Watch", True),
        ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", True),
        ("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", True),
        ("/simplu.v1.BusinessService/GetBusiness", False),
        ("/simplu.v1.ShardAdminService/ListShards", False),
        ("/grpc.health.v1.HealthX/Check", False),
    ],
)
def test_only_health_and_reflection_are_exempt(method: str, exempt: bool) -> None:
    """Exemption is by exact service prefix: a look-alike service name still needs a token."""
    assert is_exempt(method) is exempt


def test_exempt_methods_run_without_looking_at_metadata(
    interceptor: AuthInterceptor, verifier: FakeVerifier
) -> None:
    """Health runs with no token and the verifier is never called."""
    result = interceptor.intercept(
        lambda request, context: "ok", None, FakeContext([]), "/grpc.health.v1.Health/Check"
    )
    assert result == "ok"
    assert verifier.seen == []


def test_a_valid_token_binds_the_principal_for_the_call_only(interceptor: AuthInterceptor) -> None:
    """The servicer sees the verified Principal; after the call no principal is bound."""
    context = FakeContext([("authorization", "Bearer good")])
    assert interceptor.intercept(whoami, None, context, "/simplu.v1.BusinessService/GetBusiness") is PRINCIPAL
    assert request_context.principal_or_none() is None


def test_a_rejected_token_aborts_unauthenticated_before_the_servicer(interceptor: AuthInterceptor) -> None:
    """A bad token aborts with UNAUTHENTICATED and the servicer never runs."""
    ran: list[bool] = []
    context = FakeContext([("authorization", "Bearer forged")])
    with pytest.raises(Aborted):
        interceptor.intercept(
            lambda request, ctx: ran.append(True), None, context, "/simplu.v1.ShardAdminService/ListShards"
        )
    assert ran == []
    assert context.status.code == grpc.StatusCode.UNAUTHENTICATED
    assert "forged" not in context.status.details


def test_the_principal_is_unbound_even_when_the_servicer_raises(interceptor: AuthInterceptor) -> None:
    """A servicer exception does not leave the Principal bound on the reused pool thread."""

    def explode(request: Any, context: Any) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        interceptor.intercept(
            explode, None, FakeContext([("authorization", "Bearer good")]), "/simplu.v1.X/Y"
        )
    assert request_context.principal_or_none() is None
