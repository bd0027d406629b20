"""UTC calendar buckets: which buckets a second belongs to, and how a range splits into buckets.

Theory of operation
-------------------
Counters are kept at six resolutions, as PSD keeps them: year, month, day, hour, minute and
second, all in UTC. A write adds its delta to the one bucket of each level that contains its
second (six increments), so that a read over any range can be answered from a handful of
coarse buckets instead of every second in it (PSD: "writes are expensive, reads are cheap").

Bucket numbers are plain integers counted from the epoch at each level (no strings):

    level   bucket number of second ``ts``          children per bucket
    SECOND  ts                                      -
    MINUTE  ts // 60                                60 seconds
    HOUR    ts // 3600                              60 minutes
    DAY     ts // 86400                             24 hours
    MONTH   (year - 1970) * 12 + (month - 1)        28..31 days
    YEAR    year - 1970                             12 months

A counter cell is addressed by one integer, ``bucket * 8 + level`` (see :func:`cell_key`), so a
series keeps all six levels in a single dict: one hash table per series instead of six.

:func:`decompose` splits an inclusive range [t1, t2] into *runs*: maximal aligned buckets,
consecutive buckets of one level merged into one run, and a run never crossing a boundary of
the next coarser level (so every run lies inside one parent bucket; counters use that to sum
a long run as "parent minus the few children outside it"). PSD's own decomposition is slightly
more conservative (it never takes a unit that ends exactly at t2); the sums are identical.

Invariants (checked by ``tests/engine/test_timebuckets.py``):
  * the runs of ``decompose(t1, t2)`` cover every second of [t1, t2] exactly once;
  * at most two runs per level, so at most 11 runs for any range.

Timestamps are Unix seconds in 1970-01-01 .. 9999-12-31 (``MIN_TS`` .. ``MAX_TS``).
"""

from __future__ import annotations

from typing import Final

SECOND: Final = 0
MINUTE: Final = 1
HOUR: Final = 2
DAY: Final = 3
MONTH: Final = 4
YEAR: Final = 5

LEVEL_NAMES: Final = ("second", "minute", "hour", "day", "month", "year")
LEVEL_BY_NAME: Final = {name: level for level, name in enumerate(LEVEL_NAMES)}

MIN_TS: Final = 0
#: 9999-12-31 23:59:59 UTC, the last second PSD's YYYYMMDDhhmmss bucket strings can name.
MAX_TS: Final = 253402300799

_FIXED_SECONDS: Final = {SECOND: 1, MINUTE: 60, HOUR: 3600, DAY: 86400}


############################################################################################
# Civil calendar arithmetic (proleptic Gregorian, integer only)
############################################################################################


