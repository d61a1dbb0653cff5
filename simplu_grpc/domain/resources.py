"""Resources: the domain types and the validation of every ResourceService input.

Nothing here knows protobuf or SQL. The servicer turns requests into plain values
(``Struct`` -> dict, ``FieldMask`` -> list of paths) and calls these validators; each bad
input raises ``InvalidArgument`` with a BadRequest field violation naming the field. What
passes is safe to hand to the shard store: ids match a fixed character set, resource
names come from the catalog (package data), documents are bounded in size and depth,
dates are aware datetimes, and update paths are lists of plain keys (used only as query
parameters, never spliced into SQL).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from enum import Enum
from functools import cache
from importlib import resources as package_files
from typing import Any, Final

from simplu_grpc.errors import FieldViolation, InvalidArgument

ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
# Business ids never contain "-": the Citrus key "{businessId}-{locationId}" splits at its first "-".
BUSINESS_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_.:]{1,64}")
REQUEST_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
# A key in an update_mask path (data.<key>...). Struct keys may be anything, but mask paths
# name fields (AIP-161): plain keys only, which also keeps them readable in logs.
MASK_KEY_PATTERN: Final = re.compile(r"[A-Za-z0-9_]{1,64}")

DEFAULT_PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 1000
MAX_BATCH_KEYS: Final = 100
_MAX_DATE_LENGTH: Final = 64


# --- types ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResourceKey:
    """The four columns of a resource's primary key."""

    business_id: str
    location_id: str
    resource_name: str
    resource_id: str


@dataclass(frozen=True, slots=True)
class NewResource:
    """A validated create: the id is either the client's or a generated one."""

    key: ResourceKey
    business_type: str
    data: dict[str, Any]
    start_date: datetime | None
    end_date: datetime | None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class StoredResource:
    """A resource as a shard returns it."""

    key: ResourceKey
    business_type: str
    data: dict[str, Any]
    start_date: datetime | None
    end_date: datetime | None
    create_time: datetime
    update_time: datetime
    version: int

    @property
    def etag(self) -> str:
        return etag_for(self.version)


def etag_for(version: int) -> str:
    """The etag of a version (AIP-154: opaque to callers; derived from the row's version)."""
    return f"v{version}"


def version_from_etag(etag: str) -> int | None:
    """The version an etag names, or None when it cannot name any (it then never matches)."""
    match = re.fullmatch(r"v([0-9]{1,18})", etag)
    return int(match.group(1)) if match else None


# A version no row ever has (versions start at 1): what an etag we never issued expects.
NO_VERSION: Final = -1


def expected_version(etag: str) -> int | None:
    """The version a conditional write (update, delete) must find: None when no etag was
    sent (any version), the etag's version, or NO_VERSION for an etag we never issued, so
    that it matches nothing (ABORTED) rather than being ignored."""
    if not etag:
        return None
    version = version_from_etag(etag)
    return NO_VERSION if version is None else version


class OrderBy(Enum):
    """ListResources orderings: a sort column and a direction."""

    START_DATE = ("start_date", False)
    START_DATE_DESC = ("start_date", True)
    UPDATE_TIME = ("update_time", False)
    UPDATE_TIME_DESC = ("update_time", True)

    @property
    def column(self) -> str:
        return self.value[0]

    @property
    def descending(self) -> bool:
        return self.value[1]


@dataclass(frozen=True, slots=True)
class ListQuery:
    """A validated ListResources query (the page token's position is added by the servicer)."""

    business_id: str
    location_id: str
    resource_name: str
    start_from: datetime | None
    start_to: datetime | None
    data_contains: dict[str, Any] | None
    order_by: OrderBy
    page_size: int

    def binding(self) -> dict[str, Any]:
        """What a page token is bound to: everything but the page size (AIP-158 lets it change)."""
        return {
            "b": self.business_id,
            "l": self.location_id,
            "n": self.resource_name,
            "f": format_timestamp(self.start_from) if self.start_from else None,
            "t": format_timestamp(self.start_to) if self.start_to else None,
            "c": self.data_contains,
            "o": self.order_by.name,
        }


class Unset(Enum):
    """Marks a field the update does not touch (None means: clear it)."""

    UNSET = "unset"


UNSET: Final = Unset.UNSET


@dataclass(frozen=True, slots=True)
class UpdatePlan:
    """A validated UpdateResource: whole-document replace, or per-key sets and removals."""

    replace_data: dict[str, Any] | None = None
    set_paths: tuple[tuple[tuple[str, ...], Any], ...] = ()
    remove_paths: tuple[tuple[str, ...], ...] = ()
    start_date: datetime | Unset | None = UNSET
    end_date: datetime | Unset | None = UNSET
    # None: unconditional; otherwise the version the row must have (see expected_version()).
    expected_version: int | None = None
    paths: tuple[str, ...] = field(default=())


