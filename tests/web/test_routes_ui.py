"""The dashboard's routes (web/ui/routes.py) over HTTP, without a browser: the page and its
files (content types, caching, no file outside web/ui), ``/ui/api/series``,
``/ui/api/occupancy`` and ``/ui/api/boards`` (answers, and bad input as a 4xx naming the
field, never a 500), and their guard when JWT is on.

These live beside the browser test because they are the dashboard's; they need no browser.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from conftest import ServerProcess, start_server
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from web.ui.routes import IMMUTABLE, MAX_POINTS, UI_DIR, load_assets

T0 = 1_700_000_040  # a multiple of 60


def assert_error(r: httpx.Response, status: int, field: str) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["field"] == field, body
    assert isinstance(body["error"], str) and body["error"]
    return body["error"]


def linked_assets(html: str) -> list[str]:
    return re.findall(r'(?:href|src)="(/ui/static/[^"]+)"', html)


############################################################################################
# The page and its files


@pytest.mark.parametrize("path", ["/ui", "/ui/"])
def test_page_is_html_revalidated_and_locked_to_this_server(client, path):
    r = client.get(path)
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["cache-control"] == "no-cache"
    assert r.headers["x-content-type-options"] == "nosniff"
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "http" not in csp
    assert "{{asset:" not in r.text
    again = client.get(path, headers={"If-None-Match": r.headers["etag"]})
    assert (again.status_code, again.content) == (304, b"")
    assert again.headers["etag"] == r.headers["etag"]


def test_page_links_versioned_assets_served_immutable(client):
    links = linked_assets(client.get("/ui").text)
    assert {link.split("?")[0] for link in links} == {
        "/ui/static/app.js", "/ui/static/app.css",
        "/ui/static/vendor/uPlot.iife.min.js", "/ui/static/vendor/uPlot.min.css"}
    for link in links:
        r = client.get(link)
        assert r.status_code == 200, link
        kind = "text/javascript" if link.split("?")[0].endswith(".js") else "text/css"
        assert r.headers["content-type"] == f"{kind}; charset=utf-8", link
        assert r.headers["cache-control"] == IMMUTABLE
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.content == (UI_DIR / link.split("?")[0].removeprefix("/ui/static/")).read_bytes()


def test_static_file_without_current_version_is_revalidated(client):
    plain = client.get("/ui/static/app.js")
    stale = client.get("/ui/static/app.js?v=0000")
    for r in (plain, stale):
        assert r.status_code == 200
        assert r.headers["cache-control"] == "no-cache"
    r = client.get("/ui/static/app.js", headers={"If-None-Match": f'W/{plain.headers["etag"]}'})
    assert r.status_code == 304
    license_text = client.get("/ui/static/vendor/uPlot.LICENSE")
    assert license_text.headers["content-type"] == "text/plain; charset=utf-8"
    assert "MIT License" in license_text.text


@pytest.mark.parametrize("path", [
    "/ui/static/nope.js",
    "/ui/static/index.html",  # the page has one URL
    "/ui/static/vendor/README.md",  # not a kind of file the page serves
    "/ui/static/..%2Froutes_ui.py",
    "/ui/static/%2e%2e/%2e%2e/pyproject.toml",
])
def test_static_file_unknown_is_404(client, path):
    r = client.get(path)
    assert r.status_code == 404, (path, r.text)
    assert r.headers["content-type"].startswith("application/json")


def test_page_files_name_no_outside_host():
    """Nothing the page itself loads or calls is outside the server (the vendored library's
    files are checked by the browser test, which watches every request)."""
    for name in ("index.html", "app.js", "app.css"):
        text = (UI_DIR / name).read_text()
        assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]", text, re.I), name


def test_load_assets_refuses_a_page_linking_a_missing_file(tmp_path: Path):
    (tmp_path / "index.html").write_text('<script src="{{asset:gone.js}}"></script>')
    (tmp_path / "here.css").write_text("body {}")
    with pytest.raises(FileNotFoundError, match=r"links 'gone\.js'"):
        load_assets(tmp_path)
    (tmp_path / "index.html").write_text('<link href="{{asset:here.css}}">')
    assets = load_assets(tmp_path)
    assert assets["index.html"].body.decode() == (
        f'<link href="/ui/static/here.css?v={assets["here.css"].version}">')


############################################################################################
# /ui/api/series


def test_series_counter_periods(client):
    counts = [{"name": "ui-series-c", "value": v, "ts": T0 + s}
              for s, v in ((0, 1), (9, 2), (10, 4), (59, 8), (60, 100))]
    assert client.post("/api/counters", json=counts).json() == {"applied": 5}
    r = client.get("/ui/api/series", params={
        "counter": "ui-series-c", "t2": T0 + 59, "last": 60, "step": 10})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["kind"] == "counter" and body["counter"] == "ui-series-c"
    assert (body["t1"], body["t2"], body["step"]) == (T0, T0 + 59, 10)
    assert body["starts"] == [T0 + 10 * i for i in range(6)]
    assert body["values"] == [3, 4, 0, 0, 0, 8]
    assert body["total"] == 15
    assert abs(body["now"] - time.time()) < 60


def test_series_window_aligned_to_step_and_ending_now_by_default(client):
    body = client.get("/ui/api/series", params={"counter": "ui-series-none", "step": 7}).json()
    assert body["t1"] % 7 == 0
    assert body["t2"] == body["now"]
    assert body["t2"] - body["t1"] < 120 + 7
    assert body["starts"][0] == body["t1"] and len(body["starts"]) == len(body["values"])
    assert set(body["values"]) == {0} and body["total"] == 0


def test_series_user_metric_and_atid(client):
    events = [
        {"metric": "ui-series-m", "user": "ui-u", "value": 5, "ts": T0, "atid": 1},
        {"metric": "ui-series-m", "user": "ui-u", "value": 7, "ts": T0 + 1, "atid": 2},
        {"metric": "ui-series-m", "user": "ui-u", "value": 9, "ts": T0 + 3, "atid": 2},
    ]
    assert client.post("/api/events", json=events).json() == {"applied": 3}
    params: dict[str, Any] = {"user": "ui-u", "metric": "ui-series-m", "t2": T0 + 3, "last": 4}
    body = client.get("/ui/api/series", params=params).json()
    assert (body["kind"], body["user"], body["metric"]) == ("user", "ui-u", "ui-series-m")
    assert body["values"] == [5, 7, 0, 9]
    body = client.get("/ui/api/series", params={**params, "atid": 2}).json()
    assert body["values"] == [0, 7, 0, 9] and body["atid"] == 2


@pytest.mark.parametrize(("params", "field"), [
    ({}, "counter"),
    ({"counter": "c", "user": "1", "metric": "m"}, "counter"),
    ({"counter": ""}, "counter"),
    ({"counter": "x" * 201}, "counter"),
    ({"user": "1"}, "metric"),
    ({"metric": "m"}, "user"),
    ({"user": "", "metric": "m"}, "user"),
    ({"user": "1", "metric": "m", "atid": "two"}, "atid"),
    ({"counter": "c", "step": "0"}, "step"),
    ({"counter": "c", "step": "1.5"}, "step"),
    ({"counter": "c", "step": "86401"}, "step"),
    ({"counter": "c", "last": "0"}, "last"),
    ({"counter": "c", "last": str(10**12)}, "last"),
    ({"counter": "c", "last": "abc"}, "last"),
    ({"counter": "c", "t2": "-1"}, "t2"),
    ({"counter": "c", "t2": "253402300800"}, "t2"),
    ({"counter": "c", "t2": "9" * 40}, "t2"),
    ({"counter": "c", "last": str(MAX_POINTS + 1), "step": "1"}, "step"),
])
def test_series_bad_input_is_400_naming_the_field(client, params, field):
    assert_error(client.get("/ui/api/series", params=params), 400, field)


def test_series_max_points_message(client):
    r = client.get("/ui/api/series", params={"counter": "c", "last": "86400", "step": "1"})
    assert assert_error(r, 400, "step") == (
        f"a series may have at most {MAX_POINTS} points; last=86400 with step=1 gives 86400 -- "
        "use a larger step or a shorter window")


############################################################################################
# /ui/api/occupancy


def iso(seconds: float) -> str:
    """Unix seconds as the Density seed's timestamps (ISO-8601, milliseconds, Z)."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def place_and_send(client: httpx.Client, dpu: str, spaces: dict[str, int],
                   crossings: list[tuple[float, int]]) -> None:
    """Place sensor ``dpu`` (from an hour before T0) and send its crossings as one batch."""
    r = client.put(f"/api/sensors/{dpu}/placement", json={
        "installed": T0 - 3600, "doorway": f"{dpu}-door", "spaces": spaces})
    assert r.status_code == 200, r.text
    events = [{"timestamp": iso(ts), "direction": d, "dpu_id": dpu} for ts, d in crossings]
    r = client.post("/send/batch", json=events)
    assert r.status_code == 200, r.text
    assert r.json()["new"] == len(events)


