"""End-to-end tests of the unique-count routes (web/api/uniques.py) against a real server.

Batch writes in every body form, counts that state their covered range and exactness,
breakdowns in time zones, several series and their union, the OpenAPI document, bad input
(4xx naming the field, nothing stored), and a server restart after SIGKILL (``--fsync
always``: the log replays exact cells and sketches) and after a clean stop (the snapshot).

Every test uses its own series names (the module's server is shared).
"""

from __future__ import annotations

import itertools
import json
import signal
import threading
import time
from pathlib import Path

import httpx
import msgpack
import pytest
from conftest import ServerProcess, start_server

BASE = 1451606400  # 2016-01-01T00:00:00Z
MSGPACK = "application/msgpack"
_ids = itertools.count()


def new_name() -> str:
    return f"visitors-{next(_ids)}"


def members(name: str, keys: list[object], ts: int) -> list[dict[str, object]]:
    return [{"name": name, "member": key, "ts": ts} for key in keys]


def count(client: httpx.Client, name: str, t1: int, t2: int) -> dict[str, object]:
    r = client.get(f"/api/uniques/{name}", params={"t1": t1, "t2": t2})
    assert r.status_code == 200, r.text
    return r.json()


def last_seq(client: httpx.Client) -> int:
    return client.get("/api/stats").json()["last_seq"]


def test_post_uniques_in_every_body_form(client: httpx.Client) -> None:
    name = new_name()
    assert client.post("/api/uniques", json=members(name, [1, 2, "alice"], BASE)).json() == {"applied": 3}
    assert client.post("/api/uniques", json={"members": members(name, ["bob", 2], BASE + 1)}).json() == {
        "applied": 2
    }
    packed = msgpack.packb(members(name, [2**64 - 1], BASE + 2))
    r = client.post("/api/uniques", content=packed, headers={"Content-Type": MSGPACK})
    assert r.status_code == 200, r.text
    ndjson = "".join(json.dumps(m) + "\n" for m in members(name, ["carol", "alice", "42"], BASE + 3))
    r = client.post("/api/uniques", content=ndjson, headers={"Content-Type": "application/x-ndjson"})
    assert r.json() == {"applied": 3}
    answer = count(client, name, BASE, BASE + 59)
    # 1, 2, alice, bob, 2**64-1, carol, 42 ("42" is the member 42; alice twice is one).
    assert answer == {"name": name, "asked": [BASE, BASE + 59], "t1": BASE, "t2": BASE + 59,
                      "count": 7, "exact": True, "rounded": False, "buckets": 1}


def test_count_states_the_rounded_range(client: httpx.Client) -> None:
    name = new_name()
    client.post("/api/uniques", json=members(name, [1], BASE + 10) + members(name, [2], BASE + 70))
    answer = count(client, name, BASE + 30, BASE + 65)
    assert (answer["t1"], answer["t2"], answer["rounded"], answer["count"]) == (BASE, BASE + 119, True, 2)


def test_sketch_answers_carry_bounds(client: httpx.Client) -> None:
    name = new_name()
    batch = members(name, list(range(5000)), BASE)  # past the default 3000 per bucket
    assert client.post("/api/uniques", json=batch).status_code == 200
    answer = count(client, name, BASE, BASE + 59)
    assert answer["exact"] is False and answer["std_devs"] == 2
    assert answer["lower"] <= 5000 <= answer["upper"]
    assert abs(answer["count"] - 5000) < 150


def test_breakdown_by_hour_in_a_zone(client: httpx.Client) -> None:
    name = new_name()
    client.post("/api/uniques", json=members(name, [1, 2], BASE + 100) + members(name, [2, 3, 4], BASE + 3700))
    r = client.get(f"/api/uniques/{name}/breakdown",
                   params={"t1": BASE, "t2": BASE + 3 * 3600 - 1, "step": "hour", "tz": "Asia/Kolkata"})
    assert r.status_code == 200, r.text
    body = r.json()
    # Kolkata is UTC+05:30: its hours start at :30 UTC.
    assert body["periods"] == [[BASE, BASE + 1799], [BASE + 1800, BASE + 5399],
                               [BASE + 5400, BASE + 9000 - 1], [BASE + 9000, BASE + 10799]]
    assert [c["count"] for c in body["counts"]] == [2, 3, 0, 0]
    assert all(c["exact"] and not c["rounded"] for c in body["counts"])


