"""The engine: the one API that the HTTP layer, the CLI and embedding programs all use.

Theory of operation
-------------------
``async with Engine.open(data_dir) as engine:`` starts a nursery that owns every actor task
(``engine/actors.py``), recovers state from ``data_dir`` when one is given (the newest snapshot,
then the log after it; see ``snapshots/``), and on exit stops the actors and, with a data
directory, writes a final snapshot.

The path of a write::

    engine.ingest(events)                    validate the whole batch (engine/events.py)
      -> IngestBatch                         a frozen command (engine/commands.py)
      -> command.route(seq)                  its per-entity shares (may still refuse it)
      -> journal.append(encoded command)     the log record, numbered seq    } one synchronous
      -> router.send_nowait(user, share)     each user's events, one message } step, in order
      -> actors apply their shares           UserCounters.apply (engine/counters.py)
      -> completion.wait()                   every touched actor has applied its share
      -> journal.wait_durable(seq)           fsynced under the ``always`` policy
      -> return                              acknowledged

Reads go through the same actors (``Router.ask``), so a read sent after a write to the same
user sees it. A read of an entity that was never written answers from an empty state without
creating anything.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from engine.actors import DEFAULT_IDLE_SECONDS, Completion, Namespace, Router, RouterStatistics
from engine.boards import (
    CreateBoard,
    Standing,
    check_board,
    due_rolls,
    element_id_of,
    rank_sums,
    registry_of,
)
from engine.commands import (
    COUNTER,
    USER,
    Command,
    CountBatch,
    ExpireBuckets,
    IngestBatch,
    decode_command,
    encode_command,
)
from engine.counters import GlobalCounter, UserCounters
from engine.errors import (
    Conflict,
    EngineClosed,
    InvalidInput,
    NotFound,
    PointspaceError,
    first_domain_error,
)
from engine.events import (
    User,
    UserEvent,
    check_ts,
    normalize_user,
    validate_count_events,
    validate_counter_events,
)
from engine.journal import Journal, MemoryJournal
from engine.lists import LIST, ListState
from engine.periods import load_zone, period_bounds

#: The kinds of entity, their empty states and their placement (engine/actors.py). Later
#: namespaces (statshub dimensions, Density spaces) register here.
NAMESPACES: list[Namespace] = [
    Namespace(USER, UserCounters),
    Namespace(COUNTER, GlobalCounter),
    Namespace(LIST, ListState, partitions=0, drop_vacant=True),  # an actor per ranked list
]

#: Namespace -> how a snapshot's plain form becomes a state again.
STATE_LOADERS: dict[str, Callable[[Any], Any]] = {
    USER: UserCounters.from_plain,
    COUNTER: GlobalCounter.from_plain,
    LIST: ListState.from_plain,
}


@dataclass(frozen=True, slots=True)
class UserResult:
    """One user's answer to a range query."""

    sums: dict[str, int]
    #: PSD's ``_atids`` (one activity type per contributing activity), when asked for.
    atids: list[int] | None = None


@dataclass(frozen=True, slots=True)
class Breakdown:
    """A per-period series: ``bounds`` has one more entry than each series."""

    bounds: list[int]
    series: dict[str, list[int]]

    @property
    def periods(self) -> list[tuple[int, int]]:
        """Inclusive (first second, last second) of each period."""
        b = self.bounds
        return [(b[i], b[i + 1] - 1) for i in range(len(b) - 1)]


@dataclass(frozen=True, slots=True)
class EngineStatistics:
    router: RouterStatistics
    commands: int
    events: int
    last_seq: int


