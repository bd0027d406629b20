"""Tests for snapshots/transfer.py and the ``pointspace snapshot`` and ``pointspace log`` commands.

Exports are compared as decoded item sets (kind, key, applied_seq and state with dict
orderings removed), never as bytes: two exports of the same state differ in their creation
time and in the order entities were walked.

The commands run as ``python -m web.serving.cli ...`` child processes from the repository root, as an
operator would run them; servers are real ``pointspace serve`` processes on 127.0.0.1
(``conftest.start_server``).
"""

from __future__ import annotations

import gzip
import io
import random
import re
import shutil
import signal
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import trio
import zstandard
from conftest import ROOT, ServerProcess, start_server

from engine.engine import Engine
from engine.errors import Conflict
from snapshots.codec import (
    HEADER_SIZE,
    TRAILER_SIZE,
    SnapshotCorrupted,
    SnapshotEncoder,
    SnapshotTooLarge,
    iter_snapshot_items,
    read_snapshot_header,
    validate_snapshot,
)
from snapshots.framing import Record, RecordDecoder
from snapshots.logscan import list_segments
from snapshots.transfer import export_data_dir, import_snapshot, stream_engine_snapshot

BASE_TS = 1704067200  # 2024-01-01 00:00:00 UTC
SPAN = 60 * 86400
METRICS = ("steps", "points")
COUNTERS = ("c0", "c1", "c2")
RANGES = (
    (BASE_TS - 86400, BASE_TS + SPAN + 86400),
    (BASE_TS + 12_345, BASE_TS + 20 * 86400 + 777),
)


#####################################################################
# Helpers
#####################################################################


def cli(*args: object, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``pointspace ARGS`` from the repository root; stdout and stderr together."""
    return subprocess.run(
        [sys.executable, "-m", "web.serving.cli", *map(str, args)],
        cwd=ROOT,
        input=stdin if stdin is not None else "",
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )


def make_batch(rng: random.Random, users: list[Any], size: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for _ in range(size):
        event: dict[str, Any] = {
            "metric": rng.choice(METRICS),
            "user": rng.choice(users),
            "ts": BASE_TS + rng.randrange(SPAN),
            "value": rng.randrange(1, 100),
        }
        if rng.random() < 0.6:
            atid = rng.randrange(3)
            event.update(atid=atid, aid=atid * 100 + rng.randrange(3))
            if rng.random() < 0.5:
                event.update(mode="diff", ts1=event["ts"] - rng.randrange(3600))
        events.append(event)
    return events


def make_counts(rng: random.Random, size: int) -> list[dict[str, Any]]:
    return [
        {
            "name": rng.choice(COUNTERS),
            "value": rng.randrange(1, 1000),
            "ts": BASE_TS + rng.randrange(SPAN),
        }
        for _ in range(size)
    ]


USERS: list[Any] = list(range(40)) + [f"u{i}" for i in range(10)]


def load_over_http(server: ServerProcess, seed: int, batches: int) -> None:
    rng = random.Random(seed)
    with server.client() as client:
        for i in range(batches):
            if i % 4 == 3:
                client.post("/api/counters", json=make_counts(rng, 5)).raise_for_status()
            else:
                client.post("/api/events", json=make_batch(rng, USERS, 20)).raise_for_status()


def http_answers(server: ServerProcess) -> dict[Any, Any]:
    """Sums (per activity type and with ``_atids``), breakdowns and counters, over HTTP."""
    out: dict[Any, Any] = {}
    with server.client() as client:
        for t1, t2 in RANGES:
            for atid in (None, 0, 2):
                body: dict[str, Any] = {
                    "users": USERS,
                    "metrics": list(METRICS),
                    "t1": t1,
                    "t2": t2,
                    "with_atids": True,
                }
                if atid is not None:
                    body["atid"] = atid
                response = client.post("/api/query", json=body)
                response.raise_for_status()
                out["query", t1, t2, atid] = response.json()["results"]
            for name in COUNTERS:
                response = client.get(f"/api/counters/{name}", params={"t1": t1, "t2": t2})
                response.raise_for_status()
                out["counter", name, t1, t2] = response.json()["sum"]
        body = {
            "users": USERS,
            "metrics": list(METRICS),
            "t1": BASE_TS,
            "t2": BASE_TS + SPAN - 1,
            "step": 7 * 86400,
        }
        response = client.post("/api/breakdown", json=body)
        response.raise_for_status()
        out["breakdown"] = response.json()
    return out


# The same canonical form as tests/snapshots/test_store.py (kept local: test modules do not
# import each other).
def canonical_state(kind: str, plain: Any) -> Any:
    """A snapshot item's state with every ordering removed (lists and dicts become sorted
    tuples), whatever the namespace's plain form: two states are the same when they hold the
    same values. Orders that answers depend on (``_atids``) are checked through queries."""
    if isinstance(plain, dict):
        plain = list(plain.items())
    if isinstance(plain, list | tuple):
        return tuple(sorted((canonical_state(kind, v) for v in plain), key=repr))
    return plain


def items_of(data: bytes) -> tuple[int, dict[tuple[str, Any], tuple[int, Any]]]:
    """``(start_seq, {(kind, key): (applied_seq, canonical state)})`` of a snapshot file."""
    start_seq = read_snapshot_header(io.BytesIO(data)).start_seq
    items = {}
    for kind, key, applied_seq, state in iter_snapshot_items(io.BytesIO(data)):
        items[kind, key] = (applied_seq, canonical_state(kind, state))
    return start_seq, items


def tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` with its bytes: to show that nothing changed (but the
    directory's ``LOCK``, which holds the PID of whoever last used it)."""
    if not path.exists():
        return {}
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != "LOCK"
    }


