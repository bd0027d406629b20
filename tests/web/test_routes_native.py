"""End-to-end tests of the native API under /api/ (web/api/routes.py) against a real server.

Batch and streaming ingest (JSON, {"events": [...]}, msgpack, NDJSON), range queries, per-period
breakdowns in time zones, global counters, statistics, msgpack answers, and bad input: every
rejection is a 4xx JSON body naming the field where there is one, never a 500, and a rejected
batch applies nothing.

Every test uses its own user ids, metric names and counter names (the module's server is shared).
"""

from __future__ import annotations

import calendar
import itertools
import json
import select
import signal
import socket
import time

import httpx
import msgpack
import pytest
from conftest import ServerProcess, start_server

MAX_TS = 253402300799  # 9999-12-31 23:59:59 UTC
DAY = 86400
MSGPACK = "application/msgpack"

_ids = itertools.count(800_000)


def new_user() -> int:
    """A user id no other test in this module uses."""
    return next(_ids)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))


def ev(user: object, value: int, ts: int, metric: str = "steps", **extra: object) -> dict:
    return {"metric": metric, "user": user, "value": value, "ts": ts, **extra}


def ingest(client: httpx.Client, events: list[dict]) -> None:
    r = client.post("/api/events", json=events)
    assert r.status_code == 200, r.text
    assert r.json() == {"applied": len(events)}


