"""Tests for snapshots/wal.py and snapshots/logscan.py (the log's files and recovery)."""

from __future__ import annotations

import errno
import os
import shutil
import threading
from pathlib import Path

import pytest
import trio

from engine.errors import EngineClosed, InvalidInput, PayloadTooLarge, StorageFailure
from engine.journal import Journal
from snapshots import logscan
from snapshots.files import FaultyFileSystem
from snapshots.framing import HEADER_SIZE
from snapshots.wal import (
    LogCorrupted,
    check_log,
    open_wal,
    read_log,
    recover_log,
    remove_segments_covered_by,
    repair_log,
)


async def wait_for(predicate, timeout: float = 5.0) -> None:
    """Poll until ``predicate()`` holds (the flusher works in real time and threads)."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.002)


def segment_files(data_dir: Path) -> list[str]:
    return sorted(n for n in os.listdir(data_dir / "wal") if n.endswith(".log"))


def payload(i: int) -> bytes:
    return b"record-%d" % i


async def write_records(data_dir: Path, n: int, **kwargs) -> None:
    async with open_wal(data_dir, policy="always", **kwargs) as wal:
        for i in range(1, n + 1):
            await wal.wait_durable(wal.append(payload(i)))


#####################################################################
# Appending, reading back, numbering
#####################################################################


async def test_open_wal_is_a_journal(tmp_path):
    async with open_wal(tmp_path) as wal:
        journal: Journal = wal
        assert journal.last_seq == 0
        assert journal.append(b"a") == 1
        assert journal.append(b"b") == 2
        await journal.wait_durable(2)  # everysec: once written to the OS
        assert journal.last_seq == 2
    assert list(read_log(tmp_path)) == [(1, b"a"), (2, b"b")]


async def test_wal_numbering_continues_across_restarts(tmp_path):
    await write_records(tmp_path, 3)
    async with open_wal(tmp_path) as wal:
        assert wal.last_seq == 3
        assert wal.append(b"four") == 4
    assert [seq for seq, _ in read_log(tmp_path)] == [1, 2, 3, 4]
    assert segment_files(tmp_path) == ["wal-00000000000000000001.log"]


async def test_wal_start_seq_on_empty_log(tmp_path):
    async with open_wal(tmp_path, start_seq=500) as wal:
        assert wal.append(b"x") == 500
    assert list(read_log(tmp_path, 500)) == [(500, b"x")]
    assert segment_files(tmp_path) == ["wal-00000000000000000500.log"]


async def test_wal_start_seq_below_log_end_is_ignored(tmp_path):
    await write_records(tmp_path, 5)
    async with open_wal(tmp_path, start_seq=3) as wal:
        assert wal.append(b"x") == 6


async def test_wal_start_seq_past_log_end_removes_covered_segments(tmp_path):
    # The snapshot covers more than the log holds (everysec lost the log's last second).
    await write_records(tmp_path, 5)
    async with open_wal(tmp_path, start_seq=10) as wal:
        assert wal.append(b"ten") == 10
    assert segment_files(tmp_path) == ["wal-00000000000000000010.log"]
    assert check_log(tmp_path).ok
    assert list(read_log(tmp_path, 10)) == [(10, b"ten")]


async def test_wal_keeps_seq_order_under_concurrent_appends(tmp_path):
    async with open_wal(
        tmp_path, fsync_interval_s=0.01, max_segment_bytes=500
    ) as wal:

        async def writer(k: int) -> None:
            for i in range(20):
                seq = wal.append(b"%d:%d" % (k, i))
                assert seq <= wal.last_seq
                await trio.sleep(0)

        async with trio.open_nursery() as nursery:
            for k in range(10):
                nursery.start_soon(writer, k)
    records = list(read_log(tmp_path))
    assert [seq for seq, _ in records] == list(range(1, 201))
    for k in range(10):  # each writer's records are in its own order
        mine = [int(p.split(b":")[1]) for _, p in records if p.startswith(b"%d:" % k)]
        assert mine == list(range(20))


async def test_wal_append_rejects_oversized_record(tmp_path, monkeypatch):
    monkeypatch.setattr("snapshots.wal.MAX_PAYLOAD_BYTES", 10)
    async with open_wal(tmp_path) as wal:
        with pytest.raises(
            PayloadTooLarge, match=r"^a log record must be at most 10 bytes, got 11 bytes$"
        ):
            wal.append(bytes(11))
        assert wal.last_seq == 0


async def test_wal_append_after_close_raises_engine_closed(tmp_path):
    async with open_wal(tmp_path) as wal:
        pass
    with pytest.raises(
        EngineClosed, match=r"^write-ahead log is closed; no record can be appended$"
    ):
        wal.append(b"late")


async def test_wal_wait_durable_rejects_unknown_seq(tmp_path):
    async with open_wal(tmp_path) as wal:
        with pytest.raises(ValueError, match=r"^seq 1 was never appended; last_seq is 0$"):
            await wal.wait_durable(1)


async def test_open_wal_rejects_unknown_policy(tmp_path):
    with pytest.raises(
        InvalidInput,
        match=r"^fsync policy must be one of 'always', 'everysec', 'no', got 'sometimes'$",
    ):
        async with open_wal(tmp_path, policy="sometimes"):  # type: ignore[arg-type]
            pass


async def test_wal_close_flushes_even_when_cancelled(tmp_path):
    with trio.move_on_after(0.05):
        async with open_wal(tmp_path, fsync_interval_s=60) as wal:
            wal.append(b"a")
            wal.append(b"b")
            await trio.sleep_forever()
    assert list(read_log(tmp_path)) == [(1, b"a"), (2, b"b")]


#####################################################################
# Fsync policies
#####################################################################


async def test_wal_always_group_commit_shares_fsyncs(tmp_path):
    fs = FaultyFileSystem()
    async with open_wal(tmp_path, policy="always", fs=fs) as wal:
        durable_at: dict[int, int] = {}

        async def writer(k: int) -> None:
            for _ in range(5):
                seq = wal.append(b"w%d" % k)
                await wal.wait_durable(seq)
                durable_at[seq] = wal.statistics().durable_seq
                await trio.sleep(0)

        async with trio.open_nursery() as nursery:
            for k in range(50):
                nursery.start_soon(writer, k)
        stats = wal.statistics()
    assert len(durable_at) == 250
    assert all(durable >= seq for seq, durable in durable_at.items())
    assert stats.durable_seq == stats.last_seq == 250
    assert 1 <= fs.calls["fsync"] < 250 // 5  # far fewer fsyncs than records
    assert stats.fsync_count == fs.calls["fsync"]
    assert stats.last_fsync_latency_s is not None


async def test_wal_always_wait_durable_returns_after_fsync(tmp_path):
    fs = FaultyFileSystem()
    async with open_wal(tmp_path, policy="always", fs=fs) as wal:
        seq = wal.append(b"a")
        assert fs.calls["fsync"] == 0
        await wal.wait_durable(seq)
        assert fs.calls["fsync"] == 1
        assert wal.statistics().durable_seq == 1
        # Once durable, waiting again costs nothing.
        await wal.wait_durable(seq)
        assert fs.calls["fsync"] == 1


async def test_wal_everysec_fsyncs_on_the_interval(tmp_path):
    fs = FaultyFileSystem()
    async with open_wal(tmp_path, policy="everysec", fsync_interval_s=0.05, fs=fs) as wal:
        seq = wal.append(b"a")
        await wal.wait_durable(seq)  # written to the OS, fsync still to come
        stats = wal.statistics()
        assert (stats.written_seq, stats.buffered_records) == (1, 0)
        await wait_for(lambda: wal.statistics().durable_seq == 1)
        assert fs.calls["fsync"] == 1
        await trio.sleep(0.15)  # nothing new: idle intervals do not fsync
        assert fs.calls["fsync"] == 1


@pytest.mark.parametrize("policy", ["everysec", "no"])
async def test_wal_acknowledges_once_written_to_the_os_before_any_fsync(tmp_path, policy):
    # Redis's appendfsync everysec/no: the record is in the file (the kernel's page cache)
    # before the write is acknowledged, so a crash of the process loses nothing acknowledged.
    fs = FaultyFileSystem()
    async with open_wal(tmp_path, policy=policy, fsync_interval_s=60, fs=fs) as wal:
        for i in range(10):
            seq = wal.append(payload(i))
        await wal.wait_durable(seq)
        stats = wal.statistics()
        assert (stats.written_seq, stats.durable_seq, stats.buffered_records) == (10, 0, 0)
        assert fs.calls["fsync"] == 0
        assert stats.bytes_written == sum(HEADER_SIZE + len(payload(i)) for i in range(10))
        # What another process (recovery after a SIGKILL) reads from the files right now.
        assert [seq for seq, _ in read_log(tmp_path)] == list(range(1, 11))


class StuckFsync(FaultyFileSystem):
    """A disk whose file fsyncs (not directory ones) block until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.in_fsync = threading.Event()

    def fsync(self, fd: int) -> None:
        self.in_fsync.set()
        assert self.release.wait(30), "the test never released the fsync"
        super().fsync(fd)


