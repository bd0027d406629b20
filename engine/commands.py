"""Commands: validated mutations, which are also the write-ahead log's records.

Theory of operation
-------------------
Every mutation the engine accepts is one command: a frozen value that was validated as a
whole (``engine/events.py``) before it was built. Writing a command means: route it into
per-entity shares (which may still refuse it, before anything is logged), append it to the
journal, and send each entity it touches its share as one message -- in one synchronous step
(``engine/journal.py``). Recovery decodes the same records and sends the same messages, so
live writes and replay share one code path: :meth:`Command.route`. A command that fails
inside an entity (a list that does not exist) fails the same way on replay and changes
nothing either time.

Each share checks the entity's ``applied_seq`` first. A snapshot is taken while writes go on,
entity by entity, and records the sequence number each entity had applied; replay starts at
the snapshot's position and skips, per entity, what that entity already had (page LSNs in
ARIES do the same for database pages).

Record encoding: msgpack ``[op, payload]``. Counter values are validated to 64 bits, so a
record never holds an integer msgpack cannot carry. A counter batch's record (a thousand
tuples) is written by ``engine/record_encoding.pyx``, in C, as the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import msgpack

from engine.actors import Share, ShareOperation
from engine.counters import GlobalCounter, UserCounters
from engine.events import User, UserEvent, group_by_user
from engine.partition_counters import share_events
from engine.record_encoding import pack_rows

EntityKey = tuple[str, Any]
Operation = Callable[[Any], Any]

USER = "user"
COUNTER = "count"


class Command:
    """Base of all commands. Subclasses are frozen dataclasses registered by ``op``."""

    op: ClassVar[str]

    def to_plain(self) -> Any:
        raise NotImplementedError

    def encode(self) -> bytes:
        """The command's log record: msgpack ``[op, to_plain()]``."""
        return msgpack.packb([self.op, self.to_plain()], use_bin_type=True)

    @classmethod
    def from_plain(cls, plain: Any) -> Command:
        raise NotImplementedError

    def route(self, seq: int, router: Any = None) -> dict[Any, Callable[..., Any]]:
        """Each touched entity and the operation that applies this command's share to it.

        Keys are entity keys, or :class:`engine.actors.Share` for a command that sends one
        message per partition (``IngestBatch``). ``router`` is for commands that place their
        shares or create an entity from another's turn (a list clone); others ignore it.
        """
        raise NotImplementedError

    def size(self) -> int:
        """Events or items in this command (for metrics)."""
        return 1


_REGISTRY: dict[str, type[Command]] = {}


def register(cls: type[Command]) -> type[Command]:
    _REGISTRY[cls.op] = cls
    return cls


def encode_command(command: Command) -> bytes:
    return command.encode()


def decode_command(record: bytes) -> Command:
    """Decode one log record; ``ValueError`` if it is not a known command."""
    op, plain = msgpack.unpackb(record, raw=False, strict_map_key=False)
    try:
        cls = _REGISTRY[op]
    except KeyError:
        raise ValueError(f"unknown command {op!r} in log record") from None
    return cls.from_plain(plain)


