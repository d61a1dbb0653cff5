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
from datetime import UTC, datetime
from enum import Enum
from functools import cache
from importlib import resources as package_files
from typing import Any, Final

from simplu_grpc.domain import resource_filter
from simplu_grpc.domain.checks import ID_PATTERN, Violations, check_request_id, require_id
from simplu_grpc.errors import FieldViolation, InvalidArgument

# A key in an update_mask path (data.<key>...). Struct keys may be anything, but mask paths
# name fields (AIP-161): plain keys only, which also keeps them readable in logs.
MASK_KEY_PATTERN: Final = re.compile(r"[A-Za-z0-9_]{1,64}")

DEFAULT_PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 1000
MAX_BATCH_KEYS: Final = 100
_MAX_POINTER_LENGTH: Final = 1024


# --- types ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResourceKey:
    """The four columns of a resource's primary key."""

    business_id: str
    location_id: str
    resource_type: str
    resource_id: str


@dataclass(frozen=True, slots=True)
class NewResource:
    """A validated create: the id is either the client's or a generated one."""

    key: ResourceKey
    business_type: str
    data: dict[str, Any]
    start_time: datetime | None
    end_time: datetime | None
    request_id: str | None = None
    # Whose request id it is (the caller's subject): a request id names one caller's request,
    # so another caller's same id never replays this one's result (AIP-155).
    requester: str = ""


@dataclass(frozen=True, slots=True)
class StoredResource:
    """A resource as a shard returns it."""

    key: ResourceKey
    business_type: str
    data: dict[str, Any]
    start_time: datetime | None
    end_time: datetime | None
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


@dataclass(frozen=True, slots=True)
class TimeRange:
    """A half-open interval [start, end); either bound may be open (None)."""

    start: datetime | None = None
    end: datetime | None = None

    @property
    def is_open(self) -> bool:
        return self.start is None and self.end is None

    def binding(self) -> list[str | None]:
        return [format_timestamp(v) if v else None for v in (self.start, self.end)]


OPEN_RANGE: Final = TimeRange()


class OrderBy(Enum):
    """The time orderings ListResources had before data fields could be sorted on; their page
    tokens stay valid (the binding names them as before)."""

    START_TIME = ("start_time", False)
    START_TIME_DESC = ("start_time", True)
    UPDATE_TIME = ("update_time", False)
    UPDATE_TIME_DESC = ("update_time", True)

    @property
    def column(self) -> str:
        return self.value[0]

    @property
    def descending(self) -> bool:
        return self.value[1]


@dataclass(frozen=True, slots=True)
class SortKey:
    """One key of an order_by: a time column (``field``) or a data path, and a direction."""

    field: str
    descending: bool = False
    data_path: tuple[str, ...] = ()

    @property
    def is_data(self) -> bool:
        return bool(self.data_path)

    def text(self) -> str:
        return self.field + (" desc" if self.descending else "")


@dataclass(frozen=True, slots=True)
class ListQuery:
    """A validated ListResources query (the page token's position is added by the servicer)."""

    business_id: str
    location_id: str
    resource_type: str
    start_range: TimeRange
    overlaps: TimeRange
    data_contains: dict[str, Any] | None
    order_by: tuple[SortKey, ...]
    page_size: int
    filter: resource_filter.Node | None = None
    filter_key: str | None = None

    def binding(self) -> dict[str, Any]:
        """What a page token is bound to: everything but the page size (AIP-158 lets it change).
        A query without the newer parts (filter, data ordering) binds as it always did, so
        tokens issued before them stay valid."""
        binding = {
            "b": self.business_id,
            "l": self.location_id,
            "n": self.resource_type,
            "f": self.start_range.binding(),
            "v": self.overlaps.binding(),
            "c": self.data_contains,
            "o": _legacy_name(self.order_by) or ", ".join(k.text() for k in self.order_by),
        }
        if self.filter_key is not None:
            binding["q"] = self.filter_key
        return binding


def _legacy_name(keys: tuple[SortKey, ...]) -> str | None:
    for ordering in OrderBy:
        if keys == (SortKey(ordering.column, ordering.descending),):
            return ordering.name
    return None


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
    start_time: datetime | Unset | None = UNSET
    end_time: datetime | Unset | None = UNSET
    # None: unconditional; otherwise the version the row must have (see expected_version()).
    expected_version: int | None = None
    paths: tuple[str, ...] = field(default=())


# --- catalog -------------------------------------------------------------------------------


# A catalog type: lowercase words joined by "-". Never a "." or ":", so no type can take an
# administration permission string ("admin.members:update", domain.auth.permissions).
CATALOG_TYPE_PATTERN: Final = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
_CATALOG_TYPE_MAX = 64