async def test_wal_everysec_acknowledgements_never_wait_for_an_fsync(tmp_path):
    # Redis fsyncs everysec in a background thread for the same reason: a slow disk would
    # otherwise stall every write once a second for as long as its fsync takes.
    fs = StuckFsync()
    async with open_wal(tmp_path, policy="everysec", fsync_interval_s=0.01, fs=fs) as wal:
        await wal.wait_durable(wal.append(payload(1)))
        with trio.fail_after(10):
            while not fs.in_fsync.is_set():  # the syncer is now stuck in its fsync
                await trio.sleep(0.005)
        with trio.fail_after(10):
            for i in range(2, 50):
                await wal.wait_durable(wal.append(payload(i)))
        stats = wal.statistics()
        assert (stats.written_seq, stats.durable_seq) == (49, 0)
        assert [seq for seq, _ in read_log(tmp_path)] == list(range(1, 50))
        fs.release.set()
        await wait_for(lambda: wal.statistics().durable_seq >= 1)


async def test_wal_everysec_groups_concurrent_appends_into_few_writes(tmp_path):
    fs = FaultyFileSystem()
    async with open_wal(tmp_path, policy="everysec", fsync_interval_s=60, fs=fs) as wal:

        async def writer(k: int) -> None:
            await wal.wait_durable(wal.append(payload(k)))

        async with trio.open_nursery() as nursery:
            for k in range(50):
                nursery.start_soon(writer, k)
        assert wal.statistics().written_seq == 50
        assert fs.calls["write"] < 50  # group write: waiters share a write call


