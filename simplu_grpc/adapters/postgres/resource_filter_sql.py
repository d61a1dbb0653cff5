"""ListResources filters and orderings as SQL: fixed fragments chosen by the tree's node types,
every value (literals, data key paths, search patterns, page positions) a bound parameter.

The tree (``domain.resources.filter_tree``) is pushed to negation normal form while compiling: a
positive atom is emitted as an index-friendly condition whose SQL NULL means "no match"
(``data @> %(f0)s`` uses the jsonb_path_ops index, ``data #>> %(f1)s ILIKE %(f2)s`` a trigram
index), a negated atom as ``(atom) IS NOT TRUE``. WHERE treats NULL as false, and with NOT
only ever around a whole atom, the SQL accepts exactly what ``filter_eval.evaluate``
accepts.

Data ordering: the sort value of ``data.<path>`` is ``COALESCE(data #> path, 'null')`` -- a
missing key sorts as JSON null -- in jsonb's own order: null < strings (database collation)
< numbers < booleans < arrays < objects (and, a jsonb quirk, an empty array before null).
Every key is followed by resource_id, so the order is total and keyset paging exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from psycopg.types.json import Jsonb

from simplu_grpc.domain.resources.filter_tree import (
    COLUMNS,
    NULLABLE_COLUMNS,
    And,
    Column,
    Compare,
    Has,
    Node,
    Not,
    Op,
    Or,
    Search,
)
from simplu_grpc.domain.resources.model import SortKey
from simplu_grpc.domain.resources.page_tokens import Position

_COMPARISON: Final = {Op.LT: "<", Op.LE: "<=", Op.GT: ">", Op.GE: ">=", Op.EQ: "=", Op.NE: "<>"}
# The time columns as sort keys: a missing start/end time sorts last ('infinity'), so the
# keyset comparison never meets NULL; start_time's expression is the index's.
_TIME_SORT: Final = {
    "start_time": "COALESCE(start_time, 'infinity'::timestamptz)",
    "end_time": "COALESCE(end_time, 'infinity'::timestamptz)",
    "update_time": "update_time",
    "create_time": "create_time",
}


@dataclass
class Compiled:
    """SQL text built from fixed fragments, and the parameters it names."""

    params: dict[str, Any] = field(default_factory=dict)
    _count: int = 0

    def bind(self, value: Any) -> str:
        name = f"f{self._count}"
        self._count += 1
        self.params[name] = value
        return f"%({name})s"


def compile_filter(node: Node, out: Compiled) -> str:
    """The WHERE condition for ``node`` (parameters added to ``out``)."""
    return _node(node, out, negated=False)


def _node(node: Node, out: Compiled, *, negated: bool) -> str:
    if isinstance(node, Not):
        return _node(node.item, out, negated=not negated)
    if isinstance(node, And | Or):
        joiner = " AND " if isinstance(node, And) != negated else " OR "
        return "(" + joiner.join(_node(i, out, negated=negated) for i in node.items) + ")"
    atom = _atom(node, out)
    return f"(({atom}) IS NOT TRUE)" if negated else f"({atom})"


def _atom(node: Compare | Has | Search, out: Compiled) -> str:
    if isinstance(node, Search):
        pattern = out.bind(_like_pattern(node.text))
        return " OR ".join(_text_match(path, pattern, out) for path in node.fields)
    if isinstance(node.field, Column):
        return _column(node, node.field.name, out)
    path = list(node.field.path)
    if isinstance(node, Has):
        return _has(node, path, out)
    if node.op in (Op.EQ, Op.NE):
        equal = _equal(path, node.value, out)
        # != is the complement of = (missing keys included): NOT around a never-NULL atom.
        return equal if node.op is Op.EQ else f"NOT ({equal})"
    value = out.bind(path)
    if isinstance(node.value, str):
        return (
            f"jsonb_typeof(data #> {value}::text[]) = 'string'"
            f' AND (data #>> {value}::text[]) COLLATE "C" {_COMPARISON[node.op]} {out.bind(node.value)}::text'
        )
    return (
        f"jsonb_typeof(data #> {value}::text[]) = 'number'"
        f" AND (data #> {value}::text[]) {_COMPARISON[node.op]} {out.bind(Jsonb(node.value))}::jsonb"
    )


def _equal(path: list[str], value: Any, out: Compiled) -> str:
    """Never NULL: containment from the document's root (the GIN index), or null-or-missing."""
    if value is None:
        return f"COALESCE((data #> {out.bind(path)}::text[]) = 'null'::jsonb, true)"
    return f"data @> {out.bind(Jsonb(_nest(path, value)))}::jsonb"


