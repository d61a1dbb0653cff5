"""Real moto: its tokens verify against its own JWKS endpoint, and the MotoServer process lifecycle."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from simplu_grpc.adapters.cognito import token_verifier as tokens
from simplu_grpc.adapters.cognito.jwks import JwksClient
from simplu_grpc.adapters.cognito.token_verifier import TokenVerifier
from simplu_grpc.devstack.moto_server import (
    CognitoSetup,
    MotoServer,
    client,
    create_business_table,
    issue_tokens,
)
from simplu_grpc.errors import Unauthenticated
from simplu_grpc.metrics import Metrics

pytestmark = pytest.mark.integration


@pytest.fixture
def moto_verifier(cognito: CognitoSetup) -> Iterator[TokenVerifier]:
    """A verifier reading keys straight from moto's JWKS URL, as a dev server does."""
    metrics = Metrics()
    jwks = JwksClient(url=cognito.jwks_url, timeout_seconds=5.0, metrics=metrics)
    assert jwks.load()
    yield TokenVerifier(
        issuer=cognito.issuer, client_ids=[cognito.client_id], jwks=jwks, leeway_seconds=10, metrics=metrics
    )
    jwks.close()


def test_moto_access_and_id_tokens_verify_against_motos_jwks(
    moto_verifier: TokenVerifier, cognito: CognitoSetup
) -> None:
    """moto's RS256 tokens (kid 'dummy') verify with the keys moto serves; claims map to the Principal."""
    signed_in = issue_tokens(
        cognito.endpoint, cognito.region, cognito, cognito.admin_username, cognito.admin_password
    )
    access = moto_verifier.verify(signed_in.access)
    assert (access.subject, access.username, access.token_use) == (
        cognito.admin_sub,
        cognito.admin_username,
        "access",
    )
    assert access.groups == frozenset({cognito.admin_group})
    assert access.client_id == cognito.client_id
    identity = moto_verifier.verify(signed_in.id)
    assert (identity.subject, identity.username, identity.token_use) == (
        cognito.admin_sub,
        cognito.admin_username,
        "id",
    )


def test_a_token_for_another_app_client_of_the_same_pool_is_rejected(
    moto_verifier: TokenVerifier, cognito: CognitoSetup
) -> None:
    """Same pool, same key, but an app client this service does not accept -> WRONG_AUDIENCE."""
    cognito_idp = client("cognito-idp", cognito.endpoint, cognito.region)
    other_client = cognito_idp.create_user_pool_client(
        UserPoolId=cognito.pool_id,
        ClientName="someone-elses-app",
        ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
    )["UserPoolClient"]["ClientId"]
    other = CognitoSetup(**{**cognito.__dict__, "client_id": other_client})
    signed_in = issue_tokens(
        cognito.endpoint, cognito.region, other, cognito.user_username, cognito.user_password
    )
    for token in (signed_in.access, signed_in.id):
        with pytest.raises(Unauthenticated) as caught:
            moto_verifier.verify(token)
        assert caught.value.reason == tokens.WRONG_AUDIENCE


def test_business_table_is_created_once(moto_server: MotoServer) -> None:
    """create_business_table makes a table keyed by id, expiring items by expiresAt, and tolerates a rerun."""
    create_business_table(moto_server.url, "us-east-1", "auth-test-business-info")
    create_business_table(moto_server.url, "us-east-1", "auth-test-business-info")
    dynamodb = client("dynamodb", moto_server.url, "us-east-1")
    table = dynamodb.describe_table(TableName="auth-test-business-info")
    assert table["Table"]["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    ttl = dynamodb.describe_time_to_live(TableName="auth-test-business-info")["TimeToLiveDescription"]
    assert ttl["TimeToLiveStatus"] == "ENABLED"
    assert ttl["AttributeName"] == "expiresAt"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_moto_server_stops_without_leftovers_and_restarts_on_the_same_port() -> None:
    """stop() kills the process group and frees the port; start() again serves on the same port (empty)."""
    server = MotoServer().start()
    try:
        assert server._process is not None
        pid, port = server._process.pid, server.port
        create_business_table(server.url, "us-east-1", "before-restart")
        server.stop()
        assert not _alive(pid)
        assert not server.running
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, "nothing listens after stop()"
        server.start()
        assert server.port == port
        tables = client("dynamodb", server.url, "us-east-1").list_tables()["TableNames"]
        assert tables == []
    finally:
        server.stop()
    server.stop()  # idempotent


def test_moto_server_that_cannot_bind_fails_fast_with_its_output() -> None:
    """A port already taken: start() raises RuntimeError quoting moto's own error, nothing left running."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        server = MotoServer(port=taken.getsockname()[1])
        with pytest.raises(RuntimeError, match="moto server"):
            # A listener that never answers HTTP: moto exits (address in use) before we see an answer.
            server.start()
        assert not server.running
