"""Ingest and query throughput over HTTP, against a bare ASGI app on the same Hypercorn worker.

A real ``pointspace serve`` process (in memory, or with a data directory and an fsync policy)
receives batches of 1,000 events as JSON and as msgpack from client threads on loopback. The
baseline, run side by side, is a bare ASGI app under Hypercorn's trio worker that reads each
body and parses it with orjson, then answers -- the ceiling for any server on this stack, so
the ratio shows what our own work costs per request.

Also measured: PSD ``/v1/batch`` (queue messages, batches of 1,000) and ``/v1/write`` single
writes (one event per request), and ``/api/query`` latency for one user.

``--compare-decoders`` runs every write on two servers side by side: the fast body decoders
(bytes straight to event tuples, ``web/api/event_bodies.py``) and the reference ones
(``POINTSPACE_FAST_DECODE=0``: orjson, the model check, validation per event), in turn for
``--repeat`` rounds, best of each.

Target (issue 2): >= 150k events/s over HTTP in batches of 1,000.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
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
    return [orjson.dumps(psd_job(e)) for e in events]


def psd_job(e: dict[str, Any]) -> dict[str, Any]:
    """An event as PSD's MetricJob."""
    return {"thing": e["metric"], "uid": e["user"], "atid": e["atid"], "aid": e["aid"],
            "value": e["value"], "ts1": e["ts"], "ts2": e["ts"]}


#: ``--compare-decoders``: the server variants measured side by side, by the environment each
#: starts with. ``POINTSPACE_FAST_DECODE=0`` sends every write body the reference way (orjson,
#: the model check, validation per event: ``web/api/event_bodies.py``).
DECODERS = {"fast decoders": {}, "reference decoders": {"POINTSPACE_FAST_DECODE": "0"}}


@contextlib.contextmanager
def pointspace(data_dir: str, fsync: str, env: dict[str, str]) -> Iterator[str]:
    """A ``pointspace serve`` started with ``env`` added to this process's environment."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        proc, url = start_pointspace(data_dir, fsync)
    finally:
        for name, value in saved.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--fsync", default="", help="also run with a data dir and this policy")
    parser.add_argument("--compare-decoders", action="store_true",
                        help="run the write routes on two servers, fast and reference body "
                        "decoders (POINTSPACE_FAST_DECODE=0), measured in turn")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of the write measurements (each variant's best is shown)")
    args = parser.parse_args()
    events = make_events(args.events, 10_000)
    json_bodies = [orjson.dumps(b) for b in batches(events, args.batch)]
    mp_bodies = [msgpack.packb(b) for b in batches(events, args.batch)]
    psd_events = [{**e, "metric": "steps"} for e in events]
    psd_batches = [orjson.dumps([{"command": "metric", "metric": psd_job(e)} for e in b])
                   for b in batches(psd_events, args.batch)]
    singles = psd_singles(psd_events[:3000])
    writes = [  # (what, path, bodies, content type, events per run)
        ("JSON batches", "/api/events", json_bodies, "application/json", args.events),
        ("msgpack batches", "/api/events", mp_bodies, "application/msgpack", args.events),
        ("PSD /v1/batch JSON", "/v1/batch", psd_batches, "application/json", args.events),
        ("PSD /v1/write, 1 event/request", "/v1/write", singles, "application/json", len(singles)),
    ]
    variants = DECODERS if args.compare_decoders else {"": {}}
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
            with contextlib.ExitStack() as stack:
                urls = {
                    name: stack.enter_context(pointspace(data_dir and f"{data_dir}-{i}", fsync, env))
                    for i, (name, env) in enumerate(variants.items())
                }
                best: dict[tuple[str, str], float] = {}
                for _ in range(args.repeat):  # the variants in turn, so drift hits both
                    for what, path, bodies, content_type, n in writes:
                        for name, url in urls.items():
                            t = post_all(url, path, bodies, content_type, args.threads)
                            best[what, name] = max(best.get((what, name), 0.0), n / t)
                for what, *_ in writes:
                    for name in urls:
                        where = f"{label}, {name}" if name else label
                        rows.append((f"pointspace {what} ({where})", best[what, name], "events/s"))
                with httpx.Client(base_url=next(iter(urls.values()))) as client:
                    body = {"users": [1], "metrics": ["steps"], "t1": events[0]["ts"], "t2": events[-1]["ts"]}
                    latencies = []
                    for _ in range(300):
                        t0 = time.perf_counter()
                        client.post("/api/query", json=body).raise_for_status()
                        latencies.append(time.perf_counter() - t0)
                    latencies.sort()
                    print(f"  /api/query one user ({label}): p50 {latencies[150]*1e3:.2f} ms, p99 {latencies[296]*1e3:.2f} ms")
    table(f"HTTP ingest: {args.events:,} events, batches of {args.batch:,}, {args.threads} client threads",
          rows, "bare ASGI + orjson parse (baseline)")


if __name__ == "__main__":
    main()
