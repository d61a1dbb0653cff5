"""Auth interceptor: every RPC but health and reflection needs a valid Cognito bearer token.

The verified Principal is bound to the request context for the servicer
(``simplu_grpc.context.principal()``) and unbound when the RPC returns. Health and
reflection are exempt because kubelet probes and grpcurl's ``list`` cannot send a token.
The token itself is never logged nor echoed; rejections carry only a reason and a message.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from simplu_grpc import context, logs
from simplu_grpc.adapters.cognito.token_verifier import MALFORMED_TOKEN, MISSING_TOKEN, TokenVerifier
from simplu_grpc.errors import SimpluError, Unauthenticated
from simplu_grpc.interceptors.base import Behavior, ServerInterceptor
from simplu_grpc.interceptors.errors import abort_with, fail

log = logging.getLogger(__name__)

# Method names are "/package.Service/Method"; these prefixes need no token.
EXEMPT_PREFIXES: tuple[str, ...] = (
    f"/{health_pb2.DESCRIPTOR.services_by_name['Health'].full_name}/",
    # v1alpha and v1 of the reflection service.
    "/grpc.reflection.",
)
_SCHEME = "bearer"


def is_exempt(method_name: str) -> bool:
    """Whether the method is served without a token (health checks, reflection)."""
    return method_name.startswith(EXEMPT_PREFIXES)


def bearer_token(metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
    """The JWT from ``authorization: Bearer <jwt>``; raise Unauthenticated (missing / malformed)."""
    values = [value for key, value in metadata or () if key.lower() == "authorization"]
    if not values:
        raise Unauthenticated(
            "this method requires a token: send metadata 'authorization: Bearer <JWT>'", reason=MISSING_TOKEN
        )
    if len(values) > 1:
        raise Unauthenticated("send exactly one 'authorization' metadata entry", reason=MALFORMED_TOKEN)
    value = values[0]
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != _SCHEME:
        raise Unauthenticated(
            "the 'authorization' metadata must use the Bearer scheme: 'Bearer <JWT>'", reason=MALFORMED_TOKEN
        )
    token = token.strip()
    if not token:
        raise Unauthenticated("'authorization: Bearer' carries no token", reason=MISSING_TOKEN)
    return token


class AuthInterceptor(ServerInterceptor):
    """Verifies the bearer token and binds the Principal; aborts UNAUTHENTICATED otherwise."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self._verifier = verifier

    def intercept(
        self,
        method: Behavior,
        request_or_iterator: Any,
        context_: grpc.ServicerContext,
        method_name: str,
    ) -> Any:
        if is_exempt(method_name):
            return method(request_or_iterator, context_)
        try:
            token = bearer_token(context_.invocation_metadata())
            principal = self._verifier.verify(token)
        except SimpluError as err:
            # Reason only: the message may name a kid or issuer, never the token.
            log.info("rejected %s: %s", method_name, err.reason)
            abort_with(context_, err)
        except Exception as exc:
            # A bug or an unexpected library error: INTERNAL with a generic message, never
            # grpcio's UNKNOWN carrying str(exc) (which could quote the token).
            fail(exc, context_, method_name)
        # The access log (outermost) writes its line after the principal is unbound below.
        logs.note_principal(principal)
        # Every simplu.v1 RPC is unary-response, so the servicer has finished (and the
        # principal is no longer needed) when ``method`` returns.
        with context.bind(principal=principal):
            return method(request_or_iterator, context_)
