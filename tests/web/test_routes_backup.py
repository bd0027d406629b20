"""RankDB backup and restore end to end (web/compat/rankdb/backups.py), against real server processes.

Lists are seeded by restoring a stream made with the codec (so these tests need no other
route) and read back by downloading a backup; one test also goes through RankDB's ``/lists``
routes and skips when they are not there.
"""

from __future__ import annotations

import http.server
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import zstandard
from conftest import ServerProcess, start_server

from engine.engine import Engine
from engine.lists import LIST, ListSettings, RestoreList
from engine.ranked import ElementIn, RankedList
from snapshots.backup import BackupCorrupted, decode_backup, encode_backup
from web.app import create_app
from web.compat.rankdb.backups import BackupJob, backup_stream
from web.serving.settings import Settings

NOW = 1_700_000_000
U64 = 2**64 - 1


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The backup directories of the two servers of ``pair``."""
    root = tmp_path_factory.mktemp("backup-dirs")
    return root / "a", root / "b"


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, dirs: tuple[Path, Path]
         ) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two in-memory servers, a source and a destination, each with a backup directory; the
    source may send server backups to loopback (any port)."""
    a = start_server(tmp_path_factory.mktemp("backup-a"),
                     extra=["--backup-dir", str(dirs[0]), "--backup-allowed-host", "127.0.0.1"])
    b = start_server(tmp_path_factory.mktemp("backup-b"), extra=["--backup-dir", str(dirs[1])])
    yield a, b
    a.stop()
    b.stop()


def records(seed: int, n: int, chunk: int = 64) -> list[dict]:
    rng = random.Random(seed)
    ranked = RankedList()
    ranked.bulk_load(
        [ElementIn(rng.choice([i, U64 - i]), rng.randrange(U64 + 1), rng.randrange(3),
                   {"i": i} if i % 2 else None) for i in range(n)],
        NOW + seed,
    )
    return list(ranked.to_records(chunk))


def seed(client: httpx.Client, lists: dict[str, tuple[ListSettings, int]], query: str = "") -> dict:
    """Create lists on a server through restore; ``{id: (settings, n elements)}``."""
    data = encode_backup([(name, s, records(i, n)) for i, (name, (s, n)) in enumerate(sorted(lists.items()))])
    reply = client.post(f"/xlist/restore{query}", content=data)
    assert reply.status_code == 200, reply.text
    return reply.json()


def download(client: httpx.Client, selection: dict | None = None) -> dict[str, tuple[ListSettings, list]]:
    """Every (or the selected) list on a server: ``{id: (settings, elements in rank order)}``."""
    reply = client.put("/xlist/backup", json={"destination": {"type": "download"}, "lists": selection or {}})
    assert reply.status_code == 200, reply.text
    return {b.list_id: (b.settings, list(RankedList.from_records(b.records))) for b in decode_backup(reply.content)}


def wait_done(client: httpx.Client, job_id: str, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"/backup/{job_id}").json()
        if status["done"]:
            return status
        time.sleep(0.05)
    raise AssertionError(f"backup {job_id} not done after {timeout} s: {status}")


S1 = ListSettings(set="games", metadata={"region": "eu", "mode": "solo"})
S2 = ListSettings(set="games", metadata={"region": "us"}, split_size=3000, merge_size=100, load_index=True)
S3 = ListSettings(set="other", metadata={"region": "eu"})


############################################################################################
# download -> restore elsewhere


def test_backup_download_then_restore_with_prefix_suffix_and_keep(pair):
    a, b = pair
    with a.client() as ca, b.client() as cb:
        assert seed(ca, {"dl-one": (S1, 300), "dl-two": (S2, 0), "dl-three": (S3, 5)}) == {
            "restored": 3, "skipped": 0, "errors": {}}
        reply = ca.put("/xlist/backup", json={"destination": {"type": "download"},
                                              "lists": {"lists": ["dl-one", "dl-two", " ", "dl-gone"]}})
        assert reply.status_code == 200
        job_id = reply.headers["X-Backup-ID"]
        assert len(job_id) == 10
        assert reply.headers["Content-Type"] == "application/octet-stream"
        assert reply.headers["Content-Disposition"] == f'attachment; filename="{job_id}.bin"'
        status = ca.get(f"/backup/{job_id}").json()
        assert {k: status[k] for k in ("cancelled", "done", "lists", "lists_done", "storage", "errors")} == {
            "cancelled": False, "done": True, "lists": 2, "lists_done": 2, "storage": "download",
            "errors": {"dl-gone": "not found"}}
        assert status["size"] == len(reply.content)
        source = download(ca, {"lists": ["dl-one", "dl-two"]})

        restored = cb.post("/xlist/restore?list_id_prefix=p.&list_id_suffix=-s&keep=true", content=reply.content)
        assert restored.json() == {"restored": 2, "skipped": 0, "errors": {}}
        again = cb.post("/xlist/restore?list_id_prefix=p.&list_id_suffix=-s&keep=true", content=reply.content)
        assert again.json() == {"restored": 0, "skipped": 2, "errors": {}}
        on_b = download(cb, {"lists": ["p.dl-one-s", "p.dl-two-s"]})
        assert on_b == {f"p.{k}-s": v for k, v in source.items()}


