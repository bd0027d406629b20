"""The write-ahead log: the engine's :class:`~engine.journal.Journal`, backed by segment files.

Theory of operation
===================

``append(record)`` is synchronous (see the ordering contract in ``engine/journal.py``): it frames
the record (``framing.encode_record``), puts it in an in-memory buffer and returns its seq. One
background task, the *flusher*, moves buffered records to the files in a worker thread
(``trio.to_thread.run_sync``), so the event loop never blocks on the disk. Bytes reach the files
in seq order because there is only one flusher and every batch is taken from the buffer *after*
acquiring ``_io_lock``, a FIFO lock held for the whole worker call.

Three counters describe progress, always ``durable_seq <= written_seq <= last_seq``:

* ``last_seq``: appended (in the buffer or further);
* ``written_seq``: handed to the OS with ``write``;
* ``durable_seq``: fsynced.

Fsync policies, as Redis's ``appendfsync``:

* ``always``: every append wakes the flusher, which writes *everything* buffered so far and
  fsyncs once; ``wait_durable(seq)`` returns when ``durable_seq >= seq``. Records appended while
  an fsync is in flight wait for the next one, so N concurrent writers share far fewer than N
  fsyncs: group commit (PostgreSQL's WAL writer and MySQL's binlog group commit do the same).
* ``everysec`` (default): every append wakes the flusher, which hands everything buffered so
  far to the OS with one ``write`` (a group write, as group commit without the fsync); a
  second task, the *syncer*, fsyncs what was written once a second, in its own worker thread
  and outside ``_io_lock``, so writes (and the acknowledgements waiting on them) never wait
  for an fsync, however slow the disk (Redis too fsyncs in a background thread). ``wait_durable(seq)`` returns when ``written_seq >= seq``: a write is
  acknowledged once it is in the kernel's page cache, so a crash *of the process* (SIGKILL, an
  OOM kill, a bug) loses nothing acknowledged; only a crash of the machine or a power loss can
  lose about the last second. This is Redis's ``appendfsync everysec`` exactly: Redis writes
  its AOF buffer to the file before it sends replies, and fsyncs in a background thread once a
  second. (Until issue 17 records waited in user space for up to a second, so a process
  crash lost them too; the cost of writing before acknowledging is one worker-thread round
  trip per group of writes, measured in ``bench/bench_durability.py``.)
* ``no``: like ``everysec`` without the fsync; the OS flushes when it likes (Linux: within about
  30 s, ``dirty_expire_centisecs``). Rotation and a clean close still fsync.

The syncer's fsync may run while the flusher's thread writes to the same file descriptor
(POSIX allows it; the fsync covers at least what was written before it started, which is what
``durable_seq`` records). Rotation and close take ``_SegmentFiles.fd_guard``, a thread lock
the syncer holds around its fsync, so a descriptor is never closed under it.

Segments: records go to ``wal/wal-<first_seq:020d>.log``; once a segment would grow past
``max_segment_bytes`` the next record starts a new one. Rotation fsyncs the old segment (under
every policy) before creating the new file and fsyncing the directory, which is what lets
recovery treat a torn record in any segment but the last as corruption (``logscan.py``).

Failure: any ``OSError`` from a write, fsync, rotation or close (ENOSPC, EACCES, EIO...) puts the
log into a permanent *broken* state: ``append`` raises :class:`StorageFailure`, waiters get
:class:`StorageFailure`, and nothing more is written, so the only damage on disk is at most one
partial batch at the end of the last segment, which recovery cuts as a torn tail. We never retry
a failed fsync: after one, Linux may have dropped the dirty pages and a second fsync would
"succeed" without them (PostgreSQL's "fsyncgate", 2018; it now PANICs instead). Records that
reached the file intact before the failure may be replayed after a restart even though their
writers got an error: the usual "commit outcome unknown" of any database.

Startup (``open_wal``): recover the log (cut a torn tail, refuse corruption), then continue
numbering after the last intact record, appending to the last segment if it has room.
``start_seq`` is the first seq *not* covered by the snapshot the caller loaded (its
``start_seq``); if the log ends before it (e.g. a snapshot was fsynced but the last second of
``everysec`` log was lost), the old segments hold only covered records and are deleted, and
numbering resumes at ``start_seq`` so no seq is ever reused.

The cost of one ``to_thread`` round trip per flush (tens of microseconds) is paid per group of
records, not per record: see ``bench/bench_durability.py``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, TypeVar

import trio

from engine.errors import EngineClosed, InvalidInput, PayloadTooLarge, StorageFailure
from snapshots.files import REAL_FS, FileSystem, write_all
from snapshots.framing import MAX_PAYLOAD_BYTES, encode_record
from snapshots.logscan import (
    Damage,
    LogCorrupted,
    LogReport,
    SegmentReport,
    check_log,
    list_segments,
    read_log,
    recover_log,
    repair_log,
    segment_name,
    wal_dir,
)

__all__ = [
    "DEFAULT_FSYNC_INTERVAL_S",
    "DEFAULT_MAX_SEGMENT_BYTES",
    "Damage",
    "FsyncPolicy",
    "LogCorrupted",
    "LogReport",
    "SegmentReport",
    "WalStatistics",
    "WriteAheadLog",
    "check_log",
    "open_wal",
    "read_log",
    "recover_log",
    "remove_segments_covered_by",
    "repair_log",
]

logger = logging.getLogger("pointspace.wal")

T = TypeVar("T")

FsyncPolicy = Literal["always", "everysec", "no"]
_POLICIES: Final = ("always", "everysec", "no")

# Some precedents for defaults:
# - etcd: SegmentSizeBytes = 64 MiB; PostgreSQL: 16 MiB WAL segments; Kafka: 1 GiB.
#   64 MiB keeps segment counts small without making snapshot-driven deletion coarse.
DEFAULT_MAX_SEGMENT_BYTES: Final = 64 * 1024 * 1024
# - Redis: appendfsync everysec; PostgreSQL: wal_writer_delay = 200 ms.
DEFAULT_FSYNC_INTERVAL_S: Final = 1.0


@dataclass(frozen=True, slots=True)
class WalStatistics:
    """A snapshot of the log's counters, for ``/metrics``."""

    policy: FsyncPolicy
    last_seq: int
    written_seq: int
    durable_seq: int
    buffered_records: int
    buffered_bytes: int
    bytes_written: int
    fsync_count: int
    last_fsync_latency_s: float | None
    segments: int
    broken: bool


