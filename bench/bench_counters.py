"""Range-sum latency for one user over a year of second-level data, against brute force.

Workload (PSD's challenge queries): one user with a write every ``--every`` seconds for a whole
year (2024, a leap year) in four activity types; then random ranges of random length (a
second to the whole year, any second boundaries), summed for all types and for one type.

Rows, on the same series in the same run:
  * CounterSeries.range_sum       -- one activity type: two prefix walks
  * UserCounters.range_sum (all)  -- every type of the metric (four series)
  * Engine.query, one user        -- the same through the actor runtime (one message)
  * sorted list + bisect (baseline) -- the events in a sorted array with a prefix-sum array
                                       (the best a hand-rolled in-memory counter can do, but
                                       it has no calendar levels and O(n) inserts)
  * brute force over the year's points -- what PSD's README says you avoid

Target (issue 2): any one-user range sum <= 100 us in-process.
"""

from __future__ import annotations

import argparse
import bisect
import random
import sys
import time
from itertools import accumulate
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import table  # noqa: E402
from engine.counters import ADD, UserCounters  # noqa: E402
from engine.engine import Engine  # noqa: E402

YEAR_START = 1704067200  # 2024-01-01
YEAR_END = 1735689599  # 2024-12-31 23:59:59


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--every", type=int, default=30, help="seconds between writes")
    parser.add_argument("--queries", type=int, default=20_000)
    args = parser.parse_args()
    rng = random.Random(1)
    user = UserCounters()
    events = [("steps", (ts // 977) % 4, None, ts, rng.randrange(1, 50), ts, ADD)
              for ts in range(YEAR_START, YEAR_END + 1, args.every)]
    t0 = time.perf_counter()
    user.apply(events)
    load = time.perf_counter() - t0
    stats = user.statistics()
    print(f"one user, a year of writes every {args.every} s: {len(events):,} events, "
          f"{stats.cells:,} cells, loaded in {load:.1f} s")
    queries = []
    for _ in range(args.queries):
        length = int(10 ** rng.uniform(0, 7.5))
        t1 = rng.randrange(YEAR_START, YEAR_END)
        queries.append((t1, min(YEAR_END, t1 + length)))
    series = user.metrics["steps"].by_atid[1]

    def per_query(fn) -> float:
        t0 = time.perf_counter()
        for t1, t2 in queries:
            fn(t1, t2)
        return (time.perf_counter() - t0) / len(queries) * 1e6

    rows = [
        ("CounterSeries.range_sum (one type)", per_query(series.range_sum), "us/query"),
        ("UserCounters.range_sum (all types)", per_query(lambda a, b: user.range_sum("steps", a, b)), "us/query"),
    ]

    async def through_engine() -> float:
        async with Engine.open() as engine:
            await engine.ingest_validated([(1, *e) for e in events])
            t0 = time.perf_counter()
            for t1, t2 in queries[:5000]:
                await engine.query([1], ["steps"], t1, t2)
            return (time.perf_counter() - t0) / 5000 * 1e6

    rows.append(("Engine.query, one user (all types)", trio.run(through_engine), "us/query"))
    stamps = [e[3] for e in events if e[1] == 1]
    values = [e[4] for e in events if e[1] == 1]
    prefix = [0, *accumulate(values)]

    def bisect_sum(t1: int, t2: int) -> int:
        return prefix[bisect.bisect_right(stamps, t2)] - prefix[bisect.bisect_left(stamps, t1)]

    rows.append(("sorted list + bisect (baseline)", per_query(bisect_sum), "us/query"))
    few = queries[:200]
    t0 = time.perf_counter()
    for t1, t2 in few:
        sum(v for ts, v in zip(stamps, values, strict=True) if t1 <= ts <= t2)
    rows.append(("brute force over the points", (time.perf_counter() - t0) / len(few) * 1e6, "us/query"))
    for t1, t2 in queries[:500]:
        assert series.range_sum(t1, t2) == bisect_sum(t1, t2)
    table("one-user range sums, random ranges of 1 s .. 1 year", rows, "CounterSeries.range_sum (one type)")


if __name__ == "__main__":
    main()
