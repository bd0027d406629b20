"""Tests for engine/periods.py: breakdown boundaries in UTC, with offsets and in DST-aware zones."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import InvalidInput
from engine.periods import MAX_PERIODS, MAX_ZONE_NAME, known_zones, load_zone, period_bounds
from engine.timebuckets import MAX_TS, MIN_TS

CALENDAR_STEPS = ["year", "month", "day", "hour", "minute", "second"]
ZONES = ["Europe/Oslo", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]


def ts_of(*args: int, tz: ZoneInfo | None = None) -> int:
    return int(datetime(*args, tzinfo=tz or UTC).timestamp())


def unit_of(wall: datetime, step: str) -> tuple[int, ...]:
    """The calendar unit a wall-clock time falls in."""
    full = (wall.year, wall.month, wall.day, wall.hour, wall.minute, wall.second)
    return full[: CALENDAR_STEPS.index(step) + 1]


def local(ts: int, zone: ZoneInfo | None, offset: int = 0) -> datetime:
    if zone is None:
        return datetime.fromtimestamp(ts + offset, UTC).replace(tzinfo=None)
    return datetime.fromtimestamp(ts, zone).replace(tzinfo=None)


def check_calendar_bounds(
    t1: int, t2: int, step: str, zone: ZoneInfo | None = None, offset: int = 0
) -> list[int]:
    """Boundaries clipped to [t1, t2], strictly increasing, and exactly the unit starts."""
    bounds = period_bounds(t1, t2, step, zone=zone, offset=offset)
    assert bounds[0] == t1
    assert bounds[-1] == t2 + 1
    assert all(a < b for a, b in pairwise(bounds)), bounds
    assert len(bounds) - 1 <= MAX_PERIODS
    if step == "hour" and zone is not None:
        # Local hours are not monotone across a fall-back (01:59:59 EDT -> 01:00:00 EST), so
        # a boundary is wherever the wall clock reads hh:00:00, or where the zone's offset
        # changes (Lord Howe's 30-minute shifts: 02:00 -> 02:30 and 02:00 -> 01:30 start a
        # new period too, just as New York's repeated 01:00 does). Offsets and transitions
        # fall on quarter hours, so the candidates are multiples of 900 s.
        def starts_hour(x: int) -> bool:
            wall = local(x, zone)
            if (wall.minute, wall.second) == (0, 0):
                return True
            before = datetime.fromtimestamp(x - 1, zone).utcoffset()
            return datetime.fromtimestamp(x, zone).utcoffset() != before

        expected = [x for x in range((t1 // 900 + 1) * 900, t2 + 1, 900) if starts_hour(x)]
        assert bounds[1:-1] == expected, [str(local(b, zone)) for b in bounds[1:-1]]
        return bounds
    # Local calendar units are monotone in time: each period lies inside one unit, and
    # consecutive periods lie in different units.
    units = [unit_of(local(b, zone, offset), step) for b in bounds[:-1]]
    for (a, b), unit in zip(pairwise(bounds), units, strict=True):
        assert unit_of(local(b - 1, zone, offset), step) == unit, (a, b, step)
    for b in bounds[1:-1]:
        assert unit_of(local(b - 1, zone, offset), step) != unit_of(local(b, zone, offset), step)
    return bounds


############################################################################################
# UTC


@pytest.mark.parametrize(
    "step, t1, t2, periods",
    [
        ("year", ts_of(2015, 6, 1), ts_of(2018, 2, 1), 4),
        ("month", ts_of(2016, 1, 31), ts_of(2016, 3, 1), 3),
        ("month", ts_of(2016, 1, 1), ts_of(2016, 12, 31, 23, 59, 59), 12),
        ("day", ts_of(2016, 2, 28), ts_of(2016, 3, 1, 0, 0, 1), 3),
        ("day", ts_of(2100, 2, 28), ts_of(2100, 3, 1), 2),
        ("hour", 1471392000, 1471478399, 24),
        ("minute", ts_of(2016, 1, 1, 0, 0, 30), ts_of(2016, 1, 1, 0, 5, 0), 6),
        ("second", 100, 109, 10),
    ],
)
def test_period_bounds_utc_calendar_steps(step: str, t1: int, t2: int, periods: int) -> None:
    bounds = check_calendar_bounds(t1, t2, step)
    assert len(bounds) - 1 == periods


def test_period_bounds_utc_month_boundaries_pinned() -> None:
    bounds = period_bounds(ts_of(2016, 1, 15), ts_of(2016, 4, 15), "month")
    assert bounds == [
        ts_of(2016, 1, 15),
        ts_of(2016, 2, 1),
        ts_of(2016, 3, 1),
        ts_of(2016, 4, 1),
        ts_of(2016, 4, 15) + 1,
    ]


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(CALENDAR_STEPS),
    st.integers(MIN_TS, MAX_TS - 10**8),  # local() of the reference stops at 9999-12-31
    st.integers(0, 10**6),
    st.sampled_from([0, 3600, -3600, 19800, -18000, 37800, 45]),
)
def test_period_bounds_utc_and_offset_property(
    step: str, t1: int, length: int, offset: int
) -> None:
    # At most ~9,000 periods whatever the step.
    scale = {"year": 4000, "month": 400, "day": 90, "hour": 300, "minute": 50, "second": 1}[step]
    t2 = min(MAX_TS, t1 + length * scale // 110)
    check_calendar_bounds(t1, t2, step, offset=offset)


def test_period_bounds_with_offset_moves_day_starts() -> None:
    # +3600 (CET): days start at 23:00 UTC.
    bounds = period_bounds(ts_of(2016, 3, 1), ts_of(2016, 3, 3), "day", offset=3600)
    assert bounds[1:-1] == [ts_of(2016, 3, 1, 23), ts_of(2016, 3, 2, 23)]
    # -18000 (EST): months start at 05:00 UTC.
    bounds = period_bounds(ts_of(2016, 1, 15), ts_of(2016, 3, 15), "month", offset=-18000)
    assert bounds[1:-1] == [ts_of(2016, 2, 1, 5), ts_of(2016, 3, 1, 5)]


def test_period_bounds_at_range_ends() -> None:
    assert period_bounds(MIN_TS, MIN_TS, "year") == [0, 1]
    check_calendar_bounds(MIN_TS, MIN_TS + 86400 * 400, "month")
    check_calendar_bounds(MAX_TS - 86400 * 400, MAX_TS, "month")
    assert period_bounds(MIN_TS, MAX_TS, "year")[-2:] == [ts_of(9999, 1, 1), MAX_TS + 1]


def test_period_bounds_empty_when_t1_after_t2() -> None:
    assert period_bounds(10, 9, "day") == [10, 10]


############################################################################################
# Fixed steps of N seconds


@settings(max_examples=200, deadline=None)
@given(
    st.integers(MIN_TS, MAX_TS - 10**7),
    st.integers(0, 10**7),
    st.integers(1, 10**6),
    st.sampled_from([0, 3600, -3600, 19800, 7]),
)
def test_period_bounds_fixed_seconds(t1: int, length: int, step: int, offset: int) -> None:
    t2 = t1 + length
    if (t2 - t1) // step + 2 > MAX_PERIODS:
        return  # see test_period_bounds_max_periods_*
    bounds = period_bounds(t1, t2, step, offset=offset)
    assert bounds[0] == t1 and bounds[-1] == t2 + 1
    assert all(a < b for a, b in pairwise(bounds))
    interior = bounds[1:-1]
    assert all((b + offset) % step == 0 for b in interior)
    # Every aligned instant in (t1, t2] is a boundary, and no period is longer than step.
    expected = [
        x for x in range(t1 + 1, min(t2 + 1, t1 + 1 + 3 * step)) if (x + offset) % step == 0
    ]
    assert interior[: len(expected)] == expected
    assert all(b - a <= step for a, b in pairwise(bounds))


def test_period_bounds_fixed_seconds_docstring_example() -> None:
    assert period_bounds(0, 9, 4) == [0, 4, 8, 10]
    assert period_bounds(0, 9, 4, offset=1) == [0, 3, 7, 10]


def test_period_bounds_named_fixed_steps_equal_numeric_steps() -> None:
    t1, t2 = ts_of(2016, 2, 28, 7, 13, 5), ts_of(2016, 3, 2, 1, 2, 3)
    assert period_bounds(t1, t2, "hour") == period_bounds(t1, t2, 3600)
    assert period_bounds(t1, t2, "day", offset=19800) == period_bounds(t1, t2, 86400, offset=19800)


############################################################################################
# Time zones


@pytest.mark.parametrize(
    "zone_name, day",
    [
        ("Europe/Oslo", (2016, 3, 27)),  # spring forward 02:00 -> 03:00
        ("Europe/Oslo", (2016, 10, 30)),  # fall back 03:00 -> 02:00
        ("America/New_York", (2016, 3, 13)),
        ("America/New_York", (2016, 11, 6)),
        ("Australia/Lord_Howe", (2016, 4, 3)),  # 30-minute fall back 02:00 -> 01:30
        ("Australia/Lord_Howe", (2016, 10, 2)),  # 30-minute spring forward 02:00 -> 02:30
        ("Asia/Kolkata", (2016, 3, 27)),  # +5:30, no DST
    ],
)
@pytest.mark.parametrize("step", ["day", "month", "year", "minute", "second"])
def test_period_bounds_zone_across_dst(
    zone_name: str, day: tuple[int, int, int], step: str
) -> None:
    zone = ZoneInfo(zone_name)
    center = ts_of(*day, 12, tz=zone)
    span = {
        "day": 4 * 86400,
        "month": 80 * 86400,
        "year": 800 * 86400,
        "minute": 6 * 3600,
        "second": 3600,
    }[step]
    if step == "second":
        center = ts_of(*day, 2, tz=zone)
    check_calendar_bounds(center - span, center + span, step, zone)


@pytest.mark.parametrize(
    "zone_name, day",
    [
        ("Europe/Oslo", (2016, 3, 27)),
        ("Europe/Oslo", (2016, 10, 30)),
        ("America/New_York", (2016, 3, 13)),
        ("America/New_York", (2016, 11, 6)),
        ("Asia/Kolkata", (2016, 3, 27)),
    ],
)
def test_period_bounds_zone_hours_across_dst(zone_name: str, day: tuple[int, int, int]) -> None:
    zone = ZoneInfo(zone_name)
    center = ts_of(*day, 12, tz=zone)
    check_calendar_bounds(center - 2 * 86400, center + 2 * 86400, "hour", zone)


@pytest.mark.parametrize("day", [(2016, 4, 3), (2016, 10, 2)])
def test_period_bounds_zone_hours_lord_howe_half_hour_dst(day: tuple[int, int, int]) -> None:
    zone = ZoneInfo("Australia/Lord_Howe")
    center = ts_of(*day, 12, tz=zone)
    check_calendar_bounds(center - 2 * 86400, center + 2 * 86400, "hour", zone)


def test_period_bounds_zone_minutes_with_a_seconds_offset() -> None:
    zone = ZoneInfo("Africa/Monrovia")
    t1 = ts_of(1971, 6, 1, tz=zone)
    check_calendar_bounds(t1, t1 + 600, "minute", zone)


def test_period_bounds_zone_hours_with_a_seconds_offset() -> None:
    zone = ZoneInfo("Africa/Monrovia")
    t1 = ts_of(1971, 6, 1, tz=zone)
    assert period_bounds(t1, t1 + 3 * 3600, "hour", zone=zone) == [
        t1,
        t1 + 3600,
        t1 + 7200,
        t1 + 3 * 3600,
        t1 + 3 * 3600 + 1,
    ]


@pytest.mark.parametrize("zone_name", ZONES)
@pytest.mark.parametrize("step", ["day", "month", "year", "hour"])
def test_period_bounds_zone_t1_on_a_boundary(zone_name: str, step: str) -> None:
    zone = ZoneInfo(zone_name)
    t1 = ts_of(2016, 1, 1, tz=zone)  # a local hour, day, month and year start
    span = {"hour": 5 * 3600, "day": 5 * 86400, "month": 100 * 86400, "year": 1000 * 86400}[step]
    bounds = check_calendar_bounds(t1, t1 + span, step, zone)
    assert bounds[0] == t1 and bounds[1] > t1
    utc = check_calendar_bounds(ts_of(2016, 1, 1), ts_of(2016, 1, 1) + span, step)
    assert utc[1] > utc[0]


def test_period_bounds_zone_days_have_dst_lengths() -> None:
    oslo = ZoneInfo("Europe/Oslo")
    bounds = period_bounds(
        ts_of(2016, 3, 26, tz=oslo), ts_of(2016, 3, 29, tz=oslo) - 1, "day", zone=oslo
    )
    assert [b - a for a, b in pairwise(bounds)] == [86400, 23 * 3600, 86400]
    bounds = period_bounds(
        ts_of(2016, 10, 29, tz=oslo), ts_of(2016, 11, 1, tz=oslo) - 1, "day", zone=oslo
    )
    assert [b - a for a, b in pairwise(bounds)] == [86400, 25 * 3600, 86400]


def test_period_bounds_zone_kolkata_half_hour_offset() -> None:
    kolkata = ZoneInfo("Asia/Kolkata")
    t1 = ts_of(2016, 3, 1, tz=kolkata)
    bounds = period_bounds(t1, t1 + 3 * 3600 - 1, "hour", zone=kolkata)
    assert bounds == [t1, t1 + 3600, t1 + 7200, t1 + 3 * 3600]
    assert t1 % 3600 == 1800  # local hours start at :30 UTC
    days = period_bounds(t1 - 3600, t1 + 86400, "day", zone=kolkata)
    assert days == [t1 - 3600, t1, t1 + 86400, t1 + 86401]


def test_period_bounds_zone_new_york_months() -> None:
    ny = ZoneInfo("America/New_York")
    bounds = period_bounds(ts_of(2016, 2, 15), ts_of(2016, 4, 15), "month", zone=ny)
    # EST (-5) on March 1, EDT (-4) on April 1.
    assert bounds[1:-1] == [ts_of(2016, 3, 1, 5), ts_of(2016, 4, 1, 4)]


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(ZONES),
    st.sampled_from(["day", "month", "year", "minute"]),
    st.integers(MIN_TS, ts_of(2100, 1, 1)),
    st.integers(0, 10**6),
)
def test_period_bounds_zone_property(zone_name: str, step: str, t1: int, length: int) -> None:
    scale = {"year": 4000, "month": 400, "day": 90, "minute": 1}[step]
    check_calendar_bounds(t1, t1 + length * scale // 100, step, ZoneInfo(zone_name))


@pytest.mark.parametrize(
    "zone_name, step, t2",
    [
        ("Europe/Oslo", "day", MAX_TS - 86400),
        ("Europe/Oslo", "month", MAX_TS - 86400),
        ("Europe/Oslo", "year", MAX_TS - 86400),
        ("America/New_York", "day", MAX_TS),
        ("America/New_York", "month", MAX_TS - 86400),
        ("America/New_York", "year", MAX_TS - 86400),
    ],
)
def test_period_bounds_zone_near_max_ts(zone_name: str, step: str, t2: int) -> None:
    check_calendar_bounds(MAX_TS - 40 * 86400, t2, step, ZoneInfo(zone_name))


def test_period_bounds_zone_days_west_of_utc_before_the_last_local_day() -> None:
    # Ending before the local 9999-12-31 works (compare the xfail above).
    check_calendar_bounds(MAX_TS - 400 * 86400, MAX_TS - 86400, "day", ZoneInfo("America/New_York"))


############################################################################################
# Limits and errors

MAX_MSG = (
    r"^a breakdown may have at most 10000 periods; step {} gives more over this range "
    r"-- use a coarser step or a shorter range$"
)


@pytest.mark.parametrize(
    "step, length, zone",
    [
        ("second", MAX_PERIODS, None),
        (60, 60 * MAX_PERIODS, None),
        ("day", 86400 * MAX_PERIODS, None),
        ("month", 86400 * 31 * MAX_PERIODS, None),
        ("day", 2 * 86400 * MAX_PERIODS, "Europe/Oslo"),
        ("hour", 2 * 3600 * MAX_PERIODS, "Asia/Kolkata"),
    ],
)
def test_period_bounds_max_periods_exceeded(step: str | int, length: int, zone: str | None) -> None:
    t1 = ts_of(2016, 1, 1)
    if zone:
        t1 = ts_of(2016, 1, 1, tz=ZoneInfo(zone))
    with pytest.raises(InvalidInput, match=MAX_MSG.format(repr(step))) as info:
        period_bounds(t1, t1 + length, step, zone=load_zone(zone))
    assert info.value.field == "step"


@pytest.mark.parametrize(
    "step, size, zone",
    [("second", 1, None), (60, 60, None), ("day", 86400, None), ("hour", 3600, "Asia/Kolkata")],
)
def test_period_bounds_exactly_max_periods_aligned(
    step: str | int, size: int, zone: str | None
) -> None:
    t1 = ts_of(2016, 1, 1, tz=load_zone(zone))
    bounds = period_bounds(t1, t1 + size * MAX_PERIODS - 1, step, zone=load_zone(zone))
    assert len(bounds) - 1 == MAX_PERIODS


@pytest.mark.parametrize(
    "step, zone",
    [(10, None), ("minute", None), ("day", None), ("day", "Europe/Oslo"), ("hour", "Asia/Kolkata")],
)
def test_period_bounds_never_more_than_max_periods(step: str | int, zone: str | None) -> None:
    size = {"second": 1, "minute": 60, "day": 86400, "hour": 3600}.get(step, step)  # type: ignore[arg-type]
    tz = load_zone(zone)
    t1 = ts_of(2016, 1, 1, tz=tz) + max(1, size // 2)  # not aligned
    t2 = t1 + size * MAX_PERIODS - 1
    try:
        bounds = period_bounds(t1, t2, step, zone=tz)
    except InvalidInput:
        return
    assert len(bounds) - 1 <= MAX_PERIODS


@pytest.mark.parametrize("step", ["week", "Day", "", "60", 0, -5, True, 1.5, None])
def test_period_bounds_unknown_step(step: object) -> None:
    with pytest.raises(InvalidInput) as info:
        period_bounds(0, 100, step)  # type: ignore[arg-type]
    assert info.value.field == "step"


def test_period_bounds_unknown_step_message() -> None:
    with pytest.raises(
        InvalidInput,
        match=r"^step must be one of year, month, day, hour, minute, second or a number of seconds, got 'week'$",
    ):
        period_bounds(0, 100, "week")
    with pytest.raises(InvalidInput, match=r"^step must be a positive number of seconds, got 0$"):
        period_bounds(0, 100, 0)


@pytest.mark.parametrize("name", [None, "UTC", "Etc/UTC", "Z"])
def test_load_zone_utc_names_give_none(name: str | None) -> None:
    assert load_zone(name) is None


@pytest.mark.parametrize("name", ZONES)
def test_load_zone_known_zones(name: str) -> None:
    assert load_zone(name) == ZoneInfo(name)


@pytest.mark.parametrize("name", ["Mars/Base", "", "utc", "../../etc/passwd", "Europe/"])
def test_load_zone_unknown_zone(name: str) -> None:
    message = f"tz must be an IANA time zone name such as 'Europe/Oslo', got {name!r}"
    with pytest.raises(InvalidInput, match=f"^{re.escape(message)}$") as info:
        load_zone(name)
    assert info.value.field == "tz"


def test_load_zone_non_string() -> None:
    with pytest.raises(
        InvalidInput, match=r"^tz must be an IANA time zone name such as 'Europe/Oslo'$"
    ) as info:
        load_zone(5)  # type: ignore[arg-type]
    assert info.value.field == "tz"
    with pytest.raises(InvalidInput) as info:
        load_zone("Nowhere", field="zone")
    assert info.value.field == "zone"


def test_period_bounds_zone_sums_of_lengths() -> None:
    # Periods tile [t1, t2] whatever the zone: lengths add up.
    for name in ZONES:
        zone = ZoneInfo(name)
        t1, t2 = ts_of(2016, 1, 1), ts_of(2016, 12, 31)
        for step in ("day", "month"):
            bounds = period_bounds(t1, t2, step, zone=zone)
            assert sum(b - a for a, b in pairwise(bounds)) == t2 - t1 + 1


############################################################################################
# Zone names are looked up before they are loaded (security issue, finding 8)


def _zone_directories() -> list[str]:
    """Every directory under the tzdata package and the system database, as a zone name:
    ``ZoneInfo`` opens each as a file and raises ``IsADirectoryError``."""
    from importlib import resources
    from pathlib import Path
    from zoneinfo import TZPATH

    roots = [Path(str(resources.files("tzdata").joinpath("zoneinfo")))]
    roots += [Path(p) for p in TZPATH if Path(p).is_dir()]
    names = {str(d.relative_to(root)) for root in roots for d in root.rglob("*") if d.is_dir()}
    return sorted(names)


@pytest.mark.parametrize(
    "name",
    [
        "Europe",  # a directory: IsADirectoryError
        "__pycache__",  # a directory inside the tzdata package
        "x" * 10_000,  # "File name too long"
        "Europe/Oslo\x00",
        "right/UTC",  # leap-second zones: 27 s off Unix time
        "posix/Europe/Oslo",
        "posixrules",
        "localtime",  # the host's own zone (/usr/share/zoneinfo/localtime -> /etc/localtime)
        "zone.tab",
        "tzdata.zi",
        "/usr/share/zoneinfo/Europe/Oslo",
        "Europe/Oslo/",
        "europe/oslo",
    ],
)
def test_load_zone_refuses_names_that_are_not_iana_zones(name: str) -> None:
    with pytest.raises(InvalidInput) as info:
        load_zone(name)
    assert info.value.field == "tz"
    assert info.value.message.startswith("tz must be an IANA time zone name such as 'Europe/Oslo', got ")
    assert len(info.value.message) < 200  # at most the start of the name is quoted


def test_load_zone_refuses_every_directory_of_the_zone_databases() -> None:
    directories = _zone_directories()
    assert "Europe" in directories and "America/Argentina" in directories
    for name in directories:
        with pytest.raises(InvalidInput):
            load_zone(name)


def test_load_zone_quotes_the_start_of_a_long_name() -> None:
    with pytest.raises(InvalidInput) as info:
        load_zone("Europe/" + "x" * 10_000, field="window.tz")
    assert info.value.field == "window.tz"
    assert info.value.message == (
        "window.tz must be an IANA time zone name such as 'Europe/Oslo', got "
        f"'Europe/{'x' * 73}'... (10007 characters)"
    )


def test_load_zone_loads_every_known_zone() -> None:
    zones = known_zones()
    assert len(zones) > 400 and "Europe/Oslo" in zones and "Etc/GMT+5" in zones
    assert all(len(name) <= MAX_ZONE_NAME for name in zones)
    assert not any(name.startswith(("right/", "posix/")) for name in zones)
    for name in sorted(zones):
        zone = load_zone(name)
        assert zone is None or zone.key == name
