"""Tests for the fast path of engine/events.py (issue 17): ``validate_counter_events`` answers
exactly as the reference validator ``validate_counter_events_each`` does -- the same tuples,
or the same exception with the same message and field -- for valid and invalid batches."""

from __future__ import annotations

import enum
from collections import OrderedDict
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine.counters import ADD, DIFF
from engine.errors import PointspaceError
from engine.events import (
    INT64_MAX,
    INT64_MIN,
    MAX_BATCH_EVENTS,
    validate_counter_events,
    validate_counter_events_each,
    validate_counter_events_fast,
)
from engine.timebuckets import MAX_TS

TS = 1496539747


class Level(enum.IntEnum):
    """An ``int`` subclass: the reference refuses it (``type(x) is not int``)."""

    GOLD = 3


class Name(str):
    """A ``str`` subclass: the reference refuses it as a metric or user id."""


def outcome(fn: Any, events: Any) -> tuple[str, Any]:
    """What ``fn(events)`` gives: its result with exact types, or its error."""
    try:
        result = fn(events)
    except PointspaceError as exc:
        return ("error", (type(exc), exc.message, exc.field, exc.http_status))
    return ("ok", [tuple((type(x), x) for x in event) for event in result])


def assert_same(events: Any) -> None:
    reference = outcome(validate_counter_events_each, events)
    assert outcome(validate_counter_events, events) == reference
    fast = validate_counter_events_fast(events)
    if fast is not None:  # the fast path vouches only for what the reference accepts
        assert reference == outcome(lambda _: fast, events)


############################################################################################
# Generated batches, valid and invalid

INTS = st.one_of(
    st.integers(-1000, 10**10),
    st.sampled_from([0, -1, 1, INT64_MIN, INT64_MAX, INT64_MIN - 1, INT64_MAX + 1, MAX_TS, MAX_TS + 1, 2**64, 10**30]),
)
STRINGS = st.one_of(
    st.sampled_from(["42", "042", "0", "-0", "-5", "-05", "alice", "", "x" * 201, "m" * 200, "\u00a0",
                     "st\x00eps", "a\nb", "\x7f", "\u0085", "\ud800", "\u2028", "٤٢", "9" * 25]),
    st.text(max_size=8),
)
ODDS = st.one_of(
    st.booleans(),
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([10.0, float(TS), 2.0**53, 2.0**53 + 2, -0.0, Level.GOLD, Name("steps"), Name("7")]),
    st.lists(st.integers(0, 3), max_size=2),
    st.just({}),
)
ANY_VALUE = st.one_of(INTS, INTS, STRINGS, ODDS)
TS_VALUES = st.one_of(st.integers(0, MAX_TS), st.sampled_from([-1, MAX_TS + 1, TS, TS - 1, TS + 1]), ANY_VALUE)
MODES = st.one_of(st.sampled_from(["add", "diff", "ADD", "sum", "", None, 1, True]), ANY_VALUE)
METRICS = st.one_of(st.sampled_from(["steps", "points", "m" * 200]), STRINGS, ODDS)


#: What happens to each field of a plausible event: mostly nothing, so that a batch with one
#: bad field (the case a fast path could get wrong) is common. ``sampled_from`` draws evenly,
#: where ``integers`` would favour its bounds.
CHANGES = st.sampled_from(["keep"] * 30 + ["drop", "change", "change"])


@st.composite
def events_(draw: st.DrawFn) -> Any:
    """An event: mostly a plausible dict with a few fields changed, dropped or added."""
    kind = draw(st.integers(0, 19))
    if kind == 0:
        return draw(st.one_of(INTS, STRINGS, st.none(), st.lists(st.integers(), max_size=2)))
    event: dict[Any, Any] = {"metric": draw(st.sampled_from(["steps", "points"])), "user": draw(st.integers(0, 50)),
                             "value": draw(st.integers(-100, 100)), "ts": TS}
    if draw(st.booleans()):
        event["atid"] = draw(st.integers(0, 4))
        event["aid"] = draw(st.integers(0, 10**9))
    for name, values in (("metric", METRICS), ("user", st.one_of(INTS, STRINGS, ODDS)), ("value", ANY_VALUE),
                         ("ts", TS_VALUES), ("atid", ANY_VALUE), ("aid", ANY_VALUE), ("ts1", TS_VALUES),
                         ("mode", MODES)):
        change = draw(CHANGES)
        if change == "drop":
            event.pop(name, None)
        elif change == "change":
            event[name] = draw(values)
    if draw(CHANGES) == "drop":
        event[draw(st.sampled_from(["extra", "thing", 1, "Metric"]))] = draw(INTS)
    if kind == 1:
        return OrderedDict(event)
    return event


BATCHES = st.one_of(
    st.lists(events_(), max_size=6),
    st.lists(events_(), max_size=6).map(lambda b: b * 3),  # repeated users and metrics
    st.one_of(st.none(), st.just({"metric": "steps"}), st.text(max_size=3)),
)