def test_query_several_series_and_their_union(client: httpx.Client) -> None:
    a, b = new_name(), new_name()
    client.post("/api/uniques", json=members(a, list(range(10)), BASE) + members(b, list(range(5, 20)), BASE))
    r = client.post("/api/uniques/query", json={"names": [a, b], "t1": BASE, "t2": BASE + 3599, "union": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [(x["name"], x["count"]) for x in body["results"]] == [(a, 10), (b, 15)]
    assert (body["union"]["count"], body["union"]["exact"]) == (20, True)
    r = client.post("/api/uniques/query", json={"names": [a], "t1": BASE, "t2": BASE + 3599})
    assert "union" not in r.json()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([{"name": "x", "member": -1, "ts": BASE}], "body[0].member"),
        ([{"name": "x", "member": 2**64, "ts": BASE}], "body[0].member"),
        ([{"name": "x", "member": 1, "ts": BASE}, {"name": "x", "member": 1}], "body[1].ts"),
        ([{"name": "x", "member": "a\u0000", "ts": BASE}], "body[0].member"),
        ([{"name": "", "member": 1, "ts": BASE}], "body[0].name"),
        ([{"name": "narrative.users", "member": 1, "ts": BASE}], "body[0].name"),
        ({"members": [{"name": "x", "member": 1, "ts": "now"}]}, "members[0].ts"),
        ([{"name": "x", "member": 1, "ts": BASE, "extra": 1}], "body[0].extra"),
    ],
)
def test_bad_batches_name_the_field_and_store_nothing(client: httpx.Client, body: object, field: str) -> None:
    before = last_seq(client)
    r = client.post("/api/uniques", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field
    assert last_seq(client) == before


def test_oversize_batch_is_a_413(client: httpx.Client) -> None:
    before = last_seq(client)
    r = client.post("/api/uniques", json=members("x", [1], BASE) * 100_001)
    assert r.status_code == 413 and r.json()["field"] == "body"
    assert last_seq(client) == before


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/uniques/x", {"t1": 5, "t2": 4}, "t1"),
        ("/api/uniques/x", {"t1": 5}, "t2"),
        ("/api/uniques/x", {"t1": "a", "t2": 4}, "t1"),
        ("/api/uniques/x/breakdown", {"t1": 0, "t2": 10, "tz": "Mars/Base"}, "tz"),
        ("/api/uniques/x/breakdown", {"t1": 0, "t2": 10**9, "step": "second"}, "step"),
    ],
)
def test_bad_reads_name_the_field(client: httpx.Client, path: str, params: dict, field: str) -> None:
    r = client.get(path, params=params)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field


MAX_TS = 253402300799  # 9999-12-31T23:59:59Z, the last second a write may name


def timed_with_health(server: ServerProcess, method: str, path: str, **kwargs: object) -> tuple[httpx.Response, float, float]:
    """Send one request while another connection polls /healthz every 20 ms: the response,
    its seconds, and the slowest /healthz seen meanwhile (how long the loop was held)."""
    done = threading.Event()
    worst = [0.0]

    def probe() -> None:
        with server.client() as c:
            while not done.is_set():
                t0 = time.monotonic()
                assert c.get("/healthz", timeout=60).status_code == 200
                worst[0] = max(worst[0], time.monotonic() - t0)
                done.wait(0.02)

    thread = threading.Thread(target=probe)
    thread.start()
    try:
        time.sleep(0.05)  # the probe is connected and polling
        with server.client() as c:
            t0 = time.monotonic()
            response = c.request(method, path, timeout=120, **kwargs)  # type: ignore[arg-type]
            elapsed = time.monotonic() - t0
    finally:
        done.set()
        thread.join()
    return response, elapsed, worst[0]