def _is_catalog_type(name: object) -> bool:
    if not isinstance(name, str) or len(name) > _CATALOG_TYPE_MAX:
        return False
    return bool(CATALOG_TYPE_PATTERN.fullmatch(name))


def parse_catalog(raw: Mapping[str, Any]) -> dict[str, frozenset[str]]:
    """Resource types per business type from catalog.json's shape; "common" merged into each.

    Keys starting with "_" are comments. A malformed name is a packaging error: ValueError.
    """
    lists = {key: value for key, value in raw.items() if not key.startswith("_")}
    for key, names in lists.items():
        bad = [name for name in names if not _is_catalog_type(name)]
        if bad:
            raise ValueError(f"catalog {key!r}: {bad!r} are not lowercase words joined by '-'")
    common = frozenset(lists.get("common", ()))
    return {
        business_type: frozenset(names) | common
        for business_type, names in lists.items()
        if business_type != "common"
    }


@cache
def raw_catalog() -> Mapping[str, Any]:
    """catalog.json as written (package data)."""
    loaded: Mapping[str, Any] = json.loads(
        package_files.files("simplu_grpc.domain").joinpath("catalog.json").read_text("utf-8")
    )
    return loaded


@cache
def catalog() -> dict[str, frozenset[str]]:
    """Resource types per business type (catalog.json, package data); "common" merged into each."""
    return parse_catalog(raw_catalog())


@cache
def common_types() -> frozenset[str]:
    """The types every business type has."""
    return frozenset(raw_catalog().get("common", ()))


def catalog_types(business_type: str) -> frozenset[str]:
    """The resource types of one business type (empty for a type the catalog does not know)."""
    return catalog().get(business_type.lower(), frozenset())


# Every name of every business type, computed once: the shape check before authorisation.
KNOWN_RESOURCE_TYPES: Final[frozenset[str]] = frozenset().union(*catalog().values())


def _shown_type(resource_type: str) -> str:
    return resource_type if ID_PATTERN.fullmatch(resource_type) else "the given name"


def require_known_type(resource_type: str, field_name: str = "resource_type") -> str:
    """The name if SOME business type has it; checked before the business is looked up, so it
    leaks nothing about the business (its own catalog is checked after authorisation)."""
    if not resource_type:
        raise InvalidArgument.field(field_name, "is required")
    if resource_type not in KNOWN_RESOURCE_TYPES:
        raise InvalidArgument.field(
            field_name, f"{_shown_type(resource_type)} is not a resource type of any business type"
        )
    return resource_type


def require_resource_type(business_type: str, resource_type: str, field_name: str = "resource_type") -> str:
    """The name if the business type's catalog has it; INVALID_ARGUMENT otherwise."""
    if not resource_type:
        raise InvalidArgument.field(field_name, "is required")
    if resource_type not in catalog_types(business_type):
        raise InvalidArgument.field(
            field_name,
            f"{_shown_type(resource_type)} is not a resource of a {business_type.lower()} business",
        )
    return resource_type


# --- ids -----------------------------------------------------------------------------------


def optional_request_id(value: str) -> str | None:
    v = Violations()
    check_request_id(v, "request_id", value)
    v.raise_if_any()
    return value or None


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


# --- times ---------------------------------------------------------------------------------


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


def check_interval(field_name: str, interval: TimeRange) -> TimeRange:
    """An interval filter whose end is not before its start."""
    check_range(interval.start, interval.end, f"{field_name}.start_time", f"{field_name}.end_time")
    return interval


# --- requests ------------------------------------------------------------------------------


def validate_tenant(business_id: str, location_id: str, prefix: str = "") -> None:
    require_id(f"{prefix}business_id", business_id, business=True)
    require_id(f"{prefix}location_id", location_id)


