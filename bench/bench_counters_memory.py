"""Counters memory: bytes per stored event, pointspace beside Redis with PSD's layout (issue 17).

Workload (``bench/common.py: make_events``'s live feed, same seed and order, made a batch at
a time so the events never sit in memory): ``--events`` add events for ``--users`` users, two
metrics, four activity types, one activity per (user, type, hour), ~50 events/s of feed time.

Rows, the same events on each side, each side in a fresh process:
  * pointspace: RSS growth of a child process across ``Engine.open()`` (in memory) +
    ``ingest_validated`` of every event (the real state: actors' directory, counters,
    activities), after ``gc.collect``;
  * Redis: ``used_memory`` and ``used_memory_rss`` growth of a fresh redis-server across PSD's
    Hashzilla writes (5 HINCRBY per event into per-user hashes ``hz:<thing>:<uid>:<container>``,
    the commands of ``bench/bench_ingest.py: run_redis``, sent as raw RESP: redis-py's
    pipelines would take most of an hour at 10M events on 2 shared cores).

Then where pointspace's bytes go, from a walk of the live state (``sys.getsizeof`` of each
container and of each int that is not one of CPython's cached small ints): the series'
packed columns (``engine/prefix_series.py``), late writes, per-series objects, per-metric objects,
activities (objects, packed points, the month index). What the walk does not explain
is allocator slack and the engine's own structures.

Run::

    .venv/bin/python bench/bench_counters_memory.py --events 10000000   # ~10 min on 2 cores
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import BASE_TS, redis_server, rss_bytes  # noqa: E402

METRICS = ("steps", "points")
BATCH = 10_000


def feed(n: int, users: int) -> Iterator[list[tuple[Any, ...]]]:
    """``make_events(n, users)`` (same seed, same order), as validated tuples
    ``(user, metric, atid, aid, ts, value, ts1, mode)``, ``BATCH`` at a time."""
    rng = random.Random(0)
    randrange = rng.randrange
    for start in range(0, n, BATCH):
        batch = []
        for i in range(start, min(n, start + BATCH)):
            ts = BASE_TS + int(i / 50.0)
            user = randrange(users)
            atid = randrange(4)
            value = randrange(1, 100)
            batch.append((user, METRICS[i % 2], atid, (user * 131 + atid) * 100_000 + ts // 3600,
                          ts, value, ts, 0))
        yield batch


############################################################################################
# pointspace side (child process)


def _int_bytes(values: Any) -> int:
    """Bytes of the int objects among ``values`` that are not CPython's cached small ints."""
    size = sys.getsizeof
    return sum(size(v) for v in values if not -5 <= v <= 256)


def packed_breakdown(states: dict[Any, Any]) -> dict[str, int]:
    """Bytes by part across the engine's packed partition stores
    (engine/partition_counters.pyx): their arrays, and the per-user dicts above them."""
    size = sys.getsizeof
    out: Counter[str] = Counter()
    stores = {id(state.store): state.store for state in states.values()}
    for store in stores.values():
        out.update({k: v for k, v in store.memory_parts().items() if k != "key table"})
        out["users dict of the stores"] += size(store.users_)
        out["key table (user, metric, type or aid -> row)"] += store.memory_parts().pop("key table", 0)
        for user, record in store.users_.items():
            metrics = record.metrics
            out["per-user views (PackedUser) + records + metrics dicts"] += (
                size(states[user]) + size(record) + size(metrics))
            for state in metrics.values():
                out["per-metric UserMetric + by_atid dicts"] += size(state) + size(state.by_atid)
                out["activity id arrays"] += size(state.acts)
                out["month index ((month, activity) int64 pairs)"] += size(state.months)
    entries = sum(state.statistics().cells for state in states.values())
    out["entries (count)"] = entries
    return dict(out)


def breakdown(states: dict[Any, Any]) -> dict[str, int]:
    """Bytes by kind of object across every user's ``UserCounters`` (see the module doc)."""
    size = sys.getsizeof
    out: Counter[str] = Counter()
    for user in states.values():
        out["users (UserCounters + metrics dict)"] += size(user) + size(user.metrics)
        for state in user.metrics.values():
            out["per-metric objects (MetricCounters, by_atid, dicts)"] += (
                size(state) + size(state.by_atid) + size(state.activities)
                + size(state.aid_months))
            series = list(state.by_atid.values())
            if state.all_types is not None:
                series.append(state.all_types)
            for s in series:
                out["series objects (PrefixSeries)"] += size(s)
                out["packed columns (starts, running totals)"] += size(s.starts) + size(s.sums)
                if s.late:
                    out["late writes (dict + ints)"] += size(s.late) + _int_bytes(s.late.keys()) + _int_bytes(
                        s.late.values())
                out["entries (count)"] += s.entries()
                out["series (count)"] += 1
            for activity in state.activities.values():
                out["activity objects (+ total int)"] += size(activity) + _int_bytes([activity.total])
                out["activity points (packed pairs)"] += size(activity.points)
                if type(activity.points) is list:  # widened: a delta left int64
                    out["activity point ints"] += _int_bytes(activity.points)
                out["activities (count)"] += 1
            for index in state.aid_months.values():
                out["aid_months index (dicts + aid ints)"] += size(index) + _int_bytes(index.keys())
    return dict(out)


