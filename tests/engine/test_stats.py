"""Dimensional stats (engine/stats.py): statshub's semantics, its own test sequence, replay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from engine import stats
from engine.engine import Engine
from engine.errors import InvalidInput
from engine.stats import DimValueStats, StatIdState, StatsLimit, validate_update

P = 360
BASE = 1_500_000_000 - 1_500_000_000 % P  # a gauge period start


def at(bucket: int, second: int = 1) -> int:
    return BASE + bucket * P + second


def val(dims: dict[str, Any], path: str, table: str) -> int:
    """statshub_test.go's assertCounterEquals / assertGaugeEquals: a missing entry reads 0."""
    dim, value, stat = path.split(":")
    return dims[dim][value].get(table, {}).get(stat, 0)


def counter(dims: dict[str, Any], path: str) -> int:
    return val(dims, path, "counters")


def gauge(dims: dict[str, Any], path: str) -> int:
    return val(dims, path, "gauges")


async def test_stats_statshub_test_sequence(engine: Engine) -> None:
    """TestUpdateAndQuery from statshub_test.go, bucket by bucket (periods of 360 s here)."""
    with pytest.raises(InvalidInput, match="reserved"):
        await engine.stats_update("myid1", {"dims": {"country": "total"}, "counters": {"counterA": 10}}, now=at(0))
    assert await engine.stats_query(now=at(0)) == {}

    update = {"dims": {"country": "es", "user": "bob"}, "counters": {"counterA": 50},
              "increments": {"counterB": 500}, "gauges": {"gaugeA": 5000, "gaugeAA": 0},
              "members": {"gaugeB": "item1"}}
    await engine.stats_update("myid1", update, now=at(1))
    d = await engine.stats_query(["country", "user"], now=at(2))
    assert d["country"]["es"] == {"counters": {"counterA": 50, "counterB": 500},
                                  "gauges": {"gaugeA": 5000, "gaugeAA": 0, "gaugeB": 1}}
    assert d["country"]["total"] == d["country"]["es"]
    assert d["user"]["bob"] == d["user"]["total"] == d["country"]["es"]

    update = {"dims": {"country": "es", "user": "bob"}, "counters": {"counterA": 60},
              "increments": {"counterB": 600}, "gauges": {"gaugeA": 0, "gaugeAA": 50000},
              "members": {"gaugeB": "item2"}}
    await engine.stats_update("myid1", update, now=at(3))
    d = await engine.stats_query(["country", "user"], now=at(4))
    for path, want in [("country:es:counterA", 60), ("country:es:counterB", 1100),
                       ("user:bob:counterA", 60), ("user:bob:counterB", 1100),
                       ("country:total:counterA", 60), ("country:total:counterB", 1100),
                       ("user:total:counterA", 60), ("user:total:counterB", 1100)]:
        assert counter(d, path) == want, path
    for path, want in [("country:es:gaugeA", 0), ("country:es:gaugeAA", 50000), ("country:es:gaugeB", 2),
                       ("user:bob:gaugeA", 0), ("user:bob:gaugeB", 2), ("country:total:gaugeA", 0),
                       ("country:total:gaugeAA", 50000), ("country:total:gaugeB", 2),
                       ("user:total:gaugeA", 0), ("user:total:gaugeB", 2)]:
        assert gauge(d, path) == want, path

    await engine.stats_update("myid1", {"dims": {"country": "es", "user": "bob"},
                                        "members": {"gaugeB": "item2"}}, now=at(5))
    d = await engine.stats_query(["country", "user"], now=at(6))
    assert gauge(d, "country:es:gaugeB") == gauge(d, "user:bob:gaugeB") == 2

    await engine.stats_update("myid1", {"dims": {"country": "es", "user": "bob"},
                                        "gauges": {"gaugeA": 0, "gaugeAA": 50000}}, now=at(7))
    await engine.stats_update("myid2", {"dims": {"country": "de", "user": "bob"}, "counters": {"counterA": 70},
                                        "increments": {"counterB": 700},
                                        "gauges": {"gaugeA": 7000, "gaugeAA": 70000},
                                        "members": {"gaugeB": "item3"}}, now=at(7, 30))
    d = await engine.stats_query(["country", "user"], now=at(8))
    expected_counters = {"country:es:counterA": 60, "country:es:counterB": 1100, "country:de:counterA": 70,
                         "country:de:counterB": 700, "user:bob:counterA": 130, "user:bob:counterB": 1800,
                         "country:total:counterA": 130, "country:total:counterB": 1800,
                         "user:total:counterA": 130, "user:total:counterB": 1800}
    expected_gauges = {"country:es:gaugeA": 0, "country:es:gaugeAA": 50000, "country:es:gaugeB": 2,
                       "country:de:gaugeA": 7000, "country:de:gaugeAA": 70000, "country:de:gaugeB": 1,
                       "user:bob:gaugeA": 7000, "user:bob:gaugeB": 3, "country:total:gaugeA": 7000,
                       "country:total:gaugeAA": 120000, "country:total:gaugeB": 3,
                       "user:total:gaugeA": 7000, "user:total:gaugeAA": 120000, "user:total:gaugeB": 3}
    assert {p: counter(d, p) for p in expected_counters} == expected_counters
    assert {p: gauge(d, p) for p in expected_gauges} == expected_gauges

    d = await engine.stats_query(["country", "user"], now=at(9))
    assert "gaugeA" not in d["country"]["es"]["gauges"]  # rolled over: reads 0
    for path, want in [("country:es:gaugeA", 0), ("country:es:gaugeB", 2), ("country:de:gaugeA", 0),
                       ("country:de:gaugeB", 1), ("user:bob:gaugeA", 0), ("user:bob:gaugeB", 3)]:
        assert gauge(d, path) == want, path
    # The true union of the members across countries is 3 as well (item1..3, none shared).
    union = await engine.stats_query(["country"], union=True, now=at(9))
    assert union["country"]["total"]["gauges"]["gaugeB"] == 3


