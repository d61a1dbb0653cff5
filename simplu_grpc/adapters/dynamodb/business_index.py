"""The business table's discovery indexes: the name index SearchBusinesses queries, and domain-label claims.

``name-index`` is a global secondary index of the business-info table: partition key
``searchType`` (the business type), sort key ``searchName`` (folded name ``#`` id), projection
ALL, so a page of results is the Query's own answer (no second read). A search with a type is
one Query of that partition with ``begins_with(searchName, :prefix)``; without a type it runs
the three partitions in turn (dental, gym, hotel). The status filter is applied to what the
Query read, so it costs reads: each call reads at most the caller's budget of entries and
says where it stopped. Cost: a Query costs 0.5 RCU per 4 KB read (eventually consistent), so
a page of 50 average businesses (~2 KB) is about 13 RCU; a Scan of the table would cost the
table's size on every call, which is why search never scans.

A domain label's claim item (``adapters.business_lifecycle_items``) is read by its key: one
GetItem of a ~100-byte item, 0.5 RCU.
"""

from __future__ import annotations

from typing import Any

from simplu_grpc.adapters.dynamodb.business_items import from_item, is_business_item
from simplu_grpc.adapters.dynamodb.business_store import BusinessStore
from simplu_grpc.adapters.dynamodb.lifecycle_items import (
    NAME_INDEX,
    SEARCH_NAME,
    SEARCH_TYPE,
    domain_claim_id,
    folded,
)
from simplu_grpc.domain.business.model import Business, BusinessType
from simplu_grpc.domain.business.search import SearchPosition, SearchQuery, SearchResult

# Entries one Query call asks for (DynamoDB stops at 1 MB anyway).
_QUERY_LIMIT = 200


class BusinessIndexReader:
    """``domain.business_search.BusinessIndex`` on DynamoDB (the store's client, retries and errors)."""

    def __init__(self, store: BusinessStore) -> None:
        self._store = store

    def business_id_for_label(self, label: str) -> str | None:
        response = self._store.execute(
            "get_item", TableName=self._store.table, Key={"id": {"S": domain_claim_id(label)}}
        )
        item = response.get("Item")
        if item is None or "businessId" not in item:
            return None
        return str(item["businessId"]["S"])

    def search(
        self, query: SearchQuery, *, after: SearchPosition | None, limit: int, budget: int
    ) -> SearchResult:
        types = [query.business_type] if query.business_type else list(BusinessType)
        if after is not None:
            if after.business_type not in types:
                return SearchResult()
            types = types[types.index(after.business_type) :]
        prefix = folded(query.name_prefix)
        found: list[Business] = []
        read = 0
        start = after
        for business_type in types:
            start_key = (
                _start_key(start) if start is not None and start.business_type is business_type else None
            )
            while True:
                items, last_key = self._query(
                    business_type, prefix, start_key, min(_QUERY_LIMIT, budget - read)
                )
                for index, item in enumerate(items):
                    read += 1
                    if is_business_item(item):
                        business = from_item(item)
                        if query.status is None or business.status is query.status:
                            found.append(business)
                    position = SearchPosition(
                        business_type, str(item[SEARCH_NAME]["S"]), str(item["id"]["S"])
                    )
                    more = index < len(items) - 1 or last_key is not None or business_type != types[-1]
                    if (len(found) == limit or read >= budget) and more:
                        return SearchResult(found, position)
                if last_key is None:
                    break
                start_key = last_key
            start = None
        return SearchResult(found, None)

    def _query(
        self, business_type: BusinessType, prefix: str, start_key: dict[str, Any] | None, limit: int
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        condition = "#type = :type"
        values: dict[str, Any] = {":type": {"S": business_type.value}}
        names = {"#type": SEARCH_TYPE}
        if prefix:
            condition += " AND begins_with(#name, :prefix)"
            names["#name"] = SEARCH_NAME
            values[":prefix"] = {"S": prefix}
        kwargs: dict[str, Any] = {
            "TableName": self._store.table,
            "IndexName": NAME_INDEX,
            "KeyConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "Limit": max(1, limit),
        }
        if start_key:
            kwargs["ExclusiveStartKey"] = start_key
        response = self._store.execute("query", **kwargs)
        return list(response.get("Items", [])), response.get("LastEvaluatedKey")


def _start_key(position: SearchPosition) -> dict[str, Any]:
    """The index position after which a Query resumes (index keys and the table key)."""
    return {
        "id": {"S": position.business_id},
        SEARCH_TYPE: {"S": position.business_type.value},
        SEARCH_NAME: {"S": position.name_key},
    }
