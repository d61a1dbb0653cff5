"""ShardAdmin's location-move RPCs (proto <-> domain); mixed into ShardAdminServicer.

Every RPC requires a platform admin (the admin group or the ``simplu/admin`` scope) before it
reads anything, like the rest of ShardAdmin.
"""

from __future__ import annotations

from datetime import timedelta

import grpc
from google.protobuf import duration_pb2
from simplu.v1 import shard_admin_pb2

from simplu_grpc import context
from simplu_grpc.domain.auth.authz import Authorizer
from simplu_grpc.domain.location_moves.model import Move, Phase
from simplu_grpc.domain.location_moves.service import LocationMoves
from simplu_grpc.services.business_proto import timestamp

_PHASES = {
    Phase.COPYING: shard_admin_pb2.LOCATION_MOVE_PHASE_COPYING,
    Phase.CATCHING_UP: shard_admin_pb2.LOCATION_MOVE_PHASE_CATCHING_UP,
    Phase.SWITCHED: shard_admin_pb2.LOCATION_MOVE_PHASE_SWITCHED,
    Phase.FINALIZING: shard_admin_pb2.LOCATION_MOVE_PHASE_FINALIZING,
    Phase.FINALIZED: shard_admin_pb2.LOCATION_MOVE_PHASE_FINALIZED,
    Phase.REVERTING: shard_admin_pb2.LOCATION_MOVE_PHASE_REVERTING,
    Phase.REVERTED: shard_admin_pb2.LOCATION_MOVE_PHASE_REVERTED,
    Phase.FAILED: shard_admin_pb2.LOCATION_MOVE_PHASE_FAILED,
}


def move_proto(move: Move) -> shard_admin_pb2.LocationMove:
    """The wire form of a move (also printed by the CLI)."""
    message = shard_admin_pb2.LocationMove(
        move_id=move.move_id,
        business_id=move.business_id,
        location_id=move.location_id,
        source_shard_id=move.source_shard,
        target_shard_id=move.target_shard,
        phase=_PHASES[move.phase],
        rows_copied=move.rows_copied,
        changes_copied=move.changes_copied,
        lag=move.lag,
        error=move.error,
        requested=move.requested.value,
    )
    if move.verification is not None:
        v = move.verification
        message.verification.CopyFrom(
            shard_admin_pb2.MoveVerification(
                source_rows=v.source.rows,
                target_rows=v.target.rows,
                source_checksum=v.source.digest,
                target_checksum=v.target.digest,
                matched=v.matched,
                verify_time=timestamp(v.verify_time),
            )
        )
    for name in ("create_time", "update_time", "switch_time"):
        moment = getattr(move, name)
        if moment is not None:
            getattr(message, name).CopyFrom(timestamp(moment))
    if move.freeze_millis is not None:
        duration = duration_pb2.Duration()
        duration.FromTimedelta(timedelta(milliseconds=move.freeze_millis))
        message.freeze_duration.CopyFrom(duration)
    return message


class LocationMoveRpcs:
    """The five location-move RPCs of ShardAdminService."""

    _authorizer: Authorizer
    _moves: LocationMoves

    def _moves_for_admin(self) -> LocationMoves:
        self._authorizer.require_admin(context.principal())
        return self._moves

    def StartLocationMove(
        self, request: shard_admin_pb2.StartLocationMoveRequest, _: grpc.ServicerContext
    ) -> shard_admin_pb2.LocationMove:
        moves = self._moves_for_admin()
        return move_proto(moves.start(request.business_id, request.location_id, request.target_shard_id))

    def GetLocationMove(
        self, request: shard_admin_pb2.GetLocationMoveRequest, _: grpc.ServicerContext
    ) -> shard_admin_pb2.LocationMove:
        return move_proto(self._moves_for_admin().get(request.move_id))

    def ListLocationMoves(
        self, request: shard_admin_pb2.ListLocationMovesRequest, _: grpc.ServicerContext
    ) -> shard_admin_pb2.ListLocationMovesResponse:
        listing = self._moves_for_admin().list(business_id=request.business_id, open_only=request.open_only)
        return shard_admin_pb2.ListLocationMovesResponse(
            moves=[move_proto(m) for m in listing.moves], unreachable_shard_ids=listing.unreachable_shard_ids
        )

    def RevertLocationMove(
        self, request: shard_admin_pb2.RevertLocationMoveRequest, _: grpc.ServicerContext
    ) -> shard_admin_pb2.LocationMove:
        return move_proto(self._moves_for_admin().revert(request.move_id))

    def FinalizeLocationMove(
        self, request: shard_admin_pb2.FinalizeLocationMoveRequest, _: grpc.ServicerContext
    ) -> shard_admin_pb2.LocationMove:
        return move_proto(self._moves_for_admin().finalize(request.move_id))