async def test_stats_gauge_period_boundaries(engine: Engine) -> None:
    """The last second of a period and the first of the next are different periods; an
    id's second report in one period replaces its first; gaugesCurrent is the period in
    progress."""
    dims = {"dims": {"country": "es"}}
    await engine.stats_update("a", {**dims, "gauges": {"g": 5}}, now=at(0, 0))
    await engine.stats_update("a", {**dims, "gauges": {"g": 7}}, now=at(0, P - 1))  # same period
    await engine.stats_update("b", {**dims, "gauges": {"g": 10}}, now=at(0, P - 1))
    await engine.stats_update("a", {**dims, "gauges": {"g": 1}}, now=at(1, 0))  # next period
    d = await engine.stats_query(["country"], now=at(1, 0))
    assert d["country"]["es"]["gauges"] == {"g": 17}
    assert d["country"]["es"]["gaugesCurrent"] == {"g": 1}
    d = await engine.stats_query(["country"], now=at(0, P - 1))
    assert d["country"]["es"] == {"gaugesCurrent": {"g": 17}}
    d = await engine.stats_query(["country"], now=at(3, 0))
    assert d["country"] == {"es": {}, "total": {}}  # expired: statshub's keys lived 3 periods


async def test_stats_counter_change_follows_the_id_across_values(engine: Engine) -> None:
    """Roll-ups add the change of the id's value: an id that moves from es to de credits de
    only with what it gained there (statshub's GETSET + INCRBY delta)."""
    await engine.stats_update("x", {"dims": {"country": "es"}, "counters": {"c": 50}}, now=at(0))
    await engine.stats_update("x", {"dims": {"country": "de"}, "counters": {"c": 60}}, now=at(0))
    await engine.stats_update("x", {"dims": {"Country": "DE"}, "increments": {"c": 5}, "counters": {"c-2": 1}},
                              now=at(0))
    d = await engine.stats_query(["country"], now=at(0))
    assert d["country"]["es"]["counters"] == {"c": 50}
    assert d["country"]["de"]["counters"] == {"c": 15, "c_2": 1}
    assert d["country"]["total"]["counters"] == {"c": 65, "c_2": 1}


