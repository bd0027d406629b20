"""Range-sum latency per window, including the worst cases, in-process (issue 17, scope 2).

Workload (PSD's challenge queries, stretched): writes every ``--every`` seconds, four activity
types, from ``--first-year`` through 2024 (several years: the year-level walk is as long as it
gets), for one user and for 100 users (each writing every ``100 * --every`` seconds, offset).
Windows: an hour, a day, 30 days, a year at random seconds, and the awkward ones:

  * ``worst``: t1 = a year's first second + 59 s (a minute's last second), t2 = that year's
    last second - 1 (the complement side of every level at both ends);
  * ``worst, multi-year``: the same edges, with t1 in the second year and t2 in the last-but-one;
  * ``mid-month edges``: t1, t2 on the 15th at 12:29:29 and 12:30:31 of months apart;
  * each of the above again on a series after retention dropped seconds older than 30 days and
    minutes older than a year (``PrefixSeries.expire``: rolled up into coarser entries).

Rows, per window: ``PrefixSeries.range_sum`` alone (one activity type: what user counters keep
since issue 17), the six-cell ``CounterSeries`` holding the same writes beside it (the layout
user counters kept before; statshub and Density still do), ``UserCounters.range_sum``
(all types: the kept all-types series), and ``Engine.query`` through the actors for one user and
for 100 users in one call (per query and per user), each through the actors' mailboxes and
directly (``Router.read_directly``, engine/actors.py), side by side. Each row gives the
median, p90, p99 and max of single calls (perf_counter_ns around each call): the median is
the figure to read on a shared machine, where p99 and max include other processes' time
slices.

The collector is tuned as ``pointspace serve`` tunes it (``tune_gc``) for the engine rows.
Every sum is checked against a sorted-array prefix sum (bisect), the brute-force model.

Target (issue 2/17): any one-user range sum <= 100 us in-process.

Run::

    .venv/bin/python bench/bench_range_windows.py               # ~1-2 min on 2 cores
"""

from __future__ import annotations

import argparse
import bisect
import calendar
import random
import sys
import time
from collections.abc import Callable
from itertools import accumulate
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.counters import ADD, CounterSeries, UserCounters  # noqa: E402
from engine.engine import Engine  # noqa: E402
from engine.prefix_series import PrefixSeries  # noqa: E402
from web.serving.server import tune_gc  # noqa: E402

LAST_YEAR = 2024


def year_start(year: int) -> int:
    return calendar.timegm((year, 1, 1, 0, 0, 0))


def windows(first_year: int, n: int, seed: int = 3) -> dict[str, list[tuple[int, int]]]:
    """Named lists of inclusive (t1, t2) ranges inside [first_year, LAST_YEAR]."""
    rng = random.Random(seed)
    lo, hi = year_start(first_year), year_start(LAST_YEAR + 1) - 1
    out: dict[str, list[tuple[int, int]]] = {}
    for name, length in (("hour", 3600), ("day", 86400), ("30 days", 30 * 86400),
                         ("year", 365 * 86400)):
        out[name] = [(t1, t1 + length - 1) for t1 in
                     (rng.randrange(lo, hi - length + 2) for _ in range(n))]
    years = list(range(first_year, LAST_YEAR + 1))
    out["worst (a year's 0:00:59 .. its last second - 1)"] = [
        (year_start(y) + 59, year_start(y + 1) - 2) for y in (rng.choice(years) for _ in range(n))]
    if len(years) >= 4:
        out["worst, multi-year"] = [
            (year_start(years[1]) + 59, year_start(years[-1]) - 2)] * n
    mids = []
    for _ in range(n):
        y1, y2 = sorted((rng.choice(years), rng.choice(years)))
        m1, m2 = rng.randrange(1, 13), rng.randrange(1, 13)
        t1 = calendar.timegm((y1, m1, 15, 12, 29, 29))
        t2 = calendar.timegm((y2, m2, 15, 12, 30, 31))
        mids.append((min(t1, t2), max(t1, t2)))
    out["mid-month edges"] = mids
    return out


