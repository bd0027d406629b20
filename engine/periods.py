"""Period boundaries for breakdowns: calendar units in a time zone, or fixed N-second steps.

Theory of operation
-------------------
A breakdown of [t1, t2] is a list of boundaries ``b0 = t1 < b1 < ... < bn = t2 + 1``; period
i is [b_i, b_{i+1} - 1]. Interior boundaries are where a new period starts:

* a calendar step (``"year"`` .. ``"second"``) in an IANA time zone: local midnight, the first of
  the month, ... as the zone's wall clock shows them (DST-aware, via ``zoneinfo``); or with a
  fixed ``offset`` in seconds east of UTC (local wall clock = UTC + offset, so +3600 is CET);
* a fixed step of N seconds, aligned to the epoch on the local wall clock (UTC + offset).

The first and last period are clipped to [t1, t2], so the sums of a breakdown always add up to
the sum over the whole range. Counters then answer each boundary with one prefix walk
(``CounterSeries.before``).

Time zones by name
------------------
A ``tz`` comes from the client, and ``ZoneInfo(name)`` treats it as a path under each
directory of ``zoneinfo.TZPATH`` (then inside the ``tzdata`` package): ``"Europe"`` opens a
directory (``IsADirectoryError``), 10,000 characters overflow the file system's name limit
(``OSError``), ``"right/UTC"`` finds a leap-second zone that disagrees with Unix time by 27 s.
So :func:`load_zone` -- the one place a name becomes a zone; nothing else calls ``ZoneInfo``
on input -- first looks the name up in :func:`known_zones`, the IANA names this host has,
and only then loads it.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from engine.errors import InvalidInput, quote
from engine.timebuckets import LEVEL_BY_NAME, MAX_TS, MONTH, YEAR, bucket_of, bucket_start

#: Most periods one breakdown may produce: each costs one prefix walk per series (~10 us).
MAX_PERIODS = 10_000

_FIXED = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


#: Longest time zone name taken: twice the longest IANA name (32 characters,
#: ``America/Argentina/ComodRivadavia``); tzdb's own rule keeps each part of a name to 14
#: characters (its ``theory.html``, "Names of timezones"). Longer is refused unread.
MAX_ZONE_NAME = 64
#: Names :func:`available_timezones` may list that are not IANA zones: ``localtime`` is a
#: link to the host's own ``/etc/localtime`` (Debian ships it in ``/usr/share/zoneinfo``), so
#: answers would change with the machine's setting.
_NOT_ZONES = frozenset({"localtime"})


@functools.cache
def known_zones() -> frozenset[str]:
    """The IANA time zone names this host can load: the ``tzdata`` package's list and the
    system database's zones (``zoneinfo.available_timezones``; ``right/``, ``posix/`` and
    ``posixrules`` left out), without ``localtime``.

    Read once per process (~30 ms: one file from ``tzdata`` and a walk of
    ``/usr/share/zoneinfo``); a zone added to the system database later is known after a
    restart.

    >>> "Europe/Oslo" in known_zones(), "Europe" in known_zones(), "right/UTC" in known_zones()
    (True, False, False)
    """
    return frozenset(available_timezones()) - _NOT_ZONES


def load_zone(name: str | None, field: str = "tz") -> ZoneInfo | None:
    """The ``ZoneInfo`` for an IANA name, ``None`` for UTC or no zone.

    Every time zone a request names goes through here (breakdowns, counter breakdowns,
    rolling leaderboard windows): see "Time zones by name" in the module docstring.

    >>> load_zone("Europe/Oslo"), load_zone("UTC")
    (zoneinfo.ZoneInfo(key='Europe/Oslo'), None)
    >>> load_zone("Europe")
    Traceback (most recent call last):
    ...
    engine.errors.InvalidInput: tz must be an IANA time zone name such as 'Europe/Oslo', got 'Europe'

    Raises:
        InvalidInput: ``name`` is not a string, or not a zone in :func:`known_zones`
            (naming ``field`` and quoting at most the start of ``name``).
    """
    if name is None or name in ("UTC", "Etc/UTC", "Z"):
        return None
    if not isinstance(name, str):
        raise InvalidInput(f"{field} must be an IANA time zone name such as 'Europe/Oslo'", field)
    if len(name) <= MAX_ZONE_NAME and name in known_zones():
        try:
            return ZoneInfo(name)
        # Listed but unreadable: the system database changed under the running server.
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    raise InvalidInput(
        f"{field} must be an IANA time zone name such as 'Europe/Oslo', got {quote(name)}", field
    )


def period_bounds(
    t1: int, t2: int, step: str | int, *, zone: ZoneInfo | None = None, offset: int = 0
) -> list[int]:
    """Boundaries of the periods of ``step`` covering [t1, t2] (see the module docstring).

    >>> period_bounds(1471392000, 1471478399, "hour")[:3]  # 2016-08-17 in UTC
    [1471392000, 1471395600, 1471399200]
    >>> len(period_bounds(1471392000, 1471478399, "hour")) - 1
    24
    >>> period_bounds(0, 9, 4)
    [0, 4, 8, 10]

    Raises:
        InvalidInput: unknown step, or more than ``MAX_PERIODS`` periods.
    """
    if t1 > t2:
        return [t1, t1]
    bounds = [t1]
    if isinstance(step, int) and not isinstance(step, bool):
        if step <= 0:
            raise InvalidInput(f"step must be a positive number of seconds, got {quote(step)}", "step")
        cursor = ((t1 + offset) // step + 1) * step - offset
        interior = range(cursor, t2 + 1, step)
        _check_count(len(interior) + 1, step)
        bounds.extend(interior)
    elif step == "second" or (step in _FIXED and zone is None):
        size = _FIXED[step]
        cursor = ((t1 + offset) // size + 1) * size - offset
        interior = range(cursor, t2 + 1, size)
        _check_count(len(interior) + 1, step)
        bounds.extend(interior)
    elif step in LEVEL_BY_NAME:
        if zone is None:
            level = LEVEL_BY_NAME[step]
            bucket = bucket_of(level, min(t1 + offset, MAX_TS)) + 1
            while (start := bucket_start(level, bucket) - offset) <= t2:
                bounds.append(start)
                bucket += 1
                _check_count(len(bounds), step)
        else:
            bounds.extend(_zone_bounds(t1, t2, step, zone))
    else:
        raise InvalidInput(
            f"step must be one of year, month, day, hour, minute, second or a number of "
            f"seconds, got {quote(step)}",
            "step",
        )
    bounds.append(t2 + 1)
    return bounds


def _zone_bounds(t1: int, t2: int, step: str, zone: ZoneInfo) -> list[int]:
    """Starts of local minutes, hours, days, months or years after t1 up to t2 in a zone.

    Python's datetime ends at 9999-12-31 local; a boundary past that is past ``MAX_TS`` too in
    every zone east of UTC and at most a day short of it west of UTC, so the walk stops there.
    """
    out: list[int] = []
    try:
        if step in ("hour", "minute"):
            # UTC instants where the local wall clock reads hh:00 (or mm:00); offsets may be
            # :30, :45 or even whole seconds, and change at DST transitions.
            size = _FIXED[step]
            cursor = t1
            while True:
                offset = datetime.fromtimestamp(cursor, zone).utcoffset()
                off = int(offset.total_seconds()) if offset is not None else 0
                cursor = ((cursor + off) // size + 1) * size - off
                if cursor > t2:
                    return out
                out.append(cursor)
                _check_count(len(out) + 1, step)
        wall = datetime.fromtimestamp(t1, UTC).astimezone(zone).replace(tzinfo=None)
        if step == "day":
            start = wall.replace(hour=0, minute=0, second=0, microsecond=0)
        elif step == "month":
            start = wall.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        else:
            start = wall.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
        while True:
            start = _advance(start, step)
            instant = int(start.replace(tzinfo=zone).timestamp())
            if instant > t2:
                return out
            if instant > t1:
                out.append(instant)
                _check_count(len(out) + 1, step)
    except (OverflowError, ValueError):
        return out  # the local calendar ran past year 9999


def _advance(wall: datetime, step: str) -> datetime:
    if step == "day":
        return wall + timedelta(days=1)
    month = (wall.year - 1970) * 12 + wall.month - 1 + (1 if step == "month" else 12)
    return wall.replace(year=1970 + month // 12, month=month % 12 + 1)


def _check_count(count: int, step: object) -> None:
    if count > MAX_PERIODS:
        raise InvalidInput(
            f"a breakdown may have at most {MAX_PERIODS} periods; step {quote(step)} gives more "
            "over this range -- use a coarser step or a shorter range",
            "step",
        )


__all__ = ["MAX_PERIODS", "MAX_ZONE_NAME", "MONTH", "YEAR", "known_zones", "load_zone", "period_bounds"]
