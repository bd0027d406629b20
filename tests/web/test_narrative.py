"""The Narrative hourly analytics API (web/compat/narrative.py) against a real server.

The task's examples, hour boundaries (the last millisecond of an hour and the first of the
next), text and JSON answers, bad input (400 naming the parameter, nothing recorded), the
edge's refusals of browser posts, and a restart after SIGKILL with ``--fsync always``.

Each test uses its own hour (the module's server is shared).
"""

from __future__ import annotations

import itertools
import signal
from pathlib import Path

import httpx
import pytest
from conftest import start_server

HOUR_MS = 3_600_000
_hours = itertools.count(440_000)  # 2020-03-12 onwards, one hour per test


def new_hour() -> int:
    """The first millisecond of an hour no other test uses."""
    return next(_hours) * HOUR_MS


def post(client: httpx.Client, ts: int | str, user: str, event: str) -> httpx.Response:
    return client.post("/analytics", params={"timestamp": ts, "user": user, "event": event})


def figures(client: httpx.Client, ts: int) -> str:
    r = client.get("/analytics", params={"timestamp": ts})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    return r.text


def lines(users: int, clicks: int, impressions: int) -> str:
    return f"unique_users,{users}\nclicks,{clicks}\nimpressions,{impressions}\n"


def last_seq(client: httpx.Client) -> int:
    return client.get("/api/stats").json()["last_seq"]


def test_post_answers_204_with_an_empty_body(client: httpx.Client) -> None:
    r = post(client, new_hour() + 5, "user2", "click")
    assert r.status_code == 204
    assert r.content == b"" and "content-type" not in r.headers


def test_the_task_example_counts_distinct_users_and_every_event(client: httpx.Client) -> None:
    hour = new_hour()
    for user, event in [("alice", "click"), ("bob", "impression"), ("alice", "impression"),
                        ("carol", "click"), ("alice", "click"), ("bob", "impression")]:
        assert post(client, hour + 1000, user, event).status_code == 204
    assert figures(client, hour + 42) == lines(3, 3, 3)
    r = client.get("/analytics", params={"timestamp": hour}, headers={"Accept": "application/json"})
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"unique_users": 3, "clicks": 3, "impressions": 3}


def test_an_empty_hour_answers_zeros(client: httpx.Client) -> None:
    assert figures(client, new_hour()) == lines(0, 0, 0)
    r = client.get("/analytics", params={"timestamp": new_hour()}, headers={"Accept": "application/json"})
    assert r.json() == {"unique_users": 0, "clicks": 0, "impressions": 0}


def test_hour_boundaries_last_millisecond_and_first_of_the_next(client: httpx.Client) -> None:
    hour = new_hour()
    next(_hours)  # the next hour is this test's too
    last, first_next = hour + HOUR_MS - 1, hour + HOUR_MS
    post(client, last, "late", "click")
    post(client, first_next, "early", "impression")
    post(client, first_next, "late", "impression")
    assert figures(client, hour) == lines(1, 1, 0)
    assert figures(client, last) == lines(1, 1, 0)
    assert figures(client, first_next) == lines(2, 0, 2)
    assert figures(client, first_next + HOUR_MS - 1) == lines(2, 0, 2)


def test_hours_are_utc_whatever_the_day(client: httpx.Client) -> None:
    # The seed's SQL answered the whole day; the task (and we) answer the hour.
    hour = new_hour()
    next(_hours)
    post(client, hour, "a", "click")
    post(client, hour + HOUR_MS, "b", "click")
    assert figures(client, hour) == lines(1, 1, 0)


def test_the_json_seed_shape_only_when_json_is_preferred(client: httpx.Client) -> None:
    hour = new_hour()
    post(client, hour, "a", "click")
    for accept in ("*/*", "text/plain", "text/*, application/json;q=0.5"):
        r = client.get("/analytics", params={"timestamp": hour}, headers={"Accept": accept})
        assert r.text == lines(1, 1, 0), accept
    r = client.get("/analytics", params={"timestamp": hour},
                   headers={"Accept": "text/plain;q=0.1, application/json"})
    assert r.json() == {"unique_users": 1, "clicks": 1, "impressions": 0}


def test_issue_13_the_type_the_client_lists_first_wins_at_equal_q(client: httpx.Client) -> None:
    hour = new_hour()
    post(client, hour, "a", "click")
    json_answer = {"unique_users": 1, "clicks": 1, "impressions": 0}
    for accept in ("application/json, text/plain", "application/*, text/plain", "application/json, */*"):
        r = client.get("/analytics", params={"timestamp": hour}, headers={"Accept": accept})
        assert r.headers["content-type"] == "application/json", accept
        assert r.json() == json_answer
    for accept in ("text/plain, application/json", "application/json;q=0.9, text/plain", "*/*", ""):
        r = client.get("/analytics", params={"timestamp": hour}, headers={"Accept": accept})
        assert r.text == lines(1, 1, 0), accept


