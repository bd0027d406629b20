"""statshub's live stream (``/stream/...``) with a real websocket client against a real server."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import ServerProcess, start_server
from test_statshub import stats_server
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

INTERVAL = 0.5  # seconds between live messages (statshub: 30)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = stats_server(tmp_path_factory.mktemp("stream"), None, 360)
    with httpx.Client(base_url=proc.url, timeout=30) as c:
        c.post("/stats/a", json={"dims": {"country": "es"}, "counters": {"bytesGiven": 50},
                                 "members": {"users": "u1"}})
        c.post("/stats/b", json={"dims": {"country": "de"}, "counters": {"bytesGiven": 5}})
    yield proc
    proc.stop()


def ws_url(server: ServerProcess, path: str) -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


def test_stream_history_then_updates(server: ServerProcess) -> None:
    with connect(ws_url(server, "/stream/country/*/counter/bytesGiven"), open_timeout=10) as ws:
        history = json.loads(ws.recv(timeout=10))
        assert history["succeeded"] is True and history["error"] == ""
        last = history["intervals"][-1]
        assert last["values"] == {"es": 50, "de": 5, "total": 55}
        assert last["asOfSeconds"] % 3600 == 0  # the hourly history's current hour
        with httpx.Client(base_url=server.url) as c:
            c.post("/stats/a", json={"dims": {"country": "es"}, "counters": {"bytesGiven": 70}})
        seen = []
        started = time.monotonic()
        for _ in range(3):
            message = json.loads(ws.recv(timeout=5))
            (interval,) = message["intervals"]
            seen.append(interval)
        assert time.monotonic() - started < 3 * INTERVAL + 2
        assert seen[-1]["values"] == {"es": 70, "de": 5, "total": 75}
        stamps = [i["asOfSeconds"] for i in seen]
        assert stamps == sorted(stamps)


def test_stream_one_value_and_member_gauges(server: ServerProcess) -> None:
    with connect(ws_url(server, "/stream/Country/es/gauge/users"), open_timeout=10) as ws:
        history = json.loads(ws.recv(timeout=10))
        assert history["intervals"][-1]["values"] == {"es": 1}
        update = json.loads(ws.recv(timeout=5))
        assert update["intervals"][0]["values"] == {"es": 1}


@pytest.mark.parametrize("path", ["/stream/country/es", "/stream/country/es/rate/x", "/stream//country",
                                  "/stream", "/stream/"])
def test_stream_malformed_path_names_the_expected_form(server: ServerProcess, path: str) -> None:
    with connect(ws_url(server, path), open_timeout=10) as ws:
        message = json.loads(ws.recv(timeout=10))
    assert message["succeeded"] is False
    assert message["error"].startswith("Wrong path: ")
    assert message["error"].endswith("Expected something like: /stream/country/*/counter/bytesGiven")


@pytest.mark.parametrize(("path", "status"), [("/nosuchstream", 404), ("/stats/country", 400)])
def test_websocket_without_a_websocket_route_is_refused_not_crashed(
    server: ServerProcess, path: str, status: int
) -> None:
    """A handshake to a path with no websocket route gets its 404 (or 400 for an HTTP-only
    route) as JSON, from the app's error handlers, which have no HTTP request to read then."""
    with pytest.raises(InvalidStatus) as info:
        connect(ws_url(server, path), open_timeout=10)
    assert info.value.response.status_code == status
    assert "error" in json.loads(info.value.response.body)
    log = server.log()
    assert "Not within a request context" not in log and "Exception on websocket" not in log, log[-3000:]


