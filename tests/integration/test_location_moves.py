"""Location moves between shards, end to end: the Citrus emulator (3 shards), moto DynamoDB, real
PostgreSQL shard databases and the production wiring behind a real gRPC channel.

The bulk of each location is seeded straight into its shard (thousands of rows with their change
history); the writes that race the move go through the service, and every acknowledged one is
read back afterwards.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import psycopg
import pytest
from grpc_status import rpc_status
from simplu.v1 import resource_pb2, shard_admin_pb2

from simplu_grpc.adapters.postgres.pool_registry import PoolRegistry
from simplu_grpc.adapters.postgres.shard_store import ShardStore
from simplu_grpc.devstack.citrus_emulator import CitrusEmulator
from simplu_grpc.devstack.moto_server import MotoServer
from simplu_grpc.devstack.postgres import PgServer
from simplu_grpc.domain.placement.shards import ShardAssignment
from simplu_grpc.domain.resources.model import NewResource, ResourceKey
from simplu_grpc.errors import LocationMoved
from simplu_grpc.interceptors.errors import error_info_of, retry_info_of
from simplu_grpc.metrics import Metrics
from tests.fixtures.server import MakeServer, RunningServer
from tests.integration.test_shard_admin import Seen, new_citrus, poll, seen, server_env, table, uid

__all__ = ["seen", "table"]  # fixtures shared with test_shard_admin

pytestmark = pytest.mark.integration

ADMIN = shard_admin_pb2
PHASE = ADMIN.LocationMovePhase

MOVE_ENV = {
    # Finalize waits for the routing cache's TTL (+5 s) after the switch.
    "ROUTING_CACHE_TTL_SECONDS": "1",
    "MOVE_SCAN_SECONDS": "0.3",
    "MOVE_LEASE_SECONDS": "2",
    "MOVE_BATCH_ROWS": "250",
    "MOVE_FREEZE_LAG": "20",
}


@dataclass
class MoveStack:
    servers: list[RunningServer]
    citrus: CitrusEmulator
    pg: PgServer
    token: str
    make: Callable[[], RunningServer]

    @property
    def server(self) -> RunningServer:
        return self.servers[0]

    def md(self, token: str | None = None) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {token or self.token}"),)

    def admin(self, method: str, request: Any, server: RunningServer | None = None) -> Any:
        return getattr((server or self.server).admin, method)(request, metadata=self.md(), timeout=20)

    def business(self, *locations: str) -> str:
        """A dental business with these locations, registered with Citrus; its shard id."""
        from simplu_grpc.domain.business.model import Business, BusinessType, Location

        business = Business(
            id=uid(),
            name="Moving business",
            type=BusinessType.DENTAL,
            locations=tuple(Location(id=loc, name=loc) for loc in locations),
        )
        store = self.server.deps.business_store
        assert store is not None
        store.create(business)
        for loc in locations:
            self.citrus.register(business.id, loc, "dental")
        return business.id

    def dsn(self, shard_id: str) -> str:
        return self.pg.dsn(self.citrus.shard(shard_id).database)

    def shard_of(self, business_id: str, location_id: str) -> str:
        return self.citrus.registrations()[f"{business_id}-{location_id}"]

    def seed(self, business_id: str, location_id: str, count: int) -> None:
        """``count`` resources with a created change each, straight into the location's shard."""
        self.create(business_id, location_id, {"seed": True})  # migrates the shard first
        with psycopg.connect(self.dsn(self.shard_of(business_id, location_id))) as conn:
            conn.execute(
                """
INSERT INTO resources (business_id, location_id, resource_type, resource_id, business_type, data,
                       start_time)
SELECT %s, %s, 'patients', 'seed' || lpad(g::text, 6, '0'), 'dental',
       jsonb_build_object('n', g, 'name', 'Patient ' || g), now() - make_interval(days => g %% 300)
FROM generate_series(1, %s) AS g
""",
                (business_id, location_id, count),
            )
            conn.execute(
                """
INSERT INTO resource_changes (business_id, location_id, resource_type, resource_id, kind, version,
                              principal)
SELECT %s, %s, 'patients', 'seed' || lpad(g::text, 6, '0'), 'created', 1, 'seeder'
FROM generate_series(1, %s) AS g
""",
                (business_id, location_id, count),
            )

    def create(
        self,
        business_id: str,
        location_id: str,
        data: dict[str, Any],
        *,
        server: RunningServer | None = None,
        request_id: str = "",
    ) -> resource_pb2.Resource:
        request = resource_pb2.CreateResourceRequest(
            resource=resource_pb2.Resource(
                business_id=business_id, location_id=location_id, resource_type="patients"
            ),
            request_id=request_id,
        )
        request.resource.data.update(data)
        return (server or self.server).resource.CreateResource(request, metadata=self.md(), timeout=10)

    def get(
        self, business_id: str, location_id: str, resource_id: str, *, server: RunningServer | None = None
    ) -> resource_pb2.Resource:
        request = resource_pb2.GetResourceRequest(
            business_id=business_id,
            location_id=location_id,
            resource_type="patients",
            resource_id=resource_id,
        )
        return (server or self.server).resource.GetResource(request, metadata=self.md(), timeout=10)

    def rows(self, shard_id: str, business_id: str, location_id: str, table_name: str = "resources") -> int:
        assert table_name in {"resources", "resource_changes", "request_ids"}
        with psycopg.connect(self.dsn(shard_id), autocommit=True) as conn:
            row = conn.execute(
                f"SELECT count(*) FROM {table_name} WHERE business_id = %s AND location_id = %s",
                (business_id, location_id),
            ).fetchone()
        return int(row[0]) if row else 0

    def fence(self, shard_id: str, business_id: str, location_id: str) -> str | None:
        with psycopg.connect(self.dsn(shard_id), autocommit=True) as conn:
            row = conn.execute(
                "SELECT state FROM location_fences WHERE business_id = %s AND location_id = %s",
                (business_id, location_id),
            ).fetchone()
        return None if row is None else str(row[0])

    def finalize_when_settled(self, move_id: str) -> Any:
        """FinalizeLocationMove, repeated while it answers MOVE_NOT_SETTLED (the routing TTL)."""
        answer: list[Any] = []

        def accepted() -> bool:
            try:
                answer[:] = [
                    self.admin("FinalizeLocationMove", ADMIN.FinalizeLocationMoveRequest(move_id=move_id))
                ]
            except grpc.RpcError as exc:
                status = rpc_status.from_call(exc)
                if status is None or error_info_of(status).reason != "MOVE_NOT_SETTLED":
                    raise
                return False
            return True

        poll(accepted, timeout=30, what="finalize to be accepted")
        return answer[0]

    def wait_phase(
        self, move_id: str, *phases: int, timeout: float = 60.0, server: RunningServer | None = None
    ) -> Any:
        found: list[Any] = []

        def reached() -> bool:
            move = self.admin("GetLocationMove", ADMIN.GetLocationMoveRequest(move_id=move_id), server)
            found[:] = [move]
            assert (
                move.phase != PHASE.LOCATION_MOVE_PHASE_FAILED or PHASE.LOCATION_MOVE_PHASE_FAILED in phases
            ), move.error
            return move.phase in phases

        try:
            poll(reached, timeout=timeout, what=f"move {move_id} to reach {phases}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last seen: {found[0] if found else None}") from None
        return found[0]


