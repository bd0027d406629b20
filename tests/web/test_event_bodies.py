"""web/api/event_bodies.py: the fast path gives the reference's answer, tuples or error.

Bodies are written byte by byte here (not by orjson or msgpack's packer), so they can hold
what a client may send and a packer would not write: duplicate keys, lone surrogate escapes,
surrogates encoded as UTF-8, integers past 64 bits, integral floats, bools, canonical-int
strings, unknown keys. Every generated body goes through both paths in-process; a few of the
nastiest are then posted to a real server, whose answer must be the reference's.
"""

from __future__ import annotations

import itertools
from typing import Any

import msgpack
import orjson
from handmade_bodies import Pairs, Raw, Surrogates, json_object, json_value, msgpack_value, to_json
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import PointspaceError
from engine.events import INT64_MAX, INT64_MIN, MAX_BATCH_EVENTS
from engine.timebuckets import MAX_TS
from web.api import event_bodies
from web.api.event_bodies import (
    decode_counter_events,
    decode_counter_events_fast,
    decode_counter_events_reference,
)

JSON = "application/json"
MSGPACK = "application/msgpack"
NDJSON = "application/x-ndjson"

############################################################################################
# Generated bodies

ints = st.one_of(
    st.integers(0, 10**6),
    st.sampled_from([INT64_MIN, INT64_MAX, INT64_MIN - 1, INT64_MAX + 1, 2**64 - 1, 2**64, 2**70, -1, 0]),
)
timestamps = st.one_of(
    st.integers(1_400_000_000, 1_500_000_000), st.sampled_from([0, -1, MAX_TS, MAX_TS + 1, 5])
)
odd = st.sampled_from([
    Raw("10.0"), Raw("1e3"), Raw("2.5"), Raw("-0"), Raw("1E2"), Raw("9007199254740993.0"),
    True, False, None, "42", "042", "-7", "x", "", [], [("a", 1)], Raw("1e400"),
])
names = st.one_of(
    st.sampled_from(["steps", "points", "s\x00", "a\n", "\u200d", "x" * 200, "x" * 201, "\ud800",
                     Surrogates("m\ud800"), "😀", "narrative.x", " "]),
    st.text(max_size=4),
)
users = st.one_of(
    ints, st.sampled_from(["42", "042", "-0", "-42", "alice", "9223372036854775808", "", "a\x1b",
                           "\udfff", "x" * 201, "١٢"]),
    st.text(max_size=3),
)
FIELDS = {
    "metric": names,
    "user": users,
    "value": ints,
    "ts": timestamps,
    "atid": ints,
    "aid": st.one_of(ints, st.none()),
    "ts1": st.one_of(timestamps, st.none()),
    "mode": st.sampled_from(["add", "diff", "Add", "sum", None]),
}


#: Values the reference accepts: a clean body is valid but for its cross-field rules.
VALID = {
    "metric": st.one_of(st.sampled_from(["steps", "points", "😀", "x" * 200, "a b"]),
                        st.text(st.characters(categories=["L", "N", "P"]), min_size=1, max_size=5)),
    "user": st.one_of(st.integers(INT64_MIN, INT64_MAX),
                      st.sampled_from(["42", "-42", "042", "-0", "alice", "١٢", "9223372036854775808"])),
    "value": st.integers(INT64_MIN, INT64_MAX),
    "ts": st.integers(0, MAX_TS),
    "atid": st.integers(INT64_MIN, INT64_MAX),
    "aid": st.one_of(st.integers(INT64_MIN, INT64_MAX), st.none()),
    "ts1": st.one_of(st.integers(0, MAX_TS), st.none()),
    "mode": st.sampled_from(["add", "diff"]),
}


