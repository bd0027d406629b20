"""Tests for engine/events.py: batch validation, field-precise errors and user ids."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.counters import ADD, DIFF
from engine.errors import InvalidInput, PayloadTooLarge, quote
from engine.events import (
    INT64_MAX,
    INT64_MIN,
    MAX_BATCH_EVENTS,
    RESERVED_PREFIX,
    check_int,
    check_names,
    check_ts,
    check_users,
    check_writable_name,
    group_by_user,
    normalize_user,
    validate_count_events,
    validate_counter_events,
)
from engine.timebuckets import MAX_TS

TS = 1496539747
ALLOWED = "['aid', 'atid', 'metric', 'mode', 'ts', 'ts1', 'user', 'value']"


def event(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"metric": "steps", "user": 1, "value": 10, "ts": TS}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not DROP}


DROP = object()
#: Every character a name may hold: anything but control characters (Cc) and surrogates (Cs).
NAME_CHARACTERS = st.characters(blacklist_categories=("Cc", "Cs"))


def rejects(events: Any, field: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=f"^{re.escape(message)}$") as info:
        validate_counter_events(events)
    assert info.value.field == field
    assert info.value.http_status == 400


############################################################################################
# Accepted shapes


def test_validate_counter_events_minimal_add() -> None:
    assert validate_counter_events([event()]) == [(1, "steps", 0, None, TS, 10, TS, ADD)]


def test_validate_counter_events_full_diff_event() -> None:
    got = validate_counter_events(
        [event(atid=2, aid=3, ts1=TS - 1, mode="diff", user="u-1", value=-4)]
    )
    assert got == [("u-1", "steps", 2, 3, TS, -4, TS - 1, DIFF)]


def test_validate_counter_events_defaults() -> None:
    got = validate_counter_events(
        [event(atid=5), event(aid=7), event(mode="add"), event(ts1=None, aid=None)]
    )
    assert got == [
        (1, "steps", 5, None, TS, 10, TS, ADD),
        (1, "steps", 0, 7, TS, 10, TS, ADD),
        (1, "steps", 0, None, TS, 10, TS, ADD),
        (1, "steps", 0, None, TS, 10, TS, ADD),
    ]


def test_validate_counter_events_empty_batch() -> None:
    assert validate_counter_events([]) == []


def test_validate_counter_events_bounds_are_inclusive() -> None:
    got = validate_counter_events(
        [
            event(ts=0, value=INT64_MIN),
            event(ts=MAX_TS, value=INT64_MAX, ts1=0),
            event(atid=INT64_MIN, aid=INT64_MAX),
        ]
    )
    assert [(e[4], e[5], e[6]) for e in got[:2]] == [(0, INT64_MIN, 0), (MAX_TS, INT64_MAX, 0)]
    assert (got[2][2], got[2][3]) == (INT64_MIN, INT64_MAX)


def test_validate_counter_events_integral_floats_become_ints() -> None:
    # JSON encoders may write 10.0 for an integer; a float with no fraction is accepted.
    got = validate_counter_events(
        [event(value=10.0, ts=float(TS), atid=2.0, aid=3.0, ts1=float(TS))]
    )
    assert got == [(1, "steps", 2, 3, TS, 10, TS, ADD)]
    assert all(type(x) is int for x in got[0][2:])


def test_validate_counter_events_string_users_are_normalized() -> None:
    got = validate_counter_events(
        [event(user="42"), event(user="042"), event(user="alice"), event(user=-3)]
    )
    assert [e[0] for e in got] == [42, "042", "alice", -3]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "metric": st.text(NAME_CHARACTERS, min_size=1, max_size=20),
                "user": st.one_of(
                    st.integers(INT64_MIN, INT64_MAX), st.text(NAME_CHARACTERS, min_size=1, max_size=10)
                ),
                "value": st.integers(INT64_MIN, INT64_MAX),
                "ts": st.integers(0, MAX_TS),
            },
            optional={
                "atid": st.integers(INT64_MIN, INT64_MAX),
                "aid": st.integers(INT64_MIN, INT64_MAX),
                "mode": st.just("add"),
            },
        ),
        max_size=10,
    )
)
def test_validate_counter_events_accepts_every_valid_event(events: list[dict[str, Any]]) -> None:
    got = validate_counter_events(events)
    assert len(got) == len(events)
    for raw, (user, metric, atid, aid, ts, value, ts1, mode) in zip(events, got, strict=True):
        assert user == normalize_user(raw["user"])
        assert (metric, value, ts, ts1, mode) == (
            raw["metric"],
            raw["value"],
            raw["ts"],
            raw["ts"],
            ADD,
        )
        assert atid == raw.get("atid", 0)
        assert aid == raw.get("aid")


############################################################################################
# Rejected fields


def test_validate_counter_events_not_a_list() -> None:
    rejects({"metric": "steps"}, "events", "events must be a list of event objects")
    rejects(None, "events", "events must be a list of event objects")


def test_validate_counter_events_custom_field_name() -> None:
    with pytest.raises(InvalidInput) as info:
        validate_counter_events([event(ts=-1)], field="batch")
    assert info.value.field == "batch[0].ts"


def test_validate_counter_events_event_not_an_object() -> None:
    rejects([event(), 5], "events[1]", "events[1] must be an object, got 5")
    rejects(
        [["steps", 1, 10, TS]],
        "events[0]",
        "events[0] must be an object, got ['steps', 1, 10, 1496539747]",
    )


@pytest.mark.parametrize("name", ["metric", "user", "value", "ts"])
def test_validate_counter_events_required_fields(name: str) -> None:
    rejects(
        [event(), event(), event(), event(**{name: DROP})],
        f"events[3].{name}",
        f"events[3].{name} is required",
    )


@pytest.mark.parametrize("bad", ["", "x" * 201, 5, None, True, ["steps"]])
def test_validate_counter_events_bad_metric(bad: Any) -> None:
    rejects(
        [event(metric=bad)],
        "events[0].metric",
        f"events[0].metric must be a non-empty string of at most 200 characters, got {quote(bad)}",
    )


def test_validate_counter_events_metric_of_200_characters_is_fine() -> None:
    assert validate_counter_events([event(metric="m" * 200)])[0][1] == "m" * 200


@pytest.mark.parametrize(
    "bad", [True, False, None, 1.0, 2.5, "", "u" * 201, 2**63, -(2**63) - 1, [1], {}]
)
def test_validate_counter_events_bad_user(bad: Any) -> None:
    rejects(
        [event(user=bad)],
        "events[0].user",
        f"events[0].user must be an integer or a non-empty string of at most 200 characters, got {quote(bad)}",
    )


@pytest.mark.parametrize("field", ["value", "atid", "aid"])
@pytest.mark.parametrize("bad", [True, False, "10", 10.5, float("nan"), float("inf"), [10]])
def test_validate_counter_events_non_integers(field: str, bad: Any) -> None:
    rejects(
        [event(**{field: bad})],
        f"events[0].{field}",
        f"events[0].{field} must be an integer, got {bad!r}",
    )


def test_validate_counter_events_value_none_is_not_an_integer() -> None:
    rejects([event(value=None)], "events[0].value", "events[0].value must be an integer, got None")


@pytest.mark.parametrize("field", ["value", "aid"])
@pytest.mark.parametrize("bad", [2**63, -(2**63) - 1, 2**64, 10**30])
def test_validate_counter_events_out_of_64_bits(field: str, bad: int) -> None:
    rejects(
        [event(**{field: bad})],
        f"events[0].{field}",
        f"events[0].{field} must be between {INT64_MIN} and {INT64_MAX}, got {bad!r}",
    )


@pytest.mark.parametrize("bad", [2**63, -(2**63) - 1, 2**64, 10**30])
def test_validate_counter_events_atid_out_of_64_bits(bad: int) -> None:
    rejects(
        [event(atid=bad)],
        "events[0].atid",
        f"events[0].atid must be between {INT64_MIN} and {INT64_MAX}, got {bad!r}",
    )


def test_validate_counter_events_atid_none_is_not_an_integer() -> None:
    rejects([event(atid=None)], "events[0].atid", "events[0].atid must be an integer, got None")


@pytest.mark.parametrize("field", ["ts", "ts1"])
@pytest.mark.parametrize("bad", [-1, MAX_TS + 1, 2**63, -(2**40)])
def test_validate_counter_events_ts_out_of_range(field: str, bad: int) -> None:
    extra = {"ts": MAX_TS} if field == "ts1" else {}
    rejects(
        [event(), event(), event(), event(**extra, **{field: bad})],
        f"events[3].{field}",
        f"events[3].{field} must be between 0 and 253402300799, got {bad!r}",
    )


@pytest.mark.parametrize("field", ["ts", "ts1"])
@pytest.mark.parametrize("bad", [True, "1496539747", 1496539747.5, [1]])
def test_validate_counter_events_ts_not_an_integer(field: str, bad: Any) -> None:
    rejects(
        [event(**{field: bad})],
        f"events[0].{field}",
        f"events[0].{field} must be an integer, got {bad!r}",
    )


def test_validate_counter_events_ts1_after_ts() -> None:
    rejects(
        [event(ts=10, ts1=11)],
        "events[0].ts1",
        "events[0].ts1 must be <= ts, got ts1=11 ts=10",
    )
    assert validate_counter_events([event(ts=10, ts1=10)])[0][6] == 10


@pytest.mark.parametrize("bad", ["sum", "ADD", "", 1, None, True, ["diff"]])
def test_validate_counter_events_bad_mode(bad: Any) -> None:
    rejects(
        [event(mode=bad)], "events[0].mode", f"events[0].mode must be 'add' or 'diff', got {bad!r}"
    )


def test_validate_counter_events_diff_requires_aid() -> None:
    message = (
        "events[0].aid is required when mode is 'diff' (the activity's running total is "
        "tracked per aid)"
    )
    rejects([event(mode="diff")], "events[0].aid", message)
    rejects([event(mode="diff", aid=None)], "events[0].aid", message)


def test_validate_counter_events_unknown_fields() -> None:
    rejects(
        [event(extra=1)],
        "events[0].extra",
        f"events[0] has unknown fields ['extra']; allowed: {ALLOWED}",
    )
    rejects(
        [event(thing="steps", uid=1)],
        "events[0].thing",
        f"events[0] has unknown fields ['thing', 'uid']; allowed: {ALLOWED}",
    )


def test_validate_counter_events_reports_the_first_bad_event() -> None:
    with pytest.raises(InvalidInput) as info:
        validate_counter_events([event(), event(ts=-1), event(value="x")])
    assert info.value.field == "events[1].ts"


def test_validate_counter_events_batch_too_large() -> None:
    with pytest.raises(
        PayloadTooLarge,
        match=rf"^events holds {MAX_BATCH_EVENTS + 1} events; at most {MAX_BATCH_EVENTS} per batch$",
    ) as info:
        validate_counter_events([event()] * (MAX_BATCH_EVENTS + 1))
    assert info.value.field == "events"
    assert info.value.http_status == 413


def test_validate_counter_events_error_to_json() -> None:
    with pytest.raises(InvalidInput) as info:
        validate_counter_events([event(ts=-1)])
    assert info.value.to_json() == {
        "error": "events[0].ts must be between 0 and 253402300799, got -1",
        "field": "events[0].ts",
    }


############################################################################################
# User ids


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("42", 42),
        ("0", 0),
        ("-5", -5),
        (7, 7),
        (-7, -7),
        ("9223372036854775807", INT64_MAX),
        ("-9223372036854775808", INT64_MIN),
        ("042", "042"),
        ("00", "00"),
        ("-0", "-0"),
        ("-05", "-05"),
        ("+5", "+5"),
        (" 5", " 5"),
        ("5 ", "5 "),
        ("1e3", "1e3"),
        ("4_2", "4_2"),
        ("\u0663", "\u0663"),  # ARABIC-INDIC DIGIT THREE: a digit, but not ASCII
        ("-", "-"),
        ("9223372036854775808", "9223372036854775808"),
        ("-9223372036854775809", "-9223372036854775809"),
        ("alice", "alice"),
    ],
)
def test_normalize_user_canonical_decimal_strings(raw: Any, expected: Any) -> None:
    got = normalize_user(raw)
    assert got == expected
    assert type(got) is type(expected)


@settings(max_examples=300, deadline=None)
@given(st.integers(INT64_MIN, INT64_MAX))
def test_normalize_user_decimal_string_names_the_same_user(n: int) -> None:
    assert normalize_user(str(n)) == n
    assert normalize_user(n) == n


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(NAME_CHARACTERS, min_size=1, max_size=30), st.from_regex(r"\A-?[0-9]{1,20}\Z")))
def test_normalize_user_int_only_for_canonical_strings(s: str) -> None:
    got = normalize_user(s)
    if type(got) is int:
        assert str(got) == s
    else:
        assert got == s
        try:
            n = int(s)
        except ValueError:
            return
        # A string that reads as an in-range int only stays a string if it is not canonical.
        assert str(n) != s or not INT64_MIN <= n <= INT64_MAX


@pytest.mark.parametrize("bad", [True, None, 1.0, "", "x" * 201, 2**63, [], b"1"])
def test_normalize_user_rejects(bad: Any) -> None:
    with pytest.raises(
        InvalidInput,
        match=f"^{re.escape(f'uid must be an integer or a non-empty string of at most 200 characters, got {quote(bad)}')}$",
    ) as info:
        normalize_user(bad, "uid")
    assert info.value.field == "uid"


def test_check_users() -> None:
    assert check_users([1, "2", "b"]) == [1, 2, "b"]
    with pytest.raises(InvalidInput, match=r"^users must be a non-empty list of user ids$") as info:
        check_users([])
    assert info.value.field == "users"
    with pytest.raises(InvalidInput) as info:
        check_users([1, None])
    assert info.value.field == "users[1]"


############################################################################################
# Smaller helpers


def test_check_int_and_check_ts() -> None:
    assert check_int(5, "x") == 5
    assert check_int(5.0, "x") == 5
    assert check_int(-(2.0**53), "x") == -(2**53)
    # Past 2**53 a float is several integers at once (JSON parsers read -2**63-1 as one): refused.
    for inexact in (-9.223372036854776e18, 2.0**53 + 2):
        with pytest.raises(InvalidInput, match=r"^x must be an integer"):
            check_int(inexact, "x")
    with pytest.raises(InvalidInput, match=r"^x must be an integer, got True$"):
        check_int(True, "x")
    with pytest.raises(InvalidInput, match=r"^x must be between 0 and 3, got 4$"):
        check_int(4, "x", 0, 3)
    assert check_ts(MAX_TS, "t") == MAX_TS
    with pytest.raises(
        InvalidInput, match=r"^t must be between 0 and 253402300799, got -1$"
    ) as info:
        check_ts(-1, "t")
    assert info.value.field == "t"


def test_check_names() -> None:
    assert check_names("steps", "things") == ["steps"]
    assert check_names(["steps", "points"], "things") == ["steps", "points"]
    with pytest.raises(InvalidInput, match=r"^things must be a non-empty list of names$"):
        check_names([], "things")
    with pytest.raises(InvalidInput) as info:
        check_names(["ok", ""], "things")
    assert info.value.field == "things[1]"


def test_validate_count_events() -> None:
    got = validate_count_events([{"name": "newsignup", "value": 1, "ts": 1458061005}])
    assert got == [("newsignup", 1458061005, 1)]
    with pytest.raises(InvalidInput, match=r"^counts\[1\]\.ts is required$") as info:
        validate_count_events([{"name": "a", "value": 1, "ts": 1}, {"name": "a", "value": 1}])
    assert info.value.field == "counts[1].ts"
    with pytest.raises(InvalidInput) as info:
        validate_count_events([{"name": "", "value": 1, "ts": 1}])
    assert info.value.field == "counts[0].name"
    with pytest.raises(InvalidInput) as info:
        validate_count_events([{"name": "a", "value": True, "ts": 1}])
    assert info.value.field == "counts[0].value"
    with pytest.raises(InvalidInput, match=r"^counts must be a list of objects$"):
        validate_count_events({})
    with pytest.raises(InvalidInput, match=r"^counts\[0\] must be an object, got 3$"):
        validate_count_events([3])
    with pytest.raises(PayloadTooLarge):
        validate_count_events([{}] * (MAX_BATCH_EVENTS + 1))


def test_issue_13_global_counters_under_the_narrative_prefix_are_refused() -> None:
    # narrative.clicks and narrative.impressions are the Narrative API's figures.
    good = {"name": "newsignup", "value": 1, "ts": 1}
    for name in ("narrative.clicks", "narrative.impressions", "narrative.anything"):
        with pytest.raises(InvalidInput, match=r"^counts\[1\]\.name: names starting with 'narrative\.' "
                           r"are written only by the Narrative API \(POST /analytics\)") as info:
            validate_count_events([good, {"name": name, "value": 5, "ts": 5}])
        assert info.value.field == "counts[1].name"
    # One rule for counters and unique series: the same constant, not a copy.
    import engine.uniques

    assert engine.uniques.RESERVED_PREFIX is RESERVED_PREFIX
    assert check_writable_name("narrative", "name") == "narrative"  # only the prefix is reserved


async def test_issue_13_engine_count_refuses_narrative_names_and_applies_nothing(engine: Any) -> None:
    before = engine.last_seq
    with pytest.raises(InvalidInput):
        await engine.count([{"name": "mine", "value": 1, "ts": 5}, {"name": "narrative.clicks", "value": 5, "ts": 5}])
    assert engine.last_seq == before
    assert await engine.read_counts(["narrative.clicks", "mine"], 0, 10) == {"narrative.clicks": 0, "mine": 0}


def test_group_by_user_keeps_batch_order() -> None:
    events = validate_counter_events(
        [
            event(user=1, value=1),
            event(user="2", value=2),
            event(user=1, value=3),
            event(user="x", value=4),
        ]
    )
    groups = group_by_user(events)
    assert list(groups) == [1, 2, "x"]
    assert [e[4] for e in groups[1]] == [1, 3]
    assert groups[2] == [("steps", 0, None, TS, 2, TS, ADD)]


############################################################################################
# Names refuse control characters and surrogates (security issue, finding 9)

#: Every control character (Unicode category Cc: U+0000-U+001F, U+007F-U+009F), and the two
#: ends of the surrogate range (Cs).
FORBIDDEN = [chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]] + ["\ud800", "\udfff"]


@pytest.mark.parametrize("char", FORBIDDEN, ids=lambda c: f"U+{ord(c):04X}")
def test_check_name_refuses_control_characters_and_surrogates(char: str) -> None:
    name = f"ste{char}ps"
    message = (
        f"events[0].metric must not contain control characters or surrogates, got {name!r} "
        f"(U+{ord(char):04X} at index 3)"
    )
    rejects([event(metric=name)], "events[0].metric", message)
    with pytest.raises(InvalidInput) as info:
        validate_count_events([{"name": name, "value": 1, "ts": TS}])
    assert info.value.field == "counts[0].name"
    with pytest.raises(InvalidInput) as info:
        check_names(["ok", name], "metrics")
    assert info.value.field == "metrics[1]"


@pytest.mark.parametrize("char", FORBIDDEN, ids=lambda c: f"U+{ord(c):04X}")
def test_normalize_user_refuses_control_characters_and_surrogates(char: str) -> None:
    # PSD's uids are integers; a native string id is a name, with a name's rule.
    for user in (char, f"alice{char}", f"{char}42"):
        with pytest.raises(
            InvalidInput, match=r"^events\[0\]\.user must not contain control characters"
        ) as info:
            validate_counter_events([event(user=user)])
        assert info.value.field == "events[0].user"
    with pytest.raises(InvalidInput) as info:
        check_users([1, f"bob{char}"])
    assert info.value.field == "users[1]"


@pytest.mark.parametrize(
    "name",
    [
        "steps per day",  # ASCII space
        "pas\u00a0de\u00a0deux",  # NO-BREAK SPACE (Zs, not printable to Python, still a name)
        "\U0001f468\u200d\U0001f469\u200d\U0001f467",  # family emoji: ZERO WIDTH JOINERs (Cf)
        "\u062e\u0637\u0648\u0627\u062a",  # Arabic
        "\u6b69\u6570",  # CJK
        "a\u2028b",  # LINE SEPARATOR (Zl) is not a control character
        "\U000e0001tag",  # LANGUAGE TAG (Cf)
    ],
)
def test_names_keep_every_other_character(name: str) -> None:
    got = validate_counter_events([event(metric=name, user=name)])
    assert got[0][:2] == (name, name)
    assert validate_count_events([{"name": name, "value": 1, "ts": TS}]) == [(name, TS, 1)]


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=20))
def test_check_name_refuses_exactly_cc_and_cs(name: str) -> None:
    import unicodedata

    bad = any(unicodedata.category(c) in ("Cc", "Cs") for c in name)
    try:
        validate_counter_events([event(metric=name)])
    except InvalidInput as exc:
        assert bad, exc
        assert exc.field == "events[0].metric"
    else:
        assert not bad


def test_a_bad_event_anywhere_refuses_the_whole_batch() -> None:
    events = [event(user=i) for i in range(100)] + [event(metric="steps\x00")]
    rejects(
        events,
        "events[100].metric",
        "events[100].metric must not contain control characters or surrogates, got 'steps\\x00' "
        "(U+0000 at index 5)",
    )


############################################################################################
# Errors quote at most the start of a bad value (security issue, finding 9)


def test_a_10_mb_bad_name_is_quoted_by_its_start() -> None:
    big = "x" * 10_000_000
    for bad_event, field in [
        (event(metric=big), "events[0].metric"),
        (event(user=big), "events[0].user"),
        (event(mode=big), "events[0].mode"),
        (event(value=big), "events[0].value"),
    ]:
        with pytest.raises(InvalidInput) as info:
            validate_counter_events([bad_event])
        assert info.value.field == field
        assert f"'{'x' * 80}'... (10000000 characters)" in info.value.message
        assert len(info.value.message) < 300


def test_a_10_mb_unknown_field_is_cut_in_message_and_field() -> None:
    big = "k" * 10_000_000
    with pytest.raises(InvalidInput) as info:
        validate_counter_events([event(**{big: 1})])
    assert info.value.message.startswith(f"events[0] has unknown fields ['{'k' * 78}")
    assert len(info.value.message) < 300
    assert info.value.field is not None and len(info.value.field) <= 200


def test_a_huge_non_object_event_is_quoted_by_its_start() -> None:
    with pytest.raises(InvalidInput) as info:
        validate_counter_events([["x" * 1000] * 100_000])
    assert info.value.message.startswith("events[0] must be an object, got [")
    assert info.value.message.endswith("... (100000 items)")
    assert len(info.value.message) < 200
