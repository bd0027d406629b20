"""A counter series kept as running totals by second: the storage of user counters.

Theory of operation
-------------------
A :class:`PrefixSeries` holds one integer time series as two parallel packed arrays:
``starts`` (the seconds that have writes, increasing) and ``sums`` (the running total through
each of them). The sum of everything strictly before second ``t`` is then one binary search,
``sums[bisect_left(starts, t) - 1]``, and a range sum is two of them. A write at or after the
last second is an append or an add to the last total: O(1), and 16 bytes per distinct second.

This replaces six cells per write (year .. second, ``engine/counters.py``'s
:class:`~engine.counters.CounterSeries`, still used by statshub and Density): for a live feed,
where writes arrive in time order, the six dict increments per write, their keys and their
int objects (~500 B per stored event at 1M events, bench/bench_counters_memory.py) become two
array items, and a read walks no bucket tree at all (bench/bench_range_windows.py).

Writes before the last second (late data, clock skew) cannot append. They wait in ``late``,
a small dict that reads add in, and are merged into the arrays once ``LATE_MERGE`` have
gathered. A merge rebuilds only the entries from the earliest late write on and keeps the
running totals before it, so a feed lagging a few seconds behind another (two devices of one
user, clients of a global counter) rebuilds a few entries per merge, not the series; a late
write far in the past rebuilds the series once per ``LATE_MERGE`` (vectorised past
``_VECTORISE_FROM`` entries).

Retention (:meth:`expire`) keeps PSD's multi-resolution promise: per level (second .. month),
buckets that end before that level's cutoff are rolled up into their parent bucket's entry, so
the arrays then hold, oldest first, year entries, month entries, ..., then seconds: one tier
per level, each starting at that level's *horizon* (the first second still kept at that
resolution; retention requires finer levels to expire no later than coarser ones, so the
tiers nest). An entry's start is its bucket's start. A read at a second ``t`` inside a tier
rounds ``t`` down to that tier's bucket, "the finest resolution still kept there", exactly as
the bucket-tree layout did (``before`` below). A sweep rebuilds only the stretch whose tier
changes, from where a horizon moved up to the new second-level horizon: the entries before it
and the seconds after it keep their running totals (a roll-up keeps the stretch's sum), so an
hourly sweep rolls up an hour of seconds, and one that rolls nothing up costs a binary search.
Late writes stay held through a sweep; a read rounds their seconds as it rounds stored
entries.

Values: ``sums`` is an int64 array while every running total fits; a write that would leave
that range turns it into a list of Python ints (``OverflowError`` from the array is the test;
a later rebuild packs them again if they fit), so sums never overflow, as before. Nothing here
imports trio or reads the clock.

Invariants (``_check``): ``starts`` strictly increasing and as long as ``sums``; the last
running total plus the late writes equals ``total``; every start is its tier's bucket start;
every late write lies before the last start or before the second-level horizon.
"""

from __future__ import annotations

import sys
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from engine.timebuckets import (
    SECOND,
    YEAR,
    bucket_of,
    bucket_start,
    parent_bucket,
)

#: Late writes (before the last second written) held before they are merged into the arrays.
#: A merge rebuilds the entries from the earliest of them on; a read adds the held writes in
#: one Python loop, so this bounds both: 64 late writes cost a read ~2-3 us.
LATE_MERGE = 64

_INT64_SAFE = 2**62

#: Below this many entries a rebuild runs in Python: numpy's per-call costs (~20-50 us a
#: rebuild) exceed a small sort, and most series are small (sparse users).
_VECTORISE_FROM = 512  # a running total of values whose magnitudes sum below this fits int64

#: A new empty ``array("q")``: copying an empty template costs ~60 ns, the constructor ~300 ns
#: (it parses its typecode), and a series or an activity is created every few events of a
#: sparse feed.
new_column = array("q").__copy__


def floor_to(level: int, t: int) -> int:
    """The first second of ``t``'s bucket at ``level``."""
    return bucket_start(level, bucket_of(level, t))