def query(
    client: httpx.Client, users: list, metrics: list[str], t1: int, t2: int, **extra: object
) -> dict:
    """POST /api/query; returns {user: sums} (and checks the answer's shape)."""
    r = client.post(
        "/api/query", json={"users": users, "metrics": metrics, "t1": t1, "t2": t2, **extra}
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert (body["t1"], body["t2"]) == (t1, t2)
    return {item["user"]: item["sums"] for item in body["results"]}


def total(
    client: httpx.Client, user: object, metric: str = "steps", t1: int = 0, t2: int = MAX_TS
) -> int:
    """One user's sum of one metric over [t1, t2]."""
    (sums,) = query(client, [user], [metric], t1, t2).values()
    return sums[metric]


def breakdown(client: httpx.Client, **body: object) -> dict:
    r = client.post("/api/breakdown", json=body)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    return r.json()


def assert_json_error(r: httpx.Response, status: int, field: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert isinstance(body.get("error"), str) and body["error"]
    if field is not None:
        assert body.get("field") == field, body
    return body


@pytest.fixture(scope="module")
def client(server: ServerProcess):
    """One keep-alive client for the module (building an httpx.Client costs ~0.1 s)."""
    with server.client() as c:
        yield c


@pytest.fixture(scope="module")
def closing(server: ServerProcess):
    """A client that closes the connection after each response, for bad-input tests.

    A keep-alive connection whose request body the server did not read can hang (see
    test_events_oversize_body_keeps_connection_usable); one such hang must not stall the suite.
    """
    with httpx.Client(base_url=server.url, timeout=30, headers={"Connection": "close"}) as c:
        yield c


@pytest.fixture(autouse=True)
def _server_survives(server: ServerProcess):
    """Fail the test that killed the shared server, not every test after it."""
    yield
    assert server.process.poll() is None, f"the server process died:\n{server.log()[-3000:]}"


############################################################################################
# POST /api/events


def test_events_json_list_is_applied(client):
    u = new_user()
    ingest(client, [ev(u, 10, 1000), ev(u, 5, 2000), ev(u, 7, 1000, metric="points")])
    assert query(client, [u], ["steps", "points"], 0, MAX_TS) == {u: {"steps": 15, "points": 7}}


def test_events_object_with_events_list_is_applied(client):
    u = new_user()
    r = client.post("/api/events", json={"events": [ev(u, 10, 1000), ev(u, 1, 1001)]})
    assert r.status_code == 200
    assert r.json() == {"applied": 2}
    assert total(client, u) == 11


@pytest.mark.parametrize(
    "content_type", ["application/msgpack", "application/x-msgpack", "application/vnd.msgpack"]
)
@pytest.mark.parametrize("wrapped", [False, True], ids=["list", "object"])
def test_events_msgpack_body_is_applied(client, content_type, wrapped):
    u = new_user()
    events = [ev(u, 3, 1000), ev(u, 4, 1000, atid=2, aid=9)]
    body = msgpack.packb({"events": events} if wrapped else events)
    r = client.post("/api/events", content=body, headers={"Content-Type": content_type})
    assert r.status_code == 200, r.text
    assert r.json() == {"applied": 2}
    assert total(client, u) == 7


@pytest.mark.parametrize(
    "content_type", ["application/x-ndjson", "application/ndjson", "application/jsonlines"]
)
def test_events_ndjson_body_is_applied(client, content_type):
    u = new_user()
    body = "\n".join(json.dumps(e) for e in [ev(u, 1, 1000), ev(u, 2, 1001), ev(u, 4, 1002)])
    body = body.replace("\n", "\n\n", 1) + "\n"  # a blank line is skipped
    r = client.post("/api/events", content=body, headers={"Content-Type": content_type})
    assert r.status_code == 200, r.text
    assert r.json() == {"applied": 3}
    assert total(client, u) == 7


def test_events_answer_in_msgpack_when_accepted(client):
    u = new_user()
    r = client.post("/api/events", json=[ev(u, 1, 1000)], headers={"Accept": MSGPACK})
    assert r.status_code == 200
    assert r.headers["content-type"] == MSGPACK
    assert msgpack.unpackb(r.content) == {"applied": 1}


def test_events_empty_list_applies_nothing(client):
    r = client.post("/api/events", json=[])
    assert (r.status_code, r.json()) == (200, {"applied": 0})


def test_events_add_mode_is_additive(client):
    u = new_user()
    for _ in range(3):
        ingest(client, [ev(u, 10, 1000, mode="add")])
    assert total(client, u) == 30


def test_events_diff_mode_is_psd_diff_add(client):
    u = new_user()
    ingest(client, [ev(u, 10, 1060, atid=2, aid=3, ts1=1000, mode="diff")])
    ingest(client, [ev(u, 10, 1060, atid=2, aid=3, ts1=1000, mode="diff")])  # replay
    ingest(client, [ev(u, 25, 1120, atid=2, aid=3, ts1=1000, mode="diff")])  # +15 at 1120
    ingest(client, [ev(u, 20, 1180, atid=2, aid=3, ts1=1000, mode="diff")])  # -5 at 1180
    assert total(client, u) == 20
    assert total(client, u, t1=1120, t2=1120) == 15
    assert total(client, u, t1=1180, t2=1180) == -5
    # The same numbers through the PSD read route.
    assert client.get(f"/v1/query/{u}/steps/2/0/{MAX_TS}").text == "20"


def test_events_diff_mode_without_ts1_covers_only_ts(client):
    # ts1 defaults to ts: a report at a new ts does not see the earlier one (full value again).
    u = new_user()
    ingest(client, [ev(u, 10, 1000, aid=1, mode="diff")])
    ingest(client, [ev(u, 10, 1000, aid=1, mode="diff")])
    ingest(client, [ev(u, 10, 2000, aid=1, mode="diff")])
    assert total(client, u) == 20


def test_events_diff_of_zero_on_a_new_metric_is_a_noop(client):
    # Regression: this left an empty per-metric state whose next read killed the server.
    u = new_user()
    ingest(client, [ev(u, 0, 1000, atid=2, aid=3, mode="diff", metric="zero_first")])
    assert query(client, [u], ["zero_first"], 0, MAX_TS, with_atids=False) == {u: {"zero_first": 0}}
    r = client.post(
        "/api/query",
        json={"users": [u], "metrics": ["zero_first"], "t1": 0, "t2": MAX_TS, "with_atids": True},
    )
    assert r.json()["results"] == [{"user": u, "sums": {"zero_first": 0}, "atids": []}]
    body = breakdown(client, users=[u], metrics=["zero_first"], t1=0, t2=2 * DAY - 1, step="day")
    assert series_of(body, u, "zero_first") == [0, 0]
    ingest(client, [ev(u, 5, 2000, atid=2, aid=3, ts1=1000, mode="diff", metric="zero_first")])
    assert total(client, u, "zero_first") == 5


def test_events_string_and_integer_users_are_distinct_unless_canonical(client):
    n = new_user()
    ingest(
        client,
        [ev(str(n), 1, 1000), ev(n, 2, 1000), ev(f"0{n}", 4, 1000), ev(f"user-{n}", 8, 1000)],
    )
    got = query(client, [n, str(n), f"0{n}", f"user-{n}"], ["steps"], 0, 2000)
    assert got == {n: {"steps": 3}, f"0{n}": {"steps": 4}, f"user-{n}": {"steps": 8}}


def test_events_negative_user_ids_and_values(client):
    n = -new_user()
    ingest(client, [ev(n, -5, 1000), ev(str(n), 2, 1000)])
    assert query(client, [n], ["steps"], 0, 2000) == {n: {"steps": -3}}


def test_events_integral_float_value_is_accepted(client):
    u = new_user()
    ingest(client, [ev(u, 2.0, 1000.0)])
    assert total(client, u) == 2


def test_events_at_both_ends_of_time(client):
    u = new_user()
    ingest(client, [ev(u, 1, 0), ev(u, 2, MAX_TS)])
    assert total(client, u, t1=0, t2=0) == 1
    assert total(client, u, t1=MAX_TS, t2=MAX_TS) == 2
    assert total(client, u, t1=1, t2=MAX_TS - 1) == 0


def test_events_sums_beyond_64_bits(client):
    u = new_user()
    ingest(client, [ev(u, 2**63 - 1, 1000), ev(u, 2**63 - 1, 1001)])
    assert total(client, u) == 2**64 - 2
    r = client.post(
        "/api/query",
        json={"users": [u], "metrics": ["steps"], "t1": 0, "t2": 2000},
        headers={"Accept": MSGPACK},
    )
    assert r.status_code == 200
    sums = msgpack.unpackb(r.content)["results"][0]["sums"]
    assert int(sums["steps"]) == 2**64 - 2


############################################################################################
# POST /api/events/stream


def ndjson_lines(events: list[object]) -> list[bytes]:
    return [(e if isinstance(e, bytes) else json.dumps(e).encode()) + b"\n" for e in events]


def test_events_stream_generator_body_is_applied(client):
    u = new_user()
    lines = ndjson_lines([ev(u, i, 1000 + i) for i in range(1, 101)])

    def body():
        data = b"".join(lines)
        for i in range(0, len(data), 37):  # chunks split lines anywhere
            yield data[i : i + 37]

    r = client.post(
        "/api/events/stream", content=body(), headers={"Content-Type": "application/x-ndjson"}
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"applied": 100, "lines": 100}
    assert total(client, u) == sum(range(1, 101))


def test_events_stream_last_line_without_newline_and_crlf(client):
    u = new_user()
    body = json.dumps(ev(u, 1, 1000)).encode() + b"\r\n" + json.dumps(ev(u, 2, 1000)).encode()
    r = client.post("/api/events/stream", content=iter([body]))
    assert r.status_code == 200, r.text
    assert r.json()["applied"] == 2
    assert total(client, u) == 3


@pytest.mark.parametrize(
    "bad",
    [
        b"{not json",
        json.dumps(ev(1, True, 1000)).encode(),
        json.dumps(ev(1, 1, "1000")).encode(),
        json.dumps({"metric": "steps", "user": 1, "value": 1}).encode(),
        b"[1, 2]",
        json.dumps(ev(1, 1, 1000, colour="red")).encode(),
    ],
    ids=["invalid_json", "bool_value", "string_ts", "missing_ts", "not_an_object", "unknown_field"],
)
def test_events_stream_bad_line_applies_everything_before_it_and_nothing_after(closing, bad):
    before, after = new_user(), new_user()
    lines = ndjson_lines(
        [ev(before, 1, 1000 + i) for i in range(3)]
        + [bad]
        + [ev(after, 1, 1000), ev(before, 100, 1000)]
    )
    r = closing.post(
        "/api/events/stream", content=iter(lines), headers={"Content-Type": "application/x-ndjson"}
    )
    body = assert_json_error(r, 400, "line 4")
    assert "line 4" in body["error"]
    assert "3 events before line 4 were applied" in body["error"]
    assert total(closing, before) == 3
    assert total(closing, after) == 0


def test_events_stream_bad_line_after_a_full_group(closing):
    # Groups of 5000 lines are applied as they fill; the bad line is in the second group.
    u, later = new_user(), new_user()
    good = [ev(u, 1, 1000 + i % 50) for i in range(5003)]
    lines = ndjson_lines([*good, b'{"metric": "steps"', ev(later, 1, 1000), ev(u, 1, 1000)])

    def body():
        for i in range(0, len(lines), 500):
            yield b"".join(lines[i : i + 500])

    r = closing.post("/api/events/stream", content=body())
    msg = assert_json_error(r, 400, "line 5004")["error"]
    assert "5003 events before line 5004 were applied" in msg
    assert total(closing, u) == 5003
    assert total(closing, later) == 0


def test_events_stream_blank_lines_count_in_line_numbers(closing):
    u = new_user()
    body = json.dumps(ev(u, 1, 1000)).encode() + b"\n\n{bad\n"
    r = closing.post("/api/events/stream", content=iter([body]))
    assert_json_error(r, 400, "line 3")


def test_events_stream_empty_body_applies_nothing(client):
    r = client.post("/api/events/stream", content=b"")
    assert r.status_code == 200
    assert r.json()["applied"] == 0


############################################################################################
# POST /api/query


def test_query_multi_user_multi_metric(client):
    a, b, c = new_user(), new_user(), new_user()
    ingest(
        client,
        [
            ev(a, 10, 1000),
            ev(a, 3, 1000, metric="points"),
            ev(b, 20, 1500),
            ev(b, 1, 5000, metric="points"),
        ],
    )
    r = client.post(
        "/api/query",
        json={"users": [c, b, a], "metrics": ["steps", "points", "calories"], "t1": 0, "t2": 2000},
    )
    assert r.status_code == 200
    assert r.json() == {
        "t1": 0,
        "t2": 2000,
        "results": [
            {"user": c, "sums": {"steps": 0, "points": 0, "calories": 0}},
            {"user": b, "sums": {"steps": 20, "points": 0, "calories": 0}},
            {"user": a, "sums": {"steps": 10, "points": 3, "calories": 0}},
        ],
    }


def test_query_metrics_may_be_a_single_string(client):
    u = new_user()
    ingest(client, [ev(u, 10, 1000)])
    r = client.post("/api/query", json={"users": [u], "metrics": "steps", "t1": 0, "t2": 2000})
    assert r.json()["results"] == [{"user": u, "sums": {"steps": 10}}]


def test_query_range_is_inclusive(client):
    u = new_user()
    ingest(client, [ev(u, 1, 1000), ev(u, 2, 1001), ev(u, 4, 1002)])
    assert total(client, u, t1=1000, t2=1000) == 1
    assert total(client, u, t1=1001, t2=1002) == 6
    assert total(client, u, t1=1000, t2=1002) == 7
    assert total(client, u, t1=1003, t2=MAX_TS) == 0


def test_query_atid_and_aid_filters(client):
    u = new_user()
    ingest(
        client,
        [
            ev(u, 1, 1000, atid=2, aid=10),
            ev(u, 2, 1000, atid=2, aid=11),
            ev(u, 4, 1000, atid=5, aid=12),
            ev(u, 8, 1000),  # atid 0, no aid
        ],
    )
    assert query(client, [u], ["steps"], 0, 2000)[u]["steps"] == 15
    assert query(client, [u], ["steps"], 0, 2000, atid=2)[u]["steps"] == 3
    assert query(client, [u], ["steps"], 0, 2000, atid=5)[u]["steps"] == 4
    assert query(client, [u], ["steps"], 0, 2000, atid=0)[u]["steps"] == 8
    assert query(client, [u], ["steps"], 0, 2000, aid=11)[u]["steps"] == 2
    assert query(client, [u], ["steps"], 0, 2000, atid=2, aid=11)[u]["steps"] == 2
    assert query(client, [u], ["steps"], 0, 2000, atid=5, aid=11)[u]["steps"] == 0
    assert query(client, [u], ["steps"], 0, 2000, aid=99)[u]["steps"] == 0
    assert query(client, [u], ["steps"], 0, 2000, atid=None, aid=None)[u]["steps"] == 15


def test_query_with_atids_one_per_activity_deduped_across_metrics(client):
    u, v = new_user(), new_user()
    ingest(
        client,
        [
            ev(u, 1, 1000, atid=2, aid=10),
            ev(u, 1, 1000, atid=2, aid=11),
            ev(u, 1, 1000, atid=5, aid=12, metric="points"),
            ev(u, 1, 1000, atid=2, aid=10, metric="points"),
            ev(u, 1, 5000, atid=7, aid=13),  # outside the range
        ],
    )
    r = client.post(
        "/api/query",
        json={
            "users": [u, v],
            "metrics": ["steps", "points"],
            "t1": 0,
            "t2": 2000,
            "with_atids": True,
        },
    )
    results = r.json()["results"]
    assert sorted(results[0]["atids"]) == [2, 2, 5]
    assert results[1] == {"user": v, "sums": {"steps": 0, "points": 0}, "atids": []}
    r = client.post(
        "/api/query",
        json={"users": [u], "metrics": ["steps"], "t1": 0, "t2": 2000, "with_atids": False},
    )
    assert "atids" not in r.json()["results"][0]


def test_query_offsets_shift_each_users_window(client):
    a, b = new_user(), new_user()
    day, end = 1471392000, 1471478399  # 2016-08-17 UTC
    for u in (a, b):
        ingest(
            client,
            [
                ev(u, 1, day - 1),
                ev(u, 2, day),
                ev(u, 4, day + 28800),
                ev(u, 8, end + 28800),
                ev(u, 16, end + 28801),
            ],
        )
    got = query(client, [a, b], ["steps"], day, end, offsets=[28800, -1])
    assert got == {a: {"steps": 4 + 8}, b: {"steps": 1 + 2 + 4}}


def test_query_user_42_string_equals_integer(client):
    n = new_user()
    ingest(client, [ev(str(n), 5, 1000)])
    assert query(client, [n], ["steps"], 0, 2000) == {n: {"steps": 5}}
    r = client.post(
        "/api/query", json={"users": [str(n)], "metrics": ["steps"], "t1": 0, "t2": 2000}
    )
    assert r.json()["results"] == [{"user": n, "sums": {"steps": 5}}]
    assert query(client, [f"0{n}"], ["steps"], 0, 2000) == {f"0{n}": {"steps": 0}}


def test_query_string_user_ids(client):
    u = f"alice-{new_user()}"
    ingest(client, [ev(u, 5, 1000)])
    assert query(client, [u], ["steps"], 0, 2000) == {u: {"steps": 5}}


def test_query_msgpack_request_and_answer(client):
    u = new_user()
    ingest(client, [ev(u, 5, 1000)])
    r = client.post(
        "/api/query",
        content=msgpack.packb({"users": [u], "metrics": ["steps"], "t1": 0, "t2": 2000}),
        headers={"Content-Type": MSGPACK, "Accept": MSGPACK},
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == MSGPACK
    assert msgpack.unpackb(r.content) == {
        "t1": 0,
        "t2": 2000,
        "results": [{"user": u, "sums": {"steps": 5}}],
    }


def test_query_leap_day_and_year_end_boundaries(client):
    u = new_user()
    instants = [
        utc(2016, 2, 28, 23, 59, 59),
        utc(2016, 2, 29),
        utc(2016, 2, 29, 23, 59, 59),
        utc(2016, 3, 1),
        utc(2016, 12, 31, 23, 59, 59),
        utc(2017, 1, 1),
    ]
    ingest(client, [ev(u, 2**i, t) for i, t in enumerate(instants)])
    assert total(client, u, t1=utc(2016, 2, 29), t2=utc(2016, 2, 29, 23, 59, 59)) == 2 + 4
    assert total(client, u, t1=utc(2016, 2, 29, 0, 0, 1), t2=utc(2016, 2, 29, 23, 59, 58)) == 0
    assert (
        total(client, u, t1=utc(2016, 1, 1), t2=utc(2016, 12, 31, 23, 59, 59)) == 1 + 2 + 4 + 8 + 16
    )
    assert total(client, u, t1=utc(2016, 12, 31, 23, 59, 59), t2=utc(2017, 1, 1)) == 16 + 32


############################################################################################
# POST /api/breakdown


def series_of(body: dict, user: object, metric: str = "steps") -> list[int]:
    (item,) = [r for r in body["results"] if r["user"] == user]
    return item["series"][metric]


def test_breakdown_day_in_utc(client):
    u = new_user()
    t0 = utc(2016, 8, 17)
    ingest(
        client,
        [
            ev(u, 1, t0 - 1),
            ev(u, 2, t0),
            ev(u, 4, t0 + DAY - 1),
            ev(u, 8, t0 + DAY),
            ev(u, 16, t0 + 3 * DAY - 1),
        ],
    )
    body = breakdown(client, users=[u], metrics=["steps"], t1=t0, t2=t0 + 3 * DAY - 1, step="day")
    assert body["step"] == "day"
    assert body["periods"] == [
        [t0, t0 + DAY - 1],
        [t0 + DAY, t0 + 2 * DAY - 1],
        [t0 + 2 * DAY, t0 + 3 * DAY - 1],
    ]
    assert body["results"] == [{"user": u, "series": {"steps": [6, 8, 16]}}]


def test_breakdown_default_step_is_day(client):
    u = new_user()
    body = breakdown(client, users=[u], metrics=["steps"], t1=0, t2=2 * DAY - 1)
    assert body["periods"] == [[0, DAY - 1], [DAY, 2 * DAY - 1]]


def test_breakdown_clips_first_and_last_period(client):
    u = new_user()
    t0 = utc(2016, 8, 17)
    ingest(client, [ev(u, 1, t0 + 3600), ev(u, 2, t0 + DAY + 7200), ev(u, 4, t0 + DAY + 7201)])
    body = breakdown(
        client, users=[u], metrics=["steps"], t1=t0 + 3600, t2=t0 + DAY + 7200, step="day"
    )
    assert body["periods"] == [[t0 + 3600, t0 + DAY - 1], [t0 + DAY, t0 + DAY + 7200]]
    assert series_of(body, u) == [1, 2]


def test_breakdown_hour_minute_second(client):
    u = new_user()
    t0 = utc(2016, 5, 10, 12)
    ingest(client, [ev(u, 1, t0 + 59), ev(u, 2, t0 + 60), ev(u, 4, t0 + 3599), ev(u, 8, t0 + 3600)])
    body = breakdown(client, users=[u], metrics=["steps"], t1=t0, t2=t0 + 2 * 3600 - 1, step="hour")
    assert body["periods"] == [[t0, t0 + 3599], [t0 + 3600, t0 + 7199]]
    assert series_of(body, u) == [7, 8]
    body = breakdown(client, users=[u], metrics=["steps"], t1=t0, t2=t0 + 119, step="minute")
    assert body["periods"] == [[t0, t0 + 59], [t0 + 60, t0 + 119]]
    assert series_of(body, u) == [1, 2]
    body = breakdown(client, users=[u], metrics=["steps"], t1=t0 + 58, t2=t0 + 61, step="second")
    assert body["periods"] == [
        [t0 + 58, t0 + 58],
        [t0 + 59, t0 + 59],
        [t0 + 60, t0 + 60],
        [t0 + 61, t0 + 61],
    ]
    assert series_of(body, u) == [0, 1, 2, 0]


def test_breakdown_month_across_leap_february(client):
    u = new_user()
    ingest(
        client,
        [
            ev(u, 1, utc(2016, 1, 31, 23, 59, 59)),
            ev(u, 2, utc(2016, 2, 1)),
            ev(u, 4, utc(2016, 2, 29, 23, 59, 59)),
            ev(u, 8, utc(2016, 3, 1)),
        ],
    )
    body = breakdown(
        client,
        users=[u],
        metrics=["steps"],
        t1=utc(2016, 1, 1),
        t2=utc(2016, 3, 31, 23, 59, 59),
        step="month",
    )
    assert body["periods"] == [
        [utc(2016, 1, 1), utc(2016, 1, 31, 23, 59, 59)],
        [utc(2016, 2, 1), utc(2016, 2, 29, 23, 59, 59)],
        [utc(2016, 3, 1), utc(2016, 3, 31, 23, 59, 59)],
    ]
    assert series_of(body, u) == [1, 6, 8]


def test_breakdown_year_across_new_year(client):
    u = new_user()
    ingest(
        client,
        [
            ev(u, 1, utc(2016, 12, 31, 23, 59, 59)),
            ev(u, 2, utc(2017, 1, 1)),
            ev(u, 4, utc(2018, 6, 1)),
        ],
    )
    body = breakdown(
        client, users=[u], metrics=["steps"], t1=utc(2016, 7, 1), t2=utc(2018, 6, 1), step="year"
    )
    assert body["periods"] == [
        [utc(2016, 7, 1), utc(2016, 12, 31, 23, 59, 59)],
        [utc(2017, 1, 1), utc(2017, 12, 31, 23, 59, 59)],
        [utc(2018, 1, 1), utc(2018, 6, 1)],
    ]
    assert series_of(body, u) == [1, 2, 4]


def test_breakdown_fixed_seconds_step_aligned_to_epoch(client):
    u = new_user()
    t0 = utc(2016, 3, 26, 22)
    ingest(client, [ev(u, 1, t0 + 1800 * i) for i in range(10)])
    body = breakdown(client, users=[u], metrics=["steps"], t1=t0, t2=t0 + 5 * 3600 - 1, step=21600)
    assert body["step"] == 21600
    # 6-hour periods aligned to the epoch: 18:00, 00:00, 06:00 UTC.
    assert body["periods"] == [
        [t0, utc(2016, 3, 26, 23, 59, 59)],
        [utc(2016, 3, 27), t0 + 5 * 3600 - 1],
    ]
    assert series_of(body, u) == [4, 6]


def test_breakdown_europe_oslo_spring_forward_day_has_23_hours(client):
    u = new_user()
    start = utc(2016, 3, 26, 23)  # 2016-03-27 00:00 CET
    ingest(client, [ev(u, 1, start + 1800 * i) for i in range(96)])  # every 30 min for 48 h
    body = breakdown(
        client,
        users=[u],
        metrics=["steps"],
        t1=start,
        t2=utc(2016, 3, 28, 21, 59, 59),
        step="day",
        tz="Europe/Oslo",
    )
    # 2016-03-27 local runs 23:00Z .. 21:59:59Z (23 h); 2016-03-28 local from 22:00Z (CEST).
    assert body["periods"] == [
        [start, utc(2016, 3, 27, 21, 59, 59)],
        [utc(2016, 3, 27, 22), utc(2016, 3, 28, 21, 59, 59)],
    ]
    assert series_of(body, u) == [46, 48]


def test_breakdown_new_york_fall_back_day_has_25_hours(client):
    u = new_user()
    start = utc(2016, 11, 6, 4)  # 2016-11-06 00:00 EDT
    ingest(client, [ev(u, 1, start + 3600 * i) for i in range(49)])  # hourly for 49 h
    body = breakdown(
        client,
        users=[u],
        metrics=["steps"],
        t1=start,
        t2=utc(2016, 11, 8, 4, 59, 59),
        step="day",
        tz="America/New_York",
    )
    assert body["periods"] == [
        [start, utc(2016, 11, 7, 4, 59, 59)],  # 25 h
        [utc(2016, 11, 7, 5), utc(2016, 11, 8, 4, 59, 59)],  # 24 h (EST)
    ]
    assert series_of(body, u) == [25, 24]
    hourly = breakdown(
        client,
        users=[u],
        metrics=["steps"],
        t1=start,
        t2=utc(2016, 11, 7, 4, 59, 59),
        step="hour",
        tz="America/New_York",
    )
    assert len(hourly["periods"]) == 25
    assert series_of(hourly, u) == [1] * 25


def test_breakdown_half_hour_zone_hours(client):
    u = new_user()
    t0 = utc(2016, 3, 27)
    ingest(client, [ev(u, 1, t0 + 1799), ev(u, 2, t0 + 1800)])
    body = breakdown(
        client,
        users=[u],
        metrics=["steps"],
        t1=t0,
        t2=t0 + 3 * 3600,
        step="hour",
        tz="Asia/Kolkata",
    )
    assert body["periods"][:2] == [[t0, t0 + 1799], [t0 + 1800, t0 + 5399]]
    assert series_of(body, u)[:2] == [1, 2]


def test_breakdown_zone_with_seconds_in_its_offset(client):
    # Africa/Monrovia kept UTC-0:44:30 until 1972: local minutes start at :30 UTC seconds,
    # local hours at hh:44:30 UTC, local days at 00:44:30 UTC.
    u = new_user()
    t = utc(1971, 6, 1)
    ingest(client, [ev(u, 1, t + 29), ev(u, 2, t + 30), ev(u, 4, t + 2669), ev(u, 8, t + 2670)])
    body = breakdown(
        client, users=[u], metrics=["steps"], t1=t, t2=t + 89, step="minute", tz="Africa/Monrovia"
    )
    assert body["periods"] == [[t, t + 29], [t + 30, t + 89]]
    assert series_of(body, u) == [1, 2]
    body = breakdown(
        client,
        users=[u],
        metrics=["steps"],
        t1=t,
        t2=t + 2670 + 3599,
        step="hour",
        tz="Africa/Monrovia",
    )
    assert body["periods"] == [[t, t + 2669], [t + 2670, t + 2670 + 3599]]
    assert series_of(body, u) == [7, 8]
    body = breakdown(
        client,
        users=[u],
        metrics=["steps"],
        t1=t,
        t2=t + DAY + 2669,
        step="day",
        tz="Africa/Monrovia",
    )
    assert body["periods"] == [[t, t + 2669], [t + 2670, t + DAY + 2669]]
    assert series_of(body, u) == [7, 8]


def test_breakdown_offset_moves_calendar_boundaries(client):
    u = new_user()
    t0 = utc(2016, 3, 26, 22)
    ingest(client, [ev(u, 1, utc(2016, 3, 26, 22, 59, 59)), ev(u, 2, utc(2016, 3, 26, 23))])
    body = breakdown(
        client, users=[u], metrics=["steps"], t1=t0, t2=t0 + 2 * DAY - 1, step="day", offset=3600
    )
    assert body["periods"] == [
        [t0, utc(2016, 3, 26, 22, 59, 59)],
        [utc(2016, 3, 26, 23), utc(2016, 3, 27, 22, 59, 59)],
        [utc(2016, 3, 27, 23), t0 + 2 * DAY - 1],
    ]
    assert series_of(body, u) == [1, 2, 0]
    body = breakdown(
        client,
        users=[u],
        metrics=["steps"],
        t1=utc(2016, 1, 1),
        t2=utc(2016, 12, 31),
        step="month",
        offset=-3600,
    )
    # UTC - 1 h: 2016-01-01 00:00Z is still 2015-12-31 locally.
    assert body["periods"][:3] == [
        [utc(2016, 1, 1), utc(2016, 1, 1, 0, 59, 59)],
        [utc(2016, 1, 1, 1), utc(2016, 2, 1, 0, 59, 59)],
        [utc(2016, 2, 1, 1), utc(2016, 3, 1, 0, 59, 59)],
    ]


@pytest.mark.parametrize(
    ("step", "tz", "offset"),
    [
        ("year", None, 0),
        ("month", None, 0),
        ("day", None, 0),
        ("hour", None, 0),
        (3 * DAY + 17, None, 0),
        (7 * DAY, None, -3 * DAY),
        ("day", "Europe/Oslo", 0),
        ("month", "America/New_York", 0),
        ("year", "Australia/Lord_Howe", 0),
        ("day", None, 19800),
        ("month", None, -34200),
    ],
)
def test_breakdown_series_add_up_to_range_sum(client, step, tz, offset):
    u = new_user()
    t1, t2 = utc(2015, 11, 3, 7, 13, 5), utc(2016, 4, 2, 2, 1, 7)
    events = [
        ev(u, (i * 37) % 101 - 20, t1 - DAY + i * 40_009, atid=i % 3, metric=m)
        for i in range(400)
        for m in ("steps",)
    ]
    ingest(client, events)
    want = total(client, u, t1=t1, t2=t2)
    body = breakdown(
        client, users=[u], metrics=["steps"], t1=t1, t2=t2, step=step, tz=tz, offset=offset
    )
    periods = body["periods"]
    assert periods[0][0] == t1 and periods[-1][1] == t2
    assert all(b[0] == a[1] + 1 for a, b in zip(periods, periods[1:], strict=False))
    assert all(p[0] <= p[1] for p in periods)
    series = series_of(body, u)
    assert len(series) == len(periods)
    assert sum(series) == want
    # Every period agrees with a plain range query.
    for (a, b), s in list(zip(periods, series, strict=True))[:60]:
        assert total(client, u, t1=a, t2=b) == s, (a, b)
    filtered = breakdown(
        client, users=[u], metrics=["steps"], t1=t1, t2=t2, step=step, tz=tz, offset=offset, atid=1
    )
    assert sum(series_of(filtered, u)) == query(client, [u], ["steps"], t1, t2, atid=1)[u]["steps"]


def test_breakdown_many_users_and_metrics(client):
    a, b = new_user(), new_user()
    ingest(client, [ev(a, 1, 1000), ev(b, 2, DAY + 1000, metric="points")])
    body = breakdown(
        client, users=[a, b], metrics=["steps", "points"], t1=0, t2=2 * DAY - 1, step="day"
    )
    assert body["results"] == [
        {"user": a, "series": {"steps": [1, 0], "points": [0, 0]}},
        {"user": b, "series": {"steps": [0, 0], "points": [0, 2]}},
    ]


def test_breakdown_at_most_10000_periods(client):
    u = new_user()
    body = breakdown(client, users=[u], metrics=["steps"], t1=0, t2=9999, step="second")
    assert len(body["periods"]) == 10_000
    r = client.post(
        "/api/breakdown",
        json={"users": [u], "metrics": ["steps"], "t1": 0, "t2": 10_000, "step": "second"},
    )
    assert_json_error(r, 400, "step")


@pytest.mark.parametrize(
    ("t1", "extra"),
    [(0, {"offset": 3600}), (DAY - 3600, {"tz": "Europe/Oslo"})],  # 1970-01-02 00:00 in Oslo
    ids=["offset", "tz"],
)
def test_breakdown_never_more_than_10000_periods(client, t1, extra):
    r = client.post(
        "/api/breakdown",
        json={
            "users": [new_user()],
            "metrics": ["steps"],
            "t1": t1,
            "t2": t1 + 10_000 * DAY - 1,
            "step": "day",
            **extra,
        },
    )
    assert r.status_code == 400 or len(r.json()["periods"]) <= 10_000, len(r.json()["periods"])


@pytest.mark.parametrize(
    ("step", "tz"),
    [
        ("day", "Pacific/Kiritimati"),
        ("day", "America/New_York"),
        ("month", "Europe/Oslo"),
        ("year", "Asia/Tokyo"),
    ],
)
def test_breakdown_in_zone_up_to_max_timestamp(closing, step, tz):
    u = new_user()
    ingest(closing, [ev(u, 3, MAX_TS)])
    r = closing.post(
        "/api/breakdown",
        json={
            "users": [u],
            "metrics": ["steps"],
            "t1": MAX_TS - 400 * DAY,
            "t2": MAX_TS,
            "step": step,
            "tz": tz,
        },
    )
    assert r.status_code == 200, r.text
    assert sum(series_of(r.json(), u)) == 3


def test_breakdown_with_offset_up_to_max_timestamp(client):
    u = new_user()
    ingest(client, [ev(u, 3, MAX_TS)])
    for step in ("day", "month", "year"):
        body = breakdown(
            client,
            users=[u],
            metrics=["steps"],
            t1=MAX_TS - 400 * DAY,
            t2=MAX_TS,
            step=step,
            offset=50_000,
        )
        assert sum(series_of(body, u)) == 3
        assert body["periods"][-1][1] == MAX_TS


############################################################################################
# GET /api/users/<user>/sums/<metric>


def test_user_sum_reads_one_users_metric(client):
    u = new_user()
    ingest(client, [ev(u, 5, 1000, atid=2, aid=7), ev(u, 3, 1500, atid=4, aid=8)])
    r = client.get(f"/api/users/{u}/sums/steps", params={"t1": 0, "t2": 2000})
    assert r.status_code == 200, r.text
    assert r.json() == {"user": u, "metric": "steps", "t1": 0, "t2": 2000, "sum": 8}
    assert (
        client.get(f"/api/users/{u}/sums/steps", params={"t1": 0, "t2": 2000, "atid": 4}).json()[
            "sum"
        ]
        == 3
    )
    assert (
        client.get(f"/api/users/{u}/sums/steps", params={"t1": 0, "t2": 2000, "aid": 7}).json()[
            "sum"
        ]
        == 5
    )
    assert (
        client.get(f"/api/users/{u}/sums/steps", params={"t1": 1001, "t2": 2000}).json()["sum"] == 3
    )


def test_user_sum_canonical_string_and_unicode_ids(client):
    n = new_user()
    ingest(client, [ev(n, 4, 1000), ev(f"naïve ü {n}", 3, 1000, metric="步数")])
    r = client.get(f"/api/users/{n}/sums/steps", params={"t1": 0, "t2": 2000})
    assert r.json()["user"] == n and r.json()["sum"] == 4
    r = client.get(f"/api/users/naïve ü {n}/sums/步数", params={"t1": 0, "t2": 2000})
    assert r.json() == {"user": f"naïve ü {n}", "metric": "步数", "t1": 0, "t2": 2000, "sum": 3}
    r = client.get(f"/api/users/0{n}/sums/steps", params={"t1": 0, "t2": 2000})
    assert r.json()["user"] == f"0{n}" and r.json()["sum"] == 0


def test_user_sum_in_msgpack(client):
    u = new_user()
    ingest(client, [ev(u, 4, 1000)])
    r = client.get(
        f"/api/users/{u}/sums/steps", params={"t1": 0, "t2": 2000}, headers={"Accept": MSGPACK}
    )
    assert r.headers["content-type"] == MSGPACK
    assert msgpack.unpackb(r.content) == {
        "user": u,
        "metric": "steps",
        "t1": 0,
        "t2": 2000,
        "sum": 4,
    }


def test_counters_breakdown_per_period(client):
    client.post(
        "/api/counters",
        json=[
            {"name": "signup_bd", "value": 2, "ts": 0},
            {"name": "signup_bd", "value": 3, "ts": 86_399},
            {"name": "signup_bd", "value": 7, "ts": 86_400 * 2 + 5},
        ],
    )
    r = client.get("/api/counters/signup_bd/breakdown", params={"t1": 0, "t2": 86_400 * 3 - 1})
    assert r.status_code == 200, r.text
    assert r.json() == {
        "name": "signup_bd",
        "step": "day",
        "periods": [[0, 86_399], [86_400, 172_799], [172_800, 259_199]],
        "series": [5, 0, 7],
    }
    hours = client.get(
        "/api/counters/signup_bd/breakdown",
        params={"t1": 86_400 * 2, "t2": 86_400 * 2 + 7_199, "step": "3600"},
    ).json()
    assert (hours["step"], hours["series"]) == (3600, [7, 0])
    # Calendar days in a zone: Paris is UTC+1 in January 1970, so 23:59:59 UTC on the 1st
    # is already the 2nd there.
    paris = client.get(
        "/api/counters/signup_bd/breakdown",
        params={"t1": 0, "t2": 82_799, "tz": "Europe/Paris"},
    ).json()
    assert paris["series"] == [2]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"t1": 0, "t2": 10, "step": "week"}, "step"),
        ({"t1": 0, "t2": MAX_TS, "step": "1"}, "step"),
        ({"t1": 0, "t2": 10, "tz": "Mars/Olympus"}, "tz"),
        ({"t1": 0}, "t2"),
    ],
)
def test_counters_breakdown_bad_query_is_400(closing, params, field):
    r = closing.get("/api/counters/signup/breakdown", params=params)
    assert_json_error(r, 400, field)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"t2": 10}, "t1"),
        ({"t1": 0}, "t2"),
        ({"t1": "x", "t2": 10}, "t1"),
        ({"t1": 10, "t2": 0}, "t1"),
        ({"t1": 0, "t2": 10, "atid": "run"}, "atid"),
    ],
)
def test_user_sum_bad_query_parameters_are_400(closing, params, field):
    assert_json_error(closing.get("/api/users/1/sums/steps", params=params), 400, field)


