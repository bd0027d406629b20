"""Time-bucketed counters: the reference layout of a user's counters, and global counters.

The engine keeps users' counters packed per partition (``engine/partition_counters.pyx``),
whose rows are the leaves described here and which hands any uncommon series or activity to
the classes here (late writes, totals past int64, retention); :class:`UserCounters` is the
layout that store is tested against, and its ``to_plain`` form is what snapshots hold.
:class:`GlobalCounter` (PSD's ``readcount``) is used as is.

Theory of operation
-------------------
Two layouts of one integer time series live here and in ``engine/prefix_series.py``:

* :class:`~engine.prefix_series.PrefixSeries` -- the seconds that have writes and the running
  total through each, as two packed int64 arrays. A range sum is two binary searches; a write
  in time order is two appends (16 B per distinct second). User counters and global counters
  use it (see that module's theory of operation, and ``bench/bench_ingest.py``).
* :class:`CounterSeries` -- the series kept at six UTC resolutions (year .. second, see
  ``engine/timebuckets.py``) in one dict ``cells: {bucket * 8 + level: value}``; a write adds
  to the six cells containing ``ts``. statshub's roll-ups and Density keep it: they read
  single buckets (a period's value, a gauge's last period) as well as sums, which cells
  answer with one lookup. It was the user counters' layout until issue 17 measured the
  running-total layout side by side (bench/bench_ingest.py: sparse 98k -> 153k events/s on
  the state alone, dense 191k -> 563k) and it stays the reference the new layout's property
  tests are held to (tests/engine/test_prefix_series.py).

:class:`CounterSeries` reads never walk seconds. ``before(t)``, the sum of everything strictly
before second ``t``, is the sum of whole buckets that precede ``t`` at each level: the years
before its year, then the months of its year before its month, ... then the seconds of its
minute before it. At each level the buckets-before lie inside one parent bucket, so the sum is
either those children or "the parent minus the children from ``t`` on", whichever touches
fewer cells: at most 6 + 15 + 12 + 30 + 30 lookups below the year level. A range sum is
``before(t2 + 1) - before(t1)``, and a breakdown into N periods costs N + 1 ``before`` calls.
Before the first write or after the last one, ``before`` answers from ``total`` without a
lookup, so old and future boundaries cost nothing. This is PSD's "pay on write so reads are
cheap" layout with the prefix formulation and integer cells instead of string-keyed Redis
hashes (``bench/bench_counters.py``).

Per user (:class:`UserCounters`) there is one series per (metric, activity type), and, once a
metric has a second type, one more holding their sum, written alongside, so that a read over
all types searches one series. Activities (PSD's ``aid``) are kept
apart, as ``(second, value)`` points per (metric, aid), with their total (see :class:`Activity`),
for two reads only they need:

* the diff-mode write (PSD's default): "what has this activity already recorded in
  [ts1, ts2]" decides the delta to add;
* ``_atids``: one activity-type id per distinct activity that contributed to a range. An index
  ``{month: {aid: atid}}`` per metric finds the candidates without scanning every activity;
  only the two partial months at the edges of a range look at points.

An activity's type is the one of its first write (PSD keys by both; a client that changes an
activity's type later is not supported and gets the first type in ``_atids``).

Invariants (``_check``): a :class:`CounterSeries`' every non-year cell equals the sum of its
children and its year cells sum to ``total``; a user's all-types series holds the sum of its
per-type series; every activity point is in the ``aid_months`` index.

Values are Python ints: sums never overflow. Nothing here imports trio or reads the clock.
"""

from __future__ import annotations

from array import array
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.prefix_series import PrefixSeries, absorb_extent, new_column, sums_between
from engine.timebuckets import (
    DAY,
    HOUR,
    MINUTE,
    MONTH,
    SECOND,
    YEAR,
    bucket_of,
    bucket_start,
    children_range,
    month_of_day,
    month_start_day,
)
from engine.timebuckets import _month_of_day_cache as _MONTHS

#: Write modes. ``ADD`` adds the value at ts. ``DIFF`` is PSD's diff-add: the value is the
#: activity's running total as of ts; what the activity already has in [ts1, ts] is subtracted.
ADD = 0
DIFF = 1
MODE_NAMES = {"add": ADD, "diff": DIFF}

#: An event as the actors see it: (metric, atid, aid or None, ts, value, ts1, mode).
#: A tuple, not a dataclass: building one object per event costs more than the six increments.
CounterEvent = tuple[str, int, "int | None", int, int, int, int]


############################################################################################
# One series
############################################################################################