class PrefixSeries:
    """One integer time series at one-second resolution, as running totals.

    >>> s = PrefixSeries()
    >>> s.add(1458061005, 10); s.add(1458061008, 11); s.add(1458061011, 1)
    >>> s.range_sum(1458061005, 1458061010)
    21
    >>> s.add(1458061006, 5)  # late: held, read and merged like any other write
    >>> s.range_sum(1458061006, 1458061010), s.range_sum(0, 2**37)
    (16, 27)
    """

    __slots__ = ("starts", "sums", "total", "first_ts", "last_ts", "horizons", "late")

    def __init__(self) -> None:
        self.starts = new_column()
        self.sums: Any = new_column()  # array("q"), or list[int] once a total left int64
        self.total = 0
        self.first_ts = -1  # -1: empty series
        self.last_ts = -1
        #: After retention: per level (second .. month), the first second still kept at that
        #: level's resolution (0: never expired). None: nothing ever expired.
        self.horizons: list[int] | None = None
        #: Writes before the last start, not yet merged: {second: delta}. None when empty.
        self.late: dict[int, int] | None = None

    ########################################################################################
    # Writing

    def add(self, ts: int, delta: int) -> None:
        """Add ``delta`` at second ``ts`` (inlined in ``UserCounters.apply``).

        Runtime complexity: O(1) at or after the last second written; before it, amortised
        O(entries from the earliest held late write on / ``LATE_MERGE``).
        """
        starts = self.starts
        if starts and ts <= starts[-1]:
            if ts == starts[-1] and (self.horizons is None or ts >= self.horizons[SECOND]):
                try:
                    self.sums[-1] += delta
                except OverflowError:
                    self._widen()
                    self.sums[-1] += delta
            else:
                self.add_late(ts, delta)
                return
        else:
            if self.horizons is not None and ts < self.horizons[SECOND]:
                self.add_late(ts, delta)
                return
            sums = self.sums
            running = sums[-1] + delta if starts else delta  # late writes are not in sums
            starts.append(ts)
            try:
                sums.append(running)
            except OverflowError:
                self._widen()
                self.sums.append(running)
        self.total += delta
        if ts > self.last_ts:
            self.last_ts = ts
            if self.first_ts < 0:
                self.first_ts = ts
        elif ts < self.first_ts:
            self.first_ts = ts

    def add_late(self, ts: int, delta: int) -> None:
        """Hold a write that cannot append (see the module docstring)."""
        late = self.late
        if late is None:
            late = self.late = {}
        late[ts] = late.get(ts, 0) + delta
        self.total += delta
        if ts > self.last_ts:
            self.last_ts = ts
            if self.first_ts < 0:
                self.first_ts = ts
        elif ts < self.first_ts or self.first_ts < 0:
            self.first_ts = ts
        if len(late) >= LATE_MERGE:
            self.merge_late()

    def merge_late(self) -> None:
        """Merge the held late writes into the arrays.

        Only the entries from the earliest late write on are rebuilt (in Python), and the
        running totals before it stay as they are: a feed lagging a few seconds behind
        another rebuilds a few entries, not the series. A tail of ``_VECTORISE_FROM`` entries
        or more is rebuilt whole, with numpy.
        """
        late = self.late
        self.late = None
        if not late:
            return
        horizons = self.horizons
        low = min(late)
        if horizons is not None:
            low = _round_down(low, horizons)
        starts, sums = self.starts, self.sums
        i = bisect_left(starts, low)
        if len(starts) - i >= _VECTORISE_FROM:
            self._rebuild_from(self._columns_if_large(), list(late), list(late.values()))
            return
        base = sums[i - 1] if i else 0
        tail = PrefixSeries()
        tail.horizons = horizons
        tail._rebuild(list(starts[i:]) + list(late),
                      _python_deltas(sums[i:], base) + list(late.values()))
        del starts[i:]
        del sums[i:]
        starts.extend(tail.starts)
        for running in tail.sums:
            try:
                self.sums.append(base + running)
            except OverflowError:
                self._widen()
                self.sums.append(base + running)

    def _widen(self) -> None:
        """Keep running totals as Python ints from now on (one left the int64 range)."""
        self.sums = list(self.sums)

    ########################################################################################
    # Reading

    def before(self, t: int) -> int:
        """The sum of every write at a second strictly before ``t``.

        After retention, ``t`` is first rounded down to its bucket at the finest level still
        kept there (see the module docstring).

        Runtime complexity: O(log entries) plus the held late writes; O(1) outside the
        series' first..last write.
        """
        if t <= self.first_ts or self.first_ts < 0:
            return 0
        if t > self.last_ts:
            return self.total
        horizons = self.horizons
        if horizons is not None:
            t = _round_down(t, horizons)
        starts = self.starts
        i = bisect_left(starts, t)
        acc = self.sums[i - 1] if i else 0
        late = self.late
        if late is not None:
            # A merge would place a late write at its tier's bucket start; as ``t`` is itself
            # a bucket start of its tier (tiers nest), that start is before ``t`` exactly when
            # the write's second is.
            for ts, delta in late.items():
                if ts < t:
                    acc += delta
        return acc

    def range_sum(self, t1: int, t2: int) -> int:
        """The sum over the inclusive range of seconds [t1, t2] (0 when t1 > t2)."""
        if t1 > t2:
            return 0
        return self.before(t2 + 1) - self.before(t1)

    def period_sums(self, bounds: Sequence[int]) -> list[int]:
        """Sums over consecutive periods [bounds[i], bounds[i+1]): one ``before`` per bound.

        >>> series = PrefixSeries()
        >>> series.add(10, 1); series.add(11, 2); series.add(25, 4)
        >>> series.period_sums([10, 20, 30])
        [3, 4]
        """
        return sums_between(self.before, bounds)

    def deltas(self) -> dict[int, int]:
        """``{start: sum written there}`` over stored and late writes, zeros left out (checks
        and tests: two series that hold the same writes compare equal)."""
        out: dict[int, int] = {}
        for start, delta in zip(*self._entries(), strict=True):
            out[start] = delta
        for ts, delta in (self.late or {}).items():
            out[ts] = out.get(ts, 0) + delta
        return {start: delta for start, delta in sorted(out.items()) if delta}

    def entries(self) -> int:
        """How many (second, running total) entries are stored (statistics)."""
        return len(self.starts) + (len(self.late) if self.late else 0)

    ########################################################################################
    # Retention

    def expire(self, cutoffs: Sequence[int]) -> int:
        """Roll buckets that end at or before ``cutoffs[level]`` (second .. month; 0 keeps the
        level whole) up into their parent's entry. Returns how many entries went.

        Sums over kept resolutions stay exact; a range edge inside a rolled-up stretch rounds
        down to the finest resolution still kept there.

        Runtime complexity: O(log entries + the entries whose tier changes), vectorised once
        they are ``_VECTORISE_FROM`` or more.
        """
        old = self.horizons or [0, 0, 0, 0, 0]
        horizons = list(old)
        for level in range(SECOND, YEAR):
            cutoff = cutoffs[level]
            if cutoff > 0:
                # Buckets before the one containing the cutoff end at or before it.
                horizons[level] = max(horizons[level], bucket_start(level, bucket_of(level, cutoff)))
        if horizons == old:
            return 0  # nothing new expired
        self.horizons = horizons
        # Only entries from where a horizon moved up to the new second-level horizon change
        # tier: those before keep theirs, those after are seconds still kept, and every
        # running total outside the stretch stays (a roll-up keeps the stretch's sum). Late
        # writes stay held: reads round them as they round stored entries.
        moved = min(before for before, now in zip(old, horizons, strict=True) if now > before)
        starts, sums = self.starts, self.sums
        k = bisect_left(starts, _round_down(moved, horizons))
        j = bisect_left(starts, horizons[SECOND])
        if j <= k:
            return 0
        if j - k >= _VECTORISE_FROM:
            k = 0  # a long stretch: rebuild everything before the horizon, vectorised
        base = sums[k - 1] if k else 0
        stretch = PrefixSeries()
        stretch.horizons = horizons
        if k == 0:
            stretch.starts = starts[:j]
            stretch.sums = sums[:j]
            stretch._rebuild_from(stretch._columns_if_large(), [], [])
        else:
            stretch._rebuild(list(starts[k:j]), _python_deltas(sums[k:j], base))
        rebuilt = [base + running for running in stretch.sums] if base else stretch.sums
        starts[k:j] = stretch.starts
        if type(sums) is array:
            try:
                sums[k:j] = rebuilt if type(rebuilt) is array else array("q", rebuilt)
            except OverflowError:
                self._widen()
                sums = self.sums
        if type(sums) is not array:
            sums[k:j] = list(rebuilt)
        return j - k - len(stretch.starts)

    ########################################################################################
    # Building

    def _entries(self) -> tuple[list[int], list[int]]:
        """The stored entries as (starts, deltas) lists (late writes not included)."""
        return list(self.starts), _python_deltas(self.sums, 0)

    def _columns_if_large(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``_columns`` where a vectorised rebuild pays (None: rebuild in Python)."""
        return self._columns() if len(self.starts) >= _VECTORISE_FROM else None

    def _columns(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The stored entries as int64 (starts, deltas) columns, or None where a delta may
        not fit int64 (a list of Python-int totals, or totals far apart)."""
        sums = self.sums
        if type(sums) is not array:
            return None
        starts = np.frombuffer(self.starts, dtype=np.int64).copy()
        totals = np.frombuffer(sums, dtype=np.int64).copy()
        if len(totals) and (max(int(totals.max()), 0) - min(int(totals.min()), 0)) >= 2**63:
            return None
        return starts, np.diff(totals, prepend=np.int64(0))

    def _rebuild_from(self, columns: tuple[np.ndarray, np.ndarray] | None,
                      starts: list[int], values: list[int]) -> None:
        """``_rebuild`` of ``columns`` (this series' own when None) plus (starts, values)
        pairs, vectorised where every value fits int64."""
        if columns is not None:
            try:
                extra_starts = np.array(starts, dtype=np.int64)
                extra_values = np.array(values, dtype=np.int64)
            except OverflowError:
                pass
            else:
                all_starts = np.concatenate((columns[0], extra_starts))
                all_values = np.concatenate((columns[1], extra_values))
                if np.abs(all_values.astype(np.float64)).sum() < _INT64_SAFE:
                    self._rebuild_columns(all_starts, all_values)
                    return
        if columns is not None:
            old_starts, old_values = columns[0].tolist(), columns[1].tolist()
        else:
            old_starts, old_values = self._entries()
        self._rebuild(old_starts + list(starts), old_values + list(values))

    def _rebuild_columns(self, starts: np.ndarray, values: np.ndarray) -> None:
        """``_rebuild`` for int64 columns whose absolute values sum below 2**62."""
        horizons = self.horizons
        if horizons is not None and len(starts):
            coarse = np.flatnonzero(starts < horizons[SECOND])
            if len(coarse):
                starts = starts.copy()
                starts[coarse] = [_round_down(int(s), horizons) for s in starts[coarse]]
        order = np.argsort(starts, kind="stable")
        starts, values = starts[order], values[order]
        if len(starts):
            firsts = np.concatenate(([0], np.flatnonzero(np.diff(starts)) + 1))
            keys = starts[firsts]
            totals = np.cumsum(np.add.reduceat(values, firsts))
        else:
            keys = totals = starts
        self.starts = _from_bytes(keys.astype(np.int64).tobytes())
        self.sums = _from_bytes(totals.astype(np.int64).tobytes())

    def _rebuild(self, starts: list[int], values: list[int]) -> None:
        """Store (start, delta) pairs, in any order and with repeats: rounded to their tier
        (after retention), sorted, summed per start, as running totals (Python ints)."""
        horizons = self.horizons
        if horizons is not None:
            starts = [_round_down(s, horizons) for s in starts]
        merged: dict[int, int] = {}
        for start, value in sorted(zip(starts, values, strict=True)):
            merged[start] = merged.get(start, 0) + value
        running: list[int] = []
        acc = 0
        for value in merged.values():
            acc += value
            running.append(acc)
        self.starts = array("q", merged)
        try:
            self.sums = array("q", running)
        except OverflowError:
            self.sums = running

    ########################################################################################
    # Snapshots and merging

    def to_plain(self) -> list[Any]:
        """A msgpack-able form: ``["p", first, last, total, starts, sums, horizons, late]``,
        ``starts`` and an int64 ``sums`` as little-endian int64 bytes (a list of ints once a
        total left int64)."""
        sums = self.sums
        return [
            "p",
            self.first_ts,
            self.last_ts,
            self.total,
            _to_bytes(self.starts),
            _to_bytes(sums) if type(sums) is array else list(sums),
            self.horizons,
            list(self.late.items()) if self.late else None,
        ]

    @classmethod
    def from_plain(cls, plain: Sequence[Any]) -> PrefixSeries:
        """Load :meth:`to_plain`'s form, or the six-cell form of snapshots written before
        (``CounterSeries.to_plain``: ``[first, last, total, cells, horizons]``)."""
        series = cls()
        if plain and plain[0] == "p":
            _, first, last, total, starts, sums, horizons, late = plain
            series.starts = _from_bytes(starts)
            series.sums = _from_bytes(sums) if isinstance(sums, bytes) else list(sums)
            series.horizons = None if horizons is None else list(horizons)
            series.late = dict(late) if late else None
        else:
            first, last, total, cells = plain[0], plain[1], plain[2], plain[3]
            horizons = plain[4] if len(plain) > 4 else None
            series.horizons = None if horizons is None else list(horizons)
            starts, values = _entries_of_cells(dict(cells))
            series._rebuild(starts, values)
        series.first_ts, series.last_ts, series.total = first, last, total
        return series

    @classmethod
    def merged(cls, parts: Iterable[PrefixSeries]) -> PrefixSeries:
        """A new series holding the sum of ``parts`` (a user's all-types series).

        Runtime complexity: O(total entries log total entries).
        """
        out = cls()
        parts = list(parts)
        for part in parts:
            absorb_extent(out, part)
        if len(parts) == 1:  # a user's second activity type: its first series, copied
            (part,) = parts
            out.starts = part.starts[:]  # a slice copies (the constructor costs 4x more)
            out.sums = part.sums[:]
            out.late = dict(part.late) if part.late else None
            return out
        late_starts = [ts for part in parts if part.late for ts in part.late]
        late_values = [v for part in parts if part.late for v in part.late.values()]
        columns = [part._columns() for part in parts] if sum(map(len, (
            part.starts for part in parts))) >= _VECTORISE_FROM else []
        if columns and all(c is not None for c in columns):
            joined = (np.concatenate([c[0] for c in columns]),  # type: ignore[index]
                      np.concatenate([c[1] for c in columns]))  # type: ignore[index]
            out._rebuild_from(joined, late_starts, late_values)
        else:
            starts: list[int] = []
            values: list[int] = []
            for part in parts:
                part_starts, part_values = part._entries()
                starts += part_starts
                values += part_values
            out._rebuild(starts + late_starts, values + late_values)
        return out

    def _check(self) -> None:
        """Assert the invariants of the module docstring."""
        starts, sums = self.starts, self.sums
        assert len(starts) == len(sums), "starts and sums differ in length"
        assert all(a < b for a, b in zip(starts, starts[1:], strict=False)), "starts not increasing"
        late = self.late or {}
        last = sums[-1] if len(sums) else 0
        assert last + sum(late.values()) == self.total, f"sums {last} + late != total {self.total}"
        if starts:
            assert all(ts < starts[-1] or (self.horizons and ts < self.horizons[SECOND])
                       for ts in late), "a late write could have been appended"
        if self.horizons is not None:
            for start in starts:
                assert _round_down(start, self.horizons) == start, f"entry {start} not at its tier's bucket start"
        seen = list(starts) + list(late)
        if seen:  # (writes that cancel out may leave none)
            assert self.first_ts >= 0
            assert min(seen) >= floor_to(YEAR, self.first_ts) and max(seen) <= self.last_ts


def sums_between(before: Callable[[int], int], bounds: Sequence[int]) -> list[int]:
    """Sums over consecutive periods [bounds[i], bounds[i+1]), from a series' ``before``."""
    marks = [before(b) for b in bounds]
    return [b - a for a, b in zip(marks, marks[1:], strict=False)]


def absorb_extent(out: Any, part: Any) -> None:
    """Add ``part``'s total, retention horizons and first/last seconds to ``out``, a series
    being merged from parts (either layout).

    Retention rolls up the same levels in every part (a user's series expire together); the
    merged series must round down where any part does, so it takes the later horizon.
    """
    out.total += part.total
    if part.horizons is not None:
        out.horizons = list(part.horizons) if out.horizons is None else [
            max(a, b) for a, b in zip(out.horizons, part.horizons, strict=True)]
    if part.first_ts >= 0:
        if out.first_ts < 0 or part.first_ts < out.first_ts:
            out.first_ts = part.first_ts
        out.last_ts = max(out.last_ts, part.last_ts)


def _round_down(t: int, horizons: Sequence[int]) -> int:
    """``t`` rounded down to its bucket at the finest level kept at ``t`` (see module)."""
    for level in range(SECOND, YEAR):
        if t >= horizons[level]:
            return floor_to(level, t)
    return floor_to(YEAR, t)


def _python_deltas(sums: Any, base: int) -> list[int]:
    """Differences of consecutive running totals, the first taken from ``base``."""
    out = []
    prev = base
    for value in sums:
        out.append(value - prev)
        prev = value
    return out


def _to_bytes(column: array[int]) -> bytes:
    """Little-endian int64 bytes of an ``array("q")``."""
    if sys.byteorder == "little":
        return column.tobytes()
    swapped = array("q", column)  # pragma: no cover - big-endian hosts
    swapped.byteswap()
    return swapped.tobytes()


def _from_bytes(data: bytes) -> array[int]:
    """The ``array("q")`` of little-endian int64 bytes."""
    if len(data) % 8:
        raise ValueError("a packed int64 column is not a whole number of 8-byte items")
    out = array("q")
    out.frombytes(data)
    if sys.byteorder != "little":  # pragma: no cover - big-endian hosts
        out.byteswap()
    return out


def _entries_of_cells(cells: dict[int, int]) -> tuple[list[int], list[int]]:
    """(start, delta) pairs holding what a six-cell series held: its seconds, and for each
    coarser cell whatever its kept children do not account for (retention dropped them)."""
    children: dict[int, int] = {}
    for key, value in cells.items():
        level, bucket = key % 8, key // 8
        if level == YEAR:
            continue
        pkey = parent_bucket(level, bucket) * 8 + level + 1
        children[pkey] = children.get(pkey, 0) + value
    starts, values = [], []
    for key, value in cells.items():
        level, bucket = key % 8, key // 8
        rest = value if level == SECOND else value - children.get(key, 0)
        if rest:
            starts.append(bucket_start(level, bucket))
            values.append(rest)
    return starts, values


__all__ = ["LATE_MERGE", "PrefixSeries", "absorb_extent", "floor_to", "new_column", "sums_between"]
