"""web/compat/psd.py's fast write decoders give the reference's answer, result or error.

``/v1/batch`` (PSD queue messages: JSON, a single object, NDJSON, msgpack) and ``/v1/write``
(one MetricJob) bodies are written by hand (``handmade_bodies.py``: duplicate keys, lone
surrogates, integral floats, integers past 64 bits, unknown keys) and decoded both ways
in-process; a few are posted to a real server, whose answer must be the reference's.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import msgpack
import orjson
import pytest
from conftest import ServerProcess
from handmade_bodies import Pairs, Raw, Surrogates, json_object, json_value, msgpack_value, to_json
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import PointspaceError
from engine.events import INT64_MAX, INT64_MIN
from engine.timebuckets import MAX_TS
from web.bodies import decode_body
from web.compat.psd import (
    decode_batch,
    decode_batch_fast,
    decode_batch_reference,
    decode_write,
    metric_job_event,
)

JSON = "application/json"
MSGPACK = "application/msgpack"
NDJSON = "application/x-ndjson"

int64 = st.integers(INT64_MIN, INT64_MAX)
timestamps = st.integers(0, MAX_TS)
odd = st.sampled_from([
    Raw("10.0"), Raw("1e3"), Raw("2.5"), Raw("-0"), True, None, "42", "042", "", "x",
    INT64_MAX + 1, 2**64, 2**70, -1, 0, [], [("a", 1)], Surrogates("\ud800"), "\ud800",
])
THINGS = st.one_of(
    st.sampled_from(["steps", "points", "newsignup", "narrative.clicks", "x", "x" * 64, "x" * 65,
                     "s\x00", "a\n", "\u200d", "😀", " ", "x" * 201]),
    st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=4),
)
METRIC = {
    "thing": THINGS,
    "uid": st.one_of(int64, st.sampled_from(["42", "042", "-7", "alice", "", "a\x1b", "x" * 201])),
    "value": int64,
    "ts2": st.one_of(timestamps, st.sampled_from([0, 1, MAX_TS])),
    "ts1": st.one_of(timestamps, st.sampled_from([0, 1])),
    "atid": int64,
    "aid": int64,
}
COUNT = {"thing": THINGS, "value": int64, "ts": st.one_of(timestamps, st.sampled_from([0, 1]))}


@st.composite
def job(draw: st.DrawFn, fields: dict[str, Any], required: tuple[str, ...], clean: bool) -> Pairs:
    """A MetricJob's or CountJob's pairs: valid-looking when ``clean``, else broken a little."""
    pairs: Pairs = [(key, draw(fields[key])) for key in required]
    pairs += [(key, draw(fields[key])) for key in fields if key not in required and draw(st.booleans())]
    for _ in range(draw(st.integers(0, 3)) if not clean else int(draw(st.integers(0, 7)) == 0)):
        if not pairs:
            break
        roll = draw(st.integers(0, 4))
        index = draw(st.integers(0, len(pairs) - 1))
        key = pairs[index][0]
        if roll == 0:
            pairs.append((key, draw(fields.get(key, odd))))  # a duplicate key
        elif roll == 1:
            pairs[index] = (key, draw(odd))
        elif roll == 2:
            del pairs[index]
        elif roll == 3:
            pairs.append((draw(st.sampled_from(["x", "Thing", "ts"])), 1))
        else:
            pairs.insert(index, (key, draw(odd)))  # a bad value, then a good one
    return pairs


metric_jobs = st.booleans().flatmap(lambda clean: job(METRIC, ("thing", "uid", "value", "ts2"), clean))
count_jobs = st.booleans().flatmap(lambda clean: job(COUNT, ("thing", "value", "ts"), clean))


@st.composite
def messages(draw: st.DrawFn) -> Any:
    command = draw(st.sampled_from(["metric", "metric", "count", "publish", None]))
    pairs: Pairs = [] if command is None else [("command", command)]
    if command != "count" or draw(st.integers(0, 4)) == 0:
        pairs.append(("metric", draw(st.one_of(metric_jobs, st.just(None)) if draw(st.booleans())
                                     else metric_jobs)))
    if command == "count" or draw(st.integers(0, 4)) == 0:
        pairs.append(("count", draw(count_jobs)))
    if draw(st.integers(0, 9)) == 0:
        pairs.append(("extra", 1))
    if draw(st.booleans()):
        pairs = draw(st.permutations(pairs))
    return pairs if pairs else draw(odd)


@st.composite
def batch_bodies(draw: st.DrawFn) -> tuple[bytes, str]:
    batch = draw(st.lists(messages(), max_size=4))
    kind = draw(st.sampled_from([JSON, JSON, MSGPACK, NDJSON]))
    if kind == NDJSON:
        return "\n".join(json_value(m, True) for m in batch).encode("utf-8", "surrogatepass"), kind
    body: Any = batch[0] if batch and draw(st.integers(0, 3)) == 0 else batch
    if kind == MSGPACK:
        return msgpack_value(body), kind
    return to_json(body, draw(st.booleans())), kind


def outcome(decode: Any, *args: Any) -> tuple[Any, ...]:
    try:
        return ("ok", decode(*args))
    except PointspaceError as exc:
        return (type(exc).__name__, exc.http_status, exc.to_json())


def write_reference(data: bytes) -> Any:
    return metric_job_event(decode_body(data, JSON))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch_bodies())
def test_decode_batch_fast_matches_reference(case: tuple[bytes, str]) -> None:
    data, content_type = case
    reference = outcome(decode_batch_reference, data, content_type)
    fast = decode_batch_fast(data, content_type)  # never raises
    if fast is not None:
        assert reference == ("ok", fast), data
    assert outcome(decode_batch, data, content_type) == reference


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(metric_jobs, st.booleans())
def test_decode_write_matches_reference(pairs: Pairs, ascii_only: bool) -> None:
    data = json_object(pairs, ascii_only).encode("utf-8", "surrogatepass")
    assert outcome(decode_write, data) == outcome(write_reference, data)


def test_decode_batch_fast_takes_plain_batches() -> None:
    batch = [
        {"command": "metric", "metric": {"thing": "steps", "uid": 3, "atid": 2, "aid": 30,
                                         "value": 10, "ts1": 1496539746, "ts2": 1496539747}},
        {"command": "count", "count": {"thing": "newsignup", "value": 1, "ts": 1458061005}},
        {"command": "metric", "metric": {"thing": "points", "uid": "42", "value": 5, "ts2": 100}},
    ]
    expected = (
        [(3, "steps", 2, 30, 1496539747, 10, 1496539746, 1), (42, "points", 0, 0, 100, 5, 0, 1)],
        [("newsignup", 1458061005, 1)],
    )
    ndjson = b"\n".join(orjson.dumps(m) for m in batch)
    for data, kind in [(orjson.dumps(batch), JSON), (msgpack.packb(batch), MSGPACK), (ndjson, NDJSON)]:
        assert decode_batch_fast(data, kind) == expected
        assert decode_batch_reference(data, kind) == expected
    assert decode_batch_fast(orjson.dumps(batch[1]), JSON) == ([], [("newsignup", 1458061005, 1)])
    assert decode_batch_fast(b"[]", JSON) == ([], [])


def test_decode_batch_fast_leaves_doubts_to_the_reference() -> None:
    for message in [
        {"command": "metric", "metric": {"thing": "steps", "uid": 3, "value": 1.0, "ts2": 5}},
        {"command": "metric", "metric": {"thing": "steps", "uid": 3, "value": 1, "ts2": 0}},
        {"command": "metric", "metric": {"thing": "steps", "uid": 3, "value": 1, "ts2": 5, "ts1": 6}},
        {"command": "metric", "metric": None},
        {"command": "count", "count": {"thing": "narrative.clicks", "value": 1, "ts": 5}},
        {"command": "count", "count": {"thing": "xy", "value": 1, "ts": 0}},
        {"command": "publish"},
    ]:
        assert decode_batch_fast(orjson.dumps([message]), JSON) is None, message
    assert decode_batch_fast(b"", JSON) is None


############################################################################################
# Over HTTP: the server answers as the reference does


@pytest.fixture(scope="module")
def closing(server: ServerProcess) -> Iterator[httpx.Client]:
    """A client that closes the connection after each response (as test_routes_psd.py's)."""
    with httpx.Client(base_url=server.url, timeout=30, headers={"Connection": "close"}) as c:
        yield c

BATCH_CASES = [
    (b'[{"command":"metric","metric":{"thing":"steps","uid":1,"value":1,"ts2":5,"ts2":0}}]', JSON),
    (b'[{"command":"metric","command":"count","metric":{"thing":"steps","uid":1,"value":1,"ts2":5}}]', JSON),
    (b'{"command":"metric","metric":{"thing":"steps","uid":1,"value":10.0,"ts2":1e1,"aid":"\\ud800"}}', JSON),
    (msgpack_value([[("command", "count"), ("count", [("thing", "ab"), ("value", 2**64 - 1), ("ts", 5)])]]),
     MSGPACK),
]


def test_batch_route_answers_as_the_reference(closing: httpx.Client) -> None:
    for data, content_type in BATCH_CASES:
        reference = outcome(decode_batch_reference, data, content_type)
        assert reference[0] != "ok", data  # nothing here may change the shared server's data
        r = closing.post("/v1/batch", content=data, headers={"Content-Type": content_type})
        assert (r.status_code, r.json()) == reference[1:], data


def test_write_route_answers_as_the_reference(closing: httpx.Client) -> None:
    for data in [
        b'{"thing":"steps","uid":1,"value":1,"ts2":5,"ts2":0}',
        b'{"thing":"steps","uid":1,"value":1,"ts2":5,"ts1":6}',
        b'{"thing":"steps","uid":true,"value":1,"ts2":5}',
        b'{"thing":"\\ud800","uid":1,"value":1,"ts2":5}',
    ]:
        reference = outcome(write_reference, data)
        assert reference[0] != "ok", data
        r = closing.post("/v1/write", content=data, headers={"Content-Type": JSON})
        assert (r.status_code, r.json()) == (406, reference[2]), data
