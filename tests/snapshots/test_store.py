"""Tests for snapshots/store.py: an Engine on a data directory, closed, crashed and reopened.

Every test drives the public engine API (``Engine.open(data_dir, ...)``, ``ingest``, ``count``,
``snapshot_now``) and judges recovery by its answers: each query is compared with the engine
that was running before (the "live" engine) and with an in-memory engine fed the same batches
(the model).

A *crash image* is a copy of the data directory taken while the engine is still open, after
every writer has been acknowledged under ``fsync="always"``: it is exactly what the disk holds
if the process is killed at that moment (no final snapshot, the log as fsynced). Recovery from
it must replay the log.

Workloads are seeded (``random.Random(seed)``) and small, so the file runs in seconds.
"""

from __future__ import annotations

import errno
import os
import random
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from engine.engine import Engine
from engine.errors import StorageFailure
from snapshots.codec import iter_snapshot_items
from snapshots.files import FaultyFileSystem, FileSystem
from snapshots.framing import Record, RecordDecoder
from snapshots.logscan import LogCorrupted, check_log, list_segments
from snapshots.writer import list_snapshots, write_snapshot

BASE_TS = 1704067200  # 2024-01-01 00:00:00 UTC
SPAN = 90 * 86400  # events fall in the first 90 days of 2024
METRICS = ("steps", "points")
COUNTERS = tuple(f"c{i}" for i in range(4))
ATIDS = (0, 1, 2)


#####################################################################
# Workload, model, answers
#####################################################################


def make_users(n_int: int, n_str: int, *, base: int = 0, prefix: str = "u") -> list[Any]:
    """Integer and string user ids (both kinds go through the log and snapshots)."""
    return [base + i for i in range(n_int)] + [f"{prefix}{base + i}" for i in range(n_str)]


def make_batch(rng: random.Random, users: list[Any], size: int) -> list[dict[str, Any]]:
    """A mixed batch: minimal add events, add events with activities, diff-mode events."""
    events: list[dict[str, Any]] = []
    for _ in range(size):
        user = rng.choice(users)
        metric = rng.choice(METRICS)
        ts = BASE_TS + rng.randrange(SPAN)
        kind = rng.random()
        if kind < 0.4:
            events.append({"metric": metric, "user": user, "value": rng.randrange(1, 50), "ts": ts})
            continue
        atid = rng.choice(ATIDS)
        aid = atid * 100 + rng.randrange(4)  # an activity keeps the type of its first write
        event = {"metric": metric, "user": user, "ts": ts, "atid": atid, "aid": aid}
        if kind < 0.7:
            event["value"] = rng.randrange(1, 50)
        else:  # diff mode: the value is the activity's running total over [ts1, ts]
            event.update(mode="diff", ts1=ts - rng.randrange(7200), value=rng.randrange(0, 200))
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


def make_plan(seed: int, users: list[Any], n: int, size: int = 8) -> list[tuple[str, list[Any]]]:
    """``n`` commands: mostly event batches, every fifth a batch of global-counter increments."""
    rng = random.Random(seed)
    return [
        ("count", make_counts(rng, 3)) if i % 5 == 4 else ("ingest", make_batch(rng, users, size))
        for i in range(n)
    ]


async def apply_plan(engine: Engine, plan: list[tuple[str, list[Any]]]) -> None:
    for op, batch in plan:
        if op == "ingest":
            await engine.ingest(batch)
        else:
            await engine.count(batch)


async def model_of(
    plan: list[tuple[str, list[Any]]], users: list[Any], *, thorough: bool = True
) -> dict[Any, Any]:
    """The answers of an in-memory engine fed ``plan``."""
    async with Engine.open() as model:
        await apply_plan(model, plan)
        return await answers(model, users, thorough=thorough)


RANGES = (
    (BASE_TS - 86400, BASE_TS + SPAN + 86400),  # everything
    (BASE_TS + 12_345, BASE_TS + 40 * 86400 + 777),  # partial buckets at both ends
    (BASE_TS + 30 * 86400, BASE_TS + 30 * 86400 + 3 * 3600),  # a few hours
)


async def answers(engine: Engine, users: list[Any], *, thorough: bool = True) -> dict[Any, Any]:
    """Every kind of read the engine offers, over ``users``, as one comparable value.

    ``_atids`` lists keep their order (first-seen activity first), which recovery must keep.
    """
    out: dict[Any, Any] = {}
    atid_filters = (None, *ATIDS) if thorough else (None, 1)
    ranges = RANGES if thorough else RANGES[:2]
    for t1, t2 in ranges:
        for atid in atid_filters:
            res = await engine.query(users, METRICS, t1, t2, atid=atid, with_atids=True)
            out["query", t1, t2, atid] = {u: (r.sums, r.atids) for u, r in res.items()}
        if thorough:
            for aid in (1, 9, 102, 203):
                res = await engine.query(users, METRICS, t1, t2, aid=aid)
                out["aid", t1, t2, aid] = {u: r.sums for u, r in res.items()}
        out["counts", t1, t2] = await engine.read_counts(list(COUNTERS), t1, t2)
    res = await engine.breakdown(users, METRICS, BASE_TS, BASE_TS + SPAN - 1, "month")
    out["breakdown", "month"] = {u: b.series for u, b in res.items()}
    if thorough:
        res = await engine.breakdown(
            users, ["steps"], BASE_TS, BASE_TS + 2 * 86400, 3 * 3600, atid=2
        )
        out["breakdown", "3h"] = {u: b.series for u, b in res.items()}
    out["users"] = sorted(map(repr, await engine.users()))
    return out