@pytest.fixture
def moves(
    *,
    make_citrus: Callable[..., CitrusEmulator],
    make_server: MakeServer,
    moto_server: MotoServer,
    table: str,
    pg: PgServer,
    admin_token: str,
    seen: Seen,
) -> MoveStack:
    citrus = new_citrus(make_citrus, pg, seen)
    env = {**server_env(citrus, moto_server.url, table), **MOVE_ENV}

    def make() -> RunningServer:
        return make_server(env=env)

    return MoveStack([make()], citrus, pg, admin_token, make)


@dataclass
class Writer:
    """Writes through the service until stopped: creates (with request ids) and updates, retrying
    UNAVAILABLE answers after their RetryInfo delay; remembers every acknowledged write."""

    stack: MoveStack
    business_id: str
    location_id: str
    server: RunningServer | None = None
    acknowledged: dict[str, int] = field(default_factory=dict)
    unavailable: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Writer:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(30)

    def _retrying(self, call: Callable[[], Any]) -> Any:
        while True:
            try:
                return call()
            except grpc.RpcError as exc:
                status = rpc_status.from_call(exc)
                info = error_info_of(status) if status else None
                if exc.code() != grpc.StatusCode.UNAVAILABLE or status is None or info is None:
                    self.errors.append(f"{exc.code()} {exc.details()}")
                    raise
                retry = retry_info_of(status)
                assert retry is not None, "UNAVAILABLE without RetryInfo"
                self.unavailable.append(info.reason)
                time.sleep(retry.retry_delay.ToTimedelta().total_seconds())

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            try:
                if n % 3 == 0 and self.acknowledged:
                    self._update(secrets.choice(sorted(self.acknowledged)), n)
                else:
                    self._create(n)
            except grpc.RpcError:
                return
            time.sleep(0.01)

    def _update(self, resource_id: str, n: int) -> None:
        request = resource_pb2.UpdateResourceRequest(
            resource=resource_pb2.Resource(
                business_id=self.business_id,
                location_id=self.location_id,
                resource_type="patients",
                resource_id=resource_id,
            ),
        )
        request.resource.data.update({"n": n})
        request.update_mask.paths.append("data.n")
        stub = (self.server or self.stack.server).resource
        self._retrying(lambda: stub.UpdateResource(request, metadata=self.stack.md(), timeout=10))
        self.acknowledged[resource_id] = n

    def _create(self, n: int) -> None:
        # One request id for every retry of this create: a retry never creates twice.
        request_id = f"rq{secrets.token_hex(8)}"
        created = self._retrying(
            lambda: self.stack.create(
                self.business_id, self.location_id, {"n": n}, server=self.server, request_id=request_id
            )
        )
        self.acknowledged[created.resource_id] = n

    def check(self, server: RunningServer | None = None) -> None:
        """Every acknowledged write reads back with its last acknowledged value."""
        assert not self.errors, self.errors
        assert self.acknowledged, "the writer wrote nothing: the test would prove nothing"
        for resource_id, n in self.acknowledged.items():
            got = self.stack.get(self.business_id, self.location_id, resource_id, server=server)
            assert got.data["n"] == n, resource_id


