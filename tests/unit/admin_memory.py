"""In-memory ports for the ShardAdmin use cases (domain/admin/ports.py, domain/placement/ports.py).

``console(...)`` builds every admin use case the way ``wiring.build_admin`` does, from these
instead of Citrus, PostgreSQL and DynamoDB, so the use cases' rules are tested without servers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from simplu_grpc.domain.admin.consistency import ConsistencyChecker
from simplu_grpc.domain.admin.console import ShardAdmin
from simplu_grpc.domain.admin.dependencies import DependencyProber, DependencyStatus
from simplu_grpc.domain.admin.migrations import ShardMigrations
from simplu_grpc.domain.admin.ports import MigrationResult, ShardSnapshot, ShardStorage
from simplu_grpc.domain.admin.routing import LocationRouting
from simplu_grpc.domain.admin.shards import ShardViews
from simplu_grpc.domain.admin.tenant_load import TenantLoad
from simplu_grpc.domain.admin.usage import Replica, TenantUsageQuery
from simplu_grpc.domain.business.model import Business
from simplu_grpc.domain.placement.routing import Resolution
from simplu_grpc.domain.placement.shards import CapacityInfo, ShardAssignment
from simplu_grpc.errors import CitrusUnavailable, ShardUnavailable

SECRET_PW = "s3cr3t-pw-9f8e"
API_KEY = "citrus-key-0123456789abcdef"


def shard(shard_id: str, count: int | None, maximum: int | None = 3, active: bool = True) -> ShardAssignment:
    return ShardAssignment(
        shard_id=shard_id,
        connection_string=f"postgresql://postgres:{SECRET_PW}@127.0.0.1:5432/{shard_id.replace('-', '_')}",
        is_active=active,
        business_count=count,
        max_businesses=maximum,
    )


@dataclass
class FakeShards:
    """Citrus: ``shards`` listed, ``placed`` locations registered (``register`` places on shards[0])."""

    shards: list[ShardAssignment]
    down: bool = False
    placed: dict[tuple[str, str], ShardAssignment] = field(default_factory=dict)
    registered: list[tuple[str, str, str]] = field(default_factory=list)

    def _up(self) -> None:
        if self.down:
            raise CitrusUnavailable("Citrus is unreachable")

    def get_shard(self, business_id: str, location_id: str) -> ShardAssignment | None:
        self._up()
        return self.placed.get((business_id, location_id))

    def register(self, business_id: str, location_id: str, business_type: str) -> ShardAssignment:
        self._up()
        self.registered.append((business_id, location_id, business_type))
        return self.placed.setdefault((business_id, location_id), self.shards[0])

    def shards_health(self) -> list[ShardAssignment]:
        self._up()
        return list(self.shards)

    def capacity(self, shard_id: str) -> CapacityInfo | None:
        return None


class FakeRouting:
    """The routing cache: ``entries`` answer peek; invalidations are recorded (and say 7 dropped)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str | None, str | None]] = []
        self.entries: dict[tuple[str, str], Resolution] = {}

    def shards(self) -> dict[str, bool]:
        return {r.assignment.shard_id: r.assignment.is_active for r in self.entries.values()}

    def peek(self, business_id: str, location_id: str) -> Resolution | None:
        return self.entries.get((business_id, location_id))

    def invalidate(self, business_id: str | None = None, location_id: str | None = None) -> int:
        self.calls.append((business_id, location_id))
        return 7


class NoPools:
    """A server without any shard pool."""

    def connection(self, assignment: ShardAssignment) -> Any:
        raise ShardUnavailable("no")

    def stats(self) -> list[Any]:
        return []

    def recycle(self, shard_id: str) -> bool:
        return False

    def assignment(self, shard_id: str) -> ShardAssignment | None:
        return None


@dataclass
class BusinessPage:
    businesses: list[Business]
    next_token: str = ""


