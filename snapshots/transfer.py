"""Snapshot export and import: moving a whole server's state as one file.

* **Export from a running engine** (``stream_engine_snapshot``): the snapshot codec's bytes,
  produced chunk by chunk from live state -- the admin endpoint streams it over HTTP.
* **Export from a data directory** (``export_data_dir``): recover the directory's state into a
  throwaway in-memory engine *without modifying the directory* (``recovered_engine``: no torn
  tail is cut, nothing is appended), then write it as a snapshot file.
* **Import** (``import_snapshot``): validate the whole file first (every checksum, the end
  marker, the item count; decompression bounded by output, ``max_inflated`` in all), refuse a data directory that already holds data unless told to
  replace it, then install the file as the directory's only snapshot (temp file, fsync,
  rename, directory fsync) so the next ``pointspace serve`` starts from it.

The file format is the snapshot format (``snapshots/FORMAT.md``): an export can be dropped
into ``<data_dir>/snapshots/`` as is.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from engine.errors import Conflict, InvalidInput
from snapshots.codec import SnapshotEncoder, SnapshotInfo, iter_snapshot_items, validate_snapshot
from snapshots.files import REAL_FS
from snapshots.lock import DataDirectoryLock
from snapshots.logscan import read_log, wal_dir
from snapshots.store import RecoveryReport, load_latest_snapshot
from snapshots.writer import snapshot_dir, snapshot_path

if TYPE_CHECKING:
    from engine.engine import Engine

Progress = Callable[[int], None]

#: Items encoded between yields to the event loop while streaming from live state.
STREAM_YIELD_EVERY = 500

#: The default of ``Settings.max_inflated_bytes`` (web/serving/settings.py, the layer above; the CLI
#: passes the effective setting), for callers without settings (tests, tools).
DEFAULT_MAX_INFLATED = 8 * 1024 * 1024 * 1024


async def stream_engine_snapshot(engine: Engine) -> AsyncIterator[bytes]:
    """The bytes of a snapshot of ``engine``'s live state, produced as writes continue."""
    encoder = SnapshotEncoder(start_seq=engine.stable_seq(), created=time.time())
    yield encoder.header_bytes()
    pending: list[bytes] = []
    for count, item in enumerate(engine.iter_snapshot_items(), 1):
        chunk = encoder.encode_item(item)
        if chunk:
            pending.append(chunk)
        if count % STREAM_YIELD_EVERY == 0:
            if pending:
                yield b"".join(pending)
                pending = []
            await trio.sleep(0)
    pending.append(encoder.finish())
    yield b"".join(pending)


@asynccontextmanager
async def recovered_engine(data_dir: Path, **engine_kwargs: Any) -> AsyncIterator[tuple[Engine, int]]:
    """A throwaway in-memory engine holding the state of ``data_dir`` (its latest snapshot,
    then the log after it), recovered *without modifying the directory* (no torn tail is
    cut, nothing is appended) and held under the directory's lock until the block ends: the
    one way offline tools (``export_data_dir``, ``pointspace stats export``) read a data
    directory. ``engine_kwargs`` go to ``Engine.open`` (settings that change what reads
    answer, such as ``stats_gauge_period_s``).

    Yields:
        The engine, and the log position after the last record it holds (where a snapshot
        of it starts).

    Raises:
        InvalidInput: ``data_dir`` is not a directory.
        DataDirectoryInUse: a server (or another tool) runs on ``data_dir``.
    """
    from engine.engine import Engine

    if not data_dir.is_dir():
        raise InvalidInput(f"no data directory at {str(data_dir)!r}", "data_dir")
    with DataDirectoryLock(data_dir):  # a running server's files change under a reader
        async with Engine.open(**engine_kwargs) as engine:
            start_seq, _ = load_latest_snapshot(data_dir, engine, RecoveryReport(), REAL_FS)
            last = start_seq - 1
            if wal_dir(data_dir).is_dir():
                for seq, payload in read_log(data_dir, start_seq):
                    await engine.replay(seq, payload)
                    last = seq
            yield engine, last + 1


