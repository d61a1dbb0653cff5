"""TokenVerifier: what it accepts, and each rejection with its own reason (tokens signed locally)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simplu_grpc.adapters.cognito import token_verifier as tokens
from simplu_grpc.adapters.cognito.jwks import JWKS_UNAVAILABLE, JwksClient
from simplu_grpc.adapters.cognito.token_verifier import TokenVerifier
from simplu_grpc.errors import Unauthenticated, Unavailable
from simplu_grpc.metrics import Metrics
from tests.fixtures.clock import FakeClock
from tests.fixtures.tokens import LocalIssuer, b64url_json

ISSUER = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_unitpool"
CLIENT = "unit-app-client"
OTHER_CLIENT = "second-app-client"
LEEWAY = 10


@pytest.fixture(scope="module")
def issuer() -> Iterator[LocalIssuer]:
    """One local signer + JWKS endpoint for this module (tests that change keys use their own kids)."""
    local = LocalIssuer(issuer=ISSUER, client_id=CLIENT)
    yield local
    local.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=5000.0)


@pytest.fixture
def jwks(issuer: LocalIssuer, clock: FakeClock, metrics: Metrics) -> Iterator[JwksClient]:
    client = JwksClient(url=issuer.jwks_url, timeout_seconds=2.0, clock=clock, metrics=metrics)
    client.load()
    yield client
    client.close()


@pytest.fixture
def verifier(jwks: JwksClient, metrics: Metrics) -> TokenVerifier:
    return TokenVerifier(
        issuer=ISSUER, client_ids=[CLIENT, OTHER_CLIENT], jwks=jwks, leeway_seconds=LEEWAY, metrics=metrics
    )


def rejection(verifier: TokenVerifier, token: str) -> Unauthenticated:
    """Verify ``token``, expecting UNAUTHENTICATED; check the message never echoes the token."""
    with pytest.raises(Unauthenticated) as caught:
        verifier.verify(token)
    err = caught.value
    if token:
        assert token not in err.message
        for part in token.split("."):
            if len(part) > 16:
                assert part not in err.message
    return err


# --- accepted ------------------------------------------------------------------------------


def test_person_access_token_gives_the_principal(verifier: TokenVerifier, issuer: LocalIssuer) -> None:
    """An access token yields sub, username, groups, scopes, token kind and client id."""
    token = issuer.user_token(sub="sub-1", username="alice", groups=["admin", "ops"])
    principal = verifier.verify(token)
    assert principal.subject == "sub-1"
    assert principal.username == "alice"
    assert principal.token_use == "access"
    assert principal.client_id == CLIENT
    assert principal.groups == frozenset({"admin", "ops"})
    assert principal.scopes == frozenset({"aws.cognito.signin.user.admin"})
    assert not principal.is_machine


def test_id_token_gives_the_principal_from_cognito_username_and_aud(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    """An id token's username is ``cognito:username`` and its client is ``aud``."""
    token = issuer.user_token(sub="sub-2", username="bob", token_use="id")
    principal = verifier.verify(token)
    assert (principal.subject, principal.username, principal.token_use) == ("sub-2", "bob", "id")
    assert principal.client_id == CLIENT
    assert principal.groups == frozenset()


def test_id_token_audience_may_be_a_list(verifier: TokenVerifier, issuer: LocalIssuer) -> None:
    """``aud`` as a list is accepted when one entry is an allowed client."""
    token = issuer.user_token(token_use="id", aud=["someone-else", OTHER_CLIENT])
    assert verifier.verify(token).client_id == OTHER_CLIENT


def test_machine_token_acts_by_scopes(verifier: TokenVerifier, issuer: LocalIssuer) -> None:
    """A client-credentials token has no username: a machine principal with its OAuth scopes."""
    token = issuer.machine_token(["simplu/resources.read", "simplu/admin"])
    principal = verifier.verify(token)
    assert principal.is_machine
    assert principal.username == ""
    assert principal.subject == CLIENT
    assert principal.scopes == frozenset({"simplu/resources.read", "simplu/admin"})
    assert principal.log_name() == f"client:{CLIENT}"


