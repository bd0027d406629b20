"""PrefixSeries (engine/prefix_series.py) held to the six-cell CounterSeries it replaced in user
counters, and to a brute-force model: writes in and out of order, reads at any edge, retention,
merging, snapshots (both forms), totals past int64."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import engine.prefix_series as prefix_series
from engine.counters import CounterSeries
from engine.prefix_series import LATE_MERGE, PrefixSeries

BASE = 1451606400  # 2016-01-01
SPAN = 86400 * 800  # two years and more: year and month edges inside

seconds = st.one_of(
    st.integers(BASE, BASE + SPAN),
    st.integers(BASE, BASE + 300),  # many writes to the same few seconds
    st.sampled_from([BASE, BASE + 59, BASE + 60, BASE + 86399, BASE + 86400 * 366, BASE + SPAN]),
)
values = st.one_of(st.integers(-9, 9), st.integers(-(2**63), 2**63 - 1))
writes = st.lists(st.tuples(seconds, values), max_size=120)
edges = st.lists(st.integers(BASE - 10, BASE + SPAN + 10), min_size=2, max_size=12)


def retention_cutoffs(draw: st.DrawFn) -> list[int]:
    """Cutoffs per level (second .. month) that nest as check_retention requires."""
    cut = [0, 0, 0, 0, 0]
    level_count = draw(st.integers(1, 5))
    bound = BASE + SPAN
    for level in range(level_count):
        bound = draw(st.integers(BASE - 100, bound))
        cut[level] = bound
    return cut


cutoffs = st.composite(retention_cutoffs)()


@contextlib.contextmanager
def rebuilds(vectorised: bool) -> Iterator[None]:
    """Rebuild every series with numpy (True) or in Python (False), whatever its size."""
    saved = prefix_series._VECTORISE_FROM
    prefix_series._VECTORISE_FROM = 0 if vectorised else 2**62
    try:
        yield
    finally:
        prefix_series._VECTORISE_FROM = saved


def twin(pairs: list[tuple[int, int]]) -> tuple[PrefixSeries, CounterSeries]:
    new, old = PrefixSeries(), CounterSeries()
    for ts, value in pairs:
        new.add(ts, value)
        old.add(ts, value)
    return new, old


def roundtrip(series: PrefixSeries) -> PrefixSeries:
    """Through the snapshot codec's msgpack form."""
    plain = msgpack.unpackb(msgpack.packb(series.to_plain(), use_bin_type=True, default=_big), raw=False,
                            ext_hook=_ext)
    return PrefixSeries.from_plain(plain)


def _big(value: object) -> object:
    if isinstance(value, int):
        return msgpack.ExtType(1, str(value).encode())
    raise TypeError(value)


def _ext(code: int, data: bytes) -> object:
    return int(data.decode())


def near(pairs: list[tuple[int, int]]) -> list[int]:
    """Edges close to written seconds: inside their minute, hour and day, on either side."""
    return [t + d for t, _ in pairs[:8] for d in (-43_200, -1_800, -30, -1, 0, 1, 30, 1_800, 43_200)]


def assert_same(new: PrefixSeries, old: CounterSeries, ts: list[int]) -> None:
    new._check()
    for t in ts:
        assert new.before(t) == old.before(t), t
    for a, b in zip(ts, ts[1:], strict=False):
        lo, hi = min(a, b), max(a, b)
        assert new.range_sum(lo, hi) == old.range_sum(lo, hi), (lo, hi)
    assert new.period_sums(sorted(ts)) == old.period_sums(sorted(ts))
    assert new.range_sum(0, 2**37) == old.total == new.total


@settings(max_examples=400, deadline=None)
@given(writes, edges, st.booleans())
def test_reads_match_the_six_cell_series(pairs: list[tuple[int, int]], ts: list[int], vectorised: bool) -> None:
    with rebuilds(vectorised):
        new, old = twin(pairs)
        ts += near(pairs)
        assert_same(new, old, ts)
        assert_same(roundtrip(new), old, ts)


