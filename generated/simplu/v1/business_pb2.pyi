import datetime

from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.type import dayofweek_pb2 as _dayofweek_pb2
from google.type import timeofday_pb2 as _timeofday_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BusinessType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BUSINESS_TYPE_UNSPECIFIED: _ClassVar[BusinessType]
    BUSINESS_TYPE_DENTAL: _ClassVar[BusinessType]
    BUSINESS_TYPE_GYM: _ClassVar[BusinessType]
    BUSINESS_TYPE_HOTEL: _ClassVar[BusinessType]

class BusinessStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BUSINESS_STATUS_UNSPECIFIED: _ClassVar[BusinessStatus]
    BUSINESS_STATUS_ACTIVE: _ClassVar[BusinessStatus]
    BUSINESS_STATUS_DELETED: _ClassVar[BusinessStatus]
    BUSINESS_STATUS_SUSPENDED: _ClassVar[BusinessStatus]

class TokenUse(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TOKEN_USE_UNSPECIFIED: _ClassVar[TokenUse]
    TOKEN_USE_ACCESS: _ClassVar[TokenUse]
    TOKEN_USE_ID: _ClassVar[TokenUse]

class InvitationState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INVITATION_STATE_UNSPECIFIED: _ClassVar[InvitationState]
    INVITATION_STATE_PENDING: _ClassVar[InvitationState]
    INVITATION_STATE_ACCEPTED: _ClassVar[InvitationState]
    INVITATION_STATE_REVOKED: _ClassVar[InvitationState]
    INVITATION_STATE_EXPIRED: _ClassVar[InvitationState]
BUSINESS_TYPE_UNSPECIFIED: BusinessType
BUSINESS_TYPE_DENTAL: BusinessType
BUSINESS_TYPE_GYM: BusinessType
BUSINESS_TYPE_HOTEL: BusinessType
BUSINESS_STATUS_UNSPECIFIED: BusinessStatus
BUSINESS_STATUS_ACTIVE: BusinessStatus
BUSINESS_STATUS_DELETED: BusinessStatus
BUSINESS_STATUS_SUSPENDED: BusinessStatus
TOKEN_USE_UNSPECIFIED: TokenUse
TOKEN_USE_ACCESS: TokenUse
TOKEN_USE_ID: TokenUse
INVITATION_STATE_UNSPECIFIED: InvitationState
INVITATION_STATE_PENDING: InvitationState
INVITATION_STATE_ACCEPTED: InvitationState
INVITATION_STATE_REVOKED: InvitationState
INVITATION_STATE_EXPIRED: InvitationState

class Location(_message.Message):
    __slots__ = ("id", "name", "address", "phone", "email", "timezone", "active")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PHONE_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    TIMEZONE_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    address: str
    phone: str
    email: str
    timezone: str
    active: bool
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., address: _Optional[str] = ..., phone: _Optional[str] = ..., email: _Optional[str] = ..., timezone: _Optional[str] = ..., active: _Optional[bool] = ...) -> None: ...

class WorkingHours(_message.Message):
    __slots__ = ("day", "open_time", "close_time", "closed")
    DAY_FIELD_NUMBER: _ClassVar[int]
    OPEN_TIME_FIELD_NUMBER: _ClassVar[int]
    CLOSE_TIME_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    day: _dayofweek_pb2.DayOfWeek
    open_time: _timeofday_pb2.TimeOfDay
    close_time: _timeofday_pb2.TimeOfDay
    closed: bool
    def __init__(self, day: _Optional[_Union[_dayofweek_pb2.DayOfWeek, str]] = ..., open_time: _Optional[_Union[_timeofday_pb2.TimeOfDay, _Mapping]] = ..., close_time: _Optional[_Union[_timeofday_pb2.TimeOfDay, _Mapping]] = ..., closed: _Optional[bool] = ...) -> None: ...

