"""Membership items: one per (member, business), the keys of the sparse index ``member-index``.

``id = "member#<sub>#<business id>"`` with ``memberSub`` and ``memberOf``; a person's
businesses are one Query of the index (see ``business_store``'s docstring for why an index).
"""

from __future__ import annotations

from typing import Any

KIND_MEMBER = "member"
MEMBER_INDEX = "member-index"
MEMBER_SUB = "memberSub"
MEMBER_OF = "memberOf"


def membership_id(subject: str, business_id: str) -> str:
    """The id of the item saying ``subject`` is a member of ``business_id``."""
    return f"{KIND_MEMBER}#{subject}#{business_id}"


def membership_item(subject: str, business_id: str) -> dict[str, Any]:
    return {
        "id": {"S": membership_id(subject, business_id)},
        "kind": {"S": KIND_MEMBER},
        MEMBER_SUB: {"S": subject},
        MEMBER_OF: {"S": business_id},
    }


def membership_key(subject: str, business_id: str) -> dict[str, Any]:
    """The index position of a membership (a Query's ExclusiveStartKey: index keys and table key)."""
    item = membership_item(subject, business_id)
    return {key: item[key] for key in ("id", MEMBER_SUB, MEMBER_OF)}