class MemoryBusinesses:
    """Business info; ShardAdmin reads it, never writes it."""

    def __init__(self, *businesses: Business) -> None:
        self.items = {b.id: b for b in businesses}

    def get(self, business_id: str) -> Business | None:
        return self.items.get(business_id)

    def update(self, business: Business, *, previous: Business) -> Business:
        raise AssertionError("ShardAdmin must not write business info itself")

    def list(
        self, *, page_size: int, page_token: str, member: str | None, include_deleted: bool
    ) -> BusinessPage:
        ordered = sorted(self.items.values(), key=lambda b: b.id)
        start = int(page_token or 0)
        end = start + page_size
        return BusinessPage(ordered[start:end], str(end) if end < len(ordered) else "")


class FakeMigrator:
    """Shards' schema versions by connection string; ``failing`` connection strings raise."""

    def __init__(self, latest: int = 3) -> None:
        self.latest = latest
        self.versions: dict[str, int] = {}
        self.failing: dict[str, Exception] = {}
        self.calls: list[tuple[str, int]] = []

    def latest_version(self) -> int:
        return self.latest

    def migrate(self, dsn: str, timeout_ms: int) -> MigrationResult:
        self.calls.append((dsn, timeout_ms))
        if dsn in self.failing:
            raise self.failing[dsn]
        before = self.versions.get(dsn, 0)
        applied = [f"{v:04d}_step" for v in range(before + 1, self.latest + 1)]
        self.versions[dsn] = max(before, self.latest)
        return MigrationResult(before, self.versions[dsn], applied)


class FakeReader:
    """Shard contents by connection string: schema version and (business, location) -> rows."""

    def __init__(self, migrator: FakeMigrator) -> None:
        self._migrator = migrator
        self.rows: dict[str, dict[tuple[str, str], int]] = {}
        self.unreachable: set[str] = set()

    def snapshot(self, dsn: str, business_ids: Sequence[str]) -> ShardSnapshot:
        if dsn in self.unreachable:
            raise ShardUnavailable(f"cannot connect to {dsn}")
        counts = {k: n for k, n in self.rows.get(dsn, {}).items() if k[0] in business_ids}
        return ShardSnapshot(self.schema_version(dsn), counts)

    def schema_version(self, dsn: str) -> int:
        return self._migrator.versions.get(dsn, 0)

    def pool_version(self, shard_id: str) -> int | None:
        return None


class NoStorage:
    def read(self, dsn: str, *, locations: int, by_bytes: bool) -> ShardStorage:
        raise AssertionError("storage is not read by these tests")


def console(
    shards: FakeShards,
    routing: FakeRouting | None = None,
    *,
    businesses: MemoryBusinesses | None = None,
    migrator: FakeMigrator | None = None,
    reader: FakeReader | None = None,
    probes: Mapping[str, Callable[[], object]] | None = None,
    prober: DependencyProber | None = None,
    on_registered: Callable[[str, str], None] | None = None,
) -> ShardAdmin:
    """Every admin use case over in-memory ports (as ``wiring.build_admin`` wires the real ones)."""
    routing = routing or FakeRouting()
    businesses = businesses or MemoryBusinesses()
    migrator = migrator or FakeMigrator()
    reader = reader or FakeReader(migrator)
    secrets = (API_KEY, SECRET_PW)
    return ShardAdmin(
        shards=ShardViews(
            shards=shards,
            pools=NoPools(),
            routing=routing,
            reader=reader,
            near_capacity_percent=80.0,
            secrets=secrets,
        ),
        locations=LocationRouting(
            shards=shards,
            routing=routing,
            businesses=businesses,
            on_registered=on_registered,
            secrets=secrets,
        ),
        migrations=ShardMigrations(shards=shards, migrator=migrator, secrets=secrets),
        consistency=ConsistencyChecker(
            shards=shards, businesses=businesses, secrets=secrets, reader=reader, migrator=migrator
        ),
        dependencies=DependencyStatus(
            probes=dict(probes or {}), pools=NoPools(), prober=prober or DependencyProber(secrets=secrets)
        ),
        usage=TenantUsageQuery(
            load=TenantLoad(capacity=10),
            storage=NoStorage(),
            shards=shards,
            pools=NoPools(),
            replica=Replica(host="test", pid=1),
            secrets=secrets,
        ),
    )
