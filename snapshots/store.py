"""A data directory for an Engine: recovery at start, periodic snapshots, a final one at exit.

Theory of operation
-------------------
A data directory holds ``wal/`` (the write-ahead log, ``wal.py``) and ``snapshots/``
(``writer.py``). :func:`open_store` opens both around an engine's life:

1. **Recover.** Load the newest snapshot that validates (falling back to an older one), item
   by item into the engine's directory; then open the log (a torn tail is cut and reported;
   damage in the middle refuses to start, naming file and offset) and replay every record
   from the snapshot's position through the engine's ordinary dispatch. Each entity skips the
   records its snapshotted state already holds (``applied_seq``, see ``engine/commands.py``),
   so a snapshot taken while writes continued is still exact. Progress is logged
   (``pointspace.recovery``) every ``PROGRESS_INTERVAL_S`` seconds, with totals and rates.
2. **Snapshot periodically**: every ``snapshot_interval_s`` when something was written, and as
   soon as ``snapshot_log_bytes`` of log have accumulated since the last one; on demand
   (``Engine.snapshot_now``); and at a clean shutdown. A snapshot streams entity by entity while
   writes go on. Its position is the oldest record some entity may not have applied yet
   (``Engine.stable_seq``); once it is on disk, log segments wholly before it are deleted.

Nothing here knows what a counter is: items are ``(namespace, id, applied_seq, plain state)``
from ``Engine.iter_snapshot_items`` and go back through ``Engine.load_snapshot_item``. The store
sees the engine only as ``engine.journal.Recoverable``: it never imports ``Engine``.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from engine.errors import StorageFailure
from engine.journal import Recoverable
from snapshots.codec import iter_snapshot_items, read_snapshot_header
from snapshots.files import REAL_FS, FileSystem
from snapshots.lock import DataDirectoryLock
from snapshots.logscan import read_log
from snapshots.wal import WriteAheadLog, open_wal
from snapshots.writer import find_latest_snapshot, list_snapshots, write_snapshot

log = logging.getLogger("pointspace.store")
recovery_log = logging.getLogger("pointspace.recovery")

#: Snapshot at least this often while writes happen (Redis's default ``save 300 100`` is close).
DEFAULT_SNAPSHOT_INTERVAL_S = 300.0
#: ... and as soon as this much log has been written since the last snapshot, so that replay
#: at start stays short (recovery replays ~1 GB of log in well under a minute; 256 MiB keeps
#: it to seconds).
DEFAULT_SNAPSHOT_LOG_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SnapshotRecord:
    """The last snapshot written (or loaded at start)."""

    path: str
    start_seq: int
    items: int
    bytes: int
    seconds: float
    created: float


@dataclass(slots=True)
class RecoveryReport:
    snapshot: str | None = None
    snapshot_items: int = 0
    replayed_records: int = 0
    first_replayed: int = 0
    last_replayed: int = 0
    seconds: float = 0.0
    log_actions: list[str] = field(default_factory=list)


#: Recovery's progress lines: at least this often while a long load or replay runs (and once
#: at each end), so an operator watching a restart sees it move (issue 16 timed 4.6 s of
#: silence replaying 250k events). Two seconds: systemd's and Docker's log views refresh
#: about that often, and a day of restarts stays a handful of lines.
PROGRESS_INTERVAL_S = 2.0

_MIB = 1024 * 1024


def _progress(message: str, *args: object) -> None:
    """One recovery line through ``logging`` (``pointspace.recovery``): a JSON object like every
    other line when the server logs JSON, plain text otherwise, and silent for an embedding
    program that configured no logging."""
    recovery_log.info("recovery: " + message, *args)


class _Pacer:
    """Says when the next progress line is due: every ``PROGRESS_INTERVAL_S`` seconds."""

    def __init__(self) -> None:
        self.t0 = self._last = time.perf_counter()

    def due(self) -> bool:
        now = time.perf_counter()
        if now - self._last < PROGRESS_INTERVAL_S:
            return False
        self._last = now
        return True

    def rate(self, done: int) -> float:
        return done / max(time.perf_counter() - self.t0, 1e-9)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a snapshot loads.

    A load allocates tens of millions of containers that all stay alive (the decoded items
    and the state built from them), so each young collection walks only survivors and each
    full one the whole growing heap: about 60% of a 10M-bucket load under CPython's default
    thresholds (bench/bench_durability.py). Nothing a load makes is cyclic garbage; the
    previous state is restored afterwards, and ``pointspace serve`` tunes the collector after
    recovery (web/serving/server.py: tune_gc).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_latest_snapshot(
    data_dir: Path, engine: Recoverable, report: RecoveryReport, fs: FileSystem
) -> tuple[int, SnapshotRecord | None]:
    """Load the newest valid snapshot into ``engine``: (its start_seq or 1, its record)."""
    path = find_latest_snapshot(data_dir, fs=fs)
    if path is None:
        return 1, None
    t0 = time.perf_counter()
    items = 0
    total_bytes = fs.size(path)
    pacer = _Pacer()
    with fs.open_read(path) as stream:
        start_seq = read_snapshot_header(stream).start_seq
    with fs.open_read(path) as stream, _collector_paused():
        for kind, key, applied_seq, state in iter_snapshot_items(stream):
            engine.load_snapshot_item(kind, key, applied_seq, state)
            items += 1
            if items % 1024 == 0 and pacer.due():
                done = stream.tell()  # compressed bytes read so far: the file's share done
                _progress(
                    "loading %s: %s entities, %.1f of %.1f MiB (%d%%), %s entities/s",
                    path.name, f"{items:,}", done / _MIB, total_bytes / _MIB,
                    100 * done // max(total_bytes, 1), f"{pacer.rate(items):,.0f}",
                )
    seconds = time.perf_counter() - t0
    _progress("loaded %s entities from %s in %.2f s", f"{items:,}", path, seconds)
    report.snapshot = str(path)
    report.snapshot_items = items
    record = SnapshotRecord(str(path), start_seq, items, fs.size(path), seconds, path.stat().st_mtime)
    return start_seq, record


class DurableStore:
    """The log and snapshots of one data directory, attached to one engine."""

    def __init__(
        self,
        data_dir: Path,
        wal: WriteAheadLog,
        nursery: trio.Nursery,
        *,
        snapshot_interval_s: float,
        snapshot_log_bytes: int,
        fs: FileSystem,
    ) -> None:
        self.data_dir = data_dir
        self.journal = wal
        self._nursery = nursery
        self._interval = snapshot_interval_s
        self._log_bytes = snapshot_log_bytes
        self._fs = fs
        self._lock = trio.Lock()  # one snapshot at a time
        self.last_snapshot: SnapshotRecord | None = None
        self.recovery = RecoveryReport()
        self._bytes_at_last_snapshot = 0
        self._seq_at_last_snapshot = 0
        self._timer_scope = trio.CancelScope()
        self._start_seq = 1
        self._t0 = time.perf_counter()

    ########################################################################################
    # Recovery

    async def replay(self, engine: Recoverable, from_seq: int) -> None:
        """Apply every log record from ``from_seq`` on through the engine."""
        t0 = time.perf_counter()
        count = 0
        # The log was recovered before replay starts, so its last seq is known: at most this
        # many records follow (fewer when the log starts later, after a snapshot).
        total = max(0, self.journal.last_seq - from_seq + 1)
        if total:
            _progress("replaying %s log records (seq %s..%s)", f"{total:,}", f"{from_seq:,}",
                      f"{self.journal.last_seq:,}")
        pacer = _Pacer()
        for seq, payload in read_log(self.data_dir, from_seq, fs=self._fs):
            await engine.replay(seq, payload)
            count += 1
            if count == 1:
                self.recovery.first_replayed = seq
            self.recovery.last_replayed = seq
            if count % 256 == 0 and pacer.due():
                done = seq - from_seq + 1
                _progress(
                    "replayed %s of %s log records (%d%%), %s records/s",
                    f"{done:,}", f"{total:,}", 100 * done // max(total, 1),
                    f"{pacer.rate(count):,.0f}",
                )
        self.recovery.replayed_records = count
        if count:
            _progress(
                "replayed %s log records (seq %s..%s) in %.2f s", f"{count:,}",
                f"{self.recovery.first_replayed:,}", f"{self.recovery.last_replayed:,}",
                time.perf_counter() - t0,
            )

    ########################################################################################
    # Snapshots

    async def snapshot(self, engine: Recoverable) -> SnapshotRecord:
        """Write a snapshot of ``engine`` now (one at a time), then drop the log it covers.

        Raises:
            StorageFailure: the snapshot could not be written; the previous ones are intact.
        """
        async with self._lock:
            t0 = time.perf_counter()
            # Close the open segment first: what this snapshot covers is then in closed
            # segments, deletable below, rather than sharing a file with newer records until
            # it fills. Records appended from here on go to the new segment.
            await self.journal.rotate()
            start_seq = engine.stable_seq()
            info = await write_snapshot(
                self.data_dir, start_seq, engine.iter_snapshot_items(), fs=self._fs,
                before_publish=self.journal.sync,
            )
            seconds = time.perf_counter() - t0
            from snapshots.writer import snapshot_path

            path = snapshot_path(self.data_dir, info.start_seq)
            record = SnapshotRecord(
                str(path), info.start_seq, info.items, self._fs.size(path), seconds, info.created
            )
            self.last_snapshot = record
            self._bytes_at_last_snapshot = self.journal.statistics().bytes_written
            self._seq_at_last_snapshot = engine.last_seq
            # Keep the log from the *oldest* kept snapshot on, so that falling back to it (when
            # the newest one turns out unreadable) still finds every record after it.
            kept = list_snapshots(self.data_dir, fs=self._fs)
            oldest = min((seq for seq, _ in kept), default=info.start_seq)
            removed = await self.journal.remove_segments_covered_by(oldest)
            log.info(
                "snapshot %s: %d entities, %d bytes in %.2f s; removed %d log segments",
                path.name, info.items, record.bytes, seconds, len(removed),
            )
            return record

    async def run_snapshot_timer(self, engine: Recoverable) -> None:
        """Snapshot by interval (when there were writes) and by log size; runs until cancelled."""
        with self._timer_scope:
            await self._snapshot_timer(engine)

    async def _snapshot_timer(self, engine: Recoverable) -> None:
        last = trio.current_time()
        while True:
            await trio.sleep(1.0)
            written = self.journal.statistics().bytes_written - self._bytes_at_last_snapshot
            due_by_time = trio.current_time() - last >= self._interval
            if written >= self._log_bytes or (due_by_time and engine.last_seq != self._seq_at_last_snapshot):
                try:
                    await self.snapshot(engine)
                except StorageFailure as exc:
                    log.error("periodic snapshot failed, will retry: %s", exc)
                last = trio.current_time()

    ########################################################################################
    # Engine life

    async def recover(self, engine: Recoverable) -> None:
        """(Called by ``Engine.open``.) Replay the log after the snapshot loaded at open."""
        await self.replay(engine, self._start_seq)
        self.recovery.seconds = time.perf_counter() - self._t0

    def attach(self, engine: Recoverable) -> None:
        """(Called by ``Engine.open``.) Start the snapshot timer and expose snapshots."""
        engine.store = self
        self._nursery.start_soon(self.run_snapshot_timer, engine)

    async def close_engine(self, engine: Recoverable) -> None:
        """(Called by ``Engine.open`` at exit.) The final snapshot of a clean shutdown."""
        self._timer_scope.cancel()
        if engine.last_seq != self._seq_at_last_snapshot or self.last_snapshot is None:
            try:
                await self.snapshot(engine)
            except StorageFailure as exc:
                log.error("final snapshot failed; the log still has every write: %s", exc)


@asynccontextmanager
async def open_store(
    data_dir: Path,
    *,
    engine: Recoverable,
    fsync: str = "everysec",
    snapshot_interval_s: float = DEFAULT_SNAPSHOT_INTERVAL_S,
    snapshot_log_bytes: int = DEFAULT_SNAPSHOT_LOG_BYTES,
    fs: FileSystem | None = None,
    **wal_options: Any,
) -> AsyncIterator[DurableStore]:
    """Open ``data_dir`` for ``engine``: load its snapshot, open the log, and yield the store.

    The caller (``Engine.open``) then calls ``recover`` (replay), ``attach`` and, at exit,
    ``close_engine``.

    The directory's lock (``snapshots/lock.py``) is held from before recovery reads anything
    until the final snapshot is written.

    Raises:
        DataDirectoryInUse: another server or tool holds the directory.
        LogCorrupted: damage in the middle of the log (``pointspace log check`` / ``repair``).
        StorageFailure: the directory cannot be read or written.
    """
    fs = fs or REAL_FS
    t0 = time.perf_counter()
    try:
        fs.makedirs(data_dir)
    except OSError as exc:
        raise StorageFailure(f"cannot create data directory {str(data_dir)!r}: {exc}") from exc
    with DataDirectoryLock(data_dir):
        async with _open_locked(data_dir, engine, fsync, snapshot_interval_s, snapshot_log_bytes,
                                fs, t0, wal_options) as store:
            yield store


@asynccontextmanager
async def _open_locked(
    data_dir: Path, engine: Recoverable, fsync: str, snapshot_interval_s: float,
    snapshot_log_bytes: int, fs: FileSystem, t0: float, wal_options: dict[str, Any],
) -> AsyncIterator[DurableStore]:
    _progress("opening %s", data_dir)
    report = RecoveryReport()
    start_seq, record = load_latest_snapshot(data_dir, engine, report, fs)
    async with trio.open_nursery() as nursery:
        try:
            async with open_wal(data_dir, policy=fsync, start_seq=start_seq, fs=fs, **wal_options) as wal:  # type: ignore[arg-type]
                store = DurableStore(
                    data_dir, wal, nursery,
                    snapshot_interval_s=snapshot_interval_s,
                    snapshot_log_bytes=snapshot_log_bytes,
                    fs=fs,
                )
                store.recovery = report
                store.last_snapshot = record
                report.log_actions = list(wal.recovery.actions)
                for action in wal.recovery.actions:
                    _progress("%s", action)
                store._start_seq = start_seq
                store._t0 = t0
                store._seq_at_last_snapshot = start_seq - 1
                yield store
        finally:
            nursery.cancel_scope.cancel()
