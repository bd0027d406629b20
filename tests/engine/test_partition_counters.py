"""PartitionCounters (engine/partition_counters.pyx, compiled) held to engine.counters.UserCounters.

Issue 17 keeps a partition's user counters in packed arrays walked by a compiled kernel instead
of one UserCounters object per user. The semantics are UserCounters' exactly, so every read
here is compared with a ``dict[user, UserCounters]`` fed the same events (the reference, itself
tested against brute force in test_counters.py and test_prefix_series.py): after any
interleaving of writes (in and out of order, ADD and DIFF, running totals past int64),
``compact``, retention sweeps, and reloads of each user's plain form -- the store's own, through
the real snapshot codec, and the reference's.

Programs are drawn up front (``programs``) so that a failure prints as a list of operations;
``run`` replays one against both sides, checking invariants and a spot read after every step and
everything at the end.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import partition_counters
from engine.commands import USER
from engine.counters import ADD, DIFF, CounterEvent, UserCounters
from engine.prefix_series import LATE_MERGE
from engine.timebuckets import MAX_TS, MIN_TS
from snapshots.codec import SnapshotEncoder, iter_snapshot_items

PartitionCounters = partition_counters.PartitionCounters

User = int | str


def ts_of(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp())


#: Users as the engine hands them over: ints (any int64) and strs; 1 and "1" are two users.
USERS: list[User] = [1, "1", 2, "alice", -7, 2**63 - 1, "ü-ß"]
#: Never written: reads answer 0, zeros and [].
UNKNOWN_USERS: list[User] = [3, "bob", "2"]
METRICS = ["steps", "points", "kcal"]
UNKNOWN_METRIC = "never-written"
#: Activity types, int64 edges included.
ATIDS = [0, 2, 5, -1, 2**63 - 1]
#: Activities and the type each usually has (a later write may name another; its first wins).
AIDS = {1: 2, 2: 2, 3: 5, 4: 0, -9: -1, 2**63 - 1: 2**63 - 1}
#: Where a program's clock starts: a leap day, a year end, a month end, an ordinary day, and
#: the two ends of the supported range.
BASES = [
    ts_of(2016, 2, 28, 23, 58),
    ts_of(2015, 12, 31, 23, 59, 30),
    ts_of(2016, 3, 31, 23, 0),
    ts_of(2017, 6, 15, 12),
    MIN_TS + 3,
    MAX_TS - 5000,
]
HUGE = [2**63 - 1, -(2**63), 2**62, -(2**62), 2**62 + 3, 2**63 - 2]

#: (atid, aid) filters every range read is made with.
FILTERS: list[tuple[int | None, int | None]] = [
    (None, None),
    *((atid, None) for atid in ATIDS),
    *((None, aid) for aid in AIDS),
    *((atid, aid) for aid, atid in AIDS.items()),
    (7, 1),  # an activity under a type it does not have
]


############################################################################################
# The two sides


class Store(Protocol):
    def apply(self, user: User, events: list[CounterEvent]) -> None: ...
    def apply_share(self, items: dict[User, list[CounterEvent]]) -> None: ...
    def range_sum(self, user: User, metric: str, t1: int, t2: int, atid: int | None = None,
                  aid: int | None = None) -> int: ...
    def breakdown(self, user: User, metric: str, bounds: Sequence[int], atid: int | None = None) -> list[int]: ...
    def atids(self, user: User, metrics: Sequence[str], t1: int, t2: int, atid: int | None = None) -> list[int]: ...
    def expire(self, cutoffs: Sequence[int]) -> int: ...
    def users(self) -> list[User]: ...
    def user_plain(self, user: User) -> list[Any]: ...
    def _check(self) -> None: ...


class Reference:
    """The semantics: one UserCounters per user, in the order users first got state."""

    def __init__(self, users: dict[User, UserCounters] | None = None) -> None:
        self.by_user: dict[User, UserCounters] = dict(users or {})
        self.pending: dict[User, UserCounters] = {}  # written, but nothing kept yet

    def apply(self, user: User, events: list[CounterEvent]) -> None:
        counters = self.by_user.get(user) or self.pending.setdefault(user, UserCounters())
        counters.apply(events)
        if user not in self.by_user and counters.metrics:
            self.by_user[user] = self.pending.pop(user)

    def apply_share(self, items: dict[User, list[CounterEvent]]) -> None:
        for user, events in items.items():
            self.apply(user, events)

    def range_sum(self, user: User, metric: str, t1: int, t2: int, atid: int | None = None,
                  aid: int | None = None) -> int:
        counters = self.by_user.get(user)
        return 0 if counters is None else counters.range_sum(metric, t1, t2, atid, aid)

    def breakdown(self, user: User, metric: str, bounds: Sequence[int], atid: int | None = None) -> list[int]:
        counters = self.by_user.get(user)
        return [0] * (len(bounds) - 1) if counters is None else counters.breakdown(metric, bounds, atid)

    def atids(self, user: User, metrics: Sequence[str], t1: int, t2: int, atid: int | None = None) -> list[int]:
        counters = self.by_user.get(user)
        return [] if counters is None else counters.atids(metrics, t1, t2, atid)

    def expire(self, cutoffs: Sequence[int]) -> int:
        return sum(counters.expire(cutoffs) for counters in self.by_user.values())

    def users(self) -> list[User]:
        return list(self.by_user)

    def user_plain(self, user: User) -> list[Any]:
        return self.by_user[user].to_plain()

    def _check(self) -> None:
        for counters in self.by_user.values():
            counters._check()


def through_codec(items: list[tuple[User, list[Any]]]) -> list[tuple[User, list[Any]]]:
    """(user, plain) pairs written as one real snapshot (msgpack + zstd) and read back."""
    encoder = SnapshotEncoder(start_seq=1, created=0.0)
    data = encoder.header_bytes()
    for user, plain in items:
        data += encoder.encode_item((USER, user, 1, plain))
    data += encoder.finish()
    decoded = list(iter_snapshot_items(io.BytesIO(data)))  # to the end: the trailer is checked
    assert [item.kind for item in decoded] == [USER] * len(items)
    return [(item.key, item.state) for item in decoded]


def reloaded(source: Store, codec: bool) -> Any:
    """A fresh store holding ``source``'s users, each loaded from ``source.user_plain``."""
    items = [(user, source.user_plain(user)) for user in source.users()]
    if codec:
        items = through_codec(items)
    store = PartitionCounters()
    for user, plain in items:
        store.load_user(user, plain)
    return store