def start(stack: MoveStack, business_id: str, location_id: str, target: str) -> Any:
    return stack.admin(
        "StartLocationMove",
        ADMIN.StartLocationMoveRequest(
            business_id=business_id, location_id=location_id, target_shard_id=target
        ),
    )


def other_shard(shard_id: str) -> str:
    return "shard-02" if shard_id != "shard-02" else "shard-03"


def test_move_copies_while_writes_continue_then_switches_and_finalizes(moves: MoveStack) -> None:
    """Thousands of rows move while a client writes: nothing acknowledged is lost, the copies verify,
    Citrus routes to the target, the source refuses writes, and finalize deletes the source copy."""
    business_id = moves.business("main")
    source = moves.shard_of(business_id, "main")
    target = other_shard(source)
    moves.seed(business_id, "main", 3000)
    with Writer(moves, business_id, "main") as writer:
        started = start(moves, business_id, "main", target)
        assert started.phase == PHASE.LOCATION_MOVE_PHASE_COPYING
        assert (started.source_shard_id, started.target_shard_id) == (source, target)
        switched = moves.wait_phase(started.move_id, PHASE.LOCATION_MOVE_PHASE_SWITCHED)
        time.sleep(0.3)  # a few writes after the switch too
    writer.check()
    assert set(writer.unavailable) <= {"LOCATION_FROZEN", "LOCATION_MOVED"}
    assert switched.verification.matched
    assert switched.verification.source_rows == switched.verification.target_rows >= 3001
    assert switched.verification.source_checksum == switched.verification.target_checksum
    assert switched.rows_copied >= 3001
    assert switched.changes_copied >= 3001
    assert switched.HasField("freeze_duration")
    assert switched.HasField("switch_time")
    assert moves.shard_of(business_id, "main") == target
    assert moves.fence(source, business_id, "main") == "moved"
    assert moves.fence(target, business_id, "main") is None
    total = len(writer.acknowledged) + 3001
    # Writes after the switch landed on the target only.
    assert moves.rows(target, business_id, "main") == total
    assert moves.rows(source, business_id, "main") == switched.verification.source_rows
    assert moves.rows(target, business_id, "main", "resource_changes") >= 3001

    # Too soon: replicas may still read the source through routes cached before the switch.
    with pytest.raises(grpc.RpcError) as early:
        moves.admin("FinalizeLocationMove", ADMIN.FinalizeLocationMoveRequest(move_id=started.move_id))
    status = rpc_status.from_call(early.value)
    assert status is not None
    assert error_info_of(status).reason == "MOVE_NOT_SETTLED"
    finalized = moves.finalize_when_settled(started.move_id)
    assert finalized.move_id == started.move_id
    moves.wait_phase(started.move_id, PHASE.LOCATION_MOVE_PHASE_FINALIZED)
    for table_name in ("resources", "resource_changes", "request_ids"):
        assert moves.rows(source, business_id, "main", table_name) == 0, table_name
    assert moves.fence(source, business_id, "main") == "moved"
    writer.check()  # everything still reads back, from the target
    listed = moves.admin("ListLocationMoves", ADMIN.ListLocationMovesRequest(business_id=business_id))
    assert [m.move_id for m in listed.moves] == [started.move_id]
    assert listed.moves[0].phase == PHASE.LOCATION_MOVE_PHASE_FINALIZED


