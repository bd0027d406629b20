"""statshub-style updates/s: pointspace in-process and over HTTP, and statshub's own way on Redis.

Workload (Lantern's, as statshub saw it): ids report one update each, every update with 3
dimensions (``country`` of 50, ``os`` of 5, ``user`` of 2,000) and one stat of each kind:
``counters`` (the id's running total), ``increments`` (+1), ``gauges`` (a 0..9 value),
``members`` (one of 5,000 sites) and ``multiMembers`` (two of them). 1,000 ids.

* in-process: ``Engine.stats_update`` on an in-memory engine, one update at a time and with
  16 concurrent writers (different ids proceed in parallel; one id's updates are serialised
  by its lock);
* HTTP: ``POST /stats/<id>`` against a real ``pointspace serve`` (in memory) from 8 client
  threads with keep-alive connections (``bench/common.py``'s raw-socket client: httpx would
  spend more CPU per request than the server);
* Redis, statshub's key layout (``counter:detail:<id>:<stat>``, ``counter:dim:<name>:<value>:
  <stat>``, ``gauge:...:<periodStart>`` with EXPIREAT, ``member:...`` sets, ``key:*`` and
  ``dim`` / ``dim:<name>`` registries) from Python with redis-py, each update in two
  pipelined round trips (GETSET of the details, then the roll-ups from the old values:
  statshub's Go code took five), from 1 and from 8 connections.

A second table measures the stream's history on a wide dimension (``--stream-values``
values, one counter each, written over the last week): 100 ``*`` streams opened at once,
sharing one history (what ``/stream`` does) against each computing its own, and the longest
time the event loop went without serving another task meanwhile (a heartbeat task's
largest gap between 1 ms sleeps).

Nothing is asserted; figures and ratios print side by side (``bench/common.py``).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import http_request, redis_server, run_threads, send_all, start_pointspace, table  # noqa: E402
from engine.engine import Engine  # noqa: E402

IDS = 1000
PERIOD = 360


def make_updates(n: int, seed: int = 0) -> list[tuple[str, dict[str, Any]]]:
    rng = random.Random(seed)
    totals = [0] * IDS
    out = []
    for _ in range(n):
        i = rng.randrange(IDS)
        totals[i] += rng.randrange(1, 10_000)
        body = {
            "dims": {"country": f"c{i % 50}", "os": f"os{i % 5}", "user": f"user{i % 2000}"},
            "counters": {"bytesGiven": totals[i]},
            "increments": {"requests": 1},
            "gauges": {"online": rng.randrange(10)},
            "members": {"sites": f"site{rng.randrange(5000)}"},
            "multiMembers": {"pairs": [f"site{rng.randrange(5000)}", f"site{rng.randrange(5000)}"]},
        }
        out.append((f"id{i}", body))
    return out


############################################################################################
# pointspace


def in_process(updates: list[tuple[str, dict[str, Any]]], writers: int) -> float:
    async def run() -> float:
        async with Engine.open() as engine:
            chunks = [updates[w::writers] for w in range(writers)]

            async def write(chunk: list[tuple[str, dict[str, Any]]]) -> None:
                for stat_id, body in chunk:
                    await engine.stats_update(stat_id, body)

            t0 = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for chunk in chunks:
                    nursery.start_soon(write, chunk)
            return len(updates) / (time.perf_counter() - t0)

    return trio.run(run)


def over_http(updates: list[tuple[str, dict[str, Any]]], threads: int) -> tuple[float, float]:
    """Updates/s, and the same threads' ``GET /health/ping``/s on the same server (the
    framework's ceiling on this machine: what a request costs before any work), both from
    ``bench/common.py``'s raw-socket keep-alive client."""
    proc, url = start_pointspace()
    try:
        posts = [http_request(url, "POST", f"/stats/{stat_id}", orjson.dumps(body)) for stat_id, body in updates]
        pings = [http_request(url, "GET", "/health/ping") for _ in updates]
        return len(updates) / send_all(url, posts, threads), len(updates) / send_all(url, pings, threads)
    finally:
        proc.terminate()
        proc.wait(30)


############################################################################################
# statshub's way, on Redis


