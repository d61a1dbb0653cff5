"""The filter tree's canonical form (page-token binding) and its reference evaluation in Python
(the SQL compiler must select exactly what ``evaluate`` selects)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from simplu_grpc.domain.resources.filter_tree import (
    And,
    Column,
    Compare,
    DataField,
    Has,
    Node,
    Not,
    Op,
    Or,
    Search,
)

# --- canonical form and reference evaluation -----------------------------------------------


def canonical(node: Node | None) -> str | None:
    """A stable text of the tree (what a page token is bound to: same meaning, same token)."""
    if node is None:
        return None
    return json.dumps(_plain(node), separators=(",", ":"), sort_keys=True, default=str)


def _plain(node: Node) -> Any:
    if isinstance(node, And):
        return ["and", [_plain(i) for i in node.items]]
    if isinstance(node, Or):
        return ["or", [_plain(i) for i in node.items]]
    if isinstance(node, Not):
        return ["not", _plain(node.item)]
    if isinstance(node, Search):
        return ["search", node.text]
    field = list(node.field.path) if isinstance(node.field, DataField) else node.field.name
    value = node.value.isoformat() if isinstance(node.value, datetime) else node.value
    if isinstance(node, Has):
        return ["has", field, value, node.present]
    return ["cmp", field, node.op.value, value, type(value).__name__]


# What lookup() returns for a path that names nothing (a missing key, or a non-object on the way).
MISSING: Final = object()


def lookup(data: Mapping[str, Any], path: Sequence[str]) -> Any:
    """The value at a key path, or MISSING (through objects only, like jsonb's #> with keys)."""
    current: Any = data
    for key in path:
        if not isinstance(current, Mapping) or key not in current:
            return MISSING
        current = current[key]
    return current


def evaluate(node: Node, columns: Mapping[str, Any], data: Mapping[str, Any]) -> bool:
    """The filter's meaning in Python: the reference the SQL compiler is tested against.
    ``columns`` has resource_id and the four times (None when unset)."""
    if isinstance(node, And):
        return all(evaluate(i, columns, data) for i in node.items)
    if isinstance(node, Or):
        return any(evaluate(i, columns, data) for i in node.items)
    if isinstance(node, Not):
        return not evaluate(node.item, columns, data)
    if isinstance(node, Search):
        return any(_contains_text(lookup(data, path), node.text) for path in node.fields)
    if isinstance(node.field, Column):
        return _column_matches(node, columns[node.field.name])
    found = lookup(data, node.field.path)
    if isinstance(node, Has):
        if node.present:
            return found is not MISSING and found is not None
        if isinstance(node.value, str) and _contains_text(found, node.value):
            return True
        if isinstance(found, list):
            return any(_json_equal(element, node.value) for element in found)
        return _json_equal(found, node.value)
    if node.op in (Op.EQ, Op.NE):
        equal = (found is MISSING or found is None) if node.value is None else _json_equal(found, node.value)
        return equal if node.op is Op.EQ else not equal
    return _ordered(found, node.op, node.value)


def _contains_text(found: Any, text: str) -> bool:
    return isinstance(found, str) and text.lower() in found.lower()


def _json_equal(found: Any, value: Any) -> bool:
    if found is MISSING:
        return False
    if isinstance(value, bool) or isinstance(found, bool):
        return isinstance(value, bool) and isinstance(found, bool) and found == value
    if isinstance(value, int | float):
        return isinstance(found, int | float) and found == value
    if value is None:
        return found is None
    return isinstance(found, str) and found == value


def _ordered(found: Any, op: Op, value: Any) -> bool:
    if isinstance(value, int | float):
        if isinstance(found, bool) or not isinstance(found, int | float):
            return False
    elif not isinstance(found, str):
        return False
    return _apply(op, found, value)


def _apply(op: Op, left: Any, right: Any) -> bool:
    if op is Op.EQ:
        return bool(left == right)
    if op is Op.NE:
        return bool(left != right)
    if op is Op.LT:
        return bool(left < right)
    if op is Op.LE:
        return bool(left <= right)
    if op is Op.GT:
        return bool(left > right)
    return bool(left >= right)


def _column_matches(node: Compare | Has, value: Any) -> bool:
    if isinstance(node, Has):
        if node.present:
            return value is not None
        return isinstance(value, str) and str(node.value).lower() in value.lower()
    if node.value is None:
        equal = value is None
        return equal if node.op is Op.EQ else not equal
    if value is None:
        return node.op is Op.NE
    return _apply(node.op, value, node.value)
