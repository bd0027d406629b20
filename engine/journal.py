"""The engine's view of durability: a journal it appends commands to, and nothing more.

``engine/`` never imports ``snapshots/``; instead it declares here the two small interfaces it
needs, and ``snapshots/`` implements them (the write-ahead log and the snapshot files). Tests
and in-memory embedding use :class:`MemoryJournal`, which numbers records and forgets them.

Ordering contract (why ``append`` is synchronous): the engine appends a batch to the journal and
dispatches its per-entity messages to the actors' mailboxes in one synchronous step, so the
order of records in the log is exactly the order in which every actor applies them. Replay then
feeds the same records, in log order, through the same ``apply`` code.
"""

from __future__ import annotations

from typing import Protocol


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