async def test_wal_no_policy_writes_but_never_fsyncs_until_close(tmp_path):
    fs = FaultyFileSystem()
    async with open_wal(tmp_path, policy="no", fsync_interval_s=0.02, fs=fs) as wal:
        wal.append(b"a")
        await wait_for(lambda: wal.statistics().written_seq == 1)
        await trio.sleep(0.1)
        assert fs.calls["fsync"] == 0
        assert wal.statistics().durable_seq == 0
    assert fs.calls["fsync"] == 1  # a clean close fsyncs, as Redis does on SHUTDOWN
    assert list(read_log(tmp_path)) == [(1, b"a")]


#####################################################################
# Segments: rotation and removal
#####################################################################

RECORD_SIZE = HEADER_SIZE + len(payload(1))  # payloads 1..9 have the same length


async def test_wal_rotates_segments_past_max_size(tmp_path):
    async with open_wal(tmp_path, policy="always", max_segment_bytes=3 * RECORD_SIZE) as wal:
        for i in range(1, 10):
            await wal.wait_durable(wal.append(payload(i)))
        assert wal.statistics().segments == 3
    assert segment_files(tmp_path) == [
        "wal-00000000000000000001.log",
        "wal-00000000000000000004.log",
        "wal-00000000000000000007.log",
    ]
    assert list(read_log(tmp_path)) == [(i, payload(i)) for i in range(1, 10)]
    report = check_log(tmp_path)
    assert report.ok and report.last_seq == 9 and report.records == 9


async def test_wal_rotation_in_one_batch(tmp_path):
    async with open_wal(tmp_path, policy="everysec", max_segment_bytes=2 * RECORD_SIZE) as wal:
        for i in range(1, 8):
            wal.append(payload(i))
    assert len(segment_files(tmp_path)) == 4
    assert [seq for seq, _ in read_log(tmp_path)] == list(range(1, 8))