def child_ours(events: int, users: int) -> None:
    """Print a JSON line: RSS growth across filling an in-memory Engine, and the breakdown."""
    from engine.engine import Engine
    from web.heap import pin_mmap_threshold
    from web.serving.server import tune_gc

    pin_mmap_threshold()  # as `pointspace serve` does at start (web/serving/server.py)

    async def fill() -> dict[str, Any]:
        async with Engine.open() as engine:
            tune_gc()
            gc.collect()
            before = rss_bytes(os.getpid())
            t0 = time.perf_counter()
            for batch in feed(events, users):
                await engine.ingest_validated(batch)
            seconds = time.perf_counter() - t0
            del batch
            gc.collect()
            await trio.sleep(0.5)
            after = rss_bytes(os.getpid())
            states = engine._router.directory["user"]
            return {"rss": after - before, "fill_s": seconds, "users": len(states),
                    "breakdown": packed_breakdown(states)}

    print(json.dumps(trio.run(fill)))


############################################################################################
# Redis side (this process)


def redis_side(events: int, users: int) -> tuple[int, int, float] | None:
    """(used_memory growth, used_memory_rss growth, seconds) of a fresh redis-server across
    PSD's writes of the feed: ``run_redis``'s HINCRBYs as raw RESP, a batch per write."""
    from bench.bench_ingest import PSD_THINGS, psd_levels

    with redis_server(install=True) as client:
        if client is None:
            return None
        before = client.info("memory")
        kwargs = client.connection_pool.connection_kwargs
        seconds = 0.0
        with socket.create_connection((kwargs["host"], kwargs["port"])) as sock:
            for batch in feed(events, users):
                t0 = time.perf_counter()
                out: list[bytes] = []
                for user, metric, atid, aid, ts, value, _, _ in batch:
                    prefix = f"hz:{PSD_THINGS[metric]}:{user}:"
                    suffix = f":{atid}:{aid}"
                    v = str(value)
                    for container, child in psd_levels(ts):
                        key, field = prefix + container, child + suffix
                        out.append(f"*4\r\n$7\r\nHINCRBY\r\n${len(key)}\r\n{key}\r\n"
                                   f"${len(field)}\r\n{field}\r\n${len(v)}\r\n{v}\r\n".encode())
                sock.sendall(b"".join(out))
                replies = 0
                while replies < len(out):
                    chunk = sock.recv(1 << 20)
                    if chunk.startswith(b"-") or b"\n-" in chunk:
                        raise RuntimeError(f"redis refused a write: {chunk[:200]!r}")
                    replies += chunk.count(b"\n")
                seconds += time.perf_counter() - t0
        after = client.info("memory")
        return (after["used_memory"] - before["used_memory"],
                after["used_memory_rss"] - before["used_memory_rss"], seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument("--child-ours", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_ours:
        child_ours(args.events, args.users)
        return
    done = subprocess.run([sys.executable, __file__, "--child-ours", "--events", str(args.events),
                           "--users", str(args.users)], check=True, capture_output=True, text=True)
    ours = json.loads(done.stdout.strip().splitlines()[-1])
    n = args.events
    print(f"\n{n:,} events, {args.users:,} users, 2 metrics, 4 activity types, an activity per "
          f"(user, type, hour); pointspace filled in {ours['fill_s']:.1f} s")
    print(f"  {'pointspace: process RSS growth':<52} {ours['rss'] / n:>8.1f} B/event")
    theirs = None if args.no_redis else redis_side(n, args.users)
    if theirs is not None:
        print(f"  {'Redis (PSD Hashzilla): used_memory growth':<52} {theirs[0] / n:>8.1f} B/event")
        print(f"  {'Redis (PSD Hashzilla): used_memory_rss growth':<52} {theirs[1] / n:>8.1f} B/event"
              f"   (loaded at {n / theirs[2]:,.0f} events/s)")
    b = ours["breakdown"]
    counts = {k: b.pop(k) for k in list(b) if k.endswith("(count)")}
    print(f"\nwhere pointspace's bytes go ({counts.get('series (count)', 0):,} series, "
          f"{counts.get('entries (count)', 0):,} entries, {counts.get('activities (count)', 0):,} "
          f"activities), per event")
    for name, value in sorted(b.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<62} {value / n:>8.1f} B")
    walked = sum(b.values())
    print(f"  {'total walked':<62} {walked / n:>8.1f} B")
    print(f"  {'not walked (allocator slack, engine, actors)':<62} {(ours['rss'] - walked) / n:>8.1f} B")


if __name__ == "__main__":
    main()