def test_restore_without_keep_replaces_an_existing_list(pair):
    a, _ = pair
    with a.client() as ca:
        seed(ca, {"rep-x": (S1, 50)})
        seed(ca, {"rep-x": (S3, 7)}, "?keep=false")
        (settings, elements), = download(ca, {"lists": ["rep-x"]}).values()
        assert settings == S3 and len(elements) == 7


def test_restore_id_too_long_after_prefix_is_a_per_list_error(pair):
    a, _ = pair
    name = "L" * 95
    with a.client() as ca:
        result = seed(ca, {name: (S1, 1), "short-ok": (S1, 1)}, "?list_id_prefix=pre-fix-")
        assert result["restored"] == 1
        assert list(result["errors"]) == [f"pre-fix-{name}"]
        assert "longer than 100 characters" in result["errors"][f"pre-fix-{name}"]


def test_backup_selection_by_metadata_and_sets(pair):
    a, _ = pair
    with a.client() as ca:
        seed(ca, {"sel-eu": (S1, 2), "sel-us": (S2, 2), "sel-other": (S3, 2)})
        by_meta = download(ca, {"match_metadata": {"region": "eu"}})
        assert {"sel-eu", "sel-other"} <= set(by_meta) and "sel-us" not in by_meta
        by_set = download(ca, {"all_in_sets": ["other"]})
        assert "sel-other" in by_set and "sel-eu" not in by_set
        everything = download(ca, {})
        assert {"sel-eu", "sel-us", "sel-other"} <= set(everything)


############################################################################################
# damaged streams change nothing


def test_restore_damaged_stream_is_400_and_changes_nothing(pair):
    a, _ = pair
    with a.client() as ca:
        seed(ca, {"keep-me": (S1, 10)})
        before = download(ca, {"lists": ["keep-me"]})
        good = encode_backup([("keep-me", S3, records(9, 3)), ("dmg-new", S1, records(8, 100))])
        for body, detail in [
            (good[: len(good) - 30], "backup stream is truncated"),
            (zstandard.ZstdCompressor().compress(good), "backup stream is compressed twice"),
            (zstandard.ZstdDecompressor().decompressobj().decompress(good), "backup stream is not zstd-compressed"),
            (good[:50] + bytes([good[50] ^ 0x55]) + good[51:], "backup stream is damaged"),
            (b"", "backup stream is empty"),
        ]:
            reply = ca.post("/xlist/restore", content=body)
            assert reply.status_code == 400, reply.text
            error = reply.json()
            assert error["code"] == "bad_request" and error["status"] == 400 and error["id"]
            assert error["detail"].startswith(detail), error
        assert download(ca, {"lists": ["keep-me", "dmg-new"]}) == before


def test_restore_src_url_is_not_supported(pair):
    a, _ = pair
    with a.client() as ca:
        reply = ca.post("/xlist/restore?src=s3://bucket/key")
        assert reply.status_code == 400
        assert reply.json()["detail"].startswith("src 's3://bucket/key' is not supported by pointspace")
        bad = ca.post("/xlist/restore?keep=maybe", content=encode_backup([]))
        assert (bad.status_code, bad.json()["meta"]) == (400, {"field": "keep"})


def test_backup_bad_requests_answer_goa_errors(pair):
    a, _ = pair
    with a.client() as ca:
        cases = [
            ({"destination": {"type": "s3", "path": "s3://b/k"}, "lists": {}}, "destination type 's3' is not supported"),
            ({"destination": {"type": "tape"}, "lists": {}}, "destination.type must be download, file or server"),
            ({"destination": {"type": "file"}, "lists": {}}, "destination.path is required for type 'file'"),
            ({"destination": {"type": "download"}}, "lists is required"),
            ({"destination": {"type": "file", "path": "/no/such/dir/x.bin"}, "lists": {}},
             "destination.path must be a file name in the server's backup directory"),
            ({"destination": {"type": "server", "path": "not a host"}, "lists": {}}, "destination.path must be host:port"),
            ({"destination": {"type": "server", "path": "10.1.2.3:1155"}, "lists": {}},
             "destination.path: host 10.1.2.3:1155 is not in backup_allowed_hosts"),
        ]
        for body, detail in cases:
            reply = ca.put("/xlist/backup", json=body)
            assert reply.status_code == 400, (body, reply.text)
            assert reply.json()["detail"].startswith(detail), reply.json()
            assert reply.json()["meta"]["field"].startswith(("destination", "lists")), reply.json()
        missing = ca.get("/backup/nosuchjob1")
        assert missing.status_code == 404
        assert {k: missing.json()[k] for k in ("code", "status")} == {"code": "not_found", "status": 404}
        assert ca.delete("/backup/nosuchjob1").status_code == 404