# --- catalog -------------------------------------------------------------------------------


@cache
def catalog() -> dict[str, frozenset[str]]:
    """Resource names per business type (catalog.json, package data); "common" merged into each."""
    raw = json.loads(package_files.files("simplu_grpc.domain").joinpath("catalog.json").read_text("utf-8"))
    common = frozenset(raw.get("common", ()))
    return {
        business_type: frozenset(names) | common
        for business_type, names in raw.items()
        if not business_type.startswith("_") and business_type != "common"
    }


# Every name of every business type, computed once: the shape check before authorisation.
KNOWN_RESOURCE_NAMES: Final[frozenset[str]] = frozenset().union(*catalog().values())


def _shown_name(resource_name: str) -> str:
    return resource_name if ID_PATTERN.fullmatch(resource_name) else "the given name"


def require_known_name(resource_name: str, field_name: str = "resource_name") -> str:
    """The name if SOME business type has it; checked before the business is looked up, so it
    leaks nothing about the business (its own catalog is checked after authorisation)."""
    if not resource_name:
        raise InvalidArgument.field(field_name, "is required")
    if resource_name not in KNOWN_RESOURCE_NAMES:
        raise InvalidArgument.field(
            field_name, f"{_shown_name(resource_name)} is not a resource name of any business type"
        )
    return resource_name


def require_resource_name(business_type: str, resource_name: str, field_name: str = "resource_name") -> str:
    """The name if the business type's catalog has it; INVALID_ARGUMENT otherwise."""
    if not resource_name:
        raise InvalidArgument.field(field_name, "is required")
    names = catalog().get(business_type.lower(), frozenset())
    if resource_name not in names:
        raise InvalidArgument.field(
            field_name,
            f"{_shown_name(resource_name)} is not a resource of a {business_type.lower()} business",
        )
    return resource_name


# --- ids -----------------------------------------------------------------------------------


def require_id(field_name: str, value: str, *, business: bool = False) -> str:
    """A 1-64 character id of [A-Za-z0-9_.:-] (no "-" for business ids)."""
    if not value:
        raise InvalidArgument.field(field_name, "is required")
    pattern = BUSINESS_ID_PATTERN if business else ID_PATTERN
    if not pattern.fullmatch(value):
        allowed = "[A-Za-z0-9_.:]" if business else "[A-Za-z0-9_.:-]"
        raise InvalidArgument.field(field_name, f"must be 1-64 characters of {allowed}")
    return value


def optional_request_id(value: str) -> str | None:
    if not value:
        return None
    if not REQUEST_ID_PATTERN.fullmatch(value):
        raise InvalidArgument.field("request_id", "must be 1-128 characters of [A-Za-z0-9_.:-]")
    return value


# --- documents -----------------------------------------------------------------------------


def check_document(field_name: str, data: Mapping[str, Any], *, max_bytes: int, max_depth: int) -> None:
    """Bounded size (serialized JSON) and nesting; values PostgreSQL's jsonb can store."""
    depth = _depth_and_values(field_name, data, max_depth)
    if depth > max_depth:
        raise InvalidArgument.field(field_name, f"is nested {depth} levels deep; at most {max_depth}")
    size = document_size(data)
    if size > max_bytes:
        raise InvalidArgument.field(field_name, f"is {size} bytes serialized; at most {max_bytes}")


def document_size(data: Mapping[str, Any]) -> int:
    """UTF-8 bytes of the document as PostgreSQL's jsonb text output renders it (", " and ": ").

    The shard applies the same measure to the result of an update (simplu_jsonb_bounded), so
    a document accepted here is not refused there for its size. (Numbers in exponent form
    are the exception: jsonb prints them in full, e.g. 1e-07 as 0.0000001.)
    """
    return len(json.dumps(data, separators=(", ", ": "), ensure_ascii=False).encode("utf-8"))


