"""statshub's HTTP API on a real server process: its own test sequence, bad input, restarts."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ServerProcess, start_server

PERIOD = 1  # seconds per gauge period in the sequence test (statshub's own test used 2)


def stats_server(tmp: Path, data_dir: Path | None, period: int, fsync: str = "everysec") -> ServerProcess:
    """``pointspace serve`` with statshub's periods shortened (statshub's own test used 2 s)."""
    return start_server(tmp, data_dir=data_dir, extra=[
        "--fsync", fsync, "--stats-gauge-period-s", str(period), "--stats-stream-interval-s", "0.5"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = stats_server(tmp_path_factory.mktemp("statshub"), None, PERIOD)
    yield proc
    proc.stop()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def sleep_till_next_bucket() -> None:
    """statshub_test.go's sleepTillNextBucket (plus 50 ms, so a write lands inside it)."""
    now = time.time()
    time.sleep((now // PERIOD + 1) * PERIOD - now + 0.05)


def post(client: httpx.Client, stat_id: str, body: Any) -> httpx.Response:
    return client.post(f"/stats/{stat_id}", json=body)


def query(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/stats/")
    assert response.status_code == 200
    body = response.json()
    assert body["succeeded"] is True and body["error"] == ""
    return body["dims"]


def get(dims: dict[str, Any], path: str, table: str) -> int:
    dim, value, stat = path.split(":")
    return dims[dim][value].get(table, {}).get(stat, 0)


def test_statshub_test_sequence(client: httpx.Client) -> None:
    """TestUpdateAndQuery (statshub_test.go) over HTTP, with 1-second gauge periods."""
    refused = post(client, "myid1", {"dims": {"country": "total"}, "counters": {"counterA": 10}})
    assert refused.status_code == 400 and refused.json()["succeeded"] is False
    update: dict[str, Any] = {"dims": {"country": "es", "user": "bob"}, "counters": {"counterA": 50},
                              "increments": {"counterB": 500}, "gauges": {"gaugeA": 5000, "gaugeAA": 0},
                              "members": {"gaugeB": "item1"}}
    sleep_till_next_bucket()
    assert post(client, "myid1", update).json() == {"succeeded": True, "error": ""}
    sleep_till_next_bucket()
    d = query(client)
    for prefix in ("country:es", "user:bob", "country:total", "user:total"):
        assert get(d, f"{prefix}:counterA", "counters") == 50
        assert get(d, f"{prefix}:counterB", "counters") == 500
        assert get(d, f"{prefix}:gaugeA", "gauges") == 5000
        assert d[prefix.split(":")[0]][prefix.split(":")[1]]["gauges"]["gaugeAA"] == 0  # present, 0
        assert get(d, f"{prefix}:gaugeB", "gauges") == 1

    update = {"dims": {"country": "es", "user": "bob"}, "counters": {"counterA": 60},
              "increments": {"counterB": 600}, "gauges": {"gaugeA": 0, "gaugeAA": 50000},
              "members": {"gaugeB": "item2"}}
    sleep_till_next_bucket()
    post(client, "myid1", update)
    sleep_till_next_bucket()
    d = query(client)
    for prefix in ("country:es", "user:bob", "country:total", "user:total"):
        assert get(d, f"{prefix}:counterA", "counters") == 60
        assert get(d, f"{prefix}:counterB", "counters") == 1100
        assert get(d, f"{prefix}:gaugeA", "gauges") == 0
        assert get(d, f"{prefix}:gaugeAA", "gauges") == 50000
        assert get(d, f"{prefix}:gaugeB", "gauges") == 2

    sleep_till_next_bucket()
    post(client, "myid1", {"dims": {"country": "es", "user": "bob"}, "members": {"gaugeB": "item2"}})
    sleep_till_next_bucket()
    d = query(client)
    assert get(d, "country:es:gaugeB", "gauges") == get(d, "user:bob:gaugeB", "gauges") == 2

    sleep_till_next_bucket()
    post(client, "myid1", {"dims": {"country": "es", "user": "bob"}, "gauges": {"gaugeA": 0, "gaugeAA": 50000}})
    post(client, "myid2", {"dims": {"country": "de", "user": "bob"}, "counters": {"counterA": 70},
                           "increments": {"counterB": 700}, "gauges": {"gaugeA": 7000, "gaugeAA": 70000},
                           "members": {"gaugeB": "item3"}})
    sleep_till_next_bucket()
    d = query(client)
    expected = {
        "counters": {"country:es:counterA": 60, "country:es:counterB": 1100, "country:de:counterA": 70,
                     "country:de:counterB": 700, "user:bob:counterA": 130, "user:bob:counterB": 1800,
                     "country:total:counterA": 130, "country:total:counterB": 1800,
                     "user:total:counterA": 130, "user:total:counterB": 1800},
        "gauges": {"country:es:gaugeA": 0, "country:es:gaugeAA": 50000, "country:es:gaugeB": 2,
                   "country:de:gaugeA": 7000, "country:de:gaugeAA": 70000, "country:de:gaugeB": 1,
                   "user:bob:gaugeA": 7000, "user:bob:gaugeB": 3, "country:total:gaugeA": 7000,
                   "country:total:gaugeAA": 120000, "country:total:gaugeB": 3, "user:total:gaugeA": 7000,
                   "user:total:gaugeAA": 120000, "user:total:gaugeB": 3},
    }
    for table, paths in expected.items():
        assert {p: get(d, p, table) for p in paths} == paths

    sleep_till_next_bucket()
    d = query(client)
    for path, want in [("country:es:gaugeA", 0), ("country:es:gaugeB", 2), ("country:de:gaugeA", 0),
                       ("country:de:gaugeB", 1), ("user:bob:gaugeA", 0), ("user:bob:gaugeB", 3)]:
        assert get(d, path, "gauges") == want, path
    # One dimension, with or without a trailing slash; an unknown one has only an empty total.
    assert client.get("/stats/country/").json()["dims"].keys() == {"country"}
    assert client.get("/stats/nosuchdim").json() == {"succeeded": True, "error": "",
                                                     "dims": {"nosuchdim": {"total": {}}}}


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"[]", "must be a JSON object"),
        (b"null", "must be a JSON object"),
        (b"{not json", "not valid JSON"),
        (b'{"dims": {"c": "es"}, "counters": {"a": 1.5}}', "body.counters.a must be an integer"),
        (b'{"dims": {"c": "es"}, "counters": {"a": "1"}}', "body.counters.a must be an integer"),
        (b'{"dims": {"c": "es"}, "gauges": {"a": 9223372036854775808}}', "body.gauges.a must be a 64-bit"),
        (b'{"dims": {"c": "es", "d": "Total"}, "counters": {"a": 1}}', "reserved"),
        (b'{"dims": {"c": "es"}, "multiMembers": {"m": "x"}}', "body.multiMembers.m must be an array"),
        (b'{"dims": {"c": "es"}, "Counters": {"a": 1.5}}', "body.counters.a must be an integer"),
        (b'{"dims": {"c": "es"}, "counters": {"a": NaN}}', "not valid JSON"),
        (b'', "empty"),
        (b'  [{"dims": {"c": "es"}}] {}', "must be a JSON object"),
    ],
)
def test_statshub_bad_input_changes_nothing(client: httpx.Client, content: bytes, needle: str) -> None:
    before = client.get("/stats/c").json()
    response = client.post("/stats/bad", content=content)
    assert response.status_code == 400
    body = response.json()
    assert body["succeeded"] is False and needle in body["error"], body
    assert body["error"].startswith(("Unable to decode request: ", "Unable to post stats: "))
    assert client.get("/stats/c").json() == before