############################################################################################
# POST /api/counters, GET /api/counters/<name>


def readcount(client: httpx.Client, name: str, t1: int = 0, t2: int = MAX_TS) -> int:
    r = client.get(f"/v1/readcount/{name}/{t1}/{t2}")
    assert r.status_code == 200, r.text
    return int(r.text)


def test_counters_list_and_object_bodies_are_applied(client):
    r = client.post(
        "/api/counters",
        json=[
            {"name": "signup_n1", "value": 2, "ts": 1000},
            {"name": "signup_n1", "value": 3, "ts": 2000},
        ],
    )
    assert (r.status_code, r.json()) == (200, {"applied": 2})
    r = client.post(
        "/api/counters", json={"counts": [{"name": "signup_n1", "value": 4, "ts": 2000}]}
    )
    assert (r.status_code, r.json()) == (200, {"applied": 1})
    assert readcount(client, "signup_n1") == 9
    assert readcount(client, "signup_n1", 1001, 2000) == 7


def test_counters_read_back_by_name(client):
    client.post(
        "/api/counters",
        json=[
            {"name": "signup_n2", "value": 2, "ts": 1000},
            {"name": "signup_n2", "value": 3, "ts": 2000},
        ],
    )
    r = client.get("/api/counters/signup_n2", params={"t1": 0, "t2": 1500})
    assert r.status_code == 200, r.text
    assert r.json() == {"name": "signup_n2", "t1": 0, "t2": 1500, "sum": 2}
    assert client.get("/api/counters/signup_n2", params={"t1": 1000, "t2": 2000}).json()["sum"] == 5
    assert client.get("/api/counters/never_n2", params={"t1": 0, "t2": MAX_TS}).json()["sum"] == 0
    # The same counter through PSD's readcount.
    assert readcount(client, "signup_n2", 1001, 2000) == 3


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"t2": 10}, "t1"),
        ({"t1": 0}, "t2"),
        ({"t1": 0, "t2": "x"}, "t2"),
        ({"t1": 5, "t2": 1}, "t1"),
        ({"t1": 0, "t2": MAX_TS + 1}, "t2"),
    ],
)
def test_counters_read_bad_query_parameters_are_400(closing, params, field):
    assert_json_error(closing.get("/api/counters/signup", params=params), 400, field)


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"value": 1, "ts": 5}, "counts[1].name"),
        ({"name": "c", "ts": 5}, "counts[1].value"),
        ({"name": "c", "value": 1}, "counts[1].ts"),
        ({"name": "", "value": 1, "ts": 5}, "counts[1].name"),
        ({"name": "c", "value": 1.5, "ts": 5}, "counts[1].value"),
        ({"name": "c", "value": True, "ts": 5}, "counts[1].value"),
        ({"name": "c", "value": 1, "ts": -1}, "counts[1].ts"),
        ({"name": "c", "value": 1, "ts": "5"}, "counts[1].ts"),
        (7, "counts[1]"),
    ],
)
def test_counters_one_bad_item_applies_nothing(closing, bad, field):
    name = f"counter_bad_{field.replace('[', '_').replace(']', '').replace('.', '_')}_{new_user()}"
    r = closing.post("/api/counters", json=[{"name": name, "value": 1, "ts": 5}, bad])
    assert_json_error(r, 400, field)
    assert readcount(closing, name) == 0