def _depth_and_values(field_name: str, root: Any, max_depth: int) -> int:
    """Deepest nesting of objects/lists (the document itself is level 1); iterative, never recursing."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(root, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, dict):
            deepest = max(deepest, level)
            if deepest > max_depth:
                return deepest
            for key, child in value.items():
                _check_text(field_name, key)
                stack.append((child, level + 1))
        elif isinstance(value, list):
            deepest = max(deepest, level)
            if deepest > max_depth:
                return deepest
            stack.extend((child, level + 1) for child in value)
        elif isinstance(value, str):
            _check_text(field_name, value)
        elif isinstance(value, float) and not math.isfinite(value):
            raise InvalidArgument.field(field_name, "numbers must be finite")
    return deepest


def _check_text(field_name: str, text: str) -> None:
    # PostgreSQL text and jsonb cannot hold NUL; say so rather than fail inside the shard.
    if "\x00" in text:
        raise InvalidArgument.field(field_name, "strings must not contain NUL characters")


# --- dates ---------------------------------------------------------------------------------


def parse_date(field_name: str, value: str) -> datetime | None:
    """ISO 8601 date ("2026-03-01", taken as UTC midnight) or date-time with an offset; "" is None."""
    if not value:
        return None
    text = value.strip()
    if len(text) > _MAX_DATE_LENGTH:
        raise InvalidArgument.field(field_name, "is not an ISO 8601 date or date-time")
    if len(text) == 10:
        try:
            return datetime.combine(date.fromisoformat(text), time(0, 0), tzinfo=UTC)
        except (ValueError, OverflowError):
            raise InvalidArgument.field(field_name, "is not a valid ISO 8601 date") from None
    try:
        parsed = datetime.fromisoformat(text)
    except (ValueError, OverflowError):
        raise InvalidArgument.field(field_name, "is not an ISO 8601 date or date-time") from None
    if parsed.tzinfo is None:
        raise InvalidArgument.field(field_name, "a date-time needs an offset (e.g. Z or +02:00)")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        # 0001-01-01T00:00:00+01:00 or 9999-12-31T23:00:00-02:00: valid text, no UTC instant.
        raise InvalidArgument.field(field_name, "is outside the supported range of dates") from None


def format_timestamp(value: datetime) -> str:
    """RFC 3339 in UTC with a Z, microseconds only when present, the year in four digits.

    ``isoformat`` rather than ``strftime``: it pads years below 1000 (``%Y`` does not on
    glibc) and costs a third as much (three per resource in every response).
    """
    return value.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


def check_range(start: datetime | None, end: datetime | None, start_field: str, end_field: str) -> None:
    if start is not None and end is not None and end < start:
        raise InvalidArgument(
            f"{end_field} must not be before {start_field}",
            violations=[FieldViolation(end_field, f"is before {start_field}")],
        )


# --- requests ------------------------------------------------------------------------------


def validate_tenant(business_id: str, location_id: str, prefix: str = "") -> None:
    require_id(f"{prefix}business_id", business_id, business=True)
    require_id(f"{prefix}location_id", location_id)


def validate_new(
    *,
    business_id: str,
    location_id: str,
    resource_name: str,
    business_type: str,
    resource_id: str,
    data: Mapping[str, Any],
    start_date: str,
    end_date: str,
    request_id: str,
    max_bytes: int,
    max_depth: int,
) -> tuple[NewResource, bool]:
    """A CreateResource after validation, and whether the id still has to be generated.

    The checks that need the business type; the ids were shape-checked (``validate_tenant``,
    ``require_known_name``) before authorisation, which this follows.
    """
    require_resource_name(business_type, resource_name, "resource.resource_name")
    generate = not resource_id
    if not generate:
        require_id("resource_id", resource_id)
    check_document("resource.data", data, max_bytes=max_bytes, max_depth=max_depth)
    start = parse_date("resource.start_date", start_date)
    end = parse_date("resource.end_date", end_date)
    check_range(start, end, "resource.start_date", "resource.end_date")
    new = NewResource(
        key=ResourceKey(business_id, location_id, resource_name, resource_id),
        business_type=business_type.lower(),
        data=dict(data),
        start_date=start,
        end_date=end,
        request_id=optional_request_id(request_id),
    )
    return new, generate


def validate_batch_shape(business_id: str, keys: Sequence[ResourceKey]) -> None:
    """A BatchGet's ids and names, before authorisation: 1-100 keys, every id well formed,
    every name one some business type has."""
    require_id("business_id", business_id, business=True)
    if not keys:
        raise InvalidArgument.field("keys", "at least one key is required")
    if len(keys) > MAX_BATCH_KEYS:
        raise InvalidArgument.field("keys", f"at most {MAX_BATCH_KEYS} keys per call, got {len(keys)}")
    for index, key in enumerate(keys):
        require_id(f"keys[{index}].location_id", key.location_id)
        require_known_name(key.resource_name, f"keys[{index}].resource_name")
        require_id(f"keys[{index}].resource_id", key.resource_id)


def validate_batch_names(business_type: str, keys: Sequence[ResourceKey]) -> None:
    """After authorisation: every key's name is in the business type's catalog."""
    for index, key in enumerate(keys):
        require_resource_name(business_type, key.resource_name, f"keys[{index}].resource_name")


_ORDERINGS: Final = {
    "": OrderBy.START_DATE,
    "start_date": OrderBy.START_DATE,
    "start_date asc": OrderBy.START_DATE,
    "start_date desc": OrderBy.START_DATE_DESC,
    "update_time": OrderBy.UPDATE_TIME,
    "update_time asc": OrderBy.UPDATE_TIME,
    "update_time desc": OrderBy.UPDATE_TIME_DESC,
}


def validate_list(
    *,
    business_type: str,
    business_id: str,
    location_id: str,
    resource_name: str,
    start_from: str,
    start_to: str,
    data_contains: Mapping[str, Any] | None,
    order_by: str,
    page_size: int,
    max_bytes: int,
    max_depth: int,
) -> ListQuery:
    # Ids were shape-checked before authorisation (validate_tenant, require_known_name).
    require_resource_name(business_type, resource_name)
    lower = parse_date("start_from", start_from)
    upper = parse_date("start_to", start_to)
    check_range(lower, upper, "start_from", "start_to")
    contains = dict(data_contains) if data_contains else None
    if contains is not None:
        check_document("data_contains", contains, max_bytes=max_bytes, max_depth=max_depth)
        _check_filter_keys(contains)
    ordering = _ORDERINGS.get(" ".join(order_by.lower().split()))
    if ordering is None:
        raise InvalidArgument.field(
            "order_by", 'must be "start_date", "start_date desc", "update_time" or "update_time desc"'
        )
    if page_size < 0:
        raise InvalidArgument.field("page_size", "must not be negative")
    # AIP-158: 0 means the default; above the maximum is coerced to it.
    size = DEFAULT_PAGE_SIZE if page_size == 0 else min(page_size, MAX_PAGE_SIZE)
    return ListQuery(business_id, location_id, resource_name, lower, upper, contains, ordering, size)


def validate_update(
    *,
    paths: Sequence[str],
    data: Mapping[str, Any],
    start_date: str,
    end_date: str,
    etag: str,
    max_bytes: int,
    max_depth: int,
) -> UpdatePlan:
    """An update_mask turned into a plan; unknown, malformed, duplicate or overlapping paths are rejected."""
    mask = list(paths) or ["data"]
    check_document("resource.data", data, max_bytes=max_bytes, max_depth=max_depth)
    replace: dict[str, Any] | None = None
    sets: list[tuple[tuple[str, ...], Any]] = []
    removes: list[tuple[str, ...]] = []
    start: datetime | Unset | None = UNSET
    end: datetime | Unset | None = UNSET
    seen: list[tuple[str, ...]] = []
    for index, path in enumerate(mask):
        where = f"update_mask.paths[{index}]"
        if path == "start_date":
            start = parse_date("resource.start_date", start_date)
            parts: tuple[str, ...] = ("start_date",)
        elif path == "end_date":
            end = parse_date("resource.end_date", end_date)
            parts = ("end_date",)
        elif path == "data":
            replace = dict(data)
            parts = ("data",)
        elif path.startswith("data."):
            keys = tuple(path.split(".")[1:])
            if not all(MASK_KEY_PATTERN.fullmatch(key) for key in keys):
                raise InvalidArgument.field(
                    where, "keys in a data path must be 1-64 characters of [A-Za-z0-9_]"
                )
            if len(keys) >= max_depth:
                raise InvalidArgument.field(where, f"is deeper than {max_depth} levels")
            found, value = _lookup(data, keys)
            if found:
                sets.append((keys, value))
            else:
                removes.append(keys)
            parts = ("data", *keys)
        else:
            shown = path if len(path) <= 64 and path.isprintable() else "this path"
            raise InvalidArgument.field(
                where, f"{shown} is not updatable; use data, data.<key>[.<key>...], start_date or end_date"
            )
        for other in seen:
            shorter = min(len(other), len(parts))
            if other[:shorter] == parts[:shorter]:
                raise InvalidArgument.field(where, "duplicates or overlaps another path of the mask")
        seen.append(parts)
    if not isinstance(start, Unset) and not isinstance(end, Unset):
        check_range(start, end, "resource.start_date", "resource.end_date")
    return UpdatePlan(
        replace_data=replace,
        set_paths=tuple(sets),
        remove_paths=tuple(removes),
        start_date=start,
        end_date=end,
        expected_version=expected_version(etag),
        paths=tuple(mask),
    )


def _check_filter_keys(contains: Mapping[str, Any]) -> None:
    """Filter keys name fields: the id character set only (they are parameters anyway, never SQL)."""
    stack: list[Any] = [contains]
    while stack:
        value = stack.pop()
        if isinstance(value, Mapping):
            for key, child in value.items():
                if not ID_PATTERN.fullmatch(key):
                    raise InvalidArgument.field(
                        "data_contains", "keys must be 1-64 characters of [A-Za-z0-9_.:-]"
                    )
                stack.append(child)
        elif isinstance(value, list):
            stack.extend(value)


def _lookup(data: Mapping[str, Any], keys: Iterable[str]) -> tuple[bool, Any]:
    current: Any = data
    for key in keys:
        if not isinstance(current, Mapping) or key not in current:
            return False, None
        current = current[key]
    return True, current