async def test_wal_restart_appends_to_last_segment_until_full(tmp_path):
    await write_records(tmp_path, 2, max_segment_bytes=3 * RECORD_SIZE)
    await write_records(tmp_path, 2, max_segment_bytes=3 * RECORD_SIZE)
    assert segment_files(tmp_path) == [
        "wal-00000000000000000001.log",
        "wal-00000000000000000004.log",
    ]
    assert [seq for seq, _ in read_log(tmp_path)] == [1, 2, 3, 4]


async def test_wal_remove_segments_covered_by(tmp_path):
    async with open_wal(tmp_path, policy="always", max_segment_bytes=3 * RECORD_SIZE) as wal:
        for i in range(1, 10):
            await wal.wait_durable(wal.append(payload(i)))
        # A snapshot with start_seq 5 covers records 1..4: only segment 1 (1..3) is all < 5.
        removed = await wal.remove_segments_covered_by(5)
        assert [p.name for p in removed] == ["wal-00000000000000000001.log"]
        assert await wal.remove_segments_covered_by(5) == []
        # The segment being appended to is never removed.
        removed = await wal.truncate_before(1_000)
        assert [p.name for p in removed] == ["wal-00000000000000000004.log"]
        assert wal.statistics().segments == 1
        await wal.wait_durable(wal.append(payload(10)))
    assert list(read_log(tmp_path, 7)) == [(i, payload(i)) for i in range(7, 11)]
    with pytest.raises(
        LogCorrupted, match=r"the log starts at seq 7 but reading must start at seq 5"
    ):
        list(read_log(tmp_path, 5))


async def test_wal_rotate_closes_the_open_segment_durably(tmp_path):
    async with open_wal(tmp_path, policy="everysec", fsync_interval_s=60.0) as wal:
        for i in range(1, 4):
            wal.append(payload(i))
        await wal.rotate()
        stats = wal.statistics()
        # Everything appended before the rotation is written and fsynced, in the old segment.
        assert (stats.written_seq, stats.durable_seq, stats.segments) == (3, 3, 2)
        assert segment_files(tmp_path) == [
            "wal-00000000000000000001.log",
            "wal-00000000000000000004.log",
        ]
        # Rotating an empty open segment adds no file.
        await wal.rotate()
        assert wal.statistics().segments == 2
        wal.append(payload(4))
        # The closed segment is wholly before seq 4: a snapshot at 4 can delete it.
        removed = await wal.remove_segments_covered_by(4)
        assert [p.name for p in removed] == ["wal-00000000000000000001.log"]
    assert list(read_log(tmp_path, 4)) == [(4, payload(4))]
    report = check_log(tmp_path)
    assert report.ok and report.last_seq == 4


async def test_wal_restart_after_rotate_appends_to_the_empty_segment(tmp_path):
    async with open_wal(tmp_path, policy="always") as wal:
        await wal.wait_durable(wal.append(payload(1)))
        await wal.rotate()
    async with open_wal(tmp_path, policy="always") as wal:
        assert wal.last_seq == 1
        await wal.wait_durable(wal.append(payload(2)))
    assert segment_files(tmp_path) == [
        "wal-00000000000000000001.log",
        "wal-00000000000000000002.log",
    ]
    assert list(read_log(tmp_path)) == [(1, payload(1)), (2, payload(2))]


async def test_remove_segments_covered_by_offline(tmp_path):
    await write_records(tmp_path, 9, max_segment_bytes=3 * RECORD_SIZE)
    removed = remove_segments_covered_by(tmp_path, 7)
    assert [p.name for p in removed] == [
        "wal-00000000000000000001.log",
        "wal-00000000000000000004.log",
    ]
    assert check_log(tmp_path).ok


async def test_read_log_skips_segments_before_from_seq(tmp_path):
    await write_records(tmp_path, 9, max_segment_bytes=3 * RECORD_SIZE)
    fs = FaultyFileSystem()
    assert [seq for seq, _ in read_log(tmp_path, 8, fs=fs)] == [8, 9]
    assert fs.calls["open_read"] == 1  # only the last segment was read


#####################################################################
# Recovery: torn tails and corruption
#####################################################################


