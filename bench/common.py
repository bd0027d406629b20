"""Shared helpers for the benchmarks: workloads, timing, a throwaway Redis, side-by-side tables.

Benchmarks print figures and ratios against a baseline measured in the same run; they never
assert on time (the machines are shared and noisy). Run them as scripts:
``.venv/bin/python bench/bench_ingest.py``.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

#: 2024-01-01 00:00:00 UTC: workloads start here.
BASE_TS = 1704067200


def make_events(
    n: int, users: int, *, seed: int = 0, start: int = BASE_TS, per_second: float = 50.0,
    metrics: tuple[str, ...] = ("steps", "points"), atids: int = 4, with_aid: bool = True,
) -> list[dict[str, Any]]:
    """``n`` add events for ``users`` users, timestamps advancing ~``per_second`` events/s
    (a live feed), a few activity types, and one activity per (user, atid, hour)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ts = start + int(i / per_second)
        user = rng.randrange(users)
        atid = rng.randrange(atids)
        event: dict[str, Any] = {
            "metric": metrics[i % len(metrics)],
            "user": user,
            "value": rng.randrange(1, 100),
            "ts": ts,
            "atid": atid,
        }
        if with_aid:
            event["aid"] = (user * 131 + atid) * 100_000 + ts // 3600
        out.append(event)
    return out


def batches(events: list[Any], size: int) -> list[list[Any]]:
    return [events[i : i + size] for i in range(0, len(events), size)]


def best_of(repeats: int, fn: Callable[[], float]) -> float:
    """The best (smallest) of ``repeats`` timings returned by ``fn``."""
    return min(fn() for _ in range(repeats))


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def redis_server() -> Iterator[Any]:
    """A throwaway redis-server on loopback with persistence off; yields a client or None."""
    binary = shutil.which("redis-server")
    try:
        import redis  # type: ignore[import-not-found]
    except ImportError:
        print("(redis python package not installed: pip install -e '.[bench]'; Redis baseline skipped)")
        yield None
        return
    if binary is None:
        print("(redis-server not found: apt-get install redis-server; Redis baseline skipped)")
        yield None
        return
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )
        try:
            client = redis.Redis(host="127.0.0.1", port=port)
            for _ in range(100):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            yield client
        finally:
            proc.terminate()
            proc.wait(10)


def table(title: str, rows: list[tuple[str, float, str]], baseline: str) -> None:
    """Print ``(name, value, unit)`` rows with each value's ratio to the baseline row's."""
    base = next((v for n, v, _ in rows if n == baseline), None)
    print(f"\n{title}")
    for name, value, unit in rows:
        ratio = f"{value / base:8.2f}x" if base else ""
        print(f"  {name:<44} {value:>14,.1f} {unit:<10} {ratio}  (vs {baseline})")
