"""BusinessService servicer: protobuf in, domain call, protobuf out (the rules live in the domain)."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
from simplu.v1 import business_pb2, business_pb2_grpc

from simplu_grpc import context as rpc
from simplu_grpc.domain.business.commands import BusinessOps
from simplu_grpc.domain.business.invitations import InvitationOps
from simplu_grpc.domain.business.lifecycle import BusinessLifecycle
from simplu_grpc.domain.business.model import Business, BusinessSettings
from simplu_grpc.domain.business.search import BusinessDiscovery, SearchQuery
from simplu_grpc.domain.business.team import TeamOps
from simplu_grpc.domain.checks import Violations
from simplu_grpc.services import business_proto as convert
from simplu_grpc.services import invitation_proto as people


class BusinessServicer(business_pb2_grpc.BusinessServiceServicer):
    """Every method: the caller from the request context, the request converted, one use case."""

    def __init__(
        self,
        ops: BusinessOps,
        lifecycle: BusinessLifecycle,
        discovery: BusinessDiscovery,
        *,
        invitations: InvitationOps,
        team: TeamOps,
    ) -> None:
        self._ops = ops
        self._lifecycle = lifecycle
        self._discovery = discovery
        self._invitations = invitations
        self._team = team

    def _shown(self, business: Business) -> business_pb2.Business:
        """The answer's Business, as the caller may see it (``BusinessOps.as_seen_by``)."""
        shown = convert.business_to_proto(self._ops.as_seen_by(rpc.principal(), business))
        ends = self._lifecycle.purge_time(business)
        if ends is not None:
            shown.purge_time.FromDatetime(ends)
        return shown

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
            domain_label=given.domain_label,
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

    # --- People management: invitations, members, ownership (domain.business.invitations, .team) ---

    def CreateInvitation(
        self, request: business_pb2.CreateInvitationRequest, context: grpc.ServicerContext
    ) -> business_pb2.CreateInvitationResponse:
        invitation, code = self._invitations.create(
            rpc.principal(),
            request.business_id,
            request.email,
            convert.member_from_proto(request.membership),
        )
        return business_pb2.CreateInvitationResponse(
            invitation=people.invitation_to_proto(invitation, datetime.now(UTC)), code=code
        )

    def AcceptInvitation(
        self, request: business_pb2.AcceptInvitationRequest, context: grpc.ServicerContext
    ) -> business_pb2.AcceptInvitationResponse:
        invitation, business = self._invitations.accept(rpc.principal(), request.code)
        return business_pb2.AcceptInvitationResponse(
            invitation=people.invitation_to_proto(invitation, datetime.now(UTC)),
            business=self._shown(business),
        )

    def ListInvitations(
        self, request: business_pb2.ListInvitationsRequest, context: grpc.ServicerContext
    ) -> business_pb2.ListInvitationsResponse:
        page = self._invitations.list(
            rpc.principal(), request.business_id, size=request.page_size, page_token=request.page_token
        )
        now = datetime.now(UTC)
        return business_pb2.ListInvitationsResponse(
            invitations=[people.invitation_to_proto(i, now) for i in page.invitations],
            next_page_token=page.next_token,
        )

    def RevokeInvitation(
        self, request: business_pb2.RevokeInvitationRequest, context: grpc.ServicerContext
    ) -> business_pb2.Invitation:
        revoked = self._invitations.revoke(rpc.principal(), request.business_id, request.invitation_id)
        return people.invitation_to_proto(revoked, datetime.now(UTC))

    def ListMembers(
        self, request: business_pb2.ListMembersRequest, context: grpc.ServicerContext
    ) -> business_pb2.ListMembersResponse:
        page = self._team.list_members(
            rpc.principal(), request.business_id, size=request.page_size, page_token=request.page_token
        )
        return business_pb2.ListMembersResponse(
            members=[people.member_to_proto(m) for m in page.members], next_page_token=page.next_token
        )

    def TransferOwnership(
        self, request: business_pb2.TransferOwnershipRequest, context: grpc.ServicerContext
    ) -> business_pb2.Business:
        updated = self._team.transfer_ownership(
            rpc.principal(),
            request.business_id,
            request.new_owner,
            request.previous_owner_role,
            etag=request.etag,
        )
        return self._shown(updated)

    # --- Lifecycle and discovery (issue 14) ------------------------------------------------

    def SearchBusinesses(
        self, request: business_pb2.SearchBusinessesRequest, context: grpc.ServicerContext
    ) -> business_pb2.SearchBusinessesResponse:
        v = Violations()
        kind = convert.business_type(v, "type", request.type) if request.type else None
        status = convert.STATUS_FROM_PROTO.get(int(request.status)) if request.status else None
        if request.status and status is None:
            v.add("status", f"unknown business status {int(request.status)}")
        v.raise_if_any()
        page = self._discovery.search(
            rpc.principal(),
            SearchQuery(name_prefix=request.name_prefix, business_type=kind, status=status),
            size=request.page_size,
            page_token=request.page_token,
        )
        return business_pb2.SearchBusinessesResponse(
            businesses=[self._shown(b) for b in page.businesses], next_page_token=page.next_token
        )

    def LookupBusinessByDomain(
        self, request: business_pb2.LookupBusinessByDomainRequest, context: grpc.ServicerContext
    ) -> business_pb2.PublicBusiness:
        found = self._discovery.lookup_by_domain(rpc.principal(), request.domain_label)
        return business_pb2.PublicBusiness(
            id=found.id,
            name=found.name,
            type=convert.TYPE_TO_PROTO[found.type],
            domain_label=found.domain_label,
            status=convert.STATUS_TO_PROTO[found.status],
            locations=[convert.location_to_proto(loc) for loc in found.locations],
            settings=convert.settings_to_proto(found.settings),
        )

    def GetLocation(
        self, request: business_pb2.GetLocationRequest, context: grpc.ServicerContext
    ) -> business_pb2.Location:
        location = self._discovery.get_location(rpc.principal(), request.business_id, request.location_id)
        return convert.location_to_proto(location)

    def ListLocations(
        self, request: business_pb2.ListLocationsRequest, context: grpc.ServicerContext
    ) -> business_pb2.ListLocationsResponse:
        page = self._discovery.list_locations(
            rpc.principal(),
            request.business_id,
            size=request.page_size,
            page_token=request.page_token,
            show_inactive=request.show_inactive,
        )
        return business_pb2.ListLocationsResponse(
            locations=[convert.location_to_proto(loc) for loc in page.locations],
            next_page_token=page.next_token,
        )

    def SuspendBusiness(
        self, request: business_pb2.SuspendBusinessRequest, context: grpc.ServicerContext
    ) -> business_pb2.Business:
        return self._shown(self._lifecycle.suspend(rpc.principal(), request.business_id, etag=request.etag))

    def ResumeBusiness(
        self, request: business_pb2.ResumeBusinessRequest, context: grpc.ServicerContext
    ) -> business_pb2.Business:
        return self._shown(self._lifecycle.resume(rpc.principal(), request.business_id, etag=request.etag))

    def UndeleteBusiness(
        self, request: business_pb2.UndeleteBusinessRequest, context: grpc.ServicerContext
    ) -> business_pb2.Business:
        return self._shown(self._lifecycle.undelete(rpc.principal(), request.business_id, etag=request.etag))
