"""``Deps``: everything the servicers and interceptors use, built once by ``wiring.build_deps``.

Its own module so ``server`` (which serves a ``Deps``) and ``wiring`` (which builds one) do
not import each other. Every field is required: a server is always complete, and a test
that wants another servicer replaces it with ``build_server(servicers=...)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from simplu_grpc.adapters.citrus.client import CitrusClient
from simplu_grpc.adapters.cognito.jwks import JwksClient
from simplu_grpc.adapters.cognito.token_verifier import TokenVerifier
from simplu_grpc.adapters.dynamodb.business_store import BusinessStore
from simplu_grpc.adapters.postgres.pool_registry import PoolRegistry
from simplu_grpc.domain.admin.console import ShardAdmin
from simplu_grpc.domain.auth.authz import Authorizer
from simplu_grpc.domain.business.cache import BusinessCache
from simplu_grpc.domain.business.commands import BusinessOps
from simplu_grpc.domain.business.invitations import InvitationOps
from simplu_grpc.domain.business.lifecycle import BusinessLifecycle
from simplu_grpc.domain.business.search import BusinessDiscovery
from simplu_grpc.domain.business.team import TeamOps
from simplu_grpc.domain.location_moves.service import LocationMoves
from simplu_grpc.domain.placement.ports import ShardDirectory
from simplu_grpc.domain.placement.routing import RoutingCache
from simplu_grpc.domain.resources.ops import ResourceOps
from simplu_grpc.domain.watch_ops import WatchOps
from simplu_grpc.health import ReadinessCheck
from simplu_grpc.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass
class Deps:
    """The adapters and use cases of one server (never module singletons)."""

    metrics: Metrics
    verifier: TokenVerifier
    # The verifier's key source, kept for dependency status (GetDependencyStatus).
    jwks: JwksClient
    authorizer: Authorizer
    # --- BusinessService ---
    business_store: BusinessStore
    business_cache: BusinessCache
    citrus: CitrusClient | None  # None in single-database mode (no CITRUS_SERVER_URL)
    business_ops: BusinessOps
    # People management (invitations, members, ownership): BusinessService's other half.
    invitation_ops: InvitationOps
    team_ops: TeamOps
    business_lifecycle: BusinessLifecycle  # issue 14: suspend, resume, undelete
    business_discovery: BusinessDiscovery  # issue 14: search, lookup by domain, locations
    # --- ResourceService ---
    pools: PoolRegistry
    routing: RoutingCache
    shard_directory: ShardDirectory
    resource_ops: ResourceOps
    # WatchResources' streams (ended first at shutdown).
    watch_ops: WatchOps
    # --- ShardAdminService ---
    shard_admin: ShardAdmin
    location_moves: LocationMoves
    # Called in reverse order at shutdown, after the server stopped: pools, HTTP clients.
    closers: list[Callable[[], None]]
    # Readiness is SERVING while any of these answers True (DESIGN §3: NOT_SERVING only when
    # DynamoDB and Citrus are both unreachable). Each must be quick and never raise.
    readiness_checks: list[ReadinessCheck]

    def close(self) -> None:
        """Run every closer (last registered first); one failing does not stop the rest."""
        close_all(self.closers)


def close_all(closers: list[Callable[[], None]]) -> None:
    """Pop and run ``closers`` last-first, logging (not raising) a failing one."""
    while closers:
        closer = closers.pop()
        try:
            closer()
        except Exception:
            log.exception("error while closing %r", closer)