async def test_recovery_torn_tail_at_every_byte_of_last_record(tmp_path):
    source = tmp_path / "source"
    await write_records(source, 6, max_segment_bytes=3 * RECORD_SIZE)
    last_segment = source / "wal" / "wal-00000000000000000004.log"
    intact = last_segment.read_bytes()
    last_record_at = len(intact) - RECORD_SIZE
    for cut in range(last_record_at, len(intact)):
        data_dir = tmp_path / f"cut-{cut}"
        shutil.copytree(source, data_dir)
        segment = data_dir / "wal" / last_segment.name
        segment.write_bytes(intact[:cut])

        assert [seq for seq, _ in read_log(data_dir)] == [1, 2, 3, 4, 5]  # read-only, stops
        report = check_log(data_dir)
        if cut == last_record_at:
            assert report.ok
            continue
        assert report.damage is not None
        assert report.damage.kind == "torn-tail"
        assert (report.damage.offset, report.damage.nbytes) == (
            last_record_at,
            cut - last_record_at,
        )
        assert report.last_seq == 5

        recovered = recover_log(data_dir)
        assert recovered.actions == (
            f"cut a torn tail off {segment.name}: truncated at byte {last_record_at}, "
            f"dropping {cut - last_record_at} byte(s) ({report.damage.reason})",
        )
        assert segment.stat().st_size == last_record_at
        assert check_log(data_dir).ok
        async with open_wal(data_dir) as wal:
            assert wal.append(b"again") == 6
        assert list(read_log(data_dir))[-1] == (6, b"again")


async def test_open_wal_reports_the_cut_torn_tail(tmp_path):
    await write_records(tmp_path, 3)
    segment = tmp_path / "wal" / "wal-00000000000000000001.log"
    with segment.open("ab") as f:
        f.write(b"\xa1\x05\x00")
    async with open_wal(tmp_path) as wal:
        assert wal.last_seq == 3
        assert "dropping 3 byte(s)" in wal.recovery.actions[0]


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x20
    path.write_bytes(bytes(data))


async def test_recovery_flipped_byte_mid_log_raises_log_corrupted(tmp_path):
    await write_records(tmp_path, 9, max_segment_bytes=3 * RECORD_SIZE)
    middle = tmp_path / "wal" / "wal-00000000000000000004.log"
    offset = RECORD_SIZE + HEADER_SIZE + 2  # inside record 5's payload
    flip_byte(middle, offset)
    message = (
        rf"^write-ahead log is damaged in '{middle}' at byte {RECORD_SIZE}: checksum mismatch "
        r"in record claiming seq 5; inspect it with `pointspace log check`, or truncate the log "
        r"at the damage \(dropping everything after it\) with `pointspace log repair`$"
    )
    with pytest.raises(LogCorrupted, match=message) as info:
        list(read_log(tmp_path))
    assert isinstance(info.value, StorageFailure)
    assert info.value.damage.path == middle
    with pytest.raises(LogCorrupted, match=message):
        recover_log(tmp_path)
    with pytest.raises(LogCorrupted, match=message):
        async with open_wal(tmp_path):
            pass
    # Nothing was changed by the refusals.
    assert len(segment_files(tmp_path)) == 3
    report = check_log(tmp_path)
    assert report.damage is not None and report.damage.kind == "corruption"
    assert report.last_seq == 4
    assert "corruption in wal-00000000000000000004.log at byte" in report.describe()


async def test_repair_log_truncates_at_damage_and_drops_later_segments(tmp_path):
    await write_records(tmp_path, 9, max_segment_bytes=3 * RECORD_SIZE)
    middle = tmp_path / "wal" / "wal-00000000000000000004.log"
    flip_byte(middle, RECORD_SIZE + HEADER_SIZE + 2)
    report = repair_log(tmp_path)
    assert report.actions == (
        f"truncated {middle.name} at byte {RECORD_SIZE}, dropping {2 * RECORD_SIZE} byte(s): "
        "checksum mismatch in record claiming seq 5",
        f"deleted wal-00000000000000000007.log ({3 * RECORD_SIZE} byte(s), records from seq 7)",
    )
    assert segment_files(tmp_path) == ["wal-00000000000000000001.log", middle.name]
    assert [seq for seq, _ in read_log(tmp_path)] == [1, 2, 3, 4]
    assert check_log(tmp_path).ok
    assert repair_log(tmp_path).actions == ("nothing to repair",)
    async with open_wal(tmp_path) as wal:
        assert wal.append(b"five") == 5