@settings(max_examples=1500, deadline=None)
@given(BATCHES)
@example([{"metric": "steps", "user": "42", "value": 1, "ts": TS}, {"metric": "steps", "user": "042", "value": 1, "ts": TS}])
@example([{"metric": "steps", "user": 1, "value": 1, "ts": TS, "aid": 3, "ts1": TS - 5, "mode": "diff"}])
@example([{"metric": "steps", "user": 1, "value": 1, "ts": TS, "aid": None, "mode": "diff"}])
@example([{"metric": "steps", "user": 1, "value": 1, "ts": TS, "atid": 1, "ts1": TS + 1}])
@example([{"metric": "steps", "user": 1, "value": 1, "ts": "x", "ts1": 5}])
@example([{"metric": "steps", "user": Level.GOLD, "value": 1, "ts": TS}])
@example([{"metric": Name("steps"), "user": 1, "value": 1, "ts": TS}])
@example([{"metric": "steps", "user": 1, "value": 1, "ts": TS}, {"metric": Name("steps"), "user": 1, "value": 1, "ts": TS}])
@example([{"metric": "steps", "user": "7", "value": 1, "ts": TS}, {"metric": "steps", "user": Name("7"), "value": 1, "ts": TS}])
@example([{"metric": "steps", "user": 1, "value": 1, "ts": TS, "atid": 2, "ts1": None}])
def test_validate_counter_events_matches_the_reference(events: Any) -> None:
    assert_same(events)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {"metric": st.text(min_size=1, max_size=5), "user": st.one_of(st.integers(INT64_MIN, INT64_MAX), st.text(max_size=5)),
             "value": st.integers(INT64_MIN, INT64_MAX), "ts": st.integers(0, MAX_TS)},
            optional={"atid": st.integers(INT64_MIN, INT64_MAX), "aid": st.one_of(st.none(), st.integers(INT64_MIN, INT64_MAX)),
                      "ts1": st.one_of(st.none(), st.integers(0, MAX_TS)), "mode": st.sampled_from(["add", "diff"])},
        ),
        max_size=8,
    )
)
def test_validate_counter_events_matches_the_reference_near_valid(events: list[dict[str, Any]]) -> None:
    assert_same(events)


FIELDS = ["metric", "user", "value", "ts", "atid", "aid", "ts1", "mode"]


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(events_(), min_size=1, max_size=5).filter(lambda b: validate_counter_events_fast(b) is not None),
    st.data(),
)
def test_validate_counter_events_matches_the_reference_with_one_bad_field(events: list[Any], data: st.DataObject) -> None:
    # A batch the fast path takes, with one field of one event replaced, dropped or added:
    # the case a fast path that skips a check would get wrong.
    event = dict(data.draw(st.sampled_from(events)))
    name = data.draw(st.sampled_from([*FIELDS, "extra"]))
    if data.draw(st.booleans()):
        event.pop(name, None)
    else:
        event[name] = data.draw(st.one_of(ANY_VALUE, TS_VALUES, MODES, METRICS))
    assert_same([*events, event])
    assert_same([event, *events])


############################################################################################
# The fast path takes the common shapes


def test_validate_counter_events_fast_takes_the_common_shapes() -> None:
    events = [
        {"metric": "steps", "user": 1, "value": 10, "ts": TS},
        {"metric": "steps", "user": "42", "value": 10, "ts": TS, "atid": 2, "aid": 3},
        {"metric": "points", "user": "alice", "value": -1, "ts": TS, "aid": 7, "ts1": TS - 9, "mode": "diff"},
        {"metric": "points", "user": 5, "value": 0, "ts": TS, "atid": 1, "aid": None},
    ]
    assert validate_counter_events_fast(events) == [
        (1, "steps", 0, None, TS, 10, TS, ADD),
        (42, "steps", 2, 3, TS, 10, TS, ADD),
        ("alice", "points", 0, 7, TS, -1, TS - 9, DIFF),
        (5, "points", 1, None, TS, 0, TS, ADD),
    ]
    assert validate_counter_events_fast([]) == []


@pytest.mark.parametrize(
    "events",
    [
        [{"metric": "steps", "user": 1, "value": 10.0, "ts": TS}],  # accepted, by the reference
        [{"metric": "steps", "user": 1, "value": 10, "ts": -1}],
        [{"metric": "steps", "user": 1, "value": 10, "ts": TS, "extra": 1}],
        [OrderedDict({"metric": "steps", "user": 1, "value": 10, "ts": TS})],
        [{"metric": "steps", "user": 1, "value": 10, "ts": TS}] * (MAX_BATCH_EVENTS + 1),
    ],
    ids=["float", "bad-ts", "unknown-field", "mapping", "too-large"],
)
def test_validate_counter_events_fast_defers_to_the_reference(events: Any) -> None:
    assert validate_counter_events_fast(events) is None
    assert_same(events)