def test_counters_body_not_a_list_is_400(closing):
    assert_json_error(closing.post("/api/counters", json={"count": []}), 400, "count")
    assert_json_error(closing.post("/api/counters", json=5), 400)


############################################################################################
# GET /api/stats


def test_stats_counts_commands_and_events(client):
    before = client.get("/api/stats").json()
    assert set(before) == {"router", "commands", "events", "last_seq"}
    assert {"entities", "live_actors", "mailbox_depth", "peak_mailbox_depth"} <= set(
        before["router"]
    )
    u = new_user()
    ingest(client, [ev(u, 1, 1000), ev(u, 1, 1001), ev(u, 1, 1002)])
    after = client.get("/api/stats").json()
    assert after["commands"] == before["commands"] + 1
    assert after["events"] == before["events"] + 3
    assert after["last_seq"] == before["last_seq"] + 1
    assert after["router"]["entities"] >= before["router"]["entities"] + 1


def test_stats_in_msgpack(client):
    r = client.get("/api/stats", headers={"Accept": MSGPACK})
    assert r.status_code == 200
    assert r.headers["content-type"] == MSGPACK
    assert set(msgpack.unpackb(r.content)) == {"router", "commands", "events", "last_seq"}


############################################################################################
# Bad input on /api/events: 400 naming the field, nothing of the batch applied