def test_stream_cross_site_handshake_is_refused(server: ServerProcess) -> None:
    """A page on another site can open a websocket to localhost (no CORS applies to them):
    the edge's Origin rule refuses the handshake; the server's own origin is accepted."""
    with pytest.raises(InvalidStatus) as info:
        connect(ws_url(server, "/stream/country/*/counter/bytesGiven"), origin="https://evil.example",
                open_timeout=10)
    assert info.value.response.status_code == 403
    assert b"Origin" in info.value.response.body
    with connect(ws_url(server, "/stream/country/*/counter/bytesGiven"),
                 origin=f"http://127.0.0.1:{server.port}", open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["succeeded"] is True


def test_stream_rebinding_host_is_refused(server: ServerProcess) -> None:
    """A page whose name resolves to 127.0.0.1 (DNS rebinding) sends its own name as Host."""
    sock = socket.create_connection(("127.0.0.1", server.port))
    with pytest.raises(InvalidStatus) as info:
        connect(f"ws://attacker.example:{server.port}/stream/country/*/counter/bytesGiven", sock=sock,
                open_timeout=10)
    assert info.value.response.status_code == 421


def test_stream_interval_is_the_apps_setting(tmp_path: Path) -> None:
    """Messages arrive at the configured interval's wall-clock boundaries."""
    server = stats_server(tmp_path, None, 360)
    try:
        with connect(ws_url(server, "/stream/country/*/counter/x"), open_timeout=10) as ws:
            json.loads(ws.recv(timeout=10))  # no history: no intervals
            stamps = []
            for _ in range(4):
                stamps.append(time.time())
                json.loads(ws.recv(timeout=5))
        gaps = [b - a for a, b in zip(stamps[1:], stamps[2:], strict=False)]
        assert all(0.2 < gap < 1.0 for gap in gaps), gaps
    finally:
        server.stop()


def test_stream_needs_a_read_token_with_jwt_on(tmp_path: Path) -> None:
    """With JWT on, every websocket handshake is guarded by ``web/auth.py``'s keys and rules:
    an ``api:read`` token passes; none, or one without the scope, is refused with 401."""
    from test_auth import Keys, auth

    keys = Keys(tmp_path / "keys")
    server = start_server(tmp_path, extra=["--jwt-key-dir", str(keys.directory),
                                           "--stats-stream-interval-s", "0.5"])
    try:
        url = ws_url(server, "/stream/country/*/counter/bytesGiven")
        with connect(url, additional_headers=auth(keys.token("api:read")), open_timeout=10) as ws:
            assert json.loads(ws.recv(timeout=10))["succeeded"] is True
        for headers in ({}, auth(keys.token("api:update")), auth(keys.token("api:read", key=keys.stranger))):
            with pytest.raises(InvalidStatus) as info:
                connect(url, additional_headers=headers, open_timeout=10)
            assert info.value.response.status_code == 401
            assert json.loads(info.value.response.body)["field"] == "Authorization"
            assert info.value.response.headers["WWW-Authenticate"].startswith("Bearer")
        # The edge's checks come first: a foreign Origin is a 403 even with a good token.
        with pytest.raises(InvalidStatus) as info:
            connect(url, additional_headers=auth(keys.token("api:read")), origin="https://evil.example",
                    open_timeout=10)
        assert info.value.response.status_code == 403
    finally:
        server.stop()


def raw_handshake(server: ServerProcess, path: str) -> socket.socket:
    """A websocket handshake on a bare socket, nothing read: what a slow or hostile client sends."""
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    return sock


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("/stream/country/*/bogus/" + "x" * 30_000, "Wrong path: '/stream/country/*/bogus/xxx"),
        ("/stream/country/*/counter/" + "x" * 5_000, "stat must be a non-empty string of at most 200"),
        ("/stream/coun%00try/*/counter/bytesGiven", "dimension must not contain control characters"),
        ("/stream/country/" + "v" * 5_000 + "/counter/bytesGiven", "value must be a non-empty string"),
        ("/stream/country/e%7Fs/gauge/x", "value must not contain control characters"),
    ],
)
def test_stream_bad_parts_are_refused_without_echoing_them(server: ServerProcess, path: str, needle: str) -> None:
    with connect(ws_url(server, path), open_timeout=10, max_size=2**20) as ws:
        raw = ws.recv(timeout=10)
    message = json.loads(raw)
    assert message["succeeded"] is False and needle in message["error"], message
    assert message["error"].endswith("Expected something like: /stream/country/*/counter/bytesGiven")
    assert len(raw) < 1200