def canonical_state(kind: str, plain: Any) -> Any:
    """A snapshot item's state with every ordering removed (lists and dicts become sorted
    tuples), whatever the namespace's plain form: two states are the same when they hold the
    same values. Orders that answers depend on (``_atids``) are checked through queries."""
    if isinstance(plain, dict):
        plain = list(plain.items())
    if isinstance(plain, list | tuple):
        return tuple(sorted((canonical_state(kind, v) for v in plain), key=repr))
    return plain


def canonical_items(items: Any) -> dict[tuple[str, Any], tuple[int, Any]]:
    """``{(kind, key): (applied_seq, canonical state)}`` for live items or decoded ones."""
    out = {}
    for kind, key, applied_seq, state in items:
        key = tuple(key) if isinstance(key, list) else key
        out[kind, key] = (applied_seq, canonical_state(kind, state))
    return out


def read_snapshot(path: Path | str) -> list[Any]:
    with open(path, "rb") as f:
        return list(iter_snapshot_items(f))


def crash_image(data_dir: Path, dest: Path) -> Path:
    """What the disk holds if the process died now (see the module docstring)."""
    shutil.copytree(data_dir, dest)
    return dest


async def open_error(data_dir: Path, **options: Any) -> BaseException:
    """What ``Engine.open(data_dir)`` raises, taken out of trio's single-exception groups
    (see test_store_open_raises_storage_errors_unwrapped for why that is needed)."""
    try:
        async with Engine.open(data_dir, **options):
            pass
    except BaseException as exc:  # noqa: BLE001 - inspected by the caller
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        return exc
    raise AssertionError(f"Engine.open({str(data_dir)!r}) did not raise")


def log_records(path: Path) -> list[Record]:
    decoder = RecordDecoder()
    decoder.receive_data(path.read_bytes())
    decoder.receive_data(b"")
    records = []
    while isinstance(event := decoder.next_event(), Record):
        records.append(event)
    return records


#####################################################################
# Close and reopen
#####################################################################


async def test_store_reopen_answers_the_same(tmp_path):
    users = make_users(30, 10)
    plan = make_plan(1, users, 60)
    async with Engine.open(tmp_path / "d", fsync="always") as engine:
        await apply_plan(engine, plan)
        before = await answers(engine, users)
        items_before = canonical_items(engine.iter_snapshot_items())
        last_seq = engine.last_seq
    assert last_seq == len(plan)
    assert before == await model_of(plan, users)
    async with Engine.open(tmp_path / "d", fsync="always") as engine:
        assert await answers(engine, users) == before
        assert canonical_items(engine.iter_snapshot_items()) == items_before
        recovery = engine.store.recovery
        # A clean close wrote a final snapshot, so nothing is left to replay.
        assert recovery.snapshot is not None and recovery.replayed_records == 0
        assert recovery.snapshot_items == len(items_before)
        assert engine.last_seq == last_seq
        # Numbering continues after the last record, across the restart.
        await engine.count([{"name": "c0", "value": 1, "ts": BASE_TS}])
        assert engine.last_seq == last_seq + 1


async def test_store_reopen_after_crash_replays_the_whole_log(tmp_path):
    users = make_users(30, 10)
    plan = make_plan(2, users, 60)
    async with Engine.open(tmp_path / "d", fsync="always") as engine:
        await apply_plan(engine, plan)
        before = await answers(engine, users)
        items_before = canonical_items(engine.iter_snapshot_items())
        image = crash_image(tmp_path / "d", tmp_path / "crash")
    async with Engine.open(image, fsync="always") as engine:
        recovery = engine.store.recovery
        assert recovery.snapshot is None
        assert (recovery.replayed_records, recovery.first_replayed, recovery.last_replayed) == (
            60,
            1,
            60,
        )
        assert recovery.log_actions == []
        assert await answers(engine, users) == before
        assert canonical_items(engine.iter_snapshot_items()) == items_before


async def test_store_snapshot_then_more_writes_replays_only_the_rest(tmp_path):
    users = make_users(30, 10)
    plan = make_plan(3, users, 70)
    async with Engine.open(tmp_path / "d", fsync="always") as engine:
        await apply_plan(engine, plan[:40])
        record = await engine.snapshot_now()
        assert record.start_seq == 41  # nothing in flight: the snapshot covers every record
        await apply_plan(engine, plan[40:])
        before = await answers(engine, users)
        items_before = canonical_items(engine.iter_snapshot_items())
        image = crash_image(tmp_path / "d", tmp_path / "crash")
    async with Engine.open(image, fsync="always") as engine:
        recovery = engine.store.recovery
        assert Path(recovery.snapshot).name == Path(record.path).name
        assert recovery.snapshot_items == record.items
        assert (recovery.replayed_records, recovery.first_replayed, recovery.last_replayed) == (
            30,
            41,
            70,
        )
        assert await answers(engine, users) == before
        assert canonical_items(engine.iter_snapshot_items()) == items_before
    assert before == await model_of(plan, users)