def _has(node: Has, path: list[str], out: Compiled) -> str:
    if node.present:
        return f"jsonb_typeof(data #> {out.bind(path)}::text[]) <> 'null'"
    # An array holding the literal: containment of a one-element array, from the root.
    element = f"data @> {out.bind(Jsonb(_nest(path, [node.value])))}::jsonb"
    if isinstance(node.value, str):
        pattern = out.bind(_like_pattern(node.value))
        return f"({_text_match(tuple(path), pattern, out)}) OR {element}"
    return f"{_equal(path, node.value, out)} OR {element}"


def _text_match(path: Sequence[str], pattern: str, out: Compiled) -> str:
    # The expression (data #>> path) is the trigram indexes' (migrations/0005_queries.sql).
    bound = out.bind(list(path))
    return (
        f"(jsonb_typeof(data #> {bound}::text[]) = 'string' AND (data #>> {bound}::text[]) ILIKE {pattern})"
    )


def _column(node: Compare | Has, name: str, out: Compiled) -> str:
    # ``name`` is one of filter_tree.COLUMNS: a fixed identifier, checked by the parser.
    if name not in COLUMNS:
        raise ValueError(f"not a filterable column: {name!r}")
    if isinstance(node, Has):
        if node.present:
            return f"{name} IS NOT NULL"
        return f"{name} ILIKE {out.bind(_like_pattern(str(node.value)))}"
    if node.value is None:
        return f"{name} IS NULL" if node.op is Op.EQ else f"{name} IS NOT NULL"
    if node.op is Op.NE:
        # Complement of =: an unset start/end time differs from every instant.
        return f"({name} = {_typed(name, node.value, out)}) IS NOT TRUE"
    if name in NULLABLE_COLUMNS and node.op is not Op.EQ:
        # The shape of the (tenant, COALESCE(time, infinity), id) indexes, so a range is an
        # index range: below an instant the COALESCE changes nothing; above it, an unset
        # time (infinity) is excluded explicitly.
        bound = f"{_TIME_SORT[name]} {_COMPARISON[node.op]} {_typed(name, node.value, out)}"
        return bound if node.op in (Op.LT, Op.LE) else f"{bound} AND {name} IS NOT NULL"
    return f"{_collated(name)} {_COMPARISON[node.op]} {_typed(name, node.value, out)}"


def _collated(name: str) -> str:
    return 'resource_id COLLATE "C"' if name == "resource_id" else name


def _typed(name: str, value: Any, out: Compiled) -> str:
    return f"{out.bind(value)}::text" if name == "resource_id" else f"{out.bind(value)}::timestamptz"


def _nest(path: Sequence[str], value: Any) -> Any:
    for key in reversed(path):
        value = {key: value}
    return value


def _like_pattern(text: str) -> str:
    """A partial match: the text with ILIKE's wildcards escaped, between two %."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# --- ordering and keyset ------------------------------------------------------------------


def sort_expression(key: SortKey, out: Compiled) -> str:
    if key.is_data:
        return f"COALESCE(data #> {out.bind(list(key.data_path))}::text[], 'null'::jsonb)"
    return _TIME_SORT[key.field]


def order_clause(keys: Sequence[SortKey], expressions: Sequence[str]) -> str:
    parts = [f"{e} {'DESC' if k.descending else 'ASC'}" for k, e in zip(keys, expressions, strict=True)]
    return ", ".join([*parts, f"resource_id {_id_direction(keys)}"])


def _id_direction(keys: Sequence[SortKey]) -> str:
    # The tie-breaker follows the last key's direction (one direction throughout for the
    # single-key orderings, whose index is (key, resource_id)).
    return "DESC" if keys[-1].descending else "ASC"


def after_condition(
    keys: Sequence[SortKey], expressions: Sequence[str], after: Position, out: Compiled
) -> str:
    """Rows strictly after ``after`` in the ordering."""
    bound = [_position_value(k, v, out) for k, v in zip(keys, after.sort_values, strict=True)]
    row_id = out.bind(after.resource_id)
    directions = {k.descending for k in keys} | {_id_direction(keys) == "DESC"}
    if len(directions) == 1:
        # One direction: a row comparison, which the (key, resource_id) indexes serve.
        comparison = "<" if keys[0].descending else ">"
        return f"({', '.join(expressions)}, resource_id) {comparison} ({', '.join(bound)}, {row_id})"
    # Mixed directions: k1 beyond, or k1 equal and (k2 beyond, or ...), ending with the id.
    condition = f"resource_id {'<' if _id_direction(keys) == 'DESC' else '>'} {row_id}"
    for key, expression, value in reversed(list(zip(keys, expressions, bound, strict=True))):
        beyond = "<" if key.descending else ">"
        condition = f"({expression} {beyond} {value} OR ({expression} = {value} AND {condition}))"
    return condition


def _position_value(key: SortKey, value: Any, out: Compiled) -> str:
    if key.is_data:
        return f"{out.bind(value)}::jsonb"
    return f"{out.bind('infinity' if value is None else value)}::timestamptz"