async def test_stats_ids_without_dimensions(engine: Engine) -> None:
    """Detail only: nothing shows in queries, but the id's value is the base of later
    changes (statshub wrote detail keys regardless of dims)."""
    assert await engine.stats_update("lone", {"counters": {"c": 40}}, now=at(0))
    assert not await engine.stats_update("lone", {"members": {"m": "x"}}, now=at(0))  # nothing to keep
    assert await engine.stats_query(now=at(0)) == {}
    await engine.stats_update("lone", {"dims": {"os": "linux"}, "counters": {"c": 45}}, now=at(0))
    d = await engine.stats_query(now=at(0))
    assert d == {"os": {"linux": {"counters": {"c": 5}}, "total": {"counters": {"c": 5}}}}


async def test_stats_member_totals_sum_cardinalities_unless_union(engine: Engine) -> None:
    await engine.stats_update("a", {"dims": {"country": "es"}, "multiMembers": {"m": ["u1", "u2"]}}, now=at(0))
    await engine.stats_update("b", {"dims": {"country": "de"}, "multiMembers": {"m": ["u2", "u3"]},
                                    "members": {"n": "z"}}, now=at(0))
    d = await engine.stats_query(["country"], now=at(0))
    assert d["country"]["total"]["gauges"] == {"m": 4, "n": 1}
    assert d["country"]["es"]["gauges"] == {"m": 2, "n": 0}  # every member stat of the dimension
    d = await engine.stats_query(["country"], union=True, now=at(0))
    assert d["country"]["total"]["gauges"] == {"m": 3, "n": 1}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        (None, "body"),
        ("x", "body"),
        ({"counters": {"a": 1.5}}, "body.counters.a"),
        ({"counters": {"a": 1.0}}, "body.counters.a"),
        ({"counters": {"a": True}}, "body.counters.a"),
        ({"gauges": {"a": "5"}}, "body.gauges.a"),
        ({"increments": {"a": 2**63}}, "body.increments.a"),
        ({"counters": [1]}, "body.counters"),
        ({"dims": {"country": "TOTAL"}}, "body.dims.country"),
        ({"dims": {"country": 5}}, "body.dims.country"),
        ({"members": {"m": 5}}, "body.members.m"),
        ({"multiMembers": {"m": "x"}}, "body.multiMembers.m"),
        ({"multiMembers": {"m": ["x", 1]}}, "body.multiMembers.m[1]"),
        ({"Counters": {"a": 1.5}}, "body.counters.a"),  # a folded key is the field, checked as it
    ],
)
def test_stats_validate_update_refuses(body: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_update(body)
    assert info.value.field == field


def test_stats_update_keys_are_matched_as_go_decodes_them() -> None:
    """statshub's encoding/json decoder: unknown keys ignored, keys matched to fields
    case-insensitively (simple folding: U+017F is an s, U+0131 is no i), one field named
    twice merged, ``null`` a nil map."""
    update = validate_update({"bogus": 1, "Counters": {"a": 1}, "counters": {"b": 2}, "INCREMENTS": {"c": 3},
                              "gaugeſ": {"g": 4}, "multiMembers": None, "dıms": {"country": "es"}})
    assert update.counters == (("a", 1), ("b", 2))
    assert update.increments == (("c", 3),)
    assert update.gauges == (("g", 4),)
    assert update.dims == () and update.members == ()
    assert validate_update({"counters": {"a": 1}, "Counters": {"a": 5}}).counters == (("a", 5),)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"dims": {f"d{i}": "v" for i in range(65)}}, "body.dims"),
        # The red team's body: 64 dimensions x 10,000 counters (640,000 roll-ups, ~450 MB).
        ({"dims": {f"d{i}": "v" for i in range(64)}, "counters": {f"c{i}": 1 for i in range(10_000)}},
         "body.counters"),
        ({"gauges": {f"g{i}": 1 for i in range(600)}, "members": {f"m{i}": "x" for i in range(401)}}, "body.members"),
        # Few stats, many dimensions: 64 x 100 = 6,400 roll-ups.
        ({"dims": {f"d{i}": "v" for i in range(64)}, "counters": {f"c{i}": 1 for i in range(100)}}, "body.dims"),
        ({"dims": {f"d{i}": "v" for i in range(64)}, "multiMembers": {"m": [f"u{i}" for i in range(20_000)]}},
         "body.multiMembers.m"),
        ({"dims": {"d": "v"}, "multiMembers": {"m": [f"u{i}" for i in range(4_097)]}}, "body.multiMembers.m"),
    ],
)
def test_stats_update_work_is_bounded(body: Any, field: str) -> None:
    """Each refusal is a StatsLimit (400) naming the field, found before any name is read."""
    with pytest.raises(StatsLimit) as info:
        validate_update(body)
    assert info.value.field == field
    assert info.value.message.startswith(field + ":")