async def test_recovery_torn_record_in_non_last_segment_is_corruption(tmp_path):
    await write_records(tmp_path, 6, max_segment_bytes=3 * RECORD_SIZE)
    first = tmp_path / "wal" / "wal-00000000000000000001.log"
    first.write_bytes(first.read_bytes()[:-5])
    report = check_log(tmp_path)
    assert report.damage is not None
    assert report.damage.kind == "corruption"
    assert report.damage.reason.startswith("torn record in a segment that is not the last")
    with pytest.raises(LogCorrupted, match=rf"damaged in '{first}' at byte {2 * RECORD_SIZE}"):
        list(read_log(tmp_path))


async def test_recovery_missing_middle_segment_is_corruption(tmp_path):
    await write_records(tmp_path, 9, max_segment_bytes=3 * RECORD_SIZE)
    (tmp_path / "wal" / "wal-00000000000000000004.log").unlink()
    last = tmp_path / "wal" / "wal-00000000000000000007.log"
    with pytest.raises(
        LogCorrupted,
        match=rf"damaged in '{last}' at byte 0: segment starts at seq 7 but the previous segment ends at seq 3",
    ):
        recover_log(tmp_path)
    report = repair_log(tmp_path)
    assert report.actions[0].startswith(f"deleted {last.name}")
    assert [seq for seq, _ in read_log(tmp_path)] == [1, 2, 3]


async def test_check_log_on_missing_directory(tmp_path):
    report = check_log(tmp_path)
    assert report.ok and report.last_seq == 0 and report.segments == ()
    assert report.describe().endswith("ok: last seq 0")
    assert list(read_log(tmp_path)) == []


def test_segment_names_sort_in_log_order():
    names = [logscan.segment_name(s) for s in (1, 10, 9, 2**64 - 1)]
    assert sorted(names) == [logscan.segment_name(s) for s in (1, 9, 10, 2**64 - 1)]


#####################################################################
# Storage failures
#####################################################################

BROKEN = r"^write-ahead log is broken: "


async def test_wal_enospc_on_write_breaks_the_log_and_stays_recoverable(tmp_path):
    fs = FaultyFileSystem()
    async with open_wal(tmp_path, policy="always", fs=fs) as wal:
        for i in range(1, 4):
            await wal.wait_durable(wal.append(payload(i)))
        fs.fail("write", errno.ENOSPC, partial=True)
        seq = wal.append(payload(4))
        with pytest.raises(
            StorageFailure,
            match=BROKEN + r"write of '.*wal-00000000000000000001\.log' failed: No space left on "
            r"device; records after seq 3 may not be durable and no record is accepted until the "
            r"server restarts",
        ):
            await wal.wait_durable(seq)
        with pytest.raises(StorageFailure, match=BROKEN):
            wal.append(payload(5))
        with pytest.raises(StorageFailure, match=BROKEN):
            await wal.wait_durable(seq)
        await wal.wait_durable(3)  # durable before the failure: still fine
        stats = wal.statistics()
        assert stats.broken and stats.durable_seq == 3 and stats.last_seq == 4
        assert fs.calls["write"] == 4  # nothing written after the failure...
    assert fs.calls["write"] == 4  # ...not even by close
    # The half-written record 4 is a torn tail; recovery cuts it and numbering resumes at 4.
    report = check_log(tmp_path)
    assert report.damage is not None and report.damage.kind == "torn-tail"
    async with open_wal(tmp_path) as wal:
        assert wal.append(b"after") == 4
    assert [seq for seq, _ in read_log(tmp_path)] == [1, 2, 3, 4]


async def test_wal_eio_on_fsync_breaks_the_log_without_retry(tmp_path):
    fs = FaultyFileSystem()
    async with open_wal(tmp_path, policy="always", fs=fs) as wal:
        fs.fail("fsync", errno.EIO)
        seq = wal.append(b"a")
        with pytest.raises(
            StorageFailure, match=BROKEN + r"fsync of .* failed: Input/output error"
        ):
            await wal.wait_durable(seq)
        fsyncs = fs.calls["fsync"]
    assert fs.calls["fsync"] == fsyncs  # never retried, not even at close
    assert check_log(tmp_path).ok  # the record itself is intact on disk


