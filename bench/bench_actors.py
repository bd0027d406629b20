"""Actor placement for user counters: one trio task per user against partition actors.

The claim this checks (``engine/actors.py``, ``USER_PARTITIONS``): waking a trio task costs
microseconds, and a batch of 1,000 sparse events touches ~1,000 different users, so one actor
(task) per user pays one wake-up per event, while hashing users onto a few partition actors
bounds a batch at one wake-up per partition (<= 8 at the default).

Workload: ``make_events`` over 10,000 users in batches of 1,000 (sparse: one or two events per
user per batch), already validated. Every actor is started and every user's state created by a
warm-up pass (one event per user) before timing, so the rows compare steady-state turns, not
task starts.

Rows, all in one run:

  wake-up cost (us per wake-up; no counting)
  * memory channel ping-pong   -- two tasks, two unbuffered ``trio`` memory channels; a round
                                  trip wakes each task once
  * Event ping-pong            -- the same through a fresh ``trio.Event`` per message
  * Router fan-out, no-op      -- one no-op message to each of 1,000 dedicated actors per batch
                                  (the real ``Router`` and ``Mailbox``), per message

  ingest (events/s, ratio against one actor per user)
  * Router, partitions=0       -- the user namespace with ``partitions=0``: one actor per
                                  user, the baseline (states in one packed store)
  * Router, partitions=8/32/128 -- users hashed onto that many actors (8 is the default)
    each row sends ``IngestBatch.route`` shares with ``send_nowait`` and waits for the batch's
    ``Completion``: the engine's dispatch path without the log
  * Engine.ingest_validated    -- the real write path as shipped (8 partitions, memory log)

The "turns/batch" in each row's name is the mean number of distinct actors a batch touches, which
is the number of wake-ups it costs. Caveats: synthetic events; a small shared machine (2 cores
here), so run it twice and take the quieter run; gc is tuned as the server tunes it.

    .venv/bin/python bench/bench_actors.py            # ~30 s
    .venv/bin/python bench/bench_actors.py --quick    # a few seconds
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import BASE_TS, batches, best_of, make_events, table  # noqa: E402
from engine.actors import USER_PARTITIONS, Completion, Namespace, Router  # noqa: E402
from engine.commands import USER, IngestBatch  # noqa: E402
from engine.counters import UserCounters  # noqa: E402
from engine.engine import Engine  # noqa: E402
from engine.events import UserEvent, validate_counter_events  # noqa: E402
from engine.partition_counters import PartitionStores  # noqa: E402
from web.serving.server import tune_gc  # noqa: E402

###################################################################################################
# The bare cost of a wake-up
###################################################################################################


def channel_pingpong(n: int) -> float:
    """Seconds per wake-up: ``n`` round trips through two unbuffered memory channels."""

    async def main() -> float:
        to_echo, echo_in = trio.open_memory_channel[int](0)
        to_main, main_in = trio.open_memory_channel[int](0)

        async def echo() -> None:
            async for item in echo_in:
                await to_main.send(item)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(echo)
            await trio.sleep(0)
            t0 = time.perf_counter()
            for i in range(n):
                await to_echo.send(i)
                await main_in.receive()
            seconds = time.perf_counter() - t0
            nursery.cancel_scope.cancel()
        return seconds / (2 * n)

    return trio.run(main)


def event_pingpong(n: int) -> float:
    """Seconds per wake-up: ``n`` round trips, each side woken through its own ``trio.Event``."""

    async def main() -> float:
        # Events cannot be cleared, so each round has its own pair, made before the tasks run
        # (trio randomises which ready task runs first: neither side may assume the other's pace).
        pings = [trio.Event() for _ in range(n)]
        pongs = [trio.Event() for _ in range(n)]

        async def echo() -> None:
            for ping, pong in zip(pings, pongs, strict=True):
                await ping.wait()
                pong.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(echo)
            await trio.sleep(0)
            t0 = time.perf_counter()
            for ping, pong in zip(pings, pongs, strict=True):
                ping.set()
                await pong.wait()
            seconds = time.perf_counter() - t0
        return seconds / (2 * n)

    return trio.run(main)


def router_fanout(actors: int, rounds: int) -> float:
    """Seconds per message: each round sends one no-op to each of ``actors`` dedicated actors."""

    def noop(state: Any) -> None:
        return None

    async def main() -> float:
        async with trio.open_nursery() as nursery:
            router = Router(nursery, [Namespace(USER, UserCounters, partitions=0)])

            async def one_round() -> None:
                completion = Completion(actors)
                for user in range(actors):
                    router.send_nowait((USER, user), noop, completion)
                await completion.wait()

            await one_round()  # start every actor
            t0 = time.perf_counter()
            for _ in range(rounds):
                await one_round()
            seconds = time.perf_counter() - t0
            router.retire_all()
            nursery.cancel_scope.cancel()
        return seconds / (actors * rounds)

    return trio.run(main)


###################################################################################################
# Ingest through the Router, by placement
###################################################################################################


def warmup_events(users: int) -> list[list[UserEvent]]:
    """One event per user, in batches of 1,000: starts every actor and creates every state."""
    events = [
        {"metric": "steps", "user": u, "value": 1, "ts": BASE_TS - 3600, "atid": 0}
        for u in range(users)
    ]
    return [validate_counter_events(b) for b in batches(events, 1000)]


def router_ingest(
    partitions: int, warmup: list[list[UserEvent]], timed: list[list[UserEvent]]
) -> tuple[float, float]:
    """``(seconds, turns per batch)`` for ingesting ``timed`` through a Router whose user
    namespace has ``partitions`` actors (0: one per user), after ``warmup``."""

    async def main() -> tuple[float, float]:
        async with trio.open_nursery() as nursery:
            # The users' state as the engine keeps it: packed per partition (one store when
            # every user has an actor of its own).
            stores = PartitionStores(max(partitions, 1))
            router = Router(nursery, [Namespace(USER, stores.user_state, partitions=partitions,
                                                keyed=True)])
            seq = 0
            turns = 0

            async def ingest(batch: list[UserEvent]) -> None:
                nonlocal seq
                seq += 1
                routes = IngestBatch(events=batch).route(seq, router)
                completion = Completion(len(routes))
                for key, operation in routes.items():
                    try:
                        router.send_nowait(key, operation, completion)
                    except trio.WouldBlock:
                        await router.send(key, operation, completion)
                await completion.wait()

            for batch in warmup:
                await ingest(batch)
            for batch in timed:  # outside the timing: which actors each batch wakes
                turns += len({router._actor_key(USER, event[0]) for event in batch})
            tune_gc()
            t0 = time.perf_counter()
            for batch in timed:
                await ingest(batch)
            seconds = time.perf_counter() - t0
            router.retire_all()
            nursery.cancel_scope.cancel()
        gc.unfreeze()
        return seconds, turns / len(timed)

    return trio.run(main)


def engine_ingest(warmup: list[list[UserEvent]], timed: list[list[UserEvent]]) -> float:
    """Seconds for ``Engine.ingest_validated`` of ``timed`` (as shipped), after ``warmup``."""

    async def main() -> float:
        async with Engine.open() as engine:
            for batch in warmup:
                await engine.ingest_validated(batch)
            tune_gc()
            t0 = time.perf_counter()
            for batch in timed:
                await engine.ingest_validated(batch)
            seconds = time.perf_counter() - t0
        gc.unfreeze()
        return seconds

    return trio.run(main)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000, help="timed events per row")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--partitions", default="0,8,32,128", help="comma-separated; 0 = per user")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs per row")
    parser.add_argument("--quick", action="store_true", help="20,000 events, best of 1")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.repeats = 20_000, 1
    partitions = [int(p) for p in args.partitions.split(",") if p]
    if 0 not in partitions:
        partitions.insert(0, 0)  # the baseline of the ratios

    print(f"python {sys.version.split()[0]}, trio {trio.__version__}")
    tune_gc()  # as the server runs; each ingest row freezes its warmed-up state again
    n = 20_000
    wake = [
        (
            "memory channel ping-pong",
            1e6 * best_of(args.repeats, lambda: channel_pingpong(n)),
            "us",
        ),
        ("Event ping-pong", 1e6 * best_of(args.repeats, lambda: event_pingpong(n)), "us"),
        (
            "Router fan-out, 1,000 actors, no-op",
            1e6 * best_of(args.repeats, lambda: router_fanout(1000, n // 1000)),
            "us",
        ),
    ]
    table("trio wake-up cost, per wake-up (no counting)", wake, "memory channel ping-pong")

    warmup = warmup_events(args.users)
    timed = [
        validate_counter_events(b)
        for b in batches(make_events(args.events, args.users), args.batch)
    ]
    rows = []
    baseline = ""
    for p in partitions:
        runs = [router_ingest(p, warmup, timed) for _ in range(args.repeats)]
        seconds = min(s for s, _ in runs)
        per_batch = runs[0][1]
        what = "one actor per user" if p == 0 else f"{p} partitions"
        if p == USER_PARTITIONS:
            what += " (default)"
        name = f"{what}: {per_batch:,.0f} turns/batch"
        if p == 0:
            baseline = name
        rows.append((name, args.events / seconds, "events/s"))
        gc.collect()
    seconds = min(engine_ingest(warmup, timed) for _ in range(args.repeats))
    rows.append(("Engine.ingest_validated, as shipped", args.events / seconds, "events/s"))
    table(
        f"ingest through the Router by placement, sparse: {args.users:,} users, batches of "
        f"{args.batch:,}, {args.events:,} events, best of {args.repeats}",
        rows,
        baseline,
    )


if __name__ == "__main__":
    main()