def test_red_team_expensive_reads_are_refused_up_front(server: ServerProcess, client: httpx.Client) -> None:
    # A series with a member in 1970 and one in 9999, and 1,000 more like it: a 10,000-period
    # breakdown took 8 s and 1,000 names 55 s, holding the event loop (and /healthz) all along.
    name, prefix = new_name(), new_name()
    names = [f"{prefix}-{i}" for i in range(1000)]
    batch = [{"name": n, "member": m, "ts": ts} for n in [name, *names] for m, ts in ((1, 0), (2, MAX_TS))]
    assert client.post("/api/uniques", json=batch).status_code == 200
    event = {"timestamp": BASE * 1000, "user": "u", "event": "click"}
    assert client.post("/analytics", params=event).status_code == 204  # narrative.users: hours only
    refused = [
        ("GET", f"/api/uniques/{name}/breakdown", {"params": {"t1": 0, "t2": MAX_TS, "step": 25340231}}, "step"),
        ("POST", "/api/uniques/query", {"json": {"names": names, "t1": 1, "t2": MAX_TS - 1}}, "names"),
        ("POST", "/api/uniques/query", {"json": {"names": names[:100], "t1": 1, "t2": MAX_TS - 1}}, "names"),
        ("GET", "/api/uniques/narrative.users", {"params": {"t1": 0, "t2": MAX_TS}}, "t1"),
    ]
    for method, path, kwargs, field in refused:
        response, elapsed, worst = timed_with_health(server, method, path, **kwargs)
        assert response.status_code == 400, response.text[:300]
        body = response.json()
        assert body["field"] == field and "100000" in body["error"], body
        assert elapsed < 3 and worst < 1, (path, elapsed, worst)


def test_red_team_long_reads_within_budget_leave_the_loop_free(server: ServerProcess, client: httpx.Client) -> None:
    name, prefix = new_name(), new_name()
    names = [f"{prefix}-{i}" for i in range(12)]
    batch = [{"name": n, "member": m, "ts": ts} for n in [name, *names] for m, ts in ((1, 0), (2, MAX_TS))]
    batch += members(name, list(range(50)), BASE)
    assert client.post("/api/uniques", json=batch).status_code == 200
    # 8,030 year periods (one bucket each) and 12 series over 8,000 years (8,030 buckets each):
    # within budget, answered in turns, each visiting only the buckets that hold data.
    response, elapsed, worst = timed_with_health(
        server, "GET", f"/api/uniques/{name}/breakdown", params={"t1": 0, "t2": MAX_TS, "step": "year"})
    assert response.status_code == 200, response.text
    counts = [c["count"] for c in response.json()["counts"]]
    assert len(counts) == 8030 and [c for c in counts if c] == [1, 50, 1]
    assert elapsed < 10 and worst < 1, (elapsed, worst)
    response, elapsed, worst = timed_with_health(
        server, "POST", "/api/uniques/query", json={"names": names, "t1": 1, "t2": MAX_TS - 1, "union": False})
    assert response.status_code == 200, response.text
    assert [(r["count"], r["buckets"], r["t1"], r["t2"]) for r in response.json()["results"]] == [(2, 2, 0, MAX_TS)] * 12
    assert elapsed < 5 and worst < 1, (elapsed, worst)


def test_reserved_series_are_readable(client: httpx.Client) -> None:
    assert client.post("/analytics", params={"timestamp": BASE * 1000, "user": "u", "event": "click"}).status_code == 204
    answer = count(client, "narrative.users", BASE, BASE + 3599)
    assert answer["count"] >= 1 and answer["exact"]


def test_issue_13_native_counter_writes_cannot_move_narrative_figures(client: httpx.Client) -> None:
    before = last_seq(client)
    for body in ([{"name": "narrative.clicks", "value": 5, "ts": 5}],
                 {"counts": [{"name": "fine", "value": 1, "ts": 5}, {"name": "narrative.impressions", "value": 5, "ts": 5}]}):
        r = client.post("/api/counters", json=body)
        assert r.status_code == 400, r.text
        assert r.json()["field"].endswith(".name") and "narrative." in r.json()["error"]
    assert last_seq(client) == before
    r = client.get("/analytics", params={"timestamp": 1000}, headers={"Accept": "application/json"})
    assert r.json() == {"unique_users": 0, "clicks": 0, "impressions": 0}