def test_occupancy_periods_end_peak_and_low(client):
    # One crossing before the window (the count enters it at 1), one exactly at a period's
    # first instant, one after t2 (not in the answer). Sent shuffled: order does not matter.
    place_and_send(client, "ui-occ-1", {"ui-occ-A": 1, "ui-occ-B": -1}, [
        (T0 + 25, -1), (T0 - 30, 1), (T0 + 1, 1), (T0 + 2.5, 1), (T0 + 3, -1), (T0 + 20, -1),
        (T0 + 28, 1), (T0 + 70, 1)])
    r = client.get("/ui/api/occupancy", params={
        "space": "ui-occ-A", "t2": T0 + 59, "last": 60, "step": 10})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["kind"], body["space"]) == ("occupancy", "ui-occ-A")
    assert (body["t1"], body["t2"], body["step"]) == (T0, T0 + 59, 10)
    assert body["starts"] == [T0 + 10 * i for i in range(6)]
    assert body["start"] == 1  # the crossing before the window
    assert body["end"] == [2, 2, 1, 1, 1, 1]
    assert body["peak"] == [3, 2, 1, 1, 1, 1]  # period 2 starts with its -1: never 2 in it
    assert body["low"] == [1, 2, 0, 1, 1, 1]
    assert (body["count"], body["highest"], body["lowest"]) == (1, 3, 0)
    assert abs(body["now"] - time.time()) < 60
    # The other side of the doorway counts the opposite way.
    other = client.get("/ui/api/occupancy", params={
        "space": "ui-occ-B", "t2": T0 + 59, "last": 60, "step": 10}).json()
    assert other["start"] == -1 and other["end"] == [-2, -2, -1, -1, -1, -1]
    assert other["peak"] == [-1, -2, 0, -1, -1, -1] and other["low"] == [-3, -2, -1, -1, -1, -1]
    # The same figures as the native route over the same periods.
    native = client.get("/api/spaces/ui-occ-A/occupancy", params={
        "t1": T0, "t2": T0 + 59, "step": 10}).json()
    assert [native["end"], native["peak"], native["low"]] == [
        body["end"], body["peak"], body["low"]]
    assert [p[0] for p in native["periods"]] == body["starts"]