def redis_update(client: Any, stat_id: str, body: dict[str, Any], now: float) -> None:
    """One update as statshub's ``StatsUpdate.write`` made it, in two pipelined round trips."""
    period = int(now) - int(now) % PERIOD
    expire = period + 3 * PERIOD
    dims = {k.lower(): v.lower() for k, v in body["dims"].items()}
    counters, increments, gauges = body["counters"], body["increments"], body["gauges"]
    first = client.pipeline(transaction=False)
    for stat, value in counters.items():
        first.getset(f"counter:detail:{stat_id}:{stat}", value)
    for stat, value in gauges.items():
        key = f"gauge:detail:{stat_id}:{stat}:{period}"
        first.getset(key, value)
        first.expireat(key, expire)
    replies = first.execute()
    second = client.pipeline(transaction=False)
    olds = iter(replies)
    for stat, value in counters.items():
        old = next(olds)
        delta = value - int(old or 0)
        for name, dim_value in dims.items():
            second.incrby(f"counter:dim:{name}:{dim_value}:{stat}", delta)
    for stat, delta in increments.items():
        second.incrby(f"counter:detail:{stat_id}:{stat}", delta)
        for name, dim_value in dims.items():
            second.incrby(f"counter:dim:{name}:{dim_value}:{stat}", delta)
    for stat, value in gauges.items():
        old = next(olds)
        next(olds)  # EXPIREAT's reply
        delta = value - int(old or 0)
        for name, dim_value in dims.items():
            key = f"gauge:dim:{name}:{dim_value}:{stat}:{period}"
            second.incrby(key, delta)
            second.expireat(key, expire)
    members = {s: [m] for s, m in body["members"].items()} | body["multiMembers"]
    for stat, items in members.items():
        second.sadd(f"member:detail:{stat_id}:{stat}", *items)
        for name, dim_value in dims.items():
            second.sadd(f"member:dim:{name}:{dim_value}:{stat}", *items)
    second.sadd("key:counter", *counters, *increments)
    second.sadd("key:gauge", *gauges)
    second.sadd("key:member", *members)
    for name, dim_value in dims.items():
        second.sadd("dim", name)
        second.sadd(f"dim:{name}", dim_value)
    second.execute()


def on_redis(client: Any, updates: list[tuple[str, dict[str, Any]]], connections: int) -> float:
    import redis

    client.flushall()
    port = client.connection_pool.connection_kwargs["port"]
    chunks = [updates[c::connections] for c in range(connections)]

    def send(chunk: list[tuple[str, dict[str, Any]]]) -> None:
        own = redis.Redis(host="127.0.0.1", port=port)
        for stat_id, body in chunk:
            redis_update(own, stat_id, body, time.time())
        own.close()

    return len(updates) / run_threads(send, chunks)


def stream_histories(values: int, streams: int, shared: bool) -> tuple[float, float]:
    """Seconds for ``streams`` concurrent ``*`` histories of a ``values``-wide dimension, and
    the event loop's longest stall meanwhile (seconds)."""
    from web.compat.statshub import MAX_STREAM_VALUES, history_ranges

    async def run() -> tuple[float, float]:
        async with Engine.open() as engine:
            now = int(time.time())
            for i in range(values):
                for back in (6 * 86400, 3 * 86400, 3600):
                    await engine.stats_update(f"id{i}", {"dims": {"country": f"c{i}"}, "increments": {"bytes": i}},
                                              now=now - back)
            ranges = history_ranges(now)
            stall = 0.0

            async def heartbeat() -> None:
                nonlocal stall
                while True:
                    t = time.perf_counter()
                    await trio.sleep(0.001)
                    stall = max(stall, time.perf_counter() - t - 0.001)

            async def one() -> None:
                if shared:
                    await engine.stats_stream_history("country", "*", "counter", "bytes", ranges, now,
                                                      limit=MAX_STREAM_VALUES)
                else:  # each stream its own computation (still read in rounds)
                    await engine._stream_history("country", "*", "counter", "bytes", ranges, now, MAX_STREAM_VALUES)

            t0 = time.perf_counter()
            async with trio.open_nursery() as outer:
                outer.start_soon(heartbeat)
                async with trio.open_nursery() as nursery:
                    for _ in range(streams):
                        nursery.start_soon(one)
                outer.cancel_scope.cancel()
            return time.perf_counter() - t0, stall

    return trio.run(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=20_000)
    parser.add_argument("--http-updates", type=int, default=5_000)
    parser.add_argument("--stream-values", type=int, default=3_000)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--skip-updates", action="store_true", help="only the stream table")
    args = parser.parse_args()
    shared, shared_stall = stream_histories(args.stream_values, args.streams, shared=True)
    own, own_stall = stream_histories(args.stream_values, args.streams, shared=False)
    table(f"stream history, {args.streams} '*' streams at once on {args.stream_values:,} values",
          [("each stream its own history", args.streams / own, "streams/s"),
           ("shared history (/stream)", args.streams / shared, "streams/s")],
          "each stream its own history")
    print(f"  longest event-loop stall meanwhile: own {own_stall * 1000:.1f} ms, shared {shared_stall * 1000:.1f} ms")
    if args.skip_updates:
        return
    updates = make_updates(args.updates)
    posts, pings = over_http(updates[: args.http_updates], 8)
    rows = [
        ("pointspace in-process, 1 writer", in_process(updates, 1), "updates/s"),
        ("pointspace in-process, 16 writers", in_process(updates, 16), "updates/s"),
        ("pointspace HTTP POST /stats/<id>, 8 threads", posts, "updates/s"),
        ("  (same server: GET /health/ping, 8 threads)", pings, "requests/s"),
    ]
    with redis_server() as client:
        if client is not None:
            version = client.info("server")["redis_version"]
            rows.append((f"redis {version} statshub way, 1 connection", on_redis(client, updates, 1), "updates/s"))
            rows.append((f"redis {version} statshub way, 8 connections", on_redis(client, updates, 8), "updates/s"))
            baseline = f"redis {version} statshub way, 1 connection"
        else:
            baseline = "pointspace in-process, 1 writer"
    table(f"statshub updates (3 dims, 5 stat kinds; {args.updates:,} updates, HTTP {args.http_updates:,})",
          rows, baseline)


if __name__ == "__main__":
    main()