def test_a_replica_with_a_stale_route_cannot_write_the_old_shard(moves: MoveStack) -> None:
    """After the switch the source shard itself refuses the location's writes: a replica that still
    routes to it refreshes its route and writes on the target instead."""
    business_id = moves.business("main")
    source = moves.shard_of(business_id, "main")
    target = other_shard(source)
    moves.seed(business_id, "main", 500)
    # A second replica routes the location to the source and caches it for the whole test.
    stale = moves.make()
    assert stale.deps is not None
    routing = stale.deps.routing
    routing.resolve(business_id, "main", "dental")

    def cached_shard() -> str:
        cached = routing.peek(business_id, "main")
        assert cached is not None, "the stale replica lost its cached route"
        return cached.assignment.shard_id

    assert cached_shard() == source

    move = start(moves, business_id, "main", target)
    moves.wait_phase(move.move_id, PHASE.LOCATION_MOVE_PHASE_SWITCHED)
    assert cached_shard() == source

    before = moves.rows(source, business_id, "main")
    created = moves.create(business_id, "main", {"after": "switch"}, server=stale)
    assert moves.rows(source, business_id, "main") == before
    assert moves.rows(target, business_id, "main") == before + 1
    assert moves.get(business_id, "main", created.resource_id).data["after"] == "switch"
    assert cached_shard() == target

    # The shard refuses on its own, whatever route the writer has: the write statement, sent
    # straight to the source, changes nothing.
    pools = PoolRegistry(metrics=Metrics())
    try:
        old = ShardAssignment(shard_id=source, connection_string=moves.citrus.shard(source).connection_string)
        with pools.connection(old) as session, pytest.raises(LocationMoved):
            ShardStore().create(
                session,
                NewResource(
                    key=ResourceKey(business_id, "main", "patients", "direct"),
                    business_type="dental",
                    data={},
                    start_time=None,
                    end_time=None,
                    request_id="",
                    requester="test",
                ),
            )
    finally:
        pools.close()
    assert moves.rows(source, business_id, "main") == before


