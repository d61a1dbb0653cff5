"""The verified caller: who sent the RPC, as established from a Cognito token."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

TokenUse = Literal["access", "id"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """A caller whose token was verified; built by the token verifier, never from raw input."""

    subject: str  # Cognito `sub` (for client-credentials tokens: the app client id)
    username: str  # `username` / `cognito:username`; empty for machine clients
    token_use: TokenUse
    client_id: str  # `client_id` (access) or `aud` (id)
    groups: frozenset[str] = field(default_factory=frozenset)
    scopes: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_machine(self) -> bool:
        """A client-credentials access token: it acts by OAuth scopes, not as a person."""
        return self.token_use == "access" and not self.username

    def log_name(self) -> str:
        """How the access log names this caller (never a token)."""
        return f"client:{self.client_id}" if self.is_machine else f"user:{self.subject}"
