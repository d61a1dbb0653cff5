"""BusinessService servicer: protobuf in, domain call, protobuf out (the rules live in the domain)."""

from __future__ import annotations

import grpc
from simplu.v1 import business_pb2, business_pb2_grpc

from simplu_grpc import context as rpc
from simplu_grpc.domain.business.commands import BusinessOps
from simplu_grpc.domain.business.model import Business, BusinessSettings
from simplu_grpc.domain.checks import Violations
from simplu_grpc.services import business_proto as convert


class BusinessServicer(business_pb2_grpc.BusinessServiceServicer):
    """Every method: the caller from the request context, the request converted, one use case."""

    def __init__(self, ops: BusinessOps) -> None:
        self._ops = ops

    def _shown(self, business: Business) -> business_pb2.Business:
        """The answer's Business, as the caller may see it (``BusinessOps.as_seen_by``)."""
        return convert.business_to_proto(self._ops.as_seen_by(rpc.principal(), business))

    def CreateBusiness(
        self, request: business_pb2.CreateBusinessRequest, context: grpc.ServicerContext
    ) -> business_pb2.CreateBusinessResponse:
        v = Violations()
        draft = convert.business_from_proto(v, "business", request.business)
        done = self._ops.create(
            rpc.principal(),
            draft,
            business_id=request.business_id,
            request_id=request.request_id,
            violations=v,
        )
        return business_pb2.CreateBusinessResponse(
            business=self._shown(done.business),
            unregistered_location_ids=list(done.unregistered_location_ids),
        )

    def GetBusiness(
        self, request: business_pb2.GetBusinessRequest, context: grpc.ServicerContext
    ) -> business_pb2.Business:
        return self._shown(self._ops.get(rpc.principal(), request.business_id))

    def ListBusinesses(
        self, request: business_pb2.ListBusinessesRequest, context: grpc.ServicerContext
    ) -> business_pb2.ListBusinessesResponse:
        page = self._ops.list(
            rpc.principal(),
            size=request.page_size,
            page_token=request.page_token,
            show_deleted=request.show_deleted,
        )
        return business_pb2.ListBusinessesResponse(
            businesses=[self._shown(b) for b in page.businesses],
            next_page_token=page.next_token,
        )

    def UpdateBusiness(
        self, request: business_pb2.UpdateBusinessRequest, context: grpc.ServicerContext
    ) -> business_pb2.Business:
        v = Violations()
        given = request.business
        settings = (
            convert.settings_from_proto(v, "business.settings", given.settings)
            if given.HasField("settings")
            else None
        )
        kind = convert.business_type(v, "business.type", given.type) if given.type else None
        updated = self._ops.update(
            rpc.principal(),
            given.id,
            etag=given.etag,
            paths=list(request.update_mask.paths),
            name=given.name,
            settings=settings,
            roles=convert.roles_from_proto(given.permissions),
            business_type=kind,
            violations=v,
        )
        return self._shown(updated)

    def UpdateBusinessSettings(
        self, request: business_pb2.UpdateBusinessSettingsRequest, context: grpc.ServicerContext
    ) -> business_pb2.Business:
        v = Violations()
        if request.HasField("settings"):
            settings = convert.settings_from_proto(v, "settings", request.settings)
        else:
            # REQUIRED: an absent message would otherwise replace every setting with defaults.
            v.add("settings", "is required (send {} with an update_mask to clear the named settings)")
            settings = BusinessSettings()
        updated = self._ops.update_settings(
            rpc.principal(),
            request.business_id,
            etag=request.etag,
            paths=list(request.update_mask.paths),
            settings=settings,
            violations=v,
        )
        return self._shown(updated)

    def DeleteBusiness(
        self, request: business_pb2.DeleteBusinessRequest, context: grpc.ServicerContext
    ) -> business_pb2.Business:
        deleted = self._ops.delete(rpc.principal(), request.business_id, etag=request.etag)
        return self._shown(deleted)

    def AddLocation(
        self, request: business_pb2.AddLocationRequest, context: grpc.ServicerContext
    ) -> business_pb2.AddLocationResponse:
        done = self._ops.add_location(
            rpc.principal(),
            request.business_id,
            convert.location_from_proto(request.location),
            etag=request.etag,
        )
        return business_pb2.AddLocationResponse(
            business=self._shown(done.business),
            unregistered_location_ids=list(done.unregistered_location_ids),
        )

    def UpdateLocation(
        self, request: business_pb2.UpdateLocationRequest, context: grpc.ServicerContext
    ) -> business_pb2.UpdateLocationResponse:
        done = self._ops.update_location(
            rpc.principal(),
            request.business_id,
            convert.location_from_proto(request.location),
            etag=request.etag,
            paths=list(request.update_mask.paths),
        )
        return business_pb2.UpdateLocationResponse(
            business=self._shown(done.business),
            unregistered_location_ids=list(done.unregistered_location_ids),
        )

    def RemoveLocation(
        self, request: business_pb2.RemoveLocationRequest, context: grpc.ServicerContext
    ) -> business_pb2.Business:
        updated = self._ops.remove_location(
            rpc.principal(), request.business_id, request.location_id, etag=request.etag
        )
        return self._shown(updated)

    def SetMember(
        self, request: business_pb2.SetMemberRequest, context: grpc.ServicerContext
    ) -> business_pb2.Business:
        updated = self._ops.set_member(
            rpc.principal(),
            request.business_id,
            request.member,
            convert.member_from_proto(request.membership),
            etag=request.etag,
        )
        return self._shown(updated)

    def RemoveMember(
        self, request: business_pb2.RemoveMemberRequest, context: grpc.ServicerContext
    ) -> business_pb2.Business:
        updated = self._ops.remove_member(
            rpc.principal(), request.business_id, request.member, etag=request.etag
        )
        return self._shown(updated)

    def GetMyAccess(
        self, request: business_pb2.GetMyAccessRequest, context: grpc.ServicerContext
    ) -> business_pb2.GetMyAccessResponse:
        principal = rpc.principal()
        access, location_allowed = self._ops.my_access(principal, request.business_id, request.location_id)
        return business_pb2.GetMyAccessResponse(
            subject=principal.subject,
            username=principal.username,
            groups=sorted(principal.groups),
            scopes=sorted(principal.scopes),
            token_use=convert.TOKEN_USE_TO_PROTO[principal.token_use],
            platform_admin=access.platform_admin,
            role=access.role,
            location_ids=list(access.location_ids),
            all_locations=access.all_locations,
            permissions=list(access.permissions),
            # Only an answer when a location was asked about (optional: absent is not "no").
            location_allowed=location_allowed if request.location_id else None,
        )
