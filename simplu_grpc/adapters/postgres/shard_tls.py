"""The TLS floor for shard connections: Citrus's connection strings cannot lower it.

``SHARD_SSLMODE_MIN`` names the weakest libpq ``sslmode`` a shard connection may use and
``SHARD_SSLROOTCERT`` the CA file that verifies shards. A connection string that asks for less
(``sslmode=disable`` under a ``require`` floor) is refused, not silently upgraded: it means
Citrus and this deployment disagree, which an operator must see. One that names no sslmode gets
the floor (libpq's own default, ``prefer``, would fall back to plaintext). Applied where the
strings enter the process (the Citrus client, the single database's DSN), so every connection
made with them — pools, ShardAdmin's short-lived reads, migrations — gets it; never per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from simplu_grpc.errors import ShardUnavailable
from simplu_grpc.settings import SSLMODES, Settings


@dataclass(frozen=True, slots=True)
class ShardTlsPolicy:
    """The floor (``minimum``) and the CA file for shard connections."""

    minimum: str = "disable"
    root_cert: str | None = None

    def __post_init__(self) -> None:
        if self.minimum not in SSLMODES:
            raise ValueError(f"sslmode must be one of {', '.join(SSLMODES)}")

    def secure(self, shard_id: str, conninfo: str) -> str:
        """``conninfo`` with the floor (and the CA file) in it; ShardUnavailable when it asks for less."""
        extra = self.connect_kwargs(shard_id, conninfo)
        return make_conninfo(conninfo, **extra) if extra else conninfo

    def connect_kwargs(self, shard_id: str, conninfo: str) -> dict[str, Any]:
        """Connection parameters that enforce the floor over ``conninfo``; ShardUnavailable
        (reason SHARD_TLS_REFUSED) when the string asks for less. Nothing when there is no floor."""
        if self.minimum == "disable" and self.root_cert is None:
            return {}
        try:
            params = conninfo_to_dict(conninfo)
        except psycopg.ProgrammingError:
            return {}  # not a conninfo at all: the pool reports that when it connects
        asked = str(params.get("sslmode") or "")
        if asked and (asked not in SSLMODES or SSLMODES.index(asked) < SSLMODES.index(self.minimum)):
            shown = asked if asked in SSLMODES else "?"
            raise ShardUnavailable(
                f"shard {shard_id}: its connection string asks for sslmode={shown},"
                f" below this deployment's minimum {self.minimum} (SHARD_SSLMODE_MIN); fix it in Citrus",
                reason="SHARD_TLS_REFUSED",
                metadata={"shard_id": shard_id, "sslmode_min": self.minimum},
            )
        extra: dict[str, Any] = {}
        if not asked and self.minimum != "disable":
            extra["sslmode"] = self.minimum
        if self.root_cert is not None and "sslrootcert" not in params:
            extra["sslrootcert"] = self.root_cert
        return extra


def shard_tls(settings: Settings) -> ShardTlsPolicy:
    """The policy SHARD_SSLMODE_MIN and SHARD_SSLROOTCERT configure."""
    return ShardTlsPolicy(minimum=settings.shard_sslmode_min, root_cert=settings.shard_sslrootcert)
