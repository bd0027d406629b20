"""Reading, checking, recovering and repairing the write-ahead log's segment files.

Theory of operation
===================

The log lives in ``<data_dir>/wal/`` as segment files named ``wal-<first_seq:020d>.log``; the
name is the sequence number of the segment's first record, zero-padded so that name order is
log order (Kafka names its segments the same way). A segment holds the records
``first_seq .. next_segment.first_seq - 1``; the last segment is the one being appended to.
Files with other names are ignored.

Everything here walks the segments in order with :class:`~snapshots.framing.RecordDecoder`,
which already knows torn tails from corruption inside one file. On top of it this module adds
the rules that span files:

* each segment's first record must carry the seq its name promises, and each segment must start
  right after the previous one ends (a gap between files is corruption of the later file);
* a torn tail is only a torn tail in the **last** segment, because the log fsyncs a segment
  before it starts the next one (``wal.py``); a torn record anywhere else is corruption.

What each entry point does with damage:

* :func:`read_log` yields ``(seq, payload)`` and never writes: it stops quietly before a torn
  tail in the last segment and raises :class:`LogCorrupted` on any other damage.
* :func:`recover_log` (run by ``open_wal`` before appending) cuts a torn tail off the last
  segment, logs and reports the cut, and raises :class:`LogCorrupted` on other damage: the
  server refuses to start rather than silently dropping acknowledged records.
* :func:`check_log` (``pointspace log check``) reports, never raises for damage, never writes.
* :func:`repair_log` (``pointspace log repair``) truncates at the first damage, whatever its
  kind, and deletes every later segment, reporting what it dropped. An operator runs it after
  reading ``check``'s report, accepting the loss.

Cost: one sequential read of every walked segment, O(total bytes), in 1 MiB reads.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final, Literal, ParamSpec, TypeVar

from engine.errors import InvalidInput, StorageFailure
from snapshots.files import REAL_FS, FileSystem
from snapshots.framing import (
    NEED_DATA,
    CleanEnd,
    Corruption,
    Record,
    RecordDecoder,
    TornTail,
)
from snapshots.lock import DataDirectoryLock

__all__ = [
    "Damage",
    "LogCorrupted",
    "LogReport",
    "SegmentReport",
    "check_log",
    "list_segments",
    "read_log",
    "recover_log",
    "repair_log",
    "segment_name",
    "wal_dir",
]

logger = logging.getLogger("pointspace.wal")

P = ParamSpec("P")
R = TypeVar("R")

_SEGMENT_RE: Final = re.compile(r"^wal-(\d{20})\.log$")

# Read segments in 1 MiB chunks: large enough that per-call overhead vanishes, small enough to
# stay out of the way of the page cache. Not benchmarked yet.
_READ_CHUNK: Final = 1 << 20


def wal_dir(data_dir: Path) -> Path:
    """The directory holding the segments: ``<data_dir>/wal``."""
    return Path(data_dir) / "wal"


def segment_name(first_seq: int) -> str:
    """The file name of the segment whose first record is ``first_seq``.

    >>> segment_name(42)
    'wal-00000000000000000042.log'
    """
    return f"wal-{first_seq:020d}.log"


def list_segments(data_dir: Path, fs: FileSystem | None = None) -> list[tuple[int, Path]]:
    """``(first_seq, path)`` of every segment, in log order."""
    fs = fs or REAL_FS
    directory = wal_dir(data_dir)
    found = []
    for name in fs.listdir(directory):
        if m := _SEGMENT_RE.match(name):
            found.append((int(m.group(1)), directory / name))
    found.sort()
    return found


#####################################################################
# Reports and errors
#####################################################################


@dataclass(frozen=True, slots=True)
class SegmentReport:
    """What a walk found in one segment, up to its end or to the first damage."""

    path: Path
    first_seq: int
    records: int
    good_bytes: int  # bytes of intact records from the start of the file

    @property
    def last_seq(self) -> int:
        """Seq of the last intact record (``first_seq - 1`` when there is none)."""
        return self.first_seq + self.records - 1


@dataclass(frozen=True, slots=True)
class Damage:
    """The first damage found: where, why, and whether recovery may cut it off on its own."""

    path: Path
    offset: int
    nbytes: int  # bytes from ``offset`` to the end of the file
    reason: str
    kind: Literal["torn-tail", "corruption"]


@dataclass(frozen=True, slots=True)
class LogReport:
    """The outcome of a check, recovery or repair. ``describe()`` renders it for the CLI."""

    directory: Path
    segments: tuple[SegmentReport, ...]
    damage: Damage | None
    next_seq: int  # the seq the next appended record gets (1 for an empty log)
    actions: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """True when no damage was found."""
        return self.damage is None

    @property
    def last_seq(self) -> int:
        """Seq of the last intact record before any damage (0 for an empty log)."""
        return self.next_seq - 1

    @property
    def records(self) -> int:
        """Intact records found."""
        return sum(s.records for s in self.segments)

    def describe(self) -> str:
        """A few human-readable lines: segments, damage, and what was done."""
        lines = [f"log {self.directory}: {len(self.segments)} segment(s), {self.records} record(s)"]
        for s in self.segments:
            lines.append(
                f"  {s.path.name}: seq {s.first_seq}..{s.last_seq}, "
                f"{s.records} record(s), {s.good_bytes} good byte(s)"
            )
        if self.damage is None:
            lines.append(f"ok: last seq {self.last_seq}")
        else:
            d = self.damage
            lines.append(
                f"{d.kind} in {d.path.name} at byte {d.offset} ({d.nbytes} byte(s) from there "
                f"to the end of the file): {d.reason}"
            )
        lines.extend(self.actions)
        return "\n".join(lines)


class LogCorrupted(StorageFailure):
    """The log is damaged somewhere a crash cannot explain; starting would lose records.

    Attributes:
        damage: the file, byte offset and reason.
    """

    def __init__(self, damage: Damage) -> None:
        super().__init__(
            f"write-ahead log is damaged in {str(damage.path)!r} at byte {damage.offset}: "
            f"{damage.reason}; inspect it with `pointspace log check`, or truncate the log at "
            f"the damage (dropping everything after it) with `pointspace log repair`"
        )
        self.damage = damage


#####################################################################
# The walk
#####################################################################


class _Walk:
    """One pass over the segments; records stream out, the findings stay on the object."""

    def __init__(
        self, data_dir: Path, fs: FileSystem, from_seq: int = 1, *, strict_start: bool = False
    ) -> None:
        self.directory = wal_dir(data_dir)
        self.fs = fs
        self.from_seq = from_seq
        self.strict_start = strict_start  # the log must reach back to from_seq
        self.all_segments = list_segments(data_dir, fs)
        self.reports: list[SegmentReport] = []
        self.damage: Damage | None = None
        self.next_seq = 1 if not self.all_segments else self.all_segments[0][0]

    def records(self) -> Iterator[Record]:
        segments = self.all_segments
        expected_first: int | None = None
        for i, (first_seq, path) in enumerate(segments):
            is_last = i == len(segments) - 1
            # Segment i holds seqs first_seq .. segments[i + 1].first_seq - 1: skip it unread
            # when they are all before from_seq.
            if not is_last and segments[i + 1][0] <= self.from_seq:
                continue
            if self.strict_start and expected_first is None and first_seq > self.from_seq:
                self._set_damage(
                    path, 0, 0, "corruption",
                    f"the log starts at seq {first_seq} but reading must start at seq "
                    f"{self.from_seq}; the records in between are missing",
                )  # fmt: skip
                return
            if expected_first is not None and first_seq != expected_first:
                self._set_damage(
                    path, 0, self.fs.size(path), "corruption",
                    f"segment starts at seq {first_seq} but the previous segment ends at seq "
                    f"{expected_first - 1}",
                )  # fmt: skip
                return
            self.next_seq = first_seq
            decoder = RecordDecoder(first_seq=first_seq)
            count = 0
            with self.fs.open_read(path) as f:
                while True:
                    event = decoder.next_event()
                    if event is NEED_DATA:
                        decoder.receive_data(f.read(_READ_CHUNK))
                        continue
                    if isinstance(event, Record):
                        count += 1
                        self.next_seq = event.seq + 1
                        yield event
                        continue
                    break
            self.reports.append(SegmentReport(path, first_seq, count, decoder.offset))
            if isinstance(event, TornTail):
                if is_last:
                    self._set_damage(path, event.offset, event.nbytes, "torn-tail", event.reason)
                else:
                    self._set_damage(
                        path, event.offset, event.nbytes, "corruption",
                        f"torn record in a segment that is not the last: {event.reason}",
                    )  # fmt: skip
                return
            if isinstance(event, Corruption):
                size = self.fs.size(path)
                self._set_damage(
                    path, event.offset, size - event.offset, "corruption", event.reason
                )
                return
            assert isinstance(event, CleanEnd)
            expected_first = first_seq + count

    def _set_damage(
        self,
        path: Path,
        offset: int,
        nbytes: int,
        kind: Literal["torn-tail", "corruption"],
        reason: str,
    ) -> None:
        self.damage = Damage(path, offset, nbytes, reason, kind)

    def report(self, actions: tuple[str, ...] = ()) -> LogReport:
        return LogReport(self.directory, tuple(self.reports), self.damage, self.next_seq, actions)


#####################################################################
# Entry points
#####################################################################


def _storage_errors(action: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Turn an ``OSError`` (a segment that cannot be read, truncated or deleted) into
    :class:`StorageFailure`, whose message says what was being done."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except OSError as exc:
                raise StorageFailure(f"could not {action}: {exc}") from exc

        return wrapper

    return decorate


def read_log(
    data_dir: Path, from_seq: int = 1, *, fs: FileSystem | None = None
) -> Iterator[tuple[int, bytes]]:
    """Yield ``(seq, payload)`` for every record with ``seq >= from_seq``, in order.

    Read-only: a torn tail in the last segment ends the iteration quietly (``open_wal`` cuts it
    off through :func:`recover_log`). Segments entirely before ``from_seq`` are skipped unread.

    Args:
        data_dir: the server's data directory.
        from_seq: the first seq wanted, e.g. a snapshot's ``start_seq``.

    Raises:
        LogCorrupted: damage other than a torn tail in the last segment, or the log starts
            after ``from_seq`` (records the caller needs are missing).
        StorageFailure: a segment cannot be read (as do the other entry points).

    Runtime complexity: O(bytes of the segments read); memory O(largest record).
    """
    try:
        walk = _Walk(Path(data_dir), fs or REAL_FS, from_seq, strict_start=True)
        for record in walk.records():
            if record.seq >= from_seq:
                yield record.seq, record.payload
    except OSError as exc:
        raise StorageFailure(f"could not read the write-ahead log: {exc}") from exc
    if walk.damage is not None and walk.damage.kind == "corruption":
        raise LogCorrupted(walk.damage)


@_storage_errors("check the write-ahead log")
def check_log(data_dir: Path, *, fs: FileSystem | None = None) -> LogReport:
    """Walk the whole log and report what is there and the first damage; changes nothing.

    Runtime complexity: O(total log bytes).
    """
    walk = _Walk(Path(data_dir), fs or REAL_FS)
    for _ in walk.records():
        pass
    return walk.report()


@_storage_errors("recover the write-ahead log")
def recover_log(data_dir: Path, *, fs: FileSystem | None = None) -> LogReport:
    """Make the log appendable after a crash: cut a torn tail off the last segment.

    The cut is logged (logger ``pointspace.wal``) and described in the report's ``actions``.

    Raises:
        LogCorrupted: damage a crash cannot explain; nothing was changed.
    """
    fs = fs or REAL_FS
    walk = _Walk(Path(data_dir), fs)
    for _ in walk.records():
        pass
    damage = walk.damage
    if damage is None:
        return walk.report()
    if damage.kind != "torn-tail":
        raise LogCorrupted(damage)
    fs.truncate(damage.path, damage.offset)
    action = (
        f"cut a torn tail off {damage.path.name}: truncated at byte {damage.offset}, "
        f"dropping {damage.nbytes} byte(s) ({damage.reason})"
    )
    logger.warning("%s", action)
    return walk.report((action,))


@_storage_errors("repair the write-ahead log")
def repair_log(data_dir: Path, *, fs: FileSystem | None = None) -> LogReport:
    """Truncate the log at its first damage and delete every later segment.

    This drops records: run it only after ``check_log`` shows what is damaged. A segment
    damaged at byte 0 is deleted rather than left empty under a name that no longer fits.
    Every step is logged (logger ``pointspace.wal``) and listed in the report's ``actions``.

    Runtime complexity: O(total log bytes).

    Raises:
        DataDirectoryInUse: a server runs on ``data_dir`` (it has the segments open).
        InvalidInput: ``data_dir`` does not exist.
    """
    if not Path(data_dir).is_dir():
        raise InvalidInput(f"no data directory at {str(data_dir)!r}", "data_dir")
    with DataDirectoryLock(Path(data_dir)):
        return _repair_locked(Path(data_dir), fs or REAL_FS)


def _repair_locked(data_dir: Path, fs: FileSystem) -> LogReport:
    walk = _Walk(data_dir, fs)
    for _ in walk.records():
        pass
    damage = walk.damage
    if damage is None:
        return walk.report(("nothing to repair",))
    actions = []
    if damage.offset == 0:
        size = fs.size(damage.path)
        fs.remove(damage.path)
        actions.append(f"deleted {damage.path.name} ({size} byte(s)): {damage.reason}")
    else:
        fs.truncate(damage.path, damage.offset)
        actions.append(
            f"truncated {damage.path.name} at byte {damage.offset}, dropping "
            f"{damage.nbytes} byte(s): {damage.reason}"
        )
    later = [(s, p) for s, p in walk.all_segments if p.name > damage.path.name]
    for first_seq, path in later:
        size = fs.size(path)
        fs.remove(path)
        actions.append(f"deleted {path.name} ({size} byte(s), records from seq {first_seq})")
    if actions:
        fs.fsync_dir(walk.directory)
    for action in actions:
        logger.warning("log repair: %s", action)
    report = walk.report(tuple(actions))
    if damage.offset == 0:  # the damaged segment is gone
        report = replace(
            report, segments=tuple(r for r in report.segments if r.path != damage.path)
        )
    return report