class BusinessSettings(_message.Message):
    __slots__ = ("currency", "language", "timezone", "date_format", "time_format", "working_hours", "features", "extras")
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bool
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bool] = ...) -> None: ...
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    TIMEZONE_FIELD_NUMBER: _ClassVar[int]
    DATE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    TIME_FORMAT_FIELD_NUMBER: _ClassVar[int]
    WORKING_HOURS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    EXTRAS_FIELD_NUMBER: _ClassVar[int]
    currency: str
    language: str
    timezone: str
    date_format: str
    time_format: str
    working_hours: _containers.RepeatedCompositeFieldContainer[WorkingHours]
    features: _containers.ScalarMap[str, bool]
    extras: _struct_pb2.Struct
    def __init__(self, currency: _Optional[str] = ..., language: _Optional[str] = ..., timezone: _Optional[str] = ..., date_format: _Optional[str] = ..., time_format: _Optional[str] = ..., working_hours: _Optional[_Iterable[_Union[WorkingHours, _Mapping]]] = ..., features: _Optional[_Mapping[str, bool]] = ..., extras: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class Role(_message.Message):
    __slots__ = ("permissions",)
    PERMISSIONS_FIELD_NUMBER: _ClassVar[int]
    permissions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, permissions: _Optional[_Iterable[str]] = ...) -> None: ...

class Member(_message.Message):
    __slots__ = ("role", "location_ids")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    LOCATION_IDS_FIELD_NUMBER: _ClassVar[int]
    role: str
    location_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, role: _Optional[str] = ..., location_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class BusinessPermissions(_message.Message):
    __slots__ = ("roles", "members")
    class RolesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Role
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Role, _Mapping]] = ...) -> None: ...
    class MembersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Member
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Member, _Mapping]] = ...) -> None: ...
    ROLES_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    roles: _containers.MessageMap[str, Role]
    members: _containers.MessageMap[str, Member]
    def __init__(self, roles: _Optional[_Mapping[str, Role]] = ..., members: _Optional[_Mapping[str, Member]] = ...) -> None: ...

