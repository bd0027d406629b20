"""The HTTP edge against real server processes: slow bodies, the connection cap, Host and
Origin checks, body media types, and integers past 2**53 (security findings 5, 6 and 9).

Each finding is reproduced as it was reported, with raw sockets where the client must
misbehave (stall, trickle, hold connections), and every wait is bounded. The body clocks are
shortened through the environment (``POINTSPACE_BODY_RATE_WINDOW_S`` and friends), which
``start_server`` passes to the server process.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import ServerProcess, start_server
from quart import websocket
from quart.testing.connections import WebsocketResponseError
from quart_trio import QuartTrio

from engine.engine import Engine
from snapshots.backup import encode_backup
from web.app import create_app
from web.edge import ROUTE_BODIES, EdgePolicy
from web.serving.settings import Settings

#: The body clocks of the servers here: a 1 s rate window at 1 KiB/s, a 3 s whole-body deadline.
WINDOW_S = 1.0
DEADLINE_S = 3.0
#: Their header deadline (header_timeout_s).
HEADER_S = 2.0
#: Slack for a loaded test machine on every "cut within" bound.
SLACK_S = 1.5


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A loopback server with short body clocks, one extra Host name and one extra Origin."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("POINTSPACE_BODY_RATE_WINDOW_S", str(WINDOW_S))
        env.setenv("POINTSPACE_MIN_BODY_RATE_BYTES_S", "1024")
        env.setenv("POINTSPACE_BODY_TIMEOUT_S", str(DEADLINE_S))
        env.setenv("POINTSPACE_HEADER_TIMEOUT_S", str(HEADER_S))
        server = start_server(tmp_path_factory.mktemp("edge"), extra=[
            "--allowed-host", "pointspace.test", "--allowed-origin", "https://dash.example.com",
        ])
    yield server
    server.stop()


@pytest.fixture
def client(edge: ServerProcess) -> Iterator[httpx.Client]:
    with edge.client() as c:
        yield c


_users = iter(range(10**9, 2 * 10**9))


def new_user() -> int:
    return next(_users)


def ev(user: int, value: int, ts: int = 1000, metric: str = "m") -> dict[str, object]:
    return {"metric": metric, "user": user, "value": value, "ts": ts}


def total(client: httpx.Client, user: int, metric: str = "m") -> int:
    reply = client.get(f"/api/users/{user}/sums/{metric}", params={"t1": 0, "t2": 10**6})
    assert reply.status_code == 200, reply.text
    return reply.json()["sum"]


############################################################################################
# Raw sockets


def send_head(port: int, method: str, path: str, headers: dict[str, str], first: bytes = b"",
              host: str = "127.0.0.1") -> socket.socket:
    """A connection with a request's headers and the first bytes of its body sent."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in headers.items())]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + first)
    return sock


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, float | None]:
    """Everything the server sends, and when (``time.monotonic()``) it closed the connection;
    ``None`` when it was still open after ``timeout`` seconds."""
    data = b""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([sock], [], [], left)
        if not readable:
            continue
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data, time.monotonic()
        if not chunk:
            return data, time.monotonic()
        data += chunk
    return data, None


