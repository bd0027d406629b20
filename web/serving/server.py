"""Run the server: open the engine, build the app, serve it with Hypercorn's trio worker.

One trio run owns everything: the engine's nursery (actors, log flusher, snapshot timer) and
Hypercorn's serving tasks. SIGINT or SIGTERM stops accepting requests, lets the engine write
its final snapshot, and exits.

Theory of operation: the connection edge
----------------------------------------
Hypercorn's trio worker (``hypercorn.trio.run.worker_serve``) accepts every connection the
kernel hands it; it has no cap on open connections. :func:`serve` is that worker's serving
loop (lifespan, listeners, one ``TCPServer`` per connection, graceful shutdown), with one
change: its listeners are :class:`CappedListener`, which take a slot from a semaphore of
``max_connections`` *before* accepting, and a connection's handler gives the slot back when
it ends. The N+1th client completes its TCP handshake in the kernel and waits in the accept
queue (``backlog`` deep) until a connection closes; the server holds no memory for it. Only
plain-TCP binds are served (pointspace configures no TLS; put a proxy in front for it).

Timeouts at this layer (the request body's own are in ``web/bodies.py``):

* ``keep_alive_timeout`` (75 s, nginx's ``keepalive_timeout``) closes a connection that has no
  request in flight and sends nothing (idle keep-alive).
* ``header_timeout_s`` (20 s, Apache mod_reqtimeout's ``header=20``) closes a connection whose
  request headers started arriving and are not complete that long after their first byte:
  hypercorn counts a connection idle until a request's headers are complete, so without it a
  client trickling partial headers (slowloris) held its slot for the whole keep-alive time,
  and ``max_connections`` such clients kept everyone out. :class:`_TCPServer` adds it.
* ``h11_max_incomplete_size`` (16 KiB, h11's own default) bounds the headers of one request
  (431 past it); ``h2_max_inbound_frame_size`` and ``max_app_queue_size`` stay hypercorn's.
* ``read_timeout`` is **not** set: it bounds every wait for client bytes, including the
  minutes a client rightly sends nothing while it downloads a snapshot export or a backup,
  and would cut those downloads. Slow bodies are cut by the body guard instead.
"""

from __future__ import annotations

import errno
import gc
import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState, LifespanState
from hypercorn.utils import ShutdownError, raise_shutdown, repr_socket_addr, wrap_app
from quart_trio import QuartTrio

from engine.engine import Engine
from engine.uniques import UniqueSettings
from web.app import create_app
from web.heap import pin_mmap_threshold
from web.serving.logs import AccessLog
from web.serving.settings import Settings
from web.version import VERSION

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


class StartupError(Exception):
    """The server cannot start for a reason the operator fixes (a busy port, say).

    ``setting`` names the setting at fault, so the CLI can say where its value came from
    (a flag, an environment variable or the config file).
    """

    def __init__(self, message: str, setting: str) -> None:
        super().__init__(message)
        self.setting = setting


def hypercorn_config(settings: Settings) -> Config:
    """Hypercorn's settings for ``settings``: one plain-TCP bind, our timeouts, and its
    logging routed through ours (``web/serving/logs.py``)."""
    config = Config()
    host = f"[{settings.host}]" if ":" in settings.host and not settings.host.startswith("[") else settings.host
    config.bind = [f"{host}:{settings.port}"]
    config.worker_class = "trio"
    # The access log is ours (logs.AccessLog: one line per request, JSON in JSON mode);
    # hypercorn's logs a request twice when the connection closes as the answer ends.
    config.accesslog = None
    # A Logger object is used as it is: no handler of hypercorn's own (which wrote text
    # lines beside our JSON, and every line twice through the root's handler too).
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 10
    config.keep_alive_timeout = 75  # nginx's keepalive_timeout
    config.h11_max_incomplete_size = 16 * 1024  # h11's default (node.js: 80 KiB)
    config.backlog = 511  # nginx's listen backlog on Linux: room for clients over the cap
    return config


def bind_sockets(config: Config, settings: Settings) -> list[socket.socket]:
    """Bind (not yet listen on) the configured address.

    Done before recovery: a busy port or an unknown host is reported at once instead of
    after minutes of replay, and no client is accepted into a queue before the engine is
    ready (the socket listens only once it is).

    Raises:
        StartupError: the address cannot be bound (in use, not local, permission).
    """
    try:
        return list(config.create_sockets().insecure_sockets)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        hint = ""
        if exc.errno == errno.EADDRINUSE:
            hint = "; another process listens there (another pointspace?): stop it or choose another --port"
        elif exc.errno == errno.EACCES:
            hint = "; ports below 1024 need privileges: choose a port above 1023"
        setting = "port" if exc.errno in (errno.EADDRINUSE, errno.EACCES) else "host"
        raise StartupError(
            f"cannot listen on {settings.host}:{settings.port}: {reason}{hint}", setting
        ) from None


