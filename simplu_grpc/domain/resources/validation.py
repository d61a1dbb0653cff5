"""Resources: the validation of every ResourceService input (the types are in ``model``).

Nothing here knows protobuf or SQL. The servicer turns requests into plain values
(``Struct`` -> dict, ``FieldMask`` -> list of paths) and calls these validators; each bad
input raises ``InvalidArgument`` with a BadRequest field violation naming the field. What
passes is safe to hand to the shard store: ids match a fixed character set, resource
names come from the catalog (package data), documents are bounded in size and depth,
dates are aware datetimes, and update paths are lists of plain keys (used only as query
parameters, never spliced into SQL).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from simplu_grpc.domain.paging import STANDARD
from simplu_grpc.domain.resources.catalog import require_known_type, require_resource_type
from simplu_grpc.domain.resources.documents import check_document, check_interval, check_range
from simplu_grpc.domain.resources.filter_eval import canonical
from simplu_grpc.domain.resources.filter_parser import parse
from simplu_grpc.domain.resources.ids import ID_PATTERN, optional_request_id, require_id
from simplu_grpc.domain.resources.model import (
    UNSET,
    ListQuery,
    NewResource,
    ResourceKey,
    SortKey,
    TimeRange,
    Unset,
    UpdatePlan,
    expected_version,
)
from simplu_grpc.errors import InvalidArgument

# A key in an update_mask path (data.<key>...). Struct keys may be anything, but mask paths
# name fields (AIP-161): plain keys only, which also keeps them readable in logs.
MASK_KEY_PATTERN: Final = re.compile(r"[A-Za-z0-9_]{1,64}")

MAX_BATCH_KEYS: Final = 100
_MAX_POINTER_LENGTH: Final = 1024


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
    tree = parse(filter_text, resource_type)
    size = STANDARD.resolve(page_size)
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
        filter_key=canonical(tree),
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