def log_records(path: Path) -> list[Record]:
    decoder = RecordDecoder()
    decoder.receive_data(path.read_bytes())
    decoder.receive_data(b"")
    records = []
    while isinstance(event := decoder.next_event(), Record):
        records.append(event)
    return records


#####################################################################
# A server's state, exported over HTTP, then the server killed
#####################################################################


class Loaded:
    """A data directory left by a killed ``--fsync always`` server, and what it answered."""

    data_dir: Path
    answers: dict[Any, Any]
    http_export: bytes
    last_seq: int


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Loaded:
    tmp = tmp_path_factory.mktemp("loaded")
    state = Loaded()
    state.data_dir = tmp / "data"
    server = start_server(tmp, data_dir=state.data_dir, extra=["--fsync", "always"])
    try:
        load_over_http(server, seed=11, batches=60)
        with server.client() as client:
            response = client.post("/api/admin/snapshot")  # snapshot + log after it
            response.raise_for_status()
        load_over_http(server, seed=12, batches=30)
        state.answers = http_answers(server)
        with server.client() as client:
            state.last_seq = client.get("/api/admin/snapshot").json()["log"]["last_seq"]
        out = tmp / "http.pssnap"
        result = cli("snapshot", "export", out, "--url", server.url)
        assert result.returncode == 0, result.stdout
        assert re.search(rf"exported [\d,]+ entities \(log position {state.last_seq + 1:,}\) to {re.escape(str(out))}$",
                         result.stdout.strip()), result.stdout  # fmt: skip
        state.http_export = out.read_bytes()
    finally:
        server.stop(signal.SIGKILL)  # no final snapshot: the directory needs its log
    return state


#####################################################################
# Export
#####################################################################


def test_transfer_export_data_dir_equals_http_export(loaded, tmp_path):
    before = tree(loaded.data_dir)
    out = tmp_path / "dir.pssnap"
    result = cli("snapshot", "export", out, "--data-dir", loaded.data_dir)
    assert result.returncode == 0, result.stdout
    assert result.stdout.rstrip().endswith(f"(log position {loaded.last_seq + 1:,}) to {out}")
    assert tree(loaded.data_dir) == before  # read only: nothing cut, written or deleted
    assert not out.with_name(out.name + ".tmp").exists()
    start_seq, items = items_of(out.read_bytes())
    http_start_seq, http_items = items_of(loaded.http_export)
    assert start_seq == http_start_seq == loaded.last_seq + 1
    assert items == http_items
    assert len(items) == len(USERS) + len(COUNTERS)


