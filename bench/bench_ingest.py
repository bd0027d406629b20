"""Ingest throughput in-process: the Engine against its own parts and against Redis (PSD-style).

Workload (a live activity feed): events for U users in batches of 1,000, two metrics, four
activity types, one activity per user, type and hour; timestamps advance at ~50 events/s.
Two shapes: *sparse* (10,000 users: a batch touches ~1,000 users, one event each) and *dense*
(100 users: ~10 events per user per batch).

Rows, all on the same events in the same run:
  * engine.ingest                -- validation + log record + actors + counters (the real path)
  * engine.ingest, reference validator -- the same, validating with validate_counter_events_each
                                    (the per-event validator the fast path falls back to; what
                                    engine.ingest ran before issue 17)
  * engine.ingest_validated      -- the same without validation
  * ..., batches out of order     -- the same with adjacent batches swapped at random, the order
                                    concurrent clients deliver them in: their events land before
                                    series' last seconds (late writes, merged in place:
                                    PartitionCounters.merge_late)
  * ..., counter state a no-op    -- the same with partition stores that keep nothing: the
                                    engine alone (what the state's share is measured against)
  * counter state alone: packed partition stores -- PartitionCounters.apply_share on the same
                                    shares (engine/partition_counters.pyx: what the engine runs)
  * counter state alone: UserCounters objects -- the reference layout, per user (what the
                                    engine ran before; engine/counters.py)
  * redis PSD-style pipeline     -- PSD's Hashzilla writes: 5 HINCRBY per event, pipelined
                                    per batch, on a local redis-server (needs `.[bench]`)

Target (issue 2): >= 300k events/s in-process.

``--validators`` times the validators alone on the same batches (ns per event): the fast path
(``validate_counter_events``) against the reference (``validate_counter_events_each``), and
the alternatives measured for issue 17 and not taken (columns through C-level map/min/max,
``msgspec.convert`` into structs). It also times the log record of each batch: msgpack's
``packb`` against ``engine/record_encoding.pyx`` (the same bytes, written in C).
"""

from __future__ import annotations

import argparse
import functools
import gc
import importlib.util
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import msgpack
import msgspec
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import batches, make_events, redis_server, table  # noqa: E402
from engine.actors import USER_PARTITIONS  # noqa: E402
from engine.counters import ADD, UserCounters  # noqa: E402
from engine.engine import Engine  # noqa: E402
from engine.events import (  # noqa: E402
    INT64_MAX,
    INT64_MIN,
    MAX_NAME_LENGTH,
    UserEvent,
    group_by_user,
    validate_counter_events,
    validate_counter_events_each,
)
from engine.partition_counters import PackedUser, PartitionStores  # noqa: E402
from engine.record_encoding import pack_rows  # noqa: E402
from engine.timebuckets import MAX_TS, MIN_TS  # noqa: E402
from web.serving.server import tune_gc  # noqa: E402


def run_engine(events_batches: list[list[dict]], validated: bool, reference: bool = False,
               no_state: bool = False) -> float:
    """Seconds to ingest every batch: ``engine.ingest`` (with the reference validator when
    ``reference``), or ``engine.ingest_validated`` of batches validated beforehand. No work is
    put off past the window: each write's series are up to date when its batch returns.
    ``no_state``: the users' partition stores keep nothing (``NoStore``), so the row is the
    engine alone (log record, routing, actors)."""
    if no_state:
        user_state = PartitionStores.user_state
        PartitionStores.user_state = lambda self, user: PackedUser(NoStore(), user)  # type: ignore[method-assign]
        try:
            return run_engine(events_batches, validated, reference)
        finally:
            PartitionStores.user_state = user_state  # type: ignore[method-assign]

    async def main() -> float:
        async with Engine.open() as engine:
            tune_gc()
            pre = [validate_counter_events(b) for b in events_batches] if validated else None
            t0 = time.perf_counter()
            if reference:
                for batch in events_batches:
                    await engine.ingest_validated(validate_counter_events_each(batch))
            elif pre is None:
                for batch in events_batches:
                    await engine.ingest(batch)
            else:
                for batch in pre:
                    await engine.ingest_validated(batch)
            return time.perf_counter() - t0

    return trio.run(main)