class SlowSnapshotWrites(FileSystem):
    """Real files, but every write to a snapshot file waits first (in the writer's worker
    thread) ``delay_s`` and then until the writer tasks have applied ``commands_per_write`` more
    commands (or all of them finished), so the event loop runs other tasks while a
    snapshot is half written, however slow the machine: the snapshot is fuzzy by construction,
    not by timing. ``commands`` is counted by ``write_while_snapshotting``, whose writers wait
    for ``snapshot_opened``."""

    def __init__(self, delay_s: float, commands_per_write: int = 12, limit_s: float = 30.0) -> None:
        self.delay_s = delay_s
        self.commands_per_write = commands_per_write
        self.limit_s = limit_s
        self.commands = 0
        self.active_writers = 0
        self.snapshot_opened = False
        #: Log segment sizes right after the snapshot was published: what an fsync covered
        #: (the snapshot syncs the log first), so what a power loss leaves under ``everysec``.
        self.synced_log_sizes: dict[Path, int] = {}
        self.snapshot_fds: set[int] = set()

    def open(self, path: Path, flags: int, mode: int = 0o644) -> int:
        fd = super().open(path, flags, mode)
        if "snapshots" in Path(path).parent.name:
            self.snapshot_fds.add(fd)
            self.snapshot_opened = True
        else:
            self.snapshot_fds.discard(fd)
        return fd

    def write(self, fd: int, data: memoryview | bytes) -> int:
        if fd in self.snapshot_fds:
            time.sleep(self.delay_s)
            target = self.commands + self.commands_per_write
            deadline = time.monotonic() + self.limit_s
            while self.active_writers and self.commands < target and time.monotonic() < deadline:
                time.sleep(0.002)
        return super().write(fd, data)


async def write_while_snapshotting(
    engine: Engine,
    plans: list[list[tuple[str, list[Any]]]],
    warmup: int,
    after: int,
    fs: SlowSnapshotWrites,
) -> tuple[Any, list[list[tuple[str, list[Any]]]]]:
    """Apply ``warmup`` commands of each plan, then run one writer task per plan while a
    snapshot is taken, each stopping ``after`` commands past the snapshot's end (or at the end
    of its plan). Returns the snapshot record and what each writer applied, in order."""
    applied: list[list[tuple[str, list[Any]]]] = [plan[:warmup] for plan in plans]
    for plan in plans:
        await apply_plan(engine, plan[:warmup])
    done = trio.Event()
    record = None

    async def writer(k: int) -> None:
        try:
            await write_plan(k)
        finally:
            fs.active_writers -= 1

    async def write_plan(k: int) -> None:
        extra = 0
        for command in plans[k][warmup:]:
            while not fs.snapshot_opened and not done.is_set():
                # The snapshot first rotates the log (a flush of everything buffered, slow on
                # a busy machine): writers wait for its file, so they write during the walk.
                await trio.sleep(0.001)
            if done.is_set():
                if extra == after:
                    return
                extra += 1
            await apply_plan(engine, [command])
            applied[k].append(command)
            fs.commands += 1

    async def snapshotter() -> None:
        nonlocal record
        await trio.sleep(0.01)  # let the writers get going
        record = await engine.snapshot_now()
        assert engine.store is not None
        fs.synced_log_sizes = {
            path: path.stat().st_size for _, path in list_segments(engine.store.data_dir)
        }
        done.set()

    fs.active_writers = len(plans)
    async with trio.open_nursery() as nursery:
        for k in range(len(plans)):
            nursery.start_soon(writer, k)
        nursery.start_soon(snapshotter)
    assert done.is_set(), "the writers ran out of commands before the snapshot finished"
    return record, applied


async def test_store_snapshot_while_writing_recovers_exact_state(tmp_path):
    # Four writers with disjoint users (so per-user order, which diff mode depends on, is
    # each writer's order) keep writing while a snapshot of ~2,400 entities is written in
    # batches of 1,000, each batch's write slowed down: entities later in the walk include
    # records after the snapshot's start_seq, and replay must skip exactly those.
    groups = [make_users(500, 100, base=10_000 * k, prefix=f"w{k}-") for k in range(4)]
    plans = [make_plan(100 + k, groups[k], 2000, size=6) for k in range(4)]
    fs = SlowSnapshotWrites(0.05)
    async with Engine.open(tmp_path / "d", fsync="always", fs=fs) as engine:
        record, applied = await write_while_snapshotting(engine, plans, warmup=150, after=20, fs=fs)
        everyone = [u for group in groups for u in group]
        live = await answers(engine, everyone, thorough=False)
        live_items = canonical_items(engine.iter_snapshot_items())
        image = crash_image(tmp_path / "d", tmp_path / "crash")
    snap = read_snapshot(record.path)
    later = [item for item in snap if item.applied_seq >= record.start_seq]
    assert later, "the snapshot was not fuzzy: no entity had applied a record past start_seq"
    async with Engine.open(image, fsync="always") as engine:
        recovery = engine.store.recovery
        assert recovery.first_replayed == record.start_seq
        assert await answers(engine, everyone, thorough=False) == live
        assert canonical_items(engine.iter_snapshot_items()) == live_items
    async with Engine.open() as model:
        for commands in applied:  # disjoint users: the order between writers does not matter
            await apply_plan(model, commands)
        assert await answers(model, everyone, thorough=False) == live