@st.composite
def events(draw: st.DrawFn, clean: bool) -> Pairs:
    """One event's (key, value) pairs: valid-looking when ``clean`` (then broken at most
    once in a while), else anything."""
    fields = VALID if clean else FIELDS
    pairs: Pairs = [(key, draw(fields[key])) for key in ("metric", "user", "value", "ts")]
    for key in ("atid", "aid", "ts1", "mode"):
        if draw(st.booleans()):
            pairs.append((key, draw(fields[key])))
    for _ in range(draw(st.integers(0, 3)) if not clean else int(draw(st.integers(0, 7)) == 0)):
        if not pairs:
            break
        roll = draw(st.integers(0, 5))
        index = draw(st.integers(0, len(pairs) - 1))
        if roll == 0:
            pairs.append((pairs[index][0], draw(FIELDS.get(pairs[index][0], odd))))  # a duplicate key
        elif roll == 1:
            pairs[index] = (pairs[index][0], draw(odd))
        elif roll == 2:
            del pairs[index]
        elif roll == 3:
            pairs.append((draw(st.sampled_from(["x", "Metric", "\ud800"])), 1))
        elif roll == 4:
            pairs.insert(index, (pairs[index][0], draw(odd)))  # a bad value, then a good one
    if draw(st.booleans()):
        pairs = draw(st.permutations(pairs))
    return pairs


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, str]:
    batch: list[Any] = draw(st.lists(events(draw(st.booleans())), max_size=4))
    if draw(st.integers(0, 9)) == 0:
        batch.insert(0, draw(odd))
    kind = draw(st.sampled_from([JSON, JSON, MSGPACK, NDJSON]))
    if kind == NDJSON:
        text = "\n".join(json_object(e, True) if isinstance(e, list) else json_value(e, True)
                         for e in batch)
        return text.encode("utf-8", "surrogatepass") + draw(st.sampled_from([b"", b"\n", b"\r\n\n"])), kind
    shape = draw(st.integers(0, 5))
    body: Any = batch
    if shape == 0:
        body = [("events", batch)]
    elif shape == 1:
        body = [("events", batch), ("x", 1)]
    elif shape == 2 and batch:
        body = batch[0]  # an object, not a list
    if kind == MSGPACK:
        return msgpack_value(body), kind
    return to_json(body, draw(st.booleans())), kind


############################################################################################
# The two paths


def outcome(decode: Any, data: bytes, content_type: str) -> tuple[Any, ...]:
    try:
        return ("ok", decode(data, content_type))
    except PointspaceError as exc:
        return (type(exc).__name__, exc.http_status, exc.to_json())


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies())
def test_decode_counter_events_fast_matches_reference(case: tuple[bytes, str]) -> None:
    data, content_type = case
    reference = outcome(decode_counter_events_reference, data, content_type)
    fast = decode_counter_events_fast(data, content_type)  # never raises
    if fast is not None:
        assert reference == ("ok", fast), data
    assert outcome(decode_counter_events, data, content_type) == reference


def test_decode_counter_events_fast_takes_plain_batches() -> None:
    batch = [
        {"metric": "steps", "user": 1, "value": 5, "ts": 1496539747},
        {"metric": "steps", "user": "42", "value": 5, "ts": 1496539747, "atid": 2, "aid": 3},
        {"metric": "points", "user": "alice", "value": -1, "ts": 9, "ts1": 5, "aid": 7, "mode": "diff"},
        {"metric": "points", "user": 2, "value": 1, "ts": 9, "ts1": None, "aid": None, "mode": "add"},
    ]
    expected = [
        (1, "steps", 0, None, 1496539747, 5, 1496539747, 0),
        (42, "steps", 2, 3, 1496539747, 5, 1496539747, 0),
        ("alice", "points", 0, 7, 9, -1, 5, 1),
        (2, "points", 0, None, 9, 1, 9, 0),
    ]
    ndjson = b"\n".join(orjson.dumps(e) for e in batch) + b"\n"
    for data, kind in [
        (orjson.dumps(batch), JSON),
        (orjson.dumps({"events": batch}), "application/json; charset=utf-8"),
        (msgpack.packb(batch), MSGPACK),
        (msgpack.packb({"events": batch}), "application/x-msgpack"),
        (ndjson, NDJSON),
    ]:
        assert decode_counter_events_fast(data, kind) == expected
        assert decode_counter_events_reference(data, kind) == expected
    assert decode_counter_events_fast(b"[]", JSON) == []


