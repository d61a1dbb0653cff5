"""Request-scoped values bound per RPC by the interceptors and restored after.

grpcio runs each RPC on a pool thread that is reused, so every value set here is reset
in a ``finally`` by whoever set it (see ``bind``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from simplu_grpc.domain.principal import Principal
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


@contextmanager
def bind(
    *,
    request_id: str | None = None,
    principal: Principal | None = None,
    deadline: Deadline | None = None,
) -> Iterator[None]:
    """Set the given values for the duration of the block, then restore the previous ones."""
    rid_token = _request_id.set(request_id) if request_id is not None else None
    principal_token = _principal.set(principal) if principal is not None else None
    deadline_token = _deadline.set(deadline) if deadline is not None else None
    try:
        yield
    finally:
        if deadline_token is not None:
            _deadline.reset(deadline_token)
        if principal_token is not None:
            _principal.reset(principal_token)
        if rid_token is not None:
            _request_id.reset(rid_token)