def writes(users: int, every: int, first_year: int) -> list[tuple]:
    """Validated user events ``(user, metric, atid, aid, ts, value, ts1, mode)``."""
    rng = random.Random(1)
    lo, hi = year_start(first_year), year_start(LAST_YEAR + 1) - 1
    out = []
    for user in range(users):
        for ts in range(lo + user * 7, hi + 1, every * users):
            out.append((user, "steps", (ts // 977) % 4, None, ts, rng.randrange(1, 50), ts, ADD))
    return out


def latencies(fn: Callable[[int, int], object], queries: list[tuple[int, int]]) -> list[float]:
    """Microseconds of each call."""
    clock = time.perf_counter_ns
    out = []
    for t1, t2 in queries:
        t0 = clock()
        fn(t1, t2)
        out.append((clock() - t0) / 1000)
    return out


def summary(us: list[float]) -> str:
    s = sorted(us)
    return (f"median {s[len(s) // 2]:7.1f}  p90 {s[int(len(s) * 0.9)]:7.1f}  "
            f"p99 {s[int(len(s) * 0.99)]:8.1f}  max {s[-1]:8.1f} us")


def brute(events: list[tuple], user: int, atid: int | None) -> Callable[[int, int], int]:
    points = sorted((e[4], e[5]) for e in events if e[0] == user and (atid is None or e[2] == atid))
    stamps = [p[0] for p in points]
    prefix = [0, *accumulate(p[1] for p in points)]
    return lambda t1, t2: prefix[bisect.bisect_right(stamps, t2)] - prefix[bisect.bisect_left(stamps, t1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--every", type=int, default=120, help="one user's seconds between writes")
    parser.add_argument("--first-year", type=int, default=2015)
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--engine-queries", type=int, default=200)
    args = parser.parse_args()
    one = writes(1, args.every, args.first_year)
    many = writes(100, args.every, args.first_year)
    wins = windows(args.first_year, args.queries)
    user = UserCounters()
    user.apply([e[1:] for e in one])
    series = user.metrics["steps"].by_atid[1]
    # The same series after retention: seconds kept 30 days, minutes a year (as of the end).
    end = year_start(LAST_YEAR + 1)
    expired = PrefixSeries.from_plain(series.to_plain())
    expired.expire([end - 30 * 86400, end - 365 * 86400, 0, 0, 0])
    cells = CounterSeries()  # the six-cell layout, the same writes
    for _user, metric, atid, _aid, ts, value, *_ in one:
        if metric == "steps" and atid == 1:
            cells.add(ts, value)
    cells_expired = CounterSeries.from_plain(cells.to_plain())
    cells_expired.expire([end - 30 * 86400, end - 365 * 86400, 0, 0, 0])
    check_one = brute(one, 0, 1)
    check_all = brute(one, 0, None)
    print(f"{len(one):,} events for one user ({args.first_year}..{LAST_YEAR}, every "
          f"{args.every} s, 4 types: {series.entries():,} entries, {len(cells.cells):,} six-level cells in type 1); "
          f"{len(many):,} events for 100 users")
    for name, queries in wins.items():
        for t1, t2 in queries[:50]:
            assert series.range_sum(t1, t2) == check_one(t1, t2) == cells.range_sum(t1, t2), (name, t1, t2)
            assert user.range_sum("steps", t1, t2) == check_all(t1, t2), (name, t1, t2)
            # Retention rounds down only where an edge lies in a dropped stretch.
            if t1 >= end - 30 * 86400:
                assert expired.range_sum(t1, t2) == check_one(t1, t2), (name, t1, t2)
            assert expired.range_sum(t1, t2) == cells_expired.range_sum(t1, t2), (name, t1, t2)
        print(f"\n{name}")
        print(f"  {'PrefixSeries.range_sum (one type)':<44} {summary(latencies(series.range_sum, queries))}")
        print(f"  {'  ... after retention (rolled up)':<44} {summary(latencies(expired.range_sum, queries))}")
        print(f"  {'CounterSeries.range_sum (six-cell, before)':<44} {summary(latencies(cells.range_sum, queries))}")
        print(f"  {'  ... after retention (horizons)':<44} "
              f"{summary(latencies(cells_expired.range_sum, queries))}")
        all_types = lambda a, b: user.range_sum("steps", a, b)  # noqa: E731
        print(f"  {'UserCounters.range_sum (all types)':<44} {summary(latencies(all_types, queries))}")

    async def through_engine() -> None:
        async with Engine.open() as engine:
            tune_gc()  # as `pointspace serve` runs once started
            for i in range(0, len(one), 10_000):
                await engine.ingest_validated(one[i : i + 10_000])
            for i in range(0, len(many), 10_000):
                await engine.ingest_validated([(u + 1000, *rest) for u, *rest in many[i : i + 10_000]])
            hundred = [u + 1000 for u in range(100)]
            check_last = brute(many, 99, None)
            router = engine._router  # a bench may look inside: it switches the read path
            print(f"\nEngine.query (all types), {args.engine_queries} queries per window; "
                  "'mailbox': every read through the actor's mailbox, 'direct': an idle "
                  "actor's reads answered in the caller (the default)")
            for name, queries in wins.items():
                queries = queries[: args.engine_queries]
                for label, users in (("one user", [0]), ("100 users", hundred)):
                    for path in ("mailbox", "direct"):
                        router.read_directly = path == "direct"
                        clock = time.perf_counter_ns
                        us = []
                        for t1, t2 in queries:
                            t0 = clock()
                            result = await engine.query(users, ["steps"], t1, t2)
                            us.append((clock() - t0) / 1000)
                            want = (check_all if users == [0] else check_last)(t1, t2)
                            assert result[users[-1]].sums["steps"] == want, (name, label, t1, t2)
                        per_user = sorted(us)[len(us) // 2] / len(users)
                        print(f"  {name[:28]:<28} {label:<10} {path:<8} {summary(us)}  "
                              f"(median {per_user:.1f} us/user)")
            router.read_directly = True

    trio.run(through_engine)


if __name__ == "__main__":
    main()