def test_decode_counter_events_fast_leaves_doubts_to_the_reference() -> None:
    for data in [
        b"",
        b'[{"metric":"m","user":1,"value":10.0,"ts":3}]',
        b'[{"metric":"m","user":1,"value":99999999999999999999999,"ts":3}]',
        b'[{"metric":"\\ud800","user":1,"value":1,"ts":3}]',
        b'[{"metric":"m","user":true,"value":1,"ts":3}]',
        b'[{"metric":"m","user":1,"value":1,"ts":3,"ts1":4}]',
        b'[{"metric":"m","user":1,"value":1,"ts":3,"mode":"diff"}]',
        b'[{"metric":"a\\u200db","user":1,"value":1,"ts":3}]',  # valid, but not printable
    ]:
        assert decode_counter_events_fast(data, JSON) is None, data


def test_decode_counter_events_batch_over_the_limit_is_the_references_413() -> None:
    one = b'{"metric":"m","user":1,"value":1,"ts":3}'
    data = b"[" + b",".join(itertools.repeat(one, MAX_BATCH_EVENTS + 1)) + b"]"
    assert decode_counter_events_fast(data, JSON) is None
    assert outcome(decode_counter_events, data, JSON) == (
        "PayloadTooLarge", 413,
        {"error": f"body holds {MAX_BATCH_EVENTS + 1} items; at most {MAX_BATCH_EVENTS} per batch",
         "field": "body"},
    )


def test_decode_counter_events_switch_off_takes_the_reference(monkeypatch: Any) -> None:
    monkeypatch.setattr(event_bodies, "FAST_DECODE", False)
    calls: list[bytes] = []
    monkeypatch.setattr(event_bodies, "decode_counter_events_fast", lambda d, c: calls.append(d))
    data = b'[{"metric":"m","user":1,"value":1,"ts":3}]'
    assert decode_counter_events(data, JSON) == [(1, "m", 0, None, 3, 1, 3, 0)]
    assert calls == []


############################################################################################
# Over HTTP: the server answers as the reference does

HTTP_CASES = [
    (b'[{"metric":"m","metric":5,"user":1,"value":1,"ts":3}]', JSON),
    (b'[{"metric":5,"metric":"m","user":880001,"value":1,"ts":3}]', JSON),
    (b'[{"metric":"m","user":1,"value":1,"ts":3,"aid":"\\ud800"}]', JSON),
    (b'[{"metric":"m","user":1,"value":18446744073709551616,"ts":3}]', JSON),
    (b'[{"metric":"m","user":"880002","value":10.0,"ts":1e3}]', JSON),
    (b'{"events":[{"metric":"m","user":1,"value":1,"ts":3,"ts1":4}]}', JSON),
    (b'[{"metric":"m","user":1,"value":1,"ts":3,"mode":"diff"}]', JSON),
    (b'[{"metric":"m","user":1,"value":1,"ts":3,"x":1}]', JSON),
    (msgpack_value([[("metric", "m"), ("user", 2**64 - 1), ("value", 1), ("ts", 3)]]), MSGPACK),
    (msgpack_value([[("metric", "m"), ("user", 880003), ("value", 1), ("ts", 3), ("metric", "n")]]), MSGPACK),
    (b'{"metric":"m","user":1,"value":1,"ts":3}\n{"metric":"m","user":1,"value":1.5,"ts":3}\n', NDJSON),
]


def test_events_route_answers_as_the_reference(client: Any) -> None:
    for data, content_type in HTTP_CASES:
        reference = outcome(decode_counter_events_reference, data, content_type)
        r = client.post("/api/events", content=data, headers={"Content-Type": content_type})
        if reference[0] == "ok":
            assert (r.status_code, r.json()) == (200, {"applied": len(reference[1])}), data
        else:
            assert (r.status_code, r.json()) == reference[1:], data