async def test_store_replay_skips_records_an_entity_already_applied(tmp_path):
    # A fuzzy snapshot, built by hand: start_seq 4, but user 1's item already holds records
    # 1..6 (applied_seq 6) while user 2's holds only 1..3 and the global counter 1..5.
    # Replay reads records 4..7: user 2 applies 4 and 6, user 1 skips them, the counter
    # skips 5 and applies 7. Applying anything twice would show in every sum below.
    def both(i: int) -> tuple[str, list[Any]]:
        return ("ingest", [
            {"metric": "steps", "user": 1, "value": 1, "ts": BASE_TS + i},
            {"metric": "steps", "user": 2, "value": 10, "ts": BASE_TS + i},
            {"metric": "steps", "user": 1, "value": 7 * i, "ts": BASE_TS + 86400 + i, "atid": 1,
             "aid": 9, "ts1": BASE_TS + 86400, "mode": "diff"},
        ])  # fmt: skip

    plan = [both(1), both(2), both(3), both(4),
            ("count", [{"name": "c0", "value": 100, "ts": BASE_TS}]),
            both(6),
            ("count", [{"name": "c0", "value": 1000, "ts": BASE_TS}])]  # fmt: skip

    async def items_after(n: int) -> dict[tuple[str, Any], tuple[int, Any]]:
        async with Engine.open() as partial:  # numbered 1..n, as in the log
            await apply_plan(partial, plan[:n])
            return {(k, i): (seq, p) for k, i, seq, p in partial.iter_snapshot_items()}

    async with Engine.open(tmp_path / "d", fsync="always") as engine:
        await apply_plan(engine, plan)
        image = crash_image(tmp_path / "d", tmp_path / "crash")
    full, early, at_5 = await items_after(7), await items_after(3), await items_after(5)
    items = [
        ("user", 1, *full["user", 1]),
        ("user", 2, *early["user", 2]),
        ("count", "c0", *at_5["count", "c0"]),
    ]
    assert [item[2] for item in items] == [6, 3, 5]
    await write_snapshot(image, 4, items)
    async with Engine.open(image, fsync="always") as engine:
        assert engine.store.recovery.replayed_records == 4
        got = await answers(engine, [1, 2])
        assert got["aid", *RANGES[0], 9][1] == {"steps": 42, "points": 0}  # diff: last total
        assert got["counts", *RANGES[0]]["c0"] == 1100
    async with Engine.open() as model:
        await apply_plan(model, plan)
        assert got == await answers(model, [1, 2])


#####################################################################
# Log segments and snapshots
#####################################################################


async def test_store_snapshot_removes_log_segments_it_covers(tmp_path):
    users = make_users(20, 5)
    plan = make_plan(4, users, 80)
    data_dir = tmp_path / "d"
    async with Engine.open(data_dir, fsync="always", max_segment_bytes=1200) as engine:
        await apply_plan(engine, plan[:60])
        before = [first for first, _ in list_segments(data_dir)]
        assert len(before) >= 4, before
        record = await engine.snapshot_now()
        after = [first for first, _ in list_segments(data_dir)]
        # The snapshot closed the open segment first (WriteAheadLog.rotate), so every
        # segment before it is covered and gone: the log starts at start_seq.
        assert record.start_seq == 61
        assert after == [61]
        assert after[0] <= record.start_seq
        assert len(after) == 1 or after[1] > record.start_seq
        assert len(after) < len(before)
        await apply_plan(engine, plan[60:])
        live = await answers(engine, users)
        image = crash_image(data_dir, tmp_path / "crash")
    async with Engine.open(image, fsync="always", max_segment_bytes=1200) as engine:
        assert engine.store.recovery.first_replayed == record.start_seq
        assert engine.store.recovery.last_replayed == 80
        assert await answers(engine, users) == live
    assert live == await model_of(plan, users)


async def test_store_snapshot_deletes_the_covered_log_without_waiting_for_rotation(tmp_path):
    # Issue 16: with 64 MiB segments, everything written before POST /api/admin/snapshot
    # shared the open segment with later records and stayed until that segment filled.
    users = make_users(20, 5)
    plan = make_plan(12, users, 30)
    data_dir = tmp_path / "d"
    async with Engine.open(data_dir, fsync="everysec") as engine:
        await apply_plan(engine, plan[:20])
        assert [first for first, _ in list_segments(data_dir)] == [1]
        record = await engine.snapshot_now()
        assert record.start_seq == 21
        # The first snapshot is the only one kept: the log before it is gone, and the log
        # holds exactly what comes after it.
        assert [first for first, _ in list_segments(data_dir)] == [21]
        await apply_plan(engine, plan[20:25])
        second = await engine.snapshot_now()
        # Two snapshots kept: the log from the older one on stays, so that a damaged newer
        # one still recovers (test_store_falls_back_to_older_snapshot_after_segments_...).
        assert [first for first, _ in list_segments(data_dir)] == [21, 26]
        await apply_plan(engine, plan[25:])
        third = await engine.snapshot_now()
        assert (second.start_seq, third.start_seq) == (26, 31)
        assert [first for first, _ in list_segments(data_dir)] == [26, 31]
        live = await answers(engine, users)
        image = crash_image(data_dir, tmp_path / "crash")
    async with Engine.open(image) as engine:
        assert engine.store.recovery.replayed_records == 0
        assert await answers(engine, users) == live
    assert live == await model_of(plan, users)


async def test_store_snapshot_during_writes_keeps_every_uncovered_record(tmp_path):
    # Rotation happens before the snapshot takes its position; records appended meanwhile
    # land in the new segment, and a segment is deleted only when wholly before the position.
    users = make_users(20, 5)
    plan = make_plan(13, users, 60)
    data_dir = tmp_path / "d"
    async with Engine.open(data_dir, fsync="always") as engine:
        await apply_plan(engine, plan[:10])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(apply_plan, engine, plan[10:])
            records = [await engine.snapshot_now() for _ in range(3)]
        for record in records:
            assert 11 <= record.start_seq <= 61
        live = await answers(engine, users)
        image = crash_image(data_dir, tmp_path / "crash")
    async with Engine.open(image, fsync="always") as engine:
        assert await answers(engine, users) == live
    assert live == await model_of(plan, users)