def test_writes_during_the_freeze_answer_unavailable_with_retry_info(moves: MoveStack) -> None:
    """A frozen location's write is refused (UNAVAILABLE, LOCATION_FROZEN, RetryInfo) and changes
    nothing; reads are served."""
    business_id = moves.business("main")
    source = moves.shard_of(business_id, "main")
    existing = moves.create(business_id, "main", {"n": 1})
    with psycopg.connect(moves.dsn(source)) as conn:
        conn.execute(
            "INSERT INTO location_fences (business_id, location_id, state, move_id)"
            " VALUES (%s, 'main', 'frozen', 'm')",
            (business_id,),
        )
    with pytest.raises(grpc.RpcError) as info:
        moves.create(business_id, "main", {"n": 2})
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    status = rpc_status.from_call(info.value)
    assert status is not None
    assert error_info_of(status).reason == "LOCATION_FROZEN"
    assert retry_info_of(status).retry_delay.ToTimedelta().total_seconds() > 0
    assert moves.rows(source, business_id, "main") == 1
    assert moves.rows(source, business_id, "main", "resource_changes") == 1
    assert moves.get(business_id, "main", existing.resource_id).data["n"] == 1


def test_revert_after_the_switch_carries_the_targets_writes_back(moves: MoveStack) -> None:
    """Reverting a switched move routes the location back to the source with every write made on
    the target meanwhile, and deletes the target's copy."""
    business_id = moves.business("main")
    source = moves.shard_of(business_id, "main")
    target = other_shard(source)
    moves.seed(business_id, "main", 800)
    move = start(moves, business_id, "main", target)
    moves.wait_phase(move.move_id, PHASE.LOCATION_MOVE_PHASE_SWITCHED)
    with Writer(moves, business_id, "main") as writer:
        time.sleep(0.5)  # writes on the target
        reverted = moves.admin("RevertLocationMove", ADMIN.RevertLocationMoveRequest(move_id=move.move_id))
        assert reverted.requested == "revert" or reverted.phase == PHASE.LOCATION_MOVE_PHASE_REVERTING
        done = moves.wait_phase(move.move_id, PHASE.LOCATION_MOVE_PHASE_REVERTED)
        time.sleep(0.3)
    writer.check()
    assert done.verification.matched
    assert moves.shard_of(business_id, "main") == source
    assert moves.fence(source, business_id, "main") is None
    assert moves.fence(target, business_id, "main") == "moved"
    assert moves.rows(target, business_id, "main") == 0
    # Every resource the writer created (on either side of the revert) is back on the source.
    assert moves.rows(source, business_id, "main") == 801 + len(writer.acknowledged)
    with pytest.raises(grpc.RpcError) as info:
        moves.admin("FinalizeLocationMove", ADMIN.FinalizeLocationMoveRequest(move_id=move.move_id))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_a_move_resumes_on_another_replica_when_its_runner_stops_mid_copy(moves: MoveStack) -> None:
    """The move's state is durable: when the replica running it stops during the copy, another
    replica takes the move over once the lease expires and completes it."""
    business_id = moves.business("main")
    source = moves.shard_of(business_id, "main")
    target = other_shard(source)
    moves.seed(business_id, "main", 6000)
    first = moves.server
    other = moves.make()
    move = start(moves, business_id, "main", target)
    poll(
        lambda: (
            moves.admin("GetLocationMove", ADMIN.GetLocationMoveRequest(move_id=move.move_id)).rows_copied > 0
        ),
        what="copy under way",
    )
    first.stop()
    mid = moves.admin("GetLocationMove", ADMIN.GetLocationMoveRequest(move_id=move.move_id), other)
    assert mid.phase in (PHASE.LOCATION_MOVE_PHASE_COPYING, PHASE.LOCATION_MOVE_PHASE_CATCHING_UP)
    done = moves.wait_phase(move.move_id, PHASE.LOCATION_MOVE_PHASE_SWITCHED, server=other)
    assert done.verification.matched
    assert done.verification.target_rows == 6001
    assert moves.shard_of(business_id, "main") == target


