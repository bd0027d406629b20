"""Range-sum latency for one user over a year of second-level data, against brute force.

Workload (PSD's challenge queries): one user with a write every ``--every`` seconds for a whole
year (2024, a leap year) in four activity types; then random ranges of random length (a
second to the whole year, any second boundaries), summed for all types and for one type.

Rows, on the same series in the same run:
  * PrefixSeries.range_sum        -- one activity type, as user counters keep it since issue 17:
                                     two binary searches in (second, running total) columns
  * CounterSeries.range_sum       -- the same writes in the six-level cells user counters kept
                                     before (statshub and Density still do): two prefix walks
  * UserCounters.range_sum (all)  -- every type of the metric (the kept all-types series)
  * Engine.query, one user        -- the same through the actor runtime (one message)
  * sorted list + bisect (baseline) -- the events in a sorted list with a prefix-sum list: a
                                       hand-rolled in-memory counter (PrefixSeries is this
                                       layout packed, with appends, late writes and retention)
  * brute force over the year's points -- what PSD's README says you avoid

Target (issue 2): any one-user range sum <= 100 us in-process.
"""

from __future__ import annotations

import argparse
import bisect
import calendar
import random
import sys
import time
from itertools import accumulate
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import table  # noqa: E402
from engine.counters import ADD, CounterSeries, UserCounters  # noqa: E402
from engine.engine import Engine  # noqa: E402

YEAR_START = 1704067200  # 2024-01-01
YEAR_END = 1735689599  # 2024-12-31 23:59:59

#: Range-sum windows (run.py): an hour, a day, 30 days, a year (365 days).
WINDOWS = {"hour": 3600, "day": 86400, "30 days": 30 * 86400, "year": 365 * 86400}


############################################################################################
# PSD's read path on Redis (compat/psd.md sections 1.4-1.5), for the side-by-side rows


