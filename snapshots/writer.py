"""Snapshot files: the thin I/O shell around ``codec.py`` (write, fsync, rename, prune, find).

Theory of operation
===================

Snapshots live in ``<data_dir>/snapshots/snap-<start_seq:020d>.pssnap``. ``write_snapshot``
streams items into ``<name>.tmp``, fsyncs it, renames it over the final name (atomic on POSIX)
and fsyncs the directory so the rename survives a crash: the classic sequence (SQLite, LevelDB's
CURRENT file, Redis's ``rdbSave``: write temp file, fsync, rename). A crash at any point leaves
either the old set of snapshots or the new one, plus at most a stray ``.tmp`` that readers
skip and the next successful write deletes. Then it keeps the newest ``keep`` (2) snapshots and
deletes older ones: one spare in case the newest turns out unreadable.

Where each step runs, and why:

* **Pulling and packing items: on the event loop.** ``items`` is a generator reading live
  engine state, which only the event loop's thread may touch, and which other tasks mutate
  whenever we yield to the loop. So each item is pulled and fully encoded to immutable bytes
  (``SnapshotEncoder.pack_item``) with no checkpoint in between: an item is always a
  consistent picture of its entity at one instant (the snapshot as a whole is fuzzy; see
  ``codec.py``).
* **Compressing and writing: in a worker thread**, one call per batch of ``yield_every`` items
  (or 4 MiB of packed bytes). Awaiting that call is the checkpoint where writes continue, and it
  keeps zstd's CPU time and the disk's latency off the event loop, whose p99 matters more than
  the snapshot's duration (trio's design notes rank latency above throughput). The loop is
  blocked only while one batch is packed: roughly ``yield_every`` times a few microseconds.
  Not benchmarked yet.

Every file operation goes through a :class:`~snapshots.files.FileSystem` (``fs=``), so tests
inject ENOSPC or EIO. Any ``OSError`` while writing becomes :class:`StorageFailure`, the
temporary file is removed, and existing snapshots are untouched.

``find_latest_snapshot`` returns the newest snapshot that validates completely, falling back to
older ones and reporting each one it skips.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Final

import trio

from engine.errors import StorageFailure
from snapshots.codec import SnapshotCorrupted, SnapshotEncoder, SnapshotInfo, check_snapshot
from snapshots.files import REAL_FS, FileSystem, write_all

__all__ = [
    "DEFAULT_KEEP",
    "find_latest_snapshot",
    "list_snapshots",
    "snapshot_dir",
    "snapshot_path",
    "write_snapshot",
]

logger = logging.getLogger("pointspace.snapshots")

_NAME_RE: Final = re.compile(r"^snap-(\d{20})\.pssnap$")
_TMP_RE: Final = re.compile(r"^snap-(\d{20})\.pssnap\.tmp$")

# Keep the newest two: one to load, one spare. Precedent: etcd keeps 5 snapshot files
# (--max-snapshots), Redis keeps one; ours can be large, so two.
DEFAULT_KEEP: Final = 2
# Hand packed items to the worker thread once this many bytes are waiting, whatever
# yield_every says, so a batch of huge items stays bounded in memory.
_BATCH_BYTES: Final = 4 * 1024 * 1024


def snapshot_dir(data_dir: Path) -> Path:
    """``<data_dir>/snapshots``."""
    return Path(data_dir) / "snapshots"


def snapshot_path(data_dir: Path, start_seq: int) -> Path:
    """Where the snapshot consistent with ``start_seq`` lives.

    >>> snapshot_path(Path("/d"), 7).name
    'snap-00000000000000000007.pssnap'
    """
    return snapshot_dir(data_dir) / f"snap-{start_seq:020d}.pssnap"


def list_snapshots(data_dir: Path, *, fs: FileSystem | None = None) -> list[tuple[int, Path]]:
    """``(start_seq, path)`` of every finished snapshot file, newest first; skips ``.tmp``."""
    fs = fs or REAL_FS
    directory = snapshot_dir(data_dir)
    found = [
        (int(m.group(1)), directory / name)
        for name in fs.listdir(directory)
        if (m := _NAME_RE.match(name))
    ]
    found.sort(reverse=True)
    return found


#####################################################################
# Writing
#####################################################################


def _compress_and_write(
    encoder: SnapshotEncoder, fs: FileSystem, fd: int, head: bytes, batch: list[bytes]
) -> None:
    """Worker thread: compress a batch of packed items (in order) and write it."""
    chunks = [head]
    chunks.extend(encoder.add_packed(packed) for packed in batch)
    write_all(fs, fd, b"".join(chunks))


def _finish_file(
    encoder: SnapshotEncoder, fs: FileSystem, fd: int, head: bytes, batch: list[bytes]
) -> None:
    """Worker thread: the last batch, the trailer, and the fsync that makes the file whole."""
    _compress_and_write(encoder, fs, fd, head, batch)
    write_all(fs, fd, encoder.finish())
    fs.fsync(fd)


async def write_snapshot(
    data_dir: Path,
    start_seq: int,
    items: Iterable[tuple[str, Any, int, Any]],
    *,
    yield_every: int = 1000,
    keep: int = DEFAULT_KEEP,
    created: float | None = None,
    fs: FileSystem | None = None,
    before_publish: Callable[[], Awaitable[None]] | None = None,
) -> SnapshotInfo:
    """Stream ``items`` into a new snapshot file consistent with log position ``start_seq``.

    Args:
        data_dir: the server's data directory; ``snapshots/`` is created inside it.
        start_seq: the first log seq the snapshot does not necessarily include (the journal's
            ``last_seq + 1`` when the walk starts). Every item must reflect all records before it.
        items: ``(kind, key, applied_seq, state)`` tuples, typically a generator over live
            state: each one is encoded as soon as it is pulled, before the loop runs anything
            else, so later mutations cannot tear it.
        yield_every: items packed between checkpoints. Smaller means less event-loop blocking
            per step and more thread round trips. If in doubt, keep 1000.
        keep: how many snapshots to keep, newest first (at least 1).
        created: the creation time to record (Unix seconds); now if omitted.
        fs: the file layer; tests inject faults through it.
        before_publish: awaited after the file is complete and before it is renamed into
            place (the store makes the log durable there: see ``store.py``).

    Returns:
        The snapshot's start_seq, item count and creation time.

    Raises:
        StorageFailure: a write, fsync or rename failed; the temporary file is removed and the
            older snapshots are untouched.
        TypeError, ValueError: an item is malformed (a bug in the generator).

    Runtime complexity: O(total item size); memory O(one batch).
    """
    if yield_every < 1 or keep < 1:
        raise ValueError(f"yield_every and keep must be >= 1, got {yield_every!r}, {keep!r}")
    fs = fs or REAL_FS
    directory = snapshot_dir(data_dir)
    final = snapshot_path(data_dir, start_seq)
    tmp = final.with_name(final.name + ".tmp")
    encoder = SnapshotEncoder(start_seq, time.time() if created is None else created)
    fd: int | None = None
    renamed = False
    try:
        await trio.to_thread.run_sync(fs.makedirs, directory)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        fd = await trio.to_thread.run_sync(fs.open, tmp, flags)
        head = encoder.header_bytes()
        batch: list[bytes] = []
        batch_bytes = 0
        for item in items:
            # Fully encoded here, before the next checkpoint: see the module docstring.
            packed = encoder.pack_item(item)
            batch.append(packed)
            batch_bytes += len(packed)
            if len(batch) >= yield_every or batch_bytes >= _BATCH_BYTES:
                await trio.to_thread.run_sync(_compress_and_write, encoder, fs, fd, head, batch)
                head, batch, batch_bytes = b"", [], 0
        await trio.to_thread.run_sync(_finish_file, encoder, fs, fd, head, batch)
        fd, closing = None, fd
        await trio.to_thread.run_sync(fs.close, closing)
        if before_publish is not None:
            await before_publish()
        await trio.to_thread.run_sync(fs.rename, tmp, final)
        renamed = True
        await trio.to_thread.run_sync(fs.fsync_dir, directory)
    except OSError as exc:
        raise StorageFailure(
            f"could not write snapshot {str(final)!r}: {exc}; the previous snapshots are kept"
        ) from exc
    finally:
        if fd is not None:
            _quietly(fs.close, fd)
        if not renamed:
            _quietly(fs.remove, tmp)
    await trio.to_thread.run_sync(_prune, data_dir, fs, keep, start_seq)
    logger.info("wrote snapshot %s: %d item(s)", final.name, encoder.items)
    return SnapshotInfo(start_seq, encoder.items, encoder.created)


def _quietly(fn: Callable[..., object], *args: object) -> None:
    """Best-effort cleanup after a failure that is already being reported."""
    try:
        fn(*args)
    except OSError:
        pass


def _prune(data_dir: Path, fs: FileSystem, keep: int, written_seq: int) -> None:
    """Delete snapshots beyond the newest ``keep``, and stray ``.tmp`` files of older writes.

    Failing to delete is not fatal (the new snapshot is safe); it is logged.
    """
    directory = snapshot_dir(data_dir)
    doomed = [path for _, path in list_snapshots(data_dir, fs=fs)[keep:]]
    doomed += [
        directory / name
        for name in fs.listdir(directory)
        if (m := _TMP_RE.match(name)) and int(m.group(1)) < written_seq
    ]
    for path in doomed:
        try:
            fs.remove(path)
        except OSError as exc:
            logger.warning("could not delete old snapshot file %s: %s", path, exc)


#####################################################################
# Finding
#####################################################################


def find_latest_snapshot(
    data_dir: Path,
    *,
    fs: FileSystem | None = None,
    on_invalid: Callable[[Path, Exception], None] | None = None,
) -> Path | None:
    """The newest snapshot that validates completely, or ``None`` if there is none.

    Each newer file that fails validation (damaged, truncated, unreadable, or whose header
    disagrees with its name) is logged as a warning, passed to ``on_invalid`` if given, and
    skipped in favour of the next older one. ``.tmp`` files are never considered.

    Validation is ``codec.check_snapshot``: every check on the bytes, with items skipped
    rather than built (the load that follows builds them once, and checks their shapes).

    Runtime complexity: O(size of the files read): validation decompresses each candidate.
    """
    fs = fs or REAL_FS
    for start_seq, path in list_snapshots(data_dir, fs=fs):
        try:
            with fs.open_read(path) as f:
                info = check_snapshot(f)
            if info.start_seq != start_seq:
                raise SnapshotCorrupted(
                    f"snapshot header says start_seq {info.start_seq} but the file name says "
                    f"{start_seq}"
                )
        except (SnapshotCorrupted, OSError) as exc:
            logger.warning("skipping invalid snapshot %s: %s", path, exc)
            if on_invalid is not None:
                on_invalid(path, exc)
            continue
        return path
    return None