def test_start_is_refused_when_it_cannot_succeed(moves: MoveStack) -> None:
    """Unknown shard: NOT_FOUND; the location's own shard, a second open move or a full target:
    FAILED_PRECONDITION with its reason; finalize before the switch: MOVE_WRONG_PHASE."""
    business_id = moves.business("main", "second")
    source = moves.shard_of(business_id, "main")
    target = other_shard(source)

    def reason(method: str, request: Any) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.RpcError) as info:
            moves.admin(method, request)
        status = rpc_status.from_call(info.value)
        assert status is not None
        return info.value.code(), error_info_of(status).reason

    request = ADMIN.StartLocationMoveRequest
    assert (
        reason(
            "StartLocationMove", request(business_id=business_id, location_id="main", target_shard_id="nope")
        )[0]
        == grpc.StatusCode.NOT_FOUND
    )
    assert (
        reason("StartLocationMove", request(business_id=uid(), location_id="main", target_shard_id=target))[0]
        == grpc.StatusCode.NOT_FOUND
    )
    assert reason(
        "StartLocationMove", request(business_id=business_id, location_id="main", target_shard_id=source)
    ) == (grpc.StatusCode.FAILED_PRECONDITION, "MOVE_TARGET_IS_SOURCE")
    moves.citrus.set_active(target, False)
    assert reason(
        "StartLocationMove", request(business_id=business_id, location_id="main", target_shard_id=target)
    ) == (grpc.StatusCode.FAILED_PRECONDITION, "TARGET_SHARD_FULL")
    moves.citrus.set_active(target, True)
    moves.seed(business_id, "main", 20000)
    move = start(moves, business_id, "main", target)
    assert reason(
        "StartLocationMove", request(business_id=business_id, location_id="main", target_shard_id=target)
    ) == (grpc.StatusCode.FAILED_PRECONDITION, "MOVE_ALREADY_OPEN")
    assert reason("FinalizeLocationMove", ADMIN.FinalizeLocationMoveRequest(move_id=move.move_id)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "MOVE_WRONG_PHASE",
    )
    assert reason("GetLocationMove", ADMIN.GetLocationMoveRequest(move_id="0" * 32)) == (
        grpc.StatusCode.NOT_FOUND,
        "MOVE_NOT_FOUND",
    )
    # Revert before the switch abandons the move: the target's partial copy goes, the source stays.
    moves.admin("RevertLocationMove", ADMIN.RevertLocationMoveRequest(move_id=move.move_id))
    moves.wait_phase(move.move_id, PHASE.LOCATION_MOVE_PHASE_REVERTED)
    assert moves.rows(target, business_id, "main") == 0
    assert moves.fence(source, business_id, "main") is None
    assert moves.shard_of(business_id, "main") == source
    moves.create(business_id, "main", {"still": "writable"})


