"""Durability costs: ingest over HTTP under each fsync policy; snapshot and recovery times.

Part 1, over HTTP. A real ``pointspace serve`` per configuration receives the same batches of
1,000 events (JSON) from ``--threads`` raw-socket keep-alive clients (``bench_http.post_all``):
in memory (no log, the baseline), then with a data directory under ``--fsync always``,
``everysec`` and ``no``. Rows give events/s and the ratio to the in-memory server measured in
the same run; the log's own counters (bytes, fsyncs) show group commit at work.

Part 2, in-process. ``Engine.open(data_dir)`` is filled with events until ``--buckets`` counter
buckets would exist in the six-level layout (``CounterSeries`` in ``engine/counters.py``: one
cell per second, minute, hour... that holds a value; the issue's measure: user counters now
hold one (second, running total) entry per distinct second instead), then
timed: ``snapshot_now`` (the walk, msgpack, zstd, fsync, rename), the snapshot's size, and
``Engine.open`` on that directory twice: from the snapshot, and from a crash image of the same
state that holds only the log (replay of every record).

Workload: U = max(1000, buckets // 200) users (~200 buckets each), one metric, one activity
type, no activities; event i goes to user i % U at second BASE + i with a pseudo-random value,
so every event opens new second and minute buckets (and hour, day... ones as U grows) for its
user; events are made until exactly ``--buckets`` buckets exist. Batches of 10,000 events,
``fsync=always`` while filling (one fsync per batch), so the crash image is exactly the
acknowledged log.

Run (from the repository root)::

    .venv/bin/python bench/bench_durability.py                      # defaults: ~2-3 min, 2 cores
    .venv/bin/python bench/bench_durability.py --skip-http --buckets 10000000
        # the issue's size: 10M buckets needs ~4 GB of RAM (live state, then the recovered
        # engine) and ~1 GB of disk for log + snapshot; expect several minutes on 2 cores

Figures are from one run on a shared machine: take them as orders of magnitude, and compare
rows of the same run (the ratios), not runs.
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_http import post_all, start_pointspace  # noqa: E402
from bench.common import BASE_TS, batches, make_events, table  # noqa: E402
from engine.counters import ADD  # noqa: E402
from engine.engine import Engine  # noqa: E402
from engine.timebuckets import cell_keys  # noqa: E402
from web.serving.server import tune_gc  # noqa: E402

#####################################################################
# Part 1: HTTP ingest per fsync policy
#####################################################################


def http_rows(events: int, threads: int) -> list[tuple[str, float, str]]:
    bodies = [orjson.dumps(b) for b in batches(make_events(events, 10_000), 1000)]
    rows: list[tuple[str, float, str]] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        configs = [("in memory, no log (baseline)", "", "everysec")]
        configs += [
            (f"data dir, --fsync {p}", str(Path(tmp, p)), p) for p in ("always", "everysec", "no")
        ]
        for label, data_dir, fsync in configs:
            proc, url = start_pointspace(data_dir, fsync)
            try:
                post_all(url, "/api/events", bodies[:20], "application/json", threads)  # warm up
                seconds = post_all(url, "/api/events", bodies, "application/json", threads)
                rows.append((label, events / seconds, "events/s"))
                log = httpx.get(url + "/api/admin/snapshot").json().get("log")
                if log:
                    notes.append(
                        f"  {label}: {len(bodies) + 20} requests, {log['fsync_count']} fsyncs, "
                        f"{log['bytes_written'] / 1e6:.1f} MB of log written, last fsync "
                        f"{(log['last_fsync_latency_s'] or 0) * 1e3:.2f} ms"
                    )
            finally:
                proc.terminate()
                proc.wait()
    table(
        f"HTTP ingest: {events:,} events in batches of 1,000 (JSON), {threads} client threads",
        rows,
        "in memory, no log (baseline)",
    )
    print("\n".join(notes))
    return rows


#####################################################################
# Part 2: snapshot and recovery of N buckets
#####################################################################

BATCH = 10_000
DEFAULT_GC = (700, 10, 10)  # CPython's defaults
TUNED_GC = (100_000, 50, 1000)  # web/serving/server.py: tune_gc


class Workload:
    """Counter events for ``users`` users, made a batch at a time, until ``buckets`` exist.

    Event i goes to user i % users at second BASE_TS + i with a pseudo-random value 1..99, so
    each user's timestamps are ``users`` seconds apart. The bucket count is kept exactly as the
    events are made: an event opens a bucket at each level where its bucket differs from the
    previous event of the same user (timestamps only grow), all six for a user's first event.
    """

    def __init__(self, buckets: int, users: int) -> None:
        self.target = buckets
        self.users = users
        self.buckets = 0
        self.events = 0
        self._last: list[tuple[int, ...] | None] = [None] * users

    def batches(self) -> Iterator[list[tuple[Any, ...]]]:
        last = self._last
        users = self.users
        start = 0
        while self.buckets < self.target:
            batch = []
            for i in range(start, start + BATCH):
                user = i % users
                ts = BASE_TS + i
                keys = cell_keys(ts)
                previous = last[user]
                self.buckets += (
                    6
                    if previous is None
                    else sum(a != b for a, b in zip(keys, previous, strict=True))
                )
                last[user] = keys
                batch.append((user, "steps", 0, None, ts, 1 + (i * 2654435761) % 99, ts, ADD))
            start += BATCH
            self.events += len(batch)
            yield batch


def count_entries(engine: Engine) -> int:
    """(second, running total) entries held by every user series (engine/prefix_series.py):
    what the state holds, compared between the live and the recovered engine."""
    total = 0
    for kind, _, _, plain in engine.iter_snapshot_items():
        if kind == "user":
            total += sum(len(series[4]) // 8 for _, serieses, *_ in plain for _, series in serieses)
    return total


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def snapshot_rows(buckets: int, tmp: Path, ranked: int = 0) -> list[tuple[str, float, str]]:
    workload = Workload(buckets, users=max(1000, buckets // 200))
    live, crash = tmp / "live", tmp / "crash"
    rows: list[tuple[str, float, str]] = []
    tune_gc()  # as `pointspace serve` runs once started
    t0 = time.perf_counter()
    async with Engine.open(live, fsync="always") as engine:
        for batch in workload.batches():
            await engine.ingest_validated(batch)
        if ranked:
            # The size adds a 1M-element ranked list (RankDB-style: random scores).
            from engine.lists import CreateList, ListSettings
            from engine.ranked import ElementIn

            rng = random.Random(7)
            elements = [ElementIn(i, rng.randrange(2**40), 0, None) for i in range(ranked)]
            await engine.submit(CreateList(list_id="big", settings=ListSettings(set="bench"),
                                           populate=elements, replace=False, now=1_700_000_000))
            del elements
        fill_s = time.perf_counter() - t0
        actual = workload.buckets  # the measure: cells of the six-level layout
        entries = count_entries(engine)
        n_events, users = workload.events, workload.users
        shutil.copytree(live, crash)  # the log only: nothing was snapshotted yet
        log_bytes = sum(p.stat().st_size for p in (crash / "wal").iterdir())
        t0 = time.perf_counter()
        record = await engine.snapshot_now()
        snapshot_s = time.perf_counter() - t0
    # Drop the live engine before timing recovery: kept, it doubled the heap every collection
    # walks and overstated recovery ~2x (issue 17).
    del engine
    gc.collect()
    print(
        f"\nstate: {n_events:,} events for {users:,} users -> {actual:,} six-level buckets, held "
        f"as {entries:,} (second, running total) entries; filled in "
        f"{fill_s:.1f} s ({n_events / fill_s:,.0f} events/s with fsync=always, batches of "
        f"{BATCH:,}, including making the events); log {log_bytes / 1e6:.1f} MB; peak RSS "
        f"{rss_mb():,.0f} MB"
    )
    rows.append(("snapshot_now (walk, pack, zstd, fsync)", snapshot_s, "s"))
    rows.append(("snapshot size", record.bytes / 1e6, "MB"))
    rows.append(("snapshot bytes per bucket", record.bytes / actual, "B"))
    rows.append(("snapshot throughput", actual / snapshot_s, "buckets/s"))
    # `pointspace serve` recovers *before* it tunes the collector (web/serving/server.py: tune_gc runs
    # after Engine.open), so recovery runs with CPython's default thresholds; the "gc tuned"
    # rows show what tuning first would give.
    for gc_label, thresholds in (("default gc", DEFAULT_GC), ("gc tuned", TUNED_GC)):
        for label, source in (("from snapshot", live), ("from log replay only", crash)):
            work = tmp / "work"  # a fresh copy each time: closing writes a final snapshot
            shutil.rmtree(work, ignore_errors=True)
            shutil.copytree(source, work)
            gc.unfreeze()
            gc.collect()
            gc.set_threshold(*thresholds)
            t0 = time.perf_counter()
            async with Engine.open(work, fsync="always") as engine:
                opened_s = time.perf_counter() - t0
                recovery = engine.store.recovery
                assert count_entries(engine) == entries, "recovered state differs"
                if ranked:
                    size = await engine.ask("list", "big", lambda state: len(state.ranked))
                    assert size == ranked, "recovered ranked list differs"
                what = f"{recovery.snapshot_items:,} items + {recovery.replayed_records:,} records"
                rows.append((f"recovery {label}, {gc_label} ({what})", opened_s, "s"))
            del engine  # the next recovery starts from an empty heap too
    gc.set_threshold(*DEFAULT_GC)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--events", type=int, default=200_000, help="HTTP part: events per configuration"
    )
    parser.add_argument("--threads", type=int, default=4, help="HTTP part: client connections")
    parser.add_argument(
        "--buckets", type=int, default=2_000_000, help="in-process part: counter buckets"
    )
    parser.add_argument(
        "--ranked", type=int, default=0, help="in-process part: also a ranked list this long"
    )
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--skip-snapshot", action="store_true")
    args = parser.parse_args()
    if not args.skip_http:
        http_rows(args.events, args.threads)
    if not args.skip_snapshot:
        with tempfile.TemporaryDirectory() as tmp:
            rows = trio.run(snapshot_rows, args.buckets, Path(tmp), args.ranked)
        print(f"\nSnapshot and recovery: {args.buckets:,} buckets requested, ranked list of {args.ranked:,}")
        for name, value, unit in rows:
            print(f"  {name:<68} {value:>14,.2f} {unit}")


if __name__ == "__main__":
    main()