def test_statshub_too_many_members_is_refused(client: httpx.Client) -> None:
    members = [f"member-{i:08d}" for i in range(300_000)]  # past engine.stats.MAX_UPDATE_MEMBERS
    response = client.post("/stats/big", json={"dims": {"c": "big"}, "multiMembers": {"m": members}})
    assert response.status_code == 400
    assert response.json()["succeeded"] is False
    assert response.json()["error"].startswith("Unable to post stats: body.multiMembers.m: ")
    assert client.get("/stats/c").json()["dims"]["c"].get("big") is None


def test_statshub_body_limit_is_the_max_body_bytes_setting(client: httpx.Client, tmp_path: Path) -> None:
    """statshub had no body limit of its own (Go's net/http reads any size): the server's
    ``max_body_bytes`` applies (32 MiB by default), as on every other route."""
    members = [f"member-{i:08d}-{'x' * 180}" for i in range(12_000)]
    for first in range(0, 12_000, 4_000):  # ~780 KB per update, the most members one may carry
        response = client.post("/stats/big", json={"dims": {"size": "big5"},
                                                   "multiMembers": {"m": members[first:first + 4_000]}})
        assert response.json() == {"succeeded": True, "error": ""}
    count = client.get("/stats/size").json()["dims"]["size"]["big5"]["gauges"]["m"]
    assert abs(count - 12_000) < 0.02 * 12_000  # a sketch's estimate past unique_exact_limit
    small = start_server(tmp_path, env={**os.environ, "POINTSPACE_MAX_BODY_BYTES": "4096"})
    try:
        with small.client() as c:
            response = c.post("/stats/x", json={"dims": {"c": "x"}, "multiMembers": {"m": members[:100]}})
            assert response.status_code == 413 and response.json()["succeeded"] is False
            assert "4096" in response.json()["error"]
    finally:
        small.stop()