#####################################################################
# Segment files (synchronous; one worker thread at a time)
#####################################################################


class _IOFailed(Exception):
    """An OSError, with the operation and file it happened in."""

    def __init__(self, op: str, path: Path, error: OSError) -> None:
        super().__init__(f"{op} of {str(path)!r} failed: {error.strerror or error}")
        self.error = error


class _SegmentFiles:
    """The open segment and the list of segments. Touched only under the log's ``_io_lock``,
    except :meth:`fsync_open_segment` (the everysec syncer), which ``fd_guard`` serialises
    with closing a descriptor.

    Counters are plain ints written by the worker thread and read by ``statistics()`` on the
    trio thread; CPython makes each read atomic, and a slightly stale count is fine.
    """

    def __init__(
        self,
        directory: Path,
        fs: FileSystem,
        max_segment_bytes: int,
        segments: list[tuple[int, Path]],
        next_seq: int,
    ) -> None:
        self.directory = directory
        self.fs = fs
        self.max_segment_bytes = max_segment_bytes
        self.segments = segments
        self.bytes_written = 0
        self.fsync_count = 0
        self.last_fsync_latency_s: float | None = None
        self.fd: int | None = None
        self.size = 0
        #: Held (by worker threads) around the syncer's fsync and around closing ``fd``.
        self.fd_guard = threading.Lock()
        last_size = self._call("stat", segments[-1][1], fs.size, segments[-1][1]) if segments else 0
        if segments and last_size < max_segment_bytes:
            path = segments[-1][1]
            self.fd = self._call("open", path, fs.open, path, os.O_WRONLY | os.O_APPEND)
            self.size = last_size
        else:
            self._create(next_seq)

    def _call(self, op: str, path: Path, fn: Callable[..., T], *args: object) -> T:
        """Run one file operation, naming the operation and file if it fails."""
        try:
            return fn(*args)
        except OSError as exc:
            raise _IOFailed(op, path, exc) from exc

    @property
    def path(self) -> Path:
        return self.segments[-1][1]

    def _create(self, first_seq: int) -> None:
        path = self.directory / segment_name(first_seq)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL
        self.fd = self._call("create", path, self.fs.open, path, flags)
        self.segments.append((first_seq, path))
        self.size = 0
        # The new name must survive a crash, or recovery would find its records missing.
        self._call("fsync", self.directory, self.fs.fsync_dir, self.directory)

    def write(self, records: list[bytes], first_seq: int, fsync: bool, rotate: bool = False) -> None:
        """Append framed records (seqs ``first_seq``...), rotating as needed; fsync if asked.

        ``rotate``: then close the segment (fsynced) and start the next one at the seq after
        the last record, unless the open segment is still empty (``WriteAheadLog.rotate``).
        """
        run: list[bytes] = []
        run_bytes = 0
        seq = first_seq
        for record in records:
            filled = self.size + run_bytes
            if filled > 0 and filled + len(record) > self.max_segment_bytes:
                self._write_run(run)
                run, run_bytes = [], 0
                self._rotate(seq)
            run.append(record)
            run_bytes += len(record)
            seq += 1
        self._write_run(run)
        if rotate and self.size > 0:
            self._rotate(seq)  # fsyncs the segment it closes
        elif fsync:
            self.fsync()

    def _write_run(self, run: list[bytes]) -> None:
        if not run:
            return
        data = b"".join(run)
        assert self.fd is not None
        self._call("write", self.path, write_all, self.fs, self.fd, data)
        self.size += len(data)
        self.bytes_written += len(data)

    def fsync(self) -> None:
        assert self.fd is not None
        started = time.perf_counter()
        self._call("fsync", self.path, self.fs.fsync, self.fd)
        self.last_fsync_latency_s = time.perf_counter() - started
        self.fsync_count += 1

    def fsync_open_segment(self) -> None:
        """The syncer's fsync of the open segment (see the module docstring): everything
        written to it before this call is durable when it returns; earlier segments were
        fsynced when they were rotated out."""
        with self.fd_guard:
            if self.fd is not None:
                self.fsync()

    def _rotate(self, first_seq: int) -> None:
        # Fsync the old segment under every policy: see the module docstring.
        self.fsync()
        self.close()
        self._create(first_seq)

    def close(self) -> None:
        if self.fd is not None:
            with self.fd_guard:
                fd, self.fd = self.fd, None
                self._call("close", self.path, self.fs.close, fd)

    def remove_covered(self, seq: int) -> list[Path]:
        return _remove_covered(self.segments, seq, self.fs, self.directory)


