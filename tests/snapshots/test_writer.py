"""Tests for snapshots/writer.py and snapshots/files.py: real files, injected faults."""

from __future__ import annotations

import doctest
import errno
import os
import random

import pytest
import trio

from engine.errors import StorageFailure
from snapshots import files, writer
from snapshots.codec import SnapshotCorrupted, SnapshotInfo, iter_snapshot_items
from snapshots.files import FaultyFileSystem
from snapshots.writer import (
    find_latest_snapshot,
    list_snapshots,
    snapshot_path,
    write_snapshot,
)


def items(n: int, seq: int = 1):
    for i in range(n):
        yield ("counter", f"c{i}", seq, {"total": i, "big": 2**70 + i})


def read_items(path):
    with open(path, "rb") as f:
        return list(iter_snapshot_items(f))


def snapshot_names(data_dir):
    return sorted(os.listdir(data_dir / "snapshots"))


async def test_write_snapshot_round_trips(tmp_path):
    info = await write_snapshot(tmp_path, 42, items(2500), created=1000.0, yield_every=100)
    assert info == SnapshotInfo(start_seq=42, items=2500, created=1000.0)
    path = snapshot_path(tmp_path, 42)
    assert snapshot_names(tmp_path) == [path.name]  # no .tmp left behind
    decoded = read_items(path)
    assert len(decoded) == 2500
    assert decoded[7] == ("counter", "c7", 1, {"total": 7, "big": 2**70 + 7})


async def test_write_snapshot_streams_in_batches(tmp_path, monkeypatch):
    fs = FaultyFileSystem()
    batches: list[tuple[int, int]] = []  # (batch size, items pulled so far) per worker call
    pulled = 0
    real = writer._compress_and_write

    def spy(encoder, fs, fd, head, batch):
        batches.append((len(batch), pulled))
        real(encoder, fs, fd, head, batch)

    monkeypatch.setattr(writer, "_compress_and_write", spy)

    def counting_items():
        nonlocal pulled
        for item in items(4500):
            pulled += 1
            yield item

    await write_snapshot(tmp_path, 1, counting_items(), yield_every=1000, fs=fs)
    # Each batch went to the worker as soon as it was full: the state never sat in memory whole.
    assert batches[:4] == [(1000, 1000), (1000, 2000), (1000, 3000), (1000, 4000)]
    assert batches[4] == (500, 4500)  # the last partial batch, from _finish_file
    assert fs.calls["fsync"] == 1 and fs.calls["fsync_dir"] == 1 and fs.calls["rename"] == 1
    assert len(read_items(snapshot_path(tmp_path, 1))) == 4500


async def test_write_snapshot_keeps_the_newest_two(tmp_path):
    for seq in (10, 20, 30, 40):
        await write_snapshot(tmp_path, seq, items(3, seq))
    assert [seq for seq, _ in list_snapshots(tmp_path)] == [40, 30]
    await write_snapshot(tmp_path, 50, items(3), keep=1)
    assert snapshot_names(tmp_path) == [snapshot_path(tmp_path, 50).name]


async def test_write_snapshot_deletes_stale_tmp_files_of_older_writes(tmp_path):
    (tmp_path / "snapshots").mkdir()
    stale = snapshot_path(tmp_path, 5).with_suffix(".pssnap.tmp")
    stale.write_bytes(b"half a snapshot")
    await write_snapshot(tmp_path, 9, items(1))
    assert snapshot_names(tmp_path) == [snapshot_path(tmp_path, 9).name]


async def test_write_snapshot_items_stay_consistent_while_state_mutates(tmp_path):
    # Live state: entity -> {"n": applied_seq, "a": n, "b": n}; the mutator changes all three
    # in one synchronous step, like an actor applying a command. The generator yields the
    # *live* dict: an item is only self-consistent if the writer encodes it before the
    # mutator can run again.
    state = {f"e{i}": {"n": 0, "a": 0, "b": 0} for i in range(300)}
    rng = random.Random(0)
    mutations = 0
    done = False

    async def mutator() -> None:
        nonlocal mutations
        while not done:
            entity = state[rng.choice(list(state))]
            entity["n"] += 1
            entity["a"] = entity["n"] * 2
            entity["b"] = entity["n"] * 3
            mutations += 1
            await trio.sleep(0)

    def live_items():
        for key in list(state):
            entity = state[key]
            yield ("entity", key, entity["n"], entity)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(mutator)
        await trio.sleep(0)
        before = mutations
        await write_snapshot(tmp_path, 1, live_items(), yield_every=5)
        during = mutations - before
        done = True
    assert during > 10  # the mutator really ran between batches
    decoded = read_items(snapshot_path(tmp_path, 1))
    assert len(decoded) == 300
    for _kind, key, applied_seq, entity in decoded:
        assert entity == {"n": applied_seq, "a": 2 * applied_seq, "b": 3 * applied_seq}, key


async def test_write_snapshot_enospc_keeps_older_snapshots(tmp_path):
    await write_snapshot(tmp_path, 10, items(10))
    fs = FaultyFileSystem()
    fs.fail("write", errno.ENOSPC, after=1, partial=True)
    with pytest.raises(
        StorageFailure,
        match=r"^could not write snapshot '.*snap-00000000000000000020\.pssnap': \[Errno 28\] "
        r"No space left on device: .*; the previous snapshots are kept$",
    ):
        await write_snapshot(tmp_path, 20, items(3000), yield_every=500, fs=fs)
    assert snapshot_names(tmp_path) == [snapshot_path(tmp_path, 10).name]
    assert find_latest_snapshot(tmp_path) == snapshot_path(tmp_path, 10)


