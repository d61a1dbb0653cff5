"""Invitations in the business-info table (item shape: ``adapters.dynamodb.invitation_items``).

Every call goes through the table's ``TableCalls`` (``BusinessStore.calls``): the same retries,
deadline, metrics and error translation as the businesses next to them. Accepting writes the
business (with its new member's membership item) and spends the invitation in one
TransactWriteItems (``BusinessStore.update(also=...)``), so a code can never make two members.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from simplu_grpc import context
from simplu_grpc.adapters.dynamodb.business_store import BusinessStore
from simplu_grpc.adapters.dynamodb.calls import ConditionFailed
from simplu_grpc.adapters.dynamodb.invitation_items import (
    business_partition,
    from_item,
    invitation_item_id,
    is_invitation_item,
    to_item,
)
from simplu_grpc.adapters.dynamodb.membership_items import MEMBER_INDEX, MEMBER_OF, MEMBER_SUB
from simplu_grpc.domain.business.invitation_model import (
    Invitation,
    InvitationPage,
    InvitationState,
    after_token,
    is_invitation_id,
    read_after_token,
)
from simplu_grpc.domain.business.model import Business
from simplu_grpc.errors import Aborted, AlreadyExists, InvalidArgument

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_PENDING = InvitationState.PENDING.value


class InvitationStore:
    """The ``InvitationStore`` port (``domain.business.invitation_model``) on DynamoDB."""

    def __init__(self, *, businesses: BusinessStore, table: str, client: DynamoDBClient) -> None:
        self._businesses = businesses
        self._calls = businesses.calls
        self._table = table
        self._client = client

    def create(self, invitation: Invitation) -> None:
        try:
            self._calls.call(
                "put_item",
                self._client.put_item,
                TableName=self._table,
                Item=to_item(invitation),
                ConditionExpression="attribute_not_exists(id)",
            )
        except ConditionFailed:  # pragma: no cover - 80 random bits make a clash practically impossible
            raise AlreadyExists(f"invitation {invitation.id!r} already exists") from None

    def get(self, invitation_id: str) -> Invitation | None:
        response = self._calls.call(
            "get_item",
            self._client.get_item,
            TableName=self._table,
            Key={"id": {"S": invitation_item_id(invitation_id)}},
            ConsistentRead=True,
        )
        item = response.get("Item")
        if item is None or not is_invitation_item(item):
            return None
        return from_item(item)

    def list(self, business_id: str, *, page_size: int, page_token: str) -> InvitationPage:
        """One Query of the business's partition of ``member-index`` (keys only), then one
        BatchGetItem of those invitations, in id (creation) order."""
        after = read_after_token(page_token, business_id) if page_token else None
        if after is not None and not is_invitation_id(after):
            raise InvalidArgument.field("page_token", "is not a token this service issued")
        partition = business_partition(business_id)
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": MEMBER_INDEX,
            "KeyConditionExpression": "#sub = :sub",
            "ExpressionAttributeNames": {"#sub": MEMBER_SUB},
            "ExpressionAttributeValues": {":sub": {"S": partition}},
            "Limit": min(page_size, 100),
        }
        if after:
            kwargs["ExclusiveStartKey"] = {
                "id": {"S": invitation_item_id(after)},
                MEMBER_SUB: {"S": partition},
                MEMBER_OF: {"S": after},
            }
        context.deadline().check("listing invitations")
        response = self._calls.call("query", self._client.query, **kwargs)
        ids = [str(item[MEMBER_OF]["S"]) for item in response.get("Items", [])]
        items = self._calls.batch_get([{"id": {"S": invitation_item_id(i)}} for i in ids])
        by_id = {inv.id: inv for inv in (from_item(item) for item in items if is_invitation_item(item))}
        found = [by_id[i] for i in ids if i in by_id and by_id[i].business_id == business_id]
        more = bool(ids) and response.get("LastEvaluatedKey") is not None
        return InvitationPage(found, after_token(ids[-1], business_id) if more else "")

    def count_recent(self, business_id: str) -> int:
        response = self._calls.call(
            "query",
            self._client.query,
            TableName=self._table,
            IndexName=MEMBER_INDEX,
            KeyConditionExpression="#sub = :sub",
            ExpressionAttributeNames={"#sub": MEMBER_SUB},
            ExpressionAttributeValues={":sub": {"S": business_partition(business_id)}},
            Select="COUNT",
        )
        return int(response.get("Count", 0))

    def accept(self, accepted: Invitation, *, business: Business, previous: Business) -> Business:
        return self._businesses.update(business, previous=previous, also=[self._closing(accepted)])

    def close(self, closed: Invitation) -> None:
        action = self._closing(closed)["Put"]
        try:
            self._calls.call("put_item", self._client.put_item, **action)
        except ConditionFailed:
            raise Aborted(f"invitation {closed.id!r} was changed by another request") from None

    def _closing(self, closed: Invitation) -> dict[str, Any]:
        """A Put of the closed invitation, on the condition that it is still pending."""
        return {
            "Put": {
                "TableName": self._table,
                "Item": to_item(closed),
                "ConditionExpression": "attribute_exists(id) AND #state = :pending",
                "ExpressionAttributeNames": {"#state": "state"},
                "ExpressionAttributeValues": {":pending": {"S": _PENDING}},
            }
        }
