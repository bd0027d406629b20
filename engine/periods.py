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
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from engine.errors import InvalidInput
from engine.timebuckets import LEVEL_BY_NAME, MAX_TS, MONTH, YEAR, bucket_of, bucket_start

#: Most periods one breakdown may produce: each costs one prefix walk per series (~10 us).
MAX_PERIODS = 10_000

_FIXED = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def load_zone(name: str | None, field: str = "tz") -> ZoneInfo | None:
    """The ``ZoneInfo`` for an IANA name, ``None`` for UTC/absent, ``InvalidInput`` if unknown."""
    if name is None or name in ("UTC", "Etc/UTC", "Z"):
        return None
    if not isinstance(name, str):
        raise InvalidInput(f"{field} must be an IANA time zone name such as 'Europe/Oslo'", field)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(
            f"{field} must be an IANA time zone name such as 'Europe/Oslo', got {name!r}", field
        ) from None


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
            raise InvalidInput(f"step must be a positive number of seconds, got {step!r}", "step")
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
            f"seconds, got {step!r}",
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
            f"a breakdown may have at most {MAX_PERIODS} periods; step {step!r} gives more "
            "over this range -- use a coarser step or a shorter range",
            "step",
        )


__all__ = ["MAX_PERIODS", "MONTH", "YEAR", "load_zone", "period_bounds"]
