"""A bounded mailbox that an actor drains whole: many messages per wake-up.

Theory of operation
-------------------
Trio costs a few microseconds per task switch, so an actor that woke up once per message
would spend more time switching than counting. A :class:`Mailbox` is a deque plus two parking
lots: senders append without waiting while there is room (``put_nowait``), and the actor's
``take_all`` hands back *everything* queued so far in one list, waking at most once per burst.

Bounded, for backpressure: ``put_nowait`` raises ``trio.WouldBlock`` when ``capacity`` messages
are queued, and ``put`` waits for room. The engine's dispatcher uses ``put_nowait`` first so
that, in the common case, appending to the log and queuing every actor's share of a batch is
one synchronous step (see ``engine/journal.py`` for why that matters).

Closing: ``close()`` is what the router does to retire an idle actor; ``take_all`` then returns
an empty list once the queue is drained, and ``put_nowait`` raises ``trio.ClosedResourceError``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

import trio

T = TypeVar("T")

#: Messages an actor may have queued before senders wait. An ingest batch sends one message
#: per partition (``engine.actors.Share``), but other commands and reads send one per entity,
#: so a command over every user can queue a few thousand messages per actor; 4096 absorbs that
#: while keeping a stalled actor from buffering without bound (Akka's bounded mailboxes
#: default to 1000; Orleans does not bound them). The bound counts messages, not events: the
#: events of queued ingest shares are held by their waiting requests anyway.
DEFAULT_CAPACITY = 4096


@dataclass(frozen=True, slots=True)
class MailboxStatistics:
    depth: int
    peak_depth: int
    capacity: int
    closed: bool


class Mailbox(Generic[T]):
    """A bounded FIFO of messages for one receiver."""

    __slots__ = ("_items", "_capacity", "_not_empty", "_not_full", "_closed", "_peak")

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._items: deque[T] = deque()
        self._capacity = capacity
        self._not_empty = trio.lowlevel.ParkingLot()
        self._not_full = trio.lowlevel.ParkingLot()
        self._closed = False
        self._peak = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def put_nowait(self, item: T) -> None:
        """Queue ``item`` or raise ``trio.WouldBlock`` if the mailbox is full.

        Raises:
            trio.ClosedResourceError: the mailbox was closed.
            trio.WouldBlock: ``capacity`` messages are already queued.
        """
        if self._closed:
            raise trio.ClosedResourceError("mailbox is closed")
        items = self._items
        if len(items) >= self._capacity:
            raise trio.WouldBlock
        items.append(item)
        if len(items) > self._peak:
            self._peak = len(items)
        if self._not_empty:
            self._not_empty.unpark()

    def put_forwarded(self, item: T) -> None:
        """Queue ``item`` even past capacity: for messages one actor sends another during its
        turn, which cannot wait. They are bounded by the ingress that caused them (each
        ingress message forwards at most a few), and backpressure applies at ingress.

        Raises:
            trio.ClosedResourceError: the mailbox was closed.
        """
        if self._closed:
            raise trio.ClosedResourceError("mailbox is closed")
        self._items.append(item)
        if len(self._items) > self._peak:
            self._peak = len(self._items)
        if self._not_empty:
            self._not_empty.unpark()

    async def put(self, item: T) -> None:
        """Queue ``item``, waiting for room if the mailbox is full."""
        while True:
            try:
                self.put_nowait(item)
            except trio.WouldBlock:
                await self._not_full.park()
            else:
                await trio.lowlevel.checkpoint_if_cancelled()
                return

    async def take_all(self) -> list[T]:
        """Wait until at least one message is queued, then return all queued messages.

        Returns an empty list only when the mailbox is closed and drained.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._items:
            if self._closed:
                return []
            await self._not_empty.park()
        batch = list(self._items)
        self._items.clear()
        if self._not_full:
            self._not_full.unpark_all()
        return batch

    def close(self) -> None:
        """Refuse further messages; the receiver drains what is queued and then sees ``[]``."""
        self._closed = True
        self._not_empty.unpark_all()
        self._not_full.unpark_all()

    def statistics(self) -> MailboxStatistics:
        return MailboxStatistics(len(self._items), self._peak, self._capacity, self._closed)
