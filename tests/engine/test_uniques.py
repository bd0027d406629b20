"""Unique-set series (engine/uniques.py): counts against brute force, the exact-to-sketch
switch, unions, rounding, retention, snapshots and replay through the engine."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.engine import Engine
from engine.errors import InvalidInput, PayloadTooLarge
from engine.periods import load_zone, period_bounds
from engine.timebuckets import DAY, HOUR, MAX_TS, MINUTE, MONTH, YEAR, decompose
from engine.uniques import (
    MAX_QUERY_BUCKETS,
    NARRATIVE_CONFIG,
    UNIQUE,
    AddUniques,
    BucketBudget,
    Partial,
    UniqueConfig,
    UniqueSeries,
    UniqueSettings,
    member_key,
    member_of,
    validate_unique_items,
)

BASE = 1451606400  # 2016-01-01T00:00:00Z
LEVEL_SETS = [
    (MINUTE, HOUR, DAY, MONTH, YEAR),
    (HOUR,),
    (MINUTE, DAY),
    (HOUR, MONTH),
    (DAY, YEAR),
    (MINUTE, HOUR, YEAR),
]


def brute(points: list[tuple[int, int]], t1: int, t2: int) -> int:
    return len({key for ts, key in points if t1 <= ts <= t2})


def aligned(levels: tuple[int, ...], ts: int) -> bool:
    """``ts`` starts a bucket of the finest kept level."""
    from engine.timebuckets import bucket_of, bucket_start

    return bucket_start(levels[0], bucket_of(levels[0], ts)) == ts


############################################################################################
# Counts against brute force


@settings(max_examples=150, deadline=None)
@given(
    levels=st.sampled_from(LEVEL_SETS),
    points=st.lists(
        st.tuples(st.integers(0, 70 * 86400), st.integers(0, 40)), min_size=0, max_size=120
    ),
    ranges=st.lists(st.tuples(st.integers(-86400, 80 * 86400), st.integers(0, 40 * 86400)),
                    min_size=1, max_size=8),
)
def test_uniqueseries_count_matches_brute_force_over_the_covered_range(
    levels: tuple[int, ...], points: list[tuple[int, int]], ranges: list[tuple[int, int]]
) -> None:
    series = UniqueSeries(UniqueConfig(levels=levels, exact_limit=None))
    stored = [(BASE + ts, key) for ts, key in points]
    series.apply(stored)
    series._check()
    for offset, length in ranges:
        t1 = max(0, BASE + offset)
        t2 = t1 + length
        result = series.count(t1, t2)
        assert result.exact
        assert result.t1 <= t1 and result.t2 >= t2
        assert result.rounded == ((result.t1, result.t2) != (t1, t2))
        assert aligned(levels, result.t1) and aligned(levels, result.t2 + 1)
        assert result.count == brute(stored, result.t1, result.t2)


@settings(max_examples=60, deadline=None)
@given(
    points=st.lists(st.tuples(st.integers(0, 20 * 86400), st.integers(0, 30)), max_size=80),
    start=st.integers(0, 10 * 86400),
    length=st.integers(0, 15 * 86400),
    step=st.sampled_from(["hour", "day", 7200, 86400 * 3]),
    tz=st.sampled_from([None, "Europe/Oslo", "Asia/Kolkata", "America/St_Johns"]),
)
def test_uniqueseries_breakdown_matches_brute_force_per_period(
    points: list[tuple[int, int]], start: int, length: int, step: Any, tz: str | None
) -> None:
    series = UniqueSeries(UniqueConfig(exact_limit=None))
    stored = [(BASE + ts, key) for ts, key in points]
    series.apply(stored)
    t1, t2 = BASE + start, BASE + start + length
    bounds = period_bounds(t1, t2, step, zone=load_zone(tz))
    counts = series.breakdown(bounds)
    assert len(counts) == len(bounds) - 1
    for (a, b), result in zip(zip(bounds, bounds[1:], strict=False), counts, strict=True):
        assert result.t1 <= a and result.t2 >= b - 1
        assert result.count == brute(stored, result.t1, result.t2)
        # Minutes are kept, so a period on whole minutes (every one here but Kolkata's and
        # St John's half hours at a clipped edge) is answered exactly as asked.
        if a % 60 == 0 and b % 60 == 0:
            assert (result.t1, result.t2) == (a, b - 1) and not result.rounded


def test_uniqueseries_cover_takes_the_fewest_whole_buckets() -> None:
    series = UniqueSeries(UniqueConfig())
    series.apply([(BASE, 1), (BASE + 400 * 86400, 2)])
    # 2016-01-01 .. 2016-12-31 is the year 2016: one bucket.
    start, end, keys = series.cover(BASE, BASE + 366 * 86400 - 1)
    assert (start, end, keys) == (BASE, BASE + 366 * 86400 - 1, [46 * 8 + YEAR])
    # 2016-01-01 00:00 .. 2016-01-02 01:29: a day, an hour, 29 + 1 minutes -- of which only
    # the day holds data, so only the day is taken.
    t2 = BASE + 86400 + 3600 + 29 * 60 + 59
    start, end, runs = series.plan(BASE, t2)
    day, hour, minute = BASE // 86400, (BASE + 86400) // 3600, (BASE + 90000) // 60
    assert runs == [(DAY, day, day + 1), (HOUR, hour, hour + 1), (MINUTE, minute, minute + 30)]
    assert series.cover_size(BASE, t2) == 32
    assert series.cover(BASE, t2)[2] == [day * 8 + DAY]
    assert series.count(BASE, t2).public()["buckets"] == 1
    assert series.count(BASE, BASE + 86400 + 5399).count == 1


def test_issue_13_a_whole_day_is_the_day_bucket_however_late_its_data() -> None:
    # 2023-11-14: data from 15:21 on; the day was answered by 35 hours and minutes.
    series = UniqueSeries(UniqueConfig())
    series.apply([(1699975260, 1), (1699990000, 2)])
    start, end, keys = series.cover(1699920000, 1700006399)
    assert (start, end, keys) == (1699920000, 1700006399, [(1699920000 // 86400) * 8 + DAY])
    assert series.count(1699920000, 1700006399).public()["buckets"] == 1


def minimal_cover(t1: int, t2: int, first: int, last: int) -> list[int]:
    """engine/timebuckets.py's decomposition of [t1, t2] (all levels kept, minute-aligned
    edges: no second buckets), less the buckets wholly outside [first, last]."""
    from engine.timebuckets import bucket_start

    keys = []
    for level, lo, hi in decompose(t1, t2):
        for bucket in range(lo, hi + 1):
            if bucket_start(level, bucket + 1) > first and bucket_start(level, bucket) <= last:
                keys.append(bucket * 8 + level)
    return keys


@settings(max_examples=300, deadline=None)
@given(
    points=st.lists(st.integers(0, 800 * 1440), min_size=1, max_size=6),
    start=st.integers(0, 800 * 1440),
    length=st.integers(1, 800 * 1440),
)
def test_uniqueseries_cover_is_the_minimal_decomposition_where_data_is(
    points: list[int], start: int, length: int
) -> None:
    series = UniqueSeries(UniqueConfig())
    series.apply([(BASE + 60 * minute, i) for i, minute in enumerate(points)])
    t1, t2 = BASE + 60 * start, BASE + 60 * (start + length) - 1
    got_start, got_end, keys = series.cover(t1, t2)
    assert (got_start, got_end) == (t1, t2)
    # The plan is the minimal decomposition, bucket for bucket; its size is what is charged.
    every = minimal_cover(t1, t2, 0, MAX_TS)
    assert [b * 8 + lv for lv, lo, hi in series.plan(t1, t2)[2] for b in range(lo, hi)] == every
    assert series.cover_size(t1, t2) == len(every)
    # The cover takes only its buckets that hold data, in time order.
    assert keys == [k for k in every if k in series.cells]


def test_uniqueseries_edges_inside_a_minute_are_rounded_and_said() -> None:
    series = UniqueSeries(UniqueConfig())
    series.apply([(BASE + 10, 1), (BASE + 50, 2), (BASE + 70, 3)])
    result = series.count(BASE + 30, BASE + 65)
    assert (result.t1, result.t2, result.rounded) == (BASE, BASE + 119, True)
    assert result.count == 3
    exact = series.count(BASE, BASE + 59)
    assert (exact.count, exact.rounded) == (2, False)


def test_uniqueseries_range_needing_too_many_buckets_is_refused() -> None:
    series = UniqueSeries(UniqueConfig(levels=(MINUTE,)))
    series.apply([(BASE, 1), (BASE + (MAX_QUERY_BUCKETS + 5) * 60, 2)])
    with pytest.raises(InvalidInput, match=r"at the kept resolutions \['minute'\] takes 100011 buckets, past the "
                                           r"100000 one request may take; ask for a shorter range") as info:
        series.count(BASE, BASE + (MAX_QUERY_BUCKETS + 10) * 60)
    assert info.value.field == "t1"
    # The budget is the cover's size, whatever the data: an empty stretch counts as well.
    with pytest.raises(InvalidInput):
        series.count(BASE + 600, BASE + (MAX_QUERY_BUCKETS + 10) * 60)
    assert series.count(BASE, BASE + (MAX_QUERY_BUCKETS - 1) * 60).count == 1


def test_issue_red_team_a_sparse_series_over_centuries_costs_its_data() -> None:
    # One member in 1970 and one in 9999: the whole range is 8,030 year buckets, but the
    # count visits the two that hold data (the walk used to try every bucket in between).
    series = UniqueSeries(UniqueConfig())
    series.apply([(0, 1), (MAX_TS, 2)])
    start, end, runs = series.plan(1, MAX_TS - 1)
    assert (start, end, runs) == (0, MAX_TS, [(YEAR, 0, 8030)])
    assert series.cover(1, MAX_TS - 1)[2] == [0 * 8 + YEAR, 8029 * 8 + YEAR]
    result = series.count(1, MAX_TS - 1)
    assert (result.count, result.exact, result.buckets, result.rounded) == (2, True, 2, True)
    # Unaligned edges: minutes, hours, days and months at each end, all planned in runs.
    t1, t2 = 86400 * 40 + 3600 * 5 + 60 * 7, MAX_TS - 86400 * 40 - 3600 * 5 - 60 * 7
    assert len(series.plan(t1, t2)[2]) <= 2 * 5
    assert series.count(t1, t2).count == 0
    assert series.cover_size(t1, t2) == sum(hi - lo + 1 for _, lo, hi in decompose(t1, t2))


def test_a_budget_is_shared_by_every_count_of_a_request() -> None:
    series = UniqueSeries(UniqueConfig())
    series.apply([(BASE + 60 * i, i) for i in range(100)])
    budget = BucketBudget(limit=10, field="step", advice="use a coarser step")
    bounds = [BASE + 180 * i for i in range(4)]  # three periods of three minutes
    assert [c.count for c in series.breakdown(bounds, budget)] == [3, 3, 3]
    assert budget.left == 1
    with pytest.raises(InvalidInput, match=r"takes 3 buckets, past the 10 one request may take; use a coarser step"):
        series.breakdown(bounds[:2], budget)
    # Without one, each count has MAX_QUERY_BUCKETS of its own (statshub's breakdowns).
    assert len(series.breakdown(bounds)) == 3


def old_greedy_walk(series: UniqueSeries, t1: int, t2: int) -> tuple[int, int, list[int]]:
    """The cover as the walk before the budget took it, bucket by bucket (every bucket, empty
    or not): at each step the coarsest kept, unexpired bucket starting at the cursor that
    ends within the range, else the finest such bucket, with the end rounded out to it."""
    from engine.timebuckets import bucket_of, bucket_start

    levels = series.config.levels if series.config else UniqueConfig().levels
    start, end = series._edges(t1, t2)
    cursor, keys = start, []
    while cursor < end:
        chosen = fallback = None
        for level in levels[::-1]:
            bucket = bucket_of(level, cursor)
            if bucket_start(level, bucket) != cursor or not series._available(level, bucket):
                continue
            after = bucket_start(level, bucket + 1)
            if after <= end:
                chosen = (level, bucket, after)
                break
            fallback = (level, bucket, after)
        if chosen is None:
            assert fallback is not None
            chosen = fallback
            end = fallback[2]
        level, bucket, cursor = chosen
        keys.append(bucket * 8 + level)
    return start, end - 1, keys


@settings(max_examples=200, deadline=None)
@given(
    levels=st.sampled_from(LEVEL_SETS),
    points=st.lists(st.tuples(st.integers(0, 70 * 86400), st.integers(0, 40)), max_size=60),
    expiring=st.integers(0, 4),
    cutoff=st.integers(0, 70 * 86400),
    shrink=st.lists(st.integers(0, 20 * 86400), min_size=4, max_size=4),
    ranges=st.lists(st.tuples(st.integers(-86400, 75 * 86400), st.integers(0, 4 * 86400)),
                    min_size=1, max_size=6),
)
def test_plan_is_the_greedy_walk_with_retention_and_counts_match_brute_force(
    levels: tuple[int, ...], points: list[tuple[int, int]], expiring: int, cutoff: int,
    shrink: list[int], ranges: list[tuple[int, int]],
) -> None:
    series = UniqueSeries(UniqueConfig(levels=levels, exact_limit=None))
    stored = [(BASE + ts, key) for ts, key in points]
    series.apply(stored[::2])
    series.apply(stored[1::2][::-1])  # out of order: the index merges late buckets
    # Retention: the finest ``expiring`` levels (never the coarsest), finer cutoffs later.
    cutoffs = [0] * 6
    at = BASE + cutoff
    for level, less in zip(levels[:-1][:expiring], shrink, strict=False):
        cutoffs[level] = at
        at = max(BASE, at - less)
    series.expire(cutoffs)
    series._check()
    for offset, length in ranges:
        t1 = max(0, BASE + offset)
        t2 = t1 + length
        start, end, every = old_greedy_walk(series, t1, t2)
        got_start, got_end, runs = series.plan(t1, t2)
        assert (got_start, got_end) == (start, end)
        assert [b * 8 + lv for lv, lo, hi in runs for b in range(lo, hi)] == every
        assert series.cover(t1, t2)[2] == [k for k in every if k in series.cells]
        result = series.count(t1, t2)
        assert (result.t1, result.t2) == (start, end)
        assert result.count == brute(stored, result.t1, result.t2)


############################################################################################
# Exact, then a sketch


def test_uniqueseries_switches_a_bucket_to_a_sketch_past_the_limit() -> None:
    series = UniqueSeries(UniqueConfig(levels=(HOUR, DAY), exact_limit=100))
    series.apply([(BASE + i, i) for i in range(100)])
    assert series.statistics().sketch_cells == 0
    hour = series.count(BASE, BASE + 3599)
    assert (hour.count, hour.exact) == (100, True)
    series.apply([(BASE + 100, 100)])
    series._check()
    stats = series.statistics()
    assert (stats.exact_cells, stats.sketch_cells) == (0, 2)
    result = series.count(BASE, BASE + 3599)
    assert not result.exact and result.std_devs == 2
    assert result.lower is not None and result.upper is not None
    assert result.lower <= 101 <= result.upper
    assert result.count == 101  # HLL is exact-ish at this size (list/set mode)
    # A re-added member changes nothing, in the sketch too.
    series.apply([(BASE + 5, 5)])
    assert series.count(BASE, BASE + 3599).count == 101


def test_uniqueseries_zero_limit_sketches_at_once_and_none_never() -> None:
    sketching = UniqueSeries(UniqueConfig(exact_limit=0))
    sketching.apply([(BASE, 1)])
    assert sketching.statistics().exact_cells == 0
    assert not sketching.count(BASE, BASE + 59).exact
    exact = UniqueSeries(UniqueConfig(levels=(HOUR,), exact_limit=None))
    exact.apply([(BASE, i) for i in range(20_000)])
    assert exact.count(BASE, BASE).count == 20_000 and exact.count(BASE, BASE).exact


def test_union_of_exact_buckets_stays_exact_across_buckets() -> None:
    series = UniqueSeries(UniqueConfig(levels=(HOUR,), exact_limit=1000))
    series.apply([(BASE + 10, i) for i in range(600)])  # hour 0: 0..599
    series.apply([(BASE + 3700, i) for i in range(300, 900)])  # hour 1: 300..899
    result = series.count(BASE, BASE + 7199)
    assert (result.count, result.exact, result.buckets) == (900, True, 2)


def test_union_with_a_sketch_is_a_sketch_bounded_by_its_exact_part() -> None:
    series = UniqueSeries(UniqueConfig(levels=(HOUR,), exact_limit=1000))
    series.apply([(BASE + 10, i) for i in range(5000)])  # hour 0: sketch
    series.apply([(BASE + 3700, i) for i in range(4500, 5500)])  # hour 1: exact, 500 new
    result = series.count(BASE, BASE + 7199)
    assert not result.exact
    assert result.lower is not None and result.upper is not None
    assert result.lower >= 1000  # the exact hour alone
    assert result.lower <= 5500 <= result.upper
    assert abs(result.count - 5500) / 5500 < 0.03


@pytest.mark.parametrize("size", [10_000, 50_000])
def test_sketch_error_is_within_its_stated_bounds(size: int) -> None:
    series = UniqueSeries(UniqueConfig(levels=(DAY,), exact_limit=100))
    rng = random.Random(size)
    keys = [rng.getrandbits(64) for _ in range(size)]
    series.apply([(BASE, k) for k in keys])
    result = series.count(BASE, BASE)
    assert result.lower is not None and result.upper is not None
    assert result.lower <= size <= result.upper
    assert abs(result.count - size) / size < 0.025  # 3 RSE at lg_k 14
    # A saturated bucket stays small: DataSketches' compact HLL_4 at lg_k 14.
    plain = series.to_plain()
    assert plain is not None and len(plain[4][0][2]) <= 16 * 1024


def test_keys_past_2_63_are_counted_apart_in_sketches() -> None:
    series = UniqueSeries(UniqueConfig(levels=(DAY,), exact_limit=0))
    series.apply([(BASE, 2**64 - 1 - i) for i in range(500)])
    assert 490 <= series.count(BASE, BASE).count <= 510


############################################################################################
# Members, validation, settings


def test_issue_13_string_and_integer_members_never_collide() -> None:
    # member_key("alice") is this integer: one bitmap counted them once.
    twin = member_key("alice")
    assert twin == 9933345172075899469
    for config in (UniqueConfig(), NARRATIVE_CONFIG, UniqueConfig(exact_limit=0)):
        series = UniqueSeries(config)
        series.apply([(BASE, "alice"), (BASE + 1, twin), (BASE + 2, "alice"), (BASE + 3, twin)])
        series._check()
        result = series.count(BASE, BASE + 3599)
        assert result.count == 2, config
        assert result.exact == (config.exact_limit != 0)


def test_exact_to_sketch_switch_feeds_strings_and_ids_apart() -> None:
    # 300 strings and the 300 integers their hashes equal: 600 distinct members.
    members: list[int | str] = [f"user-{i}" for i in range(300)]
    members += [member_key(m) for m in members]
    series = UniqueSeries(UniqueConfig(levels=(HOUR,), exact_limit=400))
    series.apply([(BASE, m) for m in members])
    series._check()
    result = series.count(BASE, BASE + 3599)
    assert not result.exact and result.lower <= 600 <= result.upper
    assert abs(result.count - 600) <= 12  # 2% at lg_k 14; collapsing the kinds would give 300


def test_narrative_series_keeps_usernames_as_text() -> None:
    series = UniqueSeries(NARRATIVE_CONFIG)
    series.apply([(BASE, "alice"), (BASE, "bob"), (BASE, 42), (BASE, "alice")])
    cell = series.cells[(BASE // 3600) * 8 + HOUR]
    assert cell.strings == {"alice", "bob"} and list(cell.ints) == [42] and cell.size == 3
    plain = msgpack.unpackb(msgpack.packb(series.to_plain(), use_bin_type=True), strict_map_key=False)
    restored = UniqueSeries.from_plain(plain)
    restored._check()
    assert restored.cells[(BASE // 3600) * 8 + HOUR].strings == {"alice", "bob"}
    assert restored.count(BASE, BASE + 3599).count == 3


def test_union_across_text_and_hashed_series_counts_each_member_once() -> None:
    text = UniqueSeries(NARRATIVE_CONFIG)
    hashed = UniqueSeries(UniqueConfig(levels=(HOUR,)))
    text.apply([(BASE, "alice"), (BASE, "bob")])
    hashed.apply([(BASE, "alice"), (BASE, member_key("alice")), (BASE, "carol")])
    merged = Partial()
    for series in (text, hashed):
        merged.merge(series.union_part(BASE, BASE + 3599)[2])
    assert merged.result(BASE, BASE + 3599, False).count == 4  # alice, bob, carol, the twin


def test_member_of_keeps_strings_and_ids_apart() -> None:
    assert member_of("alice") == "alice" and member_of("42") == 42 and member_of("042") == "042"
    assert member_of(2**64 - 1) == 2**64 - 1 and member_of("18446744073709551616") == "18446744073709551616"


def test_member_key_is_stable_and_canonical() -> None:
    # BLAKE2b, not hash(): the same in every process (pinned, since keys are in the log).
    assert member_key("alice") == 9933345172075899469
    assert member_key("42") == member_key(42) == 42
    assert member_key("042") != 42
    assert member_key(2**64 - 1) == 2**64 - 1
    assert member_key("18446744073709551616") != 0  # past u64: a string, hashed
    for bad in (-1, 2**64, True, None, "", "a\x00b", "x" * 201, 1.5):
        with pytest.raises(InvalidInput):
            member_key(bad)


def test_validate_unique_items_names_the_field() -> None:
    good = {"name": "visitors", "member": "a", "ts": 60}
    with pytest.raises(InvalidInput, match=r"^body\[1\]\.member is required$"):
        validate_unique_items([good, {"name": "v", "ts": 1}])
    with pytest.raises(InvalidInput, match=r"^body\[0\]\.ts must be between 0 and"):
        validate_unique_items([{**good, "ts": -1}])
    with pytest.raises(InvalidInput, match=r"^body\[0\] has unknown fields \['x'\]"):
        validate_unique_items([{**good, "x": 1}])
    with pytest.raises(InvalidInput, match=r"^body\[0\]\.name: names starting with 'narrative\.' are written only by"):
        validate_unique_items([{**good, "name": "narrative.users"}])
    assert validate_unique_items([{**good, "name": "narrative.users"}], reserved_ok=True)
    with pytest.raises(PayloadTooLarge):
        validate_unique_items([good] * 100_001)
    with pytest.raises(InvalidInput, match=r"^body must be a list"):
        validate_unique_items({"name": "x"})


def test_unique_settings_are_checked() -> None:
    assert UniqueSettings(levels=("hour", "day")).config().levels == (HOUR, DAY)
    with pytest.raises(InvalidInput, match=r"^unique_levels must be"):
        UniqueSettings(levels=("second",))
    with pytest.raises(InvalidInput, match=r"^unique_lg_k must be an integer in 4 \.\. 21"):
        UniqueSettings(lg_k=3)
    with pytest.raises(InvalidInput, match=r"^unique_exact_limit must be"):
        UniqueSettings(exact_limit=-1)
    with pytest.raises(InvalidInput, match=r"^unique_retention levels must be among"):
        UniqueSettings(retention={"year": 10})
    with pytest.raises(InvalidInput, match=r"^a level may only expire if every finer"):
        UniqueSettings(retention={"hour": 100})
    assert UniqueSettings(retention={"minute": 60, "hour": 3600}).retention_ages()[MINUTE] == 60


############################################################################################
# Retention


def test_uniqueseries_expire_rounds_edges_to_what_is_kept() -> None:
    series = UniqueSeries(UniqueConfig())
    series.apply([(BASE + 10, 1), (BASE + 70, 2), (BASE + 7200, 3)])
    removed = series.expire([0, BASE + 3600, 0, 0, 0, 0])  # minutes before 01:00 dropped
    assert removed == 2
    series._check()
    # The edge inside the dropped minutes rounds out to the hour, and the answer says so.
    result = series.count(BASE + 65, BASE + 7259)
    assert (result.t1, result.t2, result.rounded, result.count) == (BASE, BASE + 7259, True, 3)
    # After the horizon minutes are kept: exact as asked.
    assert series.count(BASE + 7200, BASE + 7259).rounded is False


async def test_engine_unique_retention_is_logged_and_applied() -> None:
    async with Engine.open(uniques=UniqueSettings(retention={"minute": 3600})) as engine:
        await engine.add_uniques([{"name": "r", "member": 1, "ts": BASE + 10}])
        await engine.expire_uniques_now(engine.unique_settings.retention_ages(), now=BASE + 7200)
        result = await engine.unique_count("r", BASE + 10, BASE + 20)
        assert (result.t1, result.t2, result.count) == (BASE, BASE + 3599, 1)


############################################################################################
# Through the engine: commands, snapshots, replay


def assert_same_answer(got: Any, expected: Any) -> None:
    """Exact answers are identical after a restart; a sketch's estimate may move in its last
    digits (engine/uniques.py says why) but stays inside the other's bounds."""
    if expected.exact:
        assert got == expected
        return
    assert (got.t1, got.t2, got.exact, got.buckets) == (expected.t1, expected.t2, False, expected.buckets)
    assert expected.lower <= got.count <= expected.upper
    assert got.lower <= expected.count <= got.upper


