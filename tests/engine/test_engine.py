"""Tests for engine/engine.py: the Engine facade in memory, against a brute-force model."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import msgpack
import pytest
import trio

from engine.actors import Router
from engine.commands import COUNTER, USER, IngestBatch, decode_command, encode_command
from engine.engine import Breakdown, Engine, UserResult, check_range
from engine.errors import EngineClosed, InvalidInput
from engine.timebuckets import MAX_TS, MIN_TS

T0 = 1496539746
T1 = 1496539747


def ts_of(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp())


def ev(user: Any, value: int, ts: int, **extra: Any) -> dict[str, Any]:
    return {"metric": extra.pop("metric", "steps"), "user": user, "value": value, "ts": ts, **extra}


############################################################################################
# Basics


async def test_engine_ingest_then_query_readme_example(engine: Engine) -> None:
    n = await engine.ingest([ev(1, 10, T1, atid=2, aid=3, ts1=T0, mode="diff")])
    assert n == 1
    got = await engine.query([1], ["steps"], T0, T1, with_atids=True)
    assert got == {1: UserResult({"steps": 10}, [2])}
    # A replay changes nothing.
    await engine.ingest([ev(1, 10, T1, atid=2, aid=3, ts1=T0, mode="diff")])
    assert (await engine.query([1], ["steps"], T0, T1))[1].sums == {"steps": 10}
    assert (await engine.query([1], ["steps"], T0, T1))[1].atids is None


async def test_engine_query_after_a_no_op_diff_on_a_new_metric() -> None:
    async with Engine.open() as engine:
        await engine.ingest([ev(1, 0, T1, aid=1, mode="diff")])
        got = await engine.query([1], ["steps"], MIN_TS, MAX_TS, with_atids=True)
        assert got == {1: UserResult({"steps": 0}, [])}


async def test_engine_query_never_written_users_answers_zero(engine: Engine) -> None:
    got = await engine.query([5, "x"], ["steps", "points"], MIN_TS, MAX_TS, with_atids=True)
    assert got == {
        5: UserResult({"steps": 0, "points": 0}, []),
        "x": UserResult({"steps": 0, "points": 0}, []),
    }
    assert await engine.users() == []


async def test_engine_query_deduplicates_users(engine: Engine) -> None:
    await engine.ingest([ev(1, 3, T1)])
    got = await engine.query([1, 1, 2, 1], ["steps"], T0, T1)
    assert list(got) == [1, 2]
    assert got[1].sums["steps"] == 3


async def test_engine_string_user_ids_are_normalized_on_ingest(engine: Engine) -> None:
    await engine.ingest([ev("42", 3, T1), ev(42, 4, T1), ev("042", 5, T1)])
    got = await engine.query([42, "042"], ["steps"], T1, T1)
    assert got[42].sums["steps"] == 7
    assert got["042"].sums["steps"] == 5
    assert sorted(map(str, await engine.users())) == ["042", "42"]


async def test_engine_batch_with_one_bad_event_applies_nothing(engine: Engine) -> None:
    await engine.ingest([ev(9, 1, T1)])
    before = engine.statistics()
    with pytest.raises(
        InvalidInput, match=r"^events\[2\]\.ts must be between 0 and 253402300799, got -5$"
    ) as info:
        await engine.ingest([ev(1, 10, T1), ev(2, 20, T1), ev(3, 30, -5), ev(4, 40, T1)])
    assert info.value.field == "events[2].ts"
    got = await engine.query([1, 2, 3, 4], ["steps"], MIN_TS, MAX_TS)
    assert all(r.sums["steps"] == 0 for r in got.values())
    assert await engine.users() == [9]
    after = engine.statistics()
    assert (after.last_seq, after.commands, after.events) == (
        before.last_seq,
        before.commands,
        before.events,
    )


async def test_engine_empty_batch_is_not_logged(engine: Engine) -> None:
    assert await engine.ingest([]) == 0
    assert await engine.count([]) == 0
    assert engine.last_seq == 0


async def test_engine_statistics_count_commands_and_events(engine: Engine) -> None:
    await engine.ingest([ev(1, 1, T1), ev(2, 1, T1)])
    await engine.count([{"name": "signup", "value": 1, "ts": T1}])
    stats = engine.statistics()
    assert (stats.commands, stats.events, stats.last_seq) == (2, 3, 2)
    assert stats.router.entities == 3


async def test_engine_filters_by_atid_and_aid(engine: Engine) -> None:
    await engine.ingest(
        [
            ev(1, 10, T1, atid=2, aid=1, mode="diff", ts1=T0),
            ev(1, 20, T1, atid=2, aid=2, mode="diff", ts1=T0),
            ev(1, 40, T1, atid=5, aid=3, mode="diff", ts1=T0),
            ev(1, 7, T1, atid=5, metric="points"),
        ]
    )
    q = engine.query
    assert (await q([1], ["steps", "points"], T0, T1))[1].sums == {"steps": 70, "points": 7}
    assert (await q([1], ["steps", "points"], T0, T1, atid=5))[1].sums == {"steps": 40, "points": 7}
    assert (await q([1], ["steps"], T0, T1, aid=2))[1].sums == {"steps": 20}
    assert (await q([1], ["steps"], T0, T1, atid=5, aid=2))[1].sums == {"steps": 0}
    result = await q([1], ["steps", "points"], T0, T1, with_atids=True)
    assert sorted(result[1].atids or []) == [2, 2, 5]
    assert (await q([1], ["steps"], T0, T1, atid=2, with_atids=True))[1].atids == [2, 2]


async def test_engine_query_with_offsets(engine: Engine) -> None:
    day = 86400
    base = ts_of(2016, 3, 1)
    await engine.ingest([ev(1, 5, base + 10), ev(2, 7, base + day + 10), ev(3, 9, base - day + 10)])
    got = await engine.query([1, 2, 3], ["steps"], base, base + day - 1, offsets=[0, day, -day])
    assert {u: r.sums["steps"] for u, r in got.items()} == {1: 5, 2: 7, 3: 9}
    got = await engine.query([1, 2, 3], ["steps"], base, base + day - 1)
    assert {u: r.sums["steps"] for u, r in got.items()} == {1: 5, 2: 0, 3: 0}
    # Offsets that push the window outside 1970..9999 answer 0 rather than failing.
    got = await engine.query([1], ["steps"], 0, 10, offsets=[-100])
    assert got[1].sums["steps"] == 0


async def test_engine_query_offsets_must_match_users(engine: Engine) -> None:
    with pytest.raises(InvalidInput, match=r"^offsets must have one entry per user$") as info:
        await engine.query([1, 2], ["steps"], 0, 10, offsets=[0])
    assert info.value.field == "offsets"


async def test_engine_breakdown_by_hour_in_a_zone(engine: Engine) -> None:
    oslo = ZoneInfo("Europe/Oslo")
    day_start = int(datetime(2016, 3, 27, tzinfo=oslo).timestamp())  # 23-hour day
    events = [ev(1, i + 1, day_start + i * 1800, atid=i % 2) for i in range(46)]
    await engine.ingest(events)
    t1, t2 = day_start, day_start + 23 * 3600 - 1
    got = await engine.breakdown([1, 2], ["steps"], t1, t2, "hour", tz="Europe/Oslo")
    br = got[1]
    assert isinstance(br, Breakdown)
    assert len(br.periods) == 23
    assert br.periods[0] == (t1, t1 + 3599)
    assert br.series["steps"] == [(2 * h + 1) + (2 * h + 2) for h in range(23)]
    total = (await engine.query([1], ["steps"], t1, t2))[1].sums["steps"]
    assert sum(br.series["steps"]) == total
    assert got[2].series["steps"] == [0] * 23
    odd = await engine.breakdown([1], ["steps"], t1, t2, "day", tz="Europe/Oslo", atid=1)
    assert odd[1].series["steps"] == [sum(2 * h + 2 for h in range(23))]


async def test_engine_breakdown_fixed_step_and_offset(engine: Engine) -> None:
    await engine.ingest([ev(1, 1, 100 + i) for i in range(100)])
    got = await engine.breakdown([1], ["steps"], 100, 199, 30)
    assert got[1].bounds == [100, 120, 150, 180, 200]
    assert got[1].series["steps"] == [20, 30, 30, 20]
    got = await engine.breakdown([1], ["steps"], 100, 199, "minute", offset=30)
    assert got[1].bounds == [100, 150, 200]


async def test_engine_breakdown_rejects_bad_step_and_zone(engine: Engine) -> None:
    with pytest.raises(InvalidInput) as info:
        await engine.breakdown([1], ["steps"], 0, 10, "fortnight")
    assert info.value.field == "step"
    with pytest.raises(InvalidInput) as info:
        await engine.breakdown([1], ["steps"], 0, 10, "day", tz="Mars/Base")
    assert info.value.field == "tz"


async def test_engine_read_counts(engine: Engine) -> None:
    t = 1458061005
    await engine.count(
        [
            {"name": "newsignup", "value": 1, "ts": t},
            {"name": "newsignup", "value": 2, "ts": t + 86400},
            {"name": "new_hifive", "value": 5, "ts": t},
        ]
    )
    got = await engine.read_counts(["newsignup", "new_hifive", "nothing", "newsignup"], t, t)
    assert got == {"newsignup": 1, "new_hifive": 5, "nothing": 0}
    assert await engine.read_counts(["newsignup"], t, t + 86400) == {"newsignup": 3}
    assert await engine.read_counts(["newsignup"], t + 1, t + 86400 - 1) == {"newsignup": 0}


async def test_engine_count_validation(engine: Engine) -> None:
    with pytest.raises(InvalidInput) as info:
        await engine.count(
            [{"name": "a", "value": 1, "ts": 1}, {"name": "a", "value": 1.5, "ts": 1}]
        )
    assert info.value.field == "counts[1].value"
    assert await engine.read_counts(["a"], MIN_TS, MAX_TS) == {"a": 0}


async def test_engine_closed_refuses_work() -> None:
    async with Engine.open() as engine:
        await engine.ingest([ev(1, 1, T1)])
    for call in (
        engine.ingest([ev(1, 1, T1)]),
        engine.count([{"name": "a", "value": 1, "ts": 1}]),
        engine.query([1], ["steps"], 0, 10),
        engine.read_counts(["a"], 0, 10),
    ):
        with pytest.raises(EngineClosed, match=r"^the engine is closed$"):
            await call


async def test_engine_idle_actors_retire_and_state_stays(autojump_clock: trio.abc.Clock) -> None:
    async with Engine.open(idle_seconds=5) as engine:
        await engine.ingest([ev(u, u, T1) for u in range(50)])
        await trio.sleep(60)
        stats = engine.statistics().router
        assert stats.live_actors == 0 and stats.retirements > 0
        got = await engine.query(list(range(50)), ["steps"], T1, T1)
        assert all(got[u].sums["steps"] == u for u in range(50))
        await engine.ingest([ev(3, 1, T1)])
        assert (await engine.query([3], ["steps"], T1, T1))[3].sums["steps"] == 4


async def test_engine_stable_seq_after_acknowledged_writes(engine: Engine) -> None:
    assert engine.stable_seq() == 1
    await engine.ingest([ev(1, 1, T1)])
    await engine.count([{"name": "a", "value": 1, "ts": T1}])
    assert engine.last_seq == 2
    assert engine.stable_seq() == 3


async def test_engine_snapshot_now_needs_a_data_directory(engine: Engine) -> None:
    with pytest.raises(
        InvalidInput, match=r"^this server keeps no data directory, so it has no snapshots$"
    ):
        await engine.snapshot_now()


def test_check_range() -> None:
    assert check_range(0, MAX_TS) == (0, MAX_TS)
    with pytest.raises(InvalidInput, match=r"^t1 must be <= t2, got t1=5 t2=4$") as info:
        check_range(5, 4)
    assert info.value.field == "t1"
    with pytest.raises(InvalidInput) as info:
        check_range(0, MAX_TS + 1)
    assert info.value.field == "t2"


def test_ingest_batch_record_round_trip() -> None:
    from engine.events import validate_counter_events

    events = validate_counter_events(
        [ev(1, 10, T1, atid=2, aid=3, ts1=T0, mode="diff"), ev("u", -1, 0)]
    )
    command = IngestBatch(events=events)
    decoded = decode_command(encode_command(command))
    assert decoded == command
    with pytest.raises(ValueError, match=r"^unknown command 'nope' in log record$"):
        decode_command(msgpack.packb(["nope", []]))


############################################################################################
# Against a brute-force model

METRICS = ["steps", "points", "calories"]
AID_ATID = {1: 2, 2: 2, 3: 5, 4: 7}


class Model:
    """PSD semantics per user: a list of applied points."""

    def __init__(self) -> None:
        self.points: dict[Any, list[tuple[str, int, int | None, int, int]]] = {}

    def ingest(self, events: list[dict[str, Any]]) -> None:
        for e in events:
            points = self.points.setdefault(e["user"], [])
            value, aid, ts = e["value"], e.get("aid"), e["ts"]
            if e.get("mode") == "diff":
                ts1 = e.get("ts1", ts)
                value -= sum(
                    d
                    for m, _, a, t, d in points
                    if m == e["metric"] and a == aid and ts1 <= t <= ts
                )
                if value == 0:
                    continue
            points.append((e["metric"], e.get("atid", 0), aid, ts, value))

    def sum(self, user: Any, metric: str, t1: int, t2: int, atid: int | None = None) -> int:
        return sum(
            d
            for m, at, _, t, d in self.points.get(user, [])
            if m == metric and t1 <= t <= t2 and (atid is None or at == atid)
        )

    def atids(
        self, user: Any, metrics: list[str], t1: int, t2: int, atid: int | None = None
    ) -> list[int]:
        seen: dict[int, int] = {}
        for m, at, a, t, _ in self.points.get(user, []):
            if m in metrics and a is not None and t1 <= t <= t2 and (atid is None or at == atid):
                seen.setdefault(a, at)
        return sorted(seen.values())


def random_events(
    rng: random.Random, users: list[Any], n: int, base: int, span: int
) -> list[dict[str, Any]]:
    out = []
    for _ in range(n):
        ts = base + rng.randrange(span)
        e = ev(rng.choice(users), rng.randrange(-20, 500), ts, metric=rng.choice(METRICS))
        if rng.random() < 0.6:
            aid = rng.choice(list(AID_ATID))
            e.update(aid=aid, atid=AID_ATID[aid])
            if rng.random() < 0.8:
                e.update(mode="diff", ts1=max(base, ts - rng.choice([0, 3600, 86400, span])))
        else:
            e["atid"] = rng.choice([0, 9])
        out.append(e)
    return out


async def check_engine_against_model(
    engine: Engine, model: Model, rng: random.Random, users: list[Any], base: int, span: int
) -> None:
    ask_users = [*users, "never-written"]
    for _ in range(6):
        t1, t2 = sorted(
            (base + rng.randrange(-span // 10, span), base + rng.randrange(span + span // 10))
        )
        atid = rng.choice([None, 0, 2, 5, 9])
        got = await engine.query(ask_users, METRICS, t1, t2, atid=atid, with_atids=True)
        for user in ask_users:
            expected = {m: model.sum(user, m, t1, t2, atid) for m in METRICS}
            assert got[user].sums == expected, (user, t1, t2, atid)
            assert sorted(got[user].atids or []) == model.atids(user, METRICS, t1, t2, atid)
    t1, t2 = base - 3600, base + span
    got = await engine.breakdown(ask_users, METRICS, t1, t2, "day")
    for user in ask_users:
        br = got[user]
        for metric in METRICS:
            assert br.series[metric] == [model.sum(user, metric, a, b) for a, b in br.periods]


async def test_engine_matches_model_many_users_and_metrics(engine: Engine) -> None:
    rng = random.Random(0)
    users: list[Any] = [*range(20), "alice", "bob"]
    model = Model()
    base, span = ts_of(2016, 2, 27), 6 * 86400  # across the leap day and a month end
    for _ in range(15):
        batch = random_events(rng, users, rng.randrange(1, 60), base, span)
        await engine.ingest(batch)
        model.ingest(batch)
    await check_engine_against_model(engine, model, rng, users, base, span)


async def test_engine_concurrent_ingest_keeps_diff_semantics(engine: Engine) -> None:
    """Tasks interleave writes to shared users; each task owns one activity per user and
    reports its running total in order, so each activity's sum is its last report."""
    base = ts_of(2016, 12, 31, 23)
    users = list(range(8))
    tasks, reports = 6, 25
    finals: dict[tuple[int, int], int] = {}

    async def reporter(task: int) -> None:
        rng = random.Random(task)
        total = 0
        for r in range(reports):
            total += rng.randrange(-3, 40)
            batch = [
                ev(
                    u,
                    total + u,
                    base + r * 300,
                    aid=100 + task,
                    atid=task % 3,
                    ts1=base,
                    mode="diff",
                )
                for u in users
            ]
            if rng.random() < 0.3:  # a replay of the same report changes nothing
                batch = batch + batch
            await engine.ingest(batch)
            for u in users:
                finals[(task, u)] = total + u
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        for task in range(tasks):
            nursery.start_soon(reporter, task)
    t2 = base + reports * 300
    for task in range(tasks):
        got = await engine.query(users, ["steps"], base, t2, aid=100 + task)
        assert {u: got[u].sums["steps"] for u in users} == {u: finals[(task, u)] for u in users}
    got = await engine.query(users, ["steps"], base, t2, with_atids=True)
    for u in users:
        assert got[u].sums["steps"] == sum(finals[(t, u)] for t in range(tasks))
        assert sorted(got[u].atids or []) == sorted(t % 3 for t in range(tasks))


