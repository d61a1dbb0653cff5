"""Opaque page tokens (AIP-158): a keyset position bound to the query that produced it.

A token is URL-safe base64 of compact JSON ``{"v": 1, "q": <query hash>, "k": [sort value,
..., resource id]}`` with one sort value per order_by key (an instant, or a data value's jsonb
text); ``"i": offset`` for BatchGet, ``"s": sequence`` for ListResourceChanges. The hash covers
every filter and the ordering (not the page size), so a token replayed against another query,
or edited, is refused with INVALID_ARGUMENT. The
token carries no secret and grants nothing: the position only says where to resume
within a query the caller is already allowed to run, so no HMAC is needed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from simplu_grpc.domain.resources.ids import ID_PATTERN as _ID
from simplu_grpc.errors import InvalidArgument

_VERSION: Final = 1
# Data sort keys carry their value, so a token may be longer than an id and an instant; the
# bound keeps a hostile token cheap to refuse.
_MAX_TOKEN_LENGTH: Final = 8192
_FIELD: Final = "page_token"


@dataclass(frozen=True, slots=True)
class Position:
    """The last row of a page: one sort value per sort key, and its id.

    A time key's value is an aware datetime (None: no start/end time, which sorts last); a
    data key's value is the JSON text of the value at that path ("null" when missing), as
    the shard rendered it, so it goes back to the shard exactly as it came out."""

    sort_values: tuple[datetime | str | None, ...]
    resource_id: str


def query_hash(binding: Mapping[str, Any]) -> str:
    canonical = json.dumps(binding, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()[:32]


def encode(binding: Mapping[str, Any], position: Position) -> str:
    key = [_iso(v) if isinstance(v, datetime) or v is None else v for v in position.sort_values]
    body = {"v": _VERSION, "q": query_hash(binding), "k": [*key, position.resource_id]}
    raw = json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode(token: str, binding: Mapping[str, Any], data_keys: Sequence[bool] = (False,)) -> Position | None:
    """The position a token names for this query; None for ""; INVALID_ARGUMENT when not ours.
    ``data_keys`` says, per sort key, whether it is a data key (JSON text) or a time."""
    if not token:
        return None
    body = _body(token)
    if body.get("q") != query_hash(binding):
        raise InvalidArgument.field(_FIELD, "was issued for a different query")
    key = body.get("k")
    if (
        not isinstance(key, list)
        or len(key) != len(data_keys) + 1
        or not all(v is None or isinstance(v, str) for v in key[:-1])
        or not isinstance(key[-1], str)
        or not _ID.fullmatch(key[-1])
    ):
        raise InvalidArgument.field(_FIELD, "is malformed")
    values = tuple(
        _json_text(v) if is_data else _instant(v) for v, is_data in zip(key[:-1], data_keys, strict=True)
    )
    return Position(values, key[-1])


def _json_text(value: str | None) -> str:
    """A data sort value: JSON that PostgreSQL's jsonb accepts as the shard wrote it (no NaN or
    Infinity, numbers of sane size), so a forged token is refused here, not by the shard."""
    if value is None:
        raise InvalidArgument.field(_FIELD, "is malformed")
    try:
        json.loads(value, parse_constant=_refuse, parse_float=_number, parse_int=_number)
    except (ValueError, RecursionError):
        raise InvalidArgument.field(_FIELD, "is malformed") from None
    return value


def _refuse(text: str) -> None:
    raise ValueError(text)


def _number(text: str) -> str:
    # jsonb numbers are numeric; an exponent beyond its range would fail on the shard. Stored
    # numbers are doubles (Struct), which jsonb prints in full: up to ~330 characters.
    if len(text) > 400 or ("e" in text.lower() and abs(int(text.lower().split("e")[1])) > 1000):
        raise ValueError(text)
    return text


def _instant(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        instant = datetime.fromisoformat(value)
        if instant.tzinfo is None:
            raise InvalidArgument.field(_FIELD, "is malformed")
        instant.astimezone(UTC)  # an instant outside the datetime range is no position
    except (ValueError, OverflowError):
        raise InvalidArgument.field(_FIELD, "is malformed") from None
    return instant


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
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidArgument.field(_FIELD, "is malformed") from None
    if not isinstance(body, dict) or body.get("v") != _VERSION:
        raise InvalidArgument.field(_FIELD, "is malformed")
    return body