BAD_EVENTS = {
    "missing_metric": ({"user": 1, "value": 1, "ts": 5}, "metric"),
    "missing_user": ({"metric": "steps", "value": 1, "ts": 5}, "user"),
    "missing_value": ({"metric": "steps", "user": 1, "ts": 5}, "value"),
    "missing_ts": ({"metric": "steps", "user": 1, "value": 1}, "ts"),
    "bool_value": (ev(1, True, 5), "value"),
    "float_value_with_fraction": (ev(1, 1.5, 5), "value"),
    "string_value": (ev(1, "1", 5), "value"),
    "null_value": (ev(1, None, 5), "value"),
    "value_beyond_int64": (ev(1, 2**63, 5), "value"),
    # The JSON parser reads this literal as a float that rounds to -2**63: refused, not rounded.
    "value_below_int64": (ev(1, -(2**63) - 1, 5), "value"),
    "string_ts": (ev(1, 1, "5"), "ts"),
    "float_ts_with_fraction": (ev(1, 1, 5.5), "ts"),
    "negative_ts": (ev(1, 1, -1), "ts"),
    "ts_after_9999": (ev(1, 1, MAX_TS + 1), "ts"),
    "bool_ts": (ev(1, 1, True), "ts"),
    "empty_metric": (ev(1, 1, 5, metric=""), "metric"),
    "long_metric": (ev(1, 1, 5, metric="m" * 201), "metric"),
    "int_metric": (ev(1, 1, 5, metric=7), "metric"),
    "bool_user": (ev(True, 1, 5), "user"),
    "null_user": (ev(None, 1, 5), "user"),
    "empty_user": (ev("", 1, 5), "user"),
    "list_user": (ev([1], 1, 5), "user"),
    "user_beyond_int64": (ev(2**63, 1, 5), "user"),
    "string_atid": (ev(1, 1, 5, atid="run"), "atid"),
    "float_aid": (ev(1, 1, 5, aid=1.5), "aid"),
    "unknown_mode": (ev(1, 1, 5, mode="set"), "mode"),
    "diff_without_aid": (ev(1, 1, 5, mode="diff"), "aid"),
    "ts1_after_ts": (ev(1, 1, 5, ts1=6), "ts1"),
    "string_ts1": (ev(1, 1, 5, ts1="4"), "ts1"),
    "unknown_field": (ev(1, 1, 5, colour="red"), "colour"),
    # The misspelt field is named (not the missing one it was meant to be).
    "misspelt_field": ({"metric": "steps", "user": 1, "value": 1, "timestamp": 5}, "timestamp"),
}