############################################################################################
# Programs


@dataclass
class Program:
    base: int
    metrics: list[str]
    atids: list[int]
    #: Retention ages per level (second .. month), nested as check_retention requires.
    ages: list[int]
    ops: list[tuple[Any, ...]] = field(default_factory=list)
    #: Seconds written, and cutoffs swept (for read edges near them).
    seconds: list[int] = field(default_factory=list)
    cutoffs: list[int] = field(default_factory=list)
    cursor: int = 0
    now: int = 0
    #: How far back the store merges a late write in place (``PartitionCounters.late_in_place``;
    #: 0 sends every late write through promotion to a ``PrefixSeries``).
    late_in_place: int = partition_counters.LATE_IN_PLACE


def draw_ts(draw: st.DrawFn, p: Program) -> int:
    """Mostly the clock's second or a little after; some late writes, few far away."""
    kind = draw(st.integers(0, 19))
    if kind < 5:
        ts = p.cursor  # the same second again
    elif kind < 11:
        ts = p.cursor + draw(st.integers(1, 3))
    elif kind < 14:
        ts = p.cursor + draw(st.integers(4, 5000))
    elif kind == 14:
        ts = p.cursor + draw(st.integers(5000, 80 * 86400))
    elif kind < 18:
        ts = p.cursor - draw(st.integers(1, 120))  # a lagging client
    elif kind == 18:
        ts = p.cursor - draw(st.integers(121, 120 * 86400))
    else:
        ts = draw(st.integers(MIN_TS, MAX_TS))  # anywhere; the clock stays
    ts = min(MAX_TS, max(MIN_TS, ts))
    if kind < 19:
        p.cursor = max(p.cursor, ts)
    p.seconds.append(ts)
    return ts


def draw_value(draw: st.DrawFn, big: bool) -> int:
    kind = draw(st.integers(0, 9))
    if big and kind >= 7:
        return draw(st.one_of(st.sampled_from(HUGE), st.integers(2**62, 2**63 - 1),
                              st.integers(-(2**63), -(2**62))))
    if kind < 4:
        return draw(st.integers(-2, 2))
    return draw(st.integers(-1000, 1000))


def draw_event(draw: st.DrawFn, p: Program, big: bool) -> CounterEvent:
    metric = draw(st.sampled_from(p.metrics))
    aid = draw(st.one_of(st.none(), st.sampled_from(list(AIDS))))
    mode = DIFF if aid is not None and draw(st.booleans()) else ADD
    if aid is not None and draw(st.integers(0, 9)):
        atid = AIDS[aid]
    else:
        atid = draw(st.sampled_from(p.atids))
    ts = draw_ts(draw, p)
    value = draw_value(draw, big)
    if mode == DIFF:
        back = draw(st.one_of(st.sampled_from([0, 1, 60, 3600, 40 * 86400, ts]), st.integers(0, 7200)))
        ts1 = max(MIN_TS, ts - back)
    else:
        ts1 = ts
    return (metric, atid, aid, ts, value, ts1, mode)