def test_occupancy_window_aligned_to_step_and_ending_now_by_default(client):
    now = int(time.time())
    place_and_send(client, "ui-occ-2", {"ui-occ-now": 1}, [(now - 5, 1), (now - 4, 1)])
    body = client.get("/ui/api/occupancy", params={"space": "ui-occ-now", "step": 7}).json()
    assert body["t1"] % 7 == 0
    assert body["t2"] == body["now"]
    assert body["t2"] - body["t1"] < 120 + 7
    assert body["starts"][0] == body["t1"]
    assert len(body["starts"]) == len(body["end"]) == len(body["peak"]) == len(body["low"])
    assert body["count"] == body["end"][-1] == 2 == body["highest"]
    assert body["lowest"] == 0 and body["end"][0] == 0 and body["start"] == 0


def test_occupancy_window_from_the_epoch_has_nothing_before_it(client):
    place_and_send(client, "ui-occ-3", {"ui-occ-epoch": 1}, [(T0, 1)])
    body = client.get("/ui/api/occupancy", params={
        "space": "ui-occ-epoch", "t2": 25, "last": 100, "step": 10}).json()
    assert (body["t1"], body["start"], body["starts"]) == (0, 0, [0, 10, 20])
    assert body["end"] == body["peak"] == body["low"] == [0, 0, 0]
    now = client.get("/ui/api/occupancy", params={"space": "ui-occ-epoch"}).json()
    assert now["start"] == now["count"] == 1


def test_occupancy_unknown_space_is_404_naming_space(client):
    r = client.get("/ui/api/occupancy", params={"space": "ui-occ-nowhere"})
    assert assert_error(r, 404, "space") == (
        "no space 'ui-occ-nowhere'; a space comes into being when a sensor's placement names it "
        "(PUT /api/sensors/{dpu}/placement); GET /api/spaces lists them")


@pytest.mark.parametrize(("params", "field"), [
    ({}, "space"),
    ({"space": ""}, "space"),
    ({"space": "x" * 201}, "space"),
    ({"space": "a\x01b"}, "space"),
    ({"space": "a\n"}, "space"),
    ({"space": "s", "step": "0"}, "step"),
    ({"space": "s", "step": "hour"}, "step"),
    ({"space": "s", "step": "86401"}, "step"),
    ({"space": "s", "last": "0"}, "last"),
    ({"space": "s", "last": str(10**12)}, "last"),
    ({"space": "s", "t2": "-1"}, "t2"),
    ({"space": "s", "t2": "253402300800"}, "t2"),
    ({"space": "s", "last": str(MAX_POINTS + 1), "step": "1"}, "step"),
])
def test_occupancy_bad_input_is_400_naming_the_field(client, params, field):
    assert_error(client.get("/ui/api/occupancy", params=params), 400, field)