@pytest.mark.parametrize("name", list(BAD_EVENTS))
@pytest.mark.parametrize("wrapped", [False, True], ids=["list", "object"])
def test_events_bad_event_rejects_whole_batch(closing, name, wrapped):
    bad, field = BAD_EVENTS[name]
    u = new_user()
    events = [ev(u, 1, 1000), bad, ev(u, 2, 1001)]
    r = closing.post("/api/events", json={"events": events} if wrapped else events)
    prefix = "events" if wrapped else "body"
    body = assert_json_error(r, 400, f"{prefix}[1].{field}")
    assert f"{prefix}[1]" in body["error"]
    assert total(closing, u) == 0


def test_events_bad_event_in_msgpack_batch_rejects_whole_batch(closing):
    u = new_user()
    body = msgpack.packb([ev(u, 1, 1000), ev(u, 1, 1000), ev(u, True, 1000)])
    r = closing.post("/api/events", content=body, headers={"Content-Type": MSGPACK})
    assert_json_error(r, 400, "body[2].value")
    assert total(closing, u) == 0


def test_events_bad_line_in_ndjson_batch_rejects_whole_batch(closing):
    u = new_user()
    body = json.dumps(ev(u, 1, 1000)) + "\n{bad json\n" + json.dumps(ev(u, 1, 1000)) + "\n"
    r = closing.post("/api/events", content=body, headers={"Content-Type": "application/x-ndjson"})
    assert_json_error(r, 400, "body")
    assert total(closing, u) == 0


