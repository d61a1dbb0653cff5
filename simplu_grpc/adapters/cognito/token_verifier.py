"""Cognito token verification: a bearer JWT in, a Principal out, or UNAUTHENTICATED with a reason.

Checks, in order: the token is a JWT at all; its header says RS256 (``none``, HS* and every
other algorithm are refused before any key is touched, so an HS256 token "signed" with the
public key never reaches a verifier); its kid is in the pool's JWKS (one refetch for an
unknown kid); the signature; ``exp``/``nbf``/``iat`` with a small leeway, each a real time
(0 to year 9999: a list, an object or 10**400 is MALFORMED_TOKEN); ``iss`` is the
pool; ``token_use`` is ``access`` or ``id``; the app client (``client_id`` for access
tokens, ``aud`` for id tokens) is one this service accepts.

Each rejection has its own reason code so a caller can tell "get a new token" from "you
are talking to the wrong pool". Messages never contain the token; values taken from it
(kid, issuer, client id) are shortened and stripped of control characters first.

PyJWT's exceptions stop here, each turned into its Unauthenticated reason; a key set that
cannot be fetched is Unavailable (JWKS_UNAVAILABLE, from ``jwks``). Verified tokens are
remembered until they expire (``token_cache``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import jwt
from jwt import exceptions as jwt_errors

from simplu_grpc.adapters.cognito.jwks import JWKS_UNAVAILABLE, JwksClient
from simplu_grpc.adapters.cognito.token_cache import VerifiedTokens
from simplu_grpc.domain.auth.principal import Principal, TokenUse
from simplu_grpc.errors import Reason, Unauthenticated, Unavailable
from simplu_grpc.metrics import Metrics

MISSING_TOKEN: Final = "MISSING_TOKEN"
MALFORMED_TOKEN: Final = "MALFORMED_TOKEN"
UNSUPPORTED_ALGORITHM: Final = "UNSUPPORTED_ALGORITHM"
UNKNOWN_KEY: Final = "UNKNOWN_KEY"
BAD_SIGNATURE: Final = "BAD_SIGNATURE"
TOKEN_EXPIRED: Final = "TOKEN_EXPIRED"
TOKEN_NOT_YET_VALID: Final = "TOKEN_NOT_YET_VALID"
WRONG_ISSUER: Final = "WRONG_ISSUER"
WRONG_AUDIENCE: Final = "WRONG_AUDIENCE"
WRONG_TOKEN_USE: Final = "WRONG_TOKEN_USE"

ALGORITHM = "RS256"
_TOKEN_USES: frozenset[str] = frozenset({"access", "id"})
# Cognito tokens are 1-2 KiB; a much longer "token" is garbage or an attempt to waste CPU.
_MAX_TOKEN_CHARS = 16 * 1024
_REQUIRED_CLAIMS = ["exp", "iat", "iss", "sub", "token_use"]
# Time claims are seconds since 1970 up to the end of year 9999: anything else (10**400, a
# negative time, a float beyond what a date can hold) is not a time, however well signed.
_TIME_CLAIMS = ("exp", "iat", "nbf")
_LATEST_TIME = 253_402_300_799
# Verified tokens are remembered (by digest) so a warm RPC costs no RSA verification.
_CACHE_MAX_ENTRIES = 10_000
_CACHE_MAX_SECONDS = 300.0


def _shown(value: object, limit: int = 64) -> str:
    """A value taken from a token, safe to echo: printable, short, quoted."""
    text = "".join(ch for ch in str(value) if ch.isprintable())
    if len(text) > limit:
        text = text[:limit] + "..."
    return repr(text)


def _reject(reason: Reason, message: str, **metadata: str) -> Unauthenticated:
    return Unauthenticated(message, reason=reason, metadata=metadata)


class TokenVerifier:
    """Verifies Cognito access and id tokens of one user pool for a set of app clients."""

    def __init__(
        self,
        *,
        issuer: str,
        client_ids: Iterable[str],
        jwks: JwksClient,
        leeway_seconds: float,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        cache_max_entries: int = _CACHE_MAX_ENTRIES,
    ) -> None:
        allowed = frozenset(c for c in client_ids if c)
        if not issuer:
            raise ValueError("issuer is required")
        if not allowed:
            raise ValueError("at least one allowed app client id is required")
        if leeway_seconds < 0:
            raise ValueError(f"leeway_seconds must be >= 0, got {leeway_seconds}")
        self.issuer = issuer
        self.client_ids = allowed
        self._jwks = jwks
        self._leeway = leeway_seconds
        self._verified = VerifiedTokens(
            max_entries=cache_max_entries, max_seconds=_CACHE_MAX_SECONDS, clock=clock, metrics=metrics
        )

    def verify(self, token: str) -> Principal:
        """The caller the token proves; raise Unauthenticated (or Unavailable: JWKS never reachable)."""
        if not token or not token.strip():
            raise _reject(MISSING_TOKEN, "a bearer token is required: send 'authorization: Bearer <JWT>'")
        if len(token) > _MAX_TOKEN_CHARS:
            raise _reject(MALFORMED_TOKEN, f"the bearer token is longer than {_MAX_TOKEN_CHARS} characters")
        if not token.isascii():
            raise _reject(MALFORMED_TOKEN, "the bearer token is not a JWT (it has non-ASCII characters)")
        digest = hashlib.sha256(token.encode("ascii")).digest()
        cached = self._verified.get(digest)
        if cached is not None:
            return cached
        claims = self._verified_claims(token)
        principal = self._principal(claims)
        self._verified.put(digest, principal, _seconds(claims["exp"]) + self._leeway)
        return principal

    # --- checks -------------------------------------------------------------------------

    def _verified_claims(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt_errors.PyJWTError:
            raise _reject(
                MALFORMED_TOKEN, "the bearer token is not a JWT (expected three base64url parts)"
            ) from None
        algorithm = header.get("alg")
        if algorithm != ALGORITHM:
            raise _reject(
                UNSUPPORTED_ALGORITHM,
                f"tokens must be signed with {ALGORITHM}; this one says alg={_shown(algorithm)}",
            )
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _reject(MALFORMED_TOKEN, "the token header has no key id (kid)")
        # Unavailable(JWKS_UNAVAILABLE) when the key set could not be fetched: we cannot tell a
        # good token from a bad one, and that is our outage, not the caller's.
        key = self._jwks.get_key(kid)
        if key is None:
            if not self._jwks.has_keys:
                raise Unavailable(
                    "the user pool's signing keys could not be fetched; try again shortly",
                    reason=JWKS_UNAVAILABLE,
                )
            # The key set was fetched (now or within the refetch interval) and lacks this kid.
            raise _reject(
                UNKNOWN_KEY,
                f"the token was signed with key {_shown(kid)}, which the user pool does not publish",
                kid=_shown(kid)[1:-1],
            )
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,
                algorithms=[ALGORITHM],
                issuer=self.issuer,
                leeway=self._leeway,
                options={"require": _REQUIRED_CLAIMS, "verify_aud": False},
            )
        except jwt_errors.InvalidSignatureError:
            raise _reject(BAD_SIGNATURE, "the token's signature does not match its contents") from None
        except jwt_errors.ExpiredSignatureError:
            raise _reject(TOKEN_EXPIRED, self._expired_message(token)) from None
        except jwt_errors.ImmatureSignatureError:
            raise _reject(
                TOKEN_NOT_YET_VALID,
                "the token is not valid yet (nbf or iat is in the future); check the issuer's clock",
            ) from None
        except jwt_errors.InvalidIssuerError:
            raise _reject(WRONG_ISSUER, self._issuer_message(token), expected_issuer=self.issuer) from None
        except jwt_errors.MissingRequiredClaimError as exc:
            raise _reject(MALFORMED_TOKEN, f"the token lacks the required claim {exc.claim!r}") from None
        except jwt_errors.InvalidAlgorithmError:
            raise _reject(UNSUPPORTED_ALGORITHM, f"tokens must be signed with {ALGORITHM}") from None
        except jwt_errors.DecodeError:
            raise _reject(MALFORMED_TOKEN, "the token's payload is not valid JSON claims") from None
        except jwt_errors.InvalidTokenError as exc:
            # Claims of the wrong type (iat not a number, sub not a string, ...).
            raise _reject(MALFORMED_TOKEN, f"the token's claims are invalid: {exc}") from None
        for name in _TIME_CLAIMS:
            if name in claims and not _is_time(claims[name]):
                raise _reject(
                    MALFORMED_TOKEN,
                    f"the token's {name!r} claim is not a time (seconds since 1970, up to year 9999)",
                )
        return claims

    def _principal(self, claims: Mapping[str, Any]) -> Principal:
        token_use = claims.get("token_use")
        if not isinstance(token_use, str) or token_use not in _TOKEN_USES:
            raise _reject(
                WRONG_TOKEN_USE,
                f"token_use must be 'access' or 'id', this token says {_shown(token_use)}",
            )
        use: TokenUse = "access" if token_use == "access" else "id"
        client_id = self._client_id(claims, use)
        username_claim = "username" if use == "access" else "cognito:username"
        username = claims.get(username_claim, "")
        if not isinstance(username, str):
            raise _reject(MALFORMED_TOKEN, f"the token's {username_claim!r} claim is not a string")
        if use == "id" and not username:
            raise _reject(MALFORMED_TOKEN, "an id token must carry 'cognito:username'")
        return Principal(
            subject=str(claims["sub"]),
            username=username,
            token_use=use,
            client_id=client_id,
            groups=_string_set(claims.get("cognito:groups", []), "cognito:groups"),
            scopes=_scopes(claims.get("scope", "")),
        )

    def _client_id(self, claims: Mapping[str, Any], use: TokenUse) -> str:
        if use == "access":
            client_id = claims.get("client_id")
            if not isinstance(client_id, str) or client_id not in self.client_ids:
                raise _reject(
                    WRONG_AUDIENCE,
                    f"the access token was issued to app client {_shown(client_id)}, "
                    "which this service does not accept",
                )
            return client_id
        audience = claims.get("aud")
        audiences = [audience] if isinstance(audience, str) else audience
        if isinstance(audiences, list):
            for candidate in audiences:
                if isinstance(candidate, str) and candidate in self.client_ids:
                    return candidate
        raise _reject(
            WRONG_AUDIENCE,
            f"the id token's audience {_shown(audience)} is not an app client this service accepts",
        )

    def _expired_message(self, token: str) -> str:
        exp = _unverified_claims(token).get("exp")
        if _is_time(exp):
            when = datetime.fromtimestamp(_seconds(exp), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            return f"the token expired at {when}; sign in again or refresh it"
        return "the token has expired; sign in again or refresh it"

    def _issuer_message(self, token: str) -> str:
        found = _unverified_claims(token).get("iss")
        return (
            f"the token was issued by {_shown(found, 120)}, not by this service's user pool {self.issuer!r}"
        )


def _is_time(value: object) -> bool:
    """A number of seconds since 1970 that a date can hold (booleans are not numbers here)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= _LATEST_TIME


def _seconds(value: object) -> float:
    """A time claim already checked by ``_is_time``, as a float."""
    assert isinstance(value, int | float)
    return float(value)


def _unverified_claims(token: str) -> dict[str, Any]:
    """Claims read without verification, only to word an error message (signature already checked)."""
    try:
        claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    except jwt_errors.PyJWTError:
        return {}
    return claims


def _string_set(value: object, claim: str) -> frozenset[str]:
    if isinstance(value, str):
        return frozenset({value})
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return frozenset(value)
    raise _reject(MALFORMED_TOKEN, f"the token's {claim!r} claim is not a list of strings")


def _scopes(value: object) -> frozenset[str]:
    if not isinstance(value, str):
        raise _reject(MALFORMED_TOKEN, "the token's 'scope' claim is not a string")
    return frozenset(value.split())