def validate_new(
    *,
    business_id: str,
    location_id: str,
    resource_type: str,
    business_type: str,
    resource_id: str,
    data: Mapping[str, Any],
    start_time: datetime | None,
    end_time: datetime | None,
    request_id: str,
    max_bytes: int,
    max_depth: int,
) -> tuple[NewResource, bool]:
    """A CreateResource after validation, and whether the id still has to be generated.

    The checks that need the business type; the ids were shape-checked (``validate_tenant``,
    ``require_known_type``) before authorisation, which this follows.
    """
    require_resource_type(business_type, resource_type, "resource.resource_type")
    generate = not resource_id
    if not generate:
        require_id("resource_id", resource_id)
    check_document("resource.data", data, max_bytes=max_bytes, max_depth=max_depth)
    check_range(start_time, end_time, "resource.start_time", "resource.end_time")
    new = NewResource(
        key=ResourceKey(business_id, location_id, resource_type, resource_id),
        business_type=business_type.lower(),
        data=dict(data),
        start_time=start_time,
        end_time=end_time,
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
        require_known_type(key.resource_type, f"keys[{index}].resource_type")
        require_id(f"keys[{index}].resource_id", key.resource_id)


def validate_batch_names(business_type: str, keys: Sequence[ResourceKey]) -> None:
    """After authorisation: every key's name is in the business type's catalog."""
    for index, key in enumerate(keys):
        require_resource_type(business_type, key.resource_type, f"keys[{index}].resource_type")


MAX_SORT_KEYS: Final = 3
SORT_COLUMNS: Final = ("start_time", "end_time", "update_time", "create_time")
_ORDER_HELP: Final = (
    'is a comma-separated list of up to 3 keys, each "start_time", "end_time", "update_time", '
    '"create_time" or "data.<key>[.<key>...]", optionally followed by "asc" or "desc"'
)


def parse_order_by(order_by: str) -> tuple[SortKey, ...]:
    """``"data.last_name desc, start_time"`` as sort keys; "" is start_time ascending."""
    if not order_by.strip():
        return (SortKey("start_time"),)
    if len(order_by) > 512:
        raise InvalidArgument.field("order_by", _ORDER_HELP)
    keys: list[SortKey] = []
    for part in order_by.split(","):
        words = part.split()
        if not 1 <= len(words) <= 2 or (len(words) == 2 and words[1].lower() not in ("asc", "desc")):
            raise InvalidArgument.field("order_by", _ORDER_HELP)
        name = words[0]
        descending = len(words) == 2 and words[1].lower() == "desc"
        if name.lower() in SORT_COLUMNS:
            keys.append(SortKey(name.lower(), descending))
        elif name.startswith("data."):
            path = tuple(name.split(".")[1:])
            if len(path) > 8 or not all(MASK_KEY_PATTERN.fullmatch(k) for k in path):
                raise InvalidArgument.field(
                    "order_by", "a data key path has at most 8 keys of 1-64 characters of [A-Za-z0-9_]"
                )
            keys.append(SortKey(name, descending, path))
        else:
            raise InvalidArgument.field("order_by", _ORDER_HELP)
    if len(keys) > MAX_SORT_KEYS:
        raise InvalidArgument.field("order_by", _ORDER_HELP)
    if len({k.field for k in keys}) != len(keys):
        raise InvalidArgument.field("order_by", "names a key twice")
    return tuple(keys)


def validate_list(
    *,
    business_type: str,
    business_id: str,
    location_id: str,
    resource_type: str,
    start_range: TimeRange,
    overlaps: TimeRange,
    data_contains: Mapping[str, Any] | None,
    order_by: str,
    page_size: int,
    max_bytes: int,
    max_depth: int,
    filter_text: str = "",
) -> ListQuery:
    # Ids were shape-checked before authorisation (validate_tenant, require_known_type).
    require_resource_type(business_type, resource_type)
    check_interval("start_time_range", start_range)
    check_interval("overlaps", overlaps)
    contains = dict(data_contains) if data_contains else None
    if contains is not None:
        check_document("data_contains", contains, max_bytes=max_bytes, max_depth=max_depth)
        _check_filter_keys(contains)
    ordering = parse_order_by(order_by)
    tree = resource_filter.parse(filter_text, resource_type)
    if page_size < 0:
        raise InvalidArgument.field("page_size", "must not be negative")
    # AIP-158: 0 means the default; above the maximum is coerced to it.
    size = DEFAULT_PAGE_SIZE if page_size == 0 else min(page_size, MAX_PAGE_SIZE)
    return ListQuery(
        business_id,
        location_id,
        resource_type,
        start_range,
        overlaps,
        contains,
        ordering,
        size,
        filter=tree,
        filter_key=resource_filter.canonical(tree),
    )


@dataclass(frozen=True, slots=True)
class UpdateRequest:
    """What an UpdateResource carries besides the key: the masks and the populated values.

    ``start_time``/``end_time`` are None when unset; ``*_set`` tell unset from cleared apart
    only for the empty-mask rule (AIP-134: update the populated fields).
    """

    paths: Sequence[str]
    data_paths: Sequence[str]
    data: Mapping[str, Any]
    start_time: datetime | None
    end_time: datetime | None
    etag: str


def validate_update(request: UpdateRequest, *, max_bytes: int, max_depth: int) -> UpdatePlan:
    """The masks turned into a plan; unknown, malformed, duplicate or overlapping paths are
    rejected, and an empty mask never empties the document (AIP-134)."""
    data = request.data
    check_document("resource.data", data, max_bytes=max_bytes, max_depth=max_depth)
    # (field of the violation, path as given, parsed parts)
    targets: list[tuple[str, str, tuple[str, ...]]] = []
    for index, path in enumerate(request.paths):
        targets.append((f"update_mask.paths[{index}]", path, _mask_path(f"update_mask.paths[{index}]", path)))
    for index, pointer in enumerate(request.data_paths):
        where = f"data_paths[{index}]"
        targets.append((where, pointer, ("data", *_json_pointer(where, pointer))))
    if not targets:
        targets = _populated(request)
    replace: dict[str, Any] | None = None
    sets: list[tuple[tuple[str, ...], Any]] = []
    removes: list[tuple[str, ...]] = []
    start: datetime | Unset | None = UNSET
    end: datetime | Unset | None = UNSET
    seen: list[tuple[str, ...]] = []
    for where, _, parts in targets:
        for other in seen:
            shorter = min(len(other), len(parts))
            if other[:shorter] == parts[:shorter]:
                raise InvalidArgument.field(where, "duplicates or overlaps another path of the mask")
        seen.append(parts)
        if parts == ("start_time",):
            start = request.start_time
        elif parts == ("end_time",):
            end = request.end_time
        elif parts == ("data",):
            replace = dict(data)
        else:
            keys = parts[1:]
            if len(keys) >= max_depth:
                raise InvalidArgument.field(where, f"is deeper than {max_depth} levels")
            found, value = _lookup(data, keys)
            if found:
                sets.append((keys, value))
            else:
                removes.append(keys)
    if not isinstance(start, Unset) and not isinstance(end, Unset):
        check_range(start, end, "resource.start_time", "resource.end_time")
    return UpdatePlan(
        replace_data=replace,
        set_paths=tuple(sets),
        remove_paths=tuple(removes),
        start_time=start,
        end_time=end,
        expected_version=expected_version(request.etag),
        paths=tuple(path for _, path, _ in targets),
    )


def _mask_path(where: str, path: str) -> tuple[str, ...]:
    """An update_mask path as parts: ("data",), ("data", key, ...), ("start_time",), ("end_time",)."""
    if path in ("data", "start_time", "end_time"):
        return (path,)
    if path.startswith("data."):
        keys = tuple(path.split(".")[1:])
        if not all(MASK_KEY_PATTERN.fullmatch(key) for key in keys):
            raise InvalidArgument.field(
                where,
                "keys in a data path must be 1-64 characters of [A-Za-z0-9_]; name other keys in data_paths",
            )
        return ("data", *keys)
    shown = path if len(path) <= 64 and path.isprintable() else "this path"
    raise InvalidArgument.field(
        where, f"{shown} is not updatable; use data, data.<key>[.<key>...], start_time or end_time"
    )


def _json_pointer(where: str, pointer: str) -> tuple[str, ...]:
    """The keys an RFC 6901 JSON Pointer names inside data ("/contact/phoneNumber")."""
    if len(pointer) > _MAX_POINTER_LENGTH or not pointer.startswith("/"):
        raise InvalidArgument.field(
            where, 'must be a JSON Pointer into data, e.g. "/status" or "/contact/phone"'
        )
    keys = []
    for raw in pointer[1:].split("/"):
        if not raw or "\x00" in raw:
            raise InvalidArgument.field(where, "keys must be non-empty and must not contain NUL")
        if "~" in raw.replace("~0", "").replace("~1", ""):
            raise InvalidArgument.field(where, 'a "~" must be written "~0" (and "/" inside a key "~1")')
        keys.append(raw.replace("~1", "/").replace("~0", "~"))
    return tuple(keys)


def _populated(request: UpdateRequest) -> list[tuple[str, str, tuple[str, ...]]]:
    """AIP-134's empty mask: the fields the request populates. An empty document is not
    "populated", so an update without a mask can never empty the data by accident."""
    found: list[tuple[str, str, tuple[str, ...]]] = [
        ("resource." + name, name, (name,))
        for name, present in (
            ("data", bool(request.data)),
            ("start_time", request.start_time is not None),
            ("end_time", request.end_time is not None),
        )
        if present
    ]
    if not found:
        raise InvalidArgument.field(
            "update_mask",
            "nothing to update: set update_mask (e.g. data.status), data_paths, or populate "
            "resource.data, start_time or end_time",
        )
    return found


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