@pytest.mark.parametrize(
    ("body", "content_type", "field"),
    [
        (b"", "application/json", "body"),
        (b"", None, "body"),
        (b"{", "application/json", "body"),
        (b"not json", "application/json", "body"),
        (b"[1, 2", "application/json", "body"),
        (b"\xc1", MSGPACK, "body"),
        (b"\x93\x01", MSGPACK, "body"),
        (b"5", "application/json", "body"),
        (b'"events"', "application/json", "body"),
        (b"[1]", "application/json", "body[0]"),
        (b'{"events": 5}', "application/json", "events"),
        (b'{"evnts": []}', "application/json", "evnts"),
        (
            b'[{"metric": "m", "user": 1, "value": 99999999999999999999999, "ts": 5}]',
            "application/json",
            "body[0].value",
        ),
    ],
)
def test_events_bad_body_is_400(closing, body, content_type, field):
    headers = {"Content-Type": content_type} if content_type else {}
    assert_json_error(closing.post("/api/events", content=body, headers=headers), 400, field)


def test_events_batch_of_more_than_100000_events_is_413_and_applies_nothing(closing):
    u = new_user()
    one = json.dumps(ev(u, 1, 1000)).encode()
    r = closing.post("/api/events", content=b"[" + b",".join([one] * 100_001) + b"]")
    assert_json_error(r, 413, "body")
    assert total(closing, u) == 0
    r = closing.post("/api/counters", json=[{"name": f"many_{u}", "value": 1, "ts": 5}] * 100_001)
    assert_json_error(r, 413, "counts")


def test_events_oversize_body_is_413_naming_body(closing):
    u = new_user()
    head = json.dumps([ev(u, 1, 1000)]).encode()[:-1]
    body = head + b"," + b" " * (32 * 1024 * 1024) + b"]"
    for path in (
        "/api/events",
        "/api/query",
        "/api/breakdown",
        "/api/counters",
        "/v1/write",
        "/v1/batch",
    ):
        r = closing.post(path, content=body, headers={"Content-Type": "application/json"})
        assert_json_error(r, 413, "body")
    assert total(closing, u) == 0


def _complete_response(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def test_events_oversize_chunked_body_is_413_naming_body(server):
    # No Content-Length: the server counts as the body arrives and answers 413 mid-upload.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        chunk = b"%x\r\n%s\r\n" % (1 << 20, b" " * (1 << 20))
        sock.setblocking(False)
        pending, sent, response = b"", 0, b""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            readable, writable, _ = select.select(
                [sock], [sock] if sent < 40 or pending else [], [], 1
            )
            if readable:
                data = sock.recv(65536)
                if not data:
                    break
                response += data
                if _complete_response(response):
                    break
            if writable:
                if not pending:
                    pending, sent = chunk, sent + 1
                try:
                    pending = pending[sock.send(pending) :]
                except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                    pass
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), response[:200]
    assert sent >= 32, sent  # not answered before the limit was reached
    assert b"application/json" in head
    assert json.loads(body)["field"] == "body"


def test_events_oversize_body_keeps_connection_usable(tmp_path):
    # A server of its own: hung connections would hold the shared one's shutdown for 10 s.
    own = start_server(tmp_path)
    body = b"[" + b" " * (32 * 1024 * 1024) + b"]"
    try:
        for _ in range(12):  # each try loses the race with p > 1/2: twelve make the failure certain
            with httpx.Client(base_url=own.url, timeout=1) as keepalive:
                assert_json_error(keepalive.post("/api/events", content=body), 413, "body")
                assert keepalive.get("/api/stats").status_code == 200
    finally:
        own.stop(signal.SIGKILL)