def days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 for a calendar date (Howard Hinnant's algorithm).

    >>> days_from_civil(2016, 3, 15)
    16875
    """
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil_from_days(days: int) -> tuple[int, int, int]:
    """(year, month, day) for a count of days since 1970-01-01.

    >>> civil_from_days(16875)
    (2016, 3, 15)
    """
    days += 719468
    era = days // 146097
    doe = days - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + (3 if mp < 10 else -9)
    return yoe + era * 400 + (month <= 2), month, day


# The write path needs the month of a day for every event; a dict lookup is ~5x cheaper than
# civil_from_days. Bounded by the number of distinct days ever written (at most 2.9 M).
_month_of_day_cache: dict[int, int] = {}


def month_of_day(day: int) -> int:
    """Month bucket number (months since 1970-01) of a day bucket number."""
    month = _month_of_day_cache.get(day)
    if month is None:
        year, mon, _ = civil_from_days(day)
        month = (year - 1970) * 12 + mon - 1
        _month_of_day_cache[day] = month
    return month


def month_start_day(month: int) -> int:
    """First day bucket of a month bucket."""
    return days_from_civil(1970 + month // 12, month % 12 + 1, 1)


def bucket_start(level: int, bucket: int) -> int:
    """The first second of a bucket.

    >>> bucket_start(MONTH, 12 * 46 + 2)  # March 2016
    1456790400
    """
    if level <= DAY:
        return bucket * _FIXED_SECONDS[level]
    if level == MONTH:
        return month_start_day(bucket) * 86400
    return days_from_civil(1970 + bucket, 1, 1) * 86400


def bucket_of(level: int, ts: int) -> int:
    """The bucket number containing second ``ts`` at ``level``."""
    if level <= DAY:
        return ts // _FIXED_SECONDS[level]
    month = month_of_day(ts // 86400)
    return month if level == MONTH else month // 12


def cell_key(level: int, bucket: int) -> int:
    """The integer that addresses one bucket of one level inside a series' cell dict."""
    return bucket * 8 + level


def cell_keys(ts: int) -> tuple[int, int, int, int, int, int]:
    """The six cell keys (second .. year) a write at ``ts`` increments.

    >>> [key % 8 for key in cell_keys(1458061005)]
    [0, 1, 2, 3, 4, 5]
    """
    day = ts // 86400
    month = month_of_day(day)
    return (
        ts * 8,
        (ts // 60) * 8 + 1,
        (ts // 3600) * 8 + 2,
        day * 8 + 3,
        month * 8 + 4,
        (month // 12) * 8 + 5,
    )


def parent_bucket(level: int, bucket: int) -> int:
    """The bucket one level up that contains ``bucket`` (not defined for YEAR)."""
    if level == SECOND or level == MINUTE:
        return bucket // 60
    if level == HOUR:
        return bucket // 24
    if level == DAY:
        return month_of_day(bucket)
    return bucket // 12


def children_range(level: int, bucket: int) -> tuple[int, int]:
    """First and last child bucket (at ``level - 1``) of a bucket at ``level`` > SECOND."""
    if level == MINUTE or level == HOUR:
        return bucket * 60, bucket * 60 + 59
    if level == DAY:
        return bucket * 24, bucket * 24 + 23
    if level == MONTH:
        return month_start_day(bucket), month_start_day(bucket + 1) - 1
    return bucket * 12, bucket * 12 + 11


############################################################################################
# Range decomposition
############################################################################################


def _next_boundary(level: int, ts: int) -> int:
    """First second of the bucket after the one containing ``ts`` at ``level``."""
    if level <= DAY:
        size = _FIXED_SECONDS[level]
        return (ts // size + 1) * size
    return bucket_start(level, bucket_of(level, ts) + 1)


def _is_aligned(level: int, ts: int) -> bool:
    if level <= DAY:
        return ts % _FIXED_SECONDS[level] == 0
    return bucket_start(level, bucket_of(level, ts)) == ts


def decompose(t1: int, t2: int) -> list[tuple[int, int, int]]:
    """Split the inclusive range [t1, t2] into runs ``(level, first_bucket, last_bucket)``.

    Each run is a stretch of whole buckets of one level inside one bucket of the level above.
    An empty list when t1 > t2.

    >>> decompose(1458061005, 1458061010)  # 16:56:45 .. 16:56:50, all in one minute
    [(0, 1458061005, 1458061010)]
    >>> [(LEVEL_NAMES[lv], n) for lv, lo, hi in decompose(1471392000, 1471478399)
    ...  for n in [hi - lo + 1]]  # 2016-08-17, the whole day
    [('day', 1)]

    Runtime complexity: O(1) -- at most 11 runs.
    """
    runs: list[tuple[int, int, int]] = []
    cursor = t1
    end = t2 + 1  # exclusive
    while cursor < end:
        # The coarsest level at which cursor is aligned and one whole bucket fits.
        level = YEAR
        while level > SECOND:
            if _is_aligned(level, cursor) and _next_boundary(level, cursor) <= end:
                break
            level -= 1
        # Extend the run while whole buckets fit, without crossing the parent's boundary.
        limit = end if level == YEAR else min(end, _next_boundary(level + 1, cursor))
        first = bucket_of(level, cursor)
        if level <= DAY:
            size = _FIXED_SECONDS[level]
            last = first + (limit - cursor) // size - 1
            cursor = (last + 1) * size
        else:
            # The last bucket that ends at or before limit.
            last = bucket_of(level, limit - 1) - (not _is_aligned(level, limit))
            cursor = bucket_start(level, last + 1)
        runs.append((level, first, last))
    return runs