async def export_data_dir(
    data_dir: Path, out: Path, progress: Progress | None = None, total: Progress | None = None
) -> SnapshotInfo:
    """Write the state held in ``data_dir`` (snapshot + log) to the snapshot file ``out``.

    ``progress(n)`` is told of entities written as they go, ``total(n)`` once how many there
    are is known (after the log's replay, before the first is written).

    Raises:
        DataDirectoryInUse: a server runs on ``data_dir`` (export from its ``--url`` instead).
    """
    async with recovered_engine(data_dir) as (engine, start_seq):
        encoder = SnapshotEncoder(start_seq=start_seq, created=time.time())
        if total is not None:
            total(engine.statistics().router.entities)
        tmp = out.with_name(out.name + ".tmp")
        count = 0
        with open(tmp, "wb") as f:
            f.write(encoder.header_bytes())
            for count, item in enumerate(engine.iter_snapshot_items(), 1):
                f.write(encoder.encode_item(item))
                if progress is not None and count % 1000 == 0:
                    progress(1000)
            if progress is not None:
                progress(count % 1000)
            f.write(encoder.finish())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
        return SnapshotInfo(start_seq=start_seq, items=encoder.items, created=encoder.created)


def import_snapshot(source: Path, data_dir: Path, *, replace: bool = False,
                    max_inflated: int = DEFAULT_MAX_INFLATED) -> SnapshotInfo:
    """Install the snapshot file ``source`` as ``data_dir``'s state.

    The file comes from elsewhere, so it is read with the untrusted-input bounds: at most
    ``max_inflated`` bytes decompressed (``Settings.max_inflated_bytes``), zstd windows of
    8 MiB, one 128 KiB block inflated at a time (``snapshots/codec.py``).

    Raises:
        SnapshotCorrupted: the file fails validation; nothing was changed.
        SnapshotTooLarge: the file inflates past ``max_inflated``; nothing was changed.
        Conflict: ``data_dir`` already holds a log or snapshots and ``replace`` is false.
    """
    with open(source, "rb") as f:
        info = validate_snapshot(f, max_inflated=max_inflated)
    # An export taken while writes went on is fuzzy: an entity may hold records past the
    # header's position. The imported directory has no log, so it must number new records
    # after everything any entity holds, or entities would skip them as already applied.
    with open(source, "rb") as f:
        newest = max((item.applied_seq for item in iter_snapshot_items(f, max_inflated=max_inflated)),
                     default=0)
    data_dir.mkdir(parents=True, exist_ok=True)
    with DataDirectoryLock(data_dir):  # never under a running server (snapshots/lock.py)
        return _install_snapshot(source, data_dir, info, newest, replace, max_inflated)


def _install_snapshot(source: Path, data_dir: Path, info: SnapshotInfo, newest: int,
                      replace: bool, max_inflated: int) -> SnapshotInfo:
    existing = [p for p in (wal_dir(data_dir), snapshot_dir(data_dir)) if p.is_dir() and any(p.iterdir())]
    if existing and not replace:
        raise Conflict(
            f"{str(data_dir)!r} already holds data ({', '.join(p.name for p in existing)}); "
            "pass --force to replace it"
        )
    start_seq = max(info.start_seq, newest + 1)
    target = snapshot_path(data_dir, start_seq)
    tmp = data_dir / (target.name + ".import.tmp")  # outside snapshots/, which may be replaced
    if start_seq == info.start_seq:
        shutil.copyfile(source, tmp)
    else:
        encoder = SnapshotEncoder(start_seq=start_seq, created=info.created)
        with open(source, "rb") as f, open(tmp, "wb") as out:
            out.write(encoder.header_bytes())
            for item in iter_snapshot_items(f, max_inflated=max_inflated):
                out.write(encoder.encode_item(tuple(item)))
            out.write(encoder.finish())
        info = SnapshotInfo(start_seq=start_seq, items=info.items, created=info.created)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    for path in existing:
        shutil.rmtree(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, target)
    fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return info