def test_occupancy_is_in_the_openapi_document_under_ui(client):
    operation = client.get("/openapi.json").json()["paths"]["/ui/api/occupancy"]["get"]
    assert operation["tags"] == ["ui"]
    parameters = {p["name"]: p for p in operation["parameters"]}
    assert set(parameters) == {"space", "last", "step", "t2"}
    assert parameters["space"].get("required") is True
    assert "200" in operation["responses"] and "4XX" in operation["responses"]


############################################################################################
# /ui/api/boards


def test_boards_lists_leaderboards_not_plain_lists(client):
    r = client.post("/api/leaderboards", json={
        "id": "ui-boards-b", "metric": "ui-boards-m", "window": {"t1": T0, "t2": T0 + 60}})
    assert r.status_code == 201, r.text
    r = client.post("/lists", json={"id": "ui-boards-plain", "set": "ui-set"})
    assert r.status_code in (200, 201), r.text
    boards = client.get("/ui/api/boards").json()["boards"]
    assert {"id": "ui-boards-b", "metric": "ui-boards-m"} in boards
    assert "ui-boards-plain" not in {b["id"] for b in boards}


############################################################################################
# With JWT on


class Signer:
    def __init__(self, directory: Path) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "ui.pub").write_bytes(self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    def headers(self, scope: str, **claims: object) -> dict[str, str]:
        now = int(time.time())
        token = jwt.encode({"scope": scope, "iat": now, "exp": now + 600, **claims}, self.key,
                           algorithm="RS256")
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Signer]]:
    keys = tmp_path_factory.mktemp("keys")
    signer = Signer(keys)
    proc = start_server(tmp_path_factory.mktemp("guarded"), extra=["--jwt-key-dir", str(keys)])
    yield proc, signer
    proc.stop()


def test_guarded_page_and_files_are_open(guarded):
    server, _ = guarded
    with server.client() as client:
        page = client.get("/ui")
        assert page.status_code == 200
        for link in linked_assets(page.text):
            assert client.get(link).status_code == 200, link


def test_guarded_occupancy_needs_a_read_token(guarded):
    server, signer = guarded
    with server.client() as client:
        r = client.get("/ui/api/occupancy", params={"space": "ui-g-space"})
        assert "Authorization" in assert_error(r, 401, "Authorization")
        r = client.get("/ui/api/occupancy", params={"space": "ui-g-space"},
                       headers=signer.headers("api:update"))
        assert "api:read" in assert_error(r, 401, "Authorization")
        r = client.put("/api/sensors/ui-g-dpu/placement", headers=signer.headers("api:update"),
                       json={"installed": T0, "doorway": "d", "spaces": {"ui-g-space": 1}})
        assert r.status_code == 200, r.text
        r = client.get("/ui/api/occupancy", params={"space": "ui-g-space"},
                       headers=signer.headers("api:read"))
        assert r.status_code == 200, r.text
        assert r.json()["count"] == 0


@pytest.mark.parametrize("path", ["/ui/api/boards", "/ui/api/series?counter=c"])
def test_guarded_data_needs_a_read_token(guarded, path):
    server, signer = guarded
    with server.client() as client:
        r = client.get(path)
        assert "Authorization" in assert_error(r, 401, "Authorization")
        assert r.headers["www-authenticate"] == 'Bearer realm="pointspace"'
        r = client.get(path, headers=signer.headers("api:update"))
        assert "api:read" in assert_error(r, 401, "Authorization")
        r = client.get(path, headers={"Authorization": "Bearer not.a.token"})
        assert_error(r, 401, "Authorization")
        assert client.get(path, headers=signer.headers("api:read")).status_code == 200


def test_guarded_boards_follow_only_lists(guarded):
    server, signer = guarded
    with server.client() as client:
        for board in ("ui-g-a", "ui-g-b"):
            r = client.post("/api/leaderboards", headers=signer.headers("api:update"), json={
                "id": board, "metric": "m", "window": {"t1": T0, "t2": T0 + 60}})
            assert r.status_code == 201, r.text
        everything = client.get("/ui/api/boards", headers=signer.headers("api:read")).json()
        assert [b["id"] for b in everything["boards"]] == ["ui-g-a", "ui-g-b"]
        some = client.get("/ui/api/boards",
                          headers=signer.headers("api:read", only_lists="ui-g-b")).json()
        assert [b["id"] for b in some["boards"]] == ["ui-g-b"]
