"""Density over HTTP: crossings in through the seed's ``/send`` and ``/send/batch``, and the
latency of an exact count at any instant in a space holding a year of crossings.

Workload (the Density seed's): sensors over doorways each report crossings, one JSON object
``{"timestamp", "direction", "dpu_id"}`` per crossing; the seed's loader sent one request per
crossing, a gateway batches them. Twenty sensors, each over a doorway between two of ten
spaces, so every crossing moves two space counts. The year: one crossing a minute, every
minute of 2023, spread over the sensors (525,600 crossings; ``--year-events`` changes it).

Baseline, side by side in the same run: the bare ASGI app on the same Hypercorn trio worker
(``bench/bench_http.py``: reads the body, parses it with orjson, answers) -- the floor for any
server on this stack. Also printed: the count-at-T read in process (``SpaceState.count_at``),
without HTTP.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_http import post_all, start_bare, start_pointspace  # noqa: E402
from bench.common import table  # noqa: E402
from engine.density import SensorState, SpaceState, iso_ms  # noqa: E402

YEAR_START_MS = 1672531200000  # 2023-01-01T00:00:00Z
SENSORS = 20
SPACES = 10


def placement(i: int) -> dict[str, object]:
    a, b = f"space-{i % SPACES}", f"space-{(i + 1) % SPACES}"
    return {"installed": "2020-01-01T00:00:00Z", "doorway": f"door-{i}", "spaces": {a: 1, b: -1}}


def crossings(n: int, *, start_ms: int, step_ms: int, seed: int = 0) -> list[dict[str, object]]:
    rng = random.Random(seed)
    return [
        {"timestamp": iso_ms(start_ms + i * step_ms), "direction": rng.choice(("1", "-1")),
         "dpu_id": str(rng.randrange(SENSORS))}
        for i in range(n)
    ]


def latencies(client: httpx.Client, path: str, params: list[dict[str, str]]) -> tuple[float, float]:
    out = []
    for p in params:
        t0 = time.perf_counter()
        client.get(path, params=p).raise_for_status()
        out.append(time.perf_counter() - t0)
    out.sort()
    return out[len(out) // 2] * 1e3, out[int(len(out) * 0.99)] * 1e3


def in_process_count_latency(year: list[dict[str, object]], probes: list[int]) -> float:
    """Microseconds per ``SpaceState.count_at`` for space-0, built the way the engine builds it."""
    from engine.density import validate_dpu_events

    sensors = {str(i): SensorState() for i in range(SENSORS)}
    space = SpaceState()
    for i, sensor in sensors.items():
        spaces = placement(int(i))["spaces"]
        sensor.place(0, f"door-{i}", spaces)  # type: ignore[arg-type]
    validated = [e for i in range(0, len(year), 50_000) for e in validate_dpu_events(year[i : i + 50_000])]
    for index, (dpu, ts, direction, event_id) in enumerate(validated):
        _, _, out = sensors[dpu].ingest(1, [(index, ts, direction, event_id)])
        if "space-0" in out:
            space.contribute(dpu, out["space-0"])
    space.count_at(probes[0])  # build the first bucket summaries
    t0 = time.perf_counter()
    for t in probes:
        space.count_at(t)
    return (time.perf_counter() - t0) / len(probes) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="crossings through /send/batch")
    # Hypercorn closes a keep-alive connection after 1,000 requests (keep_alive_max_requests):
    # keep singles / threads under that.
    parser.add_argument("--singles", type=int, default=3_000, help="crossings through /send")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--year-events", type=int, default=525_600)
    parser.add_argument("--probes", type=int, default=500)
    args = parser.parse_args()

    live = crossings(args.events, start_ms=YEAR_START_MS + 366 * 86_400_000, step_ms=50, seed=1)
    batch_bodies = [orjson.dumps(live[i : i + args.batch]) for i in range(0, len(live), args.batch)]
    single_bodies = [orjson.dumps(e) for e in crossings(args.singles, start_ms=YEAR_START_MS + 400 * 86_400_000,
                                                          step_ms=1000, seed=2)]
    year_step = max(1, 365 * 86_400_000 // args.year_events)
    year = crossings(args.year_events, start_ms=YEAR_START_MS, step_ms=year_step, seed=3)
    rng = random.Random(4)
    probes = [YEAR_START_MS + rng.randrange(365 * 86_400_000) for _ in range(args.probes)]
    count_params = [{"space": "space-0", "timestamp": iso_ms(t)} for t in probes]

    ingest: list[tuple[str, float, str]] = []
    singles: list[tuple[str, float, str]] = []
    reads: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_bare(tmp)
        try:
            t = post_all(url, "/", batch_bodies, "application/json", args.threads)
            ingest.append((f"bare ASGI + orjson, batches of {args.batch} (baseline)", args.events / t, "events/s"))
            t = post_all(url, "/", single_bodies, "application/json", args.threads)
            singles.append(("bare ASGI + orjson, 1 event/request (baseline)", args.singles / t, "events/s"))
            with httpx.Client(base_url=url) as client:
                p50, p99 = latencies(client, "/", count_params[:200])
                reads.append(("bare ASGI GET p50 (baseline)", p50, "ms"))
                reads.append(("bare ASGI GET p99", p99, "ms"))
        finally:
            proc.terminate()
            proc.wait()
        proc, url = start_pointspace("", "everysec")
        try:
            with httpx.Client(base_url=url, timeout=120) as client:
                for i in range(SENSORS):
                    client.put(f"/api/sensors/{i}/placement", json=placement(i)).raise_for_status()
            t = post_all(url, "/send/batch", batch_bodies, "application/json", args.threads)
            ingest.append((f"pointspace /send/batch, {args.batch}/request", args.events / t, "events/s"))
            t = post_all(url, "/send", single_bodies, "application/json", args.threads)
            singles.append(("pointspace /send, 1 event/request", args.singles / t, "events/s"))
            year_bodies = [orjson.dumps(year[i : i + 5000]) for i in range(0, len(year), 5000)]
            t = post_all(url, "/send/batch", year_bodies, "application/json", args.threads)
            print(f"  loaded a year: {len(year):,} crossings in {t:.1f} s ({len(year) / t:,.0f}/s)")
            with httpx.Client(base_url=url, timeout=120) as client:
                p50, p99 = latencies(client, "/count", count_params)
                reads.append(("pointspace GET /count?timestamp= p50", p50, "ms"))
                reads.append(("pointspace GET /count?timestamp= p99", p99, "ms"))
                occupancy = {"t1": YEAR_START_MS // 1000, "t2": YEAR_START_MS // 1000 + 365 * 86400 - 1,
                             "step": "day", "tz": "Europe/Oslo"}
                p50, p99 = latencies(client, "/api/spaces/space-0/occupancy", [occupancy] * 20)
                reads.append(("pointspace occupancy, a year by day, p50", p50, "ms"))
        finally:
            proc.terminate()
            proc.wait()
    micro = in_process_count_latency(year, probes)
    table(f"Density ingest: {args.events:,} crossings, {args.threads} client threads", ingest, ingest[0][0])
    table(f"Density single sends: {args.singles:,} requests", singles, singles[0][0])
    table(f"Count at T, space-0 of {SPACES} spaces, a year of {len(year):,} crossings", reads, reads[0][0])
    print(f"  SpaceState.count_at in process (no HTTP): {micro:.1f} us per read")


if __name__ == "__main__":
    main()