############################################################################################
# Counter commands
############################################################################################


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class IngestBatch(Command):
    """A batch of validated per-user counter events (``engine/events.py``)."""

    op: ClassVar[str] = "ingest"
    events: list[UserEvent]

    def to_plain(self) -> Any:
        return self.events

    def encode(self) -> bytes:
        # msgpack's bytes, written in C: 0.22 -> 0.10 us per event (bench/bench_ingest.py
        # --validators also times it)
        return pack_rows(self.op, self.events)

    @classmethod
    def from_plain(cls, plain: Any) -> IngestBatch:
        return cls(events=[tuple(e) for e in plain])  # type: ignore[misc]

    def route(self, seq: int, router: Any = None) -> dict[Any, Callable[..., Any]]:
        """One :class:`Share` per partition of users the batch touches, each user's events
        in batch order; one message per user where users are not partitioned."""
        boards = router.hooks.get("boards") if router is not None else None
        if boards is not None and not boards.by_metric:
            boards = None
        partitions = router.partitions(USER) if router is not None else 0
        if partitions == 0:
            groups = group_by_user(self.events)
            if boards is None:
                return {(USER, user): _apply_at(seq, events) for user, events in groups.items()}
            return {
                (USER, user): _apply_then_feed_boards(seq, events, user, boards, router)
                for user, events in groups.items()
            }
        if boards is None:
            # The users' packed stores take the batch's own tuples (apply_rows).
            operation = _share_at(seq, None, router)
            return {Share(USER, partition, items): operation
                    for partition, items in share_events(self.events, partitions).items()}
        # group_by_user, with each new user also placed in its partition's share (the
        # placement is Router._actor_key's: hash(id) % partitions).
        users: dict[User, list[tuple[Any, ...]]] = {}
        shares: dict[int, dict[Any, list[tuple[Any, ...]]]] = {}
        for user, metric, atid, aid, ts, value, ts1, mode in self.events:
            group = users.get(user)
            if group is None:
                group = users[user] = []
                partition = hash(user) % partitions
                share = shares.get(partition)
                if share is None:
                    share = shares[partition] = {}
                share[user] = group
            group.append((metric, atid, aid, ts, value, ts1, mode))
        operation = _share_at(seq, boards, router)
        return {Share(USER, partition, items): operation for partition, items in shares.items()}

    def size(self) -> int:
        return len(self.events)


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class CountBatch(Command):
    """Increments of global counters: ``(name, ts, value)`` each."""

    op: ClassVar[str] = "count"
    counts: list[tuple[str, int, int]]

    def to_plain(self) -> Any:
        return self.counts

    @classmethod
    def from_plain(cls, plain: Any) -> CountBatch:
        return cls(counts=[tuple(c) for c in plain])  # type: ignore[misc]

    def route(self, seq: int, router: Any = None) -> dict[EntityKey, Operation]:
        groups: dict[str, list[tuple[int, int]]] = {}
        for name, ts, value in self.counts:
            groups.setdefault(name, []).append((ts, value))
        return {(COUNTER, name): _apply_at(seq, items) for name, items in groups.items()}

    def size(self) -> int:
        return len(self.counts)


def _share_at(seq: int, boards: Any, router: Any) -> ShareOperation:
    """The per-user operation of an ingest :class:`Share`: as ``_apply_at`` (or
    ``_apply_then_feed_boards`` when live boards exist) for each user of the share. Without
    boards, items are the batch's own ``UserEvent`` tuples (``share_events``), and the
    operation's ``whole`` applies the share in one call (engine/actors.py)."""
    if boards is None:

        def apply(user: Any, state: Any, events: list[Any]) -> None:
            if state.applied_seq < seq:
                state.apply_rows(events)
                state.applied_seq = seq

        def whole(states: dict[Any, Any], items: dict[Any, list[Any]]) -> None:
            # Every user of a share lives in one partition, so in one packed store.
            states[next(iter(items))].store.apply_share_at(seq, items, states)

        apply.whole = whole  # type: ignore[attr-defined]
        return apply

    def apply_then_feed(user: Any, state: UserCounters, events: list[Any]) -> None:
        if state.applied_seq < seq:
            state.apply(events)
            state.applied_seq = seq
        boards.after_write(router, user, state, events)

    return apply_then_feed


def _apply_then_feed_boards(seq: int, events: list[Any], user: Any, boards: Any, router: Any) -> Operation:
    """As ``_apply_at``, then forward the user's new scores to live leaderboards
    (``engine/boards.py``) -- also for a record the state already held, so that boards restored
    from a snapshot converge."""

    def operation(state: UserCounters) -> None:
        if state.applied_seq < seq:
            state.apply(events)
            state.applied_seq = seq
        boards.after_write(router, user, state, events)

    return operation


def _apply_at(seq: int, items: list[Any]) -> Operation:
    """An operation applying ``items`` to a state unless it already applied record ``seq``."""

    def operation(state: UserCounters | GlobalCounter) -> None:
        if state.applied_seq < seq:
            state.apply(items)
            state.applied_seq = seq

    return operation


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class ExpireBuckets(Command):
    """Retention: every counter drops buckets older than its level's cutoff.

    ``cutoffs`` holds one Unix second per level, second .. month (0 keeps that level whole);
    computed from the clock when the engine's retention timer fires, and logged, so a replay
    drops exactly what the live run dropped.
    """

    op: ClassVar[str] = "expire"
    cutoffs: list[int]

    def to_plain(self) -> Any:
        return self.cutoffs

    @classmethod
    def from_plain(cls, plain: Any) -> ExpireBuckets:
        return cls(cutoffs=list(plain))

    def route(self, seq: int, router: Any = None) -> dict[EntityKey, Operation]:
        def expire(state: UserCounters | GlobalCounter) -> int:
            if state.applied_seq >= seq:
                return 0
            removed = state.expire(self.cutoffs)
            state.applied_seq = seq
            return removed

        return {(ns, ident): expire for ns in (USER, COUNTER) for ident in router.ids(ns)}