def _healthz_seconds(server: ServerProcess) -> float:
    with httpx.Client(base_url=server.url, timeout=60) as c:
        started = time.monotonic()
        assert c.get("/healthz").status_code == 200
        return time.monotonic() - started


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        # The red team's 120 KB body: 64 dims x 10,000 counters (was 200 after ~4 s, +450 MB).
        ({"dims": {f"d{i}": f"v{i}" for i in range(64)}, "counters": {f"c{i}": i for i in range(10_000)}},
         "body.counters: an update may carry at most 1000 stats"),
        ({"dims": {f"d{i}": f"v{i}" for i in range(64)}, "counters": {f"c{i}": i for i in range(1_000)}},
         "body.dims: an update may touch at most 4096 roll-ups"),
        ({"dims": {f"d{i}": f"v{i}" for i in range(64)}, "multiMembers": {"m": [f"u{i}" for i in range(20_000)]}},
         "body.multiMembers.m: an update may make at most 4096 member additions"),
    ],
)
def test_statshub_amplified_updates_are_refused_at_once(client: httpx.Client, server: ServerProcess,
                                                        body: dict[str, Any], needle: str) -> None:
    before = client.get("/stats/").json()
    done = trio_free_concurrently(lambda: client.post("/stats/cnt1", json=body), lambda: _healthz_seconds(server))
    response, healthz = done
    assert response.status_code == 400, response.text
    assert response.json()["succeeded"] is False and needle in response.json()["error"], response.text
    assert response.json()["error"].startswith("Unable to post stats: ")
    assert healthz < 1.0
    assert client.get("/stats/").json() == before


def trio_free_concurrently(first: Any, second: Any) -> tuple[Any, Any]:
    """``first()`` and ``second()`` on two threads (the second a moment later); both results."""
    import threading

    out: list[Any] = [None, None]
    thread = threading.Thread(target=lambda: out.__setitem__(0, first()))
    thread.start()
    time.sleep(0.05)
    out[1] = second()
    thread.join(60)
    return out[0], out[1]


def test_statshub_stored_stats_per_value_are_bounded(client: httpx.Client) -> None:
    """engine.stats.MAX_STATS_PER_VALUE distinct stats per dimension value; past it the
    update is refused whole, naming the dimension."""
    assert post(client, "wide1", {"dims": {"wide": "w"}, "counters": {f"c{i}": 1 for i in range(600)}}).json() \
        == {"succeeded": True, "error": ""}
    refused = post(client, "wide2", {"dims": {"wide": "w", "other": "o"}, "gauges": {f"g{i}": 1 for i in range(401)}})
    assert refused.status_code == 400
    assert refused.json()["error"].startswith("Unable to post stats: body.dims.wide: wide='w' holds 600 stats")
    assert "other" not in client.get("/stats/").json()["dims"]
    assert post(client, "wide2", {"dims": {"wide": "w"}, "gauges": {f"g{i}": 1 for i in range(400)}}).status_code == 200


def test_statshub_totals_past_64_bits_are_answered(client: httpx.Client) -> None:
    """The red team's sequence: two increments of int64's largest to one id, then one to
    another id: the second and third are refused naming the stat (statshub's Go code kept
    int64); a total across values may pass 64 bits and is answered exactly, never a 500."""
    big = 2**63 - 1
    body = {"dims": {"bigc": "es"}, "increments": {"i": big}}
    assert post(client, "big-a", body).json() == {"succeeded": True, "error": ""}
    for stat_id, needle in (("big-a", "the id's counter 'i'"), ("big-b", "the roll-up of 'i' under bigc='es'")):
        refused = post(client, stat_id, body)
        assert refused.status_code == 400
        assert refused.json()["error"].startswith(f"Unable to post stats: body.increments.i: {needle}")
    for stat_id, value in (("big-b", "de"), ("big-c", "fr")):
        assert post(client, stat_id, {"dims": {"bigc": value}, "increments": {"i": big}}).status_code == 200
    for path in ("/stats/bigc", "/stats/"):
        response = client.get(path)
        assert response.status_code == 200, response.text
        assert response.json()["dims"]["bigc"]["total"]["counters"]["i"] == 3 * big
    native = client.get("/api/dims/bigc")
    assert native.status_code == 200 and native.json()["total"]["counters"]["i"] == 3 * big
    now = int(time.time())
    history = client.get("/api/dims/bigc/stats/i", params={"t1": now - 3600, "t2": now + 60, "step": "hour"})
    assert history.status_code == 200 and history.json()["total"]["values"][-1] == 3 * big


@pytest.mark.parametrize("name", ["d" * 5000, "a\x00b", "a\x7fb"])
def test_statshub_get_checks_the_dimension(client: httpx.Client, name: str) -> None:
    response = client.get("/stats/" + quote_path(name))
    assert response.status_code == 400
    body = response.json()
    assert body["succeeded"] is False and body["error"].startswith("Unable to query stats: dim ")
    assert len(response.content) < 400


