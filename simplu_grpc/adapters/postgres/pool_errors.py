"""What a checkout that cannot be served tells its caller: the shard is down (UNAVAILABLE, nothing
sent), does not answer (DEADLINE_EXCEEDED), or answers but every connection is busy
(RESOURCE_EXHAUSTED); each also counted in the metrics (``pool_error``).

* Exhausted vs down: a checkout that times out while every connection is busy with a shard
  that answers is RESOURCE_EXHAUSTED (``pool_error(shard, "exhausted")``); one that fails
  because connecting to the shard fails is UNAVAILABLE / SHARD_UNAVAILABLE; one that waited
  on connection attempts or on queries the shard never answered is DEADLINE_EXCEEDED (both
  ``"unavailable"``). Connection attempts are observed through the pool's
  ``connection_class``, queries through ``ShardSession.guard``.
"""

from __future__ import annotations

from simplu_grpc.adapters.postgres.pool_health import PoolEntry
from simplu_grpc.errors import DeadlineExceeded, ResourceExhausted, ShardUnavailable, ShardUnreachable
from simplu_grpc.metrics import Metrics


def unreachable(metrics: Metrics, entry: PoolEntry) -> ShardUnavailable:
    """UNAVAILABLE: connecting to the shard fails (nothing was sent: ``ShardUnreachable``)."""
    metrics.pool_error(entry.shard_id, "unavailable")
    return ShardUnreachable(
        f"shard {entry.shard_id} is unavailable (cannot connect)", metadata={"shard_id": entry.shard_id}
    )


def timed_out(metrics: Metrics, entry: PoolEntry, *, answers_before: int | None) -> Exception:
    """What a checkout that reached the deadline tells its caller."""
    if entry.health.failing:
        return unreachable(metrics, entry)
    health = entry.health
    if (
        not health.proven
        or health.connecting
        or answers_before is None
        or health.stalled(answers_before)
        or health.cut_since_answer
    ):
        # Waiting on a connection attempt that neither succeeds nor fails, or on queries the
        # shard does not answer (every connection stuck): the shard (or the network to it)
        # does not answer. Exhaustion means every connection is busy and the shard answers.
        metrics.pool_error(entry.shard_id, "unavailable")
        return DeadlineExceeded(
            f"shard {entry.shard_id} did not answer before the deadline",
            metadata={"shard_id": entry.shard_id},
        )
    metrics.pool_error(entry.shard_id, "exhausted")
    return ResourceExhausted(
        f"no connection to shard {entry.shard_id} became free before the deadline",
        reason="SHARD_POOL_EXHAUSTED",
        metadata={"shard_id": entry.shard_id},
    )


def rejected(metrics: Metrics, entry: PoolEntry) -> Exception:
    """What a caller hears when max_size callers hold a connection and max_waiting wait."""
    if entry.health.cut_since_answer:
        # The queue is full of callers of a shard that stopped answering.
        metrics.pool_error(entry.shard_id, "unavailable")
        return ShardUnavailable(
            f"shard {entry.shard_id} is not answering", metadata={"shard_id": entry.shard_id}
        )
    metrics.pool_error(entry.shard_id, "exhausted")
    return ResourceExhausted(
        f"too many requests waiting for shard {entry.shard_id}",
        reason="SHARD_POOL_EXHAUSTED",
        metadata={"shard_id": entry.shard_id},
    )