class Engine:
    """Counters and ranked lists, each entity owned by an actor. Create with :meth:`open`."""

    def __init__(self, router: Router, journal: Journal) -> None:
        self._router = router
        self._journal = journal
        # Held while a command is appended and dispatched, so that log order is apply order
        # even when a full mailbox makes dispatch wait.
        self._dispatch_lock = trio.StrictFIFOLock()
        self._closed = False
        self._commands = 0
        self._events = 0
        #: Sequence numbers appended but not yet applied by every actor they touch.
        self._inflight: set[int] = set()
        #: The data directory's store when opened with one (``snapshots/store.py``).
        self.store: Any = None

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        data_dir: str | Path | None = None,
        *,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
        retention: Mapping[str, int] | None = None,
        retention_every_s: float = 3600.0,
        **durability: Any,
    ) -> AsyncIterator[Engine]:
        """Start an engine; with ``data_dir``, recover from and persist to that directory.

        Args:
            data_dir: ``None`` keeps everything in memory (tests, embedding).
            idle_seconds: how long an idle actor's task lives (its state always stays).
            retention: seconds to keep each resolution, e.g. ``{"second": 90 * 86400}``
                (PSD expired data after 90 days); levels second .. month, each no longer
                than the next coarser one. Default: keep everything.
            retention_every_s: how often the retention sweep runs.
            durability: options for ``snapshots.store.open_store`` (``fsync``, intervals).
        """
        try:
            async with cls._open(data_dir, idle_seconds, retention, retention_every_s, durability) as engine:
                yield engine
        except BaseExceptionGroup as group:
            # Trio wraps errors from inside the engine's nurseries; a lone domain error (a
            # damaged log, a full disk) is raised as itself so callers can catch it.
            error = first_domain_error(group)
            if error is None:
                raise
            raise error from group

    @classmethod
    @asynccontextmanager
    async def _open(
        cls,
        data_dir: str | Path | None,
        idle_seconds: float,
        retention: Mapping[str, int] | None,
        retention_every_s: float,
        durability: dict[str, Any],
    ) -> AsyncIterator[Engine]:
        async with trio.open_nursery() as nursery:
            cutoff_ages = check_retention(retention)
            router = Router(nursery, NAMESPACES, idle_seconds=idle_seconds)
            registry_of(router)
            nursery.start_soon(router.run_reaper)
            if data_dir is None:
                engine = cls(router, MemoryJournal())
                nursery.start_soon(engine._run_board_clock)
                if cutoff_ages:
                    nursery.start_soon(engine._run_retention, cutoff_ages, retention_every_s)
                try:
                    yield engine
                finally:
                    engine._closed = True
                    router.retire_all()
                    nursery.cancel_scope.cancel()
                return
            # The one place the core reaches its persistence edge (engine/ otherwise never
            # imports snapshots/). The store sees this engine only as engine.journal's
            # Recoverable, so the dependency goes one way: engine -> snapshots.
            from snapshots.store import open_store

            engine = cls(router, MemoryJournal())
            try:
                async with open_store(Path(data_dir), engine=engine, **durability) as store:
                    engine._journal = store.journal
                    await store.recover(engine)
                    store.attach(engine)
                    nursery.start_soon(engine._run_board_clock)
                    if cutoff_ages:
                        nursery.start_soon(engine._run_retention, cutoff_ages, retention_every_s)
                    try:
                        yield engine
                    finally:
                        await store.close_engine(engine)
                        engine._closed = True
            finally:
                engine._closed = True
                router.retire_all()
                nursery.cancel_scope.cancel()

    ########################################################################################
    # Writing

    async def ingest(self, events: Any) -> int:
        """Validate and apply a batch of counter events; returns how many were applied.

        Each event is a mapping: ``metric``, ``user``, ``value``, ``ts`` and optionally
        ``atid``, ``aid``, ``ts1``, ``mode`` (see ``engine/events.py``). The whole batch is
        validated first; an ``InvalidInput`` naming the field means none of it was applied.
        """
        return await self.ingest_validated(validate_counter_events(events))

    async def ingest_validated(self, events: list[UserEvent]) -> int:
        """Apply events already checked by ``validate_counter_events``."""
        if events:
            await self.submit(IngestBatch(events=events))
        return len(events)

    async def count(self, counts: Any) -> int:
        """Validate and add global-counter increments ``{"name", "value", "ts"}``."""
        validated = validate_count_events(counts)
        if validated:
            await self.submit(CountBatch(counts=validated))
        return len(validated)

    async def submit(self, command: Command) -> dict[Hashable, Any]:
        """Log and apply a validated command; once acknowledged, return each touched entity's
        result by id (a ``PointspaceError`` from one of them is raised instead)."""
        if self._closed:
            raise EngineClosed("the engine is closed")
        record = encode_command(command)
        async with self._dispatch_lock:
            # Route first, under the next sequence number: a command that cannot be routed
            # (its own late validation fails) is refused before it reaches the log, so a
            # replay never meets it.
            seq = self._journal.last_seq + 1
            routes = command.route(seq, self._router)
            appended = self._journal.append(record)
            assert appended == seq, f"journal numbered {appended}, expected {seq}"
            self._inflight.add(seq)
            try:
                completion = await self._send_routes(routes)
            except BaseException:
                self._inflight.discard(seq)
                raise
        try:
            results = await completion.wait()
        except BaseException:
            await self._journal.wait_durable(seq)
            raise
        finally:
            self._inflight.discard(seq)
        await self._journal.wait_durable(seq)
        self._commands += 1
        self._events += command.size()
        return results

    async def _dispatch(self, command: Command, seq: int) -> Completion:
        return await self._send_routes(command.route(seq, self._router))

    async def _send_routes(self, routes: dict[Any, Callable[[Any], Any]]) -> Completion:
        completion = Completion(len(routes))
        router = self._router
        for key, operation in routes.items():
            try:
                router.send_nowait(key, operation, completion)
            except trio.WouldBlock:
                await router.send(key, operation, completion)
        return completion

    async def replay(self, seq: int, record: bytes) -> None:
        """Apply one log record during recovery (entities skip what a snapshot already has).

        A record whose command failed live (a list that did not exist, say) fails the same way
        now and changed nothing then or now: its error is ignored.
        """
        completion = await self._dispatch(decode_command(record), seq)
        try:
            await completion.wait()
        except PointspaceError:
            pass
        if isinstance(self._journal, MemoryJournal):
            self._journal.advance_to(seq)

    ########################################################################################
    # Reading

    async def _ask_users(
        self, users: Sequence[User], make_op: Callable[[User], Callable[[Any], Any]]
    ) -> dict[User, Any]:
        if self._closed:
            raise EngineClosed("the engine is closed")
        distinct = list(dict.fromkeys(normalize_user(u) for u in users))
        completion = Completion(len(distinct))
        router = self._router
        for user in distinct:
            await router.ask((USER, user), make_op(user), completion)
        results = await completion.wait()
        return {user: results[user] for user in distinct}

    async def query(
        self,
        users: Sequence[User],
        metrics: Sequence[str],
        t1: int,
        t2: int,
        *,
        atid: int | None = None,
        aid: int | None = None,
        offsets: Sequence[int] | None = None,
        with_atids: bool = False,
    ) -> dict[User, UserResult]:
        """Sums of each metric over [t1, t2] (inclusive) for each user.

        Args:
            atid, aid: only this activity type / activity (``None``: all).
            offsets: one per user, added to both t1 and t2 for that user (PSD v2).
            with_atids: also return PSD's ``_atids`` per user (de-duplicated by activity
                across the metrics).

        Runtime complexity: one message per distinct user; per user and metric two prefix
        walks per activity type (see ``engine/counters.py``).
        """
        metrics = list(metrics)
        shifts: dict[User, int] = {}
        if offsets is not None:
            if len(offsets) != len(users):
                raise InvalidInput("offsets must have one entry per user", "offsets")
            shifts = dict(zip((normalize_user(u) for u in users), offsets, strict=True))

        def make_op(user: User) -> Callable[[UserCounters], UserResult]:
            shift = shifts.get(user, 0)
            a, b = t1 + shift, t2 + shift

            def op(state: UserCounters) -> UserResult:
                sums = {m: state.range_sum(m, a, b, atid, aid) for m in metrics}
                return UserResult(sums, state.atids(metrics, a, b, atid) if with_atids else None)

            return op

        return await self._ask_users(users, make_op)

    async def breakdown(
        self,
        users: Sequence[User],
        metrics: Sequence[str],
        t1: int,
        t2: int,
        step: str | int,
        *,
        tz: str | None = None,
        offset: int = 0,
        atid: int | None = None,
    ) -> dict[User, Breakdown]:
        """Per-period sums of each metric over [t1, t2] for each user.

        ``step`` is a calendar unit (``"year"`` .. ``"second"``) or a number of seconds;
        calendar periods follow the wall clock of ``tz`` (an IANA name) or of UTC + ``offset``.
        """
        bounds = period_bounds(t1, t2, step, zone=load_zone(tz), offset=offset)
        metrics = list(metrics)

        def make_op(user: User) -> Callable[[UserCounters], Breakdown]:
            def op(state: UserCounters) -> Breakdown:
                return Breakdown(bounds, {m: state.breakdown(m, bounds, atid) for m in metrics})

            return op

        return await self._ask_users(users, make_op)

    async def counter_breakdown(
        self,
        name: str,
        t1: int,
        t2: int,
        step: str | int,
        *,
        tz: str | None = None,
        offset: int = 0,
    ) -> Breakdown:
        """A global counter's per-period sums over [t1, t2] (periods as in :meth:`breakdown`).

        Runtime complexity: one message to the counter's actor; O(periods) prefix walks there.
        """
        bounds = period_bounds(t1, t2, step, zone=load_zone(tz), offset=offset)
        series = await self.ask(COUNTER, name, lambda state: state.breakdown(bounds))
        return Breakdown(bounds, {name: series})

    async def ask(self, namespace: str, ident: Hashable, operation: Callable[[Any], Any]) -> Any:
        """Run a read-only ``operation(state)`` in the entity's actor and return its result.

        An entity that was never written answers from an empty state (ranked lists then raise
        ``NotFound``).
        """
        if self._closed:
            raise EngineClosed("the engine is closed")
        completion = Completion(1)
        await self._router.ask((namespace, ident), operation, completion)
        return (await completion.wait())[ident]

    def list_catalog(self) -> list[tuple[str, Any]]:
        """``(list id, ListSettings)`` of every existing ranked list, sorted by id.

        Reads the directory between actor turns: settings change only inside a turn, so each
        entry is consistent (a list created or deleted meanwhile may or may not show).
        """
        lists = self._router.directory[LIST]
        return sorted((i, s.settings) for i, s in list(lists.items()) if s.settings is not None)

    async def read_counts(self, names: Sequence[str], t1: int, t2: int) -> dict[str, int]:
        """Sums of global counters over [t1, t2] (PSD ``readcount``)."""
        if self._closed:
            raise EngineClosed("the engine is closed")
        distinct = list(dict.fromkeys(names))
        completion = Completion(len(distinct))

        def op(state: GlobalCounter) -> int:
            return state.range_sum(t1, t2)

        for name in distinct:
            await self._router.ask((COUNTER, name), op, completion)
        results = await completion.wait()
        return {name: results[name] for name in distinct}

    ########################################################################################
    # Leaderboards (engine/boards.py)

    async def rank_users(
        self,
        metric: str,
        t1: int,
        t2: int,
        *,
        atid: int | None = None,
        users: Sequence[User] | None = None,
    ) -> list[Standing]:
        """Rank users by their sum of ``metric`` over [t1, t2]: a leaderboard as it stood at t2.

        ``users=None`` ranks every user who has ever written ``metric`` (those with no write in
        the window rank with 0).

        Runtime complexity: one message per user, then O(u log u).
        """
        if users is None:
            directory = self._router.directory[USER]
            users = [u for u, state in list(directory.items()) if metric in state.metrics]
        results = await self.query(users, [metric], t1, t2, atid=atid)
        return rank_sums({user: result.sums[metric] for user, result in results.items()})

    async def create_board(self, body: Any) -> dict[str, Any]:
        """Create a live leaderboard from ``{id, metric, atid?, members?, window}``."""
        board_id, definition = check_board(body, int(time.time()))
        await self.refuse_existing_list(board_id)
        await self.submit(CreateBoard(board_id=board_id, definition=definition))
        return {"id": board_id, **definition.public()}

    async def refuse_existing_list(self, list_id: str) -> None:
        """``Conflict`` if the list (or board) exists: a read before a create command.

        The create command checks again when it applies (another create may come between);
        asking first keeps the usual refusal out of the log, where it would be a record that
        replays to nothing.
        """
        if await self.ask(LIST, list_id, lambda state: state.exists):
            raise Conflict(f"list {list_id!r} already exists", "id")

    async def board(
        self, board_id: str, *, top: int = 10, user: User | None = None, radius: int = 5
    ) -> dict[str, Any]:
        """A live board's top ``top`` and, for ``user``, their standing and neighbours."""
        element = None if user is None else element_id_of(normalize_user(user))

        def read(state: ListState) -> dict[str, Any]:
            if not state.exists:
                raise NotFound(
                    f"no leaderboard {board_id!r}; create it with POST /api/leaderboards", "id"
                )
            ranked = state.ranked
            if state.board is None:
                raise InvalidInput(f"list {board_id!r} is a ranked list, not a leaderboard", "id")
            out: dict[str, Any] = {
                "id": board_id,
                **state.board.public(),
                "size": len(ranked),
                "top": ranked.range_from_top(0, top) if len(ranked) and top else [],
            }
            if element is not None:
                if element in ranked:
                    above, below = ranked.neighbours(element, radius)
                    out["user"] = {"element": ranked.get(element), "above": above, "below": below}
                else:
                    out["user"] = None
            return out

        return await self.ask(LIST, board_id, read)

    async def expire_now(self, ages: Sequence[int], now: int | None = None) -> None:
        """Drop buckets older than ``ages[level]`` seconds (second .. month; 0 keeps a level)."""
        now = int(time.time()) if now is None else now
        cutoffs = [max(0, now - age) if age else 0 for age in ages]
        await self.submit(ExpireBuckets(cutoffs=cutoffs))

    async def _run_retention(self, ages: list[int], every_s: float) -> None:
        while True:
            await trio.sleep(min(every_s, 5.0))
            if not self._closed:
                await self.expire_now(ages)
            await trio.sleep(max(0.0, every_s - 5.0))

    async def delete_board(self, board_id: str) -> None:
        """Delete a live leaderboard; a missing one is already deleted (as RankDB's DELETE).

        Raises:
            NotFound: ``board_id`` is a plain ranked list, not a leaderboard (delete that one
                with ``DELETE /lists/<id>``).
        """
        from engine.lists import DeleteList

        def kind(state: ListState) -> str:
            return "missing" if not state.exists else "board" if state.board is not None else "list"

        found = await self.ask(LIST, board_id, kind)
        if found == "list":
            raise NotFound(
                f"{board_id!r} is a ranked list, not a leaderboard; delete it with DELETE /lists/{board_id}",
                "id",
            )
        if found == "board":
            await self.submit(DeleteList(list_id=board_id))

    async def _run_board_clock(self) -> None:
        """Roll rolling leaderboards when their period ends (checked every second)."""
        registry = registry_of(self._router)
        while True:
            await trio.sleep(1.0)
            for roll in due_rolls(registry, int(time.time())):
                if not self._closed:
                    await self.submit(roll)

    async def users(self) -> list[Hashable]:
        """Every user id that has counters (unordered)."""
        return self._router.ids(USER)

    ########################################################################################
    # Snapshots and statistics

    def iter_snapshot_items(self) -> Iterator[tuple[str, Any, int, Any]]:
        """``(namespace, id, applied_seq, plain state)`` for every entity, one at a time.

        Each item is built synchronously from a consistent state; callers may await between
        items (writes continue; each item carries the log position it reflects).
        """
        for (namespace, ident), state in self._router.iter_states():
            plain = state.to_plain()
            if plain is not None:  # None: nothing to keep (a deleted list)
                yield namespace, ident, state.applied_seq, plain

    def load_snapshot_item(self, namespace: str, ident: Any, applied_seq: int, plain: Any) -> None:
        """Install one entity from a snapshot (recovery, before any actor for it runs)."""
        try:
            loader = STATE_LOADERS[namespace]
        except KeyError:
            raise ValueError(f"snapshot holds unknown namespace {namespace!r}") from None
        state = loader(plain)
        state.applied_seq = applied_seq
        if isinstance(self._journal, MemoryJournal):
            self._journal.advance_to(applied_seq)
        if isinstance(ident, list):  # msgpack turns tuples into lists
            ident = tuple(ident)
        self._router.install((namespace, ident), state)
        if namespace == LIST and state.board is not None:
            registry_of(self._router).add(ident, state.board)

    @property
    def last_seq(self) -> int:
        return self._journal.last_seq

    @property
    def closed(self) -> bool:
        """True once the engine is shutting down (it then refuses commands and reads)."""
        return self._closed

    def stable_seq(self) -> int:
        """The oldest log position some entity may not have applied yet.

        Every record before it has been applied by every entity it touches, so a snapshot
        started now is consistent with a replay from here (entities skip, by ``applied_seq``,
        what they already hold).
        """
        return min(self._inflight, default=self._journal.last_seq + 1)

    async def snapshot_now(self) -> Any:
        """Write a snapshot now; returns its ``SnapshotRecord``.

        Raises:
            InvalidInput: the engine runs without a data directory.
        """
        if self.store is None:
            raise InvalidInput("this server keeps no data directory, so it has no snapshots")
        return await self.store.snapshot(self)

    def statistics(self) -> EngineStatistics:
        return EngineStatistics(
            router=self._router.statistics(),
            commands=self._commands,
            events=self._events,
            last_seq=self._journal.last_seq,
        )


