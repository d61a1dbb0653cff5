"""A location move as the engine and the operators see it: phase, progress, verification."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class Phase(enum.StrEnum):
    """Where a move is (stored as these strings; see migration 0007)."""

    COPYING = "copying"
    CATCHING_UP = "catching_up"
    SWITCHED = "switched"
    FINALIZING = "finalizing"
    FINALIZED = "finalized"
    REVERTING = "reverting"
    REVERTED = "reverted"
    FAILED = "failed"

    @property
    def open(self) -> bool:
        """Not finalized, reverted or failed: the location cannot start another move."""
        return self not in {Phase.FINALIZED, Phase.REVERTED, Phase.FAILED}

    @property
    def has_work(self) -> bool:
        """The engine has steps to run (a switched move waits for an operator)."""
        return self.open and self is not Phase.SWITCHED


class Request(enum.StrEnum):
    """What an operator asked of a running move; carried out by the engine's next step."""

    NONE = ""
    REVERT = "revert"
    FINALIZE = "finalize"


@dataclass(frozen=True, slots=True)
class Checksum:
    """A location's resource rows on one shard: how many, and an order-independent digest."""

    rows: int
    digest: str


@dataclass(frozen=True, slots=True)
class Verification:
    """Both sides compared while the location's writes were frozen."""

    source: Checksum
    target: Checksum
    verify_time: datetime

    @property
    def matched(self) -> bool:
        return self.source == self.target

    def to_json(self) -> dict[str, Any]:
        return {
            "source_rows": self.source.rows,
            "source_checksum": self.source.digest,
            "target_rows": self.target.rows,
            "target_checksum": self.target.digest,
            "verify_time": self.verify_time.isoformat(),
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Verification:
        return cls(
            source=Checksum(int(value["source_rows"]), str(value["source_checksum"])),
            target=Checksum(int(value["target_rows"]), str(value["target_checksum"])),
            verify_time=datetime.fromisoformat(value["verify_time"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Move:
    """One move's durable record (kept on its source shard)."""

    move_id: str
    business_id: str
    location_id: str
    source_shard: str
    target_shard: str
    phase: Phase = Phase.COPYING
    # The current step and its cursors; JSON (see engine.py for the keys each phase uses).
    progress: dict[str, Any] = field(default_factory=dict)
    rows_copied: int = 0
    changes_copied: int = 0
    lag: int = 0
    verification: Verification | None = None
    error: str = ""
    requested: Request = Request.NONE
    create_time: datetime | None = None
    update_time: datetime | None = None
    switch_time: datetime | None = None
    freeze_millis: int | None = None
