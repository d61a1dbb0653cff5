"""Cognito auth over a real loopback channel: real moto tokens pass, every bad token is UNAUTHENTICATED
with its reason in the ErrorInfo, health and reflection need no token."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_status import rpc_status
from simplu.v1 import business_pb2, business_pb2_grpc, resource_pb2

from simplu_grpc import context as request_context
from simplu_grpc.adapters.cognito import token_verifier as tokens
from simplu_grpc.devstack.moto_server import CognitoSetup, issue_tokens, setup_cognito
from simplu_grpc.errors import ERROR_DOMAIN
from simplu_grpc.interceptors.errors import error_info_of
from simplu_grpc.server import BUSINESS_SERVICE
from simplu_grpc.services.business_proto import TOKEN_USE_TO_PROTO
from tests.fixtures.server import MakeServer, RunningServer, core_deps, settings_for
from tests.fixtures.tokens import LocalIssuer

pytestmark = pytest.mark.integration


class WhoAmI(business_pb2_grpc.BusinessServiceServicer):
    """GetMyAccess answers with the Principal the auth interceptor bound, nothing else."""

    def GetMyAccess(self, request: Any, context: grpc.ServicerContext) -> Any:
        principal = request_context.principal()
        return business_pb2.GetMyAccessResponse(
            subject=principal.subject,
            username=principal.username,
            groups=sorted(principal.groups),
            scopes=sorted(principal.scopes),
            token_use=TOKEN_USE_TO_PROTO[principal.token_use],
        )


@pytest.fixture
def server(make_server: MakeServer, auth_settings: dict[str, Any]) -> RunningServer:
    """A server trusting the moto pool (keys served by the local issuer's JWKS), with WhoAmI."""
    settings = settings_for(**auth_settings)
    return make_server(deps=core_deps(settings), auth=auth_settings, servicers={BUSINESS_SERVICE: WhoAmI()})


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def who(server: RunningServer, metadata: Any = ()) -> Any:
    return server.business.GetMyAccess(business_pb2.GetMyAccessRequest(), metadata=metadata, timeout=10)


def rejected(server: RunningServer, metadata: Any) -> tuple[grpc.RpcError, str]:
    """Call with ``metadata`` expecting UNAUTHENTICATED; return the error and its ErrorInfo reason."""
    with pytest.raises(grpc.RpcError) as caught:
        who(server, metadata)
    error = caught.value
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error.details()
    info = error_info_of(rpc_status.from_call(error))
    assert info is not None
    assert info.domain == ERROR_DOMAIN
    return error, info.reason


# --- accepted: real moto tokens --------------------------------------------------------------


def test_moto_admin_access_token_is_accepted_with_its_groups(
    server: RunningServer, admin_token: str, cognito: CognitoSetup
) -> None:
    """The admin's real moto access token reaches the servicer as a Principal in the admin group."""
    reply = who(server, bearer(admin_token))
    assert reply.subject == cognito.admin_sub
    assert reply.username == cognito.admin_username
    assert list(reply.groups) == ["admin"]
    assert reply.token_use == business_pb2.TOKEN_USE_ACCESS


def test_moto_id_token_is_accepted(server: RunningServer, cognito: CognitoSetup) -> None:
    """A real moto id token is accepted too; the username comes from cognito:username."""
    signed_in = issue_tokens(
        cognito.endpoint, cognito.region, cognito, cognito.user_username, cognito.user_password
    )
    reply = who(server, bearer(signed_in.id))
    assert (reply.subject, reply.username, reply.token_use) == (
        cognito.user_sub,
        cognito.user_username,
        business_pb2.TOKEN_USE_ID,
    )
    assert list(reply.groups) == []


def test_plain_user_and_new_users_have_no_admin_group(
    server: RunningServer, user_token: str, make_user_token: Callable[..., tuple[str, str]]
) -> None:
    """The plain user and users made on demand carry no groups (unless asked for)."""
    assert list(who(server, bearer(user_token)).groups) == []
    sub, token = make_user_token("auth-tenant-a")
    reply = who(server, bearer(token))
    assert (reply.subject, reply.username, list(reply.groups)) == (sub, "auth-tenant-a", [])


def test_machine_token_carries_its_scopes(server: RunningServer, machine_token: Callable[..., str]) -> None:
    """A locally signed client-credentials token is accepted by the same server, acting by scopes."""
    reply = who(server, bearer(machine_token(["simplu/resources.read"])))
    assert reply.username == ""
    assert list(reply.scopes) == ["simplu/resources.read"]


def test_a_valid_token_passes_auth_on_every_service(server: RunningServer, admin_token: str) -> None:
    """With a valid token an RPC gets past auth: its answer is never UNAUTHENTICATED."""
    request = resource_pb2.GetResourceRequest()
    with pytest.raises(grpc.RpcError) as caught:
        server.resource.GetResource(request, metadata=bearer(admin_token), timeout=10)
    assert caught.value.code() != grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as anonymous:
        server.resource.GetResource(request, timeout=10)
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED


# --- no token needed ---------------------------------------------------------------------------


def test_health_needs_no_token(server: RunningServer) -> None:
    """kubelet cannot send a token: Health/Check answers without one."""
    assert server.health_status("") == health_pb2.HealthCheckResponse.SERVING
    assert server.health_status("liveness") == health_pb2.HealthCheckResponse.SERVING


def test_reflection_needs_no_token(server: RunningServer) -> None:
    """grpcurl list works without a token: reflection lists the services."""
    database = ProtoReflectionDescriptorDatabase(server.channel)
    assert BUSINESS_SERVICE in set(database.get_services())


# --- rejected ----------------------------------------------------------------------------------


def test_no_token_is_missing_token(server: RunningServer) -> None:
    """No authorization metadata -> UNAUTHENTICATED / MISSING_TOKEN, telling how to send one."""
    error, reason = rejected(server, ())
    assert reason == tokens.MISSING_TOKEN
    assert "Bearer" in error.details()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("Basic dXNlcjpwYXNz", tokens.MALFORMED_TOKEN),
        ("Bearer", tokens.MISSING_TOKEN),
        ("Bearer not-a-jwt", tokens.MALFORMED_TOKEN),
        ("eyJhbGciOiJSUzI1NiJ9.e30.c2ln", tokens.MALFORMED_TOKEN),
    ],
    ids=["basic-scheme", "empty-bearer", "garbage", "no-scheme"],
)
def test_malformed_authorization_header(server: RunningServer, value: str, reason: str) -> None:
    """A wrong scheme, an empty bearer or a non-JWT -> UNAUTHENTICATED with the precise reason."""
    assert rejected(server, [("authorization", value)])[1] == reason