def test_expiry_within_the_leeway_is_accepted(verifier: TokenVerifier, issuer: LocalIssuer) -> None:
    """A token that expired a few seconds ago (less than the leeway) still passes: clocks drift."""
    now = int(time.time())
    token = issuer.sign(issuer.claims(exp=now - LEEWAY // 2, username="u"))
    assert verifier.verify(token).username == "u"


def test_a_verified_token_is_cached_until_it_expires(
    verifier: TokenVerifier, issuer: LocalIssuer, metrics: Metrics
) -> None:
    """The second verification of the same token is a cache hit (no RSA work, no JWKS lookup)."""
    token = issuer.user_token(username="cached")
    first = verifier.verify(token)
    assert verifier.verify(token) is first
    hits = metrics.registry.get_sample_value(
        "simplu_cache_lookups_total", {"cache": "token", "result": "hit"}
    )
    assert hits == 1


def test_a_cached_token_past_its_expiry_is_verified_again(
    jwks: JwksClient, issuer: LocalIssuer, metrics: Metrics
) -> None:
    """Once the wall clock passes exp + leeway the cache entry is dropped and the token re-checked."""
    wall = [time.time()]
    verifier = TokenVerifier(
        issuer=ISSUER,
        client_ids=[CLIENT],
        jwks=jwks,
        leeway_seconds=0,
        metrics=metrics,
        clock=lambda: wall[0],
    )
    token = issuer.user_token(username="soon", exp=int(wall[0]) + 60)
    verifier.verify(token)
    wall[0] += 61
    verifier.verify(token)  # PyJWT's own clock still says valid: what matters is the cache missed
    misses = metrics.registry.get_sample_value(
        "simplu_cache_lookups_total", {"cache": "token", "result": "miss"}
    )
    assert misses == 2


# --- rejected --------------------------------------------------------------------------------


def test_expired_token_is_rejected(verifier: TokenVerifier, issuer: LocalIssuer) -> None:
    """exp in the past beyond the leeway -> TOKEN_EXPIRED, saying when it expired."""
    now = int(time.time())
    token = issuer.sign(issuer.claims(iat=now - 7200, exp=now - 3600))
    err = rejection(verifier, token)
    assert err.reason == tokens.TOKEN_EXPIRED
    assert "expired at" in err.message


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_token_from_the_future_is_rejected(verifier: TokenVerifier, issuer: LocalIssuer, claim: str) -> None:
    """nbf or iat beyond the leeway in the future -> TOKEN_NOT_YET_VALID."""
    token = issuer.sign(issuer.claims(**{claim: int(time.time()) + 600}))
    assert rejection(verifier, token).reason == tokens.TOKEN_NOT_YET_VALID


def test_wrong_issuer_is_rejected(verifier: TokenVerifier, issuer: LocalIssuer) -> None:
    """A token of another user pool -> WRONG_ISSUER, naming both issuers."""
    other = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_other"
    err = rejection(verifier, issuer.sign(issuer.claims(iss=other)))
    assert err.reason == tokens.WRONG_ISSUER
    assert other in err.message
    assert ISSUER in err.message


def test_access_token_of_another_client_is_rejected(verifier: TokenVerifier, issuer: LocalIssuer) -> None:
    """An access token whose client_id is not allowed -> WRONG_AUDIENCE."""
    err = rejection(verifier, issuer.sign(issuer.claims(client_id="intruder-app")))
    assert err.reason == tokens.WRONG_AUDIENCE
    assert "intruder-app" in err.message


def test_access_token_without_client_id_is_rejected(verifier: TokenVerifier, issuer: LocalIssuer) -> None:
    """An access token carrying only ``aud`` (not how Cognito shapes it) -> WRONG_AUDIENCE."""
    token = issuer.sign(issuer.claims(client_id=None, aud=CLIENT))
    assert rejection(verifier, token).reason == tokens.WRONG_AUDIENCE


def test_id_token_of_another_audience_is_rejected(verifier: TokenVerifier, issuer: LocalIssuer) -> None:
    """An id token whose aud is not an allowed client -> WRONG_AUDIENCE."""
    token = issuer.user_token(token_use="id", aud="intruder-app")
    assert rejection(verifier, token).reason == tokens.WRONG_AUDIENCE


def test_alg_none_is_rejected(verifier: TokenVerifier, issuer: LocalIssuer) -> None:
    """An unsigned token (alg: none) -> UNSUPPORTED_ALGORITHM."""
    err = rejection(verifier, issuer.unsigned(issuer.claims(username="x", **{"cognito:groups": ["admin"]})))
    assert err.reason == tokens.UNSUPPORTED_ALGORITHM
    assert "RS256" in err.message


def test_hs256_signed_with_the_public_key_is_rejected(verifier: TokenVerifier, issuer: LocalIssuer) -> None:
    """Key confusion: HMAC with the published RSA public key as secret -> UNSUPPORTED_ALGORITHM."""
    token = issuer.hs256_with_public_key(issuer.claims(username="x", **{"cognito:groups": ["admin"]}))
    assert rejection(verifier, token).reason == tokens.UNSUPPORTED_ALGORITHM


def test_other_asymmetric_algorithms_are_rejected(verifier: TokenVerifier, issuer: LocalIssuer) -> None:
    """Only RS256: RS512 with the right key, or ES256, is still UNSUPPORTED_ALGORITHM."""
    claims = issuer.claims()
    rs512 = jwt.encode(claims, issuer._private[issuer.kid], algorithm="RS512", headers={"kid": issuer.kid})
    es256 = jwt.encode(
        claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256", headers={"kid": "e"}
    )
    assert rejection(verifier, rs512).reason == tokens.UNSUPPORTED_ALGORITHM
    assert rejection(verifier, es256).reason == tokens.UNSUPPORTED_ALGORITHM


def test_tampered_payload_is_rejected(verifier: TokenVerifier, issuer: LocalIssuer) -> None:
    """A valid token whose payload was edited (self-promotion to admin) -> BAD_SIGNATURE."""
    token = issuer.user_token(username="mallory")
    forged = issuer.tampered(token, **{"cognito:groups": ["admin"]})
    assert rejection(verifier, forged).reason == tokens.BAD_SIGNATURE


def test_signature_by_another_key_under_a_known_kid_is_rejected(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    """Signed with an unpublished key but claiming a published kid -> BAD_SIGNATURE."""
    issuer.add_key("impostor", publish=False)
    token = issuer.sign(issuer.claims(), kid="impostor")
    _header, payload, signature = token.split(".")
    relabelled = f"{b64url_json({'alg': 'RS256', 'typ': 'JWT', 'kid': issuer.kid})}.{payload}.{signature}"
    assert rejection(verifier, relabelled).reason == tokens.BAD_SIGNATURE


def test_unknown_kid_is_rejected_after_exactly_one_refetch(
    verifier: TokenVerifier, issuer: LocalIssuer, clock: FakeClock
) -> None:
    """An unknown kid refetches the JWKS once -> UNKNOWN_KEY; a second one within 10 s fetches nothing."""
    issuer.add_key("unpublished-1", publish=False)
    before = issuer.fetches
    err = rejection(verifier, issuer.sign(issuer.claims(), kid="unpublished-1"))
    assert err.reason == tokens.UNKNOWN_KEY
    assert "unpublished-1" in err.message
    assert err.metadata == {"kid": "unpublished-1"}
    assert issuer.fetches == before + 1
    clock.now += 5
    assert rejection(verifier, issuer.sign(issuer.claims(), kid="unpublished-1")).reason == tokens.UNKNOWN_KEY
    assert issuer.fetches == before + 1


def test_a_newly_published_key_is_accepted_after_one_refetch(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    """Key rotation: a token signed with a key published after start verifies (one refetch)."""
    issuer.add_key("rotated-in")
    before = issuer.fetches
    token = issuer.sign(issuer.claims(username="rotated"), kid="rotated-in")
    assert verifier.verify(token).username == "rotated"
    assert issuer.fetches == before + 1


@pytest.mark.parametrize(
    "token",
    [
        "not-a-jwt",
        "a.b.c",
        "a.b",
        "....",
        f"{b64url_json({'alg': 'RS256'})}.e30.c2ln",
        "eyJhbGciOiJSUzI1NiJ9.!!!.sig",
    ],
    ids=["one-part", "garbage-parts", "two-parts", "empty-parts", "no-kid", "bad-payload"],
)
def test_malformed_tokens_are_rejected(verifier: TokenVerifier, token: str) -> None:
    """Anything that is not a well-formed RS256 JWT with a kid -> MALFORMED_TOKEN."""
    assert rejection(verifier, token).reason == tokens.MALFORMED_TOKEN


def test_oversized_token_is_rejected_without_parsing(verifier: TokenVerifier) -> None:
    """A 100 KiB 'token' is refused as MALFORMED_TOKEN before any decoding."""
    assert rejection(verifier, "x" * 100_000).reason == tokens.MALFORMED_TOKEN


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"exp": None}, tokens.MALFORMED_TOKEN),
        ({"sub": None}, tokens.MALFORMED_TOKEN),
        ({"token_use": None}, tokens.MALFORMED_TOKEN),
        ({"sub": 42}, tokens.MALFORMED_TOKEN),
        ({"exp": "tomorrow"}, tokens.MALFORMED_TOKEN),
        ({"cognito:groups": "admin,ops"}, None),
        ({"cognito:groups": [1, 2]}, tokens.MALFORMED_TOKEN),
        ({"scope": ["a", "b"]}, tokens.MALFORMED_TOKEN),
        ({"username": 7}, tokens.MALFORMED_TOKEN),
    ],
    ids=[
        "no-exp",
        "no-sub",
        "no-token-use",
        "int-sub",
        "text-exp",
        "str-groups",
        "int-groups",
        "list-scope",
        "int-user",
    ],
)
def test_claims_of_the_wrong_shape_are_rejected(
    verifier: TokenVerifier, issuer: LocalIssuer, overrides: dict[str, Any], reason: str | None
) -> None:
    """Signed but structurally wrong claims -> MALFORMED_TOKEN (a single group as a string is tolerated)."""
    token = issuer.sign(issuer.claims(**overrides))
    if reason is None:
        assert verifier.verify(token).groups == frozenset({"admin,ops"})
    else:
        assert rejection(verifier, token).reason == reason