def parse(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def assert_cut(sock: socket.socket, started: float, *, within: float, goa: bool = False,
               message: str = "request body too slow") -> None:
    """The server answered 408 naming ``body`` and closed the connection within ``within``
    seconds of ``started``."""
    data, closed = read_until_closed(sock, within + SLACK_S - (time.monotonic() - started))
    sock.close()
    assert closed is not None, f"still open after {within + SLACK_S} s; got {data[:200]!r}"
    status, headers, body = parse(data)
    assert status == 408, data
    assert headers["connection"] == "close"
    error = json.loads(body)
    if goa:
        assert (error["code"], error["status"], error["meta"]) == ("request_timeout", 408, {"field": "body"})
        assert error["detail"].startswith(message), error
    else:
        assert error["field"] == "body" and error["error"].startswith(message), error
    assert closed - started >= min(within, WINDOW_S) * 0.9


############################################################################################
# Finding 5: slow bodies


def test_issue_5_stalled_bodies_are_cut_after_one_window_on_every_route(edge):
    # Each stalls after a few bytes: an ordinary JSON body, a PSD form (Quart's form parser),
    # the NDJSON stream, a RankDB body and a restore stream (both read outside read_body).
    form = {"Content-Type": "application/x-www-form-urlencoded", "Content-Length": "100000"}
    chunked = {"Transfer-Encoding": "chunked"}
    cases = [
        ("POST", "/api/events", {"Content-Length": "1000000"}, b"[" + b" " * 99, False),
        ("POST", "/v1/mu_query/steps/all/0/10", form, b"ids=1", False),
        ("POST", "/api/events/stream", {**chunked, "Content-Type": "application/x-ndjson"},
         b"5\r\n{}\n\r\n", False),
        ("POST", "/lists", {"Content-Length": "5000"}, b'{"id": "stalled"', True),
        ("POST", "/xlist/restore", {"Content-Length": "100000",
                                    "Content-Type": "application/octet-stream"}, b"\x28\xb5", True),
    ]
    started = time.monotonic()
    open_ = [(send_head(edge.port, m, p, h, first), goa) for m, p, h, first, goa in cases]
    for sock, goa in open_:
        assert_cut(sock, started, within=WINDOW_S, goa=goa)


def test_issue_5_trickling_bodies_are_cut(edge):
    # 100 connections that each send a byte every 0.25 s: 4 bytes/s, far under 1 KiB/s.
    started = time.monotonic()
    socks = [send_head(edge.port, "POST", "/api/events", {"Content-Length": "100000"}, b"[")
             for _ in range(100)]
    open_socks = set(socks)
    closed_at: dict[socket.socket, float] = {}
    while open_socks and time.monotonic() - started < WINDOW_S * 2 + SLACK_S:
        for sock in list(open_socks):
            try:
                sock.sendall(b" ")
            except OSError:
                pass  # cut while we wrote: the read below sees the close
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                data, closed = read_until_closed(sock, 1)
                if closed is not None:
                    assert parse(data)[0] == 408, data
                    closed_at[sock] = closed
                    open_socks.discard(sock)
        time.sleep(0.25)
    for sock in socks:
        sock.close()
    assert not open_socks, f"{len(open_socks)} of 100 trickling connections still open"
    assert max(closed_at.values()) - started < WINDOW_S * 2 + SLACK_S


def test_trickled_headers_are_cut_at_the_header_deadline(edge):
    # Slowloris: 50 connections each send a request line and then a header byte every 0.3 s,
    # never finishing; each is closed HEADER_S after its first byte, not after the 75 s
    # keep-alive time (before, they held their slots that long).
    started = time.monotonic()
    socks = []
    for _ in range(50):
        sock = socket.create_connection(("127.0.0.1", edge.port), timeout=10)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        socks.append(sock)
    closed_at: dict[int, float] = {}
    while len(closed_at) < len(socks) and time.monotonic() - started < HEADER_S + 2 * SLACK_S:
        for k, sock in enumerate(socks):
            if k in closed_at:
                continue
            try:
                sock.sendall(b"a")
                readable, _, _ = select.select([sock], [], [], 0)
                if readable and sock.recv(65536) == b"":
                    closed_at[k] = time.monotonic()
            except OSError:  # reset: closed
                closed_at[k] = time.monotonic()
        time.sleep(0.3)
    for sock in socks:
        sock.close()
    assert len(closed_at) == len(socks), f"{len(socks) - len(closed_at)} still open"
    assert min(closed_at.values()) - started >= HEADER_S * 0.9


def test_idle_keep_alive_outlives_the_header_deadline(edge):
    # The header clock starts at a request's first byte: a connection that sends nothing is
    # idle keep-alive (75 s), and a request after a pause longer than HEADER_S is served.
    def answer(sock: socket.socket) -> bytes:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"closed; got {data!r}"
            data += chunk
        _, headers, body = parse(data)
        while len(body) < int(headers["content-length"]):
            chunk = sock.recv(65536)
            assert chunk, "closed mid-answer"
            body += chunk
        return data

    sock = socket.create_connection(("127.0.0.1", edge.port), timeout=10)
    try:
        time.sleep(HEADER_S + 1.0)
        assert answer(sock).startswith(b"HTTP/1.1 200")
        # And once more after the answer: the clock restarted with the connection idle.
        time.sleep(HEADER_S + 1.0)
        assert answer(sock).startswith(b"HTTP/1.1 200")
    finally:
        sock.close()


def test_issue_5_whole_body_deadline_and_streams_at_a_fair_rate(edge, client):
    # An ordinary body at 10 KiB/s (well over the minimum rate) that never ends is cut at the
    # deadline; a stream at the same rate may outlast it, and is applied.
    user = new_user()
    line = (json.dumps(ev(user, 1)) + "\n").encode()
    outcome: dict[str, object] = {}

    def fair_stream() -> None:
        def lines() -> Iterator[bytes]:
            until = time.monotonic() + DEADLINE_S + 1
            while time.monotonic() < until:
                yield line * (2048 // len(line) + 1)
                time.sleep(0.2)

        with httpx.Client(base_url=edge.url, timeout=30) as c:
            outcome["stream"] = c.post("/api/events/stream", content=lines(),
                                       headers={"Content-Type": "application/x-ndjson"})

    thread = threading.Thread(target=fair_stream)
    thread.start()
    started = time.monotonic()
    sock = send_head(edge.port, "POST", "/api/events", {"Content-Length": "10000000"}, b"[")
    try:
        while time.monotonic() - started < DEADLINE_S + SLACK_S:
            sock.sendall(b" " * 2048)
            if select.select([sock], [], [], 0.2)[0]:
                break
    except OSError:
        pass  # cut while we wrote
    assert_cut(sock, started, within=DEADLINE_S, message=f"request body not complete within {DEADLINE_S:g} s")
    thread.join(30)
    reply = outcome["stream"]
    assert isinstance(reply, httpx.Response) and reply.status_code == 200, reply
    applied = reply.json()["applied"]
    assert applied > 0 and total(client, user) == applied


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_issue_5_memory_of_cut_bodies_is_freed(edge):
    # The report: 20 stalled connections held 580 MB for over 107 s. Here waves of 8
    # connections stall after 8 MB each: every wave is cut, and the next one reuses the
    # memory the last one held (RSS does not grow by another wave).
    wave_mib = 8 * 8

    def wave() -> float:
        started = time.monotonic()
        socks = [send_head(edge.port, "POST", "/api/events", {"Content-Length": "20000000"},
                           b"[" + b" " * (8 * 2**20)) for _ in range(8)]
        time.sleep(0.3)
        peak = _rss_mib(edge.process.pid)
        for sock in socks:
            assert_cut(sock, started, within=2 * WINDOW_S)
        return peak

    before = _rss_mib(edge.process.pid)
    first = wave()
    assert first - before > wave_mib / 2, "the bodies should be held while they arrive"
    second = wave()
    assert second - first < wave_mib / 2, f"RSS {before:.0f} -> {first:.0f} -> {second:.0f} MiB"


############################################################################################
# The connection cap


def test_connection_cap_holds_the_next_connection_in_the_accept_queue(tmp_path):
    server = start_server(tmp_path, extra=["--max-connections", "20"])
    held: list[socket.socket] = []
    try:
        for _ in range(20):  # each answered once and kept open (keep-alive)
            sock = send_head(server.port, "GET", "/health/ping", {})
            data = b""
            while b"pong" not in data:
                chunk = sock.recv(65536)
                assert chunk, data
                data += chunk
            held.append(sock)
        late = send_head(server.port, "GET", "/health/ping", {"Connection": "close"})
        assert select.select([late], [], [], 1.0)[0] == [], "the 21st connection was served"
        held.pop().close()
        data, closed = read_until_closed(late, 5)
        assert closed is not None and parse(data)[0] == 200, data
        late.close()
    finally:
        for sock in held:
            sock.close()
        server.stop()


############################################################################################
# Finding 6: bodies of the wrong type, foreign Hosts and Origins


@pytest.mark.parametrize(("path", "content_type", "shape"), [
    ("/api/events", "text/plain", "native"),
    ("/api/events", "application/x-www-form-urlencoded", "native"),
    ("/api/events", "multipart/form-data; boundary=x", "native"),
    ("/api/events/stream", "text/plain", "native"),
    ("/api/events/stream", "application/json", "native"),
    ("/api/admin/snapshot", "text/plain", "native"),
    ("/api/leaderboards", "text/plain;charset=UTF-8", "native"),
    ("/v1/write", "text/plain", "native"),
    ("/v1/write", "application/x-www-form-urlencoded", "native"),
    ("/v1/batch", "text/plain", "native"),
    ("/v1/mu_query/steps/all/0/10", "text/plain", "native"),
    ("/lists", "text/plain", "goa"),
    ("/xlist/restore", "text/plain", "goa"),
    ("/xlist/restore", "application/x-www-form-urlencoded", "goa"),
])
def test_issue_6_write_routes_refuse_other_content_types(client, path, content_type, shape):
    user = new_user()
    body = json.dumps([ev(user, 7)]).encode()
    reply = client.post(path, content=body, headers={"Content-Type": content_type})
    assert reply.status_code == 415, reply.text
    error = reply.json()
    if shape == "goa":
        assert (error["code"], error["status"], error["meta"]) == (
            "unsupported_media_type", 415, {"field": "Content-Type"})
        message = error["detail"]
    else:
        assert error["field"] == "Content-Type"
        message = error["error"]
    assert message.startswith(f"Content-Type {content_type!r} is not accepted here; this route takes ")
    assert reply.headers["Accept"]
    assert total(client, user) == 0


def test_issue_6_declared_content_types_are_accepted(client):
    user = new_user()
    for content_type in (None, "application/json", "application/json; charset=utf-8",
                         "application/vnd.example+json", "APPLICATION/JSON"):
        headers = {"Content-Type": content_type} if content_type else {}
        reply = client.post("/api/events", content=json.dumps([ev(user, 1)]), headers=headers)
        assert reply.status_code == 200, (content_type, reply.text)
    ndjson = {"Content-Type": "application/x-ndjson"}
    assert client.post("/api/events", content=json.dumps(ev(user, 1)), headers=ndjson).status_code == 200
    assert client.post("/api/events/stream", content=json.dumps(ev(user, 1)), headers=ndjson).status_code == 200
    assert total(client, user) == 7
    form = client.post("/v1/mu_query/m/all/0/10000", data={"ids": str(user)})
    assert form.status_code == 200 and form.json()["values"] == {str(user): 7}, form.text
    restore = client.post("/xlist/restore", content=encode_backup([]),
                          headers={"Content-Type": "application/octet-stream"})
    assert restore.status_code == 200, restore.text


async def test_route_bodies_name_existing_endpoints():
    async with Engine.open() as engine:
        endpoints = {rule.endpoint for rule in create_app(engine).url_map.iter_rules()}
    assert set(ROUTE_BODIES) <= endpoints, set(ROUTE_BODIES) - endpoints


@pytest.mark.parametrize("path", ["/health/ping", "/healthz", "/metrics", "/openapi.json", "/docs",
                                  "/api/stats", "/ui", "/lists"])
@pytest.mark.parametrize("host", ["evil.example", "evil.example:1155", "127.0.0.1.evil.example",
                                  "localhost.evil.example", "a.localhost", "[::2]"])
def test_issue_6_foreign_host_is_refused_everywhere(client, path, host):
    # DNS rebinding: a page whose name now resolves to 127.0.0.1 sends its own name as Host.
    reply = client.get(path, headers={"Host": host})
    assert reply.status_code == 421, reply.text
    error = reply.json()
    field = error["meta"]["field"] if "meta" in error else error["field"]
    assert field == "Host"


def test_issue_6_foreign_host_changes_nothing(client, edge):
    user = new_user()
    rebound = f"evil.example:{edge.port}"
    reply = client.post("/api/events", json=[ev(user, 5)],
                        headers={"Host": rebound, "Origin": f"http://{rebound}"})
    assert reply.status_code == 421 and reply.json()["field"] == "Host", reply.text
    assert total(client, user) == 0


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:{port}", "localhost:{port}", "LOCALHOST",
                                  "localhost.", "[::1]:{port}", "127.9.9.9", "pointspace.test",
                                  "pointspace.test:8443"])
