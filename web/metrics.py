"""Prometheus metrics (``GET /metrics``) and health endpoints (``/healthz``, ``/readyz``).

Theory of operation
-------------------
Each app gets its own ``CollectorRegistry`` (never prometheus-client's global default), so two
apps in one process -- tests, embedding -- do not share or collide on metrics. It holds two
kinds of metric:

* **Per-request instruments**, updated by hooks: ``pointspace_http_requests_total`` by route,
  method and status, and ``pointspace_http_request_duration_seconds`` by route. The route label
  is the URL *rule* (``/lists/<list_id>``), never the raw path, and a request that matched no
  rule is ``unmatched``, so the number of series is bounded by the route table (methods outside
  the standard set become ``other`` for the same reason). A ``before_request`` hook, placed
  first so that requests refused by later hooks (auth's 401) are timed too, stamps
  ``time.perf_counter()``; the ``after_request`` hook, which Quart runs last for hooks
  registered first, sees the final status (Quart runs it on error responses too). A request
  that ended without a response -- cancelled when the client left or the server stopped --
  is counted by ``teardown_request`` with status 499 (nginx's "client closed request"). The time is
  until the response is handed to the server: a streamed body's transfer is not included.
  Per request the cost is two clock reads, one dict lookup for the cached label children and
  two lock-protected increments; the children are created on a route's first request.
* **Live values read at scrape time** by :class:`EngineCollector`: ``Engine.statistics()``
  (router and command counts), and with a data directory the log's ``WalStatistics``, the last
  snapshot's ``SnapshotRecord`` and the recovery report. Nothing is kept up to date between
  scrapes, so the write path pays nothing for them. Each read is O(1) (``statistics()``
  methods are O(1)); a scrape is O(routes x buckets) to format.

``/healthz`` answers 200 whenever the process serves HTTP (liveness). ``/readyz`` answers 200
once the engine serves: the app is only built after recovery finished, so that is from the
first request on, until the engine closes or the log breaks (503).

The fsync latency is a gauge of the *last* fsync (``WalStatistics.last_fsync_latency_s``): a
histogram would need the log to record every fsync, which it does not yet do.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import trio
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from quart import Response, current_app, g, request
from quart_trio import QuartTrio

from engine.engine import Engine
from web.bodies import respond
from web.version import VERSION

__all__ = ["LATENCY_BUCKETS", "UNMATCHED", "EngineCollector", "install", "registry_of"]

#: The route label of a request that matched no URL rule (404, 405).
UNMATCHED = "unmatched"

#: Request latency buckets, in seconds. Finer than prometheus-client's default at the low end:
#: most requests here take well under 5 ms. Not benchmarked yet.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)

#: Methods kept as their own label value; any other becomes ``other`` (bounded cardinality).
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

_REGISTRY_KEY = "pointspace.metrics"


def install(app: QuartTrio) -> None:
    """Add /metrics, /healthz and /readyz and the request instrumentation."""
    registry = CollectorRegistry(auto_describe=True)
    instruments = _RequestInstruments(registry)
    registry.register(EngineCollector(app.extensions["pointspace.engine"]))
    app.extensions[_REGISTRY_KEY] = registry

    # First among the before_request hooks, so that a request refused by a later one (auth)
    # still has its start time.
    app.before_request_funcs.setdefault(None, []).insert(0, instruments.start)
    app.after_request(instruments.finish)
    app.teardown_request(instruments.teardown)

    app.add_url_rule("/metrics", "metrics", metrics, methods=["GET"])
    app.add_url_rule("/healthz", "healthz", healthz, methods=["GET"])
    app.add_url_rule("/readyz", "readyz", readyz, methods=["GET"])


def registry_of(app: QuartTrio) -> CollectorRegistry:
    """The app's own metrics registry (for embedding programs that export it elsewhere)."""
    return app.extensions[_REGISTRY_KEY]


#####################################################################
# Endpoints


async def metrics() -> Response:
    """Every metric in the Prometheus text format (version 0.0.4)."""
    body = generate_latest(registry_of(current_app))
    return Response(body, status=200, content_type=CONTENT_TYPE_PLAIN_0_0_4)


async def healthz() -> Response:
    """Liveness: the process answers HTTP; and which version it runs."""
    return respond({"status": "alive", "version": VERSION}, request)


async def readyz() -> Response:
    """Readiness: recovery finished and the engine accepts writes; 503 otherwise."""
    engine: Engine = current_app.extensions["pointspace.engine"]
    error = not_ready_reason(engine)
    if error is not None:
        return respond({"status": "not ready", "error": error}, request, 503)
    store = engine.store
    body: dict[str, Any] = {"status": "ready", "last_seq": engine.statistics().last_seq}
    body["durable"] = store is not None
    body["recovery"] = asdict(store.recovery) if store is not None else None
    return respond(body, request)


def not_ready_reason(engine: Engine) -> str | None:
    """Why ``engine`` cannot serve writes, or ``None`` when it can."""
    if engine.closed:
        return "the engine is closed; the server is shutting down"
    store = engine.store
    if store is not None and store.journal.statistics().broken:
        return (
            "the write-ahead log is broken after a storage failure and accepts no writes; "
            "free disk space or fix permissions, then restart the server (the server log has "
            "the details)"
        )
    return None


#####################################################################
# Per-request instruments