def pairs_swapped(events_batches: list[list[dict]], seed: int = 1) -> list[list[dict]]:
    """The batches with each adjacent pair swapped with probability 1/2 (seeded)."""
    rng = random.Random(seed)
    out = list(events_batches)
    for i in range(0, len(out) - 1, 2):
        if rng.random() < 0.5:
            out[i], out[i + 1] = out[i + 1], out[i]
    return out


class NoStore:
    """A partition store that keeps nothing: each user's share only marks it applied."""

    def apply(self, user: object, events: object) -> None:
        pass

    def apply_share_at(self, seq: int, items: dict, states: dict) -> None:
        for user in items:
            states[user].applied_seq = seq


def run_partition_store_only(events_batches: list[list[dict]]) -> float:
    """Seconds to apply every batch to the packed per-partition stores the engine uses
    (engine/partition_counters.pyx), split into shares as IngestBatch.route does."""
    tune_gc()
    partitions = USER_PARTITIONS
    pre = []
    for batch in events_batches:
        shares: dict[int, dict[object, list[tuple]]] = {}
        for user, *event in validate_counter_events(batch):
            shares.setdefault(hash(user) % partitions, {}).setdefault(user, []).append(tuple(event))
        pre.append(shares)
    stores = PartitionStores(partitions).stores
    t0 = time.perf_counter()
    for shares in pre:
        for partition, items in shares.items():
            stores[partition].apply_share(items)
    return time.perf_counter() - t0


def run_state_only(events_batches: list[list[dict]]) -> float:
    tune_gc()
    pre = [group_by_user(validate_counter_events(b)) for b in events_batches]
    states: dict[object, UserCounters] = {}
    t0 = time.perf_counter()
    for groups in pre:
        for user, items in groups.items():
            state = states.get(user)
            if state is None:
                state = states[user] = UserCounters()
            state.apply(items)
    return time.perf_counter() - t0


############################################################################################
# Validators alone (issue 17)


def validate_by_columns(events: list[dict]) -> list[UserEvent] | None:
    """The columnar alternative, measured and not taken: one C-level pass per field (``map``
    with ``itemgetter``, ``set(map(type, ...))``, ``min``/``max``) and one ``zip`` to build the
    tuples; ``None`` where it cannot vouch (shapes other than the bench's, any bad field)."""
    if type(events) is not list or not events or set(map(type, events)) != {dict}:
        return None
    keys = tuple(events[0])
    if sum(map(len, events)) != len(events) * len(keys) or not {"atid", "aid"} <= set(keys):
        return None
    try:
        cols = {k: list(map(itemgetter(k), events)) for k in keys}
    except KeyError:
        return None
    ts = cols["ts"]
    if set(map(type, ts)) != {int} or min(ts) < MIN_TS or max(ts) > MAX_TS:
        return None
    for name in ("user", "value", "atid", "aid"):
        col = cols[name]
        if set(map(type, col)) != {int} or min(col) < INT64_MIN or max(col) > INT64_MAX:
            return None
    for metric in set(cols["metric"]):
        if type(metric) is not str or not 0 < len(metric) <= MAX_NAME_LENGTH or not metric.isprintable():
            return None
    return list(zip(cols["user"], cols["metric"], cols["atid"], cols["aid"], ts, cols["value"], ts, repeat(ADD)))


_I64 = Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)]