@pytest.fixture(scope="module")
def many(server: ServerProcess) -> int:
    """Dimension ``many``: 320 values, value i with counter ``n`` = i + 1."""
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for i in range(320):
            assert c.post(f"/stats/m{i}", json={"dims": {"many": f"v{i:03d}"}, "counters": {"n": i + 1}}).status_code == 200
    return 320


def test_stream_star_carries_the_largest_values(server: ServerProcess, many: int) -> None:
    """A ``*`` stream carries at most MAX_STREAM_VALUES values (the largest now), says how
    many it left out, and its total is still over every value."""
    total = many * (many + 1) // 2
    with connect(ws_url(server, "/stream/many/*/counter/n"), open_timeout=10, max_size=2**24) as ws:
        history = json.loads(ws.recv(timeout=30))
        live = json.loads(ws.recv(timeout=10))
    for message in (history, live):
        assert message["succeeded"] is True and message["valuesOmitted"] == 20
        values = message["intervals"][-1]["values"]
        assert len(values) == 301 and values["total"] == total
        assert min(v for k, v in values.items() if k != "total") == 21  # v000 .. v019 left out
    with connect(ws_url(server, "/stream/many/v005/counter/n"), open_timeout=10) as ws:
        message = json.loads(ws.recv(timeout=10))
    assert "valuesOmitted" not in message and message["intervals"][-1]["values"] == {"v005": 6}


def test_stream_handshakes_do_not_stall_the_server(server: ServerProcess, many: int) -> None:
    """The red team's stall: 100 handshakes on a wide dimension each computed a year of
    history for every value in the event loop (/healthz took 24 s). Now concurrent streams
    share one history, read in small rounds."""
    socks = [raw_handshake(server, f"/stream/many/*/{kind}/n") for kind in ("counter", "gauge") for _ in range(50)]
    try:
        time.sleep(0.2)
        with httpx.Client(base_url=server.url, timeout=60) as c:
            started = time.monotonic()
            assert c.get("/healthz").status_code == 200
            assert time.monotonic() - started < 1.0
    finally:
        for sock in socks:
            sock.close()


def test_stream_count_is_limited(tmp_path: Path) -> None:
    """At most MAX_STREAMS streams at once; the next handshake gets 503 and the reason in
    statshub's error body; once one closes, a new stream is accepted."""
    from web.compat.statshub import MAX_STREAMS

    proc = stats_server(tmp_path, None, 360)
    socks = []
    try:
        for _ in range(MAX_STREAMS):
            sock = raw_handshake(proc, "/stream/country/*/counter/x")
            assert sock.recv(12) == b"HTTP/1.1 101"
            socks.append(sock)
        with pytest.raises(InvalidStatus) as info:
            connect(ws_url(proc, "/stream/country/*/counter/x"), open_timeout=10)
        assert info.value.response.status_code == 503
        body = json.loads(info.value.response.body)
        assert body == {"succeeded": False,
                        "error": f"too many streams: at most {MAX_STREAMS} are open at once; close one or retry later"}
        socks.pop().close()
        deadline = time.monotonic() + 10
        while True:  # the server notices the close at its next push (0.5 s here)
            try:
                with connect(ws_url(proc, "/stream/country/*/counter/x"), open_timeout=10) as ws:
                    assert json.loads(ws.recv(timeout=10))["succeeded"] is True
                break
            except InvalidStatus:
                assert time.monotonic() < deadline
                time.sleep(0.2)
    finally:
        for sock in socks:
            sock.close()
        proc.stop()


def test_stream_totals_past_64_bits(server: ServerProcess) -> None:
    big = 2**63 - 1
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for value in ("es", "de", "fr"):
            assert c.post(f"/stats/huge-{value}", json={"dims": {"huge": value}, "increments": {"i": big}}).status_code == 200
    with connect(ws_url(server, "/stream/huge/*/counter/i"), open_timeout=10) as ws:
        history = json.loads(ws.recv(timeout=10))
        live = json.loads(ws.recv(timeout=10))
    assert history["intervals"][-1]["values"]["total"] == 3 * big
    assert live["intervals"][0]["values"]["total"] == 3 * big