async def test_store_snapshots_by_itself_once_enough_log_is_written(tmp_path):
    users = make_users(20, 5)
    plan = make_plan(10, users, 40)
    data_dir = tmp_path / "d"
    options = {"fsync": "always", "snapshot_log_bytes": 4000, "max_segment_bytes": 1500}
    async with Engine.open(data_dir, **options) as engine:
        await apply_plan(engine, plan)
        assert engine.store.journal.statistics().bytes_written >= 4000

        def trimmed() -> bool:  # the snapshot is recorded just before the segments go
            record = engine.store.last_snapshot
            firsts = [first for first, _ in list_segments(data_dir)]
            return record is not None and (len(firsts) == 1 or firsts[1] > record.start_seq)

        with trio.fail_after(10):  # the timer looks once a second
            while not trimmed():
                await trio.sleep(0.02)
        record = engine.store.last_snapshot  # taken when the timer saw >= 4000 bytes
        assert 1 < record.start_seq <= 41
        assert [Path(p).name for _, p in list_snapshots(data_dir)] == [Path(record.path).name]
        assert list_segments(data_dir)[0][0] <= record.start_seq
        live = await answers(engine, users)
        image = crash_image(data_dir, tmp_path / "crash")
    async with Engine.open(image, **options) as engine:
        assert engine.store.recovery.replayed_records == 41 - record.start_seq
        assert await answers(engine, users) == live


