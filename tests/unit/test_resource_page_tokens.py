"""Unit tests: page tokens are opaque, bound to their query, and refuse tampering."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from simplu_grpc.domain.resources import page_tokens
from simplu_grpc.domain.resources.page_tokens import Position
from simplu_grpc.errors import InvalidArgument

QUERY = {"b": "biz", "l": "loc", "n": "patients", "f": None, "t": None, "c": None, "o": "START_TIME"}


def test_round_trip_keeps_the_position() -> None:
    """A token decodes, for the same query, to the position it was made from."""
    position = Position((datetime(2026, 3, 1, 12, 30, 0, 123456, tzinfo=UTC),), "01ABC")
    token = page_tokens.encode(QUERY, position)
    assert page_tokens.decode(token, QUERY) == position


def test_missing_start_time_position_round_trips() -> None:
    """A position of a resource without start_time (sorts last) survives the round trip."""
    token = page_tokens.encode(QUERY, Position((None,), "r1"))
    assert page_tokens.decode(token, QUERY) == Position((None,), "r1")


def test_empty_token_is_the_first_page() -> None:
    """An empty token means: start at the beginning."""
    assert page_tokens.decode("", QUERY) is None


def test_token_of_another_query_is_refused() -> None:
    """A token replayed with a different filter is INVALID_ARGUMENT on page_token."""
    token = page_tokens.encode(QUERY, Position((None,), "r1"))
    with pytest.raises(InvalidArgument) as caught:
        page_tokens.decode(token, {**QUERY, "n": "appointments"})
    assert caught.value.violations[0].field == "page_token"


@pytest.mark.parametrize(
    "token",
    [
        "not a token!",
        "eyJ2IjoxfQ",  # {"v":1} without query or key
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        "A" * 5000,
        "'; DROP TABLE resources; --",
    ],
)
def test_malformed_tokens_are_invalid_argument(token: str) -> None:
    """Garbage, truncated, oversized or hostile tokens are INVALID_ARGUMENT, never a crash."""
    with pytest.raises(InvalidArgument):
        page_tokens.decode(token, QUERY)


def test_tampered_position_is_refused() -> None:
    """Editing the position inside a token to a non-timestamp or a bad id is refused."""
    good = page_tokens.encode(QUERY, Position((None,), "r1"))
    body = json.loads(base64.urlsafe_b64decode(good + "=" * (-len(good) % 4)))
    for key in (["yesterday", "r1"], [None, "x' OR 1=1 --"], [None, ""], [1, "r1"]):
        body["k"] = key
        forged = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
        with pytest.raises(InvalidArgument):
            page_tokens.decode(forged, QUERY)


@pytest.mark.parametrize("sort_value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:00:00-02:00"])
def test_a_position_with_no_utc_instant_is_malformed_not_an_overflow(sort_value: str) -> None:
    """A hand-made token whose sort value has no UTC instant (year 0 or 10000 in UTC) is
    INVALID_ARGUMENT on page_token, not an OverflowError (INTERNAL) further down."""
    binding = {"q": "any"}
    body = {"v": 1, "q": page_tokens.query_hash(binding), "k": [sort_value, "r1"]}
    token = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
    with pytest.raises(InvalidArgument) as caught:
        page_tokens.decode(token, binding)
    assert caught.value.violations[0].field == "page_token"


CHANGES = {"changes": 1, "b": "biz", "l": "loc", "n": ["patients"], "id": None, "p": None, "t": [None, None]}


def test_a_change_token_names_its_sequence_for_its_query_only() -> None:
    """A ListResourceChanges token decodes to its sequence; another query's or a resource page's
    token is refused, as is an edited sequence."""
    token = page_tokens.encode_sequence(CHANGES, 42)
    assert page_tokens.decode_sequence(token, CHANGES) == 42
    assert page_tokens.decode_sequence("", CHANGES) is None
    with pytest.raises(InvalidArgument):
        page_tokens.decode_sequence(token, {**CHANGES, "p": "someone"})
    with pytest.raises(InvalidArgument):
        page_tokens.decode_sequence(page_tokens.encode(CHANGES, Position((None,), "r1")), CHANGES)
    body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    for sequence in (0, -1, 2**63, "42", True, None):
        body["s"] = sequence
        forged = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
        with pytest.raises(InvalidArgument):
            page_tokens.decode_sequence(forged, CHANGES)


@pytest.mark.parametrize(
    "value", ["NaN", "Infinity", "1e999999", "[" * 5000 + "]" * 5000, "1" * 500, "{", None]
)
def test_forged_data_sort_values_are_malformed(value: str | None) -> None:
    """A data ordering's sort value that jsonb would refuse (NaN, huge numbers, deep nesting,
    broken JSON) is INVALID_ARGUMENT on page_token, never an error from the shard."""
    body = {"v": 1, "q": page_tokens.query_hash(QUERY), "k": [value, "r1"]}
    token = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
    with pytest.raises(InvalidArgument) as caught:
        page_tokens.decode(token, QUERY, [True])
    assert caught.value.violations[0].field == "page_token"


def test_data_sort_values_round_trip_as_jsonb_text() -> None:
    """The jsonb text of a data sort value comes back unchanged (exact numbers included)."""
    position = Position(('{"a": [1, 2.50]}', "1" + "0" * 308, "null"), "r1")
    token = page_tokens.encode(QUERY, position)
    assert page_tokens.decode(token, QUERY, [True, True, True]) == position