async def run_server(settings: Settings, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until SIGINT/SIGTERM. ``task_status.started()`` once the port listens.

    Raises:
        StartupError: the address cannot be bound.
    """
    config = hypercorn_config(settings)
    sockets = bind_sockets(config, settings)
    try:
        await _run_bound(settings, config, sockets, task_status)
    finally:
        for sock in sockets:
            sock.close()


async def _run_bound(
    settings: Settings, config: Config, sockets: list[socket.socket], task_status: trio.TaskStatus[None]
) -> None:
    options: dict[str, object] = {"fsync": settings.fsync} if settings.data_dir is not None else {}
    gc.set_threshold(100_000, 50, 1000)  # before recovery too: replay is 3x faster with it
    uniques = UniqueSettings(
        levels=settings.unique_levels,
        exact_limit=None if settings.unique_exact_limit < 0 else settings.unique_exact_limit,
        lg_k=settings.unique_lg_k, retention=settings.unique_retention,
    )
    async with Engine.open(settings.data_dir, retention=settings.retention or None,
                           uniques=uniques, stats_gauge_period_s=settings.stats_gauge_period_s,
                           **options) as engine:
        tune_gc()
        pin_mmap_threshold()  # bulk loads' temporaries stay out of the main heap (web/heap.py)
        app = create_app(engine, settings)
        where = str(settings.data_dir) if settings.data_dir is not None else "memory only"
        await serve_until_signal(app, settings, config, sockets, task_status,
                                 f"data: {where}, fsync: {settings.fsync}")


async def serve_until_signal(
    app: QuartTrio, settings: Settings, config: Config, sockets: list[socket.socket],
    task_status: trio.TaskStatus[None], describe: str,
) -> None:
    """Serve ``app`` on the bound ``sockets`` until SIGINT or SIGTERM, then return (after
    hypercorn's graceful shutdown). ``describe`` goes into the "listening" line."""
    if settings.access_log:
        app.asgi_app = AccessLog(app.asgi_app)  # type: ignore[method-assign]
    shutdown = trio.Event()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def wait_for_signal() -> None:
                async for signum in signals:
                    log.info("received %s, shutting down", signal.Signals(signum).name)
                    shutdown.set()
                    return

            nursery.start_soon(wait_for_signal)

            def listening(addresses: list[str]) -> None:
                # Only now: the sockets listen, so the line is never a false promise.
                log.info("pointspace %s listening on %s (%s, at most %d connections)", VERSION,
                         ", ".join(f"http://{a}" for a in addresses), describe, settings.max_connections)
                task_status.started()

            await serve(app, config, max_connections=settings.max_connections,
                        header_timeout_s=settings.header_timeout_s,
                        shutdown_trigger=shutdown.wait, sockets=sockets, on_listening=listening)
            nursery.cancel_scope.cancel()


############################################################################################
# Serving with a cap on open connections


class CappedListener(trio.abc.Listener[trio.SocketStream]):
    """A listener that accepts only while a slot is free: ``accept`` takes one of ``slots``
    first, so past the cap clients wait in the kernel's accept queue, not in our memory.
    The caller gives the slot back when the connection ends (``slots.release()``)."""

    def __init__(self, inner: trio.SocketListener, slots: trio.Semaphore) -> None:
        self.inner = inner
        self.slots = slots

    async def accept(self) -> trio.SocketStream:
        await self.slots.acquire()
        try:
            return await self.inner.accept()
        except BaseException:
            self.slots.release()
            raise

    async def aclose(self) -> None:
        await self.inner.aclose()


class _TCPServer(TCPServer):
    """Hypercorn's connection handler, with a deadline on request headers (module docstring)
    and its socket close shielded from cancellation.

    The header deadline: hypercorn runs an idle timer (``_idle_timeout``) while no request is
    in flight and stops it when a request's headers are complete (an ``Updated(idle=False)``
    event). Here the first bytes that arrive while idle start a second clock of
    ``header_timeout_s`` inside that timer; whichever ends first closes the connection. Bytes
    of a request already in flight (its body) never start it: slow bodies are
    ``web/bodies.py``'s.

    Hypercorn closes a connection from the task that sent its last event. After an answer
    given before the request body was read to its end (a 408 or 413 mid-upload, an error
    before the view read the body), that task is the app's own: hypercorn then tells the app
    the request is over, quart-trio cancels the request's tasks at once, and the close is
    cancelled half-way -- the connection stays open with nothing reading it, holding a slot,
    until the client goes away (tests/web/test_security_http.py reproduces it). Shutting a
    socket down does not block, so the shield costs no wait.
    """

    def __init__(self, *args: Any, header_timeout_s: float, **kwargs: Any) -> None:
        self._header_timeout_s = header_timeout_s
        self._idle = True  # hypercorn starts the idle timer before reading anything
        self._headers_started = trio.Event()
        super().__init__(*args, **kwargs)

    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, Updated):
            self._idle = event.idle
            if event.idle:
                self._headers_started = trio.Event()  # before the timer restarts with it
        await super().protocol_send(event)

    async def _read_data(self) -> None:
        # hypercorn's loop (it sets no read_timeout for us: module docstring), noting the
        # first bytes that arrive while idle.
        while True:
            try:
                data = await self.stream.receive_some(MAX_RECV)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                break
            if data and self._idle:
                self._headers_started.set()
            await self.protocol.handle(RawData(bytes(data)))
            if data == b"":
                break
        await self.protocol.handle(Closed())

    async def _idle_timeout(self) -> None:
        started = self._headers_started
        with trio.move_on_after(self.config.keep_alive_timeout):
            async with trio.open_nursery() as nursery:

                async def header_clock() -> None:
                    await started.wait()
                    await trio.sleep(self._header_timeout_s)
                    nursery.cancel_scope.cancel()

                async def terminated() -> None:
                    await self.context.terminated.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(header_clock)
                nursery.start_soon(terminated)
        with trio.CancelScope(shield=True):
            await self._initiate_server_close()

    async def _close(self) -> None:
        with trio.CancelScope(shield=True):
            await super()._close()


async def serve(
    app: QuartTrio,
    config: Config,
    *,
    max_connections: int,
    header_timeout_s: float = 20.0,
    shutdown_trigger: Callable[[], Awaitable[None]],
    sockets: list[socket.socket] | None = None,
    on_listening: Callable[[list[str]], None] | None = None,
) -> None:
    """Serve ``app`` as ``hypercorn.trio.serve`` does, with at most ``max_connections``
    client connections open at once (module docstring).

    ``sockets``: already bound (``bind_sockets``), else bound here from ``config``.
    ``on_listening``: called with the addresses once every socket listens (else a line is
    logged).

    Follows ``hypercorn.trio.run.worker_serve`` (hypercorn 0.16-0.18) step for step, without
    TLS, QUIC, statsd and ``max_requests``, which pointspace does not configure.
    """
    if max_connections < 1:
        raise ValueError(f"max_connections must be >= 1, got {max_connections}")
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")  # type: ignore[arg-type]
    lifespan_state: LifespanState = {}
    lifespan = Lifespan(wrapped, config, lifespan_state)
    context = WorkerContext(None)
    slots = trio.Semaphore(max_connections, max_value=max_connections)

    async def handle(stream: trio.SocketStream) -> None:
        try:
            await _TCPServer(wrapped, config, context, ConnectionState(lifespan_state.copy()), stream,
                             header_timeout_s=header_timeout_s)
        finally:
            slots.release()

    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as server_nursery:
            if sockets is None:
                sockets = list(config.create_sockets().insecure_sockets)
            listeners = []
            addresses = []
            for sock in sockets:
                sock.listen(config.backlog)
                listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
                listeners.append(CappedListener(listener, slots))
                addresses.append(repr_socket_addr(sock.family, sock.getsockname()))
            if on_listening is not None:
                on_listening(addresses)
            else:
                log.info("serving on %s, at most %d connections",
                         ", ".join(f"http://{a}" for a in addresses), max_connections)
            try:
                async with trio.open_nursery(strict_exception_groups=True) as nursery:
                    nursery.start_soon(raise_shutdown, shutdown_trigger)
                    nursery.start_soon(raise_shutdown, context.terminate.wait)
                    nursery.start_soon(
                        partial(trio.serve_listeners, handle, listeners, handler_nursery=server_nursery)
                    )
                    await trio.sleep_forever()
            except BaseExceptionGroup as error:
                _, others = error.split((ShutdownError, KeyboardInterrupt))
                if others is not None:
                    raise others from None  # the ones that are not a shutdown, as hypercorn does
            finally:
                await context.terminated.set()
                server_nursery.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
