"""pointspace beside Redis, in one run: every workload on both systems, medians of several
rounds, written to ``bench/RESULTS.md`` with a chart of the ratios (``bench/results.png``).

Run it from the repository root (``--quick`` takes a few minutes on 2 cores, the default
under about 15)::

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/run.py [--quick] [--rounds N] [--only ingest,ranges,...]

A real ``redis-server`` is started on loopback for each part (persistence off), installed
first with ``apt-get install -y redis-server`` when it is missing (as root). Each workload
runs the way a good Redis user would run it: pipelines of 1,000 commands (or one command of
1,000 members), PSD's Lua aggregation script per user for range sums, the Redis structure
that fits (hashes in PSD's layout, a sorted set, a HyperLogLog, statshub's keys). The
measuring code is the per-feature benchmarks' own (``bench_ingest``, ``bench_counters``,
``bench_ranked``, ``bench_uniques``, ``bench_statshub``, ``bench_http``): this script only
sizes the workloads, repeats them and writes the report.

Parts (``--only``): ``ingest`` (PSD events in-process), ``ranges`` (range sums, one user and
100 users, windows of an hour, a day, 30 days and a year), ``ranked`` (leaderboards),
``uniques``, ``statshub``, ``memory`` (Redis RSS and used_memory against our server's RSS
for the same data, bulk-loaded over HTTP), ``http`` (the request floor: our cheapest
endpoints against Redis round trips).

Every ratio is oriented so that > 1 means pointspace is better: throughput is ours / Redis,
latency and bytes are Redis / ours. Nothing is asserted: the figures describe this machine,
on this run (which the report describes).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import (  # noqa: E402
    bench_counters,
    bench_http,
    bench_ingest,
    bench_ranked,
    bench_statshub,
    bench_uniques,
)
from bench.common import (  # noqa: E402
    batches,
    http_request,
    make_events,
    post_all,
    redis_server,
    rss_bytes,
    send_all,
    start_pointspace,
)

PARTS = ("ingest", "ranges", "ranked", "uniques", "statshub", "memory", "http")


@dataclass(frozen=True)
class Sizes:
    """How much each part does; ``QUICK`` and ``FULL`` below."""

    rounds: int
    events: int  # PSD ingest, per shape
    one_user_every: int  # range sums: one user writing every N seconds through 2024
    many_users_every: int  # ... and 100 users, each every N seconds
    one_user_queries: int
    many_users_queries: int
    list_size: int  # leaderboard bulk load
    list_ops: int  # score updates, ranks, pages, percentiles (each)
    unique_adds: int
    unique_count_members: int
    stats_updates: int
    stats_http_updates: int
    memory_list: int
    memory_events: int
    http_requests: int


QUICK = Sizes(rounds=3, events=50_000, one_user_every=600, many_users_every=21_600,
              one_user_queries=200, many_users_queries=20, list_size=100_000, list_ops=10_000,
              unique_adds=100_000, unique_count_members=100_000, stats_updates=2_000,
              stats_http_updates=1_000, memory_list=100_000, memory_events=50_000,
              http_requests=2_000)
FULL = Sizes(rounds=5, events=200_000, one_user_every=60, many_users_every=3_600,
             one_user_queries=1_000, many_users_queries=100, list_size=1_000_000,
             list_ops=100_000, unique_adds=1_000_000, unique_count_members=1_000_000,
             stats_updates=20_000, stats_http_updates=5_000, memory_list=1_000_000,
             memory_events=500_000, http_requests=20_000)


@dataclass
class Row:
    """One workload: each system's figure per round, in ``unit``; ``higher_is_better`` for
    throughput (ratio ours / Redis), not for latency and bytes (ratio Redis / ours)."""

    part: str
    name: str
    unit: str
    higher_is_better: bool
    ours_how: str
    redis_how: str
    ours: list[float] = field(default_factory=list)
    redis: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        if not self.ours or not self.redis:
            return None
        ours, theirs = statistics.median(self.ours), statistics.median(self.redis)
        return ours / theirs if self.higher_is_better else theirs / ours


def median_rounds(rounds: int, fn: Callable[[], tuple[float, float | None]], row: Row) -> None:
    """Run ``fn`` (ours, Redis-or-None) ``rounds`` times into ``row``."""
    for _ in range(rounds):
        gc.collect()
        ours, theirs = fn()
        row.ours.append(ours)
        if theirs is not None:
            row.redis.append(theirs)


############################################################################################
# The parts


def part_ingest(sizes: Sizes, client: Any) -> list[Row]:
    rows = []
    for shape, users in (("sparse, 10k users", 10_000), ("dense, 100 users", 100)):
        bs = batches(make_events(sizes.events, users), 1000)
        row = Row("ingest", f"PSD ingest, {shape}", "events/s", True,
                  "Engine.ingest in-process, batches of 1,000 (validation, actors, counters)",
                  "PSD's 5 HINCRBY per event from redis-py, one pipeline per 1,000 events")

        def once(bs: list[list[dict]] = bs) -> tuple[float, float | None]:
            ours = sizes.events / bench_ingest.run_engine(bs, validated=False)
            if client is None:
                return ours, None
            client.flushall()
            return ours, sizes.events / bench_ingest.run_redis(client, bs)

        median_rounds(sizes.rounds, once, row)
        rows.append(row)
    return rows


def part_ranges(sizes: Sizes, client: Any) -> list[Row]:
    """Range sums over a year of writes: both systems hold the same events, every answer is
    compared (a wrong sum stops the run), then each window is timed."""
    rows: list[Row] = []
    sets = {"one user": ([0], sizes.one_user_every, sizes.one_user_queries),
            "100 users": (list(range(100)), sizes.many_users_every, sizes.many_users_queries)}
    for set_name, (users, every, n_queries) in sets.items():
        events = bench_counters.year_of_writes(len(users), every)
        windows = {w: bench_counters.window_queries(length, n_queries, seed=length)
                   for w, length in bench_counters.WINDOWS.items()}
        ours = bench_counters.engine_range_sums(events, {set_name: users}, windows, sizes.rounds)
        if client is not None:
            client.flushall()
            bench_ingest.run_redis(client, batches(events, 1000))
        for window, queries in windows.items():
            times, our_sums = ours[set_name, window]
            row = Row("ranges", f"range sum, {set_name}, {window}", "us/query", False,
                      f"Engine.query in-process, {len(users)} user(s) in one call "
                      f"({len(events):,} events loaded)",
                      "PSD's Lua script (EVALSHA) per user, the users in one pipeline; "
                      "range decomposed client-side as PSD does",
                      ours=[t * 1e6 for t in times])
            if client is not None:
                for _ in range(sizes.rounds):
                    seconds, sums = bench_counters.redis_range_sums(client, users, queries)
                    if sums != our_sums:
                        raise RuntimeError(f"Redis and pointspace sums differ ({set_name}, {window})")
                    row.redis.append(seconds * 1e6)
            rows.append(row)
        del events
        gc.collect()
    return rows


def part_ranked(sizes: Sizes, client: Any) -> list[Row]:
    n = sizes.list_size
    ids, scores = bench_ranked.make_data(n, 0)
    rng = random.Random(0)
    sample = [int(ids[rng.randrange(n)]) for _ in range(sizes.list_ops)]
    wrapped = None if client is None else bench_ranked.RedisPy(0, client)
    pipelined = "pipelines of 1,000 from redis-py"
    rows = {
        "bulk_load": Row("ranked", f"leaderboard bulk load, {n:,}", "elements/s", True,
                         "RankedList.load_arrays in-process", "ZADD of 1,000 members, 50 to a pipeline"),
        "update": Row("ranked", f"score updates ({sizes.list_ops:,} random scores)", "ops/s", True,
                      "RankedList.upsert in-process, one call each", f"ZADD, {pipelined}"),
        "rank_of": Row("ranked", "rank by id", "ops/s", True, "RankedList.rank_of in-process",
                       f"ZREVRANK, {pipelined}"),
        "top_100": Row("ranked", "top 100", "ops/s", True, "RankedList.range_from_top(0, 100)",
                       f"ZREVRANGE 0 99 WITHSCORES, {pipelined}"),
        "percentile": Row("ranked", "percentile", "ops/s", True, "RankedList.percentile",
                          f"ZCARD + ZREVRANGE k k WITHSCORES, {pipelined}"),
    }
    for _ in range(sizes.rounds):
        gc.collect()
        rl, load = bench_ranked.bulk_load(ids, scores, bench_ranked.DEFAULT_LOAD)
        rows["bulk_load"].ours.append(n / load["seconds"])
        for name in ("rank_of", "top_100", "percentile", "update"):
            lat = bench_ranked.BENCHMARKS[name](rl, sample, random.Random(1))
            rows[name].ours.append(1e6 / lat["mean"])
        del rl
        gc.collect()
        if wrapped is not None:
            client.flushall()
            theirs = bench_ranked.redis_suite(wrapped, ids, scores, sample, random.Random(1),
                                              operations=("rank_of", "top_100", "percentile", "update"),
                                              per_call_latency=False)
            rows["bulk_load"].redis.append(n / theirs["bulk_load"]["seconds"])
            for name in ("rank_of", "top_100", "percentile", "update"):
                rows[name].redis.append(1e6 / theirs[name]["pipelined"])
    return list(rows.values())


def part_uniques(sizes: Sizes, client: Any) -> list[Row]:
    adds = Row("uniques", "unique adds", "adds/s", True,
               "Engine.add_uniques_validated in-process, batches of 1,000 (5 time levels kept)",
               "PFADD of 1,000 members a command (one key, no time levels)")
    counts = Row("uniques", "unique count, one day", "counts/s", True,
                 f"UniqueSeries.count of a day of {sizes.unique_count_members:,} members (sketch)",
                 "PFCOUNT of one key, pipelines of 1,000")

    def once_adds() -> tuple[float, float | None]:
        if client is not None:
            client.flushall()
        rates = {name: value for name, value, _ in bench_uniques.measure_adds(sizes.unique_adds, client)}
        return (rates["Engine.add_uniques_validated, batches of 1000"],
                rates.get(bench_uniques.REDIS_ADDS))

    median_rounds(sizes.rounds, once_adds, adds)
    median_rounds(sizes.rounds, lambda: bench_uniques.count_rates(sizes.unique_count_members, client), counts)
    return [adds, counts]


def part_statshub(sizes: Sizes, client: Any) -> list[Row]:
    updates = bench_statshub.make_updates(sizes.stats_updates)
    http_updates = updates[: sizes.stats_http_updates]
    redis_how = "statshub's keys from redis-py, two pipelined round trips per update, 8 connections"
    inproc = Row("statshub", "statshub updates, in-process", "updates/s", True,
                 "Engine.stats_update, 16 concurrent writers", redis_how)
    http = Row("statshub", "statshub updates, HTTP", "updates/s", True,
               "POST /stats/<id> to pointspace serve, 8 keep-alive connections", redis_how)
    for _ in range(sizes.rounds):
        inproc.ours.append(bench_statshub.in_process(updates, 16))
        http.ours.append(bench_statshub.over_http(http_updates, 8)[0])
        if client is not None:
            theirs = bench_statshub.on_redis(client, updates, 8)
            inproc.redis.append(theirs)
            http.redis.append(theirs)
    return [inproc, http]


def _server_rss_growth(load: Callable[[str], None]) -> int:
    """RSS growth (bytes) of a fresh in-memory ``pointspace serve`` across ``load(url)``,
    after a short settle."""
    proc, url = start_pointspace()
    try:
        time.sleep(0.5)
        before = rss_bytes(proc.pid)
        load(url)
        time.sleep(1.0)
        return rss_bytes(proc.pid) - before
    finally:
        proc.terminate()
        proc.wait(30)


def _redis_memory_growth(load: Callable[[Any], None]) -> tuple[int, int] | None:
    """(used_memory, used_memory_rss) growth in bytes of a fresh redis-server across
    ``load(client)``; None without Redis."""
    with redis_server(install=True) as client:
        if client is None:
            return None
        before = client.info("memory")
        load(client)
        after = client.info("memory")
        return (after["used_memory"] - before["used_memory"],
                after["used_memory_rss"] - before["used_memory_rss"])


def part_memory(sizes: Sizes, client: Any) -> list[Row]:
    """Once each (memory does not need rounds): the same data in a fresh server each side."""
    n = sizes.memory_list
    ids, scores = bench_ranked.make_data(n, 0)
    elements = [{"id": int(i), "score": int(s)} for i, s in zip(ids.tolist(), scores.tolist(), strict=True)]

    def load_list(url: str) -> None:
        httpx.post(url + "/lists", json={"id": "mem", "set": "bench"}).raise_for_status()
        bodies = [orjson.dumps(elements[i : i + 10_000]) for i in range(0, n, 10_000)]
        send_all(url, [http_request(url, "PUT", "/lists/mem/elements", b) for b in bodies], 1)

    events = make_events(sizes.memory_events, 10_000)

    def load_events(url: str) -> None:
        post_all(url, "/api/events", [orjson.dumps(b) for b in batches(events, 1000)], "application/json", 2)

    rows = []
    for label, unit_n, ours_load, redis_load, redis_layout in (
        (f"leaderboard memory, {n:,} elements", n, load_list,
         lambda c: bench_ranked.redis_bulk_load(bench_ranked.RedisPy(0, c), "mem", ids, scores),
         "one sorted set"),
        (f"PSD counters memory, {sizes.memory_events:,} events", sizes.memory_events, load_events,
         lambda c: bench_ingest.run_redis(c, batches(events, 1000)), "PSD's hashes, 5 levels"),
    ):
        ours = _server_rss_growth(ours_load) / unit_n
        theirs = _redis_memory_growth(redis_load)
        how = "RSS growth of a fresh in-memory pointspace serve, bulk-loaded over HTTP, per item"
        rss = Row("memory", f"{label}: Redis RSS", "bytes/item", False, how,
                  f"used_memory_rss growth, {redis_layout}", ours=[ours])
        used = Row("memory", f"{label}: Redis used_memory", "bytes/item", False, how,
                   f"used_memory growth, {redis_layout}", ours=[ours])
        if theirs is not None:
            used.redis.append(theirs[0] / unit_n)
            rss.redis.append(theirs[1] / unit_n)
        rows += [rss, used]
    return rows


def part_http(sizes: Sizes, client: Any) -> list[Row]:
    """The request floor, 4 connections each side, one request per round trip."""
    threads = 4
    n = sizes.http_requests
    events = make_events(n, 1000, metrics=("steps",))
    ping = Row("http", "cheapest request: GET /health/ping vs PING", "requests/s", True,
               f"GET /health/ping (PSD's) to pointspace serve, {threads} keep-alive connections",
               f"PING, {threads} connections, one round trip each")
    write = Row("http", "one-event write: PSD /v1/write vs MULTI+5 HINCRBY", "requests/s", True,
                f"POST /v1/write (PSD's, diff mode), {threads} keep-alive connections",
                "MULTI, PSD's 5 HINCRBY, EXEC in one round trip (additive: no diff read)")
    read = Row("http", "one-user day sum: PSD /v1/query vs EVALSHA", "requests/s", True,
               f"GET /v1/query/<uid>/steps/all/<t1>/<t2>, {threads} keep-alive connections",
               "EVALSHA of PSD's script, one round trip each")
    day = events[0]["ts"] - events[0]["ts"] % 86400
    query_users = [e["user"] for e in events]
    redis_writes = []
    for e in events:
        request: list[list[Any]] = [["MULTI"]]
        for container, child in bench_ingest.psd_levels(e["ts"]):
            request.append(["HINCRBY", f"hz:1:{e['user']}:{container}", f"{child}:{e['atid']}:{e['aid']}", e["value"]])
        redis_writes.append(request + [["EXEC"]])
    spans = bench_counters.psd_requests_for_range(day, day + 86399)
    for _ in range(sizes.rounds):
        proc, url = start_pointspace()
        try:
            ping.ours.append(n / send_all(url, [http_request(url, "GET", "/health/ping")] * n, threads))
            write.ours.append(n / post_all(url, "/v1/write", bench_http.psd_singles(events), "application/json", threads))
            paths = [f"/v1/query/{u}/steps/all/{day}/{day + 86399}" for u in query_users]
            read.ours.append(n / send_all(url, [http_request(url, "GET", p) for p in paths], threads))
        finally:
            proc.terminate()
            proc.wait(30)
        if client is not None:
            client.flushall()
            port = client.connection_pool.connection_kwargs["port"]
            sha = client.script_load(bench_counters.PSD_SUM_LUA)
            ping.redis.append(n / bench_http.redis_round_trips(port, [[["PING"]]] * n, threads))
            write.redis.append(n / bench_http.redis_round_trips(port, redis_writes, threads))
            reads = [[["EVALSHA", sha, 0, *bench_counters.psd_script_args(1, u, spans)]] for u in query_users]
            read.redis.append(n / bench_http.redis_round_trips(port, reads, threads))
    return [ping, write, read]


PART_FUNCTIONS: dict[str, Callable[[Sizes, Any], list[Row]]] = {
    "ingest": part_ingest, "ranges": part_ranges, "ranked": part_ranked, "uniques": part_uniques,
    "statshub": part_statshub, "memory": part_memory, "http": part_http,
}


############################################################################################
# The machine and the report


def machine(redis_info: dict[str, Any] | None) -> dict[str, str]:
    """What this run ran on, read now."""
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = "?"
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        commit += " (with uncommitted changes)" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "?"
    import redis

    out = {
        "CPU": cpu,
        "cores": f"{os.cpu_count()} logical ({len(os.sched_getaffinity(0))} usable by this process)",
        "RAM": mem,
        "OS": platform.platform(),
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "redis-py": redis.__version__,
        "pointspace commit": commit,
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    if redis_info:
        out["Redis"] = f"{redis_info['redis_version']} ({redis_info.get('mem_allocator', '?')}, " \
                       f"{redis_info.get('arch_bits', '?')}-bit)"
    else:
        out["Redis"] = "not available: no Redis rows"
    return out


def fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def figure(values: list[float]) -> str:
    if not values:
        return "–"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt(med)
    return f"{fmt(med)} ({fmt(min(values))}–{fmt(max(values))})"


def write_report(rows: list[Row], info: dict[str, str], args: argparse.Namespace, seconds: float,
                 out: Path, chart: Path) -> None:
    lines = [
        "# pointspace beside Redis",
        "",
        f"Generated by `python bench/run.py{' --quick' if args.quick else ''}` on "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC in {seconds / 60:.1f} minutes; "
        f"medians of {args.rounds_used} rounds (min–max in brackets; memory once). Nothing here "
        "is asserted: rerun it on your own machine, quiet, for your own figures.",
        "",
        "## Machine",
        "",
        *(f"- {k}: {v}" for k, v in info.items()),
        f"- load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        "",
        f"![ratios]({chart.name})",
        "",
        "## Results",
        "",
        "Ratio > 1 means pointspace is better: throughput ours / Redis, latency and bytes "
        "Redis / ours.",
        "",
        "| workload | unit | pointspace | Redis | ratio |",
        "|---|---|---:|---:|---:|",
    ]
    for row in rows:
        ratio = row.ratio
        lines.append(f"| {row.name} | {row.unit} | {figure(row.ours)} | {figure(row.redis)} | "
                     f"{'–' if ratio is None else f'{ratio:.2f}x'} |")
    lines += ["", "## How each side ran", "", "| workload | pointspace | Redis |", "|---|---|---|"]
    lines += [f"| {row.name} | {row.ours_how} | {row.redis_how} |" for row in rows]
    lines += [
        "",
        "## Read this before quoting a ratio",
        "",
        "- In-process rows call pointspace's engine in the benchmark's own process; the Redis "
        "rows include redis-py building and parsing the commands and a loopback round trip per "
        "pipeline, which is what a Python application using Redis pays. The `http` rows put both "
        "behind a socket with one request per round trip.",
        "- PSD's Redis writes here are additive HINCRBYs without PSD's MULTI/EXEC, EXPIRE and "
        "diff-mode read (flattering Redis); the range sums use PSD's own aggregation script "
        "and decomposition, and every Redis sum was checked equal to ours.",
        "- Redis keeps one HyperLogLog per key; pointspace keeps unique counts at five time "
        "levels per name, so its adds do more work.",
        "- Redis is single-threaded per server and the client and server share this "
        "machine's cores with pointspace's own benchmark process.",
        "",
    ]
    out.write_text("\n".join(lines))


def draw_chart(rows: list[Row], info: dict[str, str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    shown = [r for r in rows if r.ratio is not None]
    if not shown:
        return
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.36 * len(shown)))
    names = [r.name for r in shown][::-1]
    ratios = [r.ratio for r in shown][::-1]
    colors = ["#2a9d5c" if x >= 1 else "#d1495b" for x in ratios]
    ax.barh(names, ratios, color=colors)
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=1)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
    lo, hi = min(ratios + [1.0]), max(ratios + [1.0])
    ax.set_xlim(lo / 2, hi * 3)
    for y, x in enumerate(ratios):
        ax.text(x * 1.08 if x >= 1 else x / 1.08, y, f"{x:.2g}x", va="center",
                ha="left" if x >= 1 else "right", fontsize=8)
    ax.set_xlabel("pointspace / Redis (log scale; > 1 = pointspace better: throughput ours/Redis, "
                  "latency and memory Redis/ours)", fontsize=8)
    ax.set_title(f"pointspace beside Redis {info.get('Redis', '').split(' ')[0]} -- "
                 f"{info['CPU']}, {os.cpu_count()} cores", fontsize=9)
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes on 2 cores)")
    parser.add_argument("--rounds", type=int, default=0, help="rounds per workload (default 3 quick, 5 full)")
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts of {', '.join(PARTS)}")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md")
    parser.add_argument("--chart", type=Path, default=ROOT / "bench" / "results.png")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.rounds:
        sizes = Sizes(**{**sizes.__dict__, "rounds": args.rounds})
    args.rounds_used = sizes.rounds
    parts = [p for p in args.only.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"--only takes {', '.join(PARTS)}; unknown: {', '.join(unknown)}")
    t0 = time.perf_counter()
    rows: list[Row] = []
    with redis_server(install=True) as client:
        info = machine(client.info("server") | client.info("memory") if client is not None else None)
        print("\n".join(f"{k}: {v}" for k, v in info.items()), flush=True)
        for part in parts:
            started = time.perf_counter()
            print(f"\n== {part}", flush=True)
            new = PART_FUNCTIONS[part](sizes, client)
            for row in new:
                ratio = row.ratio
                print(f"  {row.name:<58} ours {figure(row.ours):>28}  redis {figure(row.redis):>28} "
                      f"{row.unit:<11} {'' if ratio is None else f'{ratio:6.2f}x'}", flush=True)
            print(f"  ({time.perf_counter() - started:.0f} s)", flush=True)
            rows += new
    write_report(rows, info, args, time.perf_counter() - t0, args.out, args.chart)
    draw_chart(rows, info, args.chart)
    print(f"\nwrote {args.out} and {args.chart} in {(time.perf_counter() - t0) / 60:.1f} minutes")


if __name__ == "__main__":
    main()
