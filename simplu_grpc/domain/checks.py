"""The field checks every aggregate shares: ids, request ids, free text, and the ``Violations`` collector.

Validators append to a ``Violations`` collector under the request's field path
(``business.locations[1].id``) so a caller learns everything wrong at once; ``raise_if_any``
turns the collection into ``errors.InvalidArgument`` with BadRequest field violations.
Business, resource and admin calls check ids here, so the same id is valid for all of them
(DESIGN §4); rules of one aggregate stay in that aggregate's ``validation`` module.
"""

from __future__ import annotations

import re
from typing import Final

from simplu_grpc.errors import FieldViolation, InvalidArgument

# DESIGN §4: 1-64 characters of [A-Za-z0-9_.:-]; business ids never contain "-" because the
# Citrus key "{businessId}-{locationId}" splits at its first "-".
ID_MAX: Final = 64
ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
BUSINESS_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_.:]{1,64}")
REQUEST_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
# Bidirectional overrides and isolates can make text display differently from what it is.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


class Violations:
    """Collects field violations; ``raise_if_any`` reports them all in one error."""

    def __init__(self) -> None:
        self._items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self._items.append(FieldViolation(field, description))

    def __bool__(self) -> bool:
        return bool(self._items)

    def reported(self, field: str) -> bool:
        """Whether ``field`` already has a violation (e.g. from the wire conversion)."""
        return any(item.field == field for item in self._items)

    @property
    def items(self) -> list[FieldViolation]:
        return list(self._items)

    def raise_if_any(self) -> None:
        if not self._items:
            return
        first = self._items[0]
        more = f" (and {len(self._items) - 1} more)" if len(self._items) > 1 else ""
        raise InvalidArgument(f"{first.field}: {first.description}{more}", violations=self._items)


def has_control_characters(text: str) -> bool:
    """True for C0/C1 controls (newlines and tabs included), line separators and bidi overrides."""
    return any(
        ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F or ch in "\u2028\u2029" or ch in _BIDI_CONTROLS
        for ch in text
    )


def shown(value: str) -> str:
    """A short, safe rendering of a bad value for an error message."""
    return repr(value[:40] + ("..." if len(value) > 40 else ""))


def check_id(v: Violations, field: str, value: str) -> None:
    """A location, resource (or other) id: DESIGN §4."""
    if not value:
        v.add(field, "is required")
    elif not ID_PATTERN.fullmatch(value):
        v.add(field, f"must be 1-{ID_MAX} characters of A-Z a-z 0-9 _ . : - (got {shown(value)})")


def check_business_id(v: Violations, field: str, value: str) -> None:
    """A business id: as ``check_id`` but never ``-`` (it separates the Citrus key)."""
    if not value:
        v.add(field, "is required")
    elif "-" in value:
        v.add(field, "must not contain '-' (it separates business and location in the shard key)")
    elif not BUSINESS_ID_PATTERN.fullmatch(value):
        v.add(field, f"must be 1-{ID_MAX} characters of A-Z a-z 0-9 _ . : (got {shown(value)})")


def check_request_id(v: Violations, field: str, value: str) -> None:
    """An optional idempotency key (AIP-155): empty, or 1-128 id characters."""
    if value and not REQUEST_ID_PATTERN.fullmatch(value):
        v.add(field, "must be 1-128 characters of A-Z a-z 0-9 _ . : - (a UUID is ideal)")


def check_text(v: Violations, field: str, value: str, *, max_length: int, required: bool = False) -> None:
    """Free text: bounded, no control characters; ``required`` means not blank."""
    if required and not value.strip():
        v.add(field, "is required")
        return
    if len(value) > max_length:
        v.add(field, f"must be at most {max_length} characters (got {len(value)})")
    elif has_control_characters(value):
        v.add(field, "must not contain control characters")


def require_id(field: str, value: str, *, business: bool = False) -> str:
    """``value`` when it is a valid id (a business id with ``business``); else INVALID_ARGUMENT."""
    v = Violations()
    (check_business_id if business else check_id)(v, field, value)
    v.raise_if_any()
    return value