def test_loopback_and_listed_hosts_are_served(client, edge, host):
    reply = client.get("/health/ping", headers={"Host": host.format(port=edge.port)})
    assert reply.status_code == 200, reply.text


def test_request_without_host_is_refused_on_loopback(edge):
    sock = socket.create_connection(("127.0.0.1", edge.port), timeout=10)
    sock.sendall(b"GET /health/ping HTTP/1.0\r\n\r\n")
    data, closed = read_until_closed(sock, 5)
    sock.close()
    assert parse(data)[0] == 421 and json.loads(parse(data)[2])["field"] == "Host", data


def test_edge_policy_hosts_by_bind_address():
    def served(header: str, bind: str, allowed: tuple[str, ...] = ()) -> bool:
        policy = EdgePolicy.from_settings(Settings(host=bind, allowed_hosts=allowed))
        return policy.host_refusal(header) is None

    assert served("anything.example", "0.0.0.0")
    assert served("anything.example", "10.1.2.3")
    assert not served("anything.example", "127.0.0.1")
    assert not served("anything.example", "::1")
    assert not served("anything.example", "localhost")
    assert not served("anything.example", "0.0.0.0", ("api.example",))
    assert served("API.example:99", "0.0.0.0", ("api.example",))
    assert not served("api.example:99", "0.0.0.0", ("api.example:8080",))
    assert served("api.example:8080", "0.0.0.0", ("api.example:8080",))
    assert served("127.0.0.1:5", "0.0.0.0", ("api.example",))
    with pytest.raises(ValueError, match=r"^allowed_origins entry 'dash.example' is not an origin"):
        EdgePolicy.from_settings(Settings(allowed_origins=("dash.example",)))


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/api/events"), ("POST", "/v1/write"), ("POST", "/lists"), ("GET", "/api/stats"),
    ("POST", "/api/admin/snapshot"), ("DELETE", "/api/leaderboards/x"),
])
@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:1",
                                    "https://dash.example.com.evil.example", "http://localhost"])