def _remove_covered(
    segments: list[tuple[int, Path]], seq: int, fs: FileSystem, directory: Path
) -> list[Path]:
    """Delete the leading segments whose records are all < ``seq``; never the last one.

    ``segments`` loses each entry as its file goes, so it stays true if a deletion fails.
    """
    removed = []
    try:
        # Segment 0 holds seqs up to segments[1].first_seq - 1, so it is covered when
        # segments[1].first_seq <= seq.
        while len(segments) > 1 and segments[1][0] <= seq:
            path = segments[0][1]
            fs.remove(path)
            del segments[0]
            removed.append(path)
    finally:
        if removed:
            fs.fsync_dir(directory)
    return removed


def _open_segments(
    data_dir: Path, fs: FileSystem, start_seq: int, max_segment_bytes: int
) -> tuple[_SegmentFiles, int, LogReport]:
    """Recover the log and open it for appending. Runs in a worker thread."""
    directory = wal_dir(data_dir)
    fs.makedirs(directory)
    report = recover_log(data_dir, fs=fs)
    next_seq = report.next_seq
    segments = list_segments(data_dir, fs)
    if start_seq > next_seq:
        for _, path in segments:
            logger.warning(
                "removing %s: all its records are before start_seq %d", path.name, start_seq
            )
            fs.remove(path)
        if segments:
            fs.fsync_dir(directory)
        segments, next_seq = [], start_seq
    return _SegmentFiles(directory, fs, max_segment_bytes, segments, next_seq), next_seq, report


