"""ListResources ``filter`` (AIP-160) parsed into a typed tree; pure Python, no SQL, no I/O.

Grammar (AIP-160's subset that fits resources; keywords upper case, as in the AIP)::

    filter      := [expression]
    expression  := sequence ("AND" sequence)*
    sequence    := factor factor*                 -- juxtaposition is AND
    factor      := term ("OR" term)*              -- OR binds tighter than AND (AIP-160)
    term        := ["NOT" | "-"] simple
    simple      := "(" expression ")" | restriction | text
    restriction := field comparator value | field ":" (value | "*")
    comparator  := "=" | "!=" | "<" | "<=" | ">" | ">="
    field       := "data." key ("." key)* | "resource_id" | "create_time" | "update_time"
                   | "start_time" | "end_time"          -- key: [A-Za-z_][A-Za-z0-9_]{0,63}
    value       := string ('...' or "..." with \\ escapes) | number | true | false | null
                   | bare word
    text        := string | bare word                    -- search of the searchable fields

Meaning (the SQL compiler and ``evaluate`` below implement exactly this):

* ``data.<path> = v``: the value at the path equals ``v`` (JSON equality; 1 = 1.0). ``= null``
  matches a JSON null or a missing key. ``!=`` is the negation of ``=``.
* ``<``, ``<=``, ``>``, ``>=`` on data: numbers with numbers, strings with strings (by code
  point, i.e. collation "C"); a value of another type, or a missing key, does not match.
  Booleans and null have no order (INVALID_ARGUMENT).
* ``data.<path>:*`` the key is present and not null. ``data.<path>:"text"`` the value is a
  string containing the text, case-insensitively (PostgreSQL ILIKE), or an array with an
  element equal to the literal. ``data.<path>:<number|bool>`` equals it or an array holds it.
* ``resource_id`` compares as text (code point order); ``:`` on it is a case-insensitive
  partial match. Time fields compare with RFC 3339 literals ("2026-01-02T09:00:00Z"); a
  missing start/end time matches only ``= null`` / ``!= <time>``; ``:*`` means "is set".
* A bare word or string alone is a text search: case-insensitive partial match on the fields
  the catalog marks searchable for the resource type (``catalog_fields.json``).

Every atom is two-valued (never SQL NULL), so ``NOT`` is always the exact complement.
Bounds (length, nesting depth, number of terms, literal and path sizes) stop hostile input
before it costs anything; every error is INVALID_ARGUMENT on the field ``filter`` with the
1-based character position where the problem is.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from functools import cache
from importlib import resources as package_files
from typing import Any, Final

from simplu_grpc.errors import FieldViolation, InvalidArgument

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
        package_files.files("simplu_grpc.domain").joinpath("catalog_fields.json").read_text("utf-8")
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


# --- errors --------------------------------------------------------------------------------


def _error(position: int, description: str) -> InvalidArgument:
    text = f"at character {position + 1}: {description}"
    return InvalidArgument(
        f"{FIELD}: {text}",
        violations=[FieldViolation(FIELD, text)],
        reason="INVALID_FILTER",
        metadata={"position": str(position + 1)},
    )


# --- tokens --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "(", ")", "op", ":", "-", "string", "word", "end"
    text: str
    position: int
    value: str = ""


_OPERATORS: Final = ("<=", ">=", "!=", "=", "<", ">")
# A bare word: what AIP-160 calls TEXT, without the characters that are syntax here.
_WORD: Final = re.compile(r"[^\s()=!<>:\"'\\;,`]+")
_KEYWORDS: Final = frozenset({"AND", "OR", "NOT"})


def _tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char.isspace():
            index += 1
        elif char in "()":
            tokens.append(_Token(char, char, index))
            index += 1
        elif char == ":":
            tokens.append(_Token(":", char, index))
            index += 1
        elif (
            char == "-"
            and index + 1 < len(text)
            and not text[index + 1].isspace()
            and (not tokens or tokens[-1].kind not in ("op", ":"))
        ):
            # A "-" that starts a term negates it; after a comparator it begins a value (-5).
            tokens.append(_Token("-", char, index))
            index += 1
        elif char in "\"'":
            tokens.append(_string(text, index))
            index = tokens[-1].position + len(tokens[-1].text)
        elif any(text.startswith(op, index) for op in _OPERATORS):
            op = next(op for op in _OPERATORS if text.startswith(op, index))
            tokens.append(_Token("op", op, index))
            index += len(op)
        else:
            match = _WORD.match(text, index)
            if match is None:
                raise _error(
                    index, f"unexpected character {char!r}" if char.isprintable() else "unexpected character"
                )
            word = match.group(0)
            tokens.append(_Token("word", word, index, word))
            index = match.end()
    tokens.append(_Token("end", "", len(text)))
    return tokens


def _string(text: str, start: int) -> _Token:
    quote = text[start]
    chars: list[str] = []
    index = start + 1
    while index < len(text):
        char = text[index]
        if char == "\\":
            if index + 1 >= len(text):
                break
            chars.append(text[index + 1])
            index += 2
            continue
        if char == quote:
            return _Token("string", text[start : index + 1], start, "".join(chars))
        chars.append(char)
        index += 1
    raise _error(start, "the string is not closed")


# --- parser --------------------------------------------------------------------------------


def parse(text: str, resource_type: str) -> Node | None:
    """The filter as a tree (None for an empty filter); INVALID_ARGUMENT with the position."""
    if len(text) > MAX_FILTER_LENGTH:
        raise _error(MAX_FILTER_LENGTH, f"the filter is longer than {MAX_FILTER_LENGTH} characters")
    if "\x00" in text:
        raise _error(text.index("\x00"), "NUL characters are not allowed")
    if not text.strip():
        return None
    return _Parser(_tokens(text), resource_type).parse()


class _Parser:
    def __init__(self, tokens: Sequence[_Token], resource_type: str) -> None:
        self._tokens = tokens
        self._at = 0
        self._depth = 0
        self._terms = 0
        self._resource_type = resource_type

    def parse(self) -> Node:
        node = self._expression()
        token = self._peek()
        if token.kind != "end":
            raise _error(
                token.position, f"unexpected {token.text!r}" if token.kind != ")" else "unbalanced ')'"
            )
        return node

    def _peek(self) -> _Token:
        return self._tokens[self._at]

    def _next(self) -> _Token:
        token = self._tokens[self._at]
        self._at += 1
        return token

    def _keyword(self, word: str) -> bool:
        token = self._peek()
        return token.kind == "word" and token.text == word

    def _expression(self) -> Node:
        items = [self._sequence()]
        while self._keyword("AND"):
            self._next()
            items.append(self._sequence())
        return items[0] if len(items) == 1 else And(tuple(items))

    def _sequence(self) -> Node:
        items = [self._factor()]
        while self._starts_term():
            items.append(self._factor())
        return items[0] if len(items) == 1 else And(tuple(items))

    def _starts_term(self) -> bool:
        token = self._peek()
        if token.kind in ("(", "-", "string"):
            return True
        return token.kind == "word" and token.text not in ("AND", "OR")

    def _factor(self) -> Node:
        items = [self._term()]
        while self._keyword("OR"):
            self._next()
            items.append(self._term())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def _term(self) -> Node:
        token = self._peek()
        if token.kind == "-" or self._keyword("NOT"):
            self._next()
            return Not(self._nested(token, self._simple))
        return self._simple()

    def _nested(self, token: _Token, parse: Any) -> Node:
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _error(token.position, f"nested more than {MAX_DEPTH} levels deep")
        node: Node = parse()
        self._depth -= 1
        return node

    def _simple(self) -> Node:
        token = self._peek()
        if token.kind == "(":
            self._next()
            node = self._nested(token, self._expression)
            closing = self._next()
            if closing.kind != ")":
                raise _error(closing.position, "expected ')'" if closing.kind != "end" else "missing ')'")
            return node
        if token.kind == "end":
            raise _error(token.position, "expected a restriction")
        if token.kind not in ("word", "string") or token.text in _KEYWORDS:
            raise _error(token.position, f"expected a restriction, found {token.text!r}")
        self._count(token)
        self._next()
        following = self._peek()
        if following.kind in ("op", ":"):
            if token.kind == "string":
                raise _error(token.position, "a field name is not quoted")
            return self._restriction(token)
        return self._search(token)

    def _count(self, token: _Token) -> None:
        self._terms += 1
        if self._terms > MAX_TERMS:
            raise _error(token.position, f"more than {MAX_TERMS} terms")

    def _search(self, token: _Token) -> Node:
        text = token.value
        _check_literal(token, text)
        if token.kind == "word" and (token.text in COLUMNS or token.text.startswith("data.")):
            raise _error(token.position, f"{token.text} needs a comparator (=, !=, <, <=, >, >=, :)")
        fields = searchable_fields(self._resource_type)
        if not fields:
            raise _error(
                token.position,
                f'{self._resource_type} has no searchable fields; name a field (data.<key>:"text")',
            )
        if len(text) < MIN_SEARCH_LENGTH:
            raise _error(token.position, "the search text is empty")
        return Search(text, fields)

    def _restriction(self, name: _Token) -> Node:
        field = _field(name)
        operator = self._next()
        value_token = self._next()
        if value_token.kind == "word" and value_token.text == "*" and operator.kind == ":":
            return Has(field, None, present=True)
        if value_token.kind not in ("word", "string") or (
            value_token.kind == "word" and value_token.text in _KEYWORDS
        ):
            raise _error(value_token.position, f"expected a value after {operator.text!r}")
        if operator.kind == ":" and isinstance(field, Column) and field.name in TIME_COLUMNS:
            raise _error(operator.position, f"{field.name} takes :* (is set) or a comparison")
        value = _value(field, value_token)
        if operator.kind == ":":
            if value is None:
                raise _error(value_token.position, "use :* (is set) or = null, not :null")
            if isinstance(value, str) and not value:
                raise _error(value_token.position, "the text to match is empty")
            return Has(field, value)
        op = Op(operator.text)
        if op not in (Op.EQ, Op.NE) and (value is None or isinstance(value, bool)):
            raise _error(value_token.position, f"{value_token.text} has no order; use = or !=")
        if isinstance(field, Column) and field.name not in NULLABLE_COLUMNS and value is None:
            raise _error(value_token.position, f"{field.name} is never null")
        return Compare(field, op, value)


def _field(token: _Token) -> Field:
    text = token.text
    if text in COLUMNS:
        return Column(text)
    if text.startswith("data."):
        keys = tuple(text.split(".")[1:])
        if len(keys) > MAX_PATH_KEYS:
            raise _error(token.position, f"a data path has at most {MAX_PATH_KEYS} keys")
        offset = token.position + len("data.")
        for key in keys:
            if not KEY_PATTERN.fullmatch(key):
                raise _error(
                    offset,
                    "keys of a data path are 1-64 characters of [A-Za-z0-9_], not starting with a digit",
                )
            offset += len(key) + 1
        return DataField(keys)
    shown = text if len(text) <= 64 and text.isprintable() else "this name"
    raise _error(
        token.position,
        f"{shown} is not a filterable field; use data.<key>[.<key>...], resource_id, create_time, "
        "update_time, start_time or end_time",
    )


def _check_literal(token: _Token, text: str) -> None:
    if len(text) > MAX_LITERAL_LENGTH:
        raise _error(token.position, f"a value is longer than {MAX_LITERAL_LENGTH} characters")


_NUMBER_LIKE: Final = re.compile(r"-?[0-9][0-9.eE+-]*")
_NUMBER: Final = re.compile(r"-?(0|[1-9][0-9]{0,17})(\.[0-9]{1,17})?([eE][+-]?[0-9]{1,3})?")


def _value(field: Field, token: _Token) -> Value:
    """The literal, typed: strings stay strings when quoted; a bare word may be a number,
    true/false/null or text; times must be RFC 3339."""
    text = token.value
    _check_literal(token, text)
    if field == Column("resource_id"):
        if token.kind == "word" and text == "null":
            raise _error(token.position, "resource_id is never null")
        return text
    if isinstance(field, Column):
        if token.kind == "word" and text == "null":
            return None
        return _timestamp(token)
    if token.kind == "string":
        return text
    if text in ("true", "false"):
        return text == "true"
    if text == "null":
        return None
    if _NUMBER_LIKE.fullmatch(text) and not _NUMBER.fullmatch(text):
        raise _error(token.position, "is not a number this filter takes (at most 18 digits before the point)")
    if _NUMBER.fullmatch(text):
        if isinstance(field, Column):
            return text  # resource_id is text: 007 stays "007"
        number = float(text) if any(c in text for c in ".eE") else int(text)
        if isinstance(number, float) and not math.isfinite(number):
            raise _error(token.position, "numbers must be finite")
        return number
    return text


def _timestamp(token: _Token) -> datetime:
    text = token.value
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})", text):
        raise _error(token.position, 'a time is RFC 3339 with a zone, e.g. "2026-01-02T09:00:00Z"')
    normalized = re.sub(r"(\.\d{6})\d+", r"\1", text.upper().replace("Z", "+00:00"))
    try:
        return datetime.fromisoformat(normalized)
    except ValueError:
        raise _error(token.position, "is not a valid time") from None


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