class _RequestInstruments:
    """The request counter and latency histogram, with their label children cached."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._requests = Counter(
            "pointspace_http_requests",
            "HTTP requests answered, by route (URL rule, or 'unmatched'), method and status.",
            ("route", "method", "status"),
            registry=registry,
        )
        self._latency = Histogram(
            "pointspace_http_request_duration_seconds",
            "Time from routing to the response being handed to the server, by route.",
            ("route",),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        #: (route, method, status) -> (counter child, histogram child), filled lazily.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def start(self) -> None:
        g.metrics_t0 = time.perf_counter()

    async def finish(self, response: Response) -> Response:
        self._record(response.status_code)
        return response

    async def teardown(self, exc: BaseException | None) -> None:
        # Quart runs after_request on error responses too (handle_exception finalizes its
        # 500), so this only sees requests that ended without a response: cancelled ones
        # (client gone, server shutting down) count as 499, as nginx names them.
        if not g.get("metrics_done"):
            self._record(499 if isinstance(exc, trio.Cancelled) else 500)

    def _record(self, status: int) -> None:
        t0 = g.get("metrics_t0")
        g.metrics_done = True
        rule = request.url_rule
        route = rule.rule if rule is not None else UNMATCHED
        method = request.method if request.method in _METHODS else "other"
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self._requests.labels(route, method, str(status)),
                self._latency.labels(route),
            )
            self._children[key] = children
        children[0].inc()
        if t0 is not None:
            children[1].observe(time.perf_counter() - t0)


#####################################################################
# Live values, read at scrape time


class EngineCollector(Collector):
    """Reads the engine's, the log's and the last snapshot's figures at each scrape."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def describe(self) -> list[Metric]:
        # Nothing to check for name clashes at registration beyond our own names; returning
        # no descriptions keeps registration from calling ``collect`` on a live engine.
        return []

    def collect(self) -> Iterator[Metric]:
        # Prometheus's convention for what is running (prometheus_build_info,
        # node_exporter_build_info): a gauge of 1 whose labels carry the facts.
        build = GaugeMetricFamily(
            "pointspace_build_info", "The running pointspace's version (value always 1).",
            labels=("version", "python"),
        )
        build.add_metric((VERSION, platform.python_version()), 1)
        yield build
        engine = self._engine
        stats = engine.statistics()
        router = stats.router
        yield _counter("events_ingested", "Counter events applied (all batches).", stats.events)
        yield _counter("commands_applied", "Commands logged and applied.", stats.commands)
        yield _gauge("log_last_seq", "Sequence number of the last command logged.", stats.last_seq)
        yield _gauge("entities", "Entities (users, counters, lists) held in memory.", router.entities)
        yield _gauge("live_actors", "Actor tasks running now (idle ones retire).", router.live_actors)
        yield _gauge("mailbox_depth", "Messages waiting in actor mailboxes now.", router.mailbox_depth)
        yield _gauge(
            "mailbox_depth_peak", "Deepest any actor mailbox has been.", router.peak_mailbox_depth
        )
        yield _counter("actor_messages_applied", "Messages applied by actors.", router.messages_applied)
        yield _counter(
            "actor_direct_reads", "Reads answered at once because their actor was idle.",
            router.direct_reads,
        )
        yield _counter("actor_activations", "Actor tasks started.", router.activations)
        yield _counter("actor_retirements", "Idle actor tasks retired.", router.retirements)
        yield _counter("actor_failures", "Actor tasks that failed with a bug.", router.failures)
        yield _gauge(
            "ready", "1 while the engine accepts writes, else 0.", not_ready_reason(engine) is None
        )

        store = engine.store
        if store is None:
            return
        wal = store.journal.statistics()
        info = GaugeMetricFamily(
            "pointspace_log_info", "The log's fsync policy (value always 1).", labels=("policy",)
        )
        info.add_metric((str(wal.policy),), 1)
        yield info
        yield _gauge("log_written_seq", "Last sequence number written to the log file.", wal.written_seq)
        yield _gauge("log_durable_seq", "Last sequence number known fsynced.", wal.durable_seq)
        yield _gauge("log_buffered_bytes", "Log bytes waiting to be written.", wal.buffered_bytes)
        yield _counter("log_written_bytes", "Bytes written to log segments.", wal.bytes_written)
        yield _counter("log_fsyncs", "fsync calls on log segments.", wal.fsync_count)
        if wal.last_fsync_latency_s is not None:
            yield _gauge(
                "log_last_fsync_seconds", "Duration of the last log fsync.", wal.last_fsync_latency_s
            )
        yield _gauge("log_segments", "Log segment files on disk.", wal.segments)
        yield _gauge("log_broken", "1 once a storage failure broke the log, else 0.", wal.broken)

        recovery = store.recovery
        yield _gauge("recovery_seconds", "Time recovery took at start.", recovery.seconds)
        yield _gauge(
            "recovery_replayed_records", "Log records replayed at start.", recovery.replayed_records
        )

        last = store.last_snapshot
        if last is None:
            return
        yield _gauge(
            "snapshot_age_seconds", "Seconds since the last snapshot was written.",
            max(0.0, time.time() - last.created),
        )
        yield _gauge("snapshot_size_bytes", "Size of the last snapshot file.", last.bytes)
        yield _gauge("snapshot_items", "Entities in the last snapshot.", last.items)
        yield _gauge(
            "snapshot_duration_seconds", "Time the last snapshot took to write (or load).",
            last.seconds,
        )
        yield _gauge("snapshot_start_seq", "Log sequence number the last snapshot covers.", last.start_seq)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"pointspace_{name}", doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"pointspace_{name}", doc, value=float(value))
