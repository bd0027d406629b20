"""Tests for engine/timebuckets.py: civil arithmetic, bucket numbering and range decomposition."""

from __future__ import annotations

from datetime import UTC, date, datetime
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.timebuckets import (
    DAY,
    HOUR,
    LEVEL_NAMES,
    MAX_TS,
    MIN_TS,
    MINUTE,
    MONTH,
    SECOND,
    YEAR,
    bucket_of,
    bucket_start,
    cell_key,
    cell_keys,
    children_range,
    civil_from_days,
    days_from_civil,
    decompose,
    month_of_day,
    month_start_day,
    parent_bucket,
)

EPOCH = date(1970, 1, 1)
LEVELS = (SECOND, MINUTE, HOUR, DAY, MONTH, YEAR)


def ts_of(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp())


#: Instants where calendar arithmetic goes wrong if it goes wrong anywhere.
ANCHORS = [
    MIN_TS,
    MAX_TS,
    ts_of(2016, 2, 29),
    ts_of(2016, 3, 1),
    ts_of(2000, 2, 29),
    ts_of(2000, 3, 1),
    ts_of(2100, 2, 28),
    ts_of(2100, 3, 1),
    ts_of(2016, 1, 1),
    ts_of(2017, 1, 1),
    ts_of(2000, 1, 1),
    ts_of(2016, 5, 1),
    ts_of(2016, 12, 1),
    ts_of(9999, 12, 1),
    ts_of(1970, 2, 1),
]

edge_offsets = st.one_of(
    st.sampled_from([0, 1, -1, 59, 60, 61, -60, 3599, 3600, -3600, 86399, 86400, -86400]),
    st.integers(-120, 120),
    st.integers(-40 * 86400, 40 * 86400),
)


