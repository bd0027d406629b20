"""Tests for engine/errors.py: bounded quoting of values, and the cap on every message.

Security issue, finding 9: an error used to echo a bad value whole (a 10 MB NDJSON line
gave a 10 MB answer). ``quote`` bounds what a message quotes; ``PointspaceError`` bounds the
message and field whatever a raising site wrote.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import (
    MAX_FIELD_CHARS,
    MAX_MESSAGE_CHARS,
    QUOTE_LIMIT,
    Conflict,
    InvalidInput,
    NotFound,
    PointspaceError,
    quote,
)


@pytest.mark.parametrize(
    "value",
    [-5, 0, 2**63, "steps", "", "a'b\"c", "nul\x00", b"bytes", None, True, 2.5, [], {}, (),
     (1,), [1, "a", None], {"k": [1, (2,)]}, {1, 2}, frozenset({3}), "x" * QUOTE_LIMIT],
)
def test_quote_is_repr_for_short_values(value: Any) -> None:
    assert quote(value) == repr(value)


def test_quote_cuts_a_long_string_and_says_how_long() -> None:
    assert quote("y" * 10_000_000) == f"'{'y' * QUOTE_LIMIT}'... (10000000 characters)"
    assert quote(b"\x00" * 1000, limit=4) == r"b'\x00\x00\x00\x00'... (1000 bytes)"


def test_quote_cuts_a_long_container_and_says_how_many_items() -> None:
    assert quote(list(range(100))) == repr(list(range(100)))[:QUOTE_LIMIT] + "... (100 items)"
    assert quote({"k": "v" * 500}) == ("{'k': '" + "v" * 500)[:QUOTE_LIMIT] + "... (1 items)"


def test_quote_of_huge_and_deep_values_is_fast_and_bounded() -> None:
    deep: list[Any] = []
    cursor = deep
    for _ in range(5000):  # past Python's recursion limit
        cursor.append([])
        cursor = cursor[0]
    start = time.perf_counter()
    quoted = [
        quote("z" * 30_000_000),
        quote([["z" * 1000] * 10_000] * 10_000),
        quote(deep),
        quote(10**10_000),  # past Python's 4300-digit limit on int -> str
    ]
    assert time.perf_counter() - start < 0.5
    assert all(len(q) < QUOTE_LIMIT + 40 for q in quoted), quoted
    assert quoted[2] == "[[[[[[[[[...]]]]]]]]]"
    assert quoted[3] == "<an integer of 33220 bits>"


def test_quote_survives_a_failing_repr() -> None:
    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    assert quote(Broken()) == "<Broken object>"


#: Text without quote characters: a string cut before it is repr'd may pick another quote
#: character than its whole repr would (``'a...'`` against ``"a...'"``).
_UNQUOTED = st.text(st.characters(blacklist_characters="'\"\\"), max_size=120)


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _UNQUOTED,
        lambda children: st.lists(children, max_size=6)
        | st.dictionaries(_UNQUOTED, children, max_size=4)
        | st.tuples(children),
        max_leaves=30,
    )
)
def test_quote_is_repr_or_its_start(value: Any) -> None:
    full = repr(value)
    quoted = quote(value)
    if len(full) <= QUOTE_LIMIT:
        assert quoted == full
    else:
        assert quoted.startswith(full[:QUOTE_LIMIT])
        assert "..." in quoted and len(quoted) <= QUOTE_LIMIT + 30


@pytest.mark.parametrize("kind", [PointspaceError, InvalidInput, NotFound, Conflict])
def test_every_error_caps_its_message_and_field(kind: type[PointspaceError]) -> None:
    exc = kind("m" * 10_000_000, "f" * 10_000)
    assert len(exc.message) == MAX_MESSAGE_CHARS
    assert exc.message.endswith(f"... (message cut at {MAX_MESSAGE_CHARS} of 10000000 characters)")
    assert str(exc) == exc.message
    assert exc.field is not None and len(exc.field) == MAX_FIELD_CHARS
    assert exc.to_json() == {"error": exc.message, "field": exc.field}


def test_short_messages_and_fields_are_kept_as_written() -> None:
    exc = InvalidInput("body[0].ts: expected `int` >= 0 (was -5)", "body[0].ts")
    assert exc.to_json() == {"error": "body[0].ts: expected `int` >= 0 (was -5)", "field": "body[0].ts"}
    text = "x" * MAX_MESSAGE_CHARS
    assert InvalidInput(text).message == text
