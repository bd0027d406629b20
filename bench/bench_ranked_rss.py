"""Benchmark: the memory a user sees when a ranked list is bulk-loaded over RankDB's HTTP API.

Run it from the repository root::

    .venv/bin/python bench/bench_ranked_rss.py                 # 1M elements, beside Redis
    .venv/bin/python bench/bench_ranked_rss.py --n 10000000    # 10M (about 3 GB on each side)

What it does, the way a RankDB client would: start a fresh ``pointspace serve`` (in memory, or
on a fresh data directory with ``--data-dir``), ``POST /lists``, then ``PUT
/lists/{id}/elements`` with ``--chunk`` elements a request (JSON by default, msgpack with
``--format msgpack``) over one keep-alive connection, or one ``POST /lists`` with ``populate``
(``--mode populate``, at most 1M elements: the route's limit). It reads the server's RSS
(``VmRSS`` of its pid) from outside before the first write and one second after the last, and
prints the growth per element beside a fresh ``redis-server``'s ``used_memory`` and
``used_memory_rss`` growth for the same ids and scores in one sorted set (``ZADD``, 1000 a
command). Data: distinct ids spread over the u64 range, scores in 0..10**9
(``bench_ranked.make_data``), no payloads, so every element is 24 bytes of row plus its id-index
slot (18.5 bytes at the id index's build load, 15 at its maximum load).

``--diagnose`` runs the server under a small wrapper that answers ``SIGUSR1`` by writing glibc's
``mallinfo2`` (heap in use / free / mmapped), the count of live Python objects, and the RSS
before and after ``malloc_trim(0)`` to a file. It shows where RSS beyond the structure goes:
freed-but-kept heap (what a trim returns) versus memory still in use.

Nothing is asserted: the figures depend on the machine, the allocator and what else runs. The
ids and scores are synthetic; Redis's RSS includes jemalloc's own slack, ours glibc's.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import msgpack
import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import bench_ranked  # noqa: E402
from bench.common import (  # noqa: E402
    ROOT,
    free_port,
    http_request,
    redis_server,
    rss_bytes,
    send_all,
    table,
    wait_up,
)

#: The server under ``--diagnose``: ``pointspace serve`` with a SIGUSR1 handler that reports the
#: heap (glibc ``mallinfo2``), trims it and reports again, into the file named by $RSS_REPORT.
DIAGNOSE_WRAPPER = r"""
import ctypes, gc, json, os, runpy, signal, sys

libc = ctypes.CDLL("libc.so.6")

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc.mallinfo2.restype = MallInfo2

def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024

def heap():
    m = libc.mallinfo2()
    return {"rss": rss(), "heap_total": m.arena, "heap_in_use": m.uordblks,
            "heap_free": m.fordblks, "mmapped": m.hblkhd, "mmapped_chunks": m.hblks}

def report(signum, frame):
    out = {"before_gc": heap(), "garbage_freed": gc.collect()}
    out["before_trim"] = heap()
    out["objects"] = len(gc.get_objects())
    libc.malloc_trim(0)
    out["after_trim"] = heap()
    with open(os.environ["RSS_REPORT"], "w") as f:
        json.dump(out, f)

