"""Tests for engine/counters.py: series sums, PSD diff-mode writes, _atids and snapshots.

Sums are checked against a brute-force model (a list of points) with timestamps concentrated
around month ends, year ends, leap days and the ends of the supported range.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.counters import (
    ADD,
    DIFF,
    Activity,
    CounterSeries,
    CounterStatistics,
    GlobalCounter,
    UserCounters,
)
from engine.timebuckets import MAX_TS, MIN_TS


def ts_of(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp())


ANCHORS = [
    MIN_TS,
    MAX_TS,
    ts_of(2016, 2, 29),
    ts_of(2016, 3, 1),
    ts_of(2000, 2, 29),
    ts_of(2000, 3, 1),
    ts_of(2100, 2, 28),
    ts_of(2100, 3, 1),
    ts_of(2015, 12, 31, 23, 59, 59),
    ts_of(2016, 1, 1),
    ts_of(2016, 2, 1),
    ts_of(2016, 5, 1),
    ts_of(1999, 12, 31, 23, 59, 59),
    ts_of(9999, 12, 1),
]

edge_offsets = st.one_of(
    st.sampled_from([0, 1, -1, 59, 60, 61, -60, -61, 3599, 3600, -3600, 86399, 86400, -86400]),
    st.integers(-90, 90),
    st.integers(-3 * 86400, 3 * 86400),
    st.integers(-62 * 86400, 62 * 86400),
)


@st.composite
def edge_ts(draw: st.DrawFn) -> int:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.integers(MIN_TS, MAX_TS))
    return min(MAX_TS, max(MIN_TS, draw(st.sampled_from(ANCHORS)) + draw(edge_offsets)))


@st.composite
def edge_range(draw: st.DrawFn) -> tuple[int, int]:
    a, b = draw(edge_ts()), draw(edge_ts())
    return min(a, b), max(a, b)


deltas = st.one_of(
    st.integers(-1000, 1000),
    st.sampled_from([2**63 - 1, -(2**63), 2**64, -(2**64) - 7, 10**30]),
)


############################################################################################
# CounterSeries


def brute_range(points: list[tuple[int, int]], t1: int, t2: int) -> int:
    return sum(v for ts, v in points if t1 <= ts <= t2)


@settings(max_examples=250, deadline=None)
@given(
    st.lists(st.tuples(edge_ts(), deltas), max_size=25),
    st.lists(edge_range(), min_size=1, max_size=6),
    st.lists(edge_ts(), max_size=6),
)
def test_counterseries_range_sum_and_before_match_brute_force(
    points: list[tuple[int, int]], ranges: list[tuple[int, int]], probes: list[int]
) -> None:
    series = CounterSeries()
    for ts, delta in points:
        series.add(ts, delta)
        series._check()
    for t1, t2 in ranges:
        assert series.range_sum(t1, t2) == brute_range(points, t1, t2)
        assert series.range_sum(t2 + 1, t1) == 0  # an empty range
    for t in [*probes, MIN_TS, MAX_TS + 1, *(ts + d for ts, _ in points for d in (0, 1))]:
        assert series.before(t) == sum(v for ts, v in points if ts < t)
    assert series.total == sum(v for _, v in points)


#: Half-widths of windows around one centre: inside a minute, an hour, a day, a month, a
#: year, and across years (``range_sum`` walks only inside the bucket both ends share).
WINDOW_SCALES = [20, 1_500, 40_000, 1_200_000, 15_000_000, 60_000_000]


@settings(max_examples=200, deadline=None)
@given(
    st.integers(ts_of(1990, 1, 1), ts_of(2040, 1, 1)),
    st.lists(st.tuples(st.integers(-70_000_000, 70_000_000), deltas), min_size=1, max_size=40),
    st.lists(st.tuples(st.sampled_from(WINDOW_SCALES), st.floats(-1, 1), st.floats(-1, 1)),
             min_size=1, max_size=8),
)
def test_counterseries_range_sum_inside_one_bucket_matches_brute_force(
    centre: int, offsets: list[tuple[int, int]], windows: list[tuple[int, float, float]]
) -> None:
    """Dense writes around one centre (so the walks inside each shared bucket find cells at
    every level), windows at every scale around it, against the sum of the points and the
    two full ``before`` walks."""
    points = [(centre + offset // scale, delta) for offset, delta in offsets
              for scale in (1, 97, 9_973)]
    series = CounterSeries()
    for ts, delta in points:
        series.add(ts, delta)
    for half, a, b in windows:
        t1, t2 = sorted((centre + int(a * half), centre + int(b * half)))
        # Also with the edges on bucket boundaries: t1 a bucket's first second, t2 a last one.
        for size in (1, 60, 3600, 86400):
            lo, hi = t1 // size * size, t2 // size * size + size - 1
            expected = brute_range(points, lo, hi)
            assert series.range_sum(lo, hi) == expected, (lo, hi)
            assert series.before(hi + 1) - series.before(lo) == expected


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(edge_ts(), deltas), min_size=1, max_size=15),
    st.lists(edge_range(), max_size=4),
)
def test_counterseries_plain_round_trip(
    points: list[tuple[int, int]], ranges: list[tuple[int, int]]
) -> None:
    series = CounterSeries()
    for ts, delta in points:
        series.add(ts, delta)
    copy = CounterSeries.from_plain(series.to_plain())
    copy._check()
    for t1, t2 in [*ranges, (MIN_TS, MAX_TS)]:
        assert copy.range_sum(t1, t2) == series.range_sum(t1, t2)
    # Writes after a restore keep the invariants.
    copy.add(points[0][0], 5)
    copy._check()
    assert copy.total == series.total + 5


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.tuples(edge_ts(), deltas), max_size=8), max_size=4),
    st.lists(edge_range(), min_size=1, max_size=4),
)
def test_counterseries_merged_sums_the_parts(
    parts_points: list[list[tuple[int, int]]], ranges: list[tuple[int, int]]
) -> None:
    parts = []
    for points in parts_points:
        part = CounterSeries()
        for ts, delta in points:
            part.add(ts, delta)
        parts.append(part)
    merged = CounterSeries.merged(parts)
    merged._check()
    everything = [p for points in parts_points for p in points]
    for t1, t2 in [*ranges, (MIN_TS, MAX_TS)]:
        assert merged.range_sum(t1, t2) == brute_range(everything, t1, t2)
    if everything:
        assert merged.first_ts == min(ts for ts, _ in everything)
        assert merged.last_ts == max(ts for ts, _ in everything)
    else:
        assert (merged.first_ts, merged.last_ts, merged.total) == (-1, -1, 0)
    # The parts are not changed.
    for part, points in zip(parts, parts_points, strict=True):
        assert part.total == sum(v for _, v in points)


############################################################################################
# Activity points and their total


@settings(max_examples=250, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1_000, 1_200), deltas, st.booleans()), max_size=40),
    st.lists(st.tuples(st.integers(990, 1_210), st.integers(990, 1_210)), max_size=8),
    st.integers(990, 1_210),
)
def test_activity_matches_a_dict_of_points(
    writes: list[tuple[int, int, bool]], ranges: list[tuple[int, int]], cutoff: int
) -> None:
    """In and out of time order, repeated seconds, deltas past int64, ranges covering every
    point (answered from the total) or not, retention: sums, ``touches``, the total and the
    first/last seconds agree with a plain dict."""
    activity = Activity(3)
    model: dict[int, int] = {}

    def agree() -> None:
        assert sorted(activity.pairs()) == sorted(model.items())
        assert activity.total == sum(model.values())
        assert (activity.first, activity.last) == ((min(model), max(model)) if model else (-1, -1))

    for ts, delta, check in writes:
        activity.add(ts, delta)
        model[ts] = model.get(ts, 0) + delta
        if check:
            agree()
    agree()
    edges = [activity.first, activity.last]
    for a, b in [*ranges, (0, 2**40), (1_100, 1_100), (*edges,), (edges[0] + 1, edges[1]),
                 (edges[0], edges[1] - 1)]:
        t1, t2 = min(a, b), max(a, b)
        assert activity.range_sum(t1, t2) == sum(v for ts, v in model.items() if t1 <= ts <= t2)
        assert activity.touches(t1, t2) == any(t1 <= ts <= t2 for ts in model)
    copy = Activity.from_pairs(3, activity.pairs())
    assert copy.pairs() == activity.pairs() and copy.total == activity.total
    assert activity.expire(cutoff) == sum(ts < cutoff for ts in model)
    model = {ts: v for ts, v in model.items() if ts >= cutoff}
    agree()
    activity.add(1_300, 1)  # still writable after retention
    model[1_300] = 1
    agree()


def test_counterseries_empty_answers_zero() -> None:
    series = CounterSeries()
    assert series.before(MAX_TS + 1) == 0
    assert series.range_sum(MIN_TS, MAX_TS) == 0
    assert series.cell(0, 123) == 0
    series._check()


def test_counterseries_range_ends() -> None:
    series = CounterSeries()
    series.add(MIN_TS, 3)
    series.add(MAX_TS, 4)
    series._check()
    assert series.before(MIN_TS) == 0
    assert series.before(MIN_TS + 1) == 3
    assert series.before(MAX_TS) == 3
    assert series.before(MAX_TS + 1) == 7
    assert series.range_sum(MIN_TS, MIN_TS) == 3
    assert series.range_sum(MAX_TS, MAX_TS) == 4
    assert series.range_sum(MIN_TS + 1, MAX_TS - 1) == 0
    assert series.range_sum(MIN_TS, MAX_TS) == 7


def test_counterseries_leap_days() -> None:
    series = CounterSeries()
    days = [(2016, 2, 29), (2000, 2, 29), (2100, 2, 28), (2100, 3, 1)]
    for n, day in enumerate(days, start=1):
        series.add(ts_of(*day, 12), n)
        series._check()
    assert series.range_sum(ts_of(2016, 2, 29), ts_of(2016, 3, 1) - 1) == 1
    assert series.range_sum(ts_of(2016, 2, 1), ts_of(2016, 2, 29) - 1) == 0
    assert series.range_sum(ts_of(2000, 2, 1), ts_of(2000, 3, 1) - 1) == 2
    assert series.range_sum(ts_of(2100, 2, 1), ts_of(2100, 3, 1) - 1) == 3
    assert series.range_sum(ts_of(2100, 3, 1), ts_of(2100, 3, 2) - 1) == 4


def test_counterseries_negative_deltas_cancel() -> None:
    series = CounterSeries()
    t = ts_of(2016, 3, 15, 16, 56, 45)
    series.add(t, 10)
    series.add(t, -10)
    series.add(t + 1, -5)
    series._check()
    assert series.range_sum(t, t) == 0
    assert series.range_sum(t, t + 1) == -5
    assert series.total == -5


def test_counterseries_sums_beyond_64_bits_are_exact() -> None:
    series = CounterSeries()
    big = 2**63 - 1
    stamps = [ts_of(2016, 1, 1) + i * 86400 * 7 for i in range(40)]
    for ts in stamps:
        series.add(ts, big)
    series.add(stamps[0], 2**70)
    series._check()
    assert series.range_sum(MIN_TS, MAX_TS) == 40 * big + 2**70
    assert series.range_sum(stamps[1], stamps[-1]) == 39 * big
    assert series.range_sum(stamps[0], stamps[0]) == big + 2**70


def test_counterseries_cell_holds_each_level() -> None:
    series = CounterSeries()
    t = 1458061005  # 2016-03-15 16:56:45
    series.add(t, 100)
    assert [
        series.cell(level, bucket)
        for level, bucket in [
            (0, t),
            (1, t // 60),
            (2, t // 3600),
            (3, t // 86400),
            (4, 554),
            (5, 46),
        ]
    ] == [100] * 6


def test_counterseries_check_detects_a_corrupt_cell(capsys: pytest.CaptureFixture[str]) -> None:
    series = CounterSeries()
    series.add(1458061005, 100)
    series.cells[(1458061005 // 60) * 8 + 1] += 1
    with pytest.raises(AssertionError):
        series._check()
    assert "cells" in capsys.readouterr().out


def test_counterseries_check_detects_a_wrong_total() -> None:
    series = CounterSeries()
    series.add(1458061005, 100)
    series.total = 99
    with pytest.raises(AssertionError, match=r"^years sum 100 != total 99$"):
        series._check()


############################################################################################
# UserCounters against a brute-force model

METRICS = ["steps", "points", "calories"]
#: Each activity has one type (see the module docstring: its first type wins).
AID_ATID = {1: 2, 2: 2, 3: 5, 4: 7, 5: 5, 6: 0}


class Model:
    """PSD semantics, naively: a list of applied points."""

    def __init__(self) -> None:
        self.points: list[tuple[str, int, int | None, int, int]] = []

    def apply(self, events: list[tuple]) -> None:
        for metric, atid, aid, ts, value, ts1, mode in events:
            if mode == DIFF:
                already = sum(
                    d
                    for m, _, a, t, d in self.points
                    if m == metric and a == aid and ts1 <= t <= ts
                )
                value -= already
                if value == 0:
                    continue
            self.points.append((metric, atid, aid, ts, value))

    def range_sum(
        self, metric: str, t1: int, t2: int, atid: int | None = None, aid: int | None = None
    ) -> int:
        return sum(
            d
            for m, at, a, t, d in self.points
            if m == metric
            and t1 <= t <= t2
            and (atid is None or at == atid)
            and (aid is None or a == aid)
        )

    def atids(self, metrics: list[str], t1: int, t2: int, atid: int | None = None) -> list[int]:
        seen: dict[int, int] = {}
        for m, at, a, t, _ in self.points:
            if m in metrics and a is not None and t1 <= t <= t2 and (atid is None or at == atid):
                seen.setdefault(a, at)
        return sorted(seen.values())


@st.composite
def counter_event(draw: st.DrawFn) -> tuple:
    metric = draw(st.sampled_from(METRICS))
    ts = draw(edge_ts())
    mode = draw(st.sampled_from([ADD, DIFF, DIFF]))
    aid = (
        draw(st.sampled_from(sorted(AID_ATID)))
        if mode == DIFF
        else draw(st.one_of(st.none(), st.sampled_from(sorted(AID_ATID))))
    )
    atid = AID_ATID[aid] if aid is not None else draw(st.sampled_from([0, 2, 5, 9]))
    value = draw(st.one_of(st.integers(-50, 300), st.sampled_from([0, 2**63 - 1, -(2**63)])))
    back = draw(st.one_of(st.just(0), st.integers(0, 120), st.integers(0, 40 * 86400), st.just(ts)))
    ts1 = max(MIN_TS, ts - back)
    return (metric, atid, aid, ts, value, ts1, mode)


def assert_same_answers(
    user: UserCounters, model: Model, ranges: list[tuple[int, int]], bounds: list[int]
) -> None:
    for t1, t2 in ranges:
        for metric in [*METRICS, "never-written"]:
            assert user.range_sum(metric, t1, t2) == model.range_sum(metric, t1, t2)
            for atid in (0, 2, 5, 9):
                assert user.range_sum(metric, t1, t2, atid) == model.range_sum(metric, t1, t2, atid)
            for aid in AID_ATID:
                assert user.range_sum(metric, t1, t2, aid=aid) == model.range_sum(
                    metric, t1, t2, aid=aid
                )
                assert user.range_sum(metric, t1, t2, AID_ATID[aid], aid) == model.range_sum(
                    metric, t1, t2, AID_ATID[aid], aid
                )
            assert user.range_sum(metric, t1, t2, 99, 1) == 0
        for metrics in (METRICS, METRICS[:1], METRICS[1:]):
            assert sorted(user.atids(metrics, t1, t2)) == model.atids(metrics, t1, t2)
            for atid in (2, 5, 9):
                assert sorted(user.atids(metrics, t1, t2, atid)) == model.atids(
                    metrics, t1, t2, atid
                )
    if len(bounds) >= 2:
        for metric in METRICS:
            for atid in (None, 2, 5):
                expected = [
                    model.range_sum(metric, bounds[i], bounds[i + 1] - 1, atid)
                    for i in range(len(bounds) - 1)
                ]
                assert user.breakdown(metric, bounds, atid) == expected


@settings(max_examples=120, deadline=None)
@given(
    st.lists(st.lists(counter_event(), min_size=1, max_size=5), max_size=8),
    st.lists(edge_range(), min_size=1, max_size=3),
    st.lists(edge_ts(), max_size=6, unique=True),
)
def test_usercounters_match_model(
    batches: list[list[tuple]], ranges: list[tuple[int, int]], probes: list[int]
) -> None:
    user, model = UserCounters(), Model()
    for batch in batches:
        user.apply(batch)
        model.apply(batch)
        user._check()
    ranges = [*ranges, (MIN_TS, MAX_TS)]
    bounds = sorted(probes)
    assert_same_answers(user, model, ranges, bounds)
    # A snapshot round trip preserves every answer (atids compared as multisets here; see
    # test_usercounters_plain_round_trip_keeps_atids_order for their order).
    restored = UserCounters.from_plain(user.to_plain())
    restored._check()
    assert_same_answers(restored, model, ranges, bounds)
    # ... and writes after the restore behave like writes without one.
    if batches:
        restored.apply(batches[-1])
        model.apply(batches[-1])
        restored._check()
        assert_same_answers(restored, model, ranges, bounds)


def test_usercounters_stress_seeded() -> None:
    """A seeded random mix of writes and reads, with _check after every write (STYLE 9)."""
    rng = random.Random(0)
    user, model = UserCounters(), Model()
    base = ts_of(2016, 2, 27)
    span = 5 * 86400  # Feb 27 .. Mar 3, 2016: a leap day and a month end

    def rand_ts() -> int:
        return base + rng.choice(
            [rng.randrange(span), rng.randrange(0, span, 3600), rng.randrange(120)]
        )

    for _ in range(400):
        if rng.random() < 0.6:
            aid = rng.choice([None, *AID_ATID])
            mode = DIFF if aid is not None and rng.random() < 0.7 else ADD
            ts = rand_ts()
            ts1 = max(base, ts - rng.choice([0, 60, 3600, 86400, span]))
            atid = AID_ATID[aid] if aid is not None else rng.choice([0, 9])
            event = (rng.choice(METRICS), atid, aid, ts, rng.randrange(-20, 200), ts1, mode)
            user.apply([event])
            model.apply([event])
            user._check()
        else:
            t1, t2 = sorted((rand_ts(), rand_ts()))
            metric = rng.choice(METRICS)
            atid = rng.choice([None, 0, 2, 5, 9])
            assert user.range_sum(metric, t1, t2, atid) == model.range_sum(metric, t1, t2, atid)
            assert sorted(user.atids(METRICS, t1, t2, atid)) == model.atids(METRICS, t1, t2, atid)


############################################################################################
# Diff mode (psd.md section 1.3)

T0 = 1496539746  # README example: ts1
T1 = 1496539747  # README example: ts2


def diff(
    value: int, ts: int, ts1: int, *, aid: int = 3, atid: int = 2, metric: str = "steps"
) -> tuple:
    return (metric, atid, aid, ts, value, ts1, DIFF)


def test_usercounters_readme_example() -> None:
    user = UserCounters()
    user.apply([diff(10, T1, T0)])
    assert user.range_sum("steps", T0, T1) == 10
    assert user.atids(["steps"], T0, T1) == [2]


def test_usercounters_diff_replay_changes_nothing() -> None:
    user = UserCounters()
    for _ in range(3):
        user.apply([diff(10, T1, T0)])
        user._check()
    assert user.range_sum("steps", MIN_TS, MAX_TS) == 10
    assert user.statistics().activities == 1


def test_usercounters_diff_later_reports_add_the_increment() -> None:
    user = UserCounters()
    user.apply([diff(10, T0 + 60, T0)])
    user.apply([diff(25, T0 + 120, T0)])
    user.apply([diff(40, T0 + 180, T0)])
    user._check()
    assert user.range_sum("steps", MIN_TS, MAX_TS) == 40
    # The increments sit at each report's ts2.
    assert user.range_sum("steps", T0 + 60, T0 + 60) == 10
    assert user.range_sum("steps", T0 + 120, T0 + 120) == 15
    assert user.range_sum("steps", T0 + 180, T0 + 180) == 15


def test_usercounters_diff_negative_correction() -> None:
    user = UserCounters()
    user.apply([diff(100, T0 + 60, T0)])
    user.apply([diff(70, T0 + 120, T0)])
    user._check()
    assert user.range_sum("steps", MIN_TS, MAX_TS) == 70
    assert user.range_sum("steps", T0 + 120, T0 + 120) == -30


def test_usercounters_diff_negative_value() -> None:
    user = UserCounters()
    user.apply([diff(-5, T1, T0)])
    assert user.range_sum("steps", T0, T1) == -5
    user.apply([diff(-5, T1, T0)])
    assert user.range_sum("steps", T0, T1) == -5


def test_usercounters_no_op_diff_on_a_new_metric_then_range_sum() -> None:
    user = UserCounters()
    user.apply([diff(0, T1, T0)])
    assert user.range_sum("steps", MIN_TS, MAX_TS) == 0


def test_usercounters_no_op_diff_on_a_new_metric_filtered_reads() -> None:
    user = UserCounters()
    user.apply([diff(0, T1, T0)])
    assert user.range_sum("steps", MIN_TS, MAX_TS, atid=2) == 0
    assert user.range_sum("steps", MIN_TS, MAX_TS, aid=3) == 0
    assert user.breakdown("steps", [0, T1, MAX_TS + 1]) == [0, 0]
    assert user.atids(["steps"], MIN_TS, MAX_TS) == []


def test_usercounters_diff_zero_value_is_a_no_op() -> None:
    user = UserCounters()
    user.apply([("steps", 0, None, T0, 0, T0, ADD)])  # the metric exists (see the xfail above)
    user.apply([diff(0, T1, T0)])
    user._check()
    assert user.range_sum("steps", MIN_TS, MAX_TS) == 0
    # Nothing was written, so the activity did not contribute (PSD: no HINCRBY, no field).
    assert user.atids(["steps"], MIN_TS, MAX_TS) == []
    assert user.statistics().activities == 0


def test_usercounters_diff_same_value_again_is_a_no_op() -> None:
    user = UserCounters()
    user.apply([diff(10, T1, T0)])
    cells = user.statistics().cells
    user.apply([diff(10, T1 + 100, T0)])  # nothing new since the last report
    assert user.range_sum("steps", MIN_TS, MAX_TS) == 10
    assert user.statistics().cells == cells


def test_usercounters_diff_uncovered_window_adds_full_value_again_d7() -> None:
    user = UserCounters()
    user.apply([diff(10, T0 + 100, T0)])
    # [ts1, ts2] starts after the earlier write: "already" is 0, so the full value is added.
    user.apply([diff(15, T0 + 300, T0 + 200)])
    user._check()
    assert user.range_sum("steps", MIN_TS, MAX_TS) == 25
    assert user.range_sum("steps", T0 + 300, T0 + 300) == 15


def test_usercounters_diff_is_per_activity_and_metric() -> None:
    user = UserCounters()
    user.apply(
        [diff(10, T1, T0, aid=1), diff(10, T1, T0, aid=2), diff(10, T1, T0, aid=1, metric="points")]
    )
    assert user.range_sum("steps", T0, T1) == 20
    assert user.range_sum("points", T0, T1) == 10
    user.apply([diff(12, T1 + 1, T0, aid=1)])
    assert user.range_sum("steps", T0, T1 + 1) == 22
    assert user.range_sum("steps", T0, T1 + 1, aid=1) == 12
    assert user.range_sum("points", T0, T1 + 1) == 10


def test_usercounters_diff_counts_add_writes_of_the_same_activity() -> None:
    user = UserCounters()
    user.apply([("steps", 2, 3, T1, 4, T1, ADD)])
    user.apply([diff(10, T1, T0)])
    assert user.range_sum("steps", MIN_TS, MAX_TS) == 10


def test_usercounters_add_mode_accumulates() -> None:
    user = UserCounters()
    for _ in range(3):
        user.apply([("steps", 2, None, T1, 10, T1, ADD)])
    user._check()
    assert user.range_sum("steps", T1, T1) == 30
    assert user.atids(["steps"], MIN_TS, MAX_TS) == []  # no aid, no activity


def test_usercounters_huge_values_sum_exactly() -> None:
    user = UserCounters()
    big = 2**63 - 1
    user.apply([("steps", 0, None, T1 + i, big, T1 + i, ADD) for i in range(10)])
    user.apply([diff(big, T1 + 20, T1 + 20, aid=i) for i in range(10)])
    user._check()
    assert user.range_sum("steps", MIN_TS, MAX_TS) == 20 * big
    assert user.range_sum("steps", MIN_TS, MAX_TS) > 2**64


############################################################################################
# Filters and breakdowns


def test_usercounters_atid_and_aid_filters() -> None:
    user = UserCounters()
    user.apply(
        [
            diff(10, T1, T0, aid=1, atid=2),
            diff(20, T1, T0, aid=2, atid=2),
            diff(40, T1, T0, aid=3, atid=5),
            ("steps", 5, None, T1, 80, T1, ADD),
        ]
    )
    assert user.range_sum("steps", T0, T1) == 150
    assert user.range_sum("steps", T0, T1, atid=2) == 30
    assert user.range_sum("steps", T0, T1, atid=5) == 120
    assert user.range_sum("steps", T0, T1, atid=7) == 0
    assert user.range_sum("steps", T0, T1, aid=3) == 40
    assert user.range_sum("steps", T0, T1, atid=5, aid=3) == 40
    assert user.range_sum("steps", T0, T1, atid=2, aid=3) == 0
    assert user.range_sum("steps", T0, T1, aid=99) == 0
    assert user.range_sum("nothing", T0, T1) == 0


def test_usercounters_breakdown_sums_equal_range_sums() -> None:
    user = UserCounters()
    rng = random.Random(1)
    base = ts_of(2015, 12, 30)
    for _ in range(200):
        ts = base + rng.randrange(70 * 86400)
        user.apply([("steps", rng.choice([1, 2]), None, ts, rng.randrange(-5, 50), ts, ADD)])
    bounds = sorted(
        {base + rng.randrange(70 * 86400) for _ in range(12)} | {base, base + 70 * 86400}
    )
    for atid in (None, 1, 2, 3):
        parts = user.breakdown("steps", bounds, atid)
        assert len(parts) == len(bounds) - 1
        assert parts == [user.range_sum("steps", a, b - 1, atid) for a, b in pairwise(bounds)]
        assert sum(parts) == user.range_sum("steps", bounds[0], bounds[-1] - 1, atid)
    assert user.breakdown("never", bounds) == [0] * (len(bounds) - 1)


############################################################################################
# _atids (psd.md section 1.6)


def test_usercounters_atids_one_entry_per_activity_with_duplicates() -> None:
    user = UserCounters()
    user.apply(
        [
            diff(10, T1, T0, aid=1, atid=2),
            diff(5, T1, T0, aid=2, atid=2),
            diff(20, T1, T0, aid=3, atid=5),
        ]
    )
    # Several writes to one activity still give one entry.
    user.apply([diff(15, T1 + 5, T0, aid=1, atid=2)])
    assert sorted(user.atids(["steps"], T0, T1 + 5)) == [2, 2, 5]


def test_usercounters_atids_dedupe_across_metrics() -> None:
    user = UserCounters()
    user.apply([diff(10, T1, T0, aid=1, metric="steps"), diff(3, T1, T0, aid=1, metric="points")])
    user.apply([diff(7, T1, T0, aid=2, atid=5, metric="points")])
    assert sorted(user.atids(["steps", "points"], T0, T1)) == [2, 5]
    assert user.atids(["steps"], T0, T1) == [2]
    assert sorted(user.atids(["points"], T0, T1)) == [2, 5]
    assert user.atids(["calories"], T0, T1) == []


def test_usercounters_atids_atid_filter() -> None:
    user = UserCounters()
    user.apply(
        [
            diff(10, T1, T0, aid=1, atid=2),
            diff(5, T1, T0, aid=2, atid=2),
            diff(20, T1, T0, aid=3, atid=5),
        ]
    )
    assert user.atids(["steps"], T0, T1, atid=2) == [2, 2]
    assert user.atids(["steps"], T0, T1, atid=5) == [5]
    assert user.atids(["steps"], T0, T1, atid=9) == []


def test_usercounters_atids_partial_months_at_range_edges() -> None:
    user = UserCounters()
    mar, apr, may = ts_of(2016, 3, 1), ts_of(2016, 4, 1), ts_of(2016, 5, 1)
    day = 86400
    user.apply(
        [
            diff(1, mar + 2 * day, mar + 2 * day, aid=1, atid=11),  # March, before the range
            diff(2, mar + 24 * day, mar + 24 * day, aid=2, atid=12),  # March, in range
            diff(3, apr + 10 * day, apr + 10 * day, aid=3, atid=13),  # April: a whole month
            diff(4, may + 25 * day, may + 25 * day, aid=4, atid=14),  # May, after the range
            diff(5, may + 2 * day, may + 2 * day, aid=5, atid=15),  # May, in range
            diff(6, mar + 1 * day, mar + 1 * day, aid=6, atid=16),  # March before, but also:
            diff(7, apr + 1 * day, apr + 1 * day, aid=6, atid=16),  # April, in range
        ]
    )
    t1, t2 = mar + 10 * day, may + 20 * day
    assert sorted(user.atids(["steps"], t1, t2)) == [12, 13, 15, 16]
    # Inside one month, points of that month outside the range do not count.
    assert user.atids(["steps"], mar + 10 * day, mar + 20 * day) == []
    assert user.atids(["steps"], mar + 20 * day, mar + 30 * day) == [12]
    # Exact edges: a point at t1 or t2 counts, one second outside does not.
    point = mar + 24 * day
    assert user.atids(["steps"], point, point) == [12]
    assert user.atids(["steps"], point + 1, apr - 1) == []
    assert sorted(user.atids(["steps"], mar, point - 1)) == [11, 16]


def test_usercounters_atids_over_long_ranges_with_few_months() -> None:
    user = UserCounters()
    user.apply(
        [diff(1, ts_of(1970, 1, 1), MIN_TS, aid=1, atid=1), diff(1, MAX_TS, MAX_TS, aid=2, atid=2)]
    )
    assert sorted(user.atids(["steps"], MIN_TS, MAX_TS)) == [1, 2]
    assert user.atids(["steps"], MIN_TS + 1, MAX_TS) == [2]
    assert user.atids(["steps"], MIN_TS, MAX_TS - 1) == [1]
    assert user.atids(["steps"], MIN_TS + 1, MAX_TS - 1) == []
    assert user.atids(["steps"], 10, 5) == []


def test_usercounters_atids_count_an_activity_whose_sum_is_zero() -> None:
    # PSD's HINCRBY leaves a field holding 0, and the script still sees the aid.
    user = UserCounters()
    user.apply([diff(10, T1, T0)])
    user.apply([diff(0, T1 + 10, T0)])  # corrects back to 0
    assert user.range_sum("steps", T0, T1 + 10) == 0
    assert user.atids(["steps"], T0, T1 + 10) == [2]


def test_usercounters_plain_round_trip_keeps_atids_order() -> None:
    user = UserCounters()
    feb, mar = ts_of(2016, 2, 1), ts_of(2016, 3, 1)
    user.apply([diff(5, feb + 10, feb + 10, aid=1, atid=2)])  # activity 1 is created first
    user.apply([diff(5, mar + 10, mar + 10, aid=2, atid=5)])  # activity 2 writes first in March
    user.apply([diff(10, mar + 20, mar + 20, aid=1, atid=2)])
    before = user.atids(["steps"], mar, mar + 100)
    assert before == [5, 2]
    assert UserCounters.from_plain(user.to_plain()).atids(["steps"], mar, mar + 100) == before


def test_usercounters_statistics() -> None:
    user = UserCounters()
    assert user.statistics() == CounterStatistics(metrics=0, series=0, cells=0, activities=0)
    user.apply(
        [
            diff(10, T1, T0, aid=1),
            diff(5, T1, T0, aid=2, atid=5),
            ("points", 0, None, T1, 1, T1, ADD),
        ]
    )
    stats = user.statistics()
    assert (stats.metrics, stats.series, stats.activities) == (2, 3, 2)
    assert stats.cells == 3  # one (second, running total) entry per series (PrefixSeries)


def test_usercounters_plain_round_trip_is_plain_data() -> None:
    user = UserCounters()
    user.apply([diff(10, T1, T0, aid=1), ("points", 4, None, T1, 1, T1, ADD)])
    plain = user.to_plain()

    def only_plain(x: object) -> bool:
        if isinstance(x, (list, tuple)):
            return all(only_plain(i) for i in x)
        # bytes: a series' packed int64 columns (engine/prefix_series.py), msgpack's bin type.
        return x is None or (isinstance(x, (int, str, bytes)) and not isinstance(x, bool))

    assert only_plain(plain)
    restored = UserCounters.from_plain(plain)
    assert restored.to_plain() == plain
    assert Counter(restored.atids(["steps", "points"], MIN_TS, MAX_TS)) == Counter([2])


############################################################################################
# GlobalCounter


def test_globalcounter_adds_and_sums() -> None:
    counter = GlobalCounter()
    t = 1458061005
    counter.apply([(t, 1), (t, 1), (t + 86400 * 40, 5), (MIN_TS, 2), (MAX_TS, 3)])
    counter.series._check()
    assert counter.range_sum(t, t) == 2
    assert counter.range_sum(t, t + 86400 * 40) == 7
    assert counter.range_sum(MIN_TS, MAX_TS) == 12
    assert counter.range_sum(t + 1, t + 86400 * 40 - 1) == 0
    assert counter.range_sum(t + 1, t) == 0


def test_globalcounter_plain_round_trip() -> None:
    counter = GlobalCounter()
    counter.apply([(ts_of(2016, 2, 29), 1), (ts_of(2016, 3, 1), 2**64)])
    copy = GlobalCounter.from_plain(counter.to_plain())
    copy.series._check()
    assert copy.range_sum(MIN_TS, MAX_TS) == 2**64 + 1
    assert copy.range_sum(ts_of(2016, 2, 29), ts_of(2016, 3, 1) - 1) == 1
    assert copy.applied_seq == 0


############################################################################################
# Issue 17: `before` stops at a parent cell that was never written (property test)


#: Seconds that share or split every level: a leap day, month and year ends, a minute's edges.
_ANCHORS = [ts_of(2016, 2, 29) + 59, ts_of(2016, 12, 31) + 86399, ts_of(2019, 6, 15) + 45000,
            ts_of(2019, 7, 1), ts_of(2023, 1, 31) + 3600 * 23 + 60 * 59 + 30]
_NEAR = st.builds(lambda anchor, shift: max(MIN_TS, anchor + shift), st.sampled_from(_ANCHORS),
                  st.sampled_from([0, 1, 59, 60, 61, 3599, 3600, 86399, 86400, 40 * 86400,
                                   400 * 86400]) | st.integers(-2 * 86400, 2 * 86400))


@settings(max_examples=300, deadline=None)
@given(writes=st.lists(st.tuples(_NEAR, st.integers(-5, 5)), min_size=1, max_size=40),
       probes=st.lists(_NEAR, min_size=1, max_size=20))
def test_issue_17_before_matches_brute_force(writes: list[tuple[int, int]], probes: list[int]) -> None:
    series = CounterSeries()
    for ts, delta in writes:
        series.add(ts, delta)
    series._check()
    for t in probes:
        assert series.before(t) == sum(d for ts, d in writes if ts < t), t
        assert series.range_sum(t - 61, t) == sum(d for ts, d in writes if t - 61 <= ts <= t), t
    for t1, t2 in pairwise(sorted(probes)):
        assert series.range_sum(t1, t2) == sum(d for ts, d in writes if t1 <= ts <= t2), (t1, t2)


def test_deltas_past_int64_through_the_write_path_and_a_snapshot() -> None:
    """A diff-mode delta may leave int64 although every value is validated to it: the
    activity's points and the series' running totals turn to Python ints, exactly."""
    import msgpack

    from snapshots.codec import _convert_big_ints, _ext_hook

    user = UserCounters()
    user.apply([("m", 1, 7, T0, -(2**63), T0, ADD), ("m", 2, None, T0, 1, T0, ADD)])
    user.apply([("m", 1, 7, T1, 2**63 - 1, T0, DIFF)])  # delta: 2**64 - 1, one activity point
    user.apply([("m", 1, None, T1 + 1, 2**63 - 1, T1 + 1, ADD)])  # running totals leave int64
    expected = {(T1, T1): 2**64 - 1, (T0, T1): 2**63, (T0, T1 + 1): 2**64 - 1}
    for (t1, t2), total in expected.items():
        assert user.range_sum("m", t1, t2) == total
    assert user.range_sum("m", T0, T1, aid=7) == 2**63 - 1
    user._check()
    packed = msgpack.packb(_convert_big_ints(user.to_plain()), use_bin_type=True)
    restored = UserCounters.from_plain(msgpack.unpackb(packed, raw=False, ext_hook=_ext_hook,
                                                       strict_map_key=False))
    restored._check()
    for (t1, t2), total in expected.items():
        assert restored.range_sum("m", t1, t2) == total
    assert restored.range_sum("m", T0, T1, atid=1) == 2**63 - 1  # -2**63 + (2**64 - 1)


def test_an_activity_revisiting_recent_seconds_stores_no_more_pairs() -> None:
    """Two clients reporting one activity alternately: writes revisit the second before the
    latest, and add to its pair instead of appending one each (found by review: 20,000 such
    writes had stored 20,000 pairs)."""
    activity = Activity(1)
    for i in range(20_000):
        activity.add(100 + i % 2, 1)
    assert len(activity.points) == 4
    assert activity.pairs() == [(100, 10_000), (101, 10_000)]
    for i in range(20):  # older seconds than the recent window still land, as new pairs
        activity.add(50 + i, 1)
    activity.add(50, 1)
    assert activity.range_sum(50, 50) == 2 and activity.range_sum(0, 99) == 21
