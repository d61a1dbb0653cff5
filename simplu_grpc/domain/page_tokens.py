"""Opaque page tokens (AIP-158): a keyset position bound to the query that produced it.

A token is URL-safe base64 of compact JSON ``{"v": 1, "q": <query hash>, "k": [sort value,
resource id]}`` (``"i": offset`` for BatchGet, ``"s": sequence`` for ListResourceChanges).
The hash covers every filter and the ordering (not the page size), so a token replayed
against another query, or edited, is refused with INVALID_ARGUMENT. The
token carries no secret and grants nothing: the position only says where to resume
within a query the caller is already allowed to run, so no HMAC is needed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from simplu_grpc.domain.resources import ID_PATTERN as _ID
from simplu_grpc.domain.resources import ListQuery, StoredResource
from simplu_grpc.errors import InvalidArgument

_VERSION: Final = 1
_MAX_TOKEN_LENGTH: Final = 1024
_FIELD: Final = "page_token"


@dataclass(frozen=True, slots=True)
class Position:
    """The last row of a page: its sort value (None for "no start_time") and its id."""

    sort_value: datetime | None
    resource_id: str


def position_after(query: ListQuery, row: StoredResource) -> Position:
    """Where the page after ``row`` starts, in the query's ordering."""
    value = row.start_time if query.order_by.column == "start_time" else row.update_time
    return Position(value, row.key.resource_id)


def query_hash(binding: Mapping[str, Any]) -> str:
    canonical = json.dumps(binding, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()[:32]


def encode(binding: Mapping[str, Any], position: Position) -> str:
    body = {"v": _VERSION, "q": query_hash(binding), "k": [_iso(position.sort_value), position.resource_id]}
    raw = json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode(token: str, binding: Mapping[str, Any]) -> Position | None:
    """The position a token names for this query; None for ""; INVALID_ARGUMENT when not ours."""
    if not token:
        return None
    body = _body(token)
    if body.get("q") != query_hash(binding):
        raise InvalidArgument.field(_FIELD, "was issued for a different query")
    key = body.get("k")
    if (
        not isinstance(key, list)
        or len(key) != 2
        or not (key[0] is None or isinstance(key[0], str))
        or not isinstance(key[1], str)
        or not _ID.fullmatch(key[1])
    ):
        raise InvalidArgument.field(_FIELD, "is malformed")
    sort_value: datetime | None = None
    if key[0] is not None:
        try:
            sort_value = datetime.fromisoformat(key[0])
            if sort_value.tzinfo is None:
                raise InvalidArgument.field(_FIELD, "is malformed")
            sort_value.astimezone(UTC)  # an instant outside the datetime range is no position
        except (ValueError, OverflowError):
            raise InvalidArgument.field(_FIELD, "is malformed") from None
    return Position(sort_value, key[1])


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def encode_offset(binding: Mapping[str, Any], offset: int) -> str:
    """A token naming the next item of a fixed request (BatchGet's keys), bound to that request."""
    body = {"v": _VERSION, "q": query_hash(binding), "i": offset}
    raw = json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_offset(token: str, binding: Mapping[str, Any], limit: int) -> int:
    """The offset a token names (0 for ""), below ``limit``; INVALID_ARGUMENT when not ours."""
    if not token:
        return 0
    body = _body(token)
    if body.get("q") != query_hash(binding):
        raise InvalidArgument.field(_FIELD, "was issued for a different request")
    offset = body.get("i")
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 < offset < limit:
        raise InvalidArgument.field(_FIELD, "is malformed")
    return offset


def encode_sequence(binding: Mapping[str, Any], sequence: int) -> str:
    """A token naming the change after ``sequence`` (ListResourceChanges), bound to the query."""
    body = {"v": _VERSION, "q": query_hash(binding), "s": sequence}
    raw = json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_sequence(token: str, binding: Mapping[str, Any]) -> int | None:
    """The sequence a token names (None for ""); INVALID_ARGUMENT when not this query's."""
    if not token:
        return None
    body = _body(token)
    if body.get("q") != query_hash(binding):
        raise InvalidArgument.field(_FIELD, "was issued for a different query")
    sequence = body.get("s")
    if not isinstance(sequence, int) or isinstance(sequence, bool) or not 0 < sequence < 2**63:
        raise InvalidArgument.field(_FIELD, "is malformed")
    return sequence


def _body(token: str) -> dict[str, Any]:
    if len(token) > _MAX_TOKEN_LENGTH:
        raise InvalidArgument.field(_FIELD, "is not a page token of this query")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body = json.loads(raw.decode("ascii"))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidArgument.field(_FIELD, "is malformed") from None
    if not isinstance(body, dict) or body.get("v") != _VERSION:
        raise InvalidArgument.field(_FIELD, "is malformed")
    return body