async def test_store_ignores_a_half_written_snapshot(tmp_path):
    # A crash in the middle of a snapshot leaves <name>.tmp: never loaded, deleted later.
    users = make_users(20, 5)
    plan = make_plan(11, users, 40)
    data_dir = tmp_path / "d"
    async with Engine.open(data_dir, fsync="always") as engine:
        await apply_plan(engine, plan[:20])
        older = await engine.snapshot_now()
        await apply_plan(engine, plan[20:])
        live = await answers(engine, users)
        image = crash_image(data_dir, tmp_path / "crash")
    good = Path(older.path).read_bytes()
    stray = image / "snapshots" / "snap-00000000000000000039.pssnap.tmp"
    stray.write_bytes(good[: len(good) // 2])
    async with Engine.open(image, fsync="always") as engine:
        assert Path(engine.store.recovery.snapshot).name == Path(older.path).name
        assert await answers(engine, users) == live
        await engine.snapshot_now()  # start_seq 41: prunes the older stray .tmp
        assert not stray.exists()


async def test_store_everysec_snapshot_past_the_lost_log_tail(tmp_path):
    # Under everysec a power loss loses the log's unfsynced tail (a crash of the process does
    # not: acknowledged records are in the file). Here the log lost everything up to the
    # snapshot and after it (truncated to nothing, as if the snapshot had been fsynced before
    # any of its records): the snapshot (start_seq past the log's end) is the state, the
    # stale log is dropped and numbering resumes at start_seq.
    users = make_users(20, 5)
    plan = make_plan(12, users, 40)
    data_dir = tmp_path / "d"
    options = {"fsync": "everysec", "fsync_interval_s": 3600.0}
    async with Engine.open(data_dir, **options) as engine:
        await apply_plan(engine, plan[:30])
        record = await engine.snapshot_now()
        at_snapshot = await answers(engine, users)
        await apply_plan(engine, plan[30:])  # acknowledged: written, not yet fsynced
        image = crash_image(data_dir, tmp_path / "crash")
    (segment,) = list_segments(image)
    assert any(r.seq >= record.start_seq for r in log_records(segment[1]))  # written, so far
    segment[1].write_bytes(b"")  # the power loss
    async with Engine.open(image, **options) as engine:
        assert engine.store.recovery.replayed_records == 0
        assert engine.last_seq == record.start_seq - 1 == 30
        assert await answers(engine, users) == at_snapshot
        await apply_plan(engine, plan[30:])  # written again, numbered 31.. as before
        assert await answers(engine, users) == await model_of(plan, users)


async def test_store_falls_back_to_older_snapshot_when_newest_is_damaged(tmp_path):
    # One log segment: nothing is trimmed, so the older snapshot plus the log is whole.
    users = make_users(20, 5)
    plan = make_plan(5, users, 60)
    data_dir = tmp_path / "d"
    async with Engine.open(data_dir, fsync="always") as engine:
        await apply_plan(engine, plan[:20])
        older = await engine.snapshot_now()
        await apply_plan(engine, plan[20:40])
        newer = await engine.snapshot_now()
        await apply_plan(engine, plan[40:])
        live = await answers(engine, users)
        image = crash_image(data_dir, tmp_path / "crash")
    newest = image / "snapshots" / Path(newer.path).name
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    async with Engine.open(image, fsync="always") as engine:
        assert Path(engine.store.recovery.snapshot).name == Path(older.path).name
        assert engine.store.recovery.first_replayed == older.start_seq
        assert await answers(engine, users) == live


async def test_store_falls_back_to_older_snapshot_after_segments_were_trimmed(tmp_path):
    users = make_users(20, 5)
    plan = make_plan(6, users, 60)
    data_dir = tmp_path / "d"
    async with Engine.open(data_dir, fsync="always", max_segment_bytes=1200) as engine:
        await apply_plan(engine, plan[:20])
        older = await engine.snapshot_now()
        await apply_plan(engine, plan[20:40])
        newer = await engine.snapshot_now()
        await apply_plan(engine, plan[40:])
        live = await answers(engine, users)
        image = crash_image(data_dir, tmp_path / "crash")
    assert older.start_seq < newer.start_seq
    newest = image / "snapshots" / Path(newer.path).name
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    async with Engine.open(image, fsync="always", max_segment_bytes=1200) as engine:
        assert Path(engine.store.recovery.snapshot).name == Path(older.path).name
        assert await answers(engine, users) == live


async def test_store_writes_after_fuzzy_snapshot_and_lost_log_tail_are_applied(tmp_path):
    # everysec with a long interval, and a power loss (not only a process crash: that loses
    # nothing acknowledged) before the log's next fsync, as any within a second of a
    # snapshot does under the default policy: the log ends where the snapshot synced it.
    groups = [make_users(500, 100, base=10_000 * k, prefix=f"w{k}-") for k in range(4)]
    plans = [make_plan(200 + k, groups[k], 2000, size=6) for k in range(4)]
    fs = SlowSnapshotWrites(0.05)
    options = {"fsync": "everysec", "fsync_interval_s": 3600.0}
    async with Engine.open(tmp_path / "d", fs=fs, **options) as engine:
        record, _ = await write_while_snapshotting(engine, plans, warmup=150, after=20, fs=fs)
        image = crash_image(tmp_path / "d", tmp_path / "crash")
    lost = 0
    for path, size in fs.synced_log_sizes.items():
        copy = image / "wal" / path.name
        lost += copy.stat().st_size - size
        os.truncate(copy, size)
    assert lost > 0, "the writes after the snapshot were not in the log"
    ahead = [item for item in read_snapshot(record.path) if item.kind == "user"
             and item.applied_seq >= record.start_seq]  # fmt: skip
    assert ahead, "the snapshot was not fuzzy"
    victim = max(ahead, key=lambda item: item.applied_seq)
    async with Engine.open(image, fsync="always") as engine:
        before = (await engine.query([victim.key], ["fresh"], BASE_TS, BASE_TS))[victim.key].sums
        for _ in range(3):
            await engine.ingest(
                [{"metric": "fresh", "user": victim.key, "value": 1, "ts": BASE_TS}]
            )
        after = (await engine.query([victim.key], ["fresh"], BASE_TS, BASE_TS))[victim.key].sums
    assert (before, after) == ({"fresh": 0}, {"fresh": 3})


#####################################################################
# Storage failures: full disk, permissions, I/O errors
#####################################################################

LOG_BROKEN = (
    r"^write-ahead log is broken: {op} of '{path}' failed: {strerror}; records after seq \d+ "
    r"may not be durable and no record is accepted until the server restarts \(free disk "
    r"space or fix permissions first; recovery cuts any partial record\)$"
)


@pytest.mark.parametrize(
    ("op", "code", "fault", "what"),
    [
        ("write", errno.ENOSPC, {"partial": True}, "write"),
        ("write", errno.EIO, {}, "write"),
        ("fsync", errno.EIO, {}, "fsync"),
        ("fsync", errno.ENOSPC, {}, "fsync"),
        ("open", errno.EACCES, {}, "create"),  # rotating to a new segment
    ],
)
async def test_store_log_failure_fails_writes_and_leaves_a_recoverable_dir(
    tmp_path, op, code, fault, what
):
    users = make_users(20, 5)
    plan = make_plan(7, users, 40)
    data_dir = tmp_path / "d"
    fs = FaultyFileSystem()
    async with Engine.open(data_dir, fsync="always", fs=fs, max_segment_bytes=4000) as engine:
        await apply_plan(engine, plan[:20])
        acknowledged = list(plan[:20])
        fs.fail(op, code, times=10**6, path_contains=f"{os.sep}wal{os.sep}wal-", **fault)
        failure = None
        for command in plan[20:]:  # keep writing until the fault is hit (at once, or at rotation)
            try:
                await apply_plan(engine, [command])
            except StorageFailure as exc:
                failure = exc
                break
            acknowledged.append(command)
        assert failure is not None
        assert failure.http_status == 507
        if what == "create":  # the new segment would have started with the failed record
            path = data_dir / "wal" / f"wal-{engine.last_seq:020d}.log"
            assert not path.exists()
        else:
            path = list_segments(data_dir)[-1][1]
        message = LOG_BROKEN.format(
            op=what, path=re.escape(str(path)), strerror=re.escape(os.strerror(code))
        )
        assert re.match(message, str(failure)), str(failure)
        # The log stays broken: later writes fail at once, with the same message, even
        # when the disk has recovered (a failed fsync is never retried).
        fs.heal()
        for attempt in (plan[-1], ("count", [{"name": "c9", "value": 1, "ts": BASE_TS}])):
            with pytest.raises(StorageFailure, match=message):
                await apply_plan(engine, [attempt])
        assert engine.store.journal.statistics().broken
        # Reads still work.
        await engine.query(users[:3], METRICS, BASE_TS, BASE_TS + SPAN)
        image = crash_image(data_dir, tmp_path / "crash")
    want = await model_of(acknowledged, users)
    for recovered in (image, data_dir):  # killed while broken; closed while broken
        async with Engine.open(recovered, fsync="always") as engine:
            got = await answers(engine, users)
            if got != want:
                # The failed batch reached the file intact before the fault (commit outcome
                # unknown): it may be there, but nothing else.
                assert got == await model_of(acknowledged + [plan[len(acknowledged)]], users)
            assert check_log(recovered).ok


async def test_store_log_failure_under_everysec_fails_later_writes(tmp_path):
    users = make_users(10, 0)
    plan = make_plan(8, users, 30)
    data_dir = tmp_path / "d"
    fs = FaultyFileSystem()
    options = {"fsync": "everysec", "fsync_interval_s": 0.02}
    async with Engine.open(data_dir, fs=fs, **options) as engine:
        await apply_plan(engine, plan[:10])
        with trio.fail_after(5):
            while engine.store.journal.statistics().durable_seq < 10:
                await trio.sleep(0.005)
        fs.fail(
            "write", errno.ENOSPC, times=10**6, path_contains=f"{os.sep}wal{os.sep}", partial=True
        )
        with pytest.raises(  # everysec acknowledges after the write: this one failed
            StorageFailure, match=r"^write-ahead log is broken: write of .*No space left on device"
        ):
            await apply_plan(engine, plan[10:11])
        assert engine.store.journal.statistics().broken
        with pytest.raises(
            StorageFailure, match=r"^write-ahead log is broken: write of .*No space left on device"
        ):
            await apply_plan(engine, plan[11:12])
        image = crash_image(data_dir, tmp_path / "crash")
    async with Engine.open(image) as engine:
        # Killed: everything written before the fault is back, and the partial batch (plan[10],
        # never acknowledged) was cut.
        assert await answers(engine, users) == await model_of(plan[:10], users)
        (action,) = engine.store.recovery.log_actions
        assert action.startswith("cut a torn tail off wal-00000000000000000001.log")
    async with Engine.open(data_dir) as engine:
        # Closed while broken: a final snapshot may have kept plan[10] (applied in memory
        # though its writer got an error: "commit outcome unknown", see snapshots/wal.py) or,
        # if snapshots need a working log, the log has everything up to the fault.
        got = await answers(engine, users)
        assert got in (await model_of(plan[:10], users), await model_of(plan[:11], users))


async def test_store_open_unwritable_data_dir_is_storage_failure(tmp_path):
    fs = FaultyFileSystem()
    fs.fail("makedirs", errno.EACCES)
    data_dir = tmp_path / "d"
    error = await open_error(data_dir, fs=fs)
    assert isinstance(error, StorageFailure) and error.http_status == 507
    assert re.match(
        rf"^cannot create data directory '{re.escape(str(data_dir))}': .*Permission denied",
        str(error),
    ), str(error)


async def test_store_open_unwritable_log_segment_is_storage_failure(tmp_path):
    data_dir = tmp_path / "d"
    async with Engine.open(data_dir) as engine:
        await engine.count([{"name": "c0", "value": 1, "ts": BASE_TS}])
    fs = FaultyFileSystem()
    fs.fail("open", errno.EACCES, path_contains=f"{os.sep}wal{os.sep}wal-")
    error = await open_error(data_dir, fs=fs)
    segment = list_segments(data_dir)[0][1]
    assert isinstance(error, StorageFailure)
    assert re.match(
        rf"^cannot open the write-ahead log in '{re.escape(str(data_dir / 'wal'))}': open of "
        rf"'{re.escape(str(segment))}' failed: Permission denied$",
        str(error),
    ), str(error)
    async with Engine.open(data_dir) as engine:  # nothing was harmed
        assert await engine.read_counts(["c0"], BASE_TS, BASE_TS) == {"c0": 1}


@pytest.mark.parametrize(
    ("op", "code", "fault"),
    [
        ("write", errno.ENOSPC, {"partial": True}),
        ("fsync", errno.EIO, {}),
        ("rename", errno.EACCES, {}),
        ("open", errno.EACCES, {}),
    ],
)
async def test_store_failing_snapshot_keeps_older_snapshots_and_the_log(tmp_path, op, code, fault):
    users = make_users(20, 5)
    plan = make_plan(9, users, 50)
    data_dir = tmp_path / "d"
    fs = FaultyFileSystem()
    async with Engine.open(data_dir, fsync="always", fs=fs) as engine:
        await apply_plan(engine, plan[:20])
        older = await engine.snapshot_now()
        await apply_plan(engine, plan[20:40])
        snapshots_before = sorted(os.listdir(data_dir / "snapshots"))
        log_before = [(p.name, p.read_bytes()) for _, p in list_segments(data_dir)]
        fs.fail(op, code, path_contains=f"{os.sep}snapshots{os.sep}", **fault)
        with pytest.raises(StorageFailure) as info:
            await engine.snapshot_now()
        final = data_dir / "snapshots" / f"snap-{engine.last_seq + 1:020d}.pssnap"
        assert info.value.http_status == 507
        assert re.match(
            rf"^could not write snapshot '{re.escape(str(final))}': .*{re.escape(os.strerror(code))}.*; "
            r"the previous snapshots are kept$",
            str(info.value),
        ), str(info.value)
        assert sorted(os.listdir(data_dir / "snapshots")) == snapshots_before  # no .tmp left
        # Every record is still there; the snapshot had only closed the open segment
        # (WriteAheadLog.rotate) and started an empty one.
        rotated = (f"wal-{engine.last_seq + 1:020d}.log", b"")
        assert [(p.name, p.read_bytes()) for _, p in list_segments(data_dir)] == [*log_before, rotated]
        assert engine.store.last_snapshot == older
        # The log is unaffected: writes go on.
        await apply_plan(engine, plan[40:])
        live = await answers(engine, users)
        image = crash_image(data_dir, tmp_path / "crash")
    async with Engine.open(image) as engine:
        assert Path(engine.store.recovery.snapshot).name == Path(older.path).name
        assert engine.store.recovery.first_replayed == older.start_seq
        assert await answers(engine, users) == live


#####################################################################
# Damaged logs
#####################################################################


async def small_log(tmp_path: Path, n: int) -> tuple[Path, list[tuple[str, list[Any]]]]:
    """A crash image whose log holds ``n`` one-event records (and no snapshot)."""
    plan = [
        ("ingest", [{"metric": "steps", "user": i % 3, "value": i + 1, "ts": BASE_TS + i}])
        for i in range(n)
    ]
    async with Engine.open(tmp_path / "live", fsync="always") as engine:
        await apply_plan(engine, plan)
        image = crash_image(tmp_path / "live", tmp_path / "template")
    return image, plan


@pytest.mark.parametrize("damage", ["cut", "zero-fill"])
async def test_store_torn_last_record_at_every_offset(tmp_path, damage):
    template, plan = await small_log(tmp_path, 5)
    want = await model_of(plan[:4], [0, 1, 2], thorough=False)
    want_all = await model_of(plan, [0, 1, 2], thorough=False)
    (segment,) = list_segments(template)
    name = segment[1].name
    records = log_records(segment[1])
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    start, size = records[-1].offset, segment[1].stat().st_size
    for at in range(start, size + 1):
        work = tmp_path / f"at-{at}"
        shutil.copytree(template, work)
        path = work / "wal" / name
        data = path.read_bytes()
        if damage == "cut":
            path.write_bytes(data[:at])
        else:  # the size grew but the data never landed (ext4/XFS after a power cut)
            path.write_bytes(data[:at] + bytes(size - at))
        intact = damage == "cut" and at == size or damage == "zero-fill" and not any(data[at:])
        async with Engine.open(work, fsync="always") as engine:
            got = await answers(engine, [0, 1, 2], thorough=False)
            actions = engine.store.recovery.log_actions
            if intact:  # nothing torn (or the zeroed bytes were zeros already)
                assert (actions, got, engine.last_seq) == ([], want_all, 5)
                continue
            assert (engine.last_seq, got) == (4, want), at
            dropped = size - start if damage == "zero-fill" else at - start
            if dropped == 0:
                assert actions == [], at
            else:
                (action,) = actions
                assert action.startswith(
                    f"cut a torn tail off {name}: truncated at byte {start}, dropping {dropped} byte(s) ("
                ), (at, action)
            # Numbering goes on without a gap: the next write is seq 5 again.
            await engine.count([{"name": "c0", "value": 1, "ts": BASE_TS}])
            assert engine.last_seq == 5
        shutil.rmtree(work)


@pytest.mark.parametrize("field", ["magic", "length", "seq", "crc", "payload"])
async def test_store_flipped_byte_mid_log_refuses_to_open(tmp_path, field):
    template, _ = await small_log(tmp_path, 10)
    path = list_segments(template)[0][1]
    records = log_records(path)
    victim = records[4]
    where = {"magic": 0, "length": 2, "seq": 6, "crc": 14, "payload": 17 + len(victim.payload) // 2}
    data = bytearray(path.read_bytes())
    data[victim.offset + where[field]] ^= 0x5A
    path.write_bytes(bytes(data))
    error = await open_error(template, fsync="always")
    assert isinstance(error, LogCorrupted) and error.http_status == 507
    assert (error.damage.path, error.damage.offset, error.damage.kind) == (
        path,
        victim.offset,
        "corruption",
    )
    assert re.match(
        rf"^write-ahead log is damaged in '{re.escape(str(path))}' at byte {victim.offset}: .+; "
        r"inspect it with `pointspace log check`, or truncate the log at the damage \(dropping "
        r"everything after it\) with `pointspace log repair`$",
        str(error),
    ), str(error)
    assert path.read_bytes() == bytes(data)  # refused, and changed nothing
    assert not (template / "snapshots").exists() or not os.listdir(template / "snapshots")


async def test_store_open_raises_storage_errors_unwrapped(tmp_path):
    template, _ = await small_log(tmp_path, 10)
    path = list_segments(template)[0][1]
    data = bytearray(path.read_bytes())
    data[log_records(path)[4].offset] ^= 0x5A
    path.write_bytes(bytes(data))
    with pytest.raises(LogCorrupted):
        async with Engine.open(template, fsync="always"):
            pass


async def test_store_reads_snapshots_of_the_six_cell_counter_layout(tmp_path, monkeypatch):
    """A data directory written before user counters moved to running totals (issue 17):
    its snapshot holds each series as six-level cells. The server reads it and answers the
    same, and its next snapshot is in the new form."""
    from engine.counters import CounterSeries
    from engine.prefix_series import PrefixSeries

    def six_cell_plain(series: PrefixSeries) -> list[Any]:
        cells = CounterSeries()
        for ts, delta in series.deltas().items():
            cells.add(ts, delta)
        return cells.to_plain()

    users = make_users(20, 5)
    plan = make_plan(3, users, 40)
    with monkeypatch.context() as patched:
        patched.setattr(PrefixSeries, "to_plain", six_cell_plain)
        async with Engine.open(tmp_path / "d", fsync="always") as engine:
            await apply_plan(engine, plan)
            before = await answers(engine, users)
    forms = {len(series) for kind, _, _, state in read_snapshot(list_snapshots(tmp_path / "d")[0][1])
             if kind == "user" for _, serieses, *_ in state for _, series in serieses}
    assert forms == {5}, "the snapshot was not written in the six-cell form"
    async with Engine.open(tmp_path / "d", fsync="always") as engine:
        assert engine.store.recovery.replayed_records == 0
        assert await answers(engine, users) == before == await model_of(plan, users)
        await engine.count([{"name": "c0", "value": 1, "ts": BASE_TS}])  # so close snapshots
    forms = {series[0] for kind, _, _, state in read_snapshot(list_snapshots(tmp_path / "d")[0][1])
             if kind == "user" for _, serieses, *_ in state for _, series in serieses}
    assert forms == {"p"}
