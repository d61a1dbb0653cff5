"""Request-scoped values bound per RPC by the interceptors and restored after.

grpcio runs each RPC on a pool thread that is reused, so every value set here is reset
in a ``finally`` by whoever set it (see ``bind``).
"""

from __future__ import annotations

import time
from contextvars import ContextVar, Token
from dataclasses import dataclass

from simplu_grpc.domain.auth.principal import Principal
from simplu_grpc.errors import DeadlineExceeded, Unauthenticated


@dataclass(frozen=True, slots=True)
class Deadline:
    """An absolute point on the monotonic clock by which the RPC must have answered."""

    expires_at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        """Seconds left (never negative)."""
        return max(0.0, self.expires_at - time.monotonic())

    def check(self, what: str = "the request") -> float:
        """Seconds left; raise DeadlineExceeded when none are."""
        left = self.remaining()
        if left <= 0:
            raise DeadlineExceeded(f"deadline exceeded before {what}")
        return left


_request_id: ContextVar[str] = ContextVar("simplu_request_id", default="")
_principal: ContextVar[Principal | None] = ContextVar("simplu_principal", default=None)
_deadline: ContextVar[Deadline | None] = ContextVar("simplu_deadline", default=None)

# Used when code runs outside an RPC (CLI, background work): generous but finite.
_FALLBACK_SECONDS = 30.0


def request_id() -> str:
    return _request_id.get()


def principal_or_none() -> Principal | None:
    return _principal.get()


def principal() -> Principal:
    """The verified caller of the current RPC; UNAUTHENTICATED when there is none."""
    found = _principal.get()
    if found is None:
        raise Unauthenticated("this method requires a bearer token", reason="MISSING_TOKEN")
    return found


def deadline() -> Deadline:
    """The current RPC's deadline, or a finite fallback outside an RPC."""
    return _deadline.get() or Deadline.after(_FALLBACK_SECONDS)


_Tokens = tuple[Token[str] | None, Token[Principal | None] | None, Token[Deadline | None] | None]


class bind:  # noqa: N801 - used as a function: ``with context.bind(...)``
    """Set the given values for the duration of the block, then restore the previous ones.

    A class rather than a ``@contextmanager`` generator: every RPC enters it twice, and a
    generator-based context manager costs several times more per use.
    """

    __slots__ = ("_deadline", "_principal", "_request_id", "_tokens")

    def __init__(
        self,
        *,
        request_id: str | None = None,
        principal: Principal | None = None,
        deadline: Deadline | None = None,
    ) -> None:
        self._request_id = request_id
        self._principal = principal
        self._deadline = deadline
        self._tokens: tuple[
            Token[str] | None, Token[Principal | None] | None, Token[Deadline | None] | None
        ] = (
            None,
            None,
            None,
        )

    def __enter__(self) -> None:
        self._tokens = (
            _request_id.set(self._request_id) if self._request_id is not None else None,
            _principal.set(self._principal) if self._principal is not None else None,
            _deadline.set(self._deadline) if self._deadline is not None else None,
        )

    def __exit__(self, *_exc: object) -> None:
        rid_token, principal_token, deadline_token = self._tokens
        if deadline_token is not None:
            _deadline.reset(deadline_token)
        if principal_token is not None:
            _principal.reset(principal_token)
        if rid_token is not None:
            _request_id.reset(rid_token)
