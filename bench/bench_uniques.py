"""Unique counts (engine/uniques.py) and the Narrative API, against Redis HyperLogLog and a
bare Hypercorn-trio app, side by side in one run. Nothing is asserted.

1. **Adds in-process**: ``UniqueSeries.apply`` (the pure state, five kept levels) and
   ``Engine.add_uniques_validated`` (batches of 1,000 through the log and the actors), against
   Redis ``PFADD`` of the same members (pipelines of 1,000; one level, one key).
2. **Sketch error against exact counts** at each ``--sizes`` (default 10k, 100k, 1M distinct
   random 64-bit members in one bucket, past the exact limit): our HLL_4 lg_k 14 estimate
   with its 2-sigma bounds, and Redis ``PFCOUNT`` (its HLL, 2**14 registers, 0.81% RSE),
   with the bytes each keeps (our compact sketch; Redis ``STRLEN`` of the key) and count
   reads per second.
3. **Over HTTP** (``bench/common.py``'s raw-socket keep-alive client on ``--threads``
   connections): ``POST /api/uniques`` batches of 1,000 in members/s, the
   Narrative ``POST /analytics`` and the current-hour ``GET /analytics`` in requests/s --
   each against the bare ASGI app on the same Hypercorn trio worker (the floor: what any
   request costs before pointspace does anything).

4. **Expensive reads** (``--expensive``, alone): the red-team's requests over a series with one
   member at the first and one at the last second (year 9999) -- a 10,000-period breakdown and
   queries of 100 and 1,000 such series over the whole range -- each timed with the worst
   ``/healthz`` latency seen while it ran (the loop's stall). The baseline is the same
   requests on the code before the per-request bucket budget (run it from that checkout);
   a refused request (400) is the expected answer where its decomposition is over budget.

Usage: ``python bench/bench_uniques.py [--sizes 10000,100000,1000000] [--requests 5000]``,
``python bench/bench_uniques.py --expensive``.
Redis figures need ``redis-server`` on PATH (``apt-get install -y redis-server``) and the
``redis`` package (``pip install -e '.[bench]'``); without them those rows are skipped.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    BASE_TS,
    http_request,
    post_all,
    redis_server,
    send_all,
    start_bare,
    start_pointspace,
    table,
)
from engine.engine import Engine  # noqa: E402
from engine.timebuckets import DAY  # noqa: E402
from engine.uniques import UniqueConfig, UniqueSeries, UniqueSettings  # noqa: E402


def random_members(n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.getrandbits(64) for _ in range(n)]


############################################################################################
# 1. Adds in-process


REDIS_ADDS = "redis PFADD, pipelines of 1000"


def measure_adds(n: int, client: Any) -> list[tuple[str, float, str]]:
    """Adds/s of ``n`` random members (over a day's seconds): the pure state, the Engine in
    batches of 1,000, and (with a client) Redis PFADD of 1,000 members per command."""
    members = random_members(n, 1)
    items = [(BASE_TS + i % 86400, key) for i, key in enumerate(members)]
    rows: list[tuple[str, float, str]] = []

    series = UniqueSeries(UniqueConfig())
    t0 = time.perf_counter()
    series.apply(items)
    rows.append(("UniqueSeries.apply, 5 levels", n / (time.perf_counter() - t0), "adds/s"))

    async def through_engine() -> float:
        async with Engine.open(uniques=UniqueSettings()) as engine:
            batch = [("bench", ts, key) for ts, key in items]
            t0 = time.perf_counter()
            for i in range(0, n, 1000):
                await engine.add_uniques_validated(batch[i : i + 1000])
            return time.perf_counter() - t0

    rows.append(("Engine.add_uniques_validated, batches of 1000", n / trio.run(through_engine), "adds/s"))
    if client is not None:
        client.delete("bench")
        t0 = time.perf_counter()
        for i in range(0, n, 1000):
            client.pfadd("bench", *members[i : i + 1000])
        rows.append((REDIS_ADDS, n / (time.perf_counter() - t0), "adds/s"))
    return rows


def adds_in_process(n: int, client: Any) -> None:
    rows = measure_adds(n, client)
    baseline = REDIS_ADDS
    table(f"Unique adds in-process, {n:,} random 64-bit members", rows,
          baseline if client is not None else rows[0][0])


############################################################################################
# 2. Sketch error against exact counts


def count_rates(n: int, client: Any, reps: int = 2000) -> tuple[float, float | None]:
    """Counts/s over ``n`` distinct members in one day: ours ``UniqueSeries.count`` of the
    day (past the exact limit: the sketch), and Redis ``PFCOUNT`` of one key in pipelines of
    1,000 (None without a client)."""
    members = random_members(n, n)
    series = UniqueSeries(UniqueConfig())
    series.apply([(BASE_TS + i % 86400, key) for i, key in enumerate(members)])
    t0 = time.perf_counter()
    for _ in range(reps):
        series.count(BASE_TS, BASE_TS + 86399)
    ours = reps / (time.perf_counter() - t0)
    if client is None:
        return ours, None
    client.delete("rate")
    for i in range(0, n, 1000):
        client.pfadd("rate", *members[i : i + 1000])
    t0 = time.perf_counter()
    for start in range(0, reps, 1000):
        pipe = client.pipeline(transaction=False)
        for _ in range(min(1000, reps - start)):
            pipe.pfcount("rate")
        pipe.execute()
    return ours, reps / (time.perf_counter() - t0)


def sketch_error(sizes: list[int], client: Any) -> None:
    print("\nSketch error against exact counts (one bucket; ours HLL_4 lg_k 14, 2-sigma bounds)")
    print(f"  {'members':>10}  {'ours estimate':>13} {'error':>8} {'bounds':>24} {'bytes':>7} "
          f"{'counts/s':>9}   {'redis PFCOUNT':>13} {'error':>8} {'bytes':>7} {'counts/s':>9}")
    for n in sizes:
        members = random_members(n, n)
        exact = len(set(members))
        series = UniqueSeries(UniqueConfig(levels=(DAY,), exact_limit=3000))
        series.apply([(BASE_TS, key) for key in members])
        result = series.count(BASE_TS, BASE_TS)
        plain = series.to_plain()
        assert plain is not None
        size = sum(len(cell[2]) for cell in plain[4])
        reps = 200
        t0 = time.perf_counter()
        for _ in range(reps):
            series.count(BASE_TS, BASE_TS)
        ours_rate = reps / (time.perf_counter() - t0)
        line = (f"  {n:>10,}  {result.count:>13,} {100 * (result.count - exact) / exact:>7.2f}% "
                f"{f'[{result.lower:,.0f}, {result.upper:,.0f}]':>24} {size:>7,} {ours_rate:>9,.0f}")
        if client is not None:
            client.delete("err")
            for i in range(0, n, 1000):
                client.pfadd("err", *members[i : i + 1000])
            estimate = client.pfcount("err")
            t0 = time.perf_counter()
            for _ in range(reps):
                client.pfcount("err")
            redis_rate = reps / (time.perf_counter() - t0)
            line += (f"   {estimate:>13,} {100 * (estimate - exact) / exact:>7.2f}% "
                     f"{client.strlen('err'):>7,} {redis_rate:>9,.0f}")
        print(line)


############################################################################################
# 3. Over HTTP


def over_http(n_members: int, n_requests: int, threads: int) -> None:
    now_ms = int(time.time() * 1000)
    members = random_members(n_members, 2)
    bodies = [
        orjson.dumps([{"name": "http", "member": m, "ts": BASE_TS + j} for j, m in
                      enumerate(members[i : i + 1000])])
        for i in range(0, n_members, 1000)
    ]
    narrative_posts = [
        f"/analytics?timestamp={now_ms}&user=user{i % 5000}&event={('click', 'impression')[i % 2]}"
        for i in range(n_requests)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        bare, bare_url = start_bare(tmp)
        try:
            floor_batch = len(members) / post_all(bare_url, "/", bodies, "application/json", threads)
            floor_post = n_requests / send_all(
                bare_url, [http_request(bare_url, "POST", p) for p in narrative_posts], threads)
            floor_get = n_requests / send_all(
                bare_url, [http_request(bare_url, "GET", "/") for _ in range(n_requests)], threads)
        finally:
            bare.terminate()
            bare.wait(10)
        proc, url = start_pointspace(str(Path(tmp, "data")), "everysec")
        try:
            adds = len(members) / post_all(url, "/api/uniques", bodies, "application/json", threads)
            posts = n_requests / send_all(
                url, [http_request(url, "POST", p) for p in narrative_posts], threads, ok=(204,))
            gets = n_requests / send_all(
                url, [http_request(url, "GET", f"/analytics?timestamp={now_ms}") for _ in range(n_requests)],
                threads)
        finally:
            proc.terminate()
            proc.wait(30)
    floor = "bare ASGI on hypercorn-trio (floor)"
    table(f"POST /api/uniques over HTTP, {n_members:,} members in batches of 1000, {threads} connections",
          [(floor, floor_batch, "members/s"), ("pointspace POST /api/uniques", adds, "members/s")], floor)
    table(f"Narrative POST /analytics, {n_requests:,} requests (everysec log), {threads} connections",
          [(floor, floor_post, "requests/s"), ("pointspace POST /analytics", posts, "requests/s")], floor)
    table(f"Narrative current-hour GET /analytics (after {n_requests:,} events), {threads} connections",
          [(floor, floor_get, "requests/s"), ("pointspace GET /analytics", gets, "requests/s")], floor)


############################################################################################
# 4. Expensive reads (the red-team's requests)


def _timed_with_health(url: str, method: str, path: str, body: Any = None) -> tuple[int, float, int, float]:
    """(status, seconds, body bytes, worst /healthz seconds while it ran)."""
    import threading

    import httpx

    done = threading.Event()
    worst = [0.0]

    def probe() -> None:
        with httpx.Client(base_url=url, timeout=120) as c:
            while not done.is_set():
                t0 = time.perf_counter()
                c.get("/healthz")
                worst[0] = max(worst[0], time.perf_counter() - t0)
                time.sleep(0.05)

    thread = threading.Thread(target=probe)
    thread.start()
    try:
        with httpx.Client(base_url=url, timeout=300) as c:
            t0 = time.perf_counter()
            r = c.request(method, path, json=body)
            elapsed = time.perf_counter() - t0
    finally:
        done.set()
        thread.join()
    return r.status_code, elapsed, len(r.content), worst[0]


def expensive_reads() -> None:
    import httpx

    from engine.timebuckets import MAX_TS

    proc, url = start_pointspace("", "everysec")
    try:
        with httpx.Client(base_url=url, timeout=60) as c:
            sparse = [{"name": "w", "member": 1, "ts": 0}, {"name": "w", "member": 2, "ts": MAX_TS}]
            sparse += [{"name": f"q{i}", "member": m, "ts": ts}
                       for i in range(1000) for m, ts in ((1, 0), (2, MAX_TS))]
            assert c.post("/api/uniques", json=sparse).status_code == 200
            dense = [{"name": "m", "member": i % 500, "ts": BASE_TS + 60 * i + 7} for i in range(10_000)]
            assert c.post("/api/uniques", json=dense).status_code == 200
        requests = [
            ("breakdown, 10,000 periods", "GET",
             f"/api/uniques/w/breakdown?t1=0&t2={MAX_TS}&step=25340231", None),
            ("query, 100 names", "POST", "/api/uniques/query",
             {"names": [f"q{i}" for i in range(100)], "t1": 1, "t2": MAX_TS - 1}),
            ("query, 1,000 names", "POST", "/api/uniques/query",
             {"names": [f"q{i}" for i in range(1000)], "t1": 1, "t2": MAX_TS - 1}),
            ("query, 12 names (under budget)", "POST", "/api/uniques/query",
             {"names": [f"q{i}" for i in range(12)], "t1": 1, "t2": MAX_TS - 1}),
            ("count, one series, 0 .. 9999-12-31", "GET", f"/api/uniques/w?t1=1&t2={MAX_TS - 1}", None),
            ("breakdown, 8,030 years", "GET", f"/api/uniques/w/breakdown?t1=0&t2={MAX_TS}&step=year", None),
            ("breakdown, 9,999 minutes, dense", "GET",
             f"/api/uniques/m/breakdown?t1={BASE_TS + 30}&t2={BASE_TS + 30 + 9999 * 60 - 1}&step=60&offset=30",
             None),
        ]
        print("\nExpensive reads (sparse series: members at 1970-01-01 and 9999-12-31)")
        print(f"  {'request':<36} {'status':>6} {'seconds':>8} {'bytes':>10} {'worst /healthz s':>17}")
        for label, method, path, body in requests:
            status, elapsed, size, worst = _timed_with_health(url, method, path, body)
            print(f"  {label:<36} {status:>6} {elapsed:>8.3f} {size:>10,} {worst:>17.3f}")
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--adds", type=int, default=200_000, help="members for the add rates")
    parser.add_argument("--requests", type=int, default=5000, help="Narrative requests per kind")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--expensive", action="store_true", help="only the expensive reads (4.)")
    args = parser.parse_args()
    if args.expensive:
        expensive_reads()
        return
    sizes = [int(s) for s in args.sizes.split(",") if s]
    with redis_server() as client:
        if client is not None:
            print(f"(redis-server {client.info('server').get('redis_version', '?')})")
        adds_in_process(args.adds, client)
        sketch_error(sizes, client)
    over_http(args.adds // 2, args.requests, args.threads)


if __name__ == "__main__":
    main()