def test_add_uniques_record_round_trip() -> None:
    from engine.commands import decode_command, encode_command

    command = AddUniques(items=[("v", BASE, 2**64 - 1)], config=NARRATIVE_CONFIG,
                         counts=[("narrative.clicks", BASE, 1)])
    assert decode_command(encode_command(command)) == command


async def test_engine_counts_several_series_and_their_union(engine: Engine) -> None:
    await engine.add_uniques([{"name": "a", "member": m, "ts": BASE} for m in range(10)]
                             + [{"name": "b", "member": m, "ts": BASE + 60} for m in range(5, 20)])
    counts, union = await engine.unique_counts(["a", "b", "never"], BASE, BASE + 3599, union=True)
    assert {n: c.count for n, c in counts.items()} == {"a": 10, "b": 15, "never": 0}
    assert union is not None and (union.count, union.exact) == (20, True)
    bounds, per_period = await engine.unique_breakdown("b", BASE, BASE + 179, 60)
    assert bounds == [BASE, BASE + 60, BASE + 120, BASE + 180]
    assert [c.count for c in per_period] == [0, 15, 0]


async def test_engine_unique_and_counts_answer_in_one_round_trip(engine: Engine) -> None:
    await engine.add_uniques_validated(
        [("narrative.users", BASE, 1), ("narrative.users", BASE + 5, 1)],
        config=NARRATIVE_CONFIG, counts=[("narrative.clicks", BASE, 1), ("narrative.clicks", BASE + 5, 1)],
    )
    users, sums = await engine.unique_and_counts(
        "narrative.users", BASE, BASE + 3599, ["narrative.clicks", "narrative.impressions"]
    )
    assert (users.count, users.exact, users.buckets) == (1, True, 1)
    assert sums == {"narrative.clicks": 2, "narrative.impressions": 0}


