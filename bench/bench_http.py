"""Ingest and query throughput over HTTP, against a bare ASGI app on the same Hypercorn worker.

A real ``pointspace serve`` process (in memory, or with a data directory and an fsync policy)
receives batches of 1,000 events as JSON and as msgpack from client threads on loopback. The
baseline, run side by side, is a bare ASGI app under Hypercorn's trio worker that reads each
body and parses it with orjson, then answers -- the ceiling for any server on this stack, so
the ratio shows what our own work costs per request.

Also measured: PSD ``/v1/write`` single writes (one event per request) and ``/api/query``
latency for one user.

Target (issue 2): >= 150k events/s over HTTP in batches of 1,000.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import msgpack
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    batches,
    make_events,
    post_all,
    run_threads,
    start_bare,
    start_pointspace,
    table,
)


def redis_round_trips(port: int, requests: list[list[list[Any]]], threads: int) -> float:
    """The Redis side of the request floor: each request (a list of commands) written at once
    in RESP and all its replies read -- one round trip -- over ``threads`` connections
    (pre-encoded bytes, as :func:`bench.common.send_all` sends pre-built HTTP requests);
    seconds taken. An error reply fails the run."""
    from bench.bench_ranked import MiniRedis

    encoded = [(b"".join(MiniRedis.encode(c) for c in request), len(request)) for request in requests]
    chunks = [encoded[i::threads] for i in range(threads)]
    errors: list[str] = []

    def worker(mine: list[tuple[bytes, int]]) -> None:
        client = MiniRedis(port)
        try:
            for data, replies in mine:
                client.sock.sendall(data)
                for _ in range(replies):
                    client.read()
        except (OSError, RuntimeError) as exc:
            errors.append(repr(exc))
        finally:
            client.close()

    elapsed = run_threads(worker, chunks)
    if errors:
        raise RuntimeError(f"{len(errors)} failed Redis connections, first: {errors[0]}")
    return elapsed


def psd_singles(events: list[dict[str, Any]]) -> list[bytes]:
    """PSD ``/v1/write`` bodies, one event each."""
    return [
        orjson.dumps({"thing": e["metric"], "uid": e["user"], "atid": e["atid"], "aid": e["aid"],
                      "value": e["value"], "ts1": e["ts"], "ts2": e["ts"]})
        for e in events
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--fsync", default="", help="also run with a data dir and this policy")
    args = parser.parse_args()
    events = make_events(args.events, 10_000)
    json_bodies = [orjson.dumps(b) for b in batches(events, args.batch)]
    mp_bodies = [msgpack.packb(b) for b in batches(events, args.batch)]
    rows: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_bare(tmp)
        try:
            t = post_all(url, "/", json_bodies, "application/json", args.threads)
            rows.append(("bare ASGI + orjson parse (baseline)", args.events / t, "events/s"))
        finally:
            proc.terminate()
            proc.wait()
        configs = [("in memory", "", "everysec")]
        if args.fsync:
            configs.append((f"data dir, fsync={args.fsync}", str(Path(tmp, "data")), args.fsync))
        for label, data_dir, fsync in configs:
            proc, url = start_pointspace(data_dir, fsync)
            try:
                t = post_all(url, "/api/events", json_bodies, "application/json", args.threads)
                rows.append((f"pointspace JSON batches ({label})", args.events / t, "events/s"))
                t = post_all(url, "/api/events", mp_bodies, "application/msgpack", args.threads)
                rows.append((f"pointspace msgpack batches ({label})", args.events / t, "events/s"))
                singles = psd_singles([{**e, "metric": "steps"} for e in events[:3000]])
                t = post_all(url, "/v1/write", singles, "application/json", args.threads)
                rows.append((f"PSD /v1/write, 1 event/request ({label})", len(singles) / t, "events/s"))
                with httpx.Client(base_url=url) as client:
                    body = {"users": [1], "metrics": ["steps"], "t1": events[0]["ts"], "t2": events[-1]["ts"]}
                    latencies = []
                    for _ in range(300):
                        t0 = time.perf_counter()
                        client.post("/api/query", json=body).raise_for_status()
                        latencies.append(time.perf_counter() - t0)
                    latencies.sort()
                    print(f"  /api/query one user ({label}): p50 {latencies[150]*1e3:.2f} ms, p99 {latencies[296]*1e3:.2f} ms")
            finally:
                proc.terminate()
                proc.wait()
    table(f"HTTP ingest: {args.events:,} events, batches of {args.batch:,}, {args.threads} client threads",
          rows, "bare ASGI + orjson parse (baseline)")


if __name__ == "__main__":
    main()
