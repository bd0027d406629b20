"""Security findings 1-4 and 7 on the RankDB surface, reproduced against real server processes.

Each test is written so that it failed against the code the finding was reported on:

1. a small zstd body that inflates to gigabytes (memory peak, cycle-held buffers; no output
   bound, the 1 GiB limit counted compressed bytes only);
2. ``PUT /xlist/backup`` to any path (absolute, ``../``, the server's own log);
3. ``POST /xlist/restore?src_file=`` from any path, quoting the file's first bytes and telling
   which paths exist;
4. ``server`` destinations to any host, forwarding the caller's ``Authorization`` and quoting
   the remote answer;
7. element writes to a live leaderboard forging it, and a restore freezing it into a plain list.
"""

from __future__ import annotations

import http.server
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import zstandard
from conftest import ServerProcess, start_server

from engine.lists import ListSettings
from engine.ranked import ElementIn, RankedList
from snapshots.backup import decode_backup, encode_backup

T0 = 1_700_000_000
SECRET = "s3cr3t-remote-body-7f1e"


def goa(reply: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    """The goa error body of ``reply``, checked: status, code, and the field it names."""
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert set(body) >= {"id", "code", "status", "detail"}, body
    assert body["status"] == status
    if field is not None:
        assert body.get("meta") == {"field": field}, body
    return body


def proc_status(server: ServerProcess) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of the server process, in bytes."""
    out = {}
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def zeros_bomb(gib: int) -> bytes:
    """A zstd stream of ``gib`` GiB of zeros, made with streaming compression (~32 KB/GiB)."""
    compressor = zstandard.ZstdCompressor(level=1).compressobj()
    block = bytes(1 << 24)
    parts = [compressor.compress(block) for _ in range(gib * 64)]
    parts.append(compressor.flush())
    return b"".join(parts)


def plain_backup(list_id: str, n: int) -> bytes:
    ranked = RankedList()
    ranked.bulk_load([ElementIn(i, i * 7, 0, None) for i in range(n)], T0)
    return encode_backup([(list_id, ListSettings(set="sec"), list(ranked.to_records()))])


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return zeros_bomb(2)


@pytest.fixture(scope="module")
def backup_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sec-backups") / "backups"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, backup_root: Path) -> Iterator[ServerProcess]:
    """An in-memory server with a backup directory and loopback allowed as a destination."""
    server = start_server(tmp_path_factory.mktemp("sec"),
                          extra=["--backup-dir", str(backup_root), "--backup-allowed-host", "127.0.0.1"])
    yield server
    server.stop()


############################################################################################
# Finding 1: decompression bombs


def test_restore_zstd_bomb_is_refused_with_flat_memory(guarded: ServerProcess, bomb: bytes) -> None:
    assert len(bomb) < 128 * 1024  # 2 GiB of zeros
    with guarded.client() as c:
        before = proc_status(guarded)
        for _ in range(4):
            started = time.monotonic()
            reply = c.post("/xlist/restore", content=bomb)
            assert time.monotonic() - started < 10
            body = goa(reply, 400)
            assert body["code"] == "bad_request"
            assert body["detail"].startswith("backup stream is damaged: expected true (another list) "
                                             "or false (the end) after 0 list(s), got 0")
        after = proc_status(guarded)
    # The reported server went from 0.7 GB to 1.8 GB per request: the peak must stay flat.
    assert after["VmHWM"] - before["VmHWM"] < 64 * 1024 * 1024, (before, after)
    assert after["VmRSS"] - before["VmRSS"] < 64 * 1024 * 1024, (before, after)


def test_restore_src_file_bomb_is_refused_with_flat_memory(
    guarded: ServerProcess, backup_root: Path, bomb: bytes
) -> None:
    backup_root.mkdir(exist_ok=True)
    (backup_root / "bomb.bin").write_bytes(bomb)
    with guarded.client() as c:
        before = proc_status(guarded)
        goa(c.post("/xlist/restore?src_file=bomb.bin"), 400)
        after = proc_status(guarded)
    assert after["VmHWM"] - before["VmHWM"] < 64 * 1024 * 1024, (before, after)


def test_restore_that_inflates_past_max_inflated_bytes_is_413_and_restores_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POINTSPACE_MAX_INFLATED_BYTES", str(1 << 20))
    server = start_server(tmp_path)
    try:
        data = plain_backup("too-big", 100_000)  # ~2.4 MB of records, well-formed
        with server.client() as c:
            body = goa(c.post("/xlist/restore", content=data), 413, "body")
            assert body["code"] == "request_too_large"
            assert body["detail"] == ("the backup stream inflates to more than 1048576 bytes, the limit "
                                      "(max_inflated_bytes); raise that setting if the data is genuine")
            assert c.get("/lists/too-big").status_code == 404
            small = plain_backup("small-enough", 1000)
            assert c.post("/xlist/restore", content=small).json()["restored"] == 1
    finally:
        server.stop()


############################################################################################
# Finding 2: backups to any file


@pytest.mark.parametrize("path", [
    "ABS", "../escape.bin", "sub/x.bin", ".hidden", "..", "x\x00.bin", "x" * 129, "back\\slash",
])
def test_backup_file_destination_is_a_plain_name(guarded: ServerProcess, tmp_path: Path, path: str) -> None:
    target = tmp_path / "anywhere.bin"
    path = str(target) if path == "ABS" else path
    with guarded.client() as c:
        reply = c.put("/xlist/backup", json={"destination": {"type": "file", "path": path}, "lists": {}})
        body = goa(reply, 400, "destination.path")
        assert body["detail"].startswith("destination.path must be a file name in the server's "
                                         "backup directory")
    time.sleep(0.2)  # a job, had one started, would have written by now
    assert not target.exists()
    assert not (tmp_path.parent / "escape.bin").exists()


def test_backup_cannot_reach_the_servers_own_log(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = start_server(tmp_path, data_dir=data_dir, extra=["--fsync", "always"])
    try:
        with server.client() as c:
            assert c.post("/xlist/restore", content=plain_backup("keep-me", 10)).status_code == 200
            segments = sorted((data_dir / "wal").iterdir())
            before = {p: p.read_bytes() for p in segments}
            for path in (f"../wal/{segments[-1].name}", str(segments[-1]), segments[-1].name):
                reply = c.put("/xlist/backup", json={"destination": {"type": "file", "path": path},
                                                     "lists": {}})
                if reply.status_code == 201:  # a plain name: it lands in <data_dir>/backups
                    deadline = time.monotonic() + 10
                    while not c.get(f"/backup/{reply.json()['id']}").json()["done"]:
                        assert time.monotonic() < deadline
                        time.sleep(0.05)
                    assert (data_dir / "backups" / segments[-1].name).is_file()
                else:
                    goa(reply, 400, "destination.path")
            assert {p: p.read_bytes() for p in segments} == before
        server.stop(signal.SIGKILL)  # acknowledged writes must survive (they were lost)
        server = start_server(tmp_path, data_dir=data_dir)
        with server.client() as c:
            assert c.get("/lists/keep-me").json()["elements"] == 10
    finally:
        server.stop()


def test_backup_file_through_a_planted_symlink_replaces_the_link_not_its_target(
    guarded: ServerProcess, backup_root: Path, tmp_path: Path
) -> None:
    precious = tmp_path / "precious.txt"
    precious.write_text("do not touch")
    backup_root.mkdir(exist_ok=True)
    (backup_root / "link.bin").symlink_to(precious)
    with guarded.client() as c:
        c.post("/xlist/restore", content=plain_backup("linked", 5))
        job = c.put("/xlist/backup", json={"destination": {"type": "file", "path": "link.bin"},
                                           "lists": {"lists": ["linked"]}}).json()
        deadline = time.monotonic() + 10
        while not (status := c.get(f"/backup/{job['id']}").json())["done"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert status["errors"] == {}
    assert precious.read_text() == "do not touch"
    assert not (backup_root / "link.bin").is_symlink()
    assert [b.list_id for b in decode_backup((backup_root / "link.bin").read_bytes())] == ["linked"]


def test_memory_only_server_without_backup_dir_refuses_file_backups(server: ServerProcess) -> None:
    with server.client() as c:
        reply = c.put("/xlist/backup", json={"destination": {"type": "file", "path": "x.bin"}, "lists": {}})
        body = goa(reply, 400, "destination.path")
        assert body["detail"] == ("file backups need a backup directory: this server keeps its data in "
                                  "memory and has no backup_dir; start it with --backup-dir DIR (or set "
                                  "backup_dir)")
        goa(c.post("/xlist/restore?src_file=x.bin"), 400, "src_file")


############################################################################################
# Finding 3: restores from any file


def test_restore_src_file_paths_are_refused_alike_without_quoting(guarded: ServerProcess) -> None:
    details = {}
    with guarded.client() as c:
        for path in ("/etc/shadow", "/etc/passwd", "/no/such/file", "../../etc/passwd"):
            body = goa(c.post("/xlist/restore", params={"src_file": path}), 400, "src_file")
            details[path] = body["detail"].replace(repr(path), "<path>")
            assert "root" not in body["detail"] and "72 6f 6f 74" not in body["detail"]
    # Existing and missing paths answer the same words: no oracle for what exists.
    assert len(set(details.values())) == 1, details


def test_restore_src_file_outside_or_linked_out_of_the_backup_dir_restores_nothing(
    guarded: ServerProcess, backup_root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.bin"
    outside.write_bytes(plain_backup("smuggled", 3))
    backup_root.mkdir(exist_ok=True)
    (backup_root / "smuggle.bin").symlink_to(outside)
    with guarded.client() as c:
        goa(c.post("/xlist/restore", params={"src_file": str(outside)}), 400, "src_file")
        body = goa(c.post("/xlist/restore?src_file=smuggle.bin"), 400, "src_file")
        assert body["detail"] == ("src_file: backup 'smuggle.bin' is a symbolic link; restore reads "
                                  "regular files in the backup directory only")
        assert c.get("/lists/smuggled").status_code == 404


def test_restore_src_file_errors_never_quote_the_file(guarded: ServerProcess, backup_root: Path) -> None:
    backup_root.mkdir(exist_ok=True)
    (backup_root / "notes.txt").write_bytes(b"TOPSECRET-password=hunter2\n")
    damaged = bytearray(zstandard.ZstdCompressor().compress(b"\xc3\x02\xa9secret-id"))
    (backup_root / "damaged.bin").write_bytes(bytes(damaged))
    os.mkfifo(backup_root / "pipe.bin")
    with guarded.client() as c:
        for name in ("notes.txt", "damaged.bin"):
            body = goa(c.post(f"/xlist/restore?src_file={name}"), 400)
            for leak in ("TOPSECRET", "hunter2", "54 4f 50 53", "secret-id"):
                assert leak not in body["detail"], body
        body = goa(c.post("/xlist/restore?src_file=pipe.bin"), 400, "src_file")
        assert body["detail"] == "src_file: backup 'pipe.bin' is not a regular file"


############################################################################################
# Finding 4: server-side requests


class Recorder(http.server.BaseHTTPRequestHandler):
    """A destination that records what reached it and answers with a secret in every body."""

    seen: list[tuple[str, str, dict[str, str]]] = []
    health_status = 200

    def _answer(self, status: int) -> None:
        body = f'{{"secret": "{SECRET}"}}'.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        self.seen.append(("GET", self.path, dict(self.headers)))
        self._answer(self.health_status)

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        else:  # chunked
            while (size := int(self.rfile.readline().strip() or b"0", 16)) > 0:
                self.rfile.read(size + 2)
            self.rfile.readline()
        self.seen.append(("POST", self.path, dict(self.headers)))
        self._answer(500)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[http.server.ThreadingHTTPServer]:
    Recorder.seen = []
    Recorder.health_status = 200
    fake = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    fake.daemon_threads = True
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    yield fake
    fake.shutdown()


def test_server_destination_not_allowed_is_refused_before_any_request(
    server: ServerProcess, recorder: http.server.ThreadingHTTPServer
) -> None:
    dest = f"127.0.0.1:{recorder.server_address[1]}"
    with server.client() as c:
        body = goa(c.put("/xlist/backup", json={"destination": {"type": "server", "path": dest},
                                                "lists": {}}), 400, "destination.path")
        assert "backup_allowed_hosts" in body["detail"]
    assert Recorder.seen == []


def test_server_destination_gets_no_credentials_and_its_answers_are_not_quoted(
    guarded: ServerProcess, recorder: http.server.ThreadingHTTPServer
) -> None:
    dest = f"127.0.0.1:{recorder.server_address[1]}"
    token = {"Authorization": "Bearer caller-token-123"}
    with guarded.client() as c:
        c.post("/xlist/restore", content=plain_backup("ssrf-src", 3))
        reply = c.put("/xlist/backup", headers=token, json={
            "destination": {"type": "server", "path": dest}, "lists": {"lists": ["ssrf-src"]}})
        assert reply.status_code == 201, reply.text
        deadline = time.monotonic() + 10
        while not (status := c.get(f"/backup/{reply.json()['id']}").json())["done"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert status["errors"] == {"server": "destination answered 500"}
        assert SECRET not in str(status)

        Recorder.health_status = 503
        body = goa(c.put("/xlist/backup", headers=token, json={
            "destination": {"type": "server", "path": dest}, "lists": {}}), 400, "destination.path")
        assert body["detail"] == f"destination server http://{dest} answered 503 to its health check"
    assert [(m, p.split("?")[0]) for m, p, _ in Recorder.seen] == [
        ("GET", "/health"), ("POST", "/xlist/restore"), ("GET", "/health")]
    for _, _, headers in Recorder.seen:
        assert not {k.lower() for k in headers} & {"authorization", "cookie", "proxy-authorization"}


############################################################################################
# Finding 7: live leaderboards


def log_seq(c: httpx.Client) -> int:
    return c.get("/api/admin/snapshot").json()["log"]["last_seq"]


def top(c: httpx.Client, board: str) -> list[tuple[int, int]]:
    return [(e["id"], e["score"]) for e in c.get(f"/lists/{board}/range?from_top=0").json()]


def events(c: httpx.Client, *pairs: tuple[int, int]) -> None:
    reply = c.post("/api/events", json=[{"metric": "steps", "user": u, "value": v, "ts": T0 + 10}
                                        for u, v in pairs])
    assert reply.status_code == 200, reply.text


def test_live_board_refuses_element_writes_without_logging_them(tmp_path: Path) -> None:
    server = start_server(tmp_path, data_dir=tmp_path / "data")
    try:
        with server.client() as c:
            assert c.post("/api/leaderboards", json={"id": "lb-steps", "metric": "steps",
                                                     "window": {"t1": T0, "t2": T0 + 100}}).status_code == 201
            events(c, (1, 5), (2, 9))
            assert top(c, "lb-steps") == [(2, 9), (1, 5)]
            seq = log_seq(c)
            forged = [
                c.put("/lists/lb-steps/elements", json=[{"id": 1, "score": 10**6}]),
                c.post("/lists/lb-steps/elements", json={"id": 7, "score": 10**6}),
                c.put("/lists/lb-steps/elements/1", json={"id": 1, "score": 10**6}),
                c.delete("/lists/lb-steps/elements/2"),
                c.delete("/lists/lb-steps/elements?element_ids=2"),
                c.post("/lists?replace=true", json={"id": "lb-steps", "set": "forged"}),
            ]
            for reply in forged:
                body = goa(reply, 409, "list_id")
                assert body["code"] == "conflict"
                assert body["detail"].startswith("list 'lb-steps' is a live leaderboard of metric "
                                                  "'steps': its entries follow the counters")
                assert body["detail"].endswith("DELETE /api/leaderboards/lb-steps")
            assert log_seq(c) == seq  # refused before the log
            assert c.post("/lists", json={"id": "plain-x", "set": "sec"}).status_code == 200
            xput = c.put("/xlist/elements", json={"lists": ["lb-steps", "plain-x"],
                                                  "payload": [{"id": 1, "score": 10**6}]}).json()
            assert "live leaderboard" in xput["errors"]["lb-steps"] and "lb-steps" not in xput.get("success", {})
            xdel = c.delete("/xlist/elements/2", params={"lists": ["lb-steps"]}).json()
            assert "live leaderboard" in xdel["errors"]["lb-steps"]
            assert top(c, "lb-steps") == [(2, 9), (1, 5)]
            events(c, (1, 10))
            assert top(c, "lb-steps") == [(1, 15), (2, 9)]
    finally:
        server.stop()


def test_live_board_backup_restore_brings_it_back_live_also_after_replay(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = start_server(tmp_path, data_dir=data_dir, extra=["--fsync", "always"])
    try:
        with server.client() as c:
            assert c.post("/api/leaderboards", json={"id": "lb-r", "metric": "steps",
                                                     "window": {"t1": T0, "t2": T0 + 100}}).status_code == 201
            events(c, (1, 5), (2, 9))
            backup = c.put("/xlist/backup", json={"destination": {"type": "download"},
                                                  "lists": {"lists": ["lb-r"]}}).content
            (item,) = decode_backup(backup)
            assert item.board is not None and item.board.metric == "steps"
            assert c.delete("/api/leaderboards/lb-r").status_code == 204
            events(c, (3, 4))  # while the board is gone
            assert c.post("/xlist/restore", content=backup).json() == {
                "restored": 1, "skipped": 0, "errors": {}}
            assert c.get("/api/leaderboards/lb-r").status_code == 200  # a board, not a plain list
            assert top(c, "lb-r") == [(2, 9), (1, 5), (3, 4)]  # recomputed from the counters
            events(c, (1, 10))
            assert top(c, "lb-r") == [(1, 15), (2, 9), (3, 4)]
            goa(c.put("/lists/lb-r/elements", json=[{"id": 1, "score": 1}]), 409, "list_id")
            # A plain list may not replace the live board through a restore either.
            over = c.post("/xlist/restore", content=plain_backup("lb-r", 3)).json()
            assert over["restored"] == 0 and "live leaderboard" in over["errors"]["lb-r"]
        server.stop(signal.SIGKILL)  # recovery replays the log, RestoreBoard included
        server = start_server(tmp_path, data_dir=data_dir)
        with server.client() as c:
            assert top(c, "lb-r") == [(1, 15), (2, 9), (3, 4)]
            events(c, (2, 100))
            assert top(c, "lb-r") == [(2, 109), (1, 15), (3, 4)]
    finally:
        server.stop()