@settings(max_examples=300, deadline=None)
@given(writes, edges, cutoffs, writes, st.booleans(), st.lists(st.integers(0, 86400 * 40), max_size=3))
def test_retention_rounds_down_where_the_six_cell_series_does(
    pairs: list[tuple[int, int]], ts: list[int], cut: list[int], after: list[tuple[int, int]],
    vectorised: bool, later: list[int],
) -> None:
    with rebuilds(vectorised):
        new, old = retention_case(pairs, ts, cut, after)
        # Later sweeps, each cutoff moved on by the same shift (so they still nest): only the
        # stretch whose tier changes is rebuilt.
        for shift in later:
            cut = [c + shift if c > 0 else 0 for c in cut]
            assert new.expire(cut) >= 0
            old.expire(cut)
            assert_same(new, old, ts + [c + d for c in cut for d in (-61, -1, 0, 1, 61)])


def retention_case(pairs: list[tuple[int, int]], ts: list[int], cut: list[int],
                   after: list[tuple[int, int]]) -> tuple[PrefixSeries, CounterSeries]:
    new, old = twin(pairs)
    new.expire(cut)
    old.expire(cut)
    ts += near(pairs) + near(after) + [c + d for c in cut for d in (-1, 0, 1)]
    assert_same(new, old, ts)
    # Writes after retention (some of them into rolled-up stretches), and a restore.
    for t, value in after:
        new.add(t, value)
        old.add(t, value)
    assert_same(new, old, ts)
    assert_same(roundtrip(new), old, ts)
    # A restore from the six-cell snapshot form written before this module existed.
    assert_same(PrefixSeries.from_plain(old.to_plain()), old, ts)
    return new, old


@settings(max_examples=200, deadline=None)
@given(st.lists(writes, min_size=1, max_size=4), edges, st.one_of(st.none(), cutoffs), st.booleans())
def test_merged_is_the_sum_of_its_parts(parts: list[list[tuple[int, int]]], ts: list[int],
                                         cut: list[int] | None, vectorised: bool) -> None:
    with rebuilds(vectorised):
        merged_case(parts, ts, cut)


def merged_case(parts: list[list[tuple[int, int]]], ts: list[int], cut: list[int] | None) -> None:
    twins = [twin(p) for p in parts]
    if cut is not None:
        for new, old in twins:
            new.expire(cut)
            old.expire(cut)
    ts += [t for part in parts for t in near(part)]
    merged = PrefixSeries.merged(new for new, _ in twins)
    assert_same(merged, CounterSeries.merged(old for _, old in twins), ts)


def test_late_writes_are_held_then_merged() -> None:
    series = PrefixSeries()
    series.add(BASE + 10_000, 1)
    for i in range(LATE_MERGE - 1):
        series.add(BASE + i, 2)
    assert series.late is not None and len(series.late) == LATE_MERGE - 1
    assert len(series.starts) == 1
    assert series.range_sum(BASE, BASE + 9_999) == 2 * (LATE_MERGE - 1)
    series.add(BASE + 5_000, 3)  # the 64th: merged
    assert series.late is None and len(series.starts) == LATE_MERGE + 1
    series._check()
    assert series.range_sum(BASE, BASE + 9_999) == 2 * (LATE_MERGE - 1) + 3
    assert series.range_sum(BASE + 5_000, BASE + 10_000) == 4


def test_running_totals_leave_int64_for_python_ints() -> None:
    series = PrefixSeries()
    series.add(BASE, 2**63 - 1)
    series.add(BASE + 1, 2**63 - 1)  # the running total leaves int64
    series.add(BASE + 1, 5)
    series.add(BASE - 1, -(2**63))  # late, then merged by a read with retention below
    assert type(series.sums) is list
    assert series.range_sum(BASE, BASE + 1) == 2**64 + 3
    assert series.range_sum(BASE + 1, BASE + 1) == 2**63 + 4
    series.expire([BASE + 1, 0, 0, 0, 0])
    series._check()
    assert series.range_sum(0, 2**37) == 2**63 + 3
    assert roundtrip(series).range_sum(BASE, BASE + 59) == series.range_sum(BASE, BASE + 59)


def test_an_entry_costs_sixteen_bytes() -> None:
    series = PrefixSeries()
    for i in range(10_000):
        series.add(BASE + 2 * i, 1)
    assert series.starts.itemsize == series.sums.itemsize == 8
    assert len(series.starts) == len(series.sums) == 10_000


@pytest.mark.parametrize("corrupt", [b"\x00" * 7, b"\x00" * 9])
def test_a_torn_column_is_refused(corrupt: bytes) -> None:
    plain = PrefixSeries().to_plain()
    plain[4] = corrupt
    with pytest.raises(ValueError, match="8-byte"):
        PrefixSeries.from_plain(plain)