def test_stats_update_work_limits_admit_real_updates() -> None:
    """statshub's real clients: a handful of dims and tens of stats, several members."""
    body = {"dims": {f"d{i}": "v" for i in range(8)}, "counters": {f"c{i}": 1 for i in range(200)},
            "gauges": {f"g{i}": 1 for i in range(200)}, "multiMembers": {"m": [f"u{i}" for i in range(512)]}}
    assert validate_update(body).size() == 401
    assert len(validate_update({"dims": {"d": "v"}, "multiMembers": {"m": [str(i) for i in range(4096)]}})
               .members[0][1]) == 4096


async def test_stats_stored_stats_and_values_are_bounded(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Per dimension value at most MAX_STATS_PER_VALUE stats, per dimension at most
    MAX_VALUES_PER_DIM values, at most MAX_DIMENSIONS dimensions: refused whole."""
    monkeypatch.setattr(stats, "MAX_STATS_PER_VALUE", 3)
    monkeypatch.setattr(stats, "MAX_VALUES_PER_DIM", 2)
    monkeypatch.setattr(stats, "MAX_DIMENSIONS", 3)
    await engine.stats_update("a", {"dims": {"country": "es"}, "counters": {"c1": 1, "c2": 1}, "gauges": {"c1": 1}},
                              now=at(0))
    before = await engine.stats_query(now=at(0))
    refusals = [
        ({"dims": {"country": "es", "os": "mac"}, "counters": {"c3": 1}}, "body.dims.country", "at most 3 distinct"),
        ({"dims": {"os": "mac", "country": "es"}, "members": {"m": "x"}}, "body.dims.country", "at most 3 distinct"),
        ({"dims": {"a": "1", "b": "1", "c": "1"}, "counters": {"c1": 1}}, "body.dims.", "at most 3 dimensions"),
    ]
    for body, field, needle in refusals:
        with pytest.raises(StatsLimit, match=needle) as info:
            await engine.stats_update("b", body, now=at(0))
        assert info.value.field.startswith(field)
    assert await engine.stats_query(now=at(0)) == before
    # Known stats of a full value still take updates, from any id.
    await engine.stats_update("b", {"dims": {"country": "es"}, "increments": {"c2": 5}}, now=at(0))
    await engine.stats_update("b", {"dims": {"country": "de"}, "increments": {"c2": 5}}, now=at(0))
    with pytest.raises(StatsLimit, match="already holds 2 values") as info:
        await engine.stats_update("b", {"dims": {"country": "fr"}, "increments": {"c2": 5}}, now=at(0))
    assert info.value.field == "body.dims.country"
    assert sorted((await engine.stats_query(["country"], now=at(0)))["country"]) == ["de", "es", "total"]
    assert engine._stats_ledger().pending == {}


async def test_stats_limits_hold_with_updates_in_flight(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Updates of many ids at once, each naming a new stat of one value: exactly the limit
    passes (a check against applied states alone would let every one through)."""
    monkeypatch.setattr(stats, "MAX_STATS_PER_VALUE", 10)
    outcomes: list[bool] = []

    async def one(i: int) -> None:
        try:
            await engine.stats_update(f"id{i}", {"dims": {"d": "v"}, "counters": {f"c{i}": 1}}, now=at(0))
            outcomes.append(True)
        except StatsLimit:
            outcomes.append(False)

    async with trio.open_nursery() as nursery:
        for i in range(40):
            nursery.start_soon(one, i)
    assert outcomes.count(True) == 10
    assert len((await engine.stats_query(["d"], now=at(0)))["d"]["v"]["counters"]) == 10
    assert engine._stats_ledger().pending == {}


async def test_stats_roll_ups_and_counters_stay_in_int64(engine: Engine) -> None:
    """statshub's Go code kept every counter and roll-up in int64: an update that would take
    an id's counter or a roll-up outside it is refused, naming the stat; sums across values
    (``total``) may pass 64 bits and stay exact."""
    big = 2**63 - 1
    body = {"dims": {"country": "es"}, "increments": {"i": big}}
    await engine.stats_update("a", body, now=at(0))
    with pytest.raises(StatsLimit, match="the id's counter 'i' would become") as info:
        await engine.stats_update("a", body, now=at(0))
    assert info.value.field == "body.increments.i"
    with pytest.raises(StatsLimit, match=r"the roll-up of 'i' under country='es' would become") as info:
        await engine.stats_update("b", body, now=at(0))
    assert info.value.field == "body.increments.i"
    with pytest.raises(StatsLimit) as info:
        await engine.stats_update("c", {"dims": {"country": "es"}, "counters": {"i": 1}}, now=at(0))
    assert info.value.field == "body.counters.i"
    await engine.stats_update("g1", {"dims": {"country": "es"}, "gauges": {"g": big}}, now=at(0))
    with pytest.raises(StatsLimit) as info:
        await engine.stats_update("g2", {"dims": {"country": "es"}, "gauges": {"g": 1}}, now=at(0))
    assert info.value.field == "body.gauges.g"
    await engine.stats_update("g2", {"dims": {"country": "es"}, "gauges": {"g": 1}}, now=at(1))  # a new period
    await engine.stats_update("b", {"dims": {"country": "de"}, "increments": {"i": big}}, now=at(1))
    await engine.stats_update("c", {"dims": {"country": "fr"}, "increments": {"i": big}}, now=at(1))
    d = await engine.stats_query(["country"], now=at(1))
    assert d["country"]["es"]["counters"]["i"] == big
    assert d["country"]["total"]["counters"]["i"] == 3 * big
    # Concurrent updates to one value: one of them fits.
    results = []

    async def one(i: int) -> None:
        try:
            await engine.stats_update(f"x{i}", {"dims": {"country": "it"}, "increments": {"j": big}}, now=at(1))
            results.append(True)
        except StatsLimit:
            results.append(False)

    async with trio.open_nursery() as nursery:
        for i in range(5):
            nursery.start_soon(one, i)
    assert results.count(True) == 1


async def test_stats_integer_and_string_members_stay_apart(engine: Engine) -> None:
    """The decimal id of "alice"'s 64-bit string key is a member of its own."""
    from engine.uniques import string_key

    assert string_key("alice") == 9933345172075899469
    await engine.stats_update("a", {"dims": {"d": "v"}, "multiMembers": {"m": ["alice", "9933345172075899469"]}},
                              now=at(0))
    assert (await engine.stats_query(["d"], now=at(0)))["d"]["v"]["gauges"]["m"] == 2


async def test_stats_refused_update_changes_nothing(engine: Engine) -> None:
    await engine.stats_update("a", {"dims": {"country": "es"}, "counters": {"c": 1}}, now=at(0))
    before = await engine.stats_query(now=at(0))
    for body in ({"dims": {"country": "es"}, "counters": {"c": 5, "d": 1.5}},
                 {"dims": {"country": "es", "user": "total"}, "counters": {"c": 9}}):
        with pytest.raises(InvalidInput):
            await engine.stats_update("a", body, now=at(0))
    assert await engine.stats_query(now=at(0)) == before


async def test_stats_concurrent_updates_of_one_id_are_planned_in_log_order(engine: Engine) -> None:
    """Many concurrent absolute reports of one id: the roll-up ends at the id's last value
    (each change planned against the value the previous one left)."""
    async with trio.open_nursery() as nursery:
        for i in range(1, 101):
            nursery.start_soon(engine.stats_update, "id", {"dims": {"d": "v"}, "counters": {"c": i}})
    d = await engine.stats_query(["d"])
    detail = await engine.ask("statid", "id", lambda s: s.counters["c"])
    assert d["d"]["v"]["counters"]["c"] == detail


async def test_stats_history_counters_gauges_members(engine: Engine) -> None:
    day = 86400
    t0 = BASE - BASE % day
    await engine.stats_update("a", {"dims": {"country": "es"}, "counters": {"bytes": 100},
                                    "gauges": {"online": 10}, "members": {"users": "u1"}}, now=t0 + 10)
    await engine.stats_update("b", {"dims": {"country": "de"}, "counters": {"bytes": 5},
                                    "gauges": {"online": 4}, "members": {"users": "u1"}}, now=t0 + 20)
    await engine.stats_update("a", {"dims": {"country": "es"}, "counters": {"bytes": 150},
                                    "gauges": {"online": 20}, "members": {"users": "u2"}}, now=t0 + day + 10)
    bounds, values, total = await engine.stats_history("country", "bytes", "counter", t0, t0 + 3 * day - 1, "day")
    assert bounds == [t0, t0 + day, t0 + 2 * day, t0 + 3 * day]
    assert values["es"] == {"values": [100, 150, 150], "changes": [100, 50, 0]}
    assert total == {"values": [105, 155, 155], "changes": [105, 50, 0]}
    _, values, _ = await engine.stats_history("country", "bytes", "counter", t0, t0 + day - 1, "day", values=["es"])
    assert list(values) == ["es"]
    # Gauges per gauge period are statshub's gauges; per day, the mean of the day's periods.
    _, values, total = await engine.stats_history("country", "online", "gauge", t0, t0 + 2 * P - 1, P)
    assert values["es"]["values"] == [10.0, 0.0] and total["sums"] == [14, 0]
    _, values, _ = await engine.stats_history("country", "online", "gauge", t0, t0 + 2 * day - 1, "day")
    assert values["es"]["periods"] == [240, 240] and values["es"]["values"] == [10 / 240, 20 / 240]
    _, values, total = await engine.stats_history("country", "users", "member", t0, t0 + 2 * day - 1, "day")
    assert values["es"]["values"] == [1, 1] and total["values"] == [2, 1]
    _, _, total = await engine.stats_history("country", "users", "member", t0, t0 + 2 * day - 1, "day", union=True)
    assert total["values"] == [1, 1]


async def test_stats_stream_values(engine: Engine) -> None:
    hour = 3600
    now = BASE + 10 * 86400
    await engine.stats_update("a", {"dims": {"country": "es"}, "counters": {"bytes": 10}}, now=now - 3 * hour)
    await engine.stats_update("a", {"dims": {"country": "es"}, "counters": {"bytes": 30}}, now=now - hour)
    await engine.stats_update("b", {"dims": {"country": "de"}, "counters": {"bytes": 1}}, now=now - hour)
    ranges = [(now - 7 * 86400, now + 1, hour)]
    intervals = await engine.stats_stream_values("country", "*", "counter", "bytes", ranges, now)
    assert intervals[0] == {"asOfSeconds": (now - 3 * hour) // hour * hour, "values": {"es": 10, "total": 10}}
    assert intervals[-1]["values"] == {"es": 30, "de": 1, "total": 31}
    only = await engine.stats_stream_values("country", "de", "counter", "bytes", ranges, now)
    assert all(set(i["values"]) == {"de"} for i in only)
    live = await engine.stats_stream_now("country", "*", "gauge", "bytes", now=now)
    assert live == {"es": 0, "de": 0, "total": 0}
    # A limit keeps the values with the largest figure now; total stays over every value.
    await engine.stats_update("c", {"dims": {"country": "fr"}, "counters": {"bytes": 20}}, now=now - hour)
    intervals, omitted = await engine.stats_stream_history("country", "*", "counter", "bytes", ranges, now, limit=2)
    assert omitted == 1
    assert intervals[-1]["values"] == {"es": 30, "fr": 20, "total": 51}
    assert intervals[0]["values"] == {"es": 10, "total": 10}
    live, omitted = await engine.stats_stream_live("country", "*", "counter", "bytes", now, limit=1)
    assert (live, omitted) == ({"es": 30, "total": 51}, 2)
    assert await engine.stats_stream_live("country", "total", "counter", "bytes", now) == ({"total": 51}, 0)


async def test_stats_stream_answers_are_shared(engine: Engine) -> None:
    """Concurrent streams asking the same question share one computation."""
    now = BASE + 10 * 86400
    for i in range(200):
        await engine.stats_update(f"id{i}", {"dims": {"country": f"c{i}"}, "counters": {"b": i}}, now=now - 7200)
    ranges = [(now - 7 * 86400, now + 1, 3600)]
    calls = 0
    real = engine._stream_history

    async def counted(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        return await real(*args)

    engine._stream_history = counted  # type: ignore[method-assign]
    answers: list[Any] = []

    async def ask() -> None:
        answers.append(await engine.stats_stream_history("country", "*", "counter", "b", ranges, now, limit=5))

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(ask)
    assert calls == 1 and all(a is answers[0] for a in answers)
    intervals, omitted = answers[0]
    assert omitted == 195  # c0 has a 0, which counts as a figure
    assert intervals[-1]["values"] == {"c199": 199, "c198": 198, "c197": 197, "c196": 196, "c195": 195,
                                       "total": sum(range(200))}


async def test_stats_stream_gauge_history_is_the_max_of_its_periods(engine: Engine) -> None:
    """statshub streamed MAX(stat) per period per _dim from its archive, ``total`` being a
    row of its own: an hour holding one period at 11000 is 11000 (not the hour's mean), and
    the total is the largest per-period sum (30 here, not 30 + 5)."""
    hour = 3600
    now = BASE + 10 * 86400
    h0 = now - now % hour - 2 * hour  # a complete hour, two before the current one
    await engine.stats_update("a", {"dims": {"country": "es"}, "gauges": {"online": 10}}, now=h0 + 1)
    await engine.stats_update("b", {"dims": {"country": "de"}, "gauges": {"online": 5}}, now=h0 + 2)
    await engine.stats_update("a", {"dims": {"country": "es"}, "gauges": {"online": 30}}, now=h0 + 5 * P + 1)
    await engine.stats_update("a", {"dims": {"country": "fr"}, "gauges": {"online": 11000}}, now=h0 + hour + P)
    ranges = [(now - 7 * 86400, now + 1, hour)]
    intervals = await engine.stats_stream_values("country", "*", "gauge", "online", ranges, now)
    assert intervals == [
        {"asOfSeconds": h0, "values": {"es": 30, "de": 5, "total": 30}},
        {"asOfSeconds": h0 + hour, "values": {"fr": 11000, "total": 11000}},
    ]
    only = await engine.stats_stream_values("country", "total", "gauge", "online", ranges, now)
    assert [i["values"] for i in only] == [{"total": 30}, {"total": 11000}]
    # The weekly range of statshub's history: one week's maximum over every period in it.
    weekly = await engine.stats_stream_values("country", "es", "gauge", "online",
                                              [(now - 30 * 86400, now + 1, 7 * 86400)], now)
    assert [i["values"] for i in weekly] == [{"es": 30}]


async def test_stats_survive_snapshot_and_replay(tmp_path: Path) -> None:
    """Snapshot taken mid-way, more writes logged after it: a restart finds the same figures."""
    data = tmp_path / "data"
    writes = [("a", {"dims": {"country": "es", "user": "bob"}, "counters": {"c": 5}, "gauges": {"g": 3},
                     "multiMembers": {"m": ["x", "y"]}}),
              ("b", {"dims": {"country": "de"}, "increments": {"c": 7}, "gauges": {"g": 2}})]
    async with Engine.open(data, fsync="always") as engine:
        await engine.stats_update(*writes[0], now=at(0))
        await engine.snapshot_now()
        await engine.stats_update(*writes[1], now=at(0))
        await engine.stats_update("a", {"dims": {"country": "es"}, "counters": {"c": 9}}, now=at(0))
        before = await engine.stats_query(now=at(1))
    async with Engine.open(data) as engine:
        assert await engine.stats_query(now=at(1)) == before
        # The id's detail came back too: the next change is planned against 9.
        await engine.stats_update("a", {"dims": {"country": "es"}, "counters": {"c": 10}}, now=at(1))
        after = await engine.stats_query(["country"], now=at(1))
    assert after["country"]["es"]["counters"]["c"] == 10


def test_stats_states_round_trip_plain() -> None:
    ident = StatIdState()
    ident.apply([("c", 5)], [("g", 2)], 720)
    assert StatIdState.from_plain(ident.to_plain()).to_plain() == ident.to_plain()
    dim = DimValueStats()
    from engine.stats import MEMBER_LEVELS
    from engine.uniques import UniqueConfig

    dim.apply(800, 720, [("c", 5)], [("g", 2)], [("m", [1, 2, 3])], UniqueConfig(MEMBER_LEVELS))
    dim._check()
    again = DimValueStats.from_plain(dim.to_plain())
    again._check()
    assert again.figures(360, 1080) == dim.figures(360, 1080)
