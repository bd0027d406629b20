"""Benchmark for engine/ranked/: the pure RankedList, in-process, against a Redis sorted set.

Run it from the repository root::

    .venv/bin/python bench/bench_ranked.py --sizes 1000000,10000000

For each size it bulk-loads that many elements (random u64-spread ids, scores in 0..10**9, so few
ties), then times single operations on random existing elements:

* ``bulk_load``    -- ``RankedList.load_arrays`` from unsorted arrays (time, and bytes per element
                      retained, measured with tracemalloc on a second load).
* ``rank_of``      -- rank by id.
* ``get``          -- element by id, with its rank.
* ``update``       -- ``upsert`` with a random new score: the worst case, the row changes block.
* ``update_small`` -- ``upsert`` adding 1..100 to the score: the common leaderboard case.
* ``range_100``    -- ``range_from_top(random start, 100)``.
* ``top_100``      -- ``range_from_top(0, 100)``.
* ``percentile``   -- ``percentile(random pct)``.
* ``neighbours``   -- ``neighbours(id, 5)`` (RankDB's GET element with ``range=5``).
* ``mixed``        -- a RankDB-like read-heavy mix (like sortedcontainers' "Ranking" workload):
                      40% get + neighbours(5), 25% small update, 15% rank_of, 10% range of 25,
                      10% percentile.

Latencies are per call, p50 / p99 / max, from ``time.perf_counter_ns`` around each call.

If a ``redis-server`` binary is on PATH (``apt-get install -y redis-server``) the script starts
one on 127.0.0.1 on a free port, runs the same operations on a sorted set (``ZADD``,
``ZREVRANK``, ``ZSCORE`` + ``ZREVRANK``, ``ZREVRANGE``, ``ZCARD`` + ``ZREVRANGE``), prints the
figures side by side with ratios, and shuts it down. It uses the ``redis`` package when
importable and a minimal RESP client otherwise. Redis is measured two ways: one call per round
trip (what a client sees, loopback latency included) and pipelined in batches of 1000 (close to
the server's own cost per operation). Its memory is ``INFO memory`` ``used_memory`` growth.

Caveats, in the spirit of sortedcontainers' benchmark pages: the data is synthetic; the machine
is small (2 cores) and shared, so run it twice and take the quieter run; Redis orders equal
scores by member bytes, not by tie-breaker / update time / id; Redis scores are doubles, exact
only up to 2**53 (the scores here stay below 10**9).
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import shutil
import socket
import statistics as stats
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.ranked import DEFAULT_LOAD, RankedList  # noqa: E402

NOW = 1_700_000_000
BENCHMARKS: dict[str, Callable[..., dict[str, float]]] = {}


def register(fn: Callable[..., dict[str, float]]) -> Callable[..., dict[str, float]]:
    BENCHMARKS[fn.__name__] = fn
    return fn


###################################################################################################
# Timing helpers
###################################################################################################


def latencies(calls: Sequence[Callable[[], object]]) -> dict[str, float]:
    """Run each zero-argument call once; per-call latency percentiles in microseconds."""
    gc.collect()
    gc.disable()  # a collection in the middle of one call is real, but not what we measure here
    try:
        pc = time.perf_counter_ns
        samples = []
        for call in calls:
            t0 = pc()
            call()
            samples.append(pc() - t0)
    finally:
        gc.enable()
    samples.sort()
    n = len(samples)
    return {
        "mean": stats.fmean(samples) / 1000,
        "p50": samples[n // 2] / 1000,
        "p99": samples[min(n - 1, n * 99 // 100)] / 1000,
        "max": samples[-1] / 1000,
    }


def make_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    # Distinct ids spread over the u64 range: an odd multiplier is a bijection mod 2**64.
    ids = rng.permutation(n).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(12345)
    scores = rng.integers(0, 10**9, n, dtype=np.uint64)
    return ids, scores


###################################################################################################
# pointspace benchmarks
###################################################################################################


@register
def bulk_load(
    ids: np.ndarray, scores: np.ndarray, load: int
) -> tuple[RankedList, dict[str, float]]:
    gc.collect()
    rl = RankedList(load)
    t0 = time.perf_counter()
    rl.load_arrays(ids, scores, None, NOW)
    seconds = time.perf_counter() - t0
    # Memory: load again under tracemalloc; what stays allocated is the structure itself.
    del rl
    gc.collect()
    tracemalloc.start()
    rl = RankedList(load)
    rl.load_arrays(ids, scores, None, NOW)
    retained, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    n = len(ids)
    st = rl.statistics()
    return rl, {
        "seconds": seconds,
        "bytes_per_element": retained / n,
        "peak_bytes_per_element": peak / n,
        "estimate_bytes_per_element": st.bytes_per_element,
        "blocks": st.blocks,
    }


@register
def rank_of(rl: RankedList, sample: list[int], rng: random.Random) -> dict[str, float]:
    return latencies([partial(rl.rank_of, i) for i in sample])


@register
def get(rl: RankedList, sample: list[int], rng: random.Random) -> dict[str, float]:
    return latencies([partial(rl.get, i) for i in sample])


@register
def update(rl: RankedList, sample: list[int], rng: random.Random) -> dict[str, float]:
    return latencies(
        [partial(rl.upsert, i, rng.randrange(10**9), 0, None, NOW + 1) for i in sample]
    )


@register
def update_small(rl: RankedList, sample: list[int], rng: random.Random) -> dict[str, float]:
    scores = {i: rl.get(i).score for i in sample}
    calls = []
    for i in sample:
        scores[i] += rng.randrange(1, 101)
        calls.append(partial(rl.upsert, i, scores[i], 0, None, NOW + 2))
    return latencies(calls)


@register
def range_100(rl: RankedList, sample: list[int], rng: random.Random) -> dict[str, float]:
    n = len(rl)
    return latencies([partial(rl.range_from_top, rng.randrange(n - 100), 100) for _ in sample])


@register
def top_100(rl: RankedList, sample: list[int], rng: random.Random) -> dict[str, float]:
    return latencies([partial(rl.range_from_top, 0, 100) for _ in sample])


@register
def percentile(rl: RankedList, sample: list[int], rng: random.Random) -> dict[str, float]:
    return latencies([partial(rl.percentile, rng.uniform(0, 100)) for _ in sample])


@register
def neighbours(rl: RankedList, sample: list[int], rng: random.Random) -> dict[str, float]:
    return latencies([partial(rl.neighbours, i, 5) for i in sample])


@register
def mixed(rl: RankedList, sample: list[int], rng: random.Random) -> dict[str, float]:
    n = len(rl)

    def view(i: int) -> object:  # GET element?range=5
        return rl.get(i), rl.neighbours(i, 5)

    def bump(i: int, delta: int) -> object:  # read-modify-write of a score
        return rl.upsert(i, rl.get(i).score + delta, 0, None, NOW)

    calls: list[Callable[[], object]] = []
    for i in sample:
        roll = rng.random()
        if roll < 0.40:
            calls.append(partial(view, i))
        elif roll < 0.65:
            calls.append(partial(bump, i, rng.randrange(1, 101)))
        elif roll < 0.80:
            calls.append(partial(rl.rank_of, i))
        elif roll < 0.90:
            calls.append(partial(rl.range_from_top, rng.randrange(n - 25), 25))
        else:
            calls.append(partial(rl.percentile, rng.uniform(0, 100)))
    return latencies(calls)


###################################################################################################
# Redis
###################################################################################################


class MiniRedis:
    """Just enough RESP2 to send commands and pipelines (used when ``redis`` isn't installed)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")

    @staticmethod
    def encode(args: Sequence[Any]) -> bytes:
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        return b"".join(out)

    def read(self) -> Any:
        line = self.file.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self.file.read(size + 2)
            return data[:-2]
        if kind == b"*":
            size = int(rest)
            return None if size < 0 else [self.read() for _ in range(size)]
        raise RuntimeError(f"unexpected RESP reply {line!r}")

    def call(self, *args: Any) -> Any:
        self.sock.sendall(self.encode(args))
        return self.read()

    def pipe(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        self.sock.sendall(b"".join(self.encode(c) for c in commands))
        return [self.read() for _ in commands]

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class RedisPy:
    """The same two methods on top of the ``redis`` package."""

    def __init__(self, port: int, client: Any = None) -> None:
        """A client on ``port``, or wrap an existing ``redis.Redis`` (``client``)."""
        import redis  # type: ignore[import-not-found]

        self.r = client if client is not None else redis.Redis(host="127.0.0.1", port=port)

    def call(self, *args: Any) -> Any:
        return self.r.execute_command(*args)

    def pipe(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        p = self.r.pipeline(transaction=False)
        for c in commands:
            p.execute_command(*c)
        return p.execute()

    def close(self) -> None:
        self.r.close()


class RedisServer:
    """A redis-server we start on a free loopback port and always shut down."""

    def __init__(self, binary: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.dir = tempfile.mkdtemp(prefix="bench-ranked-redis-")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                probe = MiniRedis(self.port)
                probe.call("PING")
                probe.close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        try:
            self.client: MiniRedis | RedisPy = RedisPy(self.port)
            self.client_name = "redis-py"
        except ImportError:
            self.client = MiniRedis(self.port)
            self.client_name = "built-in RESP client (redis package not installed)"
        self.version = self.info("server").get("redis_version", "?")

    def info(self, section: str) -> dict[str, str]:
        return redis_info(self.client, section)

    def stop(self) -> None:
        try:
            if self.proc.poll() is None:
                try:
                    MiniRedis(self.port).call("SHUTDOWN", "NOSAVE")
                except (OSError, RuntimeError):
                    pass
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.terminate()
                    self.proc.wait(timeout=10)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def redis_info(client: MiniRedis | RedisPy, section: str) -> dict[str, str]:
    """``INFO section`` as a dict of strings, from either client."""
    raw = client.call("INFO", section)
    if isinstance(raw, dict):  # redis-py parses INFO into a dict
        return {k: str(v) for k, v in raw.items()}
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return dict(
        line.split(":", 1)
        for line in text.splitlines()
        if ":" in line and not line.startswith("#")
    )


def redis_bulk_load(c: MiniRedis | RedisPy, key: str, ids: np.ndarray, scores: np.ndarray) -> float:
    """ZADD every (score, id) to ``key``, 1000 members a command, 50 commands a pipeline;
    seconds taken."""
    n = len(ids)
    id_list = ids.tolist()
    score_list = scores.tolist()
    t0 = time.perf_counter()
    batch = 1000
    commands = []
    for start in range(0, n, batch):
        cmd: list[Any] = ["ZADD", key]
        for s, i in zip(
            score_list[start : start + batch], id_list[start : start + batch], strict=True
        ):
            cmd += (s, i)
        commands.append(cmd)
        if len(commands) == 50:
            c.pipe(commands)
            commands = []
    if commands:
        c.pipe(commands)
    return time.perf_counter() - t0


REDIS_OPERATIONS = (
    "rank_of", "get", "update", "update_small", "range_100", "top_100", "percentile", "neighbours",
)


def redis_suite(
    c: MiniRedis | RedisPy,
    ids: np.ndarray,
    scores: np.ndarray,
    sample: list[int],
    rng: random.Random,
    operations: Sequence[str] = REDIS_OPERATIONS,
    per_call_latency: bool = True,
) -> dict[str, dict[str, float]]:
    """The same operations on a Redis sorted set: ``bulk_load`` (pipelined ZADD of 1000
    members, 50 to a pipeline; seconds and ``used_memory`` growth per element), then each of
    ``operations`` on ``sample``: per-call latency percentiles (one round trip each, skipped
    without ``per_call_latency``) and ``pipelined``, microseconds per operation in pipelines of 1000."""
    key = "bench:ranked"
    c.call("DEL", key)
    before = int(redis_info(c, "memory")["used_memory"])
    n = len(ids)
    load_s = redis_bulk_load(c, key, ids, scores)
    after = int(redis_info(c, "memory")["used_memory"])
    out: dict[str, dict[str, float]] = {
        "bulk_load": {"seconds": load_s, "bytes_per_element": (after - before) / n}
    }

    def both(name: str, make: Callable[[int], list[list[Any]]]) -> None:
        """Per-call latency (one round trip each) and pipelined cost per operation."""
        if name not in operations:
            return
        per_call = [make(i) for i in sample]
        out[name] = (
            latencies([lambda cmds=cmds: [c.call(*x) for x in cmds] for cmds in per_call])
            if per_call_latency
            else {}
        )
        flat = [x for cmds in per_call for x in cmds]
        t = time.perf_counter()
        for start in range(0, len(flat), 1000):
            c.pipe(flat[start : start + 1000])
        out[name]["pipelined"] = (time.perf_counter() - t) / len(per_call) * 1e6

    both("rank_of", lambda i: [["ZREVRANK", key, i]])
    both("get", lambda i: [["ZSCORE", key, i], ["ZREVRANK", key, i]])
    both("update", lambda i: [["ZADD", key, rng.randrange(10**9), i]])
    both("update_small", lambda i: [["ZINCRBY", key, rng.randrange(1, 101), i]])
    both(
        "range_100",
        lambda i: [["ZREVRANGE", key, (s := rng.randrange(n - 100)), s + 99, "WITHSCORES"]],
    )
    both("top_100", lambda i: [["ZREVRANGE", key, 0, 99, "WITHSCORES"]])
    both(
        "percentile",
        lambda i: [
            ["ZCARD", key],
            ["ZREVRANGE", key, (k := int(n * rng.uniform(0, 100) / 100)), k, "WITHSCORES"],
        ],
    )
    both(
        "neighbours",
        lambda i: [["ZREVRANK", key, i], ["ZREVRANGE", key, 0, 10, "WITHSCORES"]],
    )
    c.call("DEL", key)
    return out


###################################################################################################
# Report
###################################################################################################


def fmt_lat(r: dict[str, float]) -> str:
    return f"{r['p50']:7.1f} / {r['p99']:7.1f} / {r['max']:8.1f}"


def report(
    n: int,
    ours: dict[str, dict[str, float]],
    theirs: dict[str, dict[str, float]] | None,
    redis_note: str,
) -> None:
    print(f"\n=== n = {n:,} elements ===")
    load = ours["bulk_load"]
    print(
        f"bulk load: {load['seconds']:.2f} s   memory: {load['bytes_per_element']:.1f} B/element "
        f"retained (tracemalloc; statistics() estimate {load['estimate_bytes_per_element']:.1f}; "
        f"peak during load {load['peak_bytes_per_element']:.1f}), {int(load['blocks']):,} blocks"
    )
    if theirs:
        rl = theirs["bulk_load"]
        print(
            f"redis    : {rl['seconds']:.2f} s (pipelined ZADD x1000)   memory: "
            f"{rl['bytes_per_element']:.1f} B/element (used_memory growth)   -> pointspace is "
            f"{rl['seconds'] / load['seconds']:.1f}x faster to load and "
            f"{rl['bytes_per_element'] / load['bytes_per_element']:.1f}x smaller"
        )
    else:
        print(f"redis    : {redis_note}")
    head = f"{'operation':<14}{'pointspace us p50 / p99 / max':>34}"
    if theirs:
        head += f"{'redis us p50 / p99 / max (1 RTT each)':>42}{'redis pipelined':>17}{'ratio':>8}"
    print(head)
    for name in (
        "rank_of",
        "get",
        "update",
        "update_small",
        "range_100",
        "top_100",
        "percentile",
        "neighbours",
        "mixed",
    ):
        r = ours[name]
        line = f"{name:<14}{fmt_lat(r):>34}"
        if theirs and name in theirs:
            t = theirs[name]
            line += f"{fmt_lat(t):>42}{t['pipelined']:>14.1f} us{t['p50'] / r['p50']:>7.1f}x"
        print(line)
    if theirs:
        print(
            "ratio = redis p50 per call / pointspace p50 (>1: pointspace faster). Redis per-call "
            "figures include a loopback round trip; the pipelined column is closer to its server "
            "cost. get = ZSCORE+ZREVRANK, percentile = ZCARD+ZREVRANGE, neighbours = ZREVRANK + "
            "ZREVRANGE of 11."
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000000,10000000", help="comma-separated list sizes")
    parser.add_argument("--ops", type=int, default=20000, help="operations per measurement")
    parser.add_argument("--load", type=int, default=DEFAULT_LOAD, help="RankedList load")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis comparison")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]

    print(
        f"python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} cpus, "
        f"load {args.load}, {args.ops} ops per measurement"
    )
    server = None
    redis_note = "skipped (--no-redis)"
    binary = shutil.which("redis-server")
    if not args.no_redis:
        if binary is None:
            redis_note = "unavailable: no redis-server on PATH (apt-get install -y redis-server)"
        else:
            try:
                server = RedisServer(binary)
                print(f"redis {server.version} on 127.0.0.1:{server.port} via {server.client_name}")
            except RuntimeError as exc:
                redis_note = f"unavailable: {exc}"
    try:
        for n in sizes:
            ids, scores = make_data(n, args.seed)
            rng = random.Random(args.seed)
            rl, load = bulk_load(ids, scores, args.load)
            ours: dict[str, dict[str, float]] = {"bulk_load": load}
            sample = [int(ids[rng.randrange(n)]) for _ in range(args.ops)]
            for name in (
                "rank_of",
                "get",
                "range_100",
                "top_100",
                "percentile",
                "neighbours",
                "update",
                "update_small",
                "mixed",
            ):
                ours[name] = BENCHMARKS[name](rl, sample, rng)
            if n <= 100_000:
                rl._check()
            del rl
            gc.collect()
            theirs = None
            if server is not None:
                theirs = redis_suite(server.client, ids, scores, sample, random.Random(args.seed))
            report(n, ours, theirs, redis_note)
            sys.stdout.flush()
    finally:
        if server is not None:
            server.client.close()
            server.stop()


if __name__ == "__main__":
    main()