############################################################################################
# Bad input on /api/query and /api/breakdown

QUERY = {"users": [1], "metrics": ["steps"], "t1": 0, "t2": 10}

BAD_QUERIES = {
    "missing_users": ({"users": None}, "users"),
    "empty_users": ({"users": []}, "users"),
    "users_not_list": ({"users": 1}, "users"),
    "bool_user": ({"users": [1, True]}, "users[1]"),
    "missing_metrics": ({"metrics": None}, "metrics"),
    "empty_metrics": ({"metrics": []}, "metrics"),
    "empty_metric_name": ({"metrics": ["steps", ""]}, "metrics[1]"),
    "missing_t1": ({"t1": None}, "t1"),
    "missing_t2": ({"t2": None}, "t2"),
    "string_t1": ({"t1": "0"}, "t1"),
    "negative_t1": ({"t1": -1}, "t1"),
    "t2_after_9999": ({"t2": MAX_TS + 1}, "t2"),
    "t1_after_t2": ({"t1": 11}, "t1"),
    "string_atid": ({"atid": "run"}, "atid"),
    "bool_aid": ({"aid": False}, "aid"),
    "with_atids_not_bool": ({"with_atids": 1}, "with_atids"),
    "offsets_not_list": ({"offsets": 5}, "offsets"),
    "offsets_wrong_length": ({"offsets": [1, 2]}, "offsets"),
    "offset_not_int": ({"offsets": ["1"]}, "offsets[0]"),
    "offset_too_big": ({"offsets": [2**40]}, "offsets[0]"),
}


@pytest.mark.parametrize("name", list(BAD_QUERIES))
def test_query_bad_input_is_400_naming_field(closing, name):
    change, field = BAD_QUERIES[name]
    body = {**QUERY, **change}
    body = {k: v for k, v in body.items() if v is not None}
    assert_json_error(closing.post("/api/query", json=body), 400, field)


BAD_BREAKDOWNS = {
    **{
        k: v
        for k, v in BAD_QUERIES.items()
        if not k.startswith(("offset", "with_atids", "bool_aid"))
    },
    "unknown_step": ({"step": "week"}, "step"),
    "numeric_string_step": ({"step": "60"}, "step"),
    "zero_step": ({"step": 0}, "step"),
    "negative_step": ({"step": -60}, "step"),
    "bool_step": ({"step": True}, "step"),
    "fractional_step": ({"step": 1.5}, "step"),
    "too_many_periods": ({"t2": 10_000, "step": "second"}, "step"),
    "too_many_periods_tz": (
        {"t2": 10_001 * 3600, "step": "hour", "tz": "America/New_York"},
        "step",
    ),
    "unknown_tz": ({"tz": "Mars/Olympus_Mons"}, "tz"),
    "tz_not_string": ({"tz": 5}, "tz"),
    "tz_path_traversal": ({"tz": "../../etc/passwd"}, "tz"),
    "offset_not_int": ({"offset": "3600"}, "offset"),
    "offset_too_big": ({"offset": 2**40}, "offset"),
}


@pytest.mark.parametrize("name", list(BAD_BREAKDOWNS))
def test_breakdown_bad_input_is_400_naming_field(closing, name):
    change, field = BAD_BREAKDOWNS[name]
    body = {**QUERY, "step": "day", **change}
    body = {k: v for k, v in body.items() if v is not None}
    assert_json_error(closing.post("/api/breakdown", json=body), 400, field)


@pytest.mark.parametrize("path", ["/api/query", "/api/breakdown"])
@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"", "application/json"),
        (b"{", "application/json"),
        (b"[]", "application/json"),
        (b"\xc1", MSGPACK),
        (b"null", "application/json"),
    ],
)
def test_query_and_breakdown_bad_body_is_400_naming_body(closing, path, body, content_type):
    assert_json_error(
        closing.post(path, content=body, headers={"Content-Type": content_type}), 400, "body"
    )


############################################################################################
# Errors in general: JSON (or msgpack) bodies, never a 500


def test_unknown_route_is_404_json(closing):
    for method, path in [
        ("GET", "/api/nothing"),
        ("POST", "/api/events/nothing"),
        ("GET", "/no/such/route"),  # "/" is RankDB's ping
        ("GET", "/v3/query"),
    ]:
        assert_json_error(closing.request(method, path), 404)


def test_wrong_method_is_405_json(closing):
    for method, path in [
        ("GET", "/api/events"),
        ("PUT", "/api/events"),
        ("GET", "/api/events/stream"),
        ("GET", "/api/query"),
        ("DELETE", "/api/breakdown"),
        ("POST", "/api/stats"),
        ("PATCH", "/api/counters"),
    ]:
        r = closing.request(method, path)
        assert_json_error(r, 405)


def test_errors_answer_in_msgpack_when_accepted(closing):
    r = closing.post("/api/query", json={"users": []}, headers={"Accept": MSGPACK})
    assert r.status_code == 400
    assert r.headers["content-type"] == MSGPACK
    assert msgpack.unpackb(r.content)["field"] == "users"
    r = closing.get("/api/nothing", headers={"Accept": MSGPACK})
    assert r.status_code == 404
    assert r.headers["content-type"] == MSGPACK
    assert "error" in msgpack.unpackb(r.content)


def test_native_routes_never_answer_500(closing):
    bodies = [
        None,
        0,
        -1,
        1.5,
        "x",
        [],
        {},
        [None],
        [[]],
        [{}],
        {"events": None},
        {"events": {}},
        {"users": {}},
        {"users": [{}], "metrics": [{}], "t1": [], "t2": {}},
        {"users": [1], "metrics": ["m"], "t1": 0, "t2": 1, "step": []},
        {"users": [1], "metrics": ["m"], "t1": 0, "t2": 1, "step": None, "tz": []},
        {"users": [1], "metrics": ["m"], "t1": 0, "t2": 1, "offsets": [None]},
        {"counts": {}},
        [{"name": {}, "value": {}, "ts": {}}],
        [ev(1, 1, 1, aid=True)],
        [ev(1, 1, 1, ts1=None)],
        [ev(1, 1, 1, atid=None)],
        [ev(1, 1, 1, mode=None)],
        [ev(1, 1, 1, mode=["diff"])],
    ]
    failures = []
    for path in (
        "/api/events",
        "/api/events/stream",
        "/api/query",
        "/api/breakdown",
        "/api/counters",
    ):
        for body in bodies:
            r = closing.post(path, content=json.dumps(body))
            if r.status_code >= 500:
                failures.append((path, body, r.status_code, r.text))
    assert failures == []


def test_events_stream_without_newlines_is_cut_at_the_line_limit_quickly(client):
    # Security review: a newline-free body was rescanned on every chunk (48 MB took 42 s) and
    # buffered toward max_stream_bytes. A line over 1 MiB is now refused as it arrives.
    import time

    from web.api.routes import MAX_LINE_BYTES

    u = new_user()
    first = json.dumps(ev(u, 5, 1000)).encode() + b"\n"

    def body():
        yield first
        for _ in range(8 * MAX_LINE_BYTES // 65536):
            yield b"x" * 65536

    started = time.monotonic()
    r = client.post("/api/events/stream", content=body(),
                    headers={"Content-Type": "application/x-ndjson"})
    assert time.monotonic() - started < 10
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "line 2"
    assert f"longer than {MAX_LINE_BYTES} bytes" in r.json()["error"]
    assert total(client, u) == 5  # the line before it was applied