signal.signal(signal.SIGUSR1, report)
sys.argv = ["pointspace", *sys.argv[1:]]
runpy.run_module("web.serving.cli", run_name="__main__")
"""


def start_server(data_dir: str, diagnose: Path | None) -> tuple[subprocess.Popen[bytes], str]:
    """A fresh ``pointspace serve`` on a free port (under the diagnose wrapper if asked)."""
    port = free_port()
    args = ["serve", "--port", str(port), "--data-dir", data_dir]
    env = dict(os.environ)
    if diagnose is not None:
        cmd = [sys.executable, "-c", DIAGNOSE_WRAPPER, *args]
        env["RSS_REPORT"] = str(diagnose)
    else:
        cmd = [sys.executable, "-m", "web.serving.cli", *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_up(url, "/health/ping")
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, url


def bodies(ids: np.ndarray, scores: np.ndarray, chunk: int, fmt: str) -> list[bytes]:
    """The bulk PUT bodies: ``[{"id": ..., "score": ...}, ...]``, ``chunk`` elements each."""
    dump = orjson.dumps if fmt == "json" else msgpack.packb
    out = []
    for start in range(0, len(ids), chunk):
        part = zip(ids[start : start + chunk].tolist(), scores[start : start + chunk].tolist(), strict=True)
        out.append(dump([{"id": i, "score": s} for i, s in part]))
    return out


def diagnose_now(proc: subprocess.Popen[bytes], report: Path) -> dict[str, Any]:
    report.unlink(missing_ok=True)
    os.kill(proc.pid, signal.SIGUSR1)
    for _ in range(600):
        if report.exists() and report.stat().st_size:
            time.sleep(0.1)
            return json.loads(report.read_text())
        time.sleep(0.1)
    raise RuntimeError("the server wrote no diagnose report")


def load_pointspace(args: argparse.Namespace, ids: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """RSS growth (and diagnose reports) of a fresh server across the bulk load."""
    n = len(ids)
    content_type = "application/json" if args.format == "json" else "application/msgpack"
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp, "report.json") if args.diagnose else None
        data_dir = str(Path(tmp, "data")) if args.data_dir else ""
        proc, url = start_server(data_dir, report)
        try:
            settings = {"id": "mem", "set": "bench"}
            if args.mode == "populate":
                body = dict(settings, populate=[{"id": i, "score": s} for i, s in
                                                zip(ids.tolist(), scores.tolist(), strict=True)])
                dump = orjson.dumps if args.format == "json" else msgpack.packb
                requests = [http_request(url, "POST", "/lists", dump(body), content_type)]
                del body
            else:
                httpx.post(url + "/lists", json=settings).raise_for_status()
                requests = [http_request(url, "PUT", "/lists/mem/elements", b, content_type)
                            for b in bodies(ids, scores, args.chunk, args.format)]
            body_bytes = sum(len(r) for r in requests)
            time.sleep(0.5)
            out: dict[str, Any] = {"body_bytes": body_bytes, "requests": len(requests)}
            if report is not None:
                out["diag_before"] = diagnose_now(proc, report)
            before = rss_bytes(proc.pid)
            t0 = time.perf_counter()
            send_all(url, requests, 1)
            out["seconds"] = time.perf_counter() - t0
            del requests
            time.sleep(1.0)
            after = rss_bytes(proc.pid)
            info = httpx.get(url + "/lists/mem").json()
            assert info["elements"] == n, info
            out["rss_growth"] = after - before
            out["peak_rss"] = _peak_rss(proc.pid)
            if report is not None:
                out["diag_after"] = diagnose_now(proc, report)
                out["trimmed_growth"] = out["diag_after"]["after_trim"]["rss"] - before
            return out
        finally:
            proc.terminate()
            proc.wait(30)


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def load_redis(ids: np.ndarray, scores: np.ndarray) -> tuple[int, int] | None:
    """(used_memory, used_memory_rss) growth of a fresh redis-server across the same load."""
    with redis_server(install=True) as client:
        if client is None:
            return None
        before = client.info("memory")
        bench_ranked.redis_bulk_load(bench_ranked.RedisPy(0, client), "mem", ids, scores)
        time.sleep(1.0)
        after = client.info("memory")
        return (after["used_memory"] - before["used_memory"],
                after["used_memory_rss"] - before["used_memory_rss"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="elements to load [1,000,000]")
    parser.add_argument("--chunk", type=int, default=10_000, help="elements per PUT request [10,000]")
    parser.add_argument("--format", choices=("json", "msgpack"), default="json")
    parser.add_argument("--mode", choices=("put", "populate"), default="put",
                        help="bulk PUTs of --chunk elements, or one POST /lists with populate")
    parser.add_argument("--data-dir", action="store_true", help="serve from a fresh data directory")
    parser.add_argument("--diagnose", action="store_true", help="report the heap (see the docstring)")
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis baseline")
    args = parser.parse_args()

    n = args.n
    ids, scores = bench_ranked.make_data(n, 0)
    ours = load_pointspace(args, ids, scores)
    where = "data dir" if args.data_dir else "in memory"
    print(f"pointspace serve ({where}): {n:,} elements in {ours['requests']:,} {args.mode} request(s), "
          f"{args.format}, {ours['body_bytes'] / n:.1f} body bytes/element, {ours['seconds']:.1f} s; "
          f"peak RSS {ours['peak_rss'] / 2**20:,.0f} MiB")
    rows = [("pointspace RSS growth", ours["rss_growth"] / n, "B/element")]
    if args.diagnose:
        for label in ("diag_before", "diag_after"):
            print(f"  {label}: {json.dumps(ours[label])}")
        rows.append(("pointspace RSS growth after malloc_trim(0)", ours["trimmed_growth"] / n, "B/element"))
    theirs = None if args.no_redis else load_redis(ids, scores)
    if theirs is not None:
        rows += [("Redis used_memory_rss growth", theirs[1] / n, "B/element"),
                 ("Redis used_memory growth", theirs[0] / n, "B/element")]
    baseline = "Redis used_memory_rss growth" if theirs is not None else "pointspace RSS growth"
    table(f"RSS growth per element, {n:,} elements bulk-loaded over HTTP", rows, baseline)


if __name__ == "__main__":
    main()