def quote_path(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"dims": {"go": "go1"}, "counters": {"n": 1}, "unknown": [1, 2], "Extra": null}', {"n": 1}),
        (b'{"Dims": {"go": "go2"}, "Counters": {"n": 2}, "INCREMENTS": {"i": 3}}', {"n": 2, "i": 3}),
        (b'{"dims": {"go": "go3"}, "counters": {"n": 1}, "Counters": {"n": 4, "m": 5}}', {"n": 4, "m": 5}),
        (b'{"dims": {"go": "go4"}, "counters": {"n": 6}} trailing, {"never": "read"}', {"n": 6}),
        (b' \n{"dims": {"go": "go5"}, "counter\xc5\xbf": {"n": 7}}}', {"n": 7}),  # U+017F folds to s
    ],
)
def test_statshub_body_is_read_as_gos_decoder_reads_it(client: httpx.Client, content: bytes,
                                                       expected: dict[str, int]) -> None:
    """json.NewDecoder(r.Body).Decode(&update): one document, unknown keys ignored, keys
    matched to fields case-insensitively, a field named twice merged."""
    value = content.split(b'"go": "')[1].split(b'"')[0].decode()
    response = client.post(f"/stats/{value}", content=content)  # an id per case: counters are absolute
    assert response.json() == {"succeeded": True, "error": ""}, response.text
    assert client.get("/stats/go").json()["dims"]["go"][value] == {"counters": expected}


def test_statshub_methods_and_content_types(client: httpx.Client) -> None:
    for method in ("PUT", "DELETE", "PATCH"):
        response = client.request(method, "/stats/x")
        assert response.status_code == 405 and response.content == b""
    # curl --data-binary (statshub's README) labels the JSON a form: accepted.
    response = client.post("/stats/curl", content=b'{"dims": {"c": "curl"}, "counters": {"n": 1}}',
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.json() == {"succeeded": True, "error": ""}
    assert client.get("/stats/c").json()["dims"]["c"]["curl"] == {"counters": {"n": 1}}
    # A browser's cross-site POST is refused before anything is read.
    response = client.post("/stats/curl", content=b'{"dims": {"c": "curl"}, "counters": {"n": 9}}',
                           headers={"Origin": "https://evil.example", "Content-Type": "text/plain"})
    assert response.status_code == 403
    assert client.get("/stats/c").json()["dims"]["c"]["curl"] == {"counters": {"n": 1}}


def test_statshub_stat_names_and_ids_without_dimensions(client: httpx.Client) -> None:
    assert post(client, "nodims", {"counters": {"x-y": 5}}).json()["succeeded"] is True
    assert "x_y" not in str(client.get("/stats/").json())
    post(client, "nodims", {"dims": {"Kind": "Lone"}, "counters": {"x-y": 7}})
    assert client.get("/stats/kind").json()["dims"]["kind"]["lone"] == {"counters": {"x_y": 2}}


def _stable(dims: dict[str, Any]) -> dict[str, Any]:
    """What a restart must keep exactly whatever the clock: counters and member counts."""
    return {dim: {v: {"counters": m.get("counters"), "members": {k: n for k, n in m.get("gauges", {}).items()
                                                                  if k.startswith("m")}}
                  for v, m in values.items()} for dim, values in dims.items()}


def test_statshub_survives_sigkill_and_clean_stop(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = stats_server(tmp_path, data, 360, fsync="always")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            for i in range(20):
                c.post(f"/stats/id{i % 4}", json={"dims": {"country": f"c{i % 3}", "user": f"u{i % 5}"},
                                                  "counters": {"total": i}, "increments": {"inc": 1},
                                                  "gauges": {"g": i}, "multiMembers": {"members": [f"x{i}", "y"]}})
            before = c.get("/stats/").json()["dims"]
        server.stop(signal.SIGKILL)
        server = stats_server(tmp_path, data, 360, fsync="always")
        with httpx.Client(base_url=server.url, timeout=30) as c:
            assert _stable(c.get("/stats/").json()["dims"]) == _stable(before)
            # The ids' detail came back: a repeated absolute value changes nothing.
            c.post("/stats/id3", json={"dims": {"country": "c0"}, "counters": {"total": 19}})
            assert c.get("/stats/").json()["dims"]["country"]["total"]["counters"] == before["country"]["total"]["counters"]
            after = c.get("/stats/").json()["dims"]
        server.stop(signal.SIGTERM)
        server = stats_server(tmp_path, data, 360)
        with httpx.Client(base_url=server.url, timeout=30) as c:
            assert _stable(c.get("/stats/").json()["dims"]) == _stable(after)
    finally:
        server.stop()