def test_issue_13_usernames_are_counted_exactly_apart_from_integer_ids(client: httpx.Client) -> None:
    hour = new_hour()
    # "alice" hashes to 9933345172075899469: counted as one user before.
    for user in ("alice", "9933345172075899469", "alice"):
        assert post(client, hour, user, "click").status_code == 204
    assert figures(client, hour) == lines(2, 3, 0)


def test_issue_13_a_post_without_event_says_it_is_required(client: httpx.Client) -> None:
    r = client.post("/analytics", params={"timestamp": "1000", "user": "u"})
    assert r.status_code == 400
    assert r.json()["field"] == "event"
    assert r.json()["error"].startswith("event is required (click or impression)")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"user": "u", "event": "click"}, "timestamp"),
        ({"timestamp": "12.5", "user": "u", "event": "click"}, "timestamp"),
        ({"timestamp": "abc", "user": "u", "event": "click"}, "timestamp"),
        ({"timestamp": "-1", "user": "u", "event": "click"}, "timestamp"),
        ({"timestamp": str(10**20), "user": "u", "event": "click"}, "timestamp"),
        ({"timestamp": "1000", "event": "click"}, "user"),
        ({"timestamp": "1000", "user": "", "event": "click"}, "user"),
        ({"timestamp": "1000", "user": "a\u0001", "event": "click"}, "user"),
        ({"timestamp": "1000", "user": "u"}, "event"),
        ({"timestamp": "1000", "user": "u", "event": "view"}, "event"),
        ({"timestamp": "1000", "user": "u", "event": "Click"}, "event"),
    ],
)
def test_bad_posts_are_400_naming_the_parameter_and_record_nothing(
    client: httpx.Client, params: dict[str, str], field: str
) -> None:
    before = last_seq(client)
    r = client.post("/analytics", params=params)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field
    assert last_seq(client) == before
    assert figures(client, 1000) == lines(0, 0, 0)


@pytest.mark.parametrize("timestamp", [None, "x", "-5", "1e3"])
def test_bad_gets_are_400_naming_timestamp(client: httpx.Client, timestamp: str | None) -> None:
    r = client.get("/analytics", params={} if timestamp is None else {"timestamp": timestamp})
    assert r.status_code == 400
    assert r.json()["field"] == "timestamp"


def test_browser_posts_cannot_drive_it(client: httpx.Client) -> None:
    hour = new_hour()
    params = {"timestamp": hour, "user": "victim", "event": "click"}
    before = last_seq(client)
    # A form or text post (what a page sends without a preflight): 415.
    for content_type in ("application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x"):
        r = client.post("/analytics", params=params, content=b"", headers={"Content-Type": content_type})
        assert r.status_code == 415, content_type
    # A foreign page's fetch carries its Origin: 403.
    r = client.post("/analytics", params=params, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and r.json()["field"] == "Origin"
    assert last_seq(client) == before
    # A client's own POST with no body and no Content-Type (ab -m POST, curl -X POST) works.
    assert client.post("/analytics", params=params).status_code == 204


def test_the_counters_and_series_are_readable_natively(client: httpx.Client) -> None:
    hour = new_hour()
    post(client, hour, "a", "impression")
    t1 = hour // 1000
    r = client.get("/api/counters/narrative.impressions", params={"t1": t1, "t2": t1 + 3599})
    assert r.json()["sum"] == 1
    r = client.get("/api/uniques/narrative.users", params={"t1": t1, "t2": t1 + 3599})
    assert (r.json()["count"], r.json()["exact"], r.json()["buckets"]) == (1, True, 1)


def test_narrative_events_survive_sigkill(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = start_server(tmp_path, data_dir=data, extra=["--fsync", "always"])
    hour = 1_600_000_000_000 - 1_600_000_000_000 % HOUR_MS
    try:
        with server.client() as c:
            for i in range(300):
                assert post(c, hour + i, f"user-{i % 40}", ("click", "impression")[i % 2]).status_code == 204
            assert figures(c, hour) == lines(40, 150, 150)
    finally:
        server.stop(signal.SIGKILL)
    server = start_server(tmp_path, data_dir=data, extra=["--fsync", "always"])
    try:
        with server.client() as c:
            assert figures(c, hour + HOUR_MS - 1) == lines(40, 150, 150)
    finally:
        server.stop()