class _EventStruct(msgspec.Struct, forbid_unknown_fields=True):
    """The msgspec alternative: fields in the order of a ``UserEvent`` tuple."""

    user: _I64 | str
    metric: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME_LENGTH)]
    atid: _I64 = 0
    aid: _I64 | None = None
    ts: Annotated[int, msgspec.Meta(ge=MIN_TS, le=MAX_TS)] = 0
    value: _I64 = 0


def validate_by_msgspec(events: list[dict]) -> list[UserEvent] | None:
    """``msgspec.convert`` into structs, then tuples: fast, but not exact (an ``int`` subclass
    becomes an ``int`` where the reference refuses it; string users and control characters
    would still need the Python checks), so it was not taken."""
    try:
        structs = msgspec.convert(events, list[_EventStruct])
    except msgspec.ValidationError:
        return None
    return [(u, m, a, d, t, v, t, ADD) for u, m, a, d, t, v in map(msgspec.structs.astuple, structs)]


def plain_events_module() -> ModuleType:
    """``engine/events.py`` run as plain Python, as where the extension is not built (the
    engine imports the compiled module that setup.py makes of the same file)."""
    path = Path(__file__).resolve().parent.parent / "engine" / "events.py"
    spec = importlib.util.spec_from_file_location("events_not_compiled", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def best_ns_per_event(contenders: Sequence[tuple[str, Callable[[Any], object]]], inputs: list[Any], n: int,
                      repeats: int = 9) -> list[tuple[str, float, str]]:
    """Table rows: ns per event of each contender over ``inputs`` (``n`` events in all), the
    best of ``repeats`` runs, interleaved so that a slow stretch of the machine hits every one."""
    best = dict.fromkeys((name for name, _ in contenders), float("inf"))
    for _ in range(repeats):
        for name, fn in contenders:
            t0 = time.perf_counter()
            for item in inputs:
                fn(item)
            best[name] = min(best[name], time.perf_counter() - t0)
    return [(name, seconds / n * 1e9, "ns/event") for name, seconds in best.items()]


def compare_validators(n: int, size: int) -> None:
    """ns per event of each validator on the same batches, best of 9 interleaved runs."""
    tune_gc()
    contenders: list[tuple[str, Callable[[list[dict]], object]]] = [
        ("validate_counter_events_each (reference)", validate_counter_events_each),
        ("validate_counter_events (fast path)", validate_counter_events),
        ("the same, engine/events.py not compiled", plain_events_module().validate_counter_events),
        ("columns: map/min/max (not taken)", validate_by_columns),
        ("msgspec.convert, inexact (not taken)", validate_by_msgspec),
    ]
    for shape, users in (("sparse", 10_000), ("dense", 100)):
        bs = batches(make_events(n, users), size)
        expected = [validate_counter_events_each(b) for b in bs]
        for name, fn in contenders:
            assert [fn(b) for b in bs] == expected, name
        rows = best_ns_per_event(contenders, bs, n)
        table(f"validators alone, {shape}: {users:,} users, batches of {size:,}, {n:,} events", rows,
              "validate_counter_events_each (reference)")
    compare_record_encoders(n, size)


def compare_record_encoders(n: int, size: int) -> None:
    """ns per event of a counter batch's log record, msgpack against ``pack_rows`` (which must
    give the same bytes), best of 9 interleaved runs."""
    validated = [validate_counter_events(b) for b in batches(make_events(n, 10_000), size)]
    contenders: list[tuple[str, Callable[[list], bytes]]] = [
        ("msgpack.packb (the record's format)", lambda rows: msgpack.packb(["ingest", rows], use_bin_type=True)),
        ("pack_rows (engine/record_encoding.pyx)", lambda rows: pack_rows("ingest", rows)),
    ]
    for name, fn in contenders[1:]:
        assert [fn(b) for b in validated] == [contenders[0][1](b) for b in validated], name
    rows = best_ns_per_event(contenders, validated, n)
    table(f"log record of a batch: batches of {size:,}, {n:,} events", rows, "msgpack.packb (the record's format)")


#: PSD's thing ids, the number in its keys (``hz:<thingId>:...``).
PSD_THINGS = {"steps": 1, "calories": 2, "points": 3, "distance": 4, "cb": 5}


@functools.lru_cache(maxsize=4096)
def psd_levels(ts: int) -> tuple[tuple[str, str], ...]:
    """``(container, child)`` time strings of one second at PSD's five levels (cached: a
    live feed repeats its seconds, and a good client would not format them again)."""
    t = time.gmtime(ts)
    y, mo, d, h, mi, s = (f"{t.tm_year:04d}", f"{t.tm_mon:02d}", f"{t.tm_mday:02d}",
                          f"{t.tm_hour:02d}", f"{t.tm_min:02d}", f"{t.tm_sec:02d}")
    parts = [y, y + mo, y + mo + d, y + mo + d + h, y + mo + d + h + mi, y + mo + d + h + mi + s]
    return tuple((parts[i], parts[i + 1]) for i in range(5))


def run_redis(client: object, events_batches: list[list[dict]]) -> float:
    """PSD's write in additive mode: HINCRBY hz:<thingId>:<uid>:<container>
    <child>:<atid>:<aid> at 5 levels, each batch one pipeline (no MULTI/EXEC, EXPIRE or
    diff read, which PSD also paid for: this flatters Redis); seconds taken."""
    t0 = time.perf_counter()
    for batch in events_batches:
        pipe = client.pipeline(transaction=False)  # type: ignore[attr-defined]
        for e in batch:
            prefix = f"hz:{PSD_THINGS[e['metric']]}:{e['user']}:"
            suffix = f":{e['atid']}:{e.get('aid', 0)}"
            value = e["value"]
            for container, child in psd_levels(e["ts"]):
                pipe.hincrby(prefix + container, child + suffix, value)
        pipe.execute()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument("--validators", action="store_true", help="time the validators alone")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per row (medians reported)")
    args = parser.parse_args()
    if args.validators:
        compare_validators(args.events, args.batch)
        return
    for shape, users in (("sparse", 10_000), ("dense", 100)):
        bs = batches(make_events(args.events, users), args.batch)
        runs: list[tuple[str, Callable[[list[list[dict]]], float]]] = [
            ("engine.ingest", lambda b: run_engine(b, validated=False)),
            ("engine.ingest, reference validator", lambda b: run_engine(b, False, reference=True)),
            ("engine.ingest_validated", lambda b: run_engine(b, validated=True)),
            ("engine.ingest_validated, batches out of order",
             lambda b: run_engine(pairs_swapped(b), validated=True)),
            ("engine.ingest_validated, counter state a no-op",
             lambda b: run_engine(b, validated=True, no_state=True)),
            ("counter state alone: packed partition stores", run_partition_store_only),
            ("counter state alone: UserCounters objects", run_state_only),
        ]
        # Rows interleaved round by round, so a slow stretch of the machine hits every row.
        rates: dict[str, list[float]] = {name: [] for name, _ in runs}
        for _ in range(args.rounds):
            for name, run in runs:
                rates[name].append(args.events / run(bs))
                gc.collect()
        rows = []
        for name, _ in runs:
            got = sorted(rates[name])
            label = name if args.rounds == 1 else f"{name} [{got[0] / 1000:,.0f}k-{got[-1] / 1000:,.0f}k]"
            rows.append((label, statistics.median(got), "events/s"))
        if not args.no_redis:
            with redis_server() as client:
                if client is not None:
                    n = min(args.events, 100_000)
                    rows.append(("redis PSD-style pipeline", n / run_redis(client, bs[: n // args.batch]), "events/s"))
        table(f"in-process ingest, {shape}: {users:,} users, batches of {args.batch:,}, "
              f"{args.events:,} events; medians of {args.rounds} rounds [min-max]", rows, rows[0][0])


if __name__ == "__main__":
    main()