@pytest.mark.parametrize("token_use", ["refresh", "", "ACCESS"])
def test_wrong_token_use_is_rejected(verifier: TokenVerifier, issuer: LocalIssuer, token_use: str) -> None:
    """token_use other than 'access' or 'id' -> WRONG_TOKEN_USE."""
    token = issuer.sign(issuer.claims(token_use=token_use, client_id=CLIENT))
    assert rejection(verifier, token).reason == tokens.WRONG_TOKEN_USE


@pytest.mark.parametrize("token", ["", "   "])
def test_missing_token_is_rejected(verifier: TokenVerifier, token: str) -> None:
    """An empty token -> MISSING_TOKEN."""
    assert rejection(verifier, token).reason == tokens.MISSING_TOKEN


def test_hostile_header_values_are_not_echoed_raw(verifier: TokenVerifier, issuer: LocalIssuer) -> None:
    """An alg full of control characters and length is shortened and cleaned in the message."""
    header = b64url_json({"alg": "\x1b[31m" + "A" * 500, "kid": issuer.kid})
    err = rejection(verifier, f"{header}.e30.c2ln")
    assert err.reason == tokens.UNSUPPORTED_ALGORITHM
    assert "\x1b" not in err.message
    assert "A" * 100 not in err.message


def test_jwks_never_reachable_is_unavailable_not_unauthenticated(
    issuer: LocalIssuer, metrics: Metrics
) -> None:
    """With no key set ever loaded the verifier cannot judge a token: UNAVAILABLE (JWKS_UNAVAILABLE)."""
    issuer.fail(503)
    try:
        jwks = JwksClient(url=issuer.jwks_url, timeout_seconds=1.0, metrics=metrics)
        assert jwks.load() is False
        verifier = TokenVerifier(
            issuer=ISSUER, client_ids=[CLIENT], jwks=jwks, leeway_seconds=0, metrics=metrics
        )
        with pytest.raises(Unavailable) as caught:
            verifier.verify(issuer.user_token())
        assert caught.value.reason == JWKS_UNAVAILABLE
    finally:
        issuer.heal()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"issuer": "", "client_ids": [CLIENT], "leeway_seconds": 0}, "issuer"),
        ({"issuer": ISSUER, "client_ids": [], "leeway_seconds": 0}, "client"),
        ({"issuer": ISSUER, "client_ids": [CLIENT], "leeway_seconds": -1}, "leeway"),
    ],
)
def test_bad_configuration_is_refused(jwks: JwksClient, kwargs: dict[str, Any], message: str) -> None:
    """A verifier that would accept nothing (or anything) cannot be built."""
    with pytest.raises(ValueError, match=message):
        TokenVerifier(jwks=jwks, metrics=Metrics(), **kwargs)


_B64_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_="
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=10,
)
_headers = st.fixed_dictionaries(
    {},
    optional={
        "alg": st.sampled_from(["RS256", "none", "HS256", "RS512", "ES256", ""]) | _json_values,
        "kid": st.sampled_from(["local-test-key", "dummy", ""]) | _json_values,
        "typ": _json_values,
        "crit": _json_values,
        "b64": _json_values,
    },
)
_payloads = st.dictionaries(
    st.sampled_from(["iss", "sub", "exp", "iat", "nbf", "token_use", "client_id", "aud", "scope", "x"]),
    _json_values,
)
_jwt_like = st.builds(
    lambda header, payload, signature: f"{b64url_json(header)}.{b64url_json(payload)}.{signature}",
    _headers,
    _payloads,
    st.text(alphabet=_B64_CHARS, max_size=400),
)
_garbage = st.text(max_size=300) | st.text(alphabet=_B64_CHARS + ".", max_size=300)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(token=_jwt_like | _garbage)
def test_arbitrary_input_is_only_ever_unauthenticated(verifier: TokenVerifier, token: str) -> None:
    """Whatever arrives as a token, verify() answers Unauthenticated: never another exception."""
    with pytest.raises(Unauthenticated):
        verifier.verify(token)