def test_current_hour_count_is_the_kept_count_not_a_union() -> None:
    series = UniqueSeries(NARRATIVE_CONFIG)
    series.apply([(BASE + i % 3600, i) for i in range(50_000)])
    start, end, keys = series.cover(BASE, BASE + 3599)
    union, known = series.partial(keys)
    assert keys == [(BASE // 3600) * 8 + HOUR] and known == 50_000
    assert union.ints is series.cells[keys[0]].ints  # shared, not copied: O(1)


async def test_engine_snapshot_items_reproduce_sketches_and_exact_cells() -> None:
    rng = random.Random(7)
    settings_ = UniqueSettings(exact_limit=200)
    async with Engine.open(uniques=settings_) as source:
        for name in ("big", "small"):
            size = 3000 if name == "big" else 50
            await source.add_uniques(
                [{"name": name, "member": rng.getrandbits(63), "ts": BASE + rng.randrange(5 * 86400)}
                 for _ in range(size)]
            )
        items = [msgpack.unpackb(msgpack.packb(item, use_bin_type=True), strict_map_key=False)
                 for item in source.iter_snapshot_items()]
        assert {item[0] for item in items} == {UNIQUE}
        questions = [(BASE, BASE + 5 * 86400), (BASE + 3600, BASE + 90000), (BASE + 61, BASE + 4000)]
        expected = {(n, q): await source.unique_count(n, *q) for n in ("big", "small") for q in questions}
    async with Engine.open(uniques=settings_) as target:
        for namespace, ident, seq, plain in items:
            target.load_snapshot_item(namespace, ident, seq, plain)
        for (name, question), answer in expected.items():
            assert_same_answer(await target.unique_count(name, *question), answer)


async def test_engine_recovers_uniques_from_snapshot_and_log(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings_ = UniqueSettings(exact_limit=100)
    batch1 = [{"name": "s", "member": f"user-{i}", "ts": BASE + i} for i in range(1000)]
    batch2 = [{"name": "s", "member": f"user-{i}", "ts": BASE + 90000 + i} for i in range(500, 700)]
    async with Engine.open(data, uniques=settings_) as engine:
        await engine.add_uniques(batch1)
        await engine.snapshot_now()
        await engine.add_uniques(batch2)  # only in the log
        before = await engine.unique_count("s", BASE, BASE + 2 * 86400)
        day2 = await engine.unique_count("s", BASE + 86400, BASE + 2 * 86400 - 1)
        minute = await engine.unique_count("s", BASE + 90480, BASE + 90539)
    # Day 2 is its day bucket (the fewest buckets), a sketch past 100; its minutes are exact.
    assert not before.exact and not day2.exact and day2.buckets == 1 and abs(day2.count - 200) <= 2
    assert (minute.exact, minute.count) == (True, 40)
    async with Engine.open(data, uniques=settings_) as engine:
        assert_same_answer(await engine.unique_count("s", BASE, BASE + 2 * 86400), before)
        assert_same_answer(await engine.unique_count("s", BASE + 86400, BASE + 2 * 86400 - 1), day2)
        assert await engine.unique_count("s", BASE + 90480, BASE + 90539) == minute


############################################################################################
# Request budgets through the engine (the red-team's requests)


async def test_engine_refuses_an_over_budget_breakdown_before_counting(engine: Engine) -> None:
    await engine.add_uniques([{"name": "w", "member": 1, "ts": 0}, {"name": "w", "member": 2, "ts": MAX_TS}])
    # 10,000 periods of 293 days with unaligned edges: ~120 buckets each, 1.2 M in all.
    with pytest.raises(InvalidInput, match=r"^a breakdown of 'w' into 10000 periods takes more than 100000 "
                                           r"buckets.*use a coarser step or a shorter range$") as info:
        await engine.unique_breakdown("w", 0, MAX_TS, 25340231)
    assert info.value.field == "step"
    # The same range in 8,030 year periods (aligned: one bucket each) is within budget.
    bounds, counts = await engine.unique_breakdown("w", 0, MAX_TS, "year")
    assert len(counts) == 8030 and [c.count for c in counts if c.count] == [1, 1]


async def test_engine_breakdown_in_turns_matches_one_turn(engine: Engine) -> None:
    rng = random.Random(3)
    await engine.add_uniques([{"name": "d", "member": rng.randrange(500), "ts": BASE + rng.randrange(3 * 86400)}
                              for _ in range(5000)])
    # 4,320 minute periods with unaligned edges (offset 30 s): several turns of TURN_PERIODS.
    bounds, counts = await engine.unique_breakdown("d", BASE, BASE + 3 * 86400 - 1, 60, offset=30)
    assert len(counts) == 4321
    whole = await engine.ask(UNIQUE, "d", lambda state: state.breakdown(bounds))
    assert counts == whole


async def test_engine_query_budget_names_the_names_or_the_range(engine: Engine) -> None:
    names = [f"q{i}" for i in range(1000)]
    await engine.add_uniques([{"name": n, "member": m, "ts": ts} for n in names for m, ts in ((1, 0), (2, MAX_TS))])
    with pytest.raises(InvalidInput, match=r"^counting 1000 series over \[1, 253402300798\] takes \d+ buckets or more, "
                                           r"more than the 100000 one request may take .*name fewer series") as info:
        await engine.unique_counts(names, 1, MAX_TS - 1)
    assert info.value.field == "names"
    counts, union = await engine.unique_counts(names[:12], 1, MAX_TS - 1)
    assert {c.count for c in counts.values()} == {2} and union is None
    with pytest.raises(InvalidInput) as info:  # 12 series twice (union): over
        await engine.unique_counts(names[:12], 1, MAX_TS - 1, union=True)
    assert info.value.field == "names"
    # An hours-only series over 8,000 years is over budget on its own: the range is named.
    await engine.add_uniques_validated([("narrative.users", BASE, "alice")], config=NARRATIVE_CONFIG)
    for ask in (engine.unique_count("narrative.users", 0, MAX_TS),
                engine.unique_counts(["narrative.users", "q1"], 0, MAX_TS)):
        with pytest.raises(InvalidInput, match=r"^counting \[0, 253402300799\] takes 70389528 buckets") as info:
            await ask
        assert info.value.field == "t1"


async def test_engine_query_in_waves_matches_the_union(engine: Engine) -> None:
    from engine.timebuckets import bucket_start

    names = [f"s{i}" for i in range(15)]
    await engine.add_uniques([{"name": n, "member": i * 10 + j, "ts": BASE + j * 86400 * 400}
                              for i, n in enumerate(names) for j in range(5)])
    t2 = bucket_start(YEAR, 3000) - 1  # 3,000 year buckets a series: six waves, 90,000 buckets
    counts, union = await engine.unique_counts(names, 0, t2, union=True)
    assert [counts[n].count for n in names] == [5] * 15
    assert union is not None and (union.count, union.exact, union.buckets) == (75, True, 75)


def test_counts_are_remembered_until_the_series_changes() -> None:
    # A sketch's estimate walks every register: a repeated count of an unchanged period is
    # answered from the memo, and any write or expiry forgets it, so no answer is stale.
    series = UniqueSeries(UniqueConfig(exact_limit=10))
    day = 1_700_006_400  # a UTC midnight
    series.apply([(day + i, i) for i in range(1000)])
    first = series.count(day, day + 86399)
    assert not first.exact and series.count(day, day + 86399) is first  # remembered
    series.apply([(day + 5, 10**6 + i) for i in range(1000)])
    second = series.count(day, day + 86399)
    assert second is not first and second.count > first.count  # the write was seen
    assert series.count(day, day + 86399) is second
    series.expire([0, 0, day + 86400, day + 86400, 0, 0])
    assert series.count(day, day + 86399) is not second  # expiry forgets too
    series.count(day, day + 86399)
    budget = BucketBudget(limit=series.cover_size(day, day + 86399))
    series.count(day, day + 86399, budget)  # a remembered count still charges the budget
    with pytest.raises(InvalidInput):
        series.count(day, day + 86399, budget)