def remove_segments_covered_by(
    data_dir: Path, seq: int, *, fs: FileSystem | None = None
) -> list[Path]:
    """Offline version of :meth:`WriteAheadLog.remove_segments_covered_by` (log not open)."""
    fs = fs or REAL_FS
    return _remove_covered(list_segments(data_dir, fs), seq, fs, wal_dir(data_dir))


#####################################################################
# The log (trio shell)
#####################################################################


class WriteAheadLog:
    """A :class:`~engine.journal.Journal` on segment files. Create it with :func:`open_wal`.

    Attributes:
        recovery: what startup recovery found and did (a torn tail cut, for instance).
    """

    def __init__(
        self,
        files: _SegmentFiles,
        next_seq: int,
        recovery: LogReport,
        *,
        policy: FsyncPolicy,
        fsync_interval_s: float,
    ) -> None:
        self.recovery = recovery
        self._files = files
        self._policy: FsyncPolicy = policy
        self._fsync_interval_s = fsync_interval_s
        self._last_seq = self._written_seq = self._durable_seq = next_seq - 1
        self._pending: list[bytes] = []  # framed records last_seq - len + 1 .. last_seq
        self._pending_bytes = 0
        self._broken: str | None = None
        self._closed = False
        self._wakeup = trio.Event()  # set: the flusher has work
        self._progress = trio.Event()  # set and replaced when seqs advance or the log breaks
        self._io_lock = trio.Lock()  # FIFO: one worker call at a time, batches in seq order
        self._flusher_scope: trio.CancelScope | None = None
        self._flusher_done = trio.Event()
        self._syncer_scope: trio.CancelScope | None = None
        self._syncer_done = trio.Event()

    # --- Journal protocol ------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The seq of the newest appended record (0 when none ever was)."""
        return self._last_seq

    def append(self, record: bytes) -> int:
        """Buffer one record and return its seq; never waits.

        Raises:
            EngineClosed: *your* code closed the log.
            StorageFailure: the log is broken (a write or fsync failed); nothing was buffered.
            PayloadTooLarge: ``record`` is longer than ``MAX_PAYLOAD_BYTES``.

        Runtime complexity: O(len(record)) (one CRC pass).
        """
        if self._closed:
            raise EngineClosed("write-ahead log is closed; no record can be appended")
        if self._broken is not None:
            raise StorageFailure(self._broken)
        if len(record) > MAX_PAYLOAD_BYTES:
            raise PayloadTooLarge(
                f"a log record must be at most {MAX_PAYLOAD_BYTES} bytes, got {len(record)} bytes"
            )
        seq = self._last_seq + 1
        framed = encode_record(seq, record)
        self._pending.append(framed)
        self._pending_bytes += len(framed)
        self._last_seq = seq
        self._wakeup.set()
        return seq

    async def sync(self) -> None:
        """Write and fsync everything appended so far, whatever the policy.

        A snapshot calls this before it becomes visible: its items may reflect any appended
        record, and a record that a snapshot reflects must survive a crash in the log too, or
        recovery would number new records over it.

        Raises:
            StorageFailure: the log is broken.
        """
        await self._flush(fsync=True)
        if self._broken is not None:
            raise StorageFailure(self._broken)

    async def wait_durable(self, seq: int) -> None:
        """Return once record ``seq`` is as durable as the policy promises.

        ``always``: after an fsync covering ``seq`` (shared with every record appended before
        it: group commit). ``everysec``/``no``: after a ``write`` covering ``seq`` handed it to
        the OS (shared likewise), so that a crash of the process cannot lose it.

        Raises:
            StorageFailure: the log broke before ``seq`` was durable.
            ValueError: ``seq`` was never appended (a bug in the caller).
        """
        if seq > self._last_seq:
            raise ValueError(f"seq {seq} was never appended; last_seq is {self._last_seq}")
        always = self._policy == "always"
        while (self._durable_seq if always else self._written_seq) < seq:
            if self._broken is not None:
                raise StorageFailure(self._broken)
            self._wakeup.set()
            await self._progress.wait()

    # --- maintenance -----------------------------------------------------------------------

    async def remove_segments_covered_by(self, seq: int) -> list[Path]:
        """Delete segments whose records all have seq < ``seq``; return their paths.

        Call it after a snapshot with ``start_seq == seq`` is safely on disk. The segment being
        appended to is never deleted.

        Raises:
            StorageFailure: a deletion failed (the log itself keeps working).

        Runtime complexity: O(segments).
        """
        async with self._io_lock:
            try:
                return await trio.to_thread.run_sync(self._files.remove_covered, seq)
            except OSError as exc:
                raise StorageFailure(
                    f"could not delete log segments covered by seq {seq}: {exc}"
                ) from exc

    async def rotate(self) -> None:
        """Write and fsync everything appended so far, then start a new segment.

        A snapshot calls this before it takes its position, so that the records it covers
        sit in closed segments that :meth:`remove_segments_covered_by` can delete once it
        is on disk; without it they would share the open segment with newer records and
        stay until that segment filled (up to ``max_segment_bytes``). An empty open
        segment is kept as it is: rotating it would only add a file.

        Raises:
            StorageFailure: the log is broken.
        """
        await self._flush(fsync=True, rotate=True)
        if self._broken is not None:
            raise StorageFailure(self._broken)

    # The design brief names this operation both ways.
    truncate_before = remove_segments_covered_by

    def statistics(self) -> WalStatistics:
        """Counters for ``/metrics``. Runtime complexity: O(1)."""
        files = self._files
        return WalStatistics(
            policy=self._policy,
            last_seq=self._last_seq,
            written_seq=self._written_seq,
            durable_seq=self._durable_seq,
            buffered_records=len(self._pending),
            buffered_bytes=self._pending_bytes,
            bytes_written=files.bytes_written,
            fsync_count=files.fsync_count,
            last_fsync_latency_s=files.last_fsync_latency_s,
            segments=len(files.segments),
            broken=self._broken is not None,
        )

    # --- the flusher -----------------------------------------------------------------------

    async def _run_flusher(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            with trio.CancelScope() as scope:
                self._flusher_scope = scope
                task_status.started()
                if self._policy == "always":
                    while True:
                        await self._wakeup.wait()
                        self._wakeup = trio.Event()
                        await self._flush(fsync=True)
                while True:  # everysec and no: write what is appended; the syncer fsyncs
                    await self._wakeup.wait()
                    self._wakeup = trio.Event()
                    await self._flush(fsync=False)
        finally:
            self._flusher_done.set()

    async def _run_syncer(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """``everysec``: once an interval, fsync what the flusher wrote (module docstring)."""
        try:
            with trio.CancelScope() as scope:
                self._syncer_scope = scope
                task_status.started()
                while True:
                    await trio.sleep(self._fsync_interval_s)
                    covered = self._written_seq
                    if covered <= self._durable_seq or self._broken is not None:
                        continue  # nothing new (idle intervals do not fsync)
                    try:
                        # Shielded like the flusher's writes: a cancelled wait would leave
                        # the thread running with nobody to hear how it ended.
                        with trio.CancelScope(shield=True):
                            await trio.to_thread.run_sync(self._files.fsync_open_segment)
                    except _IOFailed as exc:
                        self._break(str(exc))
                        continue
                    if covered > self._durable_seq:
                        self._durable_seq = covered
                        self._notify()
        finally:
            self._syncer_done.set()

    async def _flush(self, *, fsync: bool, rotate: bool = False) -> None:
        """Write everything buffered (and fsync if asked, or rotate: ``rotate``) in a worker
        thread."""
        async with self._io_lock:
            if self._broken is not None:
                return
            # Take the batch only now, under the lock, so batches reach the file in seq order.
            batch, self._pending, self._pending_bytes = self._pending, [], 0
            last = self._last_seq
            fsync = fsync and last > self._durable_seq
            if not batch and not fsync and not rotate:
                return
            try:
                # Shielded: once taken from the buffer, the batch must reach the file (or break
                # the log). A cancellation here (aclose cancelling a flusher that was woken by
                # an append) would otherwise drop records that were already numbered, and the
                # next batch would leave a gap in the file.
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(
                        self._files.write, batch, last - len(batch) + 1, fsync, rotate
                    )
            except _IOFailed as exc:
                self._break(str(exc))
                return
            self._written_seq = last
            if fsync:
                self._durable_seq = last
            self._notify()

    def _break(self, what: str) -> None:
        self._broken = (
            f"write-ahead log is broken: {what}; records after seq {self._durable_seq} may not "
            f"be durable and no record is accepted until the server restarts (free disk space "
            f"or fix permissions first; recovery cuts any partial record)"
        )
        self._pending, self._pending_bytes = [], 0
        logger.error("%s", self._broken)
        self._notify()

    def _notify(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    async def aclose(self) -> None:
        """Stop the flusher, write and fsync what is buffered, close the segment.

        Fsyncs under every policy, as Redis does on SHUTDOWN. Shielded from cancellation: a
        clean shutdown finishes its last write even when the server is being cancelled.
        Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        with trio.CancelScope(shield=True):
            for scope, done in (
                (self._flusher_scope, self._flusher_done),
                (self._syncer_scope, self._syncer_done),
            ):
                if scope is not None:  # it started
                    scope.cancel()
                    await done.wait()
            await self._flush(fsync=True)
            async with self._io_lock:
                try:
                    await trio.to_thread.run_sync(self._files.close)
                except _IOFailed as exc:
                    if self._broken is None:
                        self._break(str(exc))
            self._notify()


@asynccontextmanager
async def open_wal(
    data_dir: Path,
    *,
    policy: FsyncPolicy = "everysec",
    start_seq: int = 1,
    max_segment_bytes: int = DEFAULT_MAX_SEGMENT_BYTES,
    fsync_interval_s: float = DEFAULT_FSYNC_INTERVAL_S,
    fs: FileSystem | None = None,
) -> AsyncIterator[WriteAheadLog]:
    """Recover the log in ``<data_dir>/wal`` and open it for appending.

    ``async with open_wal(data_dir) as wal:`` runs the flusher in a nursery of its own and,
    on exit, writes and fsyncs what is buffered.

    Args:
        data_dir: the server's data directory; ``wal/`` is created inside it.
        policy: ``"always"``, ``"everysec"`` or ``"no"`` (see the module docstring). If in
            doubt, use ``"everysec"``: ``always`` costs an fsync per group of writes
            (milliseconds on most disks) in every acknowledged write's latency.
        start_seq: the first seq not covered by the loaded snapshot (1 without one). Numbering
            continues at ``max(start_seq, last seq in the log + 1)``.
        max_segment_bytes: rotate to a new segment past this size.
        fsync_interval_s: the "second" of ``everysec`` (and the write interval of ``no``).
        fs: the file layer; tests pass a :class:`~snapshots.files.FaultyFileSystem`.

    Raises:
        LogCorrupted: the log is damaged where a crash cannot explain it.
        StorageFailure: the directory or a segment cannot be opened or created.
        InvalidInput: an unknown policy or a non-positive size or interval.
    """
    if policy not in _POLICIES:
        raise InvalidInput(
            f"fsync policy must be one of 'always', 'everysec', 'no', got {policy!r}",
            field="fsync",
        )
    if max_segment_bytes <= 0 or fsync_interval_s <= 0:
        raise InvalidInput(
            "max_segment_bytes and fsync_interval_s must be > 0, got "
            f"{max_segment_bytes!r}, {fsync_interval_s!r}"
        )
    if start_seq < 1:
        raise InvalidInput(f"start_seq must be >= 1, got {start_seq!r}")
    fs = fs or REAL_FS
    data_dir = Path(data_dir)
    try:
        files, next_seq, report = await trio.to_thread.run_sync(
            _open_segments, data_dir, fs, start_seq, max_segment_bytes
        )
    except (OSError, _IOFailed) as exc:
        raise StorageFailure(
            f"cannot open the write-ahead log in {str(wal_dir(data_dir))!r}: {exc}"
        ) from exc
    wal = WriteAheadLog(
        files,
        next_seq,
        report,
        policy=policy,
        fsync_interval_s=fsync_interval_s,
    )
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(wal._run_flusher)
            if policy == "everysec":
                await nursery.start(wal._run_syncer)
            try:
                yield wal
            finally:
                await wal.aclose()
    finally:
        if files.fd is not None:  # aclose never ran or its close failed: don't leak the fd
            try:
                fs.close(files.fd)
            except OSError:
                pass
            files.fd = None
