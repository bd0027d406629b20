"""One asyncio event loop in a thread of its own, called from trio.

Theory of operation
-------------------
nats-py is asyncio-only and the server runs on trio. Rather than run trio inside asyncio (or
the reverse, as trio-asyncio does), the asyncio loop lives in one daemon thread, started and
stopped with the bridge (:meth:`AsyncioBridge.open`), and everything nats-py does runs there.
A trio task calls :meth:`AsyncioBridge.call` with a coroutine function: the coroutine becomes
a task on the loop (``call_soon_threadsafe``), and the task's end wakes the trio task through
the trio token (``TrioToken.run_sync_soon`` is thread-safe). A call costs
two cross-thread wake-ups (tens of microseconds), so callers cross once per batch, never per
event.

**Cancellation.** A trio task cancelled while it waits cancels the asyncio task and waits
(shielded) until that task has finished, its cleanup included, then raises
``trio.Cancelled``: when ``call`` returns or raises, nothing it started is still running --
trio's rule, kept across the bridge -- with one bound: a task that swallows its
cancellation (nats-py does, in places) releases the caller after ``cancel_grace_s``, with a
warning, rather than hanging it for ever. (``run_coroutine_threadsafe``'s future would not do: it
reports "cancelled" at once, while the task is still unwinding.) A
coroutine that already completed when the cancellation arrived has done its work; its result
is dropped (JetStream publishes carry a message id for that reason: a retried publish is
recognised).

**Backpressure.** There are no callbacks from asyncio into trio: trio always asks (a fetch of
at most N messages, a publish that waits for its acknowledgement), so a slow trio consumer
slows the asyncio side by asking less often, and nothing queues without bound between them.

**Closing.** Leaving :meth:`AsyncioBridge.open` cancels whatever still runs on the loop,
waits for it, stops the loop and joins the thread. A call after that raises
``trio.ClosedResourceError``; a call in flight when the loop is closed under it raises
``trio.BrokenResourceError``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio

__all__ = ["AsyncioBridge"]

T = TypeVar("T")

log = logging.getLogger("pointspace.cluster")


class AsyncioBridge:
    """An asyncio loop in a daemon thread; :meth:`call` runs coroutines on it from trio."""

    #: Seconds a cancelled call waits for its asyncio task to end. nats-py catches
    #: ``CancelledError`` in places (closing, reconnecting) and goes on awaiting; past this
    #: the caller is released and the task left to the loop (cancelled again at close).
    cancel_grace_s = 5.0

    def __init__(self, loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        self._loop = loop
        self._thread = thread
        self._closed = False

    @classmethod
    @asynccontextmanager
    async def open(cls, name: str = "pointspace-asyncio") -> AsyncIterator[AsyncioBridge]:
        """Start the loop's thread; on exit, cancel what still runs there and join it."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=name, daemon=True)
        thread.start()
        bridge = cls(loop, thread)
        try:
            yield bridge
        finally:
            with trio.CancelScope(shield=True):
                await bridge._close()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The asyncio loop (for code that must hand it to an asyncio library)."""
        return self._loop

    async def call(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """``await fn(*args)`` on the asyncio loop; its result, or its exception.

        Raises:
            trio.ClosedResourceError: the bridge was closed before the call.
            trio.BrokenResourceError: the bridge closed while the call was running.
        """
        if self._closed:
            raise trio.ClosedResourceError("the asyncio bridge is closed")
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        tasks: list[asyncio.Task[T]] = []  # written in the loop's thread only
        coroutine = fn(*args)

        def start() -> None:
            task = self._loop.create_task(coroutine)
            task.add_done_callback(lambda _: _wake(token, done))
            tasks.append(task)

        def cancel() -> None:  # scheduled after start(): call_soon_threadsafe keeps order
            tasks[0].cancel()

        try:
            self._loop.call_soon_threadsafe(start)
        except RuntimeError:  # the loop closed between the check above and now
            coroutine.close()
            raise trio.ClosedResourceError("the asyncio bridge is closed") from None
        try:
            await done.wait()
        except trio.Cancelled:
            # Wait for the task itself to end, not for a future that says "cancelled" at
            # once: the coroutine's own cleanup runs before the caller goes on.
            self._loop.call_soon_threadsafe(cancel)
            with trio.CancelScope(shield=True), trio.move_on_after(self.cancel_grace_s) as waited:
                await done.wait()
            if waited.cancelled_caught:
                log.warning("an asyncio task did not end within %g s of its cancellation (%s); "
                            "left to the loop", self.cancel_grace_s, getattr(fn, "__qualname__", fn))
            raise
        task = tasks[0]
        if task.cancelled():
            # Not cancelled by us (we would have raised above): the loop shut down under it.
            raise trio.BrokenResourceError("the asyncio bridge closed during the call")
        return task.result()

    async def _close(self) -> None:
        if self._closed:
            return
        self._closed = True

        async def cancel_all() -> None:
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            for task in tasks:
                task.cancel()
            if tasks:
                _, stuck = await asyncio.wait(tasks, timeout=self.cancel_grace_s)
                if stuck:
                    log.warning("%d asyncio tasks ignored cancellation at close; the loop stops "
                                "under them", len(stuck))

        if self._thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(cancel_all(), self._loop)
            await trio.to_thread.run_sync(future.result)
            self._loop.call_soon_threadsafe(self._loop.stop)
            await trio.to_thread.run_sync(self._thread.join)
        self._loop.close()


def _wake(token: trio.lowlevel.TrioToken, done: trio.Event) -> None:
    """From the loop's thread: set ``done`` in trio's (nothing to wake once trio has ended)."""
    try:
        token.run_sync_soon(done.set)
    except trio.RunFinishedError:
        pass