def test_a_bad_bearer_value_is_described_in_plain_words(server: RunningServer) -> None:
    """The message about a non-JWT bearer value is sent as written, not mangled by redaction."""
    error, _ = rejected(server, [("authorization", "Bearer not-a-jwt")])
    assert error.details() == "the bearer token is not a JWT (expected three base64url parts)"


def attack_tokens(issuer: LocalIssuer, admin_token: str) -> dict[str, tuple[str, str]]:
    """name -> (token, expected reason): each way a token can be wrong."""
    now = int(time.time())
    if "grpc-unpublished" not in issuer._private:
        issuer.add_key("grpc-unpublished", publish=False)
    admin_claims = issuer.claims(username="mallory", **{"cognito:groups": ["admin"]})
    return {
        "expired": (issuer.sign(issuer.claims(iat=now - 7200, exp=now - 3600)), tokens.TOKEN_EXPIRED),
        "not-yet-valid": (issuer.sign(issuer.claims(nbf=now + 3600)), tokens.TOKEN_NOT_YET_VALID),
        "wrong-issuer": (
            issuer.sign(issuer.claims(iss="https://cognito-idp.us-east-1.amazonaws.com/us-east-1_evil")),
            tokens.WRONG_ISSUER,
        ),
        "wrong-client": (issuer.sign(issuer.claims(client_id="evil-client")), tokens.WRONG_AUDIENCE),
        "wrong-audience": (issuer.user_token(token_use="id", aud="evil-client"), tokens.WRONG_AUDIENCE),
        "alg-none": (issuer.unsigned(admin_claims), tokens.UNSUPPORTED_ALGORITHM),
        "hs256-public-key": (issuer.hs256_with_public_key(admin_claims), tokens.UNSUPPORTED_ALGORITHM),
        "tampered-moto": (issuer.tampered(admin_token, username="someone-else"), tokens.BAD_SIGNATURE),
        "unknown-kid": (issuer.sign(issuer.claims(), kid="grpc-unpublished"), tokens.UNKNOWN_KEY),
        "refresh-use": (
            issuer.sign(issuer.claims(token_use="refresh", client_id=issuer.client_id)),
            "WRONG_TOKEN_USE",
        ),
        # Validly signed, absurd claims: each is the caller's problem (UNAUTHENTICATED), never INTERNAL.
        "token-use-list": (issuer.sign(issuer.claims(token_use=["access"])), tokens.WRONG_TOKEN_USE),
        "token-use-object": (
            issuer.sign(issuer.claims(token_use={"kind": "access"})),
            tokens.WRONG_TOKEN_USE,
        ),
        "exp-10**400": (issuer.sign(issuer.claims(exp=10**400)), tokens.MALFORMED_TOKEN),
        "exp-negative": (issuer.sign(issuer.claims(exp=-1)), tokens.TOKEN_EXPIRED),
        "exp-before-any-date": (issuer.sign(issuer.claims(exp=-(10**20))), tokens.TOKEN_EXPIRED),
        "iat-before-any-date": (issuer.sign(issuer.claims(iat=-(10**20))), tokens.MALFORMED_TOKEN),
        "iat-list": (issuer.sign(issuer.claims(iat=[now])), tokens.MALFORMED_TOKEN),
        "nbf-object": (issuer.sign(issuer.claims(nbf={"at": now})), tokens.MALFORMED_TOKEN),
        "nbf-10**400": (issuer.sign(issuer.claims(nbf=10**400)), tokens.TOKEN_NOT_YET_VALID),
    }