async def test_engine_concurrent_ingest_many_users_each_ordered(engine: Engine) -> None:
    """One task per user, all at once: every user sees its own reports in order."""
    base = ts_of(2016, 1, 31, 23, 59)
    n_users = 40

    async def user_task(u: int) -> None:
        for r in range(10):
            await engine.ingest(
                [ev(u, (r + 1) * (u + 1), base + r, aid=1, atid=1, ts1=base, mode="diff")]
            )

    async with trio.open_nursery() as nursery:
        for u in range(n_users):
            nursery.start_soon(user_task, u)
    got = await engine.query(list(range(n_users)), ["steps"], base, base + 9)
    assert all(got[u].sums["steps"] == 10 * (u + 1) for u in range(n_users))
    got = await engine.query(list(range(n_users)), ["steps"], base + 9, base + 9)
    assert all(got[u].sums["steps"] == u + 1 for u in range(n_users))


async def test_engine_dispatch_waits_on_full_mailboxes(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tiny mailboxes, so the shares of batches dispatched back to back (one message per
    # partition per batch) overflow a partition's mailbox and the dispatcher takes the waiting
    # path (Router.send) while other batches and reads go on.
    # Reads go through the mailboxes (not answered directly by idle actors) so that they
    # crowd them.
    monkeypatch.setattr(
        Router.__init__,
        "__kwdefaults__",
        {**Router.__init__.__kwdefaults__, "capacity": 4, "read_directly": False},
    )
    waits = 0
    original_send = Router.send

    async def counting_send(self: Router, *args: Any) -> None:
        nonlocal waits
        waits += 1
        await original_send(self, *args)

    monkeypatch.setattr(Router, "send", counting_send)
    # Half the users share one partition (int ids hash to themselves; 32 partitions), so its
    # mailbox fills and empties many times while the batches are dispatched.
    ids = list(dict.fromkeys([u * 32 for u in range(150)] + list(range(1, 301))))
    async with Engine.open() as engine:
        await engine.ingest([ev(u, 0, T1, aid=1, atid=1) for u in ids])  # reads of them now queue
        async with trio.open_nursery() as nursery:
            for r in range(12):
                # Batches visit the users in opposite orders, so that without the dispatch
                # lock a later batch would overtake an earlier one at some users.
                order = ids if r % 2 else ids[::-1]
                batch = [ev(u, 10**r, T1, aid=1, atid=1) for u in order]
                # A read first: its per-user messages fill the crowded partition's mailbox.
                nursery.start_soon(engine.query, ids, ["steps"], T0, T1)
                nursery.start_soon(engine.ingest, batch)
        got = await engine.query(ids, ["steps"], T0, T1)
        stats = engine.statistics()
    assert waits > 0
    assert stats.router.peak_mailbox_depth <= 4
    assert stats.events == 13 * len(ids)
    # Every batch reached every user: an entity skips a record older than the last one it
    # applied (applied_seq), so a batch overtaken by a later one would be lost.
    assert {u: r.sums["steps"] for u, r in got.items()} == {u: int("1" * 12) for u in ids}


############################################################################################
# Snapshots


async def test_engine_snapshot_items_reproduce_every_answer() -> None:
    rng = random.Random(3)
    users: list[Any] = [*range(12), "carol"]
    base, span = ts_of(2015, 12, 30), 5 * 86400  # across a year end
    model = Model()
    written: set[Any] = set()
    async with Engine.open() as source:
        for _ in range(10):
            batch = random_events(
                rng, [u for u in users if not isinstance(u, tuple)], 40, base, span
            )
            await source.ingest(batch)
            model.ingest(batch)
            written.update(e["user"] for e in batch)
        await source.count(
            [{"name": f"c{i % 3}", "value": i, "ts": base + i * 3600} for i in range(30)]
        )
        # Through msgpack, as the snapshot codec stores them (tuples come back as lists).
        items = [
            msgpack.unpackb(msgpack.packb(item), strict_map_key=False)
            for item in source.iter_snapshot_items()
        ]
        namespaces = {item[0] for item in items}
        assert namespaces == {USER, COUNTER}
        assert all(seq >= 1 for _, _, seq, _ in items)
        expected_counts = await source.read_counts(["c0", "c1", "c2", "c9"], base, base + span)
        queries = []
        for _ in range(8):
            t1, t2 = sorted((base + rng.randrange(span), base + rng.randrange(span)))
            atid = rng.choice([None, 2, 5])
            queries.append(
                (
                    t1,
                    t2,
                    atid,
                    await source.query(users, METRICS, t1, t2, atid=atid, with_atids=True),
                )
            )
        expected_breakdown = await source.breakdown(users, METRICS, base, base + span, "hour")
    async with Engine.open() as target:
        for namespace, ident, seq, plain in items:
            target.load_snapshot_item(namespace, ident, seq, plain)
        assert sorted(map(repr, await target.users())) == sorted(map(repr, written))
        assert (
            await target.read_counts(["c0", "c1", "c2", "c9"], base, base + span) == expected_counts
        )
        for t1, t2, atid, expected in queries:
            got = await target.query(users, METRICS, t1, t2, atid=atid, with_atids=True)
            for user in users:
                assert got[user].sums == expected[user].sums
                assert sorted(got[user].atids or []) == sorted(expected[user].atids or [])
        assert (
            await target.breakdown(users, METRICS, base, base + span, "hour") == expected_breakdown
        )
        # And the states carry their log positions.
        assert {(ns, repr(i)): s for ns, i, s, _ in target.iter_snapshot_items()} == {
            (ns, repr(tuple(i) if isinstance(i, list) else i)): s for ns, i, s, _ in items
        }


async def test_engine_load_snapshot_item_unknown_namespace(engine: Engine) -> None:
    with pytest.raises(ValueError, match=r"^snapshot holds unknown namespace 'lists'$"):
        engine.load_snapshot_item("lists", "a", 1, [])


############################################################################################
# Ingest shares: one message per partition, per-user replay skipping


async def test_ingest_route_places_each_user_in_its_partition_share_in_batch_order() -> None:
    users: list[Any] = [5, 37, "alice", -3, 2**40, "42x", 5, "alice"]
    events = [(u, "steps", 0, None, T1 + i, i + 1, T1 + i, 0) for i, u in enumerate(users)]
    async with Engine.open() as engine:
        router = engine._router
        routes = IngestBatch(events=events).route(1, router)
        assert len(routes) == len({router._actor_key(USER, u) for u in users})  # one per partition
        for share in routes:
            for user, items in share.items.items():
                assert router._actor_key(USER, user) == (USER, share.partition)
                assert items == [e for e in events if e[0] == user]  # batch order, the batch's tuples
        await engine.ingest_validated(events)
        got = await engine.query([5, "alice"], ["steps"], T0, T1 + 10)
    assert {u: r.sums["steps"] for u, r in got.items()} == {5: 1 + 7, "alice": 3 + 8}


async def test_replay_skips_per_user_what_that_user_already_applied() -> None:
    # A snapshot taken while writes go on holds some users at record 2 and others at 1;
    # replaying record 2 must reach exactly the users that lack it, though they share
    # partitions (0 and 32 both live in partition 0).
    batch = [(u, "steps", 0, None, T1, 10, T1, 0) for u in (0, 32, 1)]
    async with Engine.open() as engine:
        for user, seq in ((0, 2), (32, 1), (1, 1)):
            engine.load_snapshot_item(USER, user, seq, [["steps", [[0, [T1, T1, 5, [], None]]], [], []]])
        await engine.replay(2, encode_command(IngestBatch(events=batch)))
        got = await engine.query([0, 32, 1], ["steps"], T0, T1)
        await engine.replay(2, encode_command(IngestBatch(events=batch)))  # again: no change
        again = await engine.query([0, 32, 1], ["steps"], T0, T1)
    assert {u: r.sums["steps"] for u, r in got.items()} == {0: 5, 32: 15, 1: 15}
    assert again == got