def check_retention(retention: Mapping[str, int] | None) -> list[int]:
    """Retention ages per level (second .. month), or [] to keep everything."""
    if not retention:
        return []
    levels = ("second", "minute", "hour", "day", "month")
    unknown = set(retention) - set(levels)
    if unknown:
        raise InvalidInput(f"retention levels must be among {list(levels)}, got {sorted(unknown)!r}", "retention")
    ages = [retention.get(level, 0) for level in levels]
    if any(type(a) is not int or a < 0 for a in ages):
        raise InvalidInput(f"retention ages must be whole seconds >= 0, got {dict(retention)!r}", "retention")
    for finer, coarser in zip(ages, ages[1:], strict=False):
        # A kept coarse bucket is what a dropped fine one rolls up into; the reverse is not.
        if coarser and (not finer or finer > coarser):
            raise InvalidInput(
                "a level may only expire if every finer level expires no later, got "
                f"{dict(retention)!r}",
                "retention",
            )
    return ages


def check_range(t1: Any, t2: Any) -> tuple[int, int]:
    """Validate an inclusive [t1, t2] query range (both Unix seconds, t1 <= t2)."""
    a, b = check_ts(t1, "t1"), check_ts(t2, "t2")
    if a > b:
        raise InvalidInput(f"t1 must be <= t2, got t1={a!r} t2={b!r}", "t1")
    return a, b


__all__ = ["Breakdown", "Engine", "UserResult", "check_range", "Mapping"]
