"""The ListResources filter language: parsing into the typed tree, its errors, and its meaning."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from importlib import resources as package_files

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from simplu_grpc.adapters.postgres import resource_filter_sql as sql
from simplu_grpc.domain.resources.catalog import catalog
from simplu_grpc.domain.resources.filter_eval import canonical, evaluate
from simplu_grpc.domain.resources.filter_parser import parse
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
    catalog_fields,
)
from simplu_grpc.errors import InvalidArgument

COLUMNS = {
    "resource_id": "p-001",
    "create_time": datetime(2026, 1, 1, tzinfo=UTC),
    "update_time": datetime(2026, 1, 2, tzinfo=UTC),
    "start_time": datetime(2026, 3, 1, 9, tzinfo=UTC),
    "end_time": None,
}
DATA = {
    "last_name": "Popescu",
    "age": 41,
    "paid": True,
    "tags": ["vip", 7],
    "address": {"city": "Cluj"},
    "note": None,
}


def _parse(text: str) -> Node:
    node = parse(text, "patients")
    assert node is not None
    return node


def _matches(text: str) -> bool:
    return evaluate(_parse(text), COLUMNS, DATA)


def _error(text: str, resource_type: str = "patients") -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        parse(text, resource_type)
    assert [v.field for v in caught.value.violations] == ["filter"]
    return caught.value


def test_comparisons_and_logic_parse_into_the_tree() -> None:
    """Comparators, AND, OR (binding tighter than AND), NOT and - build the expected nodes."""
    node = _parse('data.status = "confirmed" AND data.age >= 18 OR -data.paid:* NOT resource_id:"x"')
    assert node == And(
        (
            Compare(DataField(("status",)), Op.EQ, "confirmed"),
            And(
                (
                    Or(
                        (
                            Compare(DataField(("age",)), Op.GE, 18),
                            Not(Has(DataField(("paid",)), None, present=True)),
                        )
                    ),
                    Not(Has(Column("resource_id"), "x")),
                )
            ),
        )
    )


def test_literals_are_typed() -> None:
    """Quoted text stays text; bare numbers, booleans and null are typed; times are instants."""
    assert _parse("data.a = 5") == Compare(DataField(("a",)), Op.EQ, 5)
    assert _parse("data.a = -2.5") == Compare(DataField(("a",)), Op.EQ, -2.5)
    assert _parse('data.a = "5"') == Compare(DataField(("a",)), Op.EQ, "5")
    assert _parse("data.a = true") == Compare(DataField(("a",)), Op.EQ, True)
    assert _parse("data.a = null") == Compare(DataField(("a",)), Op.EQ, None)
    assert _parse("resource_id = 007") == Compare(Column("resource_id"), Op.EQ, "007")
    assert _parse('start_time < "2026-03-01T10:00:00.1234567+02:00"') == Compare(
        Column("start_time"),
        Op.LT,
        datetime.fromisoformat("2026-03-01T10:00:00.123456+02:00"),
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('data.last_name = "Popescu"', True),
        ('data.last_name != "Popescu"', False),
        ("data.age > 40 AND data.age <= 41", True),
        ('data.age > "40"', False),  # a number is not compared with text
        ('data.last_name > "Pop"', True),
        ("data.missing = null", True),
        ("data.note = null", True),
        ("data.note:*", False),
        ("data.last_name:*", True),
        ('data.last_name:"ESC"', True),
        ('data.tags:"vip"', True),
        ('data.tags:"VI"', False),  # array elements match exactly
        ("data.tags:7", True),
        ('data.address.city = "Cluj"', True),
        ("data.address.city.x = null", True),
        ("data.missing != 3", True),
        ("data.missing < 3", False),
        ("NOT data.missing < 3", True),
        ('"popes"', True),
        ("popes", True),
        ("smith", False),
        ('resource_id:"P-0"', True),
        ('end_time = null AND start_time >= "2026-03-01T09:00:00Z"', True),
        ('end_time != "2026-03-01T09:00:00Z"', True),
        ('end_time < "2026-03-01T09:00:00Z"', False),
        ("data.paid = true data.age = 41", True),
        ("(data.age = 1 OR data.age = 41) AND -data.paid = false", True),
    ],
)
def test_reference_meaning(text: str, expected: bool) -> None:
    """The documented meaning of each restriction on one resource."""
    assert _matches(text) is expected


@pytest.mark.parametrize(
    ("text", "position", "words"),
    [
        ("data.a =", 9, "expected a value"),
        ("data.a = 1 AND", 15, "expected a restriction"),
        ("(data.a = 1", 12, "missing ')'"),
        ("data.a = 1)", 11, "unbalanced"),
        ('data.a = "open', 10, "not closed"),
        ("status = 1", 1, "not a filterable field"),
        ("data.1a = 1", 6, "keys of a data path"),
        ("data.a < true", 10, "no order"),
        ("data.a:null", 8, ":*"),
        ('create_time = "yesterday"', 15, "RFC 3339"),
        ("create_time = null", 15, "never null"),
        ('start_time:"2026"', 11, ":*"),
        ("data.a = 1; DROP TABLE resources", 11, "unexpected"),
        ("data.a = 1 \x00", 12, "NUL"),
        ("data.x", 1, "needs a comparator"),
    ],
)
def test_errors_name_the_filter_and_the_position(text: str, position: int, words: str) -> None:
    """Each malformed filter is INVALID_ARGUMENT on "filter" with the 1-based position."""
    error = _error(text)
    assert f"at character {position}:" in error.message
    assert error.metadata["position"] == str(position)
    assert words in error.message


def test_bounds_stop_hostile_filters() -> None:
    """Length, nesting, term count, literal size and path length are bounded."""
    assert "longer than" in _error("data.a = 1 " * 300).message
    assert "nested" in _error("(" * 20 + "data.a = 1" + ")" * 20).message
    assert "nested" in _error("NOT (" * 20 + "data.a = 1" + ")" * 20).message
    assert "more than 32 terms" in _error(" OR ".join(["data.a = 1"] * 33)).message
    assert "longer than 256" in _error('data.a = "' + "x" * 300 + '"').message
    assert "at most 8 keys" in _error("data." + ".".join("k" * 9) + " = 1").message


def test_search_needs_searchable_fields() -> None:
    """A bare term searches the type's searchable fields; a type without any refuses it."""
    node = _parse("pop")
    assert isinstance(node, Search)
    assert ("last_name",) in node.fields
    assert "no searchable fields" in _error("pop", "xrays").message


