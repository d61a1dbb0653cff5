"""The business item's lifecycle and discovery attributes, and the domain-label claim items (no I/O).

A business item carries, besides its shape in ``business_items``:

- ``domainLabel`` (when set), ``deletedAt``, ``purgeStartedAt`` and ``suspendedAt`` (ISO 8601, when set);
- ``searchType`` and ``searchName``, the keys of the global secondary index ``name-index``
  that SearchBusinesses queries: the type is the partition, the sort key is the name folded
  for case-insensitive prefix matching, then ``#`` and the id (so equal names stay distinct
  and ordered). Every business item written by this service has both; an item of the original
  system gets them on its next write (``simplu-grpc rewrite-items`` writes them all).

A domain label is claimed by an item ``id = "domain#<label>"`` (``kind = domain``,
``businessId``), written in the same transaction as the business item, conditional on no
other business holding it: DynamoDB has no unique secondary keys, and a GSI on the label could
not refuse a duplicate. LookupBusinessByDomain is one GetItem of the claim, then the business.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from simplu_grpc.domain.business.model import Business
from simplu_grpc.errors import AlreadyExists

NAME_INDEX: Final = "name-index"
SEARCH_TYPE: Final = "searchType"
SEARCH_NAME: Final = "searchName"
KIND_DOMAIN: Final = "domain"
LIFECYCLE_ATTRIBUTES: Final = frozenset(
    {"domainLabel", "deletedAt", "purgeStartedAt", "suspendedAt", SEARCH_TYPE, SEARCH_NAME}
)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def folded(text: str) -> str:
    """``text`` as the name index compares it: NFKC, case-folded, outer spaces stripped."""
    return unicodedata.normalize("NFKC", text).casefold().strip()


def search_name(business: Business) -> str:
    """The sort key of ``business`` in the name index: folded name, ``#``, id."""
    return f"{folded(business.name)}#{business.id}"


def lifecycle_attributes(business: Business) -> dict[str, Any]:
    """The attributes ``to_item`` adds for the lifecycle and the name index (plain values)."""
    document: dict[str, Any] = {SEARCH_TYPE: business.type.value, SEARCH_NAME: search_name(business)}
    if business.domain_label:
        document["domainLabel"] = business.domain_label
    if business.delete_time is not None:
        document["deletedAt"] = _iso(business.delete_time)
    if business.purge_start_time is not None:
        document["purgeStartedAt"] = _iso(business.purge_start_time)
    if business.suspend_time is not None:
        document["suspendedAt"] = _iso(business.suspend_time)
    return document


def lifecycle_fields(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The ``Business`` fields read from an item's plain document (the original's included)."""
    label = doc.get("domainLabel")
    return {
        "domain_label": label.lower() if isinstance(label, str) else "",
        "delete_time": _time(doc.get("deletedAt")),
        "purge_start_time": _time(doc.get("purgeStartedAt")),
        "suspend_time": _time(doc.get("suspendedAt")),
    }


def domain_claim_id(label: str) -> str:
    """The id of the item that reserves ``label`` for one business (labels never contain ``#``)."""
    return f"{KIND_DOMAIN}#{label}"


def domain_claim_item(label: str, business_id: str) -> dict[str, Any]:
    return {
        "id": {"S": domain_claim_id(label)},
        "kind": {"S": KIND_DOMAIN},
        "businessId": {"S": business_id},
    }


def domain_label_taken(label: str) -> AlreadyExists:
    return AlreadyExists(
        f"domain label {label!r} is taken by another business",
        reason="DOMAIN_LABEL_TAKEN",
        metadata={"domain_label": label},
    )


def claim_changes(table: str, business: Business, previous: Business) -> list[dict[str, Any]]:
    """The TransactWriteItems actions a write of ``business`` over ``previous`` adds for labels:
    claim its label, release one no longer used. Both conditional on the claim being free or
    this business's, so no write ever takes or frees another's. The label is claimed on every
    write, not only when it changes: items written before claims existed (the original system's,
    or this service's earlier versions) get theirs on their next write or `simplu-grpc
    rewrite-items`; the price is that a labelled business's writes are transactions (2x the
    write units)."""
    mine = {
        "ConditionExpression": "attribute_not_exists(id) OR businessId = :business",
        "ExpressionAttributeValues": {":business": {"S": business.id}},
    }
    actions: list[dict[str, Any]] = []
    label, before = business.domain_label, previous.domain_label
    if label:
        actions.append({"Put": {"TableName": table, "Item": domain_claim_item(label, business.id), **mine}})
    if before and before != label:
        key = {"id": {"S": domain_claim_id(before)}}
        actions.append({"Delete": {"TableName": table, "Key": key, **mine}})
    return actions