class Business(_message.Message):
    __slots__ = ("id", "name", "type", "locations", "settings", "permissions", "status", "create_time", "update_time", "etag", "owner", "domain_label", "delete_time", "purge_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    LOCATIONS_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    PERMISSIONS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_LABEL_FIELD_NUMBER: _ClassVar[int]
    DELETE_TIME_FIELD_NUMBER: _ClassVar[int]
    PURGE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    type: BusinessType
    locations: _containers.RepeatedCompositeFieldContainer[Location]
    settings: BusinessSettings
    permissions: BusinessPermissions
    status: BusinessStatus
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    etag: str
    owner: str
    domain_label: str
    delete_time: _timestamp_pb2.Timestamp
    purge_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., type: _Optional[_Union[BusinessType, str]] = ..., locations: _Optional[_Iterable[_Union[Location, _Mapping]]] = ..., settings: _Optional[_Union[BusinessSettings, _Mapping]] = ..., permissions: _Optional[_Union[BusinessPermissions, _Mapping]] = ..., status: _Optional[_Union[BusinessStatus, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ..., owner: _Optional[str] = ..., domain_label: _Optional[str] = ..., delete_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., purge_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateBusinessRequest(_message.Message):
    __slots__ = ("business", "business_id", "request_id")
    BUSINESS_FIELD_NUMBER: _ClassVar[int]
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    business: Business
    business_id: str
    request_id: str
    def __init__(self, business: _Optional[_Union[Business, _Mapping]] = ..., business_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateBusinessResponse(_message.Message):
    __slots__ = ("business", "unregistered_location_ids")
    BUSINESS_FIELD_NUMBER: _ClassVar[int]
    UNREGISTERED_LOCATION_IDS_FIELD_NUMBER: _ClassVar[int]
    business: Business
    unregistered_location_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, business: _Optional[_Union[Business, _Mapping]] = ..., unregistered_location_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GetBusinessRequest(_message.Message):
    __slots__ = ("business_id",)
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    business_id: str
    def __init__(self, business_id: _Optional[str] = ...) -> None: ...

class ListBusinessesRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "show_deleted")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SHOW_DELETED_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    show_deleted: bool
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., show_deleted: _Optional[bool] = ...) -> None: ...

class ListBusinessesResponse(_message.Message):
    __slots__ = ("businesses", "next_page_token")
    BUSINESSES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    businesses: _containers.RepeatedCompositeFieldContainer[Business]
    next_page_token: str
    def __init__(self, businesses: _Optional[_Iterable[_Union[Business, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateBusinessRequest(_message.Message):
    __slots__ = ("business", "update_mask")
    BUSINESS_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    business: Business
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, business: _Optional[_Union[Business, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateBusinessSettingsRequest(_message.Message):
    __slots__ = ("business_id", "settings", "update_mask", "etag")
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    business_id: str
    settings: BusinessSettings
    update_mask: _field_mask_pb2.FieldMask
    etag: str
    def __init__(self, business_id: _Optional[str] = ..., settings: _Optional[_Union[BusinessSettings, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class DeleteBusinessRequest(_message.Message):
    __slots__ = ("business_id", "etag")
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    business_id: str
    etag: str
    def __init__(self, business_id: _Optional[str] = ..., etag: _Optional[str] = ...) -> None: ...

class AddLocationRequest(_message.Message):
    __slots__ = ("business_id", "location", "etag")
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    business_id: str
    location: Location
    etag: str
    def __init__(self, business_id: _Optional[str] = ..., location: _Optional[_Union[Location, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class AddLocationResponse(_message.Message):
    __slots__ = ("business", "unregistered_location_ids")
    BUSINESS_FIELD_NUMBER: _ClassVar[int]
    UNREGISTERED_LOCATION_IDS_FIELD_NUMBER: _ClassVar[int]
    business: Business
    unregistered_location_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, business: _Optional[_Union[Business, _Mapping]] = ..., unregistered_location_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class UpdateLocationRequest(_message.Message):
    __slots__ = ("business_id", "location", "update_mask", "etag")
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    business_id: str
    location: Location
    update_mask: _field_mask_pb2.FieldMask
    etag: str
    def __init__(self, business_id: _Optional[str] = ..., location: _Optional[_Union[Location, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class UpdateLocationResponse(_message.Message):
    __slots__ = ("business", "unregistered_location_ids")
    BUSINESS_FIELD_NUMBER: _ClassVar[int]
    UNREGISTERED_LOCATION_IDS_FIELD_NUMBER: _ClassVar[int]
    business: Business
    unregistered_location_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, business: _Optional[_Union[Business, _Mapping]] = ..., unregistered_location_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class RemoveLocationRequest(_message.Message):
    __slots__ = ("business_id", "location_id", "etag")
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    business_id: str
    location_id: str
    etag: str
    def __init__(self, business_id: _Optional[str] = ..., location_id: _Optional[str] = ..., etag: _Optional[str] = ...) -> None: ...

class SetMemberRequest(_message.Message):
    __slots__ = ("business_id", "member", "membership", "etag")
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    business_id: str
    member: str
    membership: Member
    etag: str
    def __init__(self, business_id: _Optional[str] = ..., member: _Optional[str] = ..., membership: _Optional[_Union[Member, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class RemoveMemberRequest(_message.Message):
    __slots__ = ("business_id", "member", "etag")
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    business_id: str
    member: str
    etag: str
    def __init__(self, business_id: _Optional[str] = ..., member: _Optional[str] = ..., etag: _Optional[str] = ...) -> None: ...

class GetMyAccessRequest(_message.Message):
    __slots__ = ("business_id", "location_id")
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    business_id: str
    location_id: str
    def __init__(self, business_id: _Optional[str] = ..., location_id: _Optional[str] = ...) -> None: ...

class GetMyAccessResponse(_message.Message):
    __slots__ = ("subject", "username", "groups", "scopes", "token_use", "platform_admin", "role", "location_ids", "all_locations", "permissions", "location_allowed")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    TOKEN_USE_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_ADMIN_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    LOCATION_IDS_FIELD_NUMBER: _ClassVar[int]
    ALL_LOCATIONS_FIELD_NUMBER: _ClassVar[int]
    PERMISSIONS_FIELD_NUMBER: _ClassVar[int]
    LOCATION_ALLOWED_FIELD_NUMBER: _ClassVar[int]
    subject: str
    username: str
    groups: _containers.RepeatedScalarFieldContainer[str]
    scopes: _containers.RepeatedScalarFieldContainer[str]
    token_use: TokenUse
    platform_admin: bool
    role: str
    location_ids: _containers.RepeatedScalarFieldContainer[str]
    all_locations: bool
    permissions: _containers.RepeatedScalarFieldContainer[str]
    location_allowed: bool
    def __init__(self, subject: _Optional[str] = ..., username: _Optional[str] = ..., groups: _Optional[_Iterable[str]] = ..., scopes: _Optional[_Iterable[str]] = ..., token_use: _Optional[_Union[TokenUse, str]] = ..., platform_admin: _Optional[bool] = ..., role: _Optional[str] = ..., location_ids: _Optional[_Iterable[str]] = ..., all_locations: _Optional[bool] = ..., permissions: _Optional[_Iterable[str]] = ..., location_allowed: _Optional[bool] = ...) -> None: ...

class Invitation(_message.Message):
    __slots__ = ("id", "business_id", "email", "membership", "state", "invitee", "invited_by", "create_time", "expire_time", "close_time", "revoked_by", "user_created")
    ID_FIELD_NUMBER: _ClassVar[int]
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    INVITEE_FIELD_NUMBER: _ClassVar[int]
    INVITED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    CLOSE_TIME_FIELD_NUMBER: _ClassVar[int]
    REVOKED_BY_FIELD_NUMBER: _ClassVar[int]
    USER_CREATED_FIELD_NUMBER: _ClassVar[int]
    id: str
    business_id: str
    email: str
    membership: Member
    state: InvitationState
    invitee: str
    invited_by: str
    create_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    close_time: _timestamp_pb2.Timestamp
    revoked_by: str
    user_created: bool
    def __init__(self, id: _Optional[str] = ..., business_id: _Optional[str] = ..., email: _Optional[str] = ..., membership: _Optional[_Union[Member, _Mapping]] = ..., state: _Optional[_Union[InvitationState, str]] = ..., invitee: _Optional[str] = ..., invited_by: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., close_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoked_by: _Optional[str] = ..., user_created: _Optional[bool] = ...) -> None: ...

class CreateInvitationRequest(_message.Message):
    __slots__ = ("business_id", "email", "membership")
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_FIELD_NUMBER: _ClassVar[int]
    business_id: str
    email: str
    membership: Member
    def __init__(self, business_id: _Optional[str] = ..., email: _Optional[str] = ..., membership: _Optional[_Union[Member, _Mapping]] = ...) -> None: ...

class CreateInvitationResponse(_message.Message):
    __slots__ = ("invitation", "code")
    INVITATION_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    invitation: Invitation
    code: str
    def __init__(self, invitation: _Optional[_Union[Invitation, _Mapping]] = ..., code: _Optional[str] = ...) -> None: ...

class AcceptInvitationRequest(_message.Message):
    __slots__ = ("code",)
    CODE_FIELD_NUMBER: _ClassVar[int]
    code: str
    def __init__(self, code: _Optional[str] = ...) -> None: ...

class AcceptInvitationResponse(_message.Message):
    __slots__ = ("invitation", "business")
    INVITATION_FIELD_NUMBER: _ClassVar[int]
    BUSINESS_FIELD_NUMBER: _ClassVar[int]
    invitation: Invitation
    business: Business
    def __init__(self, invitation: _Optional[_Union[Invitation, _Mapping]] = ..., business: _Optional[_Union[Business, _Mapping]] = ...) -> None: ...

class ListInvitationsRequest(_message.Message):
    __slots__ = ("business_id", "page_size", "page_token")
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    business_id: str
    page_size: int
    page_token: str
    def __init__(self, business_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListInvitationsResponse(_message.Message):
    __slots__ = ("invitations", "next_page_token")
    INVITATIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    invitations: _containers.RepeatedCompositeFieldContainer[Invitation]
    next_page_token: str
    def __init__(self, invitations: _Optional[_Iterable[_Union[Invitation, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RevokeInvitationRequest(_message.Message):
    __slots__ = ("business_id", "invitation_id")
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    INVITATION_ID_FIELD_NUMBER: _ClassVar[int]
    business_id: str
    invitation_id: str
    def __init__(self, business_id: _Optional[str] = ..., invitation_id: _Optional[str] = ...) -> None: ...

class BusinessMember(_message.Message):
    __slots__ = ("subject", "membership", "owner")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    subject: str
    membership: Member
    owner: bool
    def __init__(self, subject: _Optional[str] = ..., membership: _Optional[_Union[Member, _Mapping]] = ..., owner: _Optional[bool] = ...) -> None: ...

class ListMembersRequest(_message.Message):
    __slots__ = ("business_id", "page_size", "page_token")
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    business_id: str
    page_size: int
    page_token: str
    def __init__(self, business_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListMembersResponse(_message.Message):
    __slots__ = ("members", "next_page_token")
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedCompositeFieldContainer[BusinessMember]
    next_page_token: str
    def __init__(self, members: _Optional[_Iterable[_Union[BusinessMember, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class TransferOwnershipRequest(_message.Message):
    __slots__ = ("business_id", "new_owner", "previous_owner_role", "etag")
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    NEW_OWNER_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_OWNER_ROLE_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    business_id: str
    new_owner: str
    previous_owner_role: str
    etag: str
    def __init__(self, business_id: _Optional[str] = ..., new_owner: _Optional[str] = ..., previous_owner_role: _Optional[str] = ..., etag: _Optional[str] = ...) -> None: ...

class SearchBusinessesRequest(_message.Message):
    __slots__ = ("name_prefix", "type", "status", "page_size", "page_token")
    NAME_PREFIX_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    name_prefix: str
    type: BusinessType
    status: BusinessStatus
    page_size: int
    page_token: str
    def __init__(self, name_prefix: _Optional[str] = ..., type: _Optional[_Union[BusinessType, str]] = ..., status: _Optional[_Union[BusinessStatus, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class SearchBusinessesResponse(_message.Message):
    __slots__ = ("businesses", "next_page_token")
    BUSINESSES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    businesses: _containers.RepeatedCompositeFieldContainer[Business]
    next_page_token: str
    def __init__(self, businesses: _Optional[_Iterable[_Union[Business, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class LookupBusinessByDomainRequest(_message.Message):
    __slots__ = ("domain_label",)
    DOMAIN_LABEL_FIELD_NUMBER: _ClassVar[int]
    domain_label: str
    def __init__(self, domain_label: _Optional[str] = ...) -> None: ...

class PublicBusiness(_message.Message):
    __slots__ = ("id", "name", "type", "domain_label", "status", "locations", "settings")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_LABEL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LOCATIONS_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    type: BusinessType
    domain_label: str
    status: BusinessStatus
    locations: _containers.RepeatedCompositeFieldContainer[Location]
    settings: BusinessSettings
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., type: _Optional[_Union[BusinessType, str]] = ..., domain_label: _Optional[str] = ..., status: _Optional[_Union[BusinessStatus, str]] = ..., locations: _Optional[_Iterable[_Union[Location, _Mapping]]] = ..., settings: _Optional[_Union[BusinessSettings, _Mapping]] = ...) -> None: ...

class GetLocationRequest(_message.Message):
    __slots__ = ("business_id", "location_id")
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    business_id: str
    location_id: str
    def __init__(self, business_id: _Optional[str] = ..., location_id: _Optional[str] = ...) -> None: ...

class ListLocationsRequest(_message.Message):
    __slots__ = ("business_id", "page_size", "page_token", "show_inactive")
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SHOW_INACTIVE_FIELD_NUMBER: _ClassVar[int]
    business_id: str
    page_size: int
    page_token: str
    show_inactive: bool
    def __init__(self, business_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., show_inactive: _Optional[bool] = ...) -> None: ...

class ListLocationsResponse(_message.Message):
    __slots__ = ("locations", "next_page_token")
    LOCATIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    locations: _containers.RepeatedCompositeFieldContainer[Location]
    next_page_token: str
    def __init__(self, locations: _Optional[_Iterable[_Union[Location, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class SuspendBusinessRequest(_message.Message):
    __slots__ = ("business_id", "etag")
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    business_id: str
    etag: str
    def __init__(self, business_id: _Optional[str] = ..., etag: _Optional[str] = ...) -> None: ...

class ResumeBusinessRequest(_message.Message):
    __slots__ = ("business_id", "etag")
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    business_id: str
    etag: str
    def __init__(self, business_id: _Optional[str] = ..., etag: _Optional[str] = ...) -> None: ...

class UndeleteBusinessRequest(_message.Message):
    __slots__ = ("business_id", "etag")
    BUSINESS_ID_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    business_id: str
    etag: str
    def __init__(self, business_id: _Optional[str] = ..., etag: _Optional[str] = ...) -> None: ...
