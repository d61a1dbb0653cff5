"""The resource catalog: which resource types each business type has (``catalog.json``)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import cache
from importlib import resources as package_files
from typing import Any, Final

from simplu_grpc.domain.resources.ids import ID_PATTERN
from simplu_grpc.errors import InvalidArgument

# --- catalog -------------------------------------------------------------------------------


# A catalog type: lowercase words joined by "-". Never a "." or ":", so no type can take an
# administration permission string ("admin.members:update", domain.permissions).
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
        package_files.files("simplu_grpc.domain.resources").joinpath("catalog.json").read_text("utf-8")
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