def test_issue_6_foreign_origin_is_refused(client, method, path, origin):
    user = new_user()
    body = json.dumps([ev(user, 3)]) if method == "POST" else None
    reply = client.request(method, path, content=body, headers={
        "Origin": origin, **({"Content-Type": "application/json"} if body else {})})
    assert reply.status_code == 403, reply.text
    error = reply.json()
    field = error["meta"]["field"] if "meta" in error else error["field"]
    assert field == "Origin"
    assert total(client, user) == 0


@pytest.mark.parametrize("origin", ["http://127.0.0.1:{port}", "http://localhost:{port}",
                                    "https://dash.example.com", "https://DASH.example.com:443"])
def test_own_and_allowed_origins_are_served(client, edge, origin):
    user = new_user()
    origin = origin.format(port=edge.port)
    host = origin.split("://")[1] if "localhost" in origin else None
    headers = {"Origin": origin, **({"Host": host} if host else {})}
    reply = client.post("/api/events", json=[ev(user, 2)], headers=headers)
    assert reply.status_code == 200, reply.text
    assert total(client, user) == 2


@pytest.mark.parametrize("path", ["/api/events", "/v1/write", "/lists", "/stats/x"])
def test_listed_origin_preflight_is_answered_before_auth(client, path):
    # A browser at a listed origin asks before a JSON POST with a token; the preflight
    # carries no credentials, so it is answered before auth, with what the page may send.
    reply = client.options(path, headers={
        "Origin": "https://dash.example.com",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    })
    assert reply.status_code == 204, reply.text
    assert reply.headers["Access-Control-Allow-Origin"] == "https://dash.example.com"
    assert "POST" in reply.headers["Access-Control-Allow-Methods"].split(", ")
    assert reply.headers["Access-Control-Allow-Headers"] == "authorization, content-type"
    assert int(reply.headers["Access-Control-Max-Age"]) > 0
    assert "Origin" in reply.headers["Vary"]
    assert "Access-Control-Allow-Credentials" not in reply.headers