class CounterSeries:
    """One integer time series at six UTC resolutions.

    >>> s = CounterSeries()
    >>> s.add(1458061005, 10); s.add(1458061008, 11); s.add(1458061011, 1)
    >>> s.range_sum(1458061005, 1458061010)
    21
    >>> s.range_sum(0, 2**37)
    22
    """

    __slots__ = ("cells", "total", "first_ts", "last_ts", "horizons")

    def __init__(self) -> None:
        self.cells: defaultdict[int, int] = defaultdict(int)
        self.total = 0
        self.first_ts = -1  # -1: empty series
        self.last_ts = -1
        #: After retention dropped old fine buckets: per level (second .. month), the first
        #: second whose bucket is still kept at that level. None: nothing ever expired.
        self.horizons: list[int] | None = None

    def add(self, ts: int, delta: int) -> None:
        """Add ``delta`` at second ``ts``.

        Runtime complexity: O(1) -- six cell increments. ``cells`` is a defaultdict so that an
        increment is one subscript instead of a ``get`` call plus a store (about 20% faster,
        see ``bench/bench_counters.py``); reads use ``cells.get`` and never insert.
        """
        cells = self.cells
        day = ts // 86400
        month = _MONTHS.get(day)
        if month is None:
            month = month_of_day(day)
        cells[ts * 8] += delta
        cells[(ts // 60) * 8 + 1] += delta
        cells[(ts // 3600) * 8 + 2] += delta
        cells[day * 8 + 3] += delta
        cells[month * 8 + 4] += delta
        cells[(month // 12) * 8 + 5] += delta
        self.total += delta
        if ts > self.last_ts:
            self.last_ts = ts
            if self.first_ts < 0:
                self.first_ts = ts
        elif ts < self.first_ts:
            self.first_ts = ts

    def period_sums(self, bounds: Sequence[int]) -> list[int]:
        """Sums over consecutive periods [bounds[i], bounds[i+1]) -- one ``before`` per bound.

        >>> series = CounterSeries()
        >>> series.add(10, 1); series.add(11, 2); series.add(25, 4)
        >>> series.period_sums([10, 20, 30])
        [3, 4]
        """
        return sums_between(self.before, bounds)

    def before(self, t: int) -> int:
        """The sum of every write at a second strictly before ``t``.

        Level by level, the children of ``t``'s bucket that precede it are summed from the
        parent's start, or as the parent's cell minus the children from ``t`` on, whichever
        touches fewer cells. Fast path: a missing parent cell means nothing was ever written in
        it, so nothing below it either (``add`` writes all six levels together; retention drops
        children, never a parent alone) and the walk stops there: a series written every few
        minutes skips the second level of most minutes, every hour the minute level too.

        Runtime complexity: O(years spanned / 2) + at most 98 dict lookups; O(1) outside the
        series' first..last write.
        """
        if t <= self.first_ts or self.first_ts < 0:
            return 0
        if t > self.last_ts:
            return self.total
        if self.horizons is not None:
            return self._before_with_horizons(t, self.horizons)
        get = self.cells.get
        day = t // 86400
        month = _MONTHS.get(day)
        if month is None:
            month = month_of_day(day)
        year = month // 12
        # Years before `year`: from the first year on, or total minus this year and later ones.
        first_year = month_of_day(self.first_ts // 86400) // 12
        last_year = month_of_day(self.last_ts // 86400) // 12
        if year - first_year <= last_year - year + 1:
            acc = sum(filter(None, map(get, range(first_year * 8 + YEAR, year * 8 + YEAR, 8))))
        else:
            acc = self.total - sum(
                filter(None, map(get, range(year * 8 + YEAR, (last_year + 1) * 8 + YEAR, 8)))
            )
        return acc + self._within(t, YEAR)

    def _within(self, t: int, top: int) -> int:
        """The sum of the writes in ``t``'s bucket at level ``top`` that come before ``t``.

        Level by level from ``top`` down, the children of ``t``'s bucket that precede it are
        summed from the parent's start, or as the parent's cell minus the children from ``t``
        on, whichever touches fewer cells. A missing parent cell means nothing was ever
        written in it, so nothing below it either (``add`` writes all six levels together;
        retention drops children, never a parent alone) and the walk stops there: a series
        written every few minutes skips the second level of most minutes, every hour the
        minute level too. Without retention only (``horizons`` is None).

        Runtime complexity: at most 6 + 15 + 12 + 30 + 30 dict lookups (from the year level).
        """
        get = self.cells.get
        acc = 0
        day = t // 86400
        if top >= MONTH:
            month = _MONTHS.get(day)
            if month is None:
                month = month_of_day(day)
            if top == YEAR:
                year = month // 12
                parent = get(year * 8 + YEAR)
                if parent is None:
                    return 0
                first = year * 12
                if month - first <= first + 12 - month:
                    acc = sum(filter(None, map(get, range(first * 8 + MONTH, month * 8 + MONTH, 8))))
                else:
                    acc = parent - sum(
                        filter(None, map(get, range(month * 8 + MONTH, (first + 12) * 8 + MONTH, 8)))
                    )
            # The month's days are looked up only when the month has a cell.
            parent = get(month * 8 + MONTH)
            if parent is None:
                return acc
            first, end = month_start_day(month), month_start_day(month + 1)
            if day - first <= end - day:
                acc += sum(filter(None, map(get, range(first * 8 + DAY, day * 8 + DAY, 8))))
            else:
                acc += parent - sum(filter(None, map(get, range(day * 8 + DAY, end * 8 + DAY, 8))))
        hour = t // 3600
        minute = t // 60
        # (parent cell key, first child, t's child, one past the last child, child level).
        steps = (
            (day * 8 + DAY, day * 24, hour, day * 24 + 24, HOUR),
            (hour * 8 + HOUR, hour * 60, minute, hour * 60 + 60, MINUTE),
            (minute * 8 + MINUTE, minute * 60, t, minute * 60 + 60, SECOND),
        )
        for parent_key, first, child, end, level in steps if top >= DAY else steps[DAY - top:]:
            parent = get(parent_key)
            if parent is None:
                return acc
            if child - first <= end - child:
                acc += sum(filter(None, map(get, range(first * 8 + level, child * 8 + level, 8))))
            else:
                acc += parent - sum(
                    filter(None, map(get, range(child * 8 + level, end * 8 + level, 8)))
                )
        return acc

    def _before_with_horizons(self, t: int, horizons: list[int]) -> int:
        """``before`` once retention dropped fine buckets: where the buckets that would split
        ``t``'s parent are gone, the answer is rounded down to that parent's start (the finest
        resolution still kept there). Parents partly expired are split from their later end."""
        get = self.cells.get
        day = t // 86400
        month = month_of_day(day)
        year = month // 12
        acc = self.total - sum(filter(None, map(get, range(
            year * 8 + YEAR, (month_of_day(self.last_ts // 86400) // 12 + 1) * 8 + YEAR, 8))))
        for parent_level, parent, child in (
            (YEAR, year, month), (MONTH, month, day), (DAY, day, t // 3600),
            (HOUR, t // 3600, t // 60), (MINUTE, t // 60, t),
        ):
            horizon = horizons[parent_level - 1]
            if t < horizon:
                return acc  # the children that would place t are gone: round down
            acc += _children_before(get, parent_level, parent, child, complement=horizon > 0)
        return acc

    def expire(self, cutoffs: Sequence[int]) -> int:
        """Drop buckets that end at or before ``cutoffs[level]`` (second .. month; 0 keeps the
        level whole). Returns how many cells were removed.

        Sums over kept resolutions stay exact; a range edge inside a dropped stretch rounds
        down to the finest resolution still kept there.

        Runtime complexity: O(cells).
        """
        horizons = list(self.horizons or (0, 0, 0, 0, 0))
        limits = []
        for level in range(SECOND, YEAR):
            cutoff = cutoffs[level]
            # Buckets before the one containing the cutoff end at or before it.
            limit = bucket_of(level, cutoff) if cutoff > 0 else 0
            limits.append(limit)
            if cutoff > 0:
                horizons[level] = max(horizons[level], bucket_start(level, limit))
        if not any(limits):
            return 0
        doomed = [k for k in self.cells if k % 8 < YEAR and k // 8 < limits[k % 8]]
        for key in doomed:
            del self.cells[key]
        self.horizons = horizons
        return len(doomed)

    def range_sum(self, t1: int, t2: int) -> int:
        """The sum over the inclusive range of seconds [t1, t2] (0 when t1 > t2).

        ``before(t2 + 1) - before(t1)``, but where both ends lie in one bucket (a minute, an
        hour, a day, a month or a year) the two walks above it would add the same cells and
        cancel: only the walks inside that bucket are done (``_within``), which is about
        half the lookups for windows of up to a month (bench/bench_range_windows.py).

        Runtime complexity: two :meth:`before` walks at most.
        """
        if t1 > t2:
            return 0
        end = t2 + 1
        first_ts = self.first_ts
        if first_ts < 0 or end <= first_ts or t1 > self.last_ts:
            return 0
        if self.horizons is not None or t1 <= first_ts or end > self.last_ts:
            return self.before(end) - self.before(t1)  # the walks' shortcuts answer one end
        if t1 // 60 == end // 60:
            top = MINUTE
        elif t1 // 3600 == end // 3600:
            top = HOUR
        elif t1 // 86400 == end // 86400:
            top = DAY
        else:
            month1 = month_of_day(t1 // 86400)
            month2 = month_of_day(end // 86400)
            if month1 == month2:
                top = MONTH
            elif month1 // 12 == month2 // 12:
                top = YEAR
            else:
                return self.before(end) - self.before(t1)
        return self._within(end, top) - self._within(t1, top)

    def cell(self, level: int, bucket: int) -> int:
        """The stored value of one bucket (0 when never written)."""
        return self.cells.get(bucket * 8 + level, 0)

    # Snapshot form: plain lists, msgpack-able.
    def to_plain(self) -> list[Any]:
        return [self.first_ts, self.last_ts, self.total, list(self.cells.items()), self.horizons]

    @classmethod
    def from_plain(cls, plain: Sequence[Any]) -> CounterSeries:
        series = cls()
        series.first_ts, series.last_ts, series.total = plain[0], plain[1], plain[2]
        series.cells = defaultdict(int, plain[3])
        if len(plain) > 4 and plain[4] is not None:
            series.horizons = list(plain[4])
        return series

    @classmethod
    def merged(cls, parts: Iterable[CounterSeries]) -> CounterSeries:
        """A new series holding the cell-wise sum of ``parts``.

        Runtime complexity: O(total cells).
        """
        out = cls()
        cells = out.cells
        for part in parts:
            for key, value in part.cells.items():
                cells[key] += value
            absorb_extent(out, part)
        return out

    def _check(self) -> None:
        """Assert that every cell equals the sum of its children and years sum to total."""
        cells = self.cells
        try:
            years = sum(v for k, v in cells.items() if k % 8 == YEAR)
            assert years == self.total, f"years sum {years} != total {self.total}"
            sums: dict[int, int] = {}
            for key, value in cells.items():
                level, bucket = key % 8, key // 8
                if level == YEAR:
                    continue
                parent = _parent_of(level, bucket)
                pkey = parent * 8 + level + 1
                # ``before`` stops at a missing parent: a child never exists without one.
                assert pkey in cells, f"cell {key} has no parent cell {pkey}"
                sums[pkey] = sums.get(pkey, 0) + value
            horizons = self.horizons or [0, 0, 0, 0, 0]
            for key, value in cells.items():
                level = key % 8
                if level == SECOND or bucket_start(level, key // 8) < horizons[level - 1]:
                    continue  # no children to compare, or some were dropped by retention
                assert sums.get(key, 0) == value, f"cell {key} = {value} != children {sums.get(key, 0)}"
            seconds = [k // 8 for k in cells if k % 8 == SECOND]
            if seconds:
                assert min(seconds) >= self.first_ts and max(seconds) <= self.last_ts
        except AssertionError:
            print("cells", sorted(cells.items()), "total", self.total, self.first_ts, self.last_ts)
            raise


def _parent_of(level: int, bucket: int) -> int:
    if level == SECOND or level == MINUTE:
        return bucket // 60
    if level == HOUR:
        return bucket // 24
    if level == DAY:
        return month_of_day(bucket)
    return bucket // 12


def _children_before(get: Any, parent_level: int, parent: int, child: int, complement: bool = False) -> int:
    """Sum of the children of ``parent`` that come before ``child``, touching the fewer cells.

    Keys of one level are ``bucket * 8 + level``, so a run of buckets is ``range(.., .., 8)``
    and ``sum(filter(None, map(get, keys)))`` walks it in C: ~10x faster than a Python loop
    (bench/bench_counters.py).
    """
    level = parent_level - 1
    if parent_level == MONTH:
        first = month_start_day(parent)
        last = month_start_day(parent + 1) - 1
    else:
        first, last = children_range(parent_level, parent)
    if not complement and child - first <= last - child + 1:
        return sum(filter(None, map(get, range(first * 8 + level, child * 8 + level, 8))))
    return get(parent * 8 + parent_level, 0) - sum(
        filter(None, map(get, range(child * 8 + level, (last + 1) * 8 + level, 8)))
    )


############################################################################################
# Activities (PSD aid): points for diff-mode writes and _atids
############################################################################################


#: What an unfiltered read of a metric with no series yet sees (never written to).
_EMPTY_SERIES = PrefixSeries()


#: Pairs an activity searches for a write's second before appending a pair for it (see
#: ``Activity.add_to_recent``).
RECENT_PAIRS = 8


class Activity:
    """One activity instance: its type, the deltas written for it by second, and their total.

    PSD's diff-mode write (its default) asks "what has this activity already recorded in
    [ts1, ts]". A live activity's reports cover all of it (ts1 its start, ts its latest
    second), so ``range_sum`` answers a range covering every point from ``total`` in O(1);
    summing the points instead cost O(points) per write (357 us at 10,000 points, an activity
    reporting every second for three hours). Other ranges still sum the points in [t1, t2].

    The points are ``(second, delta)`` pairs, interleaved in one int64 array in write order:
    a write at the latest pair's second (or, out of order, at one of the ``RECENT_PAIRS``
    latest) adds to it, any other appends a pair (a second revisited later may then have two
    pairs; every read sums pairs, so that changes nothing but size, and a snapshot's reload
    merges them).
    An array costs 16 B per point and one small object; a dict of points cost ~190 B per
    activity more at 2-3 points each (bench/bench_counters_memory.py), and its first insert
    was the most expensive step of a sparse feed's write (bench/bench_ingest.py). A delta at
    one second that leaves int64 turns the array into a list of Python ints (``_widen``).
    """

    __slots__ = ("atid", "points", "total", "first", "last", "indexed_month")

    def __init__(self, atid: int) -> None:
        self.atid = atid
        #: [ts, delta, ts, delta, ...]: an array("q"), or a list once a delta left int64.
        self.points: Any = new_column()
        self.total = 0
        #: The first and last second with a point (-1: none yet).
        self.first = -1
        self.last = -1
        #: A month whose ``aid_months`` index is known to hold this activity (-1: none known),
        #: so that a write in the same month as the last one skips two index lookups (most
        #: writes of an activity fall in one month). Retention forgets it.
        self.indexed_month = -1

    def add(self, ts: int, delta: int) -> None:
        """Add ``delta`` at second ``ts`` (inlined in ``UserCounters.apply``)."""
        points = self.points
        if points and points[-2] == ts:
            try:
                points[-1] += delta
            except OverflowError:
                self._widen()
                self.points[-1] += delta
        elif ts > self.last or not self.add_to_recent(ts, delta):
            points.append(ts)
            try:
                points.append(delta)
            except OverflowError:  # a diff-mode delta may leave int64
                points.pop()
                self._widen()
                self.points += (ts, delta)
        self.total += delta
        if ts > self.last:
            self.last = ts
            if self.first < 0:
                self.first = ts
        elif ts < self.first:
            self.first = ts

    def add_to_recent(self, ts: int, delta: int) -> bool:
        """Add ``delta`` to a pair at second ``ts`` among the ``RECENT_PAIRS`` latest, if one
        is there (a write revisiting a recent second, as two clients reporting alternately
        do, then grows nothing); False when none is."""
        points = self.points
        for i in range(len(points) - 4, max(-2, len(points) - 2 * RECENT_PAIRS - 2), -2):
            if points[i] == ts:
                try:
                    points[i + 1] += delta
                except OverflowError:
                    self._widen()
                    self.points[i + 1] += delta
                return True
        return False

    def _widen(self) -> None:
        self.points = list(self.points)

    def range_sum(self, t1: int, t2: int) -> int:
        """The sum of the points in [t1, t2]: ``total`` when the range covers them all."""
        if t1 <= self.first and t2 >= self.last:
            return self.total
        if t2 < self.first or t1 > self.last:
            return 0
        points = self.points
        return sum(v for ts, v in zip(points[0::2], points[1::2], strict=True) if t1 <= ts <= t2)

    def touches(self, t1: int, t2: int) -> bool:
        """Whether a point lies in [t1, t2]."""
        if t2 < self.first or t1 > self.last or not self.points:
            return False
        if t1 <= self.first or t2 >= self.last:
            return True  # the first or the last point is inside
        return any(t1 <= ts <= t2 for ts in self.points[0::2])

    def seconds(self) -> list[int]:
        """The seconds with a point (a second written out of order may repeat)."""
        return list(self.points[0::2])

    def expire(self, cutoff: int) -> int:
        """Drop the points before second ``cutoff``; returns how many seconds went."""
        if self.first >= cutoff or self.first < 0:
            return 0
        points = self.points
        kept = new_column() if type(points) is array else []
        doomed: set[int] = set()
        for ts, value in zip(points[0::2], points[1::2], strict=True):
            if ts < cutoff:
                doomed.add(ts)
                self.total -= value
            else:
                kept.append(ts)
                kept.append(value)
        self.points = kept
        if kept:
            self.first = min(kept[0::2])
        else:
            self.first = self.last = -1
        return len(doomed)

    def pairs(self) -> list[tuple[int, int]]:
        """``(second, value)`` pairs, one per second, in first-write order (snapshots)."""
        points = self.points
        merged: dict[int, int] = {}
        for ts, value in zip(points[0::2], points[1::2], strict=True):
            merged[ts] = merged.get(ts, 0) + value
        return list(merged.items())

    @classmethod
    def from_pairs(cls, atid: int, pairs: Iterable[Sequence[int]]) -> Activity:
        """An activity holding ``pairs`` (``(second, value)`` with distinct seconds)."""
        activity = cls(atid)
        for ts, value in pairs:
            activity.add(ts, value)
        return activity


class MetricCounters:
    """Everything one user has for one metric: a series per activity type, and activities."""

    __slots__ = ("by_atid", "all_types", "activities", "aid_months")

    def __init__(self) -> None:
        self.by_atid: dict[int, PrefixSeries] = {}
        #: The sum over every activity type, kept only once a second type appears (until then
        #: the one series is the total): an unfiltered read searches one series, not one per
        #: type.
        self.all_types: PrefixSeries | None = None
        self.activities: dict[int, Activity] = {}
        self.aid_months: dict[int, dict[int, int]] = {}  # month -> {aid: atid}, first-seen order

    def new_series(self, atid: int) -> PrefixSeries:
        """Create the series of a new activity type (and the all-types total at the second)."""
        if len(self.by_atid) == 1:
            self.all_types = PrefixSeries.merged(self.by_atid.values())
        series = PrefixSeries()
        for sibling in self.by_atid.values():
            # After a retention sweep, a new type's series rounds as its siblings and the
            # all-types series do, so reads filtered by type and unfiltered agree.
            if sibling.horizons is not None:
                series.horizons = list(sibling.horizons)
            break
        self.by_atid[atid] = series
        return series

    def unfiltered(self) -> PrefixSeries:
        """The series summing every activity type (the only one, or the kept total)."""
        if self.all_types is not None:
            return self.all_types
        for series in self.by_atid.values():
            return series
        return _EMPTY_SERIES

    def expire(self, cutoffs: Sequence[int]) -> int:
        """Retention: roll old fine buckets up (``PrefixSeries.expire``) and drop activity points
        older than the second-level cutoff (an activity with none left is forgotten)."""
        removed = sum(series.expire(cutoffs) for series in self.by_atid.values())
        if self.all_types is not None:
            self.all_types.expire(cutoffs)
        cutoff = cutoffs[SECOND]
        if cutoff > 0:
            for activity in self.activities.values():
                activity.indexed_month = -1  # the index below may lose it
            for aid, activity in list(self.activities.items()):
                removed += activity.expire(cutoff)
                if not activity.points:
                    del self.activities[aid]
            for month, index in list(self.aid_months.items()):
                for aid in list(index):
                    activity = self.activities.get(aid)
                    if activity is None or not any(
                        month_of_day(ts // 86400) == month for ts in activity.seconds()
                    ):
                        del index[aid]
                if not index:
                    del self.aid_months[month]
        return removed

    def range_sum(self, t1: int, t2: int, atid: int | None = None, aid: int | None = None) -> int:
        if aid is not None:
            activity = self.activities.get(aid)
            if activity is None or (atid is not None and activity.atid != atid):
                return 0
            return activity.range_sum(t1, t2)
        if atid is not None:
            series = self.by_atid.get(atid)
            return 0 if series is None else series.range_sum(t1, t2)
        return self.unfiltered().range_sum(t1, t2)

    def boundaries_sums(self, bounds: Sequence[int], atid: int | None = None) -> list[int]:
        """Sums over consecutive periods [bounds[i], bounds[i+1]) -- one ``before`` per bound."""
        if atid is not None:
            series = self.by_atid.get(atid)
        else:
            series = self.unfiltered() if self.by_atid else None
        return [0] * (len(bounds) - 1) if series is None else series.period_sums(bounds)

    def contributing(self, t1: int, t2: int, atid: int | None, into: dict[int, int]) -> None:
        """Add ``{aid: atid}`` for every activity with a write in [t1, t2] to ``into``."""
        if t1 > t2 or not self.aid_months:
            return
        months = self.aid_months
        activities = self.activities
        for month, whole in months_within(months, t1, t2):
            for aid, aid_atid in months[month].items():
                if aid in into or (atid is not None and aid_atid != atid):
                    continue
                if whole or activities[aid].touches(t1, t2):
                    into[aid] = aid_atid


def months_within(months: dict[int, Any], t1: int, t2: int) -> list[tuple[int, bool]]:
    """The months of an ``aid_months`` index that meet [t1, t2], in order, each with whether
    the range covers it whole (its activities then contributed without a look at their
    points). Walks the calendar months of the range or the index, whichever is shorter."""
    first_month = month_of_day(t1 // 86400)
    last_month = month_of_day(t2 // 86400)
    if last_month - first_month + 1 > len(months):
        candidates = sorted(m for m in months if first_month <= m <= last_month)
    else:
        candidates = [m for m in range(first_month, last_month + 1) if m in months]
    return [
        (month, month_start_day(month) * 86400 >= t1
         and month_start_day(month + 1) * 86400 - 1 <= t2)
        for month in candidates
    ]


############################################################################################
# What a user actor owns
############################################################################################


@dataclass(frozen=True, slots=True)
class CounterStatistics:
    metrics: int
    series: int
    cells: int
    activities: int


class UserCounters:
    """All counters of one user (PSD: one uid), across metrics, activity types and activities.

    >>> u = UserCounters()
    >>> u.apply([("steps", 2, 3, 1496539747, 10, 1496539746, DIFF)])
    >>> u.apply([("steps", 2, 3, 1496539747, 10, 1496539746, DIFF)])  # a replay changes nothing
    >>> u.range_sum("steps", 1496539746, 1496539747), u.atids(["steps"], 0, 2**33)
    (10, [2])
    """

    __slots__ = ("metrics", "applied_seq")

    def __init__(self) -> None:
        self.metrics: dict[str, MetricCounters] = {}
        #: The log sequence number of the last record applied here (see engine/engine.py).
        self.applied_seq = 0

    def apply(self, events: Iterable[CounterEvent]) -> None:
        """Apply validated events in order.

        This is the write hot path, so ``PrefixSeries.add`` (for a write after the series'
        last second) and ``Activity.add`` are inlined here, and the month is computed only
        for events with an activity (its index). ``_check`` verifies the result.

        Runtime complexity: O(1) per add event; a diff event also reads what its activity
        recorded in [ts1, ts]: O(1) when that covers every point (a live activity's reports),
        else O(points).
        """
        metrics = self.metrics
        months = _MONTHS
        for metric, atid, aid, ts, value, ts1, mode in events:
            state = metrics.get(metric)
            activity = None
            if aid is not None:
                if state is not None:
                    activity = state.activities.get(aid)
                if mode == DIFF:
                    value -= 0 if activity is None else activity.range_sum(ts1, ts)
                    if value == 0:
                        continue  # a replayed report: nothing new (and nothing created)
            if state is None:
                state = metrics[metric] = MetricCounters()
            if aid is not None and activity is None:
                activity = state.activities[aid] = Activity(atid)
            series = state.by_atid.get(atid)
            if series is None:
                series = state.new_series(atid)
            # PrefixSeries.add, inlined for a write after the series' last second (a live
            # feed's writes); any other goes through add.
            starts = series.starts
            if starts and ts > starts[-1] and (series.horizons is None or ts >= series.horizons[0]):
                try:
                    series.sums.append(series.sums[-1] + value)
                except OverflowError:
                    series._widen()
                    series.sums.append(series.sums[-1] + value)
                starts.append(ts)
                series.total += value
                series.last_ts = ts
            else:
                series.add(ts, value)
            every = state.all_types
            if every is not None:
                starts = every.starts
                if starts and ts > starts[-1] and (every.horizons is None or ts >= every.horizons[0]):
                    try:
                        every.sums.append(every.sums[-1] + value)
                    except OverflowError:
                        every._widen()
                        every.sums.append(every.sums[-1] + value)
                    starts.append(ts)
                    every.total += value
                    every.last_ts = ts
                else:
                    every.add(ts, value)
            if activity is not None:  # Activity.add, inlined
                day = ts // 86400
                month = months.get(day)
                if month is None:
                    month = month_of_day(day)
                points = activity.points
                if points and points[-2] == ts:
                    try:
                        points[-1] += value
                    except OverflowError:
                        activity._widen()
                        activity.points[-1] += value
                elif ts > activity.last or not activity.add_to_recent(ts, value):
                    points.append(ts)
                    try:
                        points.append(value)
                    except OverflowError:  # a diff-mode delta may leave int64
                        points.pop()
                        activity._widen()
                        activity.points += (ts, value)
                activity.total += value
                if ts > activity.last:
                    activity.last = ts
                    if activity.first < 0:
                        activity.first = ts
                elif ts < activity.first:
                    activity.first = ts
                if activity.indexed_month != month:
                    index = state.aid_months.get(month)
                    if index is None:
                        index = state.aid_months[month] = {}
                    if aid not in index:
                        index[aid] = activity.atid
                    activity.indexed_month = month

    def range_sum(
        self, metric: str, t1: int, t2: int, atid: int | None = None, aid: int | None = None
    ) -> int:
        """Sum of ``metric`` over [t1, t2], optionally for one activity type and/or activity."""
        state = self.metrics.get(metric)
        return 0 if state is None else state.range_sum(t1, t2, atid, aid)

    def breakdown(self, metric: str, bounds: Sequence[int], atid: int | None = None) -> list[int]:
        """Sums over the periods [bounds[i], bounds[i+1]) (see ``engine/periods.py``)."""
        state = self.metrics.get(metric)
        if state is None:
            return [0] * (len(bounds) - 1)
        return state.boundaries_sums(bounds, atid)

    def atids(self, metrics: Iterable[str], t1: int, t2: int, atid: int | None = None) -> list[int]:
        """PSD's ``_atids``: one activity type per distinct activity with a write in [t1, t2].

        Activities are de-duplicated across the given metrics (as PSD's mumt does).
        """
        found: dict[int, int] = {}
        for metric in metrics:
            state = self.metrics.get(metric)
            if state is not None:
                state.contributing(t1, t2, atid, found)
        return list(found.values())

    def expire(self, cutoffs: Sequence[int]) -> int:
        """Retention for every metric (see ``MetricCounters.expire``); returns items removed."""
        return sum(state.expire(cutoffs) for state in self.metrics.values())

    def statistics(self) -> CounterStatistics:
        series = [s for m in self.metrics.values() for s in m.by_atid.values()]
        return CounterStatistics(
            metrics=len(self.metrics),
            series=len(series),
            cells=sum(s.entries() for s in series),
            activities=sum(len(m.activities) for m in self.metrics.values()),
        )

    def to_plain(self) -> list[Any]:
        """A msgpack-able form for snapshots (Python ints may exceed 64 bits; the codec copes)."""
        out = []
        for name, state in self.metrics.items():
            out.append(
                [
                    name,
                    [[atid, s.to_plain()] for atid, s in state.by_atid.items()],
                    [[aid, a.atid, a.pairs()] for aid, a in state.activities.items()],
                    [[month, list(index.items())] for month, index in state.aid_months.items()],
                ]
            )
        return out

    @classmethod
    def from_plain(cls, plain: Sequence[Any]) -> UserCounters:
        user = cls()
        for name, series, activities, aid_months in plain:
            state = user.metrics[name] = MetricCounters()
            for atid, s in series:
                state.by_atid[atid] = PrefixSeries.from_plain(s)
            if len(state.by_atid) > 1:
                state.all_types = PrefixSeries.merged(state.by_atid.values())
            for aid, atid, points in activities:
                state.activities[aid] = Activity.from_pairs(atid, points)
            state.aid_months = {month: dict(index) for month, index in aid_months}
        return user

    def _check(self) -> None:
        for state in self.metrics.values():
            for series in state.by_atid.values():
                series._check()
            if state.all_types is not None:
                state.all_types._check()
                merged = PrefixSeries.merged(state.by_atid.values())
                every = PrefixSeries.merged([state.all_types, PrefixSeries()])  # rounded alike
                assert merged.deltas() == every.deltas(), "all-types != sum of types"
            for aid, activity in state.activities.items():
                stamps = activity.seconds()
                assert activity.total == sum(v for _, v in activity.pairs()), f"activity {aid}: total"
                if stamps:
                    assert (activity.first, activity.last) == (min(stamps), max(stamps))
                else:
                    assert (activity.first, activity.last) == (-1, -1)
                for ts in stamps:
                    assert aid in state.aid_months[month_of_day(ts // 86400)]


class GlobalCounter:
    """A counter not tied to a user (PSD's ``readcount``): one plain additive series."""

    __slots__ = ("series", "applied_seq")

    def __init__(self) -> None:
        self.series = PrefixSeries()
        self.applied_seq = 0

    def apply(self, events: Iterable[tuple[int, int]]) -> None:
        """Apply ``(ts, value)`` increments."""
        add = self.series.add
        for ts, value in events:
            add(ts, value)

    def range_sum(self, t1: int, t2: int) -> int:
        return self.series.range_sum(t1, t2)

    def breakdown(self, bounds: Sequence[int]) -> list[int]:
        """Sums over the periods [bounds[i], bounds[i+1]) (see ``engine/periods.py``)."""
        return self.series.period_sums(bounds)

    def expire(self, cutoffs: Sequence[int]) -> int:
        return self.series.expire(cutoffs)

    def to_plain(self) -> list[Any]:
        return self.series.to_plain()

    @classmethod
    def from_plain(cls, plain: Sequence[Any]) -> GlobalCounter:
        counter = cls()
        counter.series = PrefixSeries.from_plain(plain)
        return counter


__all__ = [
    "ADD",
    "DIFF",
    "DAY",
    "HOUR",
    "MINUTE",
    "SECOND",
    "Activity",
    "CounterSeries",
    "GlobalCounter",
    "MetricCounters",
    "UserCounters",
]