ATTACKS = [
    "expired",
    "not-yet-valid",
    "wrong-issuer",
    "wrong-client",
    "wrong-audience",
    "alg-none",
    "hs256-public-key",
    "tampered-moto",
    "unknown-kid",
    "refresh-use",
    "token-use-list",
    "token-use-object",
    "exp-10**400",
    "exp-negative",
    "exp-before-any-date",
    "iat-before-any-date",
    "iat-list",
    "nbf-object",
    "nbf-10**400",
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_each_bad_token_is_unauthenticated_with_its_reason_and_never_echoed(
    server: RunningServer,
    local_issuer: LocalIssuer,
    admin_token: str,
    attack: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each kind of bad token -> UNAUTHENTICATED with its reason; the token is in no reply and no log."""
    token, expected = attack_tokens(local_issuer, admin_token)[attack]
    with caplog.at_level(logging.DEBUG):
        error, reason = rejected(server, bearer(token))
    assert reason == expected
    signature = token.rsplit(".", 1)[-1]
    for text in (error.details(), repr(error.trailing_metadata()), caplog.text):
        assert token not in text
        if len(signature) > 16:
            assert signature not in text


def test_a_token_of_another_moto_pool_is_rejected(
    server: RunningServer, moto_server: Any, cognito: CognitoSetup
) -> None:
    """moto signs every pool with the same key: only the issuer check stops another pool's token."""
    other: CognitoSetup = setup_cognito(moto_server.url, cognito.region, pool_name="other-pool")
    foreign = issue_tokens(other.endpoint, other.region, other, other.admin_username, other.admin_password)
    assert rejected(server, bearer(foreign.access))[1] == tokens.WRONG_ISSUER


def test_concurrent_callers_each_see_their_own_principal(
    server: RunningServer, local_issuer: LocalIssuer
) -> None:
    """Twenty callers at once on the pool threads: each RPC sees its own caller, never another's."""
    subjects = [f"concurrent-{n}" for n in range(20)]
    metadata = {sub: bearer(local_issuer.user_token(sub=sub, username=sub)) for sub in subjects}
    seen: dict[str, str] = {}
    start = threading.Barrier(len(subjects))

    def call(sub: str) -> None:
        start.wait()
        seen[sub] = who(server, metadata[sub]).subject

    threads = [threading.Thread(target=call, args=(sub,)) for sub in subjects]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert seen == {sub: sub for sub in subjects}


def test_key_rotation_is_picked_up_and_unknown_kids_do_not_hammer_the_jwks(
    make_server: MakeServer, auth_settings: dict[str, Any], local_issuer: LocalIssuer
) -> None:
    """A key published after start is accepted after one refetch; a second new kid within 10 s is
    refused without another fetch (UNKNOWN_KEY), as the refetch budget is spent."""
    settings = settings_for(**auth_settings)
    deps = core_deps(settings)
    assert deps.jwks is not None
    assert deps.jwks.load()
    running = make_server(deps=deps, auth=auth_settings, servicers={BUSINESS_SERVICE: WhoAmI()})
    kid = f"rotated-{uuid.uuid4().hex[:8]}"
    local_issuer.add_key(kid)
    before = local_issuer.fetches
    token = local_issuer.sign(local_issuer.claims(username="rotated-user"), kid=kid)
    assert who(running, bearer(token)).username == "rotated-user"
    assert local_issuer.fetches == before + 1
    later = f"later-{uuid.uuid4().hex[:8]}"
    local_issuer.add_key(later)
    late_token = local_issuer.sign(local_issuer.claims(), kid=later)
    assert rejected(running, bearer(late_token))[1] == tokens.UNKNOWN_KEY
    assert local_issuer.fetches == before + 1


def test_a_new_kid_while_the_jwks_is_down_is_unavailable_then_accepted_once_it_is_back(
    make_server: MakeServer, auth_settings: dict[str, Any], local_issuer: LocalIssuer
) -> None:
    """A correctly signed token with a kid published after start, while the JWKS endpoint fails,
    is UNAVAILABLE (JWKS_UNAVAILABLE), not UNAUTHENTICATED/UNKNOWN_KEY; the failure does not
    spend the 10 s refetch allowance, so the token is accepted soon after the endpoint heals."""
    settings = settings_for(**auth_settings)
    deps = core_deps(settings)
    assert deps.jwks is not None
    assert deps.jwks.load()
    running = make_server(deps=deps, auth=auth_settings, servicers={BUSINESS_SERVICE: WhoAmI()})
    kid = f"outage-{uuid.uuid4().hex[:8]}"
    local_issuer.add_key(kid)
    token = local_issuer.sign(local_issuer.claims(username="outage-user"), kid=kid)
    local_issuer.fail(503)
    try:
        with pytest.raises(grpc.RpcError) as caught:
            who(running, bearer(token))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        info = error_info_of(rpc_status.from_call(caught.value))
        assert info is not None
        assert info.reason == "JWKS_UNAVAILABLE"
    finally:
        local_issuer.heal()
    time.sleep(1.1)
    assert who(running, bearer(token)).username == "outage-user"


def test_an_unexpected_error_in_verification_is_internal_and_never_echoes_it(
    make_server: MakeServer,
    auth_settings: dict[str, Any],
    local_issuer: LocalIssuer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A non-domain exception from the verifier is INTERNAL with a generic message naming the
    request id (not grpcio's UNKNOWN carrying str(exc)), and the traceback is logged."""
    settings = settings_for(**auth_settings)
    deps = core_deps(settings)
    assert deps.verifier is not None

    def broken(token: str) -> Any:
        raise RuntimeError(f"library bug while reading {token}")

    monkeypatch.setattr(deps.verifier, "verify", broken)
    running = make_server(deps=deps, auth=auth_settings, servicers={BUSINESS_SERVICE: WhoAmI()})
    token = local_issuer.user_token()
    metadata = [*bearer(token), ("x-request-id", "auth-bug-1")]
    with caplog.at_level(logging.ERROR), pytest.raises(grpc.RpcError) as caught:
        running.business.GetMyAccess(business_pb2.GetMyAccessRequest(), metadata=metadata, timeout=10)
    error = caught.value
    assert error.code() == grpc.StatusCode.INTERNAL, (error.code(), error.details())
    assert "library bug" not in (error.details() or "")
    assert token not in (error.details() or "")
    assert "auth-bug-1" in (error.details() or "")
    assert any("library bug" in str(record.exc_info[1]) for record in caplog.records if record.exc_info)