def test_a_lagging_feed_rebuilds_only_the_tail(monkeypatch: pytest.MonkeyPatch) -> None:
    """Late writes a few seconds behind rebuild the entries after them, not the series."""
    series, model = PrefixSeries(), CounterSeries()
    for i in range(10_000):
        series.add(BASE + i, 1)
        model.add(BASE + i, 1)

    def whole_rebuild(*args: object) -> None:
        raise AssertionError("the whole series was rebuilt")

    monkeypatch.setattr(PrefixSeries, "_rebuild_from", whole_rebuild)
    for i in range(LATE_MERGE):
        series.add(BASE + 9_990 - i, 2)
        model.add(BASE + 9_990 - i, 2)
    assert series.late is None  # merged, by the tail path
    series._check()
    for t in (BASE, BASE + 9_926, BASE + 9_927, BASE + 9_960, BASE + 9_991, BASE + 10_000):
        assert series.before(t) == model.before(t)


def test_reads_do_not_merge_late_writes_after_retention() -> None:
    series, model = PrefixSeries(), CounterSeries()
    for ts, value in ((BASE + 100, 1), (BASE + 4_000, 2)):
        series.add(ts, value)
        model.add(ts, value)
    assert series.expire([BASE + 3_600, 0, 0, 0, 0]) == 0  # one entry, already at its minute
    series.add(BASE + 4_000, 3)  # the last second again: added in place
    series.add(BASE + 130, 4)  # below the second-level horizon: held, rounded on reads
    model.add(BASE + 4_000, 3)
    model.add(BASE + 130, 4)
    model.expire([BASE + 3_600, 0, 0, 0, 0])
    for t in (BASE + 60, BASE + 120, BASE + 125, BASE + 180, BASE + 3_999, BASE + 4_001):
        assert series.before(t) == model.before(t), t
    assert series.late == {BASE + 130: 4}
    series._check()


def test_user_check_holds_with_late_writes_after_retention() -> None:
    """Late writes below the horizon sit in both a type's series and the all-types one;
    the all-types check compares them rounded alike (found by review)."""
    from engine.counters import ADD, UserCounters

    user = UserCounters()
    user.apply([("m", 1, None, BASE + 100, 1, 0, ADD), ("m", 2, None, BASE + 200, 1, 0, ADD)])
    user.expire([BASE + 150, 0, 0, 0, 0])
    user.apply([("m", 1, None, BASE + 30, 5, 0, ADD), ("m", 2, None, BASE + 300, 1, 0, ADD)])
    user._check()
    assert user.range_sum("m", BASE, BASE + 59) == 5  # minute 0: the late write
    assert user.range_sum("m", BASE + 30, BASE + 119) == 6  # t1 rounds down to 0:00: both minutes
    assert user.range_sum("m", BASE + 200, BASE + 300) == 2


@pytest.mark.parametrize("vectorised", [False, True])
@pytest.mark.parametrize("seed", range(40))
def test_repeated_sweeps_over_a_dense_series(seed: int, vectorised: bool) -> None:
    """Hourly-style sweeps whose cutoffs move on: each rebuilds only the stretch whose tier
    changes (or, vectorised, everything before the horizon), and reads, checks and the
    six-cell reference still agree."""
    rng = random.Random(seed)
    with rebuilds(vectorised):
        new, old = PrefixSeries(), CounterSeries()
        for _ in range(300):
            ts, value = BASE + rng.randrange(86400 * 60), rng.randrange(-9, 10)
            new.add(ts, value)
            old.add(ts, value)
        second = BASE + rng.randrange(86400 * 60) - rng.randrange(1, 4000)
        minute = second - rng.randrange(86400 * 20)
        hour = minute - rng.randrange(86400 * 20)
        cut = [second, minute, hour, 0, 0]
        for shift in (0, rng.randrange(1, 90_000), rng.randrange(1, 86400 * 3), 0):
            cut = [c + shift if c else 0 for c in cut]
            new.expire(cut)
            old.expire(cut)
            new._check()
            late = BASE + rng.randrange(86400 * 60)  # some below the horizon: held
            new.add(late, 1)
            old.add(late, 1)
        for _ in range(200):
            t = BASE + rng.randrange(86400 * 62)
            assert new.before(t) == old.before(t), t