def year_of_writes(users: int, every: int) -> list[dict]:
    """Each of ``users`` writes ``steps`` every ``every`` seconds through 2024 (users offset
    so their seconds differ), four activity types, one activity per user, type and day."""
    out = []
    for user in range(users):
        for ts in range(YEAR_START + user % every, YEAR_END + 1, every):
            atid = (ts // 977) % 4
            out.append({"metric": "steps", "user": user, "value": 1 + ts % 49, "ts": ts, "atid": atid,
                        "aid": (user * 131 + atid) * 100_000 + ts // 86400})
    return out


def window_queries(window: int, n: int, seed: int = 1) -> list[tuple[int, int]]:
    """``n`` inclusive ranges of ``window`` seconds, starting at random seconds of 2024."""
    rng = random.Random(seed)
    return [(t1, t1 + window - 1) for t1 in (rng.randrange(YEAR_START, YEAR_END - window + 2) for _ in range(n))]


def psd_requests_for_range(t1: int, t2: int) -> dict[str, list[int]]:
    """PSD's ``requestsForRange``: the container -> [min child, max child] map that covers
    the inclusive range [t1, t2], taking at each cursor the largest aligned unit that fits
    with ``cursor + unit <= t2`` (a unit ending exactly at t2 is not taken). Runs of the
    same unit are taken in one step, as the cursor loop would take them one by one.

    >>> psd_requests_for_range(1471392000, 1471478399)
    {'20160817': [0, 22], '2016081723': [0, 58], '201608172359': [0, 59]}
    >>> psd_requests_for_range(1451606400, 1483228800)
    {'2016': [1, 12], '201701010000': [0, 0]}
    >>> psd_requests_for_range(1451635200, 1458061011)  # doctest: +NORMALIZE_WHITESPACE
    {'20160101': [8, 23], '201601': [2, 31], '2016': [2, 2], '201603': [1, 14],
     '20160315': [0, 15], '2016031516': [0, 55], '201603151656': [0, 51]}
    """
    spans: dict[str, list[int]] = {}

    def add(container: str, lo: int, hi: int) -> None:
        span = spans.setdefault(container, [lo, hi])
        span[0], span[1] = min(span[0], lo), max(span[1], hi)

    cursor = t1
    while cursor <= t2:
        y, mo, d, h, mi, s = time.gmtime(cursor)[:6]
        ymd = f"{y:04d}{mo:02d}{d:02d}"
        if s or cursor + 60 > t2:  # seconds, up to the next minute or t2
            last = min(cursor - s + 59, t2)
            add(f"{ymd}{h:02d}{mi:02d}", s, s + last - cursor)
            cursor = last + 1
        elif mi or cursor + 3600 > t2:
            k = min(60 - mi, (t2 - cursor) // 60)
            add(f"{ymd}{h:02d}", mi, mi + k - 1)
            cursor += 60 * k
        elif h or cursor + 86400 > t2:
            k = min(24 - h, (t2 - cursor) // 3600)
            add(ymd, h, h + k - 1)
            cursor += 3600 * k
        elif d != 1 or _month_start(y, mo + 1) > t2:
            k = min((_month_start(y, mo + 1) - cursor) // 86400, (t2 - cursor) // 86400)
            add(f"{y:04d}{mo:02d}", d, d + k - 1)
            cursor += 86400 * k
        elif mo != 1 or _month_start(y + 1, 1) > t2:
            last = mo
            while last < 12 and _month_start(y, last + 2) <= t2:
                last += 1
            add(f"{y:04d}", mo, last)
            cursor = _month_start(y, last + 1)
        else:
            add(f"{y:04d}", 1, 12)
            cursor = _month_start(y + 1, 1)
    return spans


def _month_start(year: int, month: int) -> int:
    """Unix seconds of the first of ``month`` (13 is next January)."""
    year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    return calendar.timegm((year, month, 1, 0, 0, 0))


#: PSD's aggregation script (numkeys 0): ARGV in fours, container key, lowest and highest
#: child (the container's digits followed by two), atid filter (``all`` or an id); HGETALL
#: each container and sum the fields ``<child>:<atid>:<aid>`` in range.
PSD_SUM_LUA = """
local sum = 0
for i = 1, #ARGV, 4 do
  local lo, hi, want = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), ARGV[i + 3]
  local fields = redis.call('HGETALL', ARGV[i])
  for j = 1, #fields, 2 do
    local child, atid = string.match(fields[j], '^(%d+):([^:]*):')
    local c = tonumber(child)
    if c >= lo and c <= hi and (want == 'all' or atid == want) then
      sum = sum + tonumber(fields[j + 1])
    end
  end
end
return sum
"""


def psd_script_args(thing: int, user: object, spans: dict[str, list[int]], atid: str = "all") -> list[str]:
    args: list[str] = []
    for container, (lo, hi) in spans.items():
        args += (f"hz:{thing}:{user}:{container}", f"{container}{lo:02d}", f"{container}{hi:02d}", atid)
    return args


def redis_range_sums(client: object, users: list[int], queries: list[tuple[int, int]]) -> tuple[float, list[int]]:
    """PSD's mu_query on Redis: per query, the range decomposed once, then one EVALSHA of
    :data:`PSD_SUM_LUA` per user, the users' calls in one pipeline; seconds per query and
    the sums (the last user's, per query)."""
    sha = client.script_load(PSD_SUM_LUA)  # type: ignore[attr-defined]
    sums = []
    t0 = time.perf_counter()
    for t1, t2 in queries:
        spans = psd_requests_for_range(t1, t2)
        pipe = client.pipeline(transaction=False)  # type: ignore[attr-defined]
        for user in users:
            pipe.evalsha(sha, 0, *psd_script_args(1, user, spans))
        sums.append(pipe.execute()[-1])
    return (time.perf_counter() - t0) / len(queries), sums


def engine_range_sums(events: list[dict], user_sets: dict[str, list[int]],
                      windows: dict[str, list[tuple[int, int]]], rounds: int
                      ) -> dict[tuple[str, str], tuple[list[float], list[int]]]:
    """Load ``events`` into an in-memory Engine (``Engine.ingest``, batches of 1,000), then
    time ``Engine.query`` (all activity types) for each user set and window, ``rounds``
    times: {(user set, window): ([seconds per query per round], the last user's sums)}."""
    async def main() -> dict[tuple[str, str], tuple[list[float], list[int]]]:
        out: dict[tuple[str, str], tuple[list[float], list[int]]] = {}
        async with Engine.open() as engine:
            for i in range(0, len(events), 1000):
                await engine.ingest(events[i : i + 1000])
            for set_name, users in user_sets.items():
                for window, queries in windows.items():
                    times: list[float] = []
                    sums: list[int] = []
                    for _ in range(rounds):
                        sums = []
                        t0 = time.perf_counter()
                        for t1, t2 in queries:
                            result = await engine.query(users, ["steps"], t1, t2)
                            sums.append(result[users[-1]].sums["steps"])
                        times.append((time.perf_counter() - t0) / len(queries))
                    out[set_name, window] = times, sums
        return out

    return trio.run(main)


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
          f"{stats.cells:,} entries, loaded in {load:.1f} s")
    queries = []
    for _ in range(args.queries):
        length = int(10 ** rng.uniform(0, 7.5))
        t1 = rng.randrange(YEAR_START, YEAR_END)
        queries.append((t1, min(YEAR_END, t1 + length)))
    series = user.metrics["steps"].by_atid[1]
    cells = CounterSeries()
    for _, atid, _, ts, value, _, _ in events:
        if atid == 1:
            cells.add(ts, value)

    def per_query(fn) -> float:
        t0 = time.perf_counter()
        for t1, t2 in queries:
            fn(t1, t2)
        return (time.perf_counter() - t0) / len(queries) * 1e6

    rows = [
        ("PrefixSeries.range_sum (one type)", per_query(series.range_sum), "us/query"),
        ("CounterSeries.range_sum (one type, six cells)", per_query(cells.range_sum), "us/query"),
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
        assert series.range_sum(t1, t2) == bisect_sum(t1, t2) == cells.range_sum(t1, t2)
    table("one-user range sums, random ranges of 1 s .. 1 year", rows, "PrefixSeries.range_sum (one type)")


if __name__ == "__main__":
    main()
