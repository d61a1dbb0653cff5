"""The purge's business-table adapter: deleted businesses listed, a purged business's items removed.

``domain.business.retention.PurgeStore`` on the business-info table: the business item goes last
(in one transaction with its domain-label claim, conditional on the version the purge marked),
after its membership items, so a stopped purge always finds the business to resume from.
"""

from __future__ import annotations

import logging
from typing import Any

from simplu_grpc.adapters.dynamodb.business_items import from_item, is_business_item
from simplu_grpc.adapters.dynamodb.business_store import BusinessStore
from simplu_grpc.adapters.dynamodb.invitation_items import business_partition, invitation_item_id
from simplu_grpc.adapters.dynamodb.lifecycle_items import domain_claim_id
from simplu_grpc.adapters.dynamodb.membership_items import MEMBER_INDEX, MEMBER_OF, MEMBER_SUB, membership_id
from simplu_grpc.domain.business.model import Business
from simplu_grpc.errors import Aborted, BusinessStoreUnavailable

log = logging.getLogger(__name__)

_BATCH_WRITE_ITEMS = 25


class BusinessPurgeStore:
    """``domain.business_retention.PurgeStore`` on the business-info table."""

    def __init__(self, store: BusinessStore) -> None:
        self._store = store

    def get(self, business_id: str, *, consistent: bool = True) -> Business | None:
        return self._store.get(business_id, consistent=consistent)

    def update(self, business: Business, *, previous: Business) -> Business:
        return self._store.update(business, previous=previous)

    def deleted_page(self, *, start_after: str | None, limit: int) -> tuple[list[Business], str | None]:
        items, cursor = self._store.scan_page(start_after=start_after, limit=limit)
        deleted: list[Business] = []
        for item in items:
            if not is_business_item(item):
                continue
            try:
                business = from_item(item)
            except ValueError:
                log.warning("purge: item %s is unreadable; left alone", item.get("id", {}).get("S"))
                continue
            if business.is_deleted:
                deleted.append(business)
        return deleted, cursor

    def _invitation_item_ids(self, business_id: str) -> list[str]:
        """Every invitation item of the business (its partition of ``member-index``, keys only)."""
        ids: list[str] = []
        start: dict[str, Any] | None = None
        while True:
            kwargs: dict[str, Any] = {
                "TableName": self._store.table,
                "IndexName": MEMBER_INDEX,
                "KeyConditionExpression": "#sub = :sub",
                "ExpressionAttributeNames": {"#sub": MEMBER_SUB},
                "ExpressionAttributeValues": {":sub": {"S": business_partition(business_id)}},
            }
            if start is not None:
                kwargs["ExclusiveStartKey"] = start
            response = self._store.execute("query", **kwargs)
            ids += [invitation_item_id(str(item[MEMBER_OF]["S"])) for item in response.get("Items", [])]
            start = response.get("LastEvaluatedKey")
            if start is None:
                return ids

    def remove(self, business: Business) -> None:
        """Invitation and membership items (25 per BatchWriteItem), then the label claim and the
        business item together, conditional on the business being the version the purge marked."""
        ids = self._invitation_item_ids(business.id)
        ids += [membership_id(subject, business.id) for subject in sorted(business.permissions.members)]
        for start in range(0, len(ids), _BATCH_WRITE_ITEMS):
            requests = [
                {"DeleteRequest": {"Key": {"id": {"S": i}}}} for i in ids[start : start + _BATCH_WRITE_ITEMS]
            ]
            response = self._store.execute("batch_write_item", RequestItems={self._store.table: requests})
            if response.get("UnprocessedItems"):
                raise BusinessStoreUnavailable(
                    "the business store is throttling writes; run the purge again to resume",
                    metadata={"operation": "batch_write_item"},
                )
        table = self._store.table
        actions: list[dict[str, Any]] = [
            {
                "Delete": {
                    "TableName": table,
                    "Key": {"id": {"S": business.id}},
                    "ConditionExpression": "#version = :version",
                    "ExpressionAttributeNames": {"#version": "version"},
                    "ExpressionAttributeValues": {":version": {"N": str(business.version)}},
                }
            }
        ]
        if business.domain_label:
            actions.append(
                {
                    "Delete": {
                        "TableName": table,
                        "Key": {"id": {"S": domain_claim_id(business.domain_label)}},
                        "ConditionExpression": "attribute_not_exists(id) OR businessId = :business",
                        "ExpressionAttributeValues": {":business": {"S": business.id}},
                    }
                }
            )
        try:
            self._store.execute("transact_write_items", TransactItems=actions)
        except Exception as exc:
            if "ConditionalCheckFailed" in str(exc) or "TransactionCanceled" in str(exc):
                raise Aborted(f"business {business.id!r} changed during its purge; run again") from exc
            raise
