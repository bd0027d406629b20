"""Density (engine/density.py): people counting per space, exact at any instant.

Every count is checked against a naive model written here from the rule alone: an event adds
``sign x direction`` to every space of the placement valid at its own time, and the count at
T sums the events at or before T (since the last local midnight with the nightly reset).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import trio
from density_sample import (
    SAMPLE_END,
    SEED_COUNT_A,
    SEED_PLACEMENTS,
    SEED_TABLE,
    TWO_SPACE_PLACEMENTS,
    placements_from_table,
    sample_rows,
)

from engine.commands import encode_command
from engine.density import (
    DPU,
    MAX_AHEAD_MS,
    MAX_MS,
    SPACE,
    DensityIngest,
    PlaceSensor,
    SensorState,
    SpaceState,
    iso_ms,
    parse_instant,
    validate_dpu_event,
    validate_dpu_events,
)
from engine.engine import Engine
from engine.errors import InvalidInput
from engine.periods import known_zones
from engine.timebuckets import MAX_TS


class Model:
    """The rule, written out the slow way."""

    def __init__(self) -> None:
        self.placements: dict[str, list[tuple[int, dict[str, int]]]] = {}
        self.events: list[tuple[str, int, int]] = []
        self.reset: dict[str, ZoneInfo | None] = {}

    def place(self, dpu: str, installed: int, spaces: dict[str, int]) -> None:
        mine = [p for p in self.placements.get(dpu, []) if p[0] != installed]
        self.placements[dpu] = sorted([*mine, (installed, spaces)], key=lambda p: p[0])

    def sign(self, dpu: str, ts: int, space: str) -> int:
        valid = [spaces for installed, spaces in self.placements.get(dpu, []) if installed <= ts]
        return valid[-1].get(space, 0) if valid else 0

    def midnight(self, space: str, t: int) -> int:
        if space not in self.reset:
            return -1
        zone = self.reset[space]
        if zone is None:
            return t - t % 86_400_000
        local = datetime.fromtimestamp(t // 1000, zone).replace(hour=0, minute=0, second=0, microsecond=0)
        return int(local.timestamp()) * 1000

    def count(self, space: str, t: int) -> int:
        since = self.midnight(space, t)
        return sum(
            self.sign(dpu, ts, space) * direction
            for dpu, ts, direction in self.events
            if since <= ts <= t
        )

    def extremes(self, space: str, a: int, b: int) -> tuple[int, int, int]:
        instants = {a} | {ts for _, ts, _ in self.events if a <= ts < b}
        if space in self.reset:
            day = self.midnight(space, b - 1)
            while day >= a:
                instants.add(day)
                day = self.midnight(space, day - 1)
        values = [self.count(space, t) for t in sorted(instants)]
        return self.count(space, b - 1), max(values), min(values)


def run(fn: Any) -> Any:
    return trio.run(fn)


async def seeded(engine: Engine, rows: Iterable[dict[str, Any]]) -> None:
    for dpu, body in TWO_SPACE_PLACEMENTS.items():
        await engine.place_sensor(dpu, body)
    await engine.density_ingest(list(rows))


def model_of(rows: list[dict[str, Any]]) -> Model:
    model = Model()
    for dpu, body in TWO_SPACE_PLACEMENTS.items():
        model.place(dpu, parse_instant(body["installed"], "installed"), body["spaces"])
    for dpu, ts, direction, _ in validate_dpu_events(rows):
        model.events.append((dpu, ts, direction))
    return model


def probe_instants(model: Model, n: int = 60, seed: int = 1) -> list[int]:
    rng = random.Random(seed)
    times = sorted(ts for _, ts, _ in model.events)
    picks = [times[0] - 1, times[0], times[-1], times[-1] + 1]
    for _ in range(n):
        t = rng.choice(times)
        picks += [t - 1, t, t + 1, t + rng.randrange(-5_000_000, 5_000_000)]
    return picks


############################################################################################
# Validation


def test_parse_instant_forms() -> None:
    assert parse_instant("2018-02-24T08:45:21.893Z", "t") == 1519461921893
    assert parse_instant("2018-02-24T09:45:21.893+01:00", "t") == 1519461921893
    assert parse_instant("2018-02-24T08:45:21.893999Z", "t") == 1519461921893  # cut, not rounded
    assert parse_instant(1519461921.893, "t") == 1519461921893
    assert parse_instant(1519461921, "t") == 1519461921000
    assert parse_instant("2018-02-24", "t") == 1519430400000
    # Text digits: Unix seconds, 10 of them, a fraction cut to the millisecond (no float error).
    assert parse_instant("1519461921", "t") == 1519461921000
    assert parse_instant(" 1519493065.492 ", "t") == 1519493065492
    assert parse_instant("1519461921.8939", "t") == 1519461921893


@pytest.mark.parametrize("text", ["20180224", "1519461921893", "151946192", "0", "00000000000.5"])
def test_digit_strings_other_than_unix_seconds_are_refused(text: str) -> None:
    """One rule for /count and /api/spaces/../count: "20180224" was 2018-02-24 on one and
    1970-08-22 on the other; an ambiguous digit string is now refused with the forms taken."""
    with pytest.raises(InvalidInput) as caught:
        parse_instant(text, "timestamp")
    assert caught.value.field == "timestamp"
    assert caught.value.message.startswith(
        "timestamp as digits is Unix seconds, which takes 10 digits (2001-09-09 to 2286-11-20)")
    assert "ISO-8601 ('2018-02-24')" in caught.value.message


def test_an_unparsable_instant_names_every_form() -> None:
    with pytest.raises(InvalidInput, match=r"^at must be an ISO-8601 instant .* or Unix seconds: a "
                       r"number, or 10 digits with an optional fraction such as '1519461921.893', "
                       r"got 'soon'$"):
        parse_instant("soon", "at")
    with pytest.raises(InvalidInput, match=r"Unix milliseconds\? a number is Unix seconds"):
        parse_instant(1519461921893, "timestamp")


@pytest.mark.parametrize("value", [1e306, -1e306, 1e20, 2.6e11, -0.5, 10**400, -(10**400), float("inf")])
def test_numbers_out_of_range_are_refused_before_any_arithmetic(value: Any) -> None:
    """Red-team finding: ``{"timestamp": 1e306}`` answered 500 (``math.floor(1e306 * 1000)``
    is ``floor(inf)``); the range is checked on the seconds, before multiplying."""
    with pytest.raises(InvalidInput) as caught:
        parse_instant(value, "timestamp")
    assert caught.value.field == "timestamp"
    assert caught.value.message.startswith("timestamp must ")


NOON = parse_instant("2024-05-01T12:00:00Z", "t")


def crossing(timestamp: Any, dpu: str = "s") -> dict[str, Any]:
    return {"timestamp": timestamp, "direction": 1, "dpu_id": dpu}


def test_crossings_stamped_ahead_of_the_clock_are_refused() -> None:
    """A late crossing is normal (a sensor's backlog); one from the future is a wrong clock, and
    a crossing dated 9999 once made a resetting space answer 500 for good (see below)."""
    assert MAX_AHEAD_MS == 10 * 60_000
    edge = iso_ms(NOON + MAX_AHEAD_MS)
    assert validate_dpu_events([crossing(edge), crossing("1970-01-01")], now_ms=NOON)[0][1] == NOON + MAX_AHEAD_MS
    with pytest.raises(InvalidInput) as caught:
        validate_dpu_events([crossing(edge), crossing(iso_ms(NOON + MAX_AHEAD_MS + 1))], now_ms=NOON)
    assert caught.value.field == "body[1].timestamp"
    assert caught.value.message == (
        "body[1].timestamp must not lie more than 10 minutes ahead of this server's clock "
        "(2024-05-01T12:00:00.000Z): a crossing from the future comes from a wrong clock, or "
        "from local time sent as UTC (name the offset: '2018-02-24T09:45:21.893+01:00'); got "
        "'2024-05-01T12:10:00.001Z', 10 minutes ahead"
    )
    # Local time in Tokyo sent as UTC: 9 hours ahead, refused rather than counted 9 hours late.
    with pytest.raises(InvalidInput, match=r"^timestamp must not lie more .* got '2024-05-01T21:00:00', "
                       r"9 hours ahead$"):
        validate_dpu_event(crossing("2024-05-01T21:00:00"), now_ms=NOON)
    with pytest.raises(InvalidInput, match=r"got '9999-12-31T23:59:59Z', 2913052 days ahead$"):
        validate_dpu_event(crossing("9999-12-31T23:59:59Z"), now_ms=NOON)


async def test_the_engine_refuses_crossings_from_the_future(engine: Engine) -> None:
    await engine.place_sensor("s", {"installed": 0, "doorway": "d", "spaces": {"A": 1}})
    soon = int(time.time() * 1000) + MAX_AHEAD_MS // 2
    with pytest.raises(InvalidInput) as caught:
        await engine.density_ingest([crossing(iso_ms(soon)), crossing("9999-12-31T23:59:59Z")])
    assert caught.value.field == "body[1].timestamp"
    assert (await engine.sensor("s"))["events"] == 0  # type: ignore[index]
    assert await engine.density_ingest([crossing(iso_ms(soon))]) == (1, 0)


@pytest.mark.parametrize(("direction", "expected"), [(1.0, 1), (-1.0, -1), (1, 1), ("+1", 1)])
def test_direction_takes_integral_floats_as_the_seeds_int_did(direction: Any, expected: int) -> None:
    event = {"timestamp": "2018-02-24T08:45:21.893Z", "direction": direction, "dpu_id": "423"}
    [(_, _, got, _)] = validate_dpu_events([event])
    assert got == expected and type(got) is int


@pytest.mark.parametrize("direction", ["1.0", 1.5, 0.0, float("nan"), True])
def test_direction_refuses_what_the_seeds_int_refused_or_rounded(direction: Any) -> None:
    event = {"timestamp": "2018-02-24T08:45:21.893Z", "direction": direction, "dpu_id": "423"}
    with pytest.raises(InvalidInput, match=r"^body\[0\]\.direction must be 1 or -1 \(a number, 1\.0 "):
        validate_dpu_events([event])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([{"timestamp": "2018-02-24T08:45:21.893Z", "direction": "2", "dpu_id": "1"}], "body[0].direction"),
        ([{"timestamp": "2018-02-24T08:45:21.893Z", "direction": True, "dpu_id": "1"}], "body[0].direction"),
        ([{"timestamp": "24/02/2018", "direction": 1, "dpu_id": "1"}], "body[0].timestamp"),
        ([{"timestamp": float("nan"), "direction": 1, "dpu_id": "1"}], "body[0].timestamp"),
        ([{"timestamp": "1969-12-31T23:59:59Z", "direction": 1, "dpu_id": "1"}], "body[0].timestamp"),
        ([{"direction": 1, "dpu_id": "1"}], "body[0].timestamp"),
        ([{"timestamp": "2018-02-24T08:45:21.893Z", "direction": 1}], "body[0].dpu_id"),
        ([{"timestamp": "2018-02-24T08:45:21.893Z", "direction": 1, "dpu_id": ""}], "body[0].dpu_id"),
        ([{"timestamp": "2018-02-24T08:45:21.893Z", "direction": 1, "dpu_id": "1", "event_id": []}],
         "body[0].event_id"),
        (["not an object"], "body[0]"),
        ({"timestamp": 1}, "body"),
    ],
)
def test_validate_dpu_events_names_the_field(body: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_dpu_events(body)
    assert caught.value.field == field


async def test_a_bad_event_stores_nothing(engine: Engine) -> None:
    await engine.place_sensor("s", {"installed": 0, "doorway": "d", "spaces": {"A": 1}})
    good = {"timestamp": "2020-01-01T00:00:00Z", "direction": 1, "dpu_id": "s"}
    with pytest.raises(InvalidInput, match=r"^body\[1\]\.direction must be 1 or -1"):
        await engine.density_ingest([good, {**good, "direction": 0}])
    assert await engine.space_count("A") == 0
    assert (await engine.sensor("s"))["events"] == 0  # type: ignore[index]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"installed": "x", "doorway": "Z", "spaces": {"A": 1}}, "installed"),
        ({"installed": 0, "doorway": "", "spaces": {"A": 1}}, "doorway"),
        ({"installed": 0, "doorway": "Z", "spaces": {"A": 2}}, "spaces.A"),
        ({"installed": 0, "doorway": "Z", "spaces": []}, "spaces"),
        ({"installed": 0, "doorway": "Z"}, "spaces"),
        ({"installed": 0, "doorway": "Z", "spaces": {}, "extra": 1}, "extra"),
    ],
)
async def test_bad_placement_is_refused(engine: Engine, body: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        await engine.place_sensor("s", body)
    assert caught.value.field == field
    assert await engine.sensor("s") is None


async def test_sign_zero_is_refused_with_the_seed_tables_translation(engine: Engine) -> None:
    with pytest.raises(InvalidInput, match=r"^spaces\.A must be 1 .* or -1 \(it leaves\), got 0; a "
                       r"space the sensor counts nothing for is left out"):
        await engine.place_sensor("s", {"installed": 0, "doorway": "Z", "spaces": {"A": 0}})
    assert await engine.sensor("s") is None


def test_the_seed_table_translates_to_placements() -> None:
    """423's +1 and -1 rows for A cancel (the seed moved A by both): it counts for no space."""
    assert {dpu: body["spaces"] for dpu, body in SEED_PLACEMENTS.items()} == {"283": {"A": 1}, "423": {}}
    assert placements_from_table([*SEED_TABLE, ("423", "B", "Z", -1)])["423"]["spaces"] == {"B": -1}


############################################################################################
# The sample data


async def test_sample_csv_counts_match_the_model_at_every_probe(engine: Engine) -> None:
    rows = sample_rows()
    assert len(rows) == 563
    await seeded(engine, rows)
    model = model_of(rows)
    for space in ("A", "B"):
        for t in probe_instants(model):
            assert await engine.space_count(space, t) == model.count(space, t), (space, t)
    # The final counts, worked out by hand from density.md 3.7: A = 283's 272 - 253 plus
    # 423's 15 - 23; B = -(15 - 23).
    assert await engine.space_count("A") == 19 - 8
    assert await engine.space_count("B") == 8
    assert await engine.space_count("C") is None


async def test_the_seed_table_and_every_row_give_the_seeds_count(engine: Engine) -> None:
    """density.md 3.1's realtime example, 19 for A: the seed's table (423 counts nothing for
    A) and all 563 rows, its 33 identical ones included, as its loader posted them."""
    for dpu, body in SEED_PLACEMENTS.items():
        await engine.place_sensor(dpu, body)
    assert await engine.density_ingest(sample_rows()) == (563, 0)
    end = parse_instant(SAMPLE_END, "t")
    assert await engine.space_count("A", end) == SEED_COUNT_A == await engine.space_count("A")
    assert await engine.space_count("A", end - 1) != SEED_COUNT_A  # the last row counts
    assert (await engine.sensor("423"))["current"]["spaces"] == {}  # type: ignore[index]
    assert (await engine.space("A"))["sensors"] == ["283"]  # type: ignore[index]


async def test_shuffled_arrival_gives_the_same_counts() -> None:
    rows = sample_rows()
    results = []
    for seed in (None, 1, 2):
        shuffled = list(rows)
        if seed is not None:
            random.Random(seed).shuffle(shuffled)
        async with Engine.open() as engine:
            await seeded(engine, shuffled[:200])
            for start in range(200, len(shuffled), 50):  # and in batches, late ones included
                await engine.density_ingest(shuffled[start : start + 50])
            model = model_of(rows)
            counts = [await engine.space_count("A", t) for t in probe_instants(model)]
            occupancy = await engine.occupancy("A", 1519430400, 1520035199, "hour")
            assert occupancy is not None
            results.append((counts, occupancy[1]))
            late = [(await engine.sensor(d))["late"] for d in ("283", "423")]  # type: ignore[index]
            late = sum(late)
            assert (late > 0) == (seed is not None)
    assert results[0] == results[1] == results[2]


async def test_event_ids_make_resends_harmless(engine: Engine) -> None:
    rows = [{**row, "event_id": f"{row['dpu_id']}|{row['timestamp']}|{row['direction']}"} for row in sample_rows()]
    await seeded(engine, [])
    new, duplicates = await engine.density_ingest(rows)
    assert (new, duplicates) == (563 - 33, 33)  # the seed's 33 exact duplicate rows
    assert await engine.density_ingest(rows) == (0, 563)
    model = model_of(list({r["event_id"]: r for r in rows}.values()))
    for t in probe_instants(model, 20):
        assert await engine.space_count("A", t) == model.count("A", t)


############################################################################################
# Placements: moves, corrections, events before any placement


async def test_sensor_move_keeps_history(engine: Engine) -> None:
    rows = sample_rows()
    await seeded(engine, rows)
    model = model_of(rows)
    moved = parse_instant("2018-02-28T12:00:00Z", "t")
    before = [await engine.space_count("A", t) for t in range(moved - 86_400_000, moved, 3_600_000)]
    await engine.place_sensor("283", {"installed": moved / 1000, "doorway": "Y", "spaces": {"C": 1}})
    model.place("283", moved, {"C": 1})
    after = [await engine.space_count("A", t) for t in range(moved - 86_400_000, moved, 3_600_000)]
    assert before == after
    for space in ("A", "B", "C"):
        for t in probe_instants(model, 30):
            assert await engine.space_count(space, t) == model.count(space, t), (space, t)
    sensor = await engine.sensor("283")
    assert [p["doorway"] for p in sensor["placements"]] == ["X", "Y"]  # type: ignore[index]
    assert {d["doorway"]: d["sensors"] for d in engine.density_doorways()} == {
        "X": [], "Y": ["283"], "Z": ["423"]}


async def test_corrected_placement_equals_placing_it_first() -> None:
    rows = sample_rows()
    fix = {"installed": "2018-02-27T00:00:00Z", "doorway": "Z2", "spaces": {"B": 1, "C": -1}}
    async with Engine.open() as late, Engine.open() as early:
        await seeded(late, rows)
        await late.place_sensor("283", fix)  # the correction, after the data
        for dpu, body in TWO_SPACE_PLACEMENTS.items():
            await early.place_sensor(dpu, body)
        await early.place_sensor("283", fix)
        await early.density_ingest(rows)
        model = model_of(rows)
        model.place("283", parse_instant(fix["installed"], "t"), fix["spaces"])
        for space in ("A", "B", "C"):
            for t in probe_instants(model, 30):
                expected = model.count(space, t)
                assert await late.space_count(space, t) == expected == await early.space_count(space, t)
        # Replacing the placement at the same instant corrects it again; A gets its events back.
        await late.place_sensor("283", {**fix, "spaces": {"A": 1}})
        model.place("283", parse_instant(fix["installed"], "t"), {"A": 1})
        for space in ("A", "B", "C"):
            for t in probe_instants(model, 30):
                assert await late.space_count(space, t) == model.count(space, t), (space, t)


async def test_events_before_any_placement_count_once_placed(engine: Engine) -> None:
    rows = sample_rows()
    await engine.density_ingest(rows)
    assert await engine.space_count("A") is None
    assert (await engine.sensor("283"))["events"] == 525  # type: ignore[index]
    for dpu, body in TWO_SPACE_PLACEMENTS.items():
        await engine.place_sensor(dpu, body)
    assert await engine.space_count("A") == 11


def test_a_correction_reaches_a_space_in_one_message() -> None:
    """What "never half-done" rests on: a sensor's correction is one contribution list per
    space, applied by the space in one call."""
    sensor = SensorState()
    sensor.place(0, "Z", {"A": 1})
    _, _, _ = sensor.ingest(1, [(i, 1000 + i, 1, None) for i in range(100)])
    out = sensor.place(500, "Z", {"B": 1})
    assert sorted(out) == ["A", "B"]
    assert len(out["A"]) == len(out["B"]) == 100
    assert {delta for _, _, delta in out["A"]} == {0}
    sensor._check()


############################################################################################
# Occupancy and the nightly reset


@pytest.mark.parametrize("reset_tz", [None, "UTC", "America/New_York"])
def test_occupancy_matches_the_model(reset_tz: str | None) -> None:
    rng = random.Random(7)
    space = SpaceState()
    model = Model()
    model.place("d", 0, {"S": 1})
    if reset_tz is not None:
        space.set_options(True, None if reset_tz == "UTC" else reset_tz)
        model.reset["S"] = None if reset_tz == "UTC" else ZoneInfo(reset_tz)
    t0 = 1_700_000_000_000
    items = []
    for i in range(600):
        ts = t0 + rng.randrange(0, 3 * 86_400_000)
        if rng.random() < 0.1 and items:
            ts = items[-1][1]  # simultaneous crossings
        direction = rng.choice((1, 1, -1))
        items.append((i, ts, direction))
        model.events.append(("d", ts, direction))
    space.contribute("d", items)
    space._check()
    for _ in range(40):
        a = t0 + rng.randrange(-3_600_000, 3 * 86_400_000)
        b = a + rng.randrange(1, 20 * 3_600_000)
        cut = rng.randrange(a + 1, b + 1) if b > a + 1 else b
        bounds = sorted({a, cut, b})
        result = space.occupancy(bounds)
        for i, (lo, hi) in enumerate(zip(bounds, bounds[1:], strict=False)):
            assert (result.end[i], result.peak[i], result.low[i]) == model.extremes("S", lo, hi), (lo, hi)
        t = rng.randrange(a, b)
        assert space.count_at(t) == model.count("S", t)


def test_simultaneous_crossings_show_no_phantom_peak() -> None:
    space = SpaceState()
    space.contribute("d", [("in", 5_000, 1), ("out", 5_000, -1)])
    assert space.occupancy([0, 10_000]).peak == [0]
    assert space.occupancy([5_000, 10_000]).peak == [0]


async def test_late_events_across_a_nightly_reset(engine: Engine) -> None:
    await engine.place_sensor("s", {"installed": 0, "doorway": "door", "spaces": {"Hall": 1}})
    await engine.set_space_options("Hall", {"nightly_reset": True, "tz": "Europe/Oslo"})

    def at(text: str) -> dict[str, Any]:
        return {"timestamp": text, "direction": 1, "dpu_id": "s"}

    # Evening of the 1st (Oslo is UTC+1 in January), then the next morning.
    await engine.density_ingest([at("2024-01-01T20:00:00Z"), at("2024-01-02T08:00:00Z")])
    # Late: one more the evening before (arrives after the morning's) and one at 23:30 Oslo.
    await engine.density_ingest([at("2024-01-01T21:00:00Z"), at("2024-01-01T22:30:00Z")])
    count = engine.space_count
    assert await count("Hall", parse_instant("2024-01-01T22:59:59.999Z", "t")) == 3
    assert await count("Hall", parse_instant("2024-01-01T23:00:00Z", "t")) == 0  # Oslo midnight
    assert await count("Hall", parse_instant("2024-01-02T08:00:00Z", "t")) == 1
    found = await engine.occupancy("Hall", 1704067200, 1704239999, "day", tz="Europe/Oslo")
    assert found is not None
    breakdown, occupancy = found
    # Oslo days: the 1st (from 01:00 local, the range's start), the 2nd, and the first hour
    # of the 3rd; each starts again at 0.
    assert [p[0] for p in breakdown.periods] == [1704067200, 1704150000, 1704236400]
    assert (occupancy.end, occupancy.peak, occupancy.low) == ([3, 1, 0], [3, 1, 0], [0, 0, 0])
    # Without the reset the late events carry into the 2nd.
    await engine.set_space_options("Hall", {"nightly_reset": False})
    assert await count("Hall", parse_instant("2024-01-02T08:00:00Z", "t")) == 4


############################################################################################
# The ends of time, and "now"


def test_no_zone_makes_a_midnight_overflow_at_either_end_of_the_range() -> None:
    """Red-team finding: in a zone ahead of UTC the last hours of 9999 are local 10000-01-01,
    which ``datetime`` cannot hold (``OverflowError: date value out of range``)."""
    space = SpaceState()
    space.contribute("d", [("a", 0, 1), ("z", MAX_MS, 1)])
    for name in sorted(known_zones()):
        space.set_options(True, name)
        for t in (0, 1, 86_399_999, MAX_MS - 2 * 86_400_000, MAX_MS - 86_400_000, MAX_MS - 1, MAX_MS):
            midnight = space.midnight_at_or_before(t)
            assert midnight <= t < midnight + 26 * 3_600_000, (name, t, midnight)
        assert space.public("Q", MAX_MS)["count"] in (0, 1)
        space.occupancy([(MAX_TS - 3 * 86_400) * 1000, MAX_MS + 1])


@pytest.mark.parametrize(
    ("tz", "offset_minutes"),
    [("Asia/Tokyo", 540), ("Pacific/Kiritimati", 840), ("Asia/Kolkata", 330), ("Asia/Kathmandu", 345),
     ("Europe/Oslo", 60)],
)
def test_the_last_local_midnight_of_9999_is_exact(tz: str, offset_minutes: int) -> None:
    """Local 10000-01-01T00:00 is ``offset`` before the end of 9999 UTC (Oslo: winter time)."""
    space = SpaceState()
    space.set_options(True, tz)
    midnight = MAX_MS + 1 - offset_minutes * 60_000
    for t in (midnight, midnight + 1, MAX_MS - 1, MAX_MS):
        assert space.midnight_at_or_before(t) == midnight
    assert space.midnight_at_or_before(midnight - 1) == midnight - 86_400_000
    # Away from the edge the ordinary path gives the same arithmetic: local time, cut to the day.
    offset = offset_minutes * 60_000
    for t in (parse_instant("2024-01-15T12:00:00Z", "t"), parse_instant("2024-01-15T23:30:00Z", "t")):
        local = t + offset
        assert space.midnight_at_or_before(t) == local - local % 86_400_000 - offset


@pytest.mark.parametrize("options_first", [False, True])
async def test_a_stored_crossing_at_the_end_of_time_cannot_break_a_resetting_space(
    engine: Engine, options_first: bool
) -> None:
    """Red-team finding (HIGH): a crossing dated 9999-12-31T23:59:59Z and ``nightly_reset`` in
    Asia/Tokyo made the space answer 500 on every read, after restarts too. Such a crossing is
    refused now, but a log written before may hold one: as replayed (the command itself), it
    must read."""
    await engine.place_sensor("d9", {"installed": 0, "doorway": "D9", "spaces": {"Q": 1}})
    tokyo = {"nightly_reset": True, "tz": "Asia/Tokyo"}
    if options_first:
        await engine.set_space_options("Q", tokyo)
    # One before Tokyo's last midnight of 9999 (15:00 UTC), one at the very end.
    late = parse_instant("9999-12-31T10:00:00Z", "t")
    await engine.submit(DensityIngest(events=[("d9", late, 1, None), ("d9", MAX_MS, 1, None)]))
    view = await engine.set_space_options("Q", tokyo)
    assert view["count"] == 0 and view["last_event"] == "9999-12-31T23:59:59.999Z"
    assert await engine.space_count("Q") == 0
    assert await engine.space_count("Q", MAX_MS) == 1  # the 10:00 one was reset at 15:00 UTC
    assert await engine.space_count("Q", MAX_MS - 1) == 0
    assert await engine.space_count("Q", parse_instant("9999-12-31T14:59:59.999Z", "t")) == 1
    found = await engine.occupancy("Q", MAX_TS - 2 * 86_400, MAX_TS, "day", tz="Asia/Tokyo")
    assert found is not None
    assert (found[1].end[-1], found[1].peak[-1], found[1].low[-1]) == (1, 1, 0)
    for tz in ("Pacific/Kiritimati", "America/New_York", None, "Asia/Tokyo"):
        assert (await engine.set_space_options("Q", {"nightly_reset": True, "tz": tz}))["count"] == 0
    # From a snapshot too: the state as loaded reads the same.
    copy = SpaceState.from_plain(next(item[3] for item in engine.iter_snapshot_items()
                                      if item[:2] == (SPACE, "Q")))
    assert copy.count_at(MAX_MS) == 1 and copy.public("Q", MAX_MS)["count"] == 1


async def test_now_is_now_a_future_crossing_counts_from_its_own_time(engine: Engine) -> None:
    """Red-team finding: the count "now" was taken at ``max(now, latest crossing)``, so one
    crossing dated 9999 changed today's count. A crossing counts from its own instant."""
    await engine.place_sensor("f", {"installed": 0, "doorway": "F", "spaces": {"F": 1}})
    now = int(time.time() * 1000)
    ahead = now + MAX_AHEAD_MS // 2
    await engine.density_ingest([crossing(iso_ms(now - 60_000), "f"), crossing(iso_ms(ahead), "f")])
    assert await engine.space_count("F") == 1
    assert (await engine.space("F"))["count"] == 1  # type: ignore[index]
    assert await engine.space_count("F", ahead) == 2
    await engine.submit(DensityIngest(events=[("f", MAX_MS, 1, None)]))  # from an old log
    assert await engine.space_count("F") == 1
    assert (await engine.space("F"))["last_event"] == "9999-12-31T23:59:59.999Z"  # type: ignore[index]
    state = SpaceState()
    state.contribute("f", [("a", 1_000, 1), ("b", MAX_MS, 1)])
    assert state.public("F", 5_000)["count"] == 1


############################################################################################
# Snapshots and replay


def test_states_round_trip_through_plain() -> None:
    sensor = SensorState()
    sensor.place(0, "Z", {"A": 1, "B": -1})
    sensor.ingest(3, [(0, 10, 1, "x"), (1, 20, -1, None)])
    again = SensorState.from_plain(sensor.to_plain())
    assert again.public("d") == sensor.public("d") and again.raw == sensor.raw
    space = SpaceState()
    space.set_options(True, "Europe/Oslo")
    space.contribute("d", [("x", 10, 1), (5, 20, -1)])
    copy = SpaceState.from_plain(space.to_plain())
    copy._check()
    assert copy.public("A", 0) == space.public("A", 0)


@pytest.mark.parametrize(("sensor_at", "space_at"), [(3, 7), (7, 3), (0, 9), (9, 0), (9, 2), (8, 3), (5, 5)])
async def test_replay_converges_whichever_item_was_snapshotted_first(sensor_at: int, space_at: int) -> None:
    """A snapshot writes entity by entity while writes go on: a sensor item and a space item
    may reflect different log positions. Replaying from the older one must give the live
    counts."""
    rows = sample_rows()
    commands: list[Any] = [
        PlaceSensor(dpu="283", installed=0, doorway="X", spaces=[("A", 1)]),
        PlaceSensor(dpu="423", installed=0, doorway="Z", spaces=[("A", 1), ("B", -1)]),
        DensityIngest(events=validate_dpu_events(rows[:150])),
        DensityIngest(events=validate_dpu_events(rows[150:300])),
        PlaceSensor(dpu="283", installed=parse_instant("2018-02-27T00:00:00Z", "t"), doorway="Y",
                    spaces=[("B", 1), ("C", -1)]),
        DensityIngest(events=validate_dpu_events(rows[300:450])),
        PlaceSensor(dpu="283", installed=parse_instant("2018-02-27T00:00:00Z", "t"), doorway="Y",
                    spaces=[("A", 1)]),
        DensityIngest(events=validate_dpu_events(rows[450:])),
        PlaceSensor(dpu="423", installed=parse_instant("2018-02-26T00:00:00Z", "t"), doorway="Z",
                    spaces=[("C", 1)]),
    ]
    items: dict[str, list[tuple[str, Any, int, Any]]] = {}
    async with Engine.open() as live:
        for i, command in enumerate([None, *commands]):
            if command is not None:
                await live.submit(command)
            snapshot = list(live.iter_snapshot_items())
            if i == sensor_at:
                items[DPU] = [item for item in snapshot if item[0] == DPU]
            if i == space_at:
                items[SPACE] = [item for item in snapshot if item[0] == SPACE]
        expected = {s: [await live.space_count(s, t) for t in probe_instants(model_of(rows), 15)]
                    for s in ("A", "B", "C")}
    async with Engine.open() as recovered:
        for item in items[DPU] + items[SPACE]:
            recovered.load_snapshot_item(*item)
        for seq in range(min(sensor_at, space_at) + 1, len(commands) + 1):
            await recovered.replay(seq, encode_command(commands[seq - 1]))
        got = {s: [await recovered.space_count(s, t) for t in probe_instants(model_of(rows), 15)]
               for s in ("A", "B", "C")}
    assert got == expected