def test_move_to_citrus_moves_every_location_of_the_single_database(
    fresh_database: Callable[[], str],
    make_citrus: Callable[..., CitrusEmulator],
    pg: PgServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`simplu-grpc move-to-citrus` registers every location of a single-database deployment with
    Citrus and moves it (verified) onto the assigned shard; `--finalize` then deletes the
    database's copies. --dry-run changes nothing."""
    from urllib.parse import unquote, urlsplit

    from simplu_grpc import cli
    from simplu_grpc.adapters.postgres import migrator
    from tests.fixtures.citrus import CITRUS_API_KEY
    from tests.fixtures.server import CORE_CLIENT_ID, CORE_POOL_ID

    dsn = fresh_database()
    migrator.migrate(dsn)
    locations = {
        ("bone", "main", "dental"): 1500,
        ("bone", "annex", "dental"): 10,
        ("btwo", "main", "gym"): 300,
    }
    with psycopg.connect(dsn) as conn:
        for (business_id, location_id, kind), count in locations.items():
            conn.execute(
                """
INSERT INTO resources (business_id, location_id, resource_type, resource_id, business_type, data)
SELECT %s, %s, 'clients', 'r' || g, %s, jsonb_build_object('n', g) FROM generate_series(1, %s) AS g
""",
                (business_id, location_id, kind, count),
            )
    citrus = make_citrus(initial_shards=2)
    parts = urlsplit(dsn)
    env = {
        "COGNITO_USER_POOL_ID": CORE_POOL_ID,
        "COGNITO_CLIENT_ID": CORE_CLIENT_ID,
        "DATABASE_HOST": parts.hostname or "127.0.0.1",
        "DATABASE_PORT": str(parts.port or 5432),
        "DATABASE_USERNAME": unquote(parts.username or "postgres"),
        "DATABASE_PASSWORD": unquote(parts.password or ""),
        "DATABASE_NAME": unquote(parts.path.lstrip("/")),
        "CITRUS_SERVER_URL": citrus.url,
        "CITRUS_API_KEY": CITRUS_API_KEY,
        **MOVE_ENV,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    assert cli.main(["move-to-citrus", "--dry-run"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    assert citrus.registrations() == {}

    assert cli.main(["move-to-citrus"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert all(": switched " in line for line in lines), lines
    registered = citrus.registrations()
    assert set(registered) == {f"{b}-{loc}" for b, loc, _ in locations}
    with psycopg.connect(dsn, autocommit=True) as legacy:
        for (business_id, location_id, _), count in locations.items():
            shard_dsn = pg.dsn(citrus.shard(registered[f"{business_id}-{location_id}"]).database)
            with psycopg.connect(shard_dsn, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM resources WHERE business_id = %s AND location_id = %s",
                    (business_id, location_id),
                ).fetchone()
            assert row is not None
            assert row[0] == count
            fence = legacy.execute(
                "SELECT state FROM location_fences WHERE business_id = %s AND location_id = %s",
                (business_id, location_id),
            ).fetchone()
            assert fence == ("moved",)

    assert cli.main(["move-to-citrus"]) == 0  # a second run resumes: nothing left to move
    assert all(": switched " in line for line in capsys.readouterr().out.splitlines())
    assert cli.main(["move-to-citrus", "--finalize"]) == 0
    assert all(": finalized " in line for line in capsys.readouterr().out.splitlines())
    with psycopg.connect(dsn, autocommit=True) as legacy:
        row = legacy.execute("SELECT count(*) FROM resources").fetchone()
    assert row == (0,)


def test_copy_steps_repeated_after_a_crash_add_no_duplicate_history(moves: MoveStack) -> None:
    """A history or catch-up batch copied twice (a step that died before saving its progress is
    repeated) leaves one copy of each change on the target."""
    from simplu_grpc.adapters.postgres.move_copier import MoveCopier

    business_id = moves.business("main")
    source = moves.shard_of(business_id, "main")
    target = other_shard(source)
    moves.seed(business_id, "main", 50)
    moves.create(business_id, "main", {"n": 1}, server=moves.server)  # migrates nothing new; one more change
    pools = PoolRegistry(metrics=Metrics())
    try:
        shard = {
            s: ShardAssignment(shard_id=s, connection_string=moves.citrus.shard(s).connection_string)
            for s in (source, target)
        }
        copier = MoveCopier(pools)
        upto = copier.settle(shard[source])
        for _ in range(2):
            for copy in (copier.copy_history, copier.catch_up):
                copy(
                    shard[source],
                    shard[target],
                    business_id,
                    "main",
                    move_id="m1",
                    after=0,
                    upto=upto,
                    limit=1000,
                )
    finally:
        pools.close()
    assert moves.rows(target, business_id, "main", "resource_changes") == moves.rows(
        source, business_id, "main", "resource_changes"
    )
    assert moves.rows(target, business_id, "main") == moves.rows(source, business_id, "main") == 52