def test_canonical_form_ignores_spelling() -> None:
    """Two spellings of one filter bind page tokens alike; different literals do not."""
    assert canonical(_parse("data.a=1  AND data.b='x'")) == canonical(_parse('data.a = 1 AND data.b = "x"'))
    assert canonical(_parse("data.a = 1")) != canonical(_parse('data.a = "1"'))
    assert canonical(None) is None


def test_every_searchable_field_has_its_trigram_index() -> None:
    """Each field catalog_fields.json marks searchable has the trigram index of exactly the
    expression the compiler emits, partial to its type, in a shipped migration; and every
    described type is a catalog type."""
    migrations = "".join(
        entry.read_text("utf-8")
        for entry in package_files.files("simplu_grpc.migrations").iterdir()
        if entry.name.endswith(".sql")
    )
    known = frozenset().union(*catalog().values())
    for resource_type, fields in catalog_fields().items():
        assert resource_type in known
        for info in fields:
            if not info.searchable:
                continue
            expression = re.escape(f"((data #>> '{{{','.join(info.path)}}}'::text[]) gin_trgm_ops)")
            assert re.search(
                expression + r"\s+WHERE resource_type = '" + re.escape(resource_type) + "'", migrations
            ), (resource_type, info.path)


_ALPHABET = st.sampled_from(list("data.x_yz =!<>:()\"'\\-*ANDORNOT 0123456789eE+,;%\x00é\t"))


@settings(max_examples=400, deadline=None)
@given(text=st.one_of(st.text(_ALPHABET, max_size=60), st.text(max_size=40)))
@example(text='data.x = "a\'b" OR data.y = 1 AND -data.z = true')
@example(text='data.x:"it\'s" data.y:3 data.w:* NOT data.v = null')
@example(text="data.x > 1.5 AND data.y <= \"m;n\" AND data.q != 'x'")
@example(text='resource_id < "p\'1" OR resource_id:"%" OR start_time < "2026-01-01T00:00:00Z"')
@example(text='end_time = null OR end_time != "2026-01-01T00:00:00+02:00" OR "o\'neil" OR pop')
def test_any_text_parses_or_is_invalid_argument_and_compiles(text: str) -> None:
    """Arbitrary input never raises anything but INVALID_ARGUMENT on "filter", and every tree
    that parses compiles to SQL made of fixed fragments and placeholders only (no literal of
    the input is spliced: once placeholders and the compiler's own constants are removed, no
    quote, semicolon or NUL is left)."""
    violations: list[str] = []
    node: Node | None = None
    try:
        node = parse(text, "patients")
    except InvalidArgument as error:
        violations = [v.field for v in error.violations]
    if violations:
        assert violations == ["filter"]
        return
    if node is None:
        return
    out = sql.Compiled()
    condition = sql.compile_filter(node, out)
    skeleton = re.sub(r"%\(f[0-9]+\)s", "", condition)
    for constant in ("'string'", "'number'", "'null'", "'infinity'", '"C"'):
        skeleton = skeleton.replace(constant, "")
    assert not set(skeleton) & {"'", '"', ";", "\x00"}, condition