def test_issue_13_string_members_never_collide_with_integer_ids(client: httpx.Client) -> None:
    name = new_name()
    # "alice" hashes to this integer; one bitmap for both counted them as one member.
    r = client.post("/api/uniques", json=members(name, ["alice", 9933345172075899469, "9933345172075899469"], BASE))
    assert r.status_code == 200, r.text
    assert count(client, name, BASE, BASE + 59)["count"] == 2


def test_issue_13_a_whole_day_is_one_bucket(client: httpx.Client) -> None:
    name = new_name()
    day = 1699920000  # 2023-11-14, data from 15:21 on
    client.post("/api/uniques", json=members(name, [1, 2], day + 55260) + members(name, [3], day + 80000))
    answer = count(client, name, day, day + 86399)
    assert (answer["count"], answer["buckets"], answer["rounded"]) == (3, 1, False)


def test_unique_routes_are_their_own_blueprint(client: httpx.Client) -> None:
    from web.api import uniques

    assert uniques.SEED == "pointspace" and uniques.uniques.url_prefix == "/api"
    assert not hasattr(uniques, "count_body") and not hasattr(uniques, "UNIQUE_ROUTES")
    tags = {op["tags"][0] for path, item in client.get("/openapi.json").json()["paths"].items()
            if path.startswith("/api/uniques") for op in item.values()}
    assert tags == {"uniques"}


def test_openapi_documents_the_unique_routes(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/uniques", "/api/uniques/{name}", "/api/uniques/{name}/breakdown",
            "/api/uniques/query"} <= set(paths)
    body = paths["/api/uniques"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", MSGPACK, "application/x-ndjson"}


@pytest.mark.parametrize("how", ["sigkill", "clean"])
def test_uniques_survive_a_restart(tmp_path: Path, how: str) -> None:
    data = tmp_path / "data"
    extra = ["--fsync", "always"]
    server = start_server(tmp_path, data_dir=data, extra=extra)
    try:
        with server.client() as c:
            c.post("/api/uniques", json=members("big", list(range(4000)), BASE))  # a sketch
            c.post("/api/uniques", json=members("small", ["a", "b", "a"], BASE + 3600))
            before = {n: count(c, n, BASE, BASE + 7199) for n in ("big", "small")}
    finally:
        server.stop(signal.SIGKILL if how == "sigkill" else signal.SIGTERM)
    assert before["big"]["exact"] is False and before["small"]["count"] == 2
    server = start_server(tmp_path, data_dir=data, extra=extra)
    try:
        with server.client() as c:
            after = {n: count(c, n, BASE, BASE + 7199) for n in ("big", "small")}
    finally:
        server.stop()
    assert after["small"] == before["small"]
    big, was = after["big"], before["big"]
    assert (big["exact"], big["t1"], big["t2"]) == (False, was["t1"], was["t2"])
    assert was["lower"] <= big["count"] <= was["upper"]


def test_dashboard_unique_series(client: httpx.Client) -> None:
    name = new_name()
    client.post("/api/uniques", json=members(name, [1, 2], BASE + 10) + members(name, [2, 3], BASE + 70))
    r = client.get("/ui/api/uniques", params={"name": name, "last": 180, "step": 30, "t2": BASE + 179})
    assert r.status_code == 200, r.text
    body = r.json()
    # The step is rounded up to a whole minute; the total is a union (3), not a sum (4).
    assert (body["kind"], body["step"], body["t1"], body["t2"]) == ("unique", 60, BASE, BASE + 179)
    assert body["starts"] == [BASE, BASE + 60, BASE + 120]
    assert (body["values"], body["total"], body["exact"]) == ([2, 2, 0], 3, True)
    r = client.get("/ui/api/uniques", params={"name": name, "last": 366 * 86400, "step": 60})
    assert r.status_code == 400 and r.json()["field"] == "step"
    page = client.get("/ui").text
    assert 'name="unique"' in page
