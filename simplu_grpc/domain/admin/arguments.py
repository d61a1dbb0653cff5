"""Argument checks the admin use cases share: a malformed id is INVALID_ARGUMENT, not "not found"."""

from __future__ import annotations

from simplu_grpc.domain.checks import Violations, check_business_id, check_id, check_text

SHARD_ID_MAX = 128


def require_location_key(business_id: str, location_id: str, *, location_required: bool = True) -> None:
    """DESIGN §4 ids, as everywhere else: a malformed id is INVALID_ARGUMENT, not "not found"."""
    v = Violations()
    check_business_id(v, "business_id", business_id)
    if location_id or location_required:
        check_id(v, "location_id", location_id)
    v.raise_if_any()


def require_shard_id(shard_id: str) -> None:
    """Shard ids are Citrus's to choose: bounded printable text, not our id grammar."""
    v = Violations()
    check_text(v, "shard_id", shard_id, max_length=SHARD_ID_MAX, required=True)
    v.raise_if_any()
