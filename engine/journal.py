"""The engine's view of durability: a journal it appends commands to, and what a store may ask.

The dependency between the core and its persistence edge goes one way. ``snapshots/`` never
imports the ``Engine``: it sees an engine only as the :class:`Recoverable` declared here (what
recovery, replay and snapshots need of it), and implements :class:`Journal` (the write-ahead
log). ``engine/`` reaches ``snapshots/`` at one place only, ``Engine.open`` with a data
directory. Tests and in-memory embedding use :class:`MemoryJournal`, which numbers records and
forgets them.

Ordering contract (why ``append`` is synchronous): the engine appends a batch to the journal and
dispatches its per-entity messages to the actors' mailboxes in one synchronous step, so the
order of records in the log is exactly the order in which every actor applies them. Replay then
feeds the same records, in log order, through the same ``apply`` code.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable


class Journal(Protocol):
    """Where accepted mutations go before they are acknowledged."""

    def append(self, record: bytes) -> int:
        """Buffer one record (an encoded command) and return its sequence number.

        Sequence numbers start at 1 and increase by one per record, across restarts. Never waits:
        a record is handed to the log before any actor applies it.

        Raises:
            StorageFailure: the log is broken (a previous write failed); nothing was buffered.
        """
        ...

    async def wait_durable(self, seq: int) -> None:
        """Return once record ``seq`` is as durable as the configured policy promises.

        Under ``always`` that means fsynced (concurrent callers share one fsync: group commit);
        under ``everysec`` and ``no`` it returns at once.
        """
        ...

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest appended record (0 when none)."""
        ...


@runtime_checkable
class Renumbering(Protocol):
    """A journal whose numbering follows what is loaded or replayed into its engine from
    elsewhere (a snapshot, another node's log), rather than only what it appended itself."""

    def advance_to(self, seq: int) -> None:
        """Continue numbering after ``seq``."""
        ...


class MemoryJournal:
    """A journal that keeps nothing: numbering only, for in-memory engines and tests."""

    def __init__(self, last_seq: int = 0) -> None:
        self._last_seq = last_seq

    def append(self, record: bytes) -> int:
        self._last_seq += 1
        return self._last_seq

    async def wait_durable(self, seq: int) -> None:
        return None

    @property
    def last_seq(self) -> int:
        return self._last_seq

    def advance_to(self, seq: int) -> None:
        """Continue numbering after ``seq`` (state loaded from elsewhere already holds it)."""
        self._last_seq = max(self._last_seq, seq)


class Recoverable(Protocol):
    """What a store (``snapshots/store.py``) needs of the engine it persists.

    Recovery installs snapshot items with ``load_snapshot_item`` before any actor runs, then
    feeds log records through ``replay``; a snapshot reads ``iter_snapshot_items`` from the
    position ``stable_seq`` on. ``store`` is where the engine exposes its store to the web
    layer (``/api/admin/snapshot``, ``/metrics``).
    """

    store: Any

    @property
    def last_seq(self) -> int:
        """The newest record appended to the journal (0 when none)."""
        ...

    def stable_seq(self) -> int:
        """The oldest log position some entity may not have applied yet."""
        ...

    def iter_snapshot_items(self) -> Iterator[tuple[str, Any, int, Any]]:
        """``(namespace, id, applied_seq, plain state)`` for every entity, one at a time."""
        ...

    def load_snapshot_item(self, namespace: str, ident: Any, applied_seq: int, plain: Any) -> None:
        """Install one entity from a snapshot, before any actor for it runs."""
        ...

    async def replay(self, seq: int, record: bytes) -> None:
        """Apply one log record through the engine's ordinary dispatch."""
        ...