async def test_wal_eacces_on_rotation_breaks_the_log(tmp_path):
    fs = FaultyFileSystem()
    async with open_wal(tmp_path, policy="always", max_segment_bytes=2 * RECORD_SIZE, fs=fs) as wal:
        await wal.wait_durable(wal.append(payload(1)))
        await wal.wait_durable(wal.append(payload(2)))
        fs.fail("open", errno.EACCES)
        seq = wal.append(payload(3))
        with pytest.raises(
            StorageFailure,
            match=BROKEN + r"create of '.*wal-00000000000000000003\.log' failed: Permission denied",
        ):
            await wal.wait_durable(seq)
    assert check_log(tmp_path).ok
    async with open_wal(tmp_path, max_segment_bytes=2 * RECORD_SIZE) as wal:
        assert wal.append(payload(3)) == 3
    assert [seq for seq, _ in read_log(tmp_path)] == [1, 2, 3]


async def test_wal_everysec_failure_reaches_waiters_and_appenders(tmp_path):
    fs = FaultyFileSystem()
    async with open_wal(tmp_path, policy="everysec", fsync_interval_s=0.01, fs=fs) as wal:
        fs.fail("write", errno.ENOSPC)
        seq = wal.append(b"a")
        await wait_for(lambda: wal.statistics().broken)
        with pytest.raises(StorageFailure, match=BROKEN):
            await wal.wait_durable(seq)
        with pytest.raises(StorageFailure, match=BROKEN):
            wal.append(b"b")


async def test_open_wal_eacces_on_directory_is_storage_failure(tmp_path):
    fs = FaultyFileSystem()
    fs.fail("makedirs", errno.EACCES)
    with pytest.raises(
        StorageFailure,
        match=r"^cannot open the write-ahead log in '.*wal': \[Errno 13\] Permission denied",
    ):
        async with open_wal(tmp_path, fs=fs):
            pass


async def test_wal_remove_segments_failure_does_not_break_the_log(tmp_path):
    fs = FaultyFileSystem()
    async with open_wal(tmp_path, policy="always", max_segment_bytes=RECORD_SIZE, fs=fs) as wal:
        for i in range(1, 4):
            await wal.wait_durable(wal.append(payload(i)))
        fs.fail("remove", errno.EACCES)
        with pytest.raises(
            StorageFailure, match=r"^could not delete log segments covered by seq 3: "
        ):
            await wal.remove_segments_covered_by(3)
        await wal.wait_durable(wal.append(payload(4)))
        assert not wal.statistics().broken


async def test_wal_remove_segments_partial_failure_keeps_the_list_true(tmp_path):
    fs = FaultyFileSystem()
    async with open_wal(tmp_path, policy="always", max_segment_bytes=RECORD_SIZE, fs=fs) as wal:
        for i in range(1, 5):
            await wal.wait_durable(wal.append(payload(i)))
        fs.fail("remove", errno.EIO, after=1)  # the second deletion fails
        with pytest.raises(StorageFailure):
            await wal.remove_segments_covered_by(4)
        assert wal.statistics().segments == 3
        assert [p.name for p in await wal.remove_segments_covered_by(4)] == [
            "wal-00000000000000000002.log",
            "wal-00000000000000000003.log",
        ]
    assert [seq for seq, _ in read_log(tmp_path, 4)] == [4]


async def test_unreadable_segment_is_storage_failure(tmp_path):
    await write_records(tmp_path, 2)
    fs = FaultyFileSystem()
    fs.fail("open_read", errno.EACCES, times=3)
    with pytest.raises(StorageFailure, match=r"^could not read the write-ahead log: \[Errno 13\]"):
        list(read_log(tmp_path, fs=fs))
    with pytest.raises(StorageFailure, match=r"^could not check the write-ahead log: \[Errno 13\]"):
        check_log(tmp_path, fs=fs)
    with pytest.raises(
        StorageFailure, match=r"^could not recover the write-ahead log: \[Errno 13\]"
    ):
        async with open_wal(tmp_path, fs=fs):
            pass