def test_listed_origin_reads_answers_and_errors(client):
    user = new_user()
    origin = {"Origin": "https://dash.example.com"}
    reply = client.post("/api/events", json=[ev(user, 4)], headers=origin)
    assert reply.status_code == 200
    assert reply.headers["Access-Control-Allow-Origin"] == "https://dash.example.com"
    assert "Origin" in reply.headers["Vary"]
    bad = client.post("/api/events", json=[{"metric": "m"}], headers=origin)
    assert bad.status_code == 400  # the page can read why, too
    assert bad.headers["Access-Control-Allow-Origin"] == "https://dash.example.com"
    assert total(client, user) == 4


@pytest.mark.parametrize("headers", [
    {},  # no browser at all
    {"Origin": "http://127.0.0.1:{port}"},  # the server's own pages: same origin, no CORS needed
])
def test_no_cors_headers_without_a_listed_origin(client, edge, headers):
    headers = {k: v.format(port=edge.port) for k, v in headers.items()}
    reply = client.get("/healthz", headers=headers)
    assert reply.status_code == 200
    assert "Access-Control-Allow-Origin" not in reply.headers


def test_foreign_origin_preflight_is_refused_without_cors_headers(client):
    reply = client.options("/api/events", headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert reply.status_code == 403
    assert "Access-Control-Allow-Origin" not in reply.headers


def test_issue_6_cross_site_fetch_without_origin_is_refused(client):
    user = new_user()
    reply = client.post("/api/events", json=[ev(user, 3)],
                        headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"})
    assert reply.status_code == 403 and reply.json()["field"] == "Sec-Fetch-Site", reply.text
    assert total(client, user) == 0
    navigate = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
    assert client.get("/ui", headers=navigate).status_code == 200  # a link from another site
    assert client.get("/api/stats", headers={"Sec-Fetch-Site": "same-origin"}).status_code == 200


def test_issue_6_edge_answers_before_the_body_is_read(edge):
    # A refused request is answered at once, without waiting for its (never sent) body.
    started = time.monotonic()
    sock = send_head(edge.port, "POST", "/api/events",
                     {"Content-Length": "1000000", "Content-Type": "text/plain"}, b"[")
    data, closed = read_until_closed(sock, 5)
    sock.close()
    assert parse(data)[0] == 415 and closed is not None and closed - started < WINDOW_S, data


############################################################################################
# Finding 9 (part): integers past 2**53


def test_issue_9_sums_past_64_bits_as_strings_on_request(client):
    user = new_user()
    big = 2**63 - 1
    assert client.post("/api/events", json=[ev(user, big, ts) for ts in (1, 2, 3)]).status_code == 200
    expected = 3 * big  # past 2**64
    plain = client.get(f"/api/users/{user}/sums/m", params={"t1": 0, "t2": 10})
    assert plain.headers["Content-Type"] == "application/json"
    assert json.loads(plain.content)["sum"] == expected  # exact, but unreadable to JavaScript

    accept = {"Accept": "application/json; IEEE754Compatible=true"}
    safe = client.get(f"/api/users/{user}/sums/m", params={"t1": 0, "t2": 10}, headers=accept)
    assert safe.headers["Content-Type"] == "application/json; IEEE754Compatible=true"
    assert safe.json() == {"user": user, "metric": "m", "t1": 0, "t2": 10, "sum": str(expected)}
    query = client.post("/api/query", headers=accept, json={
        "users": [user], "metrics": ["m"], "t1": 0, "t2": 1})
    assert query.json()["results"] == [{"user": user, "sums": {"m": str(big)}}]
    small = client.post("/api/query", headers=accept, json={
        "users": [user], "metrics": ["m"], "t1": 100, "t2": 200})
    assert small.json()["results"] == [{"user": user, "sums": {"m": 0}}]


def probe_app(engine: Engine, settings: Settings) -> QuartTrio:
    """The app with one more websocket route, of no blueprint: the edge's and auth's hooks
    must guard every websocket, not only statshub's stream."""
    app = create_app(engine, settings)

    @app.websocket("/probe")
    async def probe() -> None:
        await websocket.accept()
        await websocket.send("open")

    return app


async def handshake(app: QuartTrio, headers: dict[str, str]) -> tuple[int, dict[str, object] | str]:
    """The status of a websocket handshake to ``/probe`` (101 when accepted) and the first
    message, or the refusal's JSON body."""
    refused: list[WebsocketResponseError] = []
    async with app.test_app() as test_app:
        try:
            async with test_app.test_client().websocket("/probe", headers=headers) as ws:
                return 101, await ws.receive()
        except* WebsocketResponseError as group:  # quart_trio raises it from its nursery
            refused += [e for e in group.exceptions if isinstance(e, WebsocketResponseError)]
    return refused[0].response.status_code, await refused[0].response.get_json()


async def test_issue_6_every_websocket_gets_the_host_and_origin_checks(engine):
    """A page on another site may open a websocket to localhost (browsers apply no CORS to
    them), and a rebinding page sends its own name as Host: both are refused on any route."""
    app = probe_app(engine, Settings(data_dir=None))
    assert await handshake(app, {"Host": "localhost:1155"}) == (101, "open")
    assert await handshake(app, {"Host": "localhost:1155", "Origin": "http://localhost:1155"}) == (101, "open")
    status, body = await handshake(app, {"Host": "localhost:1155", "Origin": "https://evil.example"})
    assert status == 403 and isinstance(body, dict) and body["field"] == "Origin"
    status, body = await handshake(app, {"Host": "attacker.example:1155"})
    assert status == 421 and isinstance(body, dict) and body["field"] == "Host"