############################################################################################
# file and server destinations


def test_backup_to_file_then_restore_from_src_file(pair, dirs):
    a, b = pair
    with a.client() as ca, b.client() as cb:
        seed(ca, {"file-a": (S1, 120), "file-b": (S2, 3)})
        reply = ca.put("/xlist/backup", json={"destination": {"type": "file", "path": "lists.bin"},
                                              "lists": {"lists": ["file-a", "file-b", "file-nope"]}})
        assert reply.status_code == 201
        job = reply.json()
        assert job["callback_url"] == f"/backup/{job['id']}"
        status = wait_done(ca, job["id"])
        assert status["errors"] == {"file-nope": "not found"}
        assert (status["storage"], status["uri"], status["lists_done"]) == ("file", "lists.bin", 2)
        target = dirs[0] / "lists.bin"
        assert status["size"] == target.stat().st_size and status["finished"]
        assert dirs[0].stat().st_mode & 0o777 == 0o700  # created on first use, private
        assert [p.name for p in dirs[0].iterdir()] == ["lists.bin"]  # no temporary file left
        assert [x.list_id for x in decode_backup(target.read_bytes())] == ["file-a", "file-b"]

        dirs[1].mkdir(exist_ok=True)
        (dirs[1] / "from-a.bin").write_bytes(target.read_bytes())
        result = cb.post("/xlist/restore?src_file=from-a.bin&list_id_suffix=.f", content=b"ignored")
        assert result.json() == {"restored": 2, "skipped": 0, "errors": {}}
        assert download(cb, {"lists": ["file-a.f", "file-b.f"]}) == {
            f"{k}.f": v for k, v in download(ca, {"lists": ["file-a", "file-b"]}).items()}
        missing = cb.post("/xlist/restore?src_file=nope.bin")
        assert missing.status_code == 400, missing.text
        assert missing.json()["detail"] == ("src_file: no backup named 'nope.bin' in the server's "
                                            "backup directory")
        assert missing.json()["meta"] == {"field": "src_file"}


def test_backup_server_to_server_between_two_processes(pair):
    a, b = pair
    with a.client() as ca, b.client() as cb:
        seed(ca, {"srv-1": (S1, 500), "srv-2": (S3, 0)})
        reply = ca.put("/xlist/backup", json={
            "destination": {"type": "server", "path": f"127.0.0.1:{b.port}",
                            "server_list_id_prefix": "from-a-", "server_list_id_suffix": "_x"},
            "lists": {"lists": ["srv-1", "srv-2"]}})
        assert reply.status_code == 201, reply.text
        status = wait_done(ca, reply.json()["id"])
        assert status["errors"] == {}, status
        assert status["custom"] == {"restored": "2", "skipped": "0", "remote_errors": "0"}
        assert status["uri"] == f"http://127.0.0.1:{b.port}/xlist/restore?list_id_prefix=from-a-&list_id_suffix=_x"
        assert download(cb, {"lists": ["from-a-srv-1_x", "from-a-srv-2_x"]}) == {
            f"from-a-{k}_x": v for k, v in download(ca, {"lists": ["srv-1", "srv-2"]}).items()}


def test_backup_server_unreachable_is_400(pair):
    a, _ = pair
    with a.client() as ca:
        reply = ca.put("/xlist/backup", json={"destination": {"type": "server", "path": "127.0.0.1:1"}, "lists": {}})
        assert reply.status_code == 400
        assert reply.json()["detail"] == "destination server http://127.0.0.1:1 is not reachable (ConnectError)"


class _StalledRestore(http.server.BaseHTTPRequestHandler):
    """A destination that passes its health check, then never answers the restore."""

    release = threading.Event()
    started = threading.Event()

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def do_POST(self):  # noqa: N802
        self.started.set()
        self.release.wait(30)

    def log_message(self, *args):
        pass


