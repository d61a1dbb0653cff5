"""MigrateShard and ``simplu-grpc migrate``: the one "migrate every shard" path.

Shards come from Citrus (or the single database); each is migrated through the ``Migrator``
port, concurrently, within the budget; a failing shard does not stop the others, and its
error is redacted (the connection string included).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from simplu_grpc import context
from simplu_grpc.domain.admin.arguments import require_shard_id
from simplu_grpc.domain.admin.dependencies import CALL_TIMEOUT_SECONDS, run_bounded, within
from simplu_grpc.domain.admin.ports import MigrationResult, Migrator
from simplu_grpc.domain.placement.ports import ShardSource
from simplu_grpc.errors import InvalidArgument, NotFound
from simplu_grpc.redact import describe_error, dsn_target

log = logging.getLogger(__name__)

# Migrations may legitimately take a while; still bounded.
MIGRATE_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class MigrationOutcome:
    """``version_before``/``version_after`` are None when the migration failed (not known).

    ``target`` is ``host:port/db`` (never the password); ``applied`` the ``NNNN_name`` of each
    migration applied, in order; ``error`` is redacted.
    """

    shard_id: str
    version_before: int | None
    version_after: int | None
    applied: list[str] = field(default_factory=list)
    error: str = ""
    target: str = ""

    @property
    def applied_versions(self) -> list[int]:
        return [int(name.split("_", 1)[0]) for name in self.applied]


class ShardMigrations:
    """Applies pending migrations to one shard or every shard ``shards`` lists."""

    def __init__(
        self,
        *,
        shards: ShardSource,
        migrator: Migrator,
        secrets: tuple[str, ...] = (),
        timeout_seconds: float = MIGRATE_TIMEOUT_SECONDS,
    ) -> None:
        self._shards = shards
        self._migrator = migrator
        self._secrets = tuple(s for s in secrets if s)
        self._timeout = timeout_seconds

    @property
    def migrator(self) -> Migrator:
        return self._migrator

    @property
    def target_version(self) -> int:
        return self._migrator.latest_version()

    def migrate_all(self) -> list[MigrationOutcome]:
        """Every shard Citrus lists (or the single database); per-shard results."""
        return self.migrate("", all_shards=True)

    def migrate(self, shard_id: str, all_shards: bool) -> list[MigrationOutcome]:
        """Apply pending migrations to one shard or every shard Citrus lists; per-shard results."""
        if all_shards and shard_id:
            raise InvalidArgument.field("all_shards", "must not be combined with shard_id")
        if not all_shards:
            require_shard_id(shard_id)
        with within(CALL_TIMEOUT_SECONDS):
            listed = self._shards.shards_health()
        if not all_shards:
            listed = [s for s in listed if s.shard_id == shard_id]
            if not listed:
                raise NotFound(f"shard {shard_id!r} is unknown to Citrus", metadata={"shard_id": shard_id})
        outcomes = run_bounded(
            {s.shard_id: self._migration(s.connection_string) for s in listed},
            timeout=self._timeout,
        )
        results = []
        for shard in sorted(listed, key=lambda s: s.shard_id):
            outcome = outcomes[shard.shard_id]
            target = dsn_target(shard.connection_string)
            if isinstance(outcome, MigrationResult):
                results.append(
                    MigrationOutcome(
                        shard_id=shard.shard_id,
                        version_before=outcome.before,
                        version_after=outcome.after,
                        applied=list(outcome.applied),
                        target=target,
                    )
                )
            else:
                error = describe_error(
                    outcome if isinstance(outcome, BaseException) else RuntimeError("no result"),
                    (*self._secrets, shard.connection_string),
                )
                log.warning("migration of shard %s failed: %s", shard.shard_id, error)
                results.append(MigrationOutcome(shard.shard_id, None, None, error=error, target=target))
        return results

    def _migration(self, dsn: str) -> Callable[[], MigrationResult]:
        # Runs inside run_bounded, whose deadline is the call's budget: the migration's
        # statements (the advisory-lock wait included) are cut when it runs out, so no
        # thread is left waiting on another replica's lock after the answer went out.
        def run() -> MigrationResult:
            timeout_ms = max(1, int(context.deadline().remaining() * 1000))
            return self._migrator.migrate(dsn, timeout_ms)

        return run
