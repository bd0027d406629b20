"""Ingest throughput in-process: the Engine against its own parts and against Redis (PSD-style).

Workload (a live activity feed): events for U users in batches of 1,000, two metrics, four
activity types, one activity per user, type and hour; timestamps advance at ~50 events/s.
Two shapes: *sparse* (10,000 users: a batch touches ~1,000 users, one event each) and *dense*
(100 users: ~10 events per user per batch).

Rows, all on the same events in the same run:
  * engine.ingest                -- validation + log record + actors + counters (the real path)
  * engine.ingest_validated      -- the same without validation
  * UserCounters.apply directly  -- the counter state alone: the floor for this design
  * redis PSD-style pipeline     -- PSD's Hashzilla writes: 5 HINCRBY per event, pipelined
                                    per batch, on a local redis-server (needs `.[bench]`)

Target (issue 2): >= 300k events/s in-process.
"""

from __future__ import annotations

import argparse
import functools
import gc
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import batches, make_events, redis_server, table  # noqa: E402
from engine.counters import UserCounters  # noqa: E402
from engine.engine import Engine  # noqa: E402
from engine.events import group_by_user, validate_counter_events  # noqa: E402
from web.serving.server import tune_gc  # noqa: E402


def run_engine(events_batches: list[list[dict]], validated: bool) -> float:
    async def main() -> float:
        async with Engine.open() as engine:
            tune_gc()
            pre = [validate_counter_events(b) for b in events_batches] if validated else None
            t0 = time.perf_counter()
            if pre is None:
                for batch in events_batches:
                    await engine.ingest(batch)
            else:
                for batch in pre:
                    await engine.ingest_validated(batch)
            return time.perf_counter() - t0

    return trio.run(main)


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
    args = parser.parse_args()
    for shape, users in (("sparse", 10_000), ("dense", 100)):
        events = make_events(args.events, users)
        bs = batches(events, args.batch)
        rows = []
        rows.append(("engine.ingest", args.events / run_engine(bs, validated=False), "events/s"))
        gc.collect()
        rows.append(("engine.ingest_validated", args.events / run_engine(bs, validated=True), "events/s"))
        gc.collect()
        rows.append(("UserCounters.apply directly (floor)", args.events / run_state_only(bs), "events/s"))
        if not args.no_redis:
            with redis_server() as client:
                if client is not None:
                    n = min(args.events, 100_000)
                    rows.append(("redis PSD-style pipeline", n / run_redis(client, bs[: n // args.batch]), "events/s"))
        table(f"in-process ingest, {shape}: {users:,} users, batches of {args.batch:,}, "
              f"{args.events:,} events", rows, "engine.ingest")


if __name__ == "__main__":
    main()
