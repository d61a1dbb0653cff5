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

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from simplu_grpc.domain.resources.filter_tree import (
    COLUMNS,
    FIELD,
    KEY_PATTERN,
    MAX_DEPTH,
    MAX_FILTER_LENGTH,
    MAX_LITERAL_LENGTH,
    MAX_PATH_KEYS,
    MAX_TERMS,
    MIN_SEARCH_LENGTH,
    NULLABLE_COLUMNS,
    TIME_COLUMNS,
    And,
    Column,
    Compare,
    DataField,
    Field,
    Has,
    Node,
    Not,
    Op,
    Or,
    Search,
    Value,
    searchable_fields,
)
from simplu_grpc.errors import FieldViolation, InvalidArgument

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
