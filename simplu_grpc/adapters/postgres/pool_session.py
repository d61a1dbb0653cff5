"""A checked-out shard connection (``ShardSession``): one statement per round trip, bounded by the
RPC's deadline, connection-level errors translated into the error tree.

* Checkout never waits past the RPC's deadline, and a query never runs past it either:
  ``statement_timeout`` is set per transaction (``set_config(..., true)``) from the
  remaining time, and a watchdog shuts the socket of a query whose server stopped
  answering (blackholed network: no statement_timeout can reach us, and libpq would wait
  forever), turning a hang into DEADLINE_EXCEEDED.
* A write whose connection is lost once the statement was sent (it commits on its own, in
  the one message ``ShardSession.run`` sends) is CommitOutcomeUnknown (UNAVAILABLE /
  COMMIT_OUTCOME_UNKNOWN): it may or may not be applied, and a retry with the same
  ``request_id`` is the safe way on.
* Each statement goes out as one simple-protocol message with its statement_timeout
  (``ShardSession.run``): one network round trip, its own implicit transaction.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import pq, sql
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

from simplu_grpc import context
from simplu_grpc.adapters.postgres.pool_health import PoolHealth
from simplu_grpc.adapters.postgres.pool_threads import Timer
from simplu_grpc.errors import CommitOutcomeUnknown, DeadlineExceeded, ShardUnavailable

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)


Row = dict[str, Any]
Query = str | bytes | sql.Composed | sql.SQL

# The watchdog cuts a silent connection this long after the deadline: statement_timeout
# (set to the deadline) normally answers first, with a clean error.
_CUT_GRACE = 0.05


def has_input(conn: psycopg.Connection[Any]) -> bool:
    """Whether an idle connection has something to read: usually the server (or a proxy) closed it.

    Costs no round trip. An idle healthy connection has nothing pending; a closed one reads
    as EOF. Anything pending sends the connection through the full check.
    """
    try:
        # poll(), not select(): select() refuses descriptors above FD_SETSIZE (1024), which a
        # busy server reaches, and every checkout would then pay the full check.
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN | select.POLLPRI)
        return bool(poller.poll(0))
    except (OSError, ValueError, psycopg.Error):
        return True


def cut_socket(conn: psycopg.Connection[Any]) -> None:
    """Shut the connection's socket down so a thread blocked reading it wakes with an error."""
    with contextlib.suppress(Exception):
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()


class ShardSession:
    """A checked-out shard connection; ``run`` executes one statement in one round trip."""

    def __init__(
        self, shard_id: str, conn: psycopg.Connection[Any], watchdog: Timer, health: PoolHealth
    ) -> None:
        self.shard_id = shard_id
        self.conn = conn
        self._watchdog = watchdog
        self._health = health

    def run(
        self,
        query: Query,
        params: Sequence[Any] | dict[str, Any] | None = None,
        *,
        write: bool = False,
    ) -> list[Row]:
        """Run one statement bounded by the deadline, in one message and one round trip.

        ``SET LOCAL statement_timeout = <ms left>; <statement>`` goes as one simple-protocol
        query: PostgreSQL runs a multi-statement query as one implicit transaction, so the
        timeout applies to this statement only and the statement commits (or rolls back) with
        no BEGIN/COMMIT of its own. (A pipeline of BEGIN, set_config, the statement and COMMIT
        did four times the statements on both sides; the bench's capacity rows show what this
        bought.) Values are still never part of the SQL we write: psycopg's ``ClientCursor``
        quotes each parameter by the connection's own rules; ``millis`` is an int.

        The values are inlined by the client and the text is never a server-side prepared
        statement, so PostgreSQL always plans with the actual values (a generic plan cannot use
        an expression or partial index whose key is a parameter: the filtered lists' trigram
        searches need this).

        ``write``: the statement changes data, so a connection lost once it was sent is
        CommitOutcomeUnknown (the write may or may not be applied), not a plain ShardUnavailable.
        """
        conn = self.conn
        text = (
            query.decode()
            if isinstance(query, bytes)
            else query
            if isinstance(query, str)
            else query.as_string(conn)
        )
        with self.guard("querying the shard", write=write) as millis:
            try:
                cursor = psycopg.ClientCursor(conn, row_factory=dict_row)
                cursor.execute(f"SET LOCAL statement_timeout = {int(millis)}; {text}", params)
                # The first result is the SET's; the statement's is the second. Its status says
                # whether it has rows (``description`` would build column objects per call).
                cursor.nextset()
                result = cursor.pgresult
                if result is None or result.status != pq.ExecStatus.TUPLES_OK:
                    return []
                return cursor.fetchall()
            except BaseException:
                rollback(conn)
                raise

    def execute(
        self, query: Query, params: Sequence[Any] | dict[str, Any] | None = None
    ) -> psycopg.Cursor[Any]:
        """Raw autocommit execution (ShardAdmin probes, schema reads), bounded by the deadline."""
        with self.guard("querying the shard"):
            return self.conn.execute(query, params)

    @contextlib.contextmanager
    def guard(self, what: str, *, write: bool = False) -> Iterator[int]:
        """Bound raw use of ``conn`` by the deadline; translate connection-level errors. Yields ms left."""
        deadline = context.deadline()
        left = deadline.check(what)
        alarm = self._watchdog.arm(deadline.expires_at + _CUT_GRACE, lambda: cut_socket(self.conn))
        lost = False
        self._health.query_started()
        try:
            yield max(1, int(left * 1000))
        except psycopg.errors.QueryCanceled as exc:
            raise DeadlineExceeded(f"deadline exceeded while {what}") from exc
        except psycopg.OperationalError as exc:
            lost = True
            metadata = {"shard_id": self.shard_id}
            if alarm.fired:
                raise DeadlineExceeded(
                    f"shard {self.shard_id} did not answer before the deadline"
                    + ("; the write may or may not have been applied" if write else ""),
                    reason="COMMIT_OUTCOME_UNKNOWN" if write else None,
                    metadata=metadata,
                ) from exc
            if write:
                raise CommitOutcomeUnknown(
                    f"lost the connection to shard {self.shard_id} after the write was sent: it may or"
                    " may not have been applied; retry with the same request_id",
                    metadata=metadata,
                ) from exc
            raise ShardUnavailable(
                f"lost the connection to shard {self.shard_id}", metadata=metadata
            ) from exc
        finally:
            alarm.cancel()
            self._health.query_ended(answered=not lost, cut=alarm.fired)
            if alarm.fired:
                # Cut just as the work finished: never hand a half-shut socket back to the pool.
                with contextlib.suppress(Exception):
                    self.conn.close()


def rollback(conn: psycopg.Connection[Any]) -> None:
    if conn.closed:
        return
    if conn.pgconn.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
        with contextlib.suppress(psycopg.Error):
            conn.execute("ROLLBACK")