def test_backup_cancel_stops_a_job_waiting_on_its_destination(pair):
    a, _ = pair
    fake = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StalledRestore)
    fake.daemon_threads = True
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    try:
        with a.client() as ca:
            seed(ca, {"cancel-me": (S1, 10)})
            reply = ca.put("/xlist/backup", json={
                "destination": {"type": "server", "path": f"127.0.0.1:{fake.server_address[1]}"},
                "lists": {"lists": ["cancel-me"]}})
            job_id = reply.json()["id"]
            assert _StalledRestore.started.wait(10)
            status = ca.get(f"/backup/{job_id}").json()
            assert (status["done"], status["cancelled"]) == (False, False)
            assert ca.delete(f"/backup/{job_id}").status_code == 204
            status = wait_done(ca, job_id)
            assert status["cancelled"] is True
            assert "server" not in status["errors"]
            assert ca.delete(f"/backup/{job_id}").status_code == 204  # cancelling again is fine
    finally:
        _StalledRestore.release.set()
        fake.shutdown()


############################################################################################
# the stream itself, in process


async def test_backup_stream_cancelled_between_chunks_ends_without_end_marker(engine: Engine):
    for i in range(3):
        await engine.submit(RestoreList(list_id=f"c{i}x", settings=S1, records=records(i, 200, chunk=16), keep=False))
    job = BackupJob(id="j", storage="download", uri="download", list_ids=["c0x", "c1x", "c2x"])
    pieces = []
    async for piece in backup_stream(engine, job):
        pieces.append(piece)
        if piece and not job.cancelled:  # the first bytes out: list c0x, flushed as c1x starts
            job.cancel()
    assert not job.complete and job.lists_done == 1 and job.cancelled
    with pytest.raises(BackupCorrupted, match=r"^backup stream is truncated.*after 1 complete list"):
        decode_backup(b"".join(pieces))


async def test_backup_stream_reads_each_list_once_through_its_actor(engine: Engine):
    await engine.submit(RestoreList(list_id="only", settings=S2, records=records(1, 100), keep=False))
    job = BackupJob(id="j", storage="download", uri="download", list_ids=["only", "gone"])
    data = b"".join([p async for p in backup_stream(engine, job)])
    assert job.complete and job.success == ["only"] and job.errors == {"gone": "not found"}
    assert job.size == len(data)
    (item,) = decode_backup(data)
    want = await engine.ask(LIST, "only", lambda state: list(state.ranked))
    assert list(RankedList.from_records(item.records)) == want


############################################################################################
# with RankDB's list routes


def test_backup_of_lists_made_through_rankdb_routes(pair):
    a, b = pair
    with a.client() as ca, b.client() as cb:
        created = ca.post("/lists", json={"id": "via-api", "set": "api-set", "metadata": {"k": "v"},
                                          "populate": [{"id": 1, "score": 10, "payload": {"n": "one"}},
                                                       {"id": 2, "score": 30}, {"id": 3, "score": 20}]})
        if created.status_code in (404, 405):
            pytest.skip("RankDB's POST /lists is not there yet (web/compat/rankdb/routes.py)")
        assert created.status_code == 200, created.text
        data = ca.put("/xlist/backup", json={"destination": {"type": "download"},
                                             "lists": {"lists": ["via-api"]}}).content
        assert cb.post("/xlist/restore?list_id_prefix=r-", content=data).json()["restored"] == 1
        top = cb.get("/lists/r-via-api/range", params={"from_top": 0, "limit": 10})
        assert top.status_code == 200, top.text
        assert [(e["id"], e["score"]) for e in top.json()] == [(2, 30), (3, 20), (1, 10)]
        info = cb.get("/lists/r-via-api").json()
        assert (info["set"], info["metadata"]) == ("api-set", {"k": "v"})


async def test_restore_body_may_exceed_the_json_body_limit(engine: Engine):
    """A restore streams into the decoder: its limit is max_stream_bytes, not max_body_bytes."""
    app = create_app(engine, Settings(data_dir=None, max_body_bytes=256, max_stream_bytes=1 << 20))
    data = encode_backup([("big-body", S1, records(3, 500))])
    assert len(data) > 256
    async with app.test_app() as test_app:
        client = test_app.test_client()
        reply = await client.post("/xlist/restore", data=data, headers={"Content-Length": str(len(data))})
        assert (reply.status_code, await reply.get_json()) == (200, {"restored": 1, "skipped": 0, "errors": {}})
        other = await client.put("/xlist/backup", json={"destination": {"type": "download"}, "lists": {"lists": ["x" * 300]}})
        assert other.status_code == 413
        assert (await other.get_json())["code"] == "request_too_large"
