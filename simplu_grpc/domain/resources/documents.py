"""Checks of resource documents (size, depth, text) and of times and time ranges."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from simplu_grpc.domain.resources.model import TimeRange
from simplu_grpc.errors import FieldViolation, InvalidArgument

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