async def test_transfer_export_data_dir_leaves_a_torn_tail_alone(loaded, tmp_path):
    data_dir = tmp_path / "torn"
    shutil.copytree(loaded.data_dir, data_dir)
    segment = list_segments(data_dir)[-1][1]
    with open(segment, "ab") as f:
        f.write(b"\xa1\x40\x00\x00\x00")  # the start of a record the crash interrupted
    before = tree(data_dir)
    info = await export_data_dir(data_dir, tmp_path / "out.pssnap")
    assert tree(data_dir) == before
    assert info.start_seq == loaded.last_seq + 1
    assert items_of((tmp_path / "out.pssnap").read_bytes())[1] == items_of(loaded.http_export)[1]


def test_transfer_export_data_dir_damaged_log_exits_1_naming_file_and_offset(loaded, tmp_path):
    data_dir = tmp_path / "damaged"
    shutil.copytree(loaded.data_dir, data_dir)
    segment = list_segments(data_dir)[-1][1]
    records = log_records(segment)
    victim = records[len(records) // 2]
    data = bytearray(segment.read_bytes())
    data[victim.offset + 20] ^= 0xFF
    segment.write_bytes(bytes(data))
    out = tmp_path / "out.pssnap"
    result = cli("snapshot", "export", out, "--data-dir", data_dir)
    assert result.returncode == 1
    assert f"write-ahead log is damaged in '{segment}' at byte {victim.offset}" in result.stdout
    assert not out.exists()


def test_transfer_export_missing_data_dir_is_a_one_line_error(tmp_path):
    result = cli("snapshot", "export", tmp_path / "out.pssnap", "--data-dir", tmp_path / "missing")
    assert result.returncode == 1
    assert "Traceback" not in result.stdout
    assert f"Error: no data directory at '{tmp_path / 'missing'}'" in result.stdout


def test_transfer_export_needs_exactly_one_source(tmp_path):
    for args in ([], ["--data-dir", tmp_path, "--url", "http://127.0.0.1:9"]):
        result = cli("snapshot", "export", tmp_path / "out.pssnap", *args)
        assert result.returncode == 2
        assert "Error: give exactly one of --data-dir or --url" in result.stdout


#####################################################################
# Import
#####################################################################


def test_transfer_import_refuses_a_dir_with_data_unless_forced(loaded, tmp_path):
    source = tmp_path / "state.pssnap"
    source.write_bytes(loaded.http_export)
    data_dir = tmp_path / "busy"
    shutil.copytree(loaded.data_dir, data_dir)
    before = tree(data_dir)
    result = cli("snapshot", "import", source, "--data-dir", data_dir)
    assert result.returncode == 1
    assert result.stdout.strip().endswith(
        f"Error: '{data_dir}' already holds data (wal, snapshots); pass --force to replace it"
    ), result.stdout
    assert tree(data_dir) == before
    result = cli("snapshot", "import", source, "--data-dir", data_dir, "--force")
    assert result.returncode == 0, result.stdout
    start_seq, items = items_of(loaded.http_export)
    assert result.stdout.strip().endswith(
        f"imported {len(items):,} entities (log position {start_seq:,}) into {data_dir}"
    ), result.stdout
    assert sorted(tree(data_dir)) == [f"snapshots/snap-{start_seq:020d}.pssnap"]
    assert tree(data_dir)[f"snapshots/snap-{start_seq:020d}.pssnap"] == loaded.http_export


def test_transfer_import_conflict_in_process(loaded, tmp_path):
    source = tmp_path / "state.pssnap"
    source.write_bytes(loaded.http_export)
    (tmp_path / "d" / "snapshots").mkdir(parents=True)
    (tmp_path / "d" / "snapshots" / "snap-00000000000000000001.pssnap").write_bytes(b"x")
    with pytest.raises(
        Conflict, match=r"^'.*' already holds data \(snapshots\); pass --force to replace it$"
    ):
        import_snapshot(source, tmp_path / "d")
    (tmp_path / "empty" / "wal").mkdir(parents=True)  # empty directories hold no data
    assert import_snapshot(source, tmp_path / "empty").start_seq == loaded.last_seq + 1


def _body_span(data: bytes) -> tuple[int, int]:
    return HEADER_SIZE, len(data) - TRAILER_SIZE


def damaged_variants(good: bytes) -> dict[str, bytes]:
    """Ways a snapshot file goes wrong in transit or by mistake."""
    start, end = _body_span(good)
    body = good[start:end]
    inner = zstandard.ZstdDecompressor().decompressobj().decompress(body)
    flipped = bytearray(good)
    flipped[(start + end) // 2] ^= 0x01
    return {
        "empty": b"",
        "truncated in header": good[:10],
        "header only": good[:HEADER_SIZE],
        "truncated in body": good[: (start + end) // 2],
        "trailer missing": good[:end],
        "truncated in trailer": good[:-1],
        "flipped byte in body": bytes(flipped),
        "flipped byte in trailer": good[:-3] + bytes([good[-3] ^ 0x80]) + good[-2:],
        "extra bytes after trailer": good + b"\x00",
        "whole file zstd-compressed": zstandard.ZstdCompressor().compress(good),
        "body compressed twice": good[:start]
        + zstandard.ZstdCompressor().compress(body)
        + good[end:],
        "body not compressed": good[:start] + inner + good[end:],
        "gzip instead of zstd": good[:start] + gzip.compress(inner) + good[end:],
    }


def test_transfer_import_validates_the_whole_file_and_changes_nothing(loaded, tmp_path):
    busy = tmp_path / "busy"
    shutil.copytree(loaded.data_dir, busy)
    busy_before = tree(busy)
    for name, data in damaged_variants(loaded.http_export).items():
        source = tmp_path / "bad.pssnap"
        source.write_bytes(data)
        fresh = tmp_path / "fresh"
        with pytest.raises(SnapshotCorrupted):
            import_snapshot(source, fresh)
        assert not fresh.exists(), name
        with pytest.raises(SnapshotCorrupted):
            import_snapshot(source, busy, replace=True)
        assert tree(busy) == busy_before, name


@pytest.mark.parametrize(
    ("variant", "message"),
    [
        (
            "whole file zstd-compressed",
            r"not a pointspace snapshot: the file starts with b'\(\\xb5/\\xfd.*', expected b'PSSNAP'",
        ),
        ("body compressed twice", r"snapshot item 0 is not \(kind, key, applied_seq, state\): .*"),
        ("truncated in body", r"snapshot is truncated inside zstd frame 1"),
        ("trailer missing", r"snapshot trailer is truncated: expected 24 bytes after the body"),
    ],
)
def test_transfer_import_cli_refuses_a_damaged_file(loaded, tmp_path, variant, message):
    source = tmp_path / "bad.pssnap"
    source.write_bytes(damaged_variants(loaded.http_export)[variant])
    data_dir = tmp_path / "d"
    result = cli("snapshot", "import", source, "--data-dir", data_dir, "--force")
    assert result.returncode == 1
    assert re.search(rf"^Error: {message}$", result.stdout, re.M), result.stdout
    assert not data_dir.exists()


def test_transfer_import_then_serve_answers_the_same(loaded, tmp_path):
    source = tmp_path / "state.pssnap"
    source.write_bytes(loaded.http_export)
    data_dir = tmp_path / "imported"
    result = cli("snapshot", "import", source, "--data-dir", data_dir)
    assert result.returncode == 0, result.stdout
    server = start_server(tmp_path, data_dir=data_dir, extra=["--fsync", "always"])
    try:
        assert http_answers(server) == loaded.answers
        with server.client() as client:
            status = client.get("/api/admin/snapshot").json()
            assert status["recovery"]["replayed_records"] == 0
            assert status["recovery"]["snapshot_items"] == len(USERS) + len(COUNTERS)
            # Writes go on from the imported log position, and survive a kill.
            event = {"metric": "after", "user": 7, "value": 5, "ts": BASE_TS}
            client.post("/api/events", json=[event]).raise_for_status()
            assert (
                client.get("/api/admin/snapshot").json()["log"]["last_seq"] == loaded.last_seq + 1
            )
    finally:
        server.stop(signal.SIGKILL)
    server = start_server(tmp_path, data_dir=data_dir)
    try:
        with server.client() as client:
            got = client.get(
                "/api/users/7/sums/after", params={"t1": BASE_TS, "t2": BASE_TS}
            ).json()
            assert got["sum"] == 5
            assert client.get("/api/admin/snapshot").json()["recovery"]["replayed_records"] == 1
        assert http_answers(server) == loaded.answers
    finally:
        server.stop()


async def test_transfer_fuzzy_export_then_import_keeps_new_writes(tmp_path):
    rng = random.Random(5)
    users = list(range(3000))
    async with Engine.open() as engine:
        await engine.ingest(
            [{"metric": "steps", "user": u, "value": 1, "ts": BASE_TS} for u in users]
        )
        done = trio.Event()

        async def writer() -> None:
            while not done.is_set():
                await engine.ingest(make_batch(rng, users, 10))

        chunks = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            async for chunk in stream_engine_snapshot(engine):
                chunks.append(chunk)
                await trio.sleep(0.002)  # a client reading at network speed
            done.set()
    export = b"".join(chunks)
    start_seq = read_snapshot_header(io.BytesIO(export)).start_seq
    ahead = [
        item for item in iter_snapshot_items(io.BytesIO(export)) if item.applied_seq >= start_seq
    ]
    assert ahead, "the export was not fuzzy"
    victim = max(ahead, key=lambda item: item.applied_seq).key
    (tmp_path / "state.pssnap").write_bytes(export)
    import_snapshot(tmp_path / "state.pssnap", tmp_path / "d")
    async with Engine.open(tmp_path / "d", fsync="always") as engine:
        for _ in range(3):
            await engine.ingest([{"metric": "fresh", "user": victim, "value": 1, "ts": BASE_TS}])
        got = await engine.query([victim], ["fresh"], BASE_TS, BASE_TS)
    assert got[victim].sums == {"fresh": 3}


#####################################################################
# pointspace log check / repair
#####################################################################


async def damaged_log(tmp_path: Path, where: str) -> tuple[Path, Path, Record]:
    """A data dir whose log (10 one-event records, users 0..2) is damaged in record 5."""
    data_dir = tmp_path / "d"
    async with Engine.open(tmp_path / "live", fsync="always") as engine:
        for i in range(10):
            await engine.ingest(
                [{"metric": "steps", "user": i % 3, "value": i + 1, "ts": BASE_TS + i}]
            )
        shutil.copytree(tmp_path / "live", data_dir)  # a crash image: no final snapshot
    segment = list_segments(data_dir)[0][1]
    records = log_records(segment)
    victim = records[4] if where == "middle" else records[-1]
    data = bytearray(segment.read_bytes())
    if where == "middle":
        data[victim.offset + 18] ^= 0x10
    else:
        del data[victim.offset + 5 :]
    segment.write_bytes(bytes(data))
    return data_dir, segment, victim


async def test_transfer_log_check_ok_exits_0(tmp_path):
    async with Engine.open(tmp_path / "d", fsync="always") as engine:
        await engine.count([{"name": "c0", "value": 1, "ts": BASE_TS}] * 3)
        await engine.count([{"name": "c0", "value": 1, "ts": BASE_TS}])
    result = cli("log", "check", "--data-dir", tmp_path / "d")
    assert result.returncode == 0, result.stdout
    assert result.stdout.splitlines()[-1] == "ok: last seq 2"
    result = cli("log", "repair", "--yes", "--data-dir", tmp_path / "d")
    assert result.returncode == 0
    assert result.stdout.splitlines()[-1] == "nothing to repair"


async def test_transfer_log_check_damage_exits_1_naming_file_and_offset(tmp_path):
    data_dir, segment, victim = await damaged_log(tmp_path, "middle")
    before = tree(data_dir)
    result = cli("log", "check", "--data-dir", data_dir)
    assert result.returncode == 1
    size = segment.stat().st_size
    assert re.search(
        rf"^corruption in {segment.name} at byte {victim.offset} \({size - victim.offset} byte\(s\) "
        r"from there to the end of the file\): checksum mismatch in record claiming seq 5$",
        result.stdout,
        re.M,
    ), result.stdout
    assert f"{segment.name}: seq 1..4, 4 record(s), {victim.offset} good byte(s)" in result.stdout
    assert tree(data_dir) == before
    # Without confirmation, repair does nothing.
    result = cli("log", "repair", "--data-dir", data_dir)
    assert result.returncode == 1 and "Aborted" in result.stdout
    assert tree(data_dir) == before


async def test_transfer_log_check_reports_a_torn_tail(tmp_path):
    data_dir, segment, victim = await damaged_log(tmp_path, "tail")
    result = cli("log", "check", "--data-dir", data_dir)
    assert result.returncode == 1
    assert re.search(
        rf"^torn-tail in {segment.name} at byte {victim.offset} \(5 byte\(s\)", result.stdout, re.M
    )


async def test_transfer_log_repair_then_serve_starts(tmp_path):
    data_dir, segment, victim = await damaged_log(tmp_path, "middle")
    # serve refuses first, naming file and offset (tests/snapshots/test_crash.py does it
    # over a killed server; here the damage is made by hand).
    result = cli("log", "repair", "--yes", "--data-dir", data_dir)
    assert result.returncode == 0, result.stdout
    assert re.search(
        rf"^truncated {segment.name} at byte {victim.offset}, dropping \d+ byte\(s\): checksum mismatch",
        result.stdout,
        re.M,
    ), result.stdout
    assert segment.stat().st_size == victim.offset
    result = cli("log", "check", "--data-dir", data_dir)
    assert result.returncode == 0 and result.stdout.splitlines()[-1] == "ok: last seq 4"
    server = start_server(tmp_path, data_dir=data_dir, extra=["--fsync", "always"])
    try:
        with server.client() as client:
            sums = [
                client.get(
                    f"/api/users/{u}/sums/steps", params={"t1": BASE_TS, "t2": BASE_TS + 99}
                ).json()["sum"]
                for u in range(3)
            ]
            assert sums == [1 + 4, 2, 3]  # records 1..4 carried values 1..4 for users 0,1,2,0
            client.post(
                "/api/events", json=[{"metric": "steps", "user": 1, "value": 100, "ts": BASE_TS}]
            ).raise_for_status()
            assert client.get("/api/admin/snapshot").json()["log"]["last_seq"] == 5
    finally:
        server.stop()


#####################################################################
# Untrusted files: bounded inflation (security finding 1)
#####################################################################


def _snapshot_with_body(body: bytes) -> bytes:
    """A valid header followed by ``body`` (already compressed) and no valid trailer."""
    encoder = SnapshotEncoder(start_seq=1, created=0.0)
    return encoder.header_bytes() + body


def test_transfer_import_of_a_zstd_bomb_fails_fast_with_flat_memory(tmp_path):
    compressor = zstandard.ZstdCompressor(level=1).compressobj()
    zeros = bytes(1 << 24)
    body = b"".join(compressor.compress(zeros) for _ in range(64)) + compressor.flush()  # 1 GiB
    source = tmp_path / "bomb.pssnap"
    source.write_bytes(_snapshot_with_body(body))
    data_dir = tmp_path / "data"
    tracemalloc.start()
    try:
        with pytest.raises(SnapshotCorrupted, match=r"^snapshot item 0 is not \(kind, key, "
                           r"applied_seq, state\): 0$"):
            import_snapshot(source, data_dir)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024  # one 128 KiB block at a time, not the whole inflation
    assert not data_dir.exists()


def test_transfer_import_past_max_inflated_changes_nothing(tmp_path):
    encoder = SnapshotEncoder(start_seq=1, created=0.0)
    data = encoder.header_bytes() + encoder.encode_item(("blob", "k", 0, bytes(4 << 20))) + encoder.finish()
    source = tmp_path / "big.pssnap"
    source.write_bytes(data)
    data_dir = tmp_path / "data"
    with pytest.raises(SnapshotTooLarge, match=r"^the snapshot inflates to more than 1048576 bytes, "
                       r"the limit \(max_inflated_bytes\); raise that setting if the data is genuine$"):
        import_snapshot(source, data_dir, max_inflated=1 << 20)
    assert not data_dir.exists()
    assert validate_snapshot(io.BytesIO(data), max_inflated=8 << 20).items == 1


def test_transfer_import_cli_reads_max_inflated_bytes_from_the_environment(tmp_path, monkeypatch):
    encoder = SnapshotEncoder(start_seq=1, created=0.0)
    source = tmp_path / "big.pssnap"
    source.write_bytes(encoder.header_bytes() + encoder.encode_item(("blob", "k", 0, bytes(4 << 20)))
                       + encoder.finish())
    monkeypatch.setenv("POINTSPACE_MAX_INFLATED_BYTES", str(1 << 20))
    result = cli("snapshot", "import", source, "--data-dir", tmp_path / "data")
    assert result.returncode == 1
    assert "the snapshot inflates to more than 1048576 bytes" in result.stdout
