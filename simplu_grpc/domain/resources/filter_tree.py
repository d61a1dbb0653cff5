"""The ListResources filter's typed tree, its bounds, and the catalog of filterable fields
(``catalog_fields.json``); the grammar and meaning are in ``filter_parser``."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from functools import cache
from importlib import resources as package_files
from typing import Final

FIELD: Final = "filter"
MAX_FILTER_LENGTH: Final = 2048
MAX_DEPTH: Final = 12
MAX_TERMS: Final = 32
MAX_LITERAL_LENGTH: Final = 256
MAX_PATH_KEYS: Final = 8
# Shortest search text. Below 3 characters a trigram index cannot narrow the search: such a
# search reads the tenant's rows of the type (still bounded by the tenant index).
MIN_SEARCH_LENGTH: Final = 1

KEY_PATTERN: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
TIME_COLUMNS: Final = frozenset({"create_time", "update_time", "start_time", "end_time"})
COLUMNS: Final = TIME_COLUMNS | {"resource_id"}
NULLABLE_COLUMNS: Final = frozenset({"start_time", "end_time"})

Scalar = str | int | float | bool | None


class Op(Enum):
    EQ = "="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="


# --- the tree ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DataField:
    """A key path inside ``data`` (keys are identifiers, so the path never indexes arrays)."""

    path: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Column:
    """One of the resource's own fields: resource_id or a time."""

    name: str


Field = DataField | Column
Value = Scalar | datetime


@dataclass(frozen=True, slots=True)
class Compare:
    field: Field
    op: Op
    value: Value


@dataclass(frozen=True, slots=True)
class Has:
    """``field:value``; ``value`` None with ``present`` True is ``field:*``."""

    field: Field
    value: Value
    present: bool = False


@dataclass(frozen=True, slots=True)
class Search:
    """A bare text term: partial match on any of ``fields`` (the type's searchable fields)."""

    text: str
    fields: tuple[tuple[str, ...], ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: Node


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Node, ...]


Node = Compare | Has | Search | Not | And | Or


# --- the catalog of fields -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldInfo:
    path: tuple[str, ...]
    type: str
    searchable: bool


@cache
def catalog_fields() -> dict[str, tuple[FieldInfo, ...]]:
    """Per resource type, its described data fields (catalog_fields.json, package data)."""
    raw = json.loads(
        package_files.files("simplu_grpc.domain.resources").joinpath("catalog_fields.json").read_text("utf-8")
    )
    described: dict[str, tuple[FieldInfo, ...]] = {}
    for resource_type, fields in raw.items():
        if resource_type.startswith("_"):
            continue
        described[resource_type] = tuple(
            FieldInfo(tuple(name.split(".")), spec["type"], bool(spec.get("searchable", False)))
            for name, spec in fields.items()
        )
    return described


def searchable_fields(resource_type: str) -> tuple[tuple[str, ...], ...]:
    return tuple(f.path for f in catalog_fields().get(resource_type, ()) if f.searchable)
