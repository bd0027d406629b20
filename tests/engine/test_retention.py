"""Retention per resolution: dropped fine buckets, exact sums where kept, rounding elsewhere."""

from __future__ import annotations

import random

import pytest

from engine.counters import ADD, CounterSeries, UserCounters
from engine.engine import Engine, check_retention
from engine.errors import InvalidInput

BASE = 1451606400  # 2016-01-01


def random_series(rng: random.Random, n: int = 200) -> tuple[CounterSeries, dict[int, int]]:
    series, points = CounterSeries(), {}
    for _ in range(n):
        ts = BASE + rng.randint(0, 86400 * 400)
        value = rng.randint(1, 9)
        series.add(ts, value)
        points[ts] = points.get(ts, 0) + value
    return series, points


def brute(points: dict[int, int], t1: int, t2: int) -> int:
    return sum(v for t, v in points.items() if t1 <= t <= t2)


@pytest.mark.parametrize("seed", range(40))
def test_counterseries_expire_keeps_exact_sums_where_data_is_kept(seed: int) -> None:
    rng = random.Random(seed)
    series, points = random_series(rng)
    cut_second = BASE + rng.randint(0, 86400 * 400)
    cut_minute = min(cut_second, BASE + rng.randint(0, 86400 * 300))
    cut_hour = min(cut_minute, BASE + rng.randint(0, 86400 * 200))
    series.expire([cut_second, cut_minute, cut_hour, 0, 0])
    series._check()
    for _ in range(100):
        t1 = BASE + rng.randint(0, 86400 * 400)
        t2 = t1 + rng.randint(0, 86400 * 100)
        if t1 >= cut_second:
            assert series.range_sum(t1, t2) == brute(points, t1, t2)
        # Whole days are kept (no day retention), so day-aligned ranges stay exact everywhere.
        d1, d2 = t1 - t1 % 86400, t2 - t2 % 86400 + 86399
        assert series.range_sum(d1, d2) == brute(points, d1, d2)
    assert series.range_sum(0, 2**37) == sum(points.values())


def test_counterseries_expire_rounds_down_inside_dropped_stretch() -> None:
    series = CounterSeries()
    series.add(BASE + 30, 5)  # 00:00:30
    series.add(BASE + 50, 7)  # 00:00:50
    series.add(BASE + 300, 1)  # 00:05:00
    series.expire([BASE + 3600, 0, 0, 0, 0])  # seconds before 01:00 are gone, minutes kept
    # An edge inside the first minute can no longer be placed: it rounds down to the minute's
    # start, so [00:00:00, 00:00:40] reads as empty, and whole minutes stay exact.
    assert series.range_sum(BASE, BASE + 40) == 0
    assert series.range_sum(BASE, BASE + 59) == 12
    assert series.range_sum(BASE + 60, BASE + 299) == 0
    assert series.range_sum(BASE, BASE + 300) == 13


def test_usercounters_expire_forgets_old_activity_points() -> None:
    user = UserCounters()
    user.apply([("m", 2, 7, BASE + 10, 3, BASE + 10, ADD), ("m", 2, 8, BASE + 86400 * 40, 4, BASE + 86400 * 40, ADD)])
    user.expire([BASE + 86400, 0, 0, 0, 0])
    assert user.atids(["m"], 0, 2**37) == [2]  # activity 7 had only expired points
    assert user.range_sum("m", 0, 2**37) == 7  # totals are kept
    user._check()
    restored = UserCounters.from_plain(user.to_plain())
    assert restored.range_sum("m", BASE, BASE + 5) == user.range_sum("m", BASE, BASE + 5)


def test_usercounters_write_after_expire_reindexes_the_activity_month() -> None:
    # Activity 7 writes in February, then early in January (the write path remembers
    # January as indexed for it); retention drops January's first days, so the index loses 7
    # for January while 7 lives on in February. A later January write must index it again.
    jan, feb = BASE, BASE + 86400 * 40
    user = UserCounters()
    user.apply([("m", 2, 7, feb, 4, feb, ADD), ("m", 2, 7, jan + 10, 3, jan + 10, ADD)])
    user.expire([jan + 86400, 0, 0, 0, 0])
    assert user.atids(["m"], jan, jan + 86400 * 30) == []
    user.apply([("m", 2, 7, jan + 86400 * 5, 1, jan + 86400 * 5, ADD)])
    user._check()
    assert user.atids(["m"], jan, jan + 86400 * 30) == [2]


@pytest.mark.parametrize("second_type_after_expiry", [False, True])
def test_all_types_series_rounds_down_like_its_parts_after_expiry_and_restore(
    second_type_after_expiry: bool,
) -> None:
    """The all-types series is built by ``CounterSeries.merged`` when a second activity type
    appears and again at every restore; it must keep the parts' retention horizons, or it
    sums dropped stretches as if nothing had expired (and disagrees with the live user)."""
    b = 1_700_000_000
    user = UserCounters()
    user.apply([("steps", 1, None, b - 5, 1, b - 5, ADD)])
    if not second_type_after_expiry:
        user.apply([("steps", 2, None, b + 30, 10, b + 30, ADD)])
    user.expire([b - 4, 0, 0, 0, 0])
    if second_type_after_expiry:
        user.apply([("steps", 2, None, b + 30, 10, b + 30, ADD)])
    user._check()
    restored = UserCounters.from_plain(user.to_plain())
    restored._check()
    for t1, t2 in ((b - 3, b + 40), (b - 20, b), (b - 60, b + 60), (b + 30, b + 30)):
        per_type = sum(user.range_sum("steps", t1, t2, atid) for atid in (1, 2))
        assert user.range_sum("steps", t1, t2) == per_type, (t1, t2)
        assert restored.range_sum("steps", t1, t2) == per_type, (t1, t2)


@pytest.mark.parametrize(
    ("retention", "ok"),
    [
        ({"second": 10}, True),
        ({"second": 10, "minute": 100, "hour": 1000}, True),
        ({"minute": 100}, False),  # seconds kept while their minutes go
        ({"second": 100, "minute": 10}, False),  # finer kept longer than coarser
        ({"week": 10}, False),
        ({"second": -1}, False),
    ],
)
def test_check_retention(retention: dict[str, int], ok: bool) -> None:
    if ok:
        assert len(check_retention(retention)) == 5
    else:
        with pytest.raises(InvalidInput):
            check_retention(retention)


async def test_engine_expire_now_is_logged_and_replayed() -> None:
    async with Engine.open() as engine:
        await engine.ingest([{"metric": "m", "user": 1, "value": 1, "ts": BASE + 5},
                             {"metric": "m", "user": 1, "value": 2, "ts": BASE + 86400 * 10}])
        await engine.expire_now([86400, 0, 0, 0, 0], now=BASE + 86400 * 10)
        expected = await engine.query([1], ["m"], BASE, BASE + 10)
        items = list(engine.iter_snapshot_items())
    assert expected[1].sums == {"m": 0}  # that second is gone; the minute after it is partial
    async with Engine.open() as fresh:
        for item in items:
            fresh.load_snapshot_item(*item)
        assert (await fresh.query([1], ["m"], BASE, BASE + 10))[1].sums == {"m": 0}
        assert (await fresh.query([1], ["m"], 0, 2**37))[1].sums == {"m": 3}