@pytest.mark.parametrize(
    ("op", "code"),
    [
        ("open", errno.EACCES),
        ("fsync", errno.EIO),
        ("close", errno.EIO),
        ("rename", errno.EACCES),
        ("makedirs", errno.EACCES),
    ],
)
async def test_write_snapshot_failures_are_storage_failures(tmp_path, op, code):
    fs = FaultyFileSystem()
    fs.fail(op, code)
    with pytest.raises(StorageFailure, match=os.strerror(code)):
        await write_snapshot(tmp_path, 7, items(5), fs=fs)
    assert list_snapshots(tmp_path) == []
    if (tmp_path / "snapshots").exists():
        assert snapshot_names(tmp_path) == []


async def test_write_snapshot_removes_tmp_when_the_generator_fails(tmp_path):
    def failing_items():
        yield from items(3)
        raise KeyError("entity vanished")

    with pytest.raises(KeyError):
        await write_snapshot(tmp_path, 1, failing_items(), yield_every=1)
    assert snapshot_names(tmp_path) == []


async def test_write_snapshot_removes_tmp_when_cancelled(tmp_path):
    async def slow_items_writer() -> None:
        def slow_items():
            yield from items(1_000_000)

        await write_snapshot(tmp_path, 1, slow_items(), yield_every=10)

    with trio.move_on_after(0.05):
        await slow_items_writer()
    assert snapshot_names(tmp_path) == []


async def test_write_snapshot_rejects_malformed_items(tmp_path):
    with pytest.raises(TypeError, match=r"^a snapshot item must be"):
        await write_snapshot(tmp_path, 1, [("too", "short")])  # type: ignore[list-item]
    assert snapshot_names(tmp_path) == []


#####################################################################
# Finding the latest snapshot
#####################################################################


async def test_find_latest_snapshot_skips_tmp_and_invalid_files(tmp_path):
    assert find_latest_snapshot(tmp_path) is None
    await write_snapshot(tmp_path, 10, items(5))
    await write_snapshot(tmp_path, 20, items(5))
    newest = snapshot_path(tmp_path, 20)
    assert find_latest_snapshot(tmp_path) == newest

    snapshot_path(tmp_path, 30).with_suffix(".pssnap.tmp").write_bytes(b"in progress")
    assert find_latest_snapshot(tmp_path) == newest

    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    skipped = []
    found = find_latest_snapshot(tmp_path, on_invalid=lambda p, e: skipped.append((p, e)))
    assert found == snapshot_path(tmp_path, 10)
    assert [p for p, _ in skipped] == [newest]
    assert isinstance(skipped[0][1], SnapshotCorrupted)


async def test_find_latest_snapshot_rejects_a_misnamed_file(tmp_path):
    await write_snapshot(tmp_path, 10, items(1))
    os.rename(snapshot_path(tmp_path, 10), snapshot_path(tmp_path, 11))
    reasons = []
    assert find_latest_snapshot(tmp_path, on_invalid=lambda p, e: reasons.append(str(e))) is None
    assert reasons == ["snapshot header says start_seq 10 but the file name says 11"]


async def test_find_latest_snapshot_skips_unreadable_files(tmp_path):
    await write_snapshot(tmp_path, 10, items(1))
    await write_snapshot(tmp_path, 20, items(1))
    fs = FaultyFileSystem()
    fs.fail("open_read", errno.EACCES)
    assert find_latest_snapshot(tmp_path, fs=fs) == snapshot_path(tmp_path, 10)


#####################################################################
# The fault-injecting file layer
#####################################################################


def test_FaultyFileSystem_fails_the_chosen_call_then_heals(tmp_path):
    fs = FaultyFileSystem()
    fs.fail("fsync", errno.EIO, after=1, times=2)
    fd = fs.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    fs.fsync(fd)
    for _ in range(2):
        with pytest.raises(OSError) as info:
            fs.fsync(fd)
        assert info.value.errno == errno.EIO
    fs.fsync(fd)
    fs.close(fd)
    assert fs.calls["fsync"] == 4


def test_FaultyFileSystem_partial_write_writes_half(tmp_path):
    fs = FaultyFileSystem()
    fd = fs.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    fs.fail("write", errno.ENOSPC, partial=True)
    with pytest.raises(OSError):
        files.write_all(fs, fd, b"0123456789")
    fs.close(fd)
    assert (tmp_path / "f").read_bytes() == b"01234"


def test_FaultyFileSystem_path_filter(tmp_path):
    fs = FaultyFileSystem()
    fs.fail("remove", errno.EACCES, path_contains="b")
    (tmp_path / "a").write_bytes(b"")
    (tmp_path / "b").write_bytes(b"")
    fs.remove(tmp_path / "a")
    with pytest.raises(PermissionError):
        fs.remove(tmp_path / "b")


def test_writer_and_files_doctests():
    assert doctest.testmod(writer).failed == 0
    assert doctest.testmod(files).failed == 0