def draw_lagging_feed(draw: st.DrawFn, p: Program) -> list[CounterEvent]:
    """A live feed and a second one some seconds behind it on the same series: more than
    LATE_MERGE late writes, so held late writes are merged in the middle of the batch."""
    metric = draw(st.sampled_from(p.metrics))
    atid = draw(st.sampled_from(p.atids))
    aids = draw(st.sampled_from([(None, None), (None, 1), (3, 4)]))
    lag = draw(st.integers(1, 40))
    count = draw(st.integers(LATE_MERGE - 2, 2 * LATE_MERGE + 10))
    value = draw(st.integers(-3, 5))
    start = p.cursor
    events: list[CounterEvent] = []
    for i in range(count):
        lead, behind = start + i, max(MIN_TS, start + i - lag)
        events.append((metric, atid, aids[0], min(lead, MAX_TS), value, min(lead, MAX_TS), ADD))
        events.append((metric, atid, aids[1], min(behind, MAX_TS), value + 1, min(behind, MAX_TS), ADD))
    p.cursor = min(MAX_TS, start + count)
    p.seconds += [start, start + count // 2 - lag, start + count - 1]
    return events


#: How often each operation is drawn, per property.
MIXED = {"apply": 6, "share": 3, "replay": 1, "lag": 1, "compact": 2, "expire": 2, "reload": 2}
RETENTION = {"apply": 5, "share": 1, "replay": 1, "lag": 1, "compact": 1, "expire": 6, "reload": 1}
RELOADS = {"apply": 5, "share": 2, "replay": 1, "lag": 1, "compact": 2, "expire": 2, "reload": 5}


@st.composite
def programs(draw: st.DrawFn, weights: dict[str, int], max_ops: int = 10) -> Program:
    base = draw(st.one_of(st.sampled_from(BASES), st.integers(MIN_TS, MAX_TS)))
    level_count = draw(st.integers(1, 5))
    ages = [draw(st.one_of(st.integers(1, 600), st.integers(1, 3 * 86400)))]
    for _ in range(level_count - 1):
        ages.append(ages[-1] + draw(st.one_of(st.just(0), st.integers(0, 3600), st.integers(0, 40 * 86400))))
    p = Program(
        base=base,
        metrics=draw(st.lists(st.sampled_from(METRICS), min_size=1, max_size=3, unique=True)),
        atids=draw(st.lists(st.sampled_from(ATIDS), min_size=1, max_size=3, unique=True)),
        ages=ages + [0] * (5 - level_count),
        cursor=base,
        now=base,
        late_in_place=draw(st.sampled_from([0, 1, 3, partition_counters.LATE_IN_PLACE])),
    )
    users = draw(st.lists(st.sampled_from(USERS), min_size=1, max_size=4, unique=True))
    big = draw(st.integers(0, 2)) == 0  # a third of programs write values near +-2**63
    kinds = [kind for kind, weight in weights.items() for _ in range(weight)]
    applied: list[int] = []
    for _ in range(draw(st.integers(1, max_ops))):
        kind = draw(st.sampled_from(kinds))
        if kind == "apply" or (kind == "replay" and not applied):
            applied.append(len(p.ops))
            events = [draw_event(draw, p, big) for _ in range(draw(st.integers(1, 8)))]
            p.ops.append(("apply", draw(st.sampled_from(users)), events))
        elif kind == "replay":  # the same batch again (a retried request): DIFF writes add nothing
            p.ops.append(p.ops[draw(st.sampled_from(applied))])
        elif kind == "share":
            share = draw(st.lists(st.sampled_from(users), min_size=1, max_size=len(users), unique=True))
            p.ops.append(("share", {
                user: [draw_event(draw, p, big) for _ in range(draw(st.integers(0, 5)))] for user in share
            }))
        elif kind == "lag":
            p.ops.append(("apply", draw(st.sampled_from(users)), draw_lagging_feed(draw, p)))
        elif kind == "compact":
            p.ops.append(("compact",))
        elif kind == "expire":
            # As Engine.expire_now builds them: now minus each level's age; now never goes back.
            p.now = max(p.now, p.cursor + draw(st.integers(-3600, 2 * 86400)))
            cutoffs = [max(0, p.now - age) if age else 0 for age in p.ages]
            p.cutoffs += [c for c in cutoffs if c]
            p.ops.append(("expire", cutoffs))
        else:
            p.ops.append(("reload", draw(st.sampled_from(["store", "reference"])), draw(st.booleans())))
    return p


@st.composite
def probes(draw: st.DrawFn, p: Program) -> list[int]:
    """Read edges: random ones around the program's span, next to written seconds and swept
    cutoffs, and the ends of the supported range."""
    lo, hi = max(MIN_TS, p.base - 2 * 86400), min(MAX_TS, p.cursor + 2 * 86400)
    edges = draw(st.lists(st.integers(lo, hi), max_size=5))
    near = p.seconds + p.cutoffs
    if near:
        for i in draw(st.lists(st.integers(0, len(near) - 1), max_size=4)):
            d = draw(st.sampled_from([-86400, -3600, -60, -1, 0, 1, 59, 60, 3600, 86400]))
            edges.append(near[i] + d)
    return sorted({min(MAX_TS, max(MIN_TS, t)) for t in [*edges, MIN_TS, MAX_TS]})


############################################################################################
# Running and comparing


def run(p: Program, each_step: Callable[[Store, Reference], None] | None = None) -> tuple[Any, Reference]:
    """Replay ``p`` on a fresh store and the reference; invariants and a spot read after every step."""
    store, ref = PartitionCounters(), Reference()
    store.late_in_place = p.late_in_place
    for op in p.ops:
        kind = op[0]
        if kind == "apply":
            store.apply(op[1], list(op[2]))
            ref.apply(op[1], list(op[2]))
        elif kind == "share":
            store.apply_share({user: list(events) for user, events in op[1].items()})
            ref.apply_share(op[1])
        elif kind == "compact":
            assert store.compact() >= 0
        elif kind == "expire":
            removed = store.expire(list(op[1]))
            expected = ref.expire(op[1])
            if p.late_in_place == 0:
                # Entries removed agree only when late writes are held as UserCounters holds
                # them (a held late write is not an entry; merged in place, it is one).
                assert removed == expected
        elif kind == "reload":
            store = reloaded(store if op[1] == "store" else ref, codec=op[2])
            store.late_in_place = p.late_in_place
        store._check()
        assert store.users() == ref.users()
        for user in ref.users():
            for metric in p.metrics:
                assert store.range_sum(user, metric, MIN_TS, MAX_TS) == ref.range_sum(user, metric, MIN_TS, MAX_TS)
        if each_step is not None:
            each_step(store, ref)
    return store, ref


def ranges_of(edges: list[int]) -> list[tuple[int, int]]:
    """Inclusive ranges between read edges (both ends, and one short of the next edge), the
    whole supported range, and a reversed one (empty)."""
    out = [(MIN_TS, MAX_TS)]
    for a, b in zip(edges, edges[1:], strict=False):
        out += [(a, b), (a, b - 1)]
    if len(edges) > 2:
        out.append((edges[2], edges[1]))
    return out


def assert_same(store: Store, ref: Reference, p: Program, edges: list[int]) -> None:
    """Every read of ``store`` equals the reference's."""
    store._check()
    users = ref.users()
    assert store.users() == users
    ranges = ranges_of(edges)
    metrics = [*p.metrics, UNKNOWN_METRIC]
    for user in [*users, *UNKNOWN_USERS]:
        for metric in metrics:
            for t1, t2 in ranges:
                for atid, aid in FILTERS:
                    got = store.range_sum(user, metric, t1, t2, atid, aid)
                    want = ref.range_sum(user, metric, t1, t2, atid, aid)
                    assert got == want, ("range_sum", user, metric, t1, t2, atid, aid)
                    assert type(got) is int
            for atid in (None, *ATIDS):
                got_periods = store.breakdown(user, metric, edges, atid)
                assert got_periods == ref.breakdown(user, metric, edges, atid), ("breakdown", user, metric, atid)
                assert all(type(v) is int for v in got_periods)
            # One bound (no period), and a repeated bound (an empty period).
            for bounds in (edges[:1], [*edges[:2], *edges[1:3]]):
                assert store.breakdown(user, metric, bounds) == ref.breakdown(user, metric, bounds), bounds
        for subset in [p.metrics, p.metrics[::-1], p.metrics[:1], [UNKNOWN_METRIC, *p.metrics[1:]]]:
            for t1, t2 in ranges:
                for atid in (None, *ATIDS):
                    got_atids = store.atids(user, subset, t1, t2, atid)
                    want_atids = ref.atids(user, subset, t1, t2, atid)
                    assert got_atids == want_atids, ("atids", user, subset, t1, t2, atid)


def from_plain_view(store: Store) -> Reference:
    """UserCounters loaded from the store's plain forms: snapshots stay readable by it."""
    return Reference({user: UserCounters.from_plain(store.user_plain(user)) for user in store.users()})


############################################################################################
# Properties


@settings(max_examples=250, deadline=None)
@given(st.data())
def test_reads_match_user_counters(data: st.DataObject) -> None:
    p = data.draw(programs(MIXED))
    store, ref = run(p)
    edges = data.draw(probes(p))
    assert_same(store, ref, p, edges)
    assert_same(from_plain_view(store), ref, p, edges)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_retention_then_more_writes_match_user_counters(data: st.DataObject) -> None:
    p = data.draw(programs(RETENTION, max_ops=12))
    store, ref = run(p)
    edges = data.draw(probes(p))
    assert_same(store, ref, p, edges)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_plain_forms_round_trip(data: st.DataObject) -> None:
    """The store's plain form, loaded by a fresh store (directly and through the snapshot
    codec) and by UserCounters, and the reference's form loaded by the store, all answer as
    the reference does; and keep doing so under more writes."""
    p = data.draw(programs(RELOADS, max_ops=8))
    store, ref = run(p)
    edges = data.draw(probes(p))
    for codec in (False, True):
        assert_same(reloaded(store, codec), ref, p, edges)
        assert_same(reloaded(ref, codec), ref, p, edges)
    assert_same(from_plain_view(store), ref, p, edges)
    # Writes after a restore behave like writes without one: the last batch again (DIFF
    # reports replayed), then new ones, some late.
    restored = reloaded(store, codec=True)
    last = [op for op in p.ops if op[0] == "apply"][-1:]
    batches = [(op[1], list(op[2])) for op in last]
    batches += data.draw(st.lists(st.tuples(st.sampled_from(USERS), more_events(p)), max_size=3))
    for user, events in batches:
        restored.apply(user, list(events))
        ref.apply(user, list(events))
    assert_same(restored, ref, p, sorted({*edges, *probes_near(p.seconds[-6:])}))


@st.composite
def more_events(draw: st.DrawFn, p: Program) -> list[CounterEvent]:
    return [draw_event(draw, p, big=True) for _ in range(draw(st.integers(1, 6)))]


def probes_near(seconds: Iterable[int]) -> list[int]:
    return [min(MAX_TS, max(MIN_TS, t + d)) for t in seconds for d in (-1, 0, 1)]


############################################################################################
# Direct cases


BASE = ts_of(2016, 2, 28, 23, 58)


def both(events_by_user: Iterable[tuple[User, list[CounterEvent]]],
         late_in_place: int = partition_counters.LATE_IN_PLACE) -> tuple[Any, Reference]:
    store, ref = PartitionCounters(), Reference()
    store.late_in_place = late_in_place
    for user, events in events_by_user:
        store.apply(user, list(events))
        ref.apply(user, list(events))
    store._check()
    return store, ref


def edges_around(seconds: Iterable[int]) -> list[int]:
    return sorted({t + d for t in seconds for d in (-61, -1, 0, 1, 60)} | {MIN_TS, MAX_TS})


def test_the_compiled_module_runs() -> None:
    """The Cython build is what the tests exercise: a silent fallback to anything else (a
    pure-Python module, a pyximport) fails here, in CI."""
    assert partition_counters.__file__ is not None
    assert partition_counters.__file__.endswith(".so"), partition_counters.__file__


@pytest.mark.parametrize("late_in_place", [0, partition_counters.LATE_IN_PLACE])
def test_more_than_late_merge_late_writes_on_one_series(late_in_place: int) -> None:
    """One live write, then 3 * LATE_MERGE writes before it (held, merged, held again), some
    on an activity in DIFF mode and some at seconds written before; through the objects
    (``late_in_place`` 0) and merged in place."""
    events: list[CounterEvent] = [("steps", 2, None, BASE + 10_000, 1, BASE + 10_000, ADD)]
    for i in range(3 * LATE_MERGE):
        ts = BASE + 5_000 - 37 * i
        events.append(("steps", 2, None, ts, i - 50, ts, ADD))
        if i % 3 == 0:
            events.append(("steps", 2, 1, ts, 10 * i, ts - 120, DIFF))
        if i % 7 == 0:
            events.append(("steps", 5, None, ts - 1, 3, ts - 1, ADD))  # a second type: all-types series
    p = Program(base=BASE, metrics=["steps"], atids=[2, 5], ages=[0] * 5)
    seconds = [e[3] for e in events]
    edges = edges_around(seconds[::9])
    for split in (1, LATE_MERGE - 1, LATE_MERGE, len(events)):  # batch boundaries around a merge
        store, ref = both([(7, events[:split]), (7, events[split:])], late_in_place)
        assert_same(store, ref, p, edges)
        assert store.compact() >= 0
        assert_same(store, ref, p, edges)
        assert_same(reloaded(store, codec=True), ref, p, edges)


def test_a_lagging_feed_answers_right() -> None:
    """Two devices of one user, one 5 s behind the other, 2,000 s of reports: every other write
    is late by a few seconds, so late writes are merged over and over near the series' end."""
    events: list[CounterEvent] = []
    for i in range(2_000):
        events.append(("steps", 0, None, BASE + i, 1, BASE + i, ADD))
        events.append(("steps", 0, None, BASE + i - 5, 2, BASE + i - 5, ADD))
    store, ref = PartitionCounters(), Reference()
    for start in range(0, len(events), 97):  # batches of odd sizes
        store.apply("alice", events[start:start + 97])
        ref.apply("alice", events[start:start + 97])
    store._check()
    p = Program(base=BASE, metrics=["steps"], atids=[0], ages=[0] * 5)
    assert_same(store, ref, p, edges_around(range(BASE - 5, BASE + 2_000, 131)))
    assert store.range_sum("alice", "steps", MIN_TS, MAX_TS) == 2_000 * 3


def test_running_totals_past_int64_stay_exact() -> None:
    """Totals leave int64 (the store keeps such a series as Python ints) and come back in."""
    top = 2**63 - 1
    events: list[CounterEvent] = [
        ("steps", 0, None, BASE, top, BASE, ADD),
        ("steps", 0, None, BASE + 1, top, BASE + 1, ADD),  # running total 2**64 - 2
        ("steps", 0, None, BASE + 1, 5, BASE + 1, ADD),
        ("steps", 0, None, BASE - 1, -(2**63), BASE - 1, ADD),  # late
        ("steps", 0, 3, BASE + 2, top, BASE + 2, DIFF),
        ("steps", 0, 3, BASE + 3, -(2**63), BASE + 2, DIFF),  # a delta of -(2**64 - 1)
        ("steps", 0, None, BASE + 4, -top, BASE + 4, ADD),
        ("steps", 0, None, BASE + 5, -top, BASE + 5, ADD),  # back inside int64
    ]
    store, ref = both([(1, events)])
    assert store.range_sum(1, "steps", BASE, BASE + 1) == 2**64 + 3
    assert store.range_sum(1, "steps", BASE + 3, BASE + 3, aid=3) == -(2**64) + 1
    p = Program(base=BASE, metrics=["steps"], atids=[0], ages=[0] * 5)
    edges = edges_around([e[3] for e in events])
    assert_same(store, ref, p, edges)
    assert store.compact() >= 0
    assert_same(store, ref, p, edges)
    cutoffs = [BASE + 2, BASE - 100, 0, 0, 0]
    assert store.expire(cutoffs) == ref.expire(cutoffs)
    assert_same(store, ref, p, edges)
    assert_same(reloaded(store, codec=True), ref, p, edges)
    assert_same(from_plain_view(store), ref, p, edges)


def test_unknown_users_and_metrics_read_as_empty() -> None:
    store = PartitionCounters()
    store.apply(1, [("steps", 0, 3, BASE, 5, BASE, ADD)])
    for user in (2, "1", "bob"):
        assert store.range_sum(user, "steps", MIN_TS, MAX_TS) == 0
        assert store.breakdown(user, "steps", [BASE, BASE + 1, BASE + 2]) == [0, 0]
        assert store.atids(user, ["steps"], MIN_TS, MAX_TS) == []
    assert store.range_sum(1, "points", MIN_TS, MAX_TS) == 0
    assert store.breakdown(1, "points", [BASE, BASE + 1]) == [0]
    assert store.atids(1, ["points"], MIN_TS, MAX_TS) == []
    assert store.users() == [1]


def test_a_replayed_diff_report_creates_no_user() -> None:
    """A DIFF write whose value equals what the activity has (0 for a new one) keeps nothing:
    the user has no state and is not listed, as UserCounters keeps no metric for it."""
    store, ref = both([("alice", [("steps", 2, 3, BASE, 0, BASE - 10, DIFF)]),
                       (1, [("steps", 2, 3, BASE, 4, BASE - 10, DIFF)]),
                       (1, [("steps", 2, 3, BASE, 4, BASE - 10, DIFF)])])
    assert store.users() == ref.users() == [1]
    assert store.range_sum(1, "steps", MIN_TS, MAX_TS) == 4


def test_apply_share_keeps_dict_order_for_first_writes() -> None:
    store, ref = PartitionCounters(), Reference()
    share: dict[User, list[CounterEvent]] = {
        "b": [("steps", 0, None, BASE, 1, BASE, ADD)],
        2: [],
        "a": [("steps", 0, None, BASE, 1, BASE, ADD)],
        1: [("steps", 0, None, BASE, 2, BASE, ADD)],
    }
    store.apply_share(share)
    ref.apply_share(share)
    assert store.users() == ref.users() == ["b", "a", 1]
    store.apply_share({2: [("steps", 0, None, BASE + 1, 1, BASE + 1, ADD)], "b": []})
    assert store.users() == ["b", "a", 1, 2]
    store._check()


def random_event(rng: random.Random, clock: int) -> CounterEvent:
    """A live feed's event: mostly at the clock, some a little or an hour or two behind."""
    aid = rng.choice([None, None, *AIDS])
    atid = AIDS[aid] if aid is not None and rng.random() < 0.9 else rng.choice(ATIDS[:3])
    ts = max(MIN_TS, clock - rng.choice([0, 0, 0, 1, 5, 90, 7200]))
    value = rng.choice(HUGE) if rng.random() < 0.01 else rng.randrange(-5, 50)
    mode = DIFF if aid is not None and rng.random() < 0.5 else ADD
    ts1 = ts - rng.choice([0, 60, 86400]) if mode == DIFF else ts
    return (rng.choice(METRICS), atid, aid, ts, value, ts1, mode)


@pytest.mark.parametrize("seed, late_in_place", [(0, 0), (1, partition_counters.LATE_IN_PLACE)])
def test_stress_seeded_partition(seed: int, late_in_place: int) -> None:
    """A seeded random mix on one partition of many users (STYLE 9): arena segments grow and
    move, series are promoted (late writes, huge values, retention) and compacted back, users
    are reloaded; invariants checked along the way and reads compared at the end. Late writes
    go through the objects (``late_in_place`` 0) or are merged in place."""
    rng = random.Random(seed)
    users: list[User] = [*range(-40, 60), *(f"user-{i}" for i in range(60))]
    store, ref = PartitionCounters(), Reference()
    store.late_in_place = late_in_place
    clock = BASE
    written: dict[User, list[int]] = {}  # for read edges on written seconds
    ages = [3600, 86400, 86400 * 3, 86400 * 40, 0]
    for step in range(300):
        clock += rng.choice([0, 1, 1, 2, 30, 600])

        share = {user: [random_event(rng, clock) for _ in range(rng.randrange(1, 6))]
                 for user in rng.sample(users, rng.randrange(1, 25))}
        store.apply_share({user: list(events) for user, events in share.items()})
        ref.apply_share(share)
        for user, events in share.items():
            written.setdefault(user, []).extend(e[3] for e in events)
        if step % 50 == 49:
            store._check()
            cutoffs = [max(0, clock - age) if age else 0 for age in ages]
            removed, expected = store.expire(cutoffs), ref.expire(cutoffs)
            assert removed == expected or late_in_place, (removed, expected)  # (see run)
        if step % 70 == 69:
            assert store.compact() >= 0
            store._check()
        if step % 120 == 119:
            store = reloaded(store, codec=rng.random() < 0.5)
            store.late_in_place = late_in_place
    store._check()
    assert store.users() == ref.users()
    for user in [*ref.users(), *UNKNOWN_USERS]:
        for _ in range(3):
            seconds = written.get(user) or [BASE]
            t1, t2 = sorted(rng.choice([rng.randrange(BASE - 100, clock + 100), rng.choice(seconds) + rng.choice([-1, 0, 1])])
                            for _ in range(2))
            metric = rng.choice(METRICS)
            for atid, aid in rng.sample(FILTERS, 4) + [(None, None)]:
                assert store.range_sum(user, metric, t1, t2, atid, aid) == ref.range_sum(
                    user, metric, t1, t2, atid, aid), (user, metric, t1, t2, atid, aid)
            bounds = sorted({t1, t2, rng.randrange(t1, t2 + 1), t2 + 1})
            assert store.breakdown(user, metric, bounds) == ref.breakdown(user, metric, bounds)
            assert store.atids(user, METRICS, t1, t2) == ref.atids(user, METRICS, t1, t2)


############################################################################################
# Found by review: malformed tuples, churn, a share that fails part way


def test_short_event_tuples_are_refused_not_read_past() -> None:
    # The store reads event fields unchecked: a tuple of the wrong size must be refused.
    store = partition_counters.PartitionCounters()
    with pytest.raises(ValueError, match=r"^a counter event has 7 fields, got 3"):
        store.apply(1, [("steps", 0, None)])
    with pytest.raises(ValueError, match=r"^a UserEvent has 8 fields, got 2"):
        partition_counters.share_events([(1, "steps")], 32)
    assert store.users() == []


def test_forgotten_activities_give_their_rows_and_keys_back() -> None:
    # Each round creates 2,000 activities and a sweep forgets them all: the rows and the key
    # table stay the size of one round's, where they grew by every activity ever created.
    store = partition_counters.PartitionCounters()
    sizes = []
    for round_ in range(12):
        base = 1_700_000_000 + round_ * 10_000
        for user in range(200):
            store.apply(user, [("steps", 0, round_ * 10 + a, base + a, 1, base + a, ADD)
                               for a in range(10)])
        store.expire([base + 20, 0, 0, 0, 0])
        parts = store.memory_parts()
        sizes.append((parts["activity rows (9 int64 each)"], parts["key table"]))
    assert sizes[-1][0] <= 2 * sizes[1][0] and sizes[-1][1] <= 2 * sizes[1][1], sizes


def test_a_share_failing_part_way_is_not_applied_twice() -> None:
    # apply_share_at marks a user applied even when its events fail part way, so the
    # entity-by-entity redo that follows (engine/actors.py) skips it.
    stores = partition_counters.PartitionStores(1)
    state = stores.user_state(7)
    events = [(7, "steps", 0, None, 1_700_000_000, 10, 1_700_000_000, ADD), (7, "steps")]
    with pytest.raises(ValueError):
        stores.stores[0].apply_share_at(5, {7: events}, {7: state})
    assert state.applied_seq == 5
    stores.stores[0].apply_share_at(5, {7: events}, {7: state})  # the redo: skipped
    assert state.range_sum("steps", 0, 2**33) == 10


def test_month_index_across_months_late_writes_and_reloads() -> None:
    """The month index (sorted (month, activity) pairs): an activity spanning three months,
    written out of order, then reloaded and written again in months it is already indexed in.
    ``atids`` per month agrees with UserCounters, and ``_check`` finds no entry twice."""
    jan, feb, mar = (int(datetime(2024, m, 15, tzinfo=UTC).timestamp()) for m in (1, 2, 3))
    month_ranges = [(int(datetime(2024, m, 1, tzinfo=UTC).timestamp()),
                     int(datetime(2024, m + 1, 1, tzinfo=UTC).timestamp()) - 1) for m in (1, 2, 3)]
    events: list[CounterEvent] = [
        ("steps", 1, 10, jan, 1, jan, ADD),
        ("steps", 2, 20, mar, 1, mar, ADD),   # a later month first
        ("steps", 1, 10, mar, 1, mar, ADD),   # activity 10 crosses into March
        ("steps", 3, 30, feb, 1, feb, ADD),   # an earlier month: inserted before March
        ("steps", 1, 10, feb, 1, feb, ADD),   # activity 10, late, into February
        ("steps", 1, 10, jan + 1, 1, jan + 1, ADD),  # back to a month it is indexed in
    ]
    store, ref = both([(7, events)])
    reloaded = PartitionCounters()
    reloaded.load_user(7, store.user_plain(7))
    later = [("steps", 1, 10, feb + 5, 1, feb + 5, ADD), ("steps", 2, 20, mar + 5, 1, mar + 5, ADD),
             ("steps", 4, 40, feb + 9, 1, feb + 9, ADD)]
    for target in (store, reloaded):
        target.apply(7, list(later))
        target._check()
    ref.apply(7, list(later))
    for t1, t2 in [*month_ranges, (month_ranges[0][0], month_ranges[2][1]), (jan, feb), (feb + 6, mar)]:
        expected = ref.atids(7, ["steps"], t1, t2)
        assert store.atids(7, ["steps"], t1, t2) == expected
        assert reloaded.atids(7, ["steps"], t1, t2) == expected
    # The same entries as UserCounters' index, each month's in first-seen order; months in
    # calendar order here (UserCounters lists them in first-seen order).
    ours = store.user_plain(7)[0][3]
    theirs = {month: [list(entry) for entry in entries] for month, entries in ref.by_user[7].to_plain()[0][3]}
    assert [month for month, _ in ours] == sorted(theirs) and len(theirs) == 3
    assert {month: entries for month, entries in ours} == theirs
    assert reloaded.user_plain(7)[0][3] == ours


def promoted(store: Any) -> int:
    return store.memory_parts()["promoted objects (count)"]


def test_late_writes_merge_in_place_within_reach_and_promote_beyond() -> None:
    """A late write among a series' last ``late_in_place`` entries is merged in the arena (the
    series stays packed, reads as UserCounters); one further back, or one that would take a
    running total past int64, promotes the series."""
    live = [("steps", 1, None, BASE + 10 * i, 1, BASE + 10 * i, ADD) for i in range(50)]
    late = [("steps", 1, None, BASE + 10 * 45 + 5, 7, BASE + 455, ADD),   # a new second, 4 back
            ("steps", 1, None, BASE + 10 * 40, -3, BASE + 400, ADD),      # an existing second
            ("steps", 1, None, BASE - 100, 2, BASE - 100, ADD)]           # before the first
    p = Program(base=BASE, metrics=["steps"], atids=[1], ages=[0] * 5)
    edges = edges_around([e[3] for e in live + late])
    store, ref = both([(7, live), (7, late[:2])], late_in_place=12)  # 4, then 11 entries back
    assert promoted(store) == 0 and store.user_statistics(7).cells == 51
    assert_same(store, ref, p, edges)
    store.apply(7, late[2:])  # 50 entries back: beyond reach
    ref.apply(7, late[2:])
    assert promoted(store) == 1
    assert_same(store, ref, p, edges)
    huge = 2**63 - 10
    store, ref = both([(7, [("steps", 1, None, BASE, huge, BASE, ADD), ("steps", 1, None, BASE + 9, -5, BASE + 9, ADD)]),
                       (7, [("steps", 1, None, BASE + 5, 20, BASE + 5, ADD)])])  # BASE+9 would pass int64
    assert promoted(store) == 1
    assert_same(store, ref, p, edges_around([BASE, BASE + 5, BASE + 9]))


def test_a_feed_with_batches_out_of_order_stays_packed() -> None:
    """Adjacent batches swapped (as concurrent clients deliver them): late writes a few entries
    back merge in place, so no series becomes an object."""
    rng = random.Random(3)
    batches = [[(u, [("steps", u % 3, None, BASE + 20 * b + i, 1, BASE + 20 * b + i, ADD)])
                for i, u in enumerate(rng.sample(range(40), 20))] for b in range(60)]
    for i in range(0, len(batches) - 1, 2):
        batches[i], batches[i + 1] = batches[i + 1], batches[i]
    store, ref = PartitionCounters(), Reference()
    for batch in batches:
        for user, events in batch:
            store.apply(user, list(events))
            ref.apply(user, list(events))
    store._check()
    assert promoted(store) == 0
    p = Program(base=BASE, metrics=["steps"], atids=[0, 1, 2], ages=[0] * 5)
    assert_same(store, ref, p, edges_around([BASE + 20 * b for b in range(0, 60, 7)]))


def test_applied_seq_takes_every_log_sequence_number() -> None:
    """The log numbers records up to 2^64 - 1 (snapshots/framing.py), so a user's applied_seq
    holds any of them (as UserCounters' Python int does)."""
    store = PartitionCounters()
    state = partition_counters.PackedUser(store, 1)
    state.applied_seq = 2**63
    store.apply_share_at(2**64 - 1, {1: [(1, "steps", 0, None, BASE, 5, BASE, ADD)]}, {1: state})
    assert state.applied_seq == 2**64 - 1 and store.range_sum(1, "steps", MIN_TS, MAX_TS) == 5
    store.apply_share_at(2**64 - 1, {1: [(1, "steps", 0, None, BASE, 5, BASE, ADD)]}, {1: state})  # replayed
    assert store.range_sum(1, "steps", MIN_TS, MAX_TS) == 5
