"""Run the server: open the engine, build the app, serve it with Hypercorn's trio worker.

One trio run owns everything: the engine's nursery (actors, log flusher, snapshot timer) and
Hypercorn's serving tasks. SIGINT or SIGTERM stops accepting requests, lets the engine write
its final snapshot, and exits.
"""

from __future__ import annotations

import gc
import logging
import signal
import sys

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

from engine.engine import Engine
from web.app import create_app
from web.settings import Settings

log = logging.getLogger("pointspace")


def tune_gc() -> None:
    """Make the cyclic garbage collector rarely scan the (cycle-free) counter state.

    Counter state is millions of dicts of ints with no reference cycles, yet CPython's
    collector re-scans every container in its oldest generation as objects pile up; with
    default thresholds, ingest spent most of its time in the collector (bench/bench_ingest.py).
    Raising the first threshold and freezing what recovery loaded keeps collections for the
    short-lived garbage of requests.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)


async def run_server(settings: Settings, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until SIGINT/SIGTERM. ``task_status.started()`` once the port is bound."""
    options: dict[str, object] = {"fsync": settings.fsync} if settings.data_dir is not None else {}
    gc.set_threshold(100_000, 50, 1000)  # before recovery too: replay is 3x faster with it
    async with Engine.open(settings.data_dir, retention=settings.retention or None, **options) as engine:
        tune_gc()
        app = create_app(engine, settings)
        config = Config()
        config.bind = [f"{settings.host}:{settings.port}"]
        config.worker_class = "trio"
        config.accesslog = "-" if settings.access_log else None
        config.errorlog = "-"
        config.graceful_timeout = 10
        config.keep_alive_timeout = 75
        shutdown = trio.Event()
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:

                async def wait_for_signal() -> None:
                    async for signum in signals:
                        log.info("received %s, shutting down", signal.Signals(signum).name)
                        shutdown.set()
                        return

                nursery.start_soon(wait_for_signal)
                where = settings.data_dir if settings.data_dir is not None else "memory only"
                print(
                    f"pointspace listening on http://{settings.host}:{settings.port} "
                    f"(data: {where}, fsync: {settings.fsync})",
                    file=sys.stderr,
                    flush=True,
                )
                task_status.started()
                await hypercorn_serve(app, config, shutdown_trigger=shutdown.wait)  # type: ignore[arg-type]
                nursery.cancel_scope.cancel()