@st.composite
def edge_ts(draw: st.DrawFn) -> int:
    """A timestamp near a month, year or leap-day boundary, or anywhere in range."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.integers(MIN_TS, MAX_TS))
    return min(MAX_TS, max(MIN_TS, draw(st.sampled_from(ANCHORS)) + draw(edge_offsets)))


@st.composite
def edge_range(draw: st.DrawFn) -> tuple[int, int]:
    a, b = draw(edge_ts()), draw(edge_ts())
    return min(a, b), max(a, b)


def run_seconds(level: int, first: int, last: int) -> tuple[int, int]:
    """Inclusive [first second, last second] of a run."""
    return bucket_start(level, first), bucket_start(level, last + 1) - 1


############################################################################################
# Civil calendar


@settings(max_examples=300, deadline=None)
@given(st.dates(min_value=date(1970, 1, 1), max_value=date(9999, 12, 31)))
def test_days_from_civil_matches_datetime(day: date) -> None:
    assert days_from_civil(day.year, day.month, day.day) == (day - EPOCH).days


@settings(max_examples=300, deadline=None)
@given(st.integers((date(1970, 1, 1) - EPOCH).days, (date(9999, 12, 31) - EPOCH).days))
def test_civil_from_days_matches_datetime(days: int) -> None:
    expected = date.fromordinal(EPOCH.toordinal() + days)
    assert civil_from_days(days) == (expected.year, expected.month, expected.day)
    assert days_from_civil(*civil_from_days(days)) == days


@pytest.mark.parametrize(
    "y, m, d",
    [(1970, 1, 1), (2000, 2, 29), (2016, 2, 29), (2100, 2, 28), (2100, 3, 1), (9999, 12, 31)],
)
def test_civil_round_trip_at_leap_and_range_edges(y: int, m: int, d: int) -> None:
    days = (date(y, m, d) - EPOCH).days
    assert days_from_civil(y, m, d) == days
    assert civil_from_days(days) == (y, m, d)


def test_civil_2100_is_not_a_leap_year() -> None:
    assert days_from_civil(2100, 3, 1) - days_from_civil(2100, 2, 28) == 1
    assert days_from_civil(2000, 3, 1) - days_from_civil(2000, 2, 28) == 2


############################################################################################
# Bucket numbering


@settings(max_examples=300, deadline=None)
@given(edge_ts())
def test_bucket_of_matches_datetime(ts: int) -> None:
    dt = datetime.fromtimestamp(ts, UTC)
    assert bucket_of(SECOND, ts) == ts
    assert bucket_of(MINUTE, ts) == ts // 60
    assert bucket_of(HOUR, ts) == ts // 3600
    assert bucket_of(DAY, ts) == (dt.date() - EPOCH).days
    assert bucket_of(MONTH, ts) == (dt.year - 1970) * 12 + dt.month - 1
    assert bucket_of(YEAR, ts) == dt.year - 1970


@settings(max_examples=300, deadline=None)
@given(edge_ts())
def test_bucket_start_brackets_ts_at_every_level(ts: int) -> None:
    for level in LEVELS:
        bucket = bucket_of(level, ts)
        assert bucket_start(level, bucket) <= ts < bucket_start(level, bucket + 1), LEVEL_NAMES[
            level
        ]
        # The start of a bucket belongs to that bucket.
        assert bucket_of(level, bucket_start(level, bucket)) == bucket


@settings(max_examples=300, deadline=None)
@given(edge_ts())
def test_cell_keys_are_the_cell_key_of_each_level(ts: int) -> None:
    keys = cell_keys(ts)
    assert keys == tuple(cell_key(level, bucket_of(level, ts)) for level in LEVELS)
    assert [k % 8 for k in keys] == list(LEVELS)
    assert len(set(keys)) == 6


@settings(max_examples=300, deadline=None)
@given(edge_ts())
def test_parent_bucket_and_children_range_agree_with_bucket_of(ts: int) -> None:
    for level in LEVELS[:-1]:
        child = bucket_of(level, ts)
        parent = bucket_of(level + 1, ts)
        assert parent_bucket(level, child) == parent
        lo, hi = children_range(level + 1, parent)
        assert lo <= child <= hi
        # The children tile the parent exactly.
        assert bucket_start(level, lo) == bucket_start(level + 1, parent)
        assert bucket_start(level, hi + 1) == bucket_start(level + 1, parent + 1)


def test_children_range_of_months_has_calendar_lengths() -> None:
    feb_2016 = (2016 - 1970) * 12 + 1
    feb_2100 = (2100 - 1970) * 12 + 1
    feb_2000 = (2000 - 1970) * 12 + 1
    for month, days in [(feb_2016, 29), (feb_2100, 28), (feb_2000, 29), (feb_2016 + 1, 31)]:
        lo, hi = children_range(MONTH, month)
        assert hi - lo + 1 == days
        assert lo == month_start_day(month)
        assert month_of_day(lo) == month_of_day(hi) == month


def test_bucket_start_pins_known_instants() -> None:
    assert bucket_start(MONTH, (2016 - 1970) * 12 + 2) == 1456790400
    assert bucket_start(YEAR, 2016 - 1970) == 1451606400
    assert bucket_start(YEAR, 0) == 0
    assert bucket_start(YEAR, 9999 - 1970 + 1) == MAX_TS + 1


############################################################################################
# Range decomposition


def check_decomposition(t1: int, t2: int) -> list[tuple[int, int, int]]:
    runs = decompose(t1, t2)
    spans = sorted(run_seconds(*run) for run in runs)
    # Every second of [t1, t2] exactly once: the spans are contiguous, ordered, non-overlapping.
    assert spans[0][0] == t1
    assert spans[-1][1] == t2
    for (_, end), (start, _) in pairwise(spans):
        assert start == end + 1
    per_level: dict[int, int] = {}
    for level, first, last in runs:
        assert first <= last
        per_level[level] = per_level.get(level, 0) + 1
        if level != YEAR:
            # Inside one parent bucket, and not the whole parent (else the parent was taken).
            parent = parent_bucket(level, first)
            assert parent_bucket(level, last) == parent
            assert (first, last) != children_range(level + 1, parent)
    assert all(n <= 2 for n in per_level.values()), per_level
    assert per_level.get(YEAR, 0) <= 1
    assert len(runs) <= 11
    return runs


@settings(max_examples=500, deadline=None)
@given(edge_range())
def test_decompose_covers_each_second_once(bounds: tuple[int, int]) -> None:
    check_decomposition(*bounds)


@settings(max_examples=200, deadline=None)
@given(st.integers(MIN_TS, MAX_TS - 10**6), st.integers(0, 10**6))
def test_decompose_short_ranges(t1: int, length: int) -> None:
    check_decomposition(t1, t1 + length)


@pytest.mark.parametrize(
    "t1, t2", [(0, 0), (0, MAX_TS), (MAX_TS, MAX_TS), (1, MAX_TS - 1), (0, 59)]
)
def test_decompose_extremes(t1: int, t2: int) -> None:
    check_decomposition(t1, t2)


def test_decompose_single_second() -> None:
    assert decompose(1458061005, 1458061005) == [(SECOND, 1458061005, 1458061005)]


def test_decompose_empty_when_t1_after_t2() -> None:
    assert decompose(10, 9) == []


def test_decompose_whole_range_is_one_year_run() -> None:
    assert decompose(0, MAX_TS) == [(YEAR, 0, 9999 - 1970)]


# PSD's worked examples (psd.md section 1.5). PSD addresses a container plus a child range;
# the equivalent run here is (child level, first child, last child).

D = (date(2016, 1, 1) - EPOCH).days  # day bucket of 2016-01-01


def test_decompose_psd_example_seconds_in_one_minute() -> None:
    # 201603151656: seconds 45..50
    assert decompose(1458061005, 1458061010) == [(SECOND, 1458061005, 1458061010)]


def test_decompose_psd_example_seven_containers() -> None:
    # [1451635200, 1458061011]: 2016-01-01 08:00:00 .. 2016-03-15 16:56:51
    h = ts_of(2016, 1, 1) // 3600
    mar15 = (date(2016, 3, 15) - EPOCH).days
    h15 = ts_of(2016, 3, 15, 16) // 3600
    m1656 = ts_of(2016, 3, 15, 16, 56) // 60
    expected = [
        (HOUR, h + 8, h + 23),  # 20160101 h8..23
        (DAY, D + 1, D + 30),  # 201601 d2..31
        (MONTH, 553, 553),  # 2016 month 2..2  ((2016-1970)*12 + 1)
        (DAY, mar15 - 14, mar15 - 1),  # 201603 d1..14
        (HOUR, mar15 * 24, mar15 * 24 + 15),  # 20160315 h0..15
        (MINUTE, h15 * 60, h15 * 60 + 55),  # 2016031516 m0..55
        (SECOND, m1656 * 60, m1656 * 60 + 51),  # 201603151656 s0..51
    ]
    assert decompose(1451635200, 1458061011) == expected
    check_decomposition(1451635200, 1458061011)


def test_decompose_psd_example_whole_day() -> None:
    # PSD is conservative and needs 20160817 h0..22, 2016081723 m0..58, 201608172359 s0..59;
    # we take the day whole. Both cover the same seconds.
    day = (date(2016, 8, 17) - EPOCH).days
    assert decompose(1471392000, 1471478399) == [(DAY, day, day)]
    psd_runs = [
        (HOUR, day * 24, day * 24 + 22),
        (MINUTE, (day * 24 + 23) * 60, (day * 24 + 23) * 60 + 58),
        (SECOND, 1471478399 - 59, 1471478399),
    ]
    spans = sorted(run_seconds(*r) for r in psd_runs)
    assert spans[0][0] == 1471392000 and spans[-1][1] == 1471478399
    assert sum(b - a + 1 for a, b in spans) == 86400


def test_decompose_psd_example_year_plus_one_second() -> None:
    # [2016-01-01 00:00:00, 2017-01-01 00:00:00] -> 2016 months 1..12, plus 201701010000 s0..0
    t1, t2 = ts_of(2016, 1, 1), ts_of(2017, 1, 1)
    assert decompose(t1, t2) == [(YEAR, 2016 - 1970, 2016 - 1970), (SECOND, t2, t2)]


def test_decompose_leap_day_2016() -> None:
    t1, t2 = ts_of(2016, 2, 29), ts_of(2016, 3, 1) - 1
    day = (date(2016, 2, 29) - EPOCH).days
    assert decompose(t1, t2) == [(DAY, day, day)]
    # February 2016 whole is one month run.
    assert decompose(ts_of(2016, 2, 1), ts_of(2016, 3, 1) - 1) == [(MONTH, 553, 553)]
