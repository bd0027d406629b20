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
      -> router.send_nowait(share)           one message per partition        } step, in order
      -> actors apply their shares           into packed stores (engine/partition_counters.pyx)
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

from engine.actors import (
    DEFAULT_IDLE_SECONDS,
    USER_PARTITIONS,
    Completion,
    Namespace,
    Router,
    RouterStatistics,
)
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
from engine.density import (  # Density: people counting per space
    DPU,
    SPACE,
    DensityEvent,
    DensityIngest,
    Occupancy,
    PlaceSensor,
    SensorState,
    SetSpaceOptions,
    SpaceState,
    check_placement,
    check_space_options,
    validate_dpu_events,
)
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
from engine.journal import Journal, MemoryJournal, Renumbering
from engine.lists import LIST, ListState
from engine.partition_counters import PartitionStores
from engine.periods import load_zone, period_bounds
from engine.uniques import (
    MAX_QUERY_BUCKETS,
    TURN_BUCKETS,
    TURN_PERIODS,
    UNIQUE,
    AddUniques,
    BucketBudget,
    ExpireUniques,
    Partial,
    UniqueConfig,
    UniqueCount,
    UniqueSeries,
    UniqueSettings,
    breakdown_refused,
    query_refused,
    validate_unique_items,
)

#: The kinds of entity, their empty states and their placement (engine/actors.py). Later
#: namespaces (statshub dimensions, Density spaces) register here.
NAMESPACES: list[Namespace] = [
    # Per engine, users' counters live in packed per-partition stores (namespaces_of_engine).
    Namespace(USER, UserCounters, partitions=USER_PARTITIONS),
    Namespace(COUNTER, GlobalCounter),
    Namespace(LIST, ListState, partitions=0, drop_vacant=True),  # an actor per ranked list
    # Unique-set series, hashed by name onto partitions (engine/uniques.py: why by name).
    Namespace(UNIQUE, UniqueSeries),
]


def namespaces_of_engine() -> list[Namespace]:
    """NAMESPACES for one engine: its users' counters in packed stores of its own, one per
    partition actor (engine/partition_counters.pyx), each user's state a view into its
    partition's store. ``UserCounters`` stays the reference layout the stores are tested
    against (and the snapshot form both read and write)."""
    stores = PartitionStores(USER_PARTITIONS)
    user = Namespace(USER, stores.user_state, partitions=USER_PARTITIONS, keyed=True)
    return [user if ns.name == USER else ns for ns in NAMESPACES]


#: Namespace -> how a snapshot's plain form becomes a state again.
STATE_LOADERS: dict[str, Callable[[Any], Any]] = {
    USER: UserCounters.from_plain,
    COUNTER: GlobalCounter.from_plain,
    LIST: ListState.from_plain,
    UNIQUE: UniqueSeries.from_plain,
}

############################################################################################
# Density namespaces (engine/density.py): sensors (raw events, placements) and spaces
# (contributions, counts), each hashed onto partition actors.
NAMESPACES += [Namespace(DPU, SensorState), Namespace(SPACE, SpaceState)]
STATE_LOADERS[DPU] = SensorState.from_plain
STATE_LOADERS[SPACE] = SpaceState.from_plain
############################################################################################

############################################################################################
# Dimensional stats (engine/stats.py, the statshub seed): stat ids own their detail,
# (dimension, value) pairs own their roll-ups and series; both hashed onto partitions.
from engine.stats import (  # noqa: E402 - kept in this section with its registration
    DEFAULT_GAUGE_PERIOD_S,
    STAT_DIM,
    STAT_ID,
    DimValueStats,
    StatIdState,
    StatsLedger,
    UpdateInput,
    archive_rows,
    build_update,
    check_stat_id,
    member_config_from,
    period_start,
    statshub_maps,
    stream_figure,
    stream_series,
    totals,
    validate_update,
)

#: Values of one dimension asked per round trip by a read that covers the dimension: 64
#: values over 32 partition actors is ~2 messages per actor turn, and a checkpoint follows
#: each round, so a dimension of 10,000 values (``engine.stats.MAX_VALUES_PER_DIM``) is read
#: in ~160 short turns with other tasks served between them, never in one turn of seconds.
STATS_READ_CHUNK = 64
#: The same for the stream's history, whose read is ~239 samples per value (~1.5 ms here):
#: 8 values per round keeps a round near 12 ms. Trio runs every actor woken by one round
#: before it looks at I/O again, so a round's whole cost is the longest another request waits.
STATS_HISTORY_CHUNK = 8
#: Stream answers (history, live figures) kept for concurrent streams that ask the same
#: question: each key holds its instant, so old ones are never asked again and a few suffice.
STATS_STREAM_CACHE = 32

NAMESPACES += [Namespace(STAT_ID, StatIdState), Namespace(STAT_DIM, DimValueStats)]
STATE_LOADERS[STAT_ID] = StatIdState.from_plain
STATE_LOADERS[STAT_DIM] = DimValueStats.from_plain
############################################################################################


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
        #: How new unique series keep their buckets (``Engine.open(uniques=...)``).
        self.unique_settings = UniqueSettings()

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        data_dir: str | Path | None = None,
        *,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
        retention: Mapping[str, int] | None = None,
        retention_every_s: float = 3600.0,
        uniques: UniqueSettings | None = None,
        stats_gauge_period_s: int = DEFAULT_GAUGE_PERIOD_S,
        journal: Journal | None = None,
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
            uniques: unique-set series settings (``engine/uniques.py``: kept levels, exact
                limit, sketch precision, retention per level); default ``UniqueSettings()``.
            stats_gauge_period_s: statshub's gauge period (``engine/stats.py``; 360 s).
            durability: options for ``snapshots.store.open_store`` (``fsync``, intervals).
            journal: without ``data_dir``, where records go instead of being forgotten (a
                cluster partition's log, ``cluster/partition_journal.py``); the caller
                recovers the engine's state from it (``replay``) and owns its lifetime.
        """
        if journal is not None and data_dir is not None:
            raise ValueError("an engine persists to a data directory or to a journal given, not both")
        try:
            async with cls._open(data_dir, idle_seconds, retention, retention_every_s, durability,
                                 journal) as engine:
                engine.unique_settings = uniques or UniqueSettings()
                engine.configure_stats(gauge_period_s=stats_gauge_period_s)
                async with trio.open_nursery() as unique_timers:
                    engine._start_unique_retention(unique_timers, retention_every_s)
                    try:
                        yield engine
                    finally:
                        unique_timers.cancel_scope.cancel()
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
        journal: Journal | None = None,
    ) -> AsyncIterator[Engine]:
        async with trio.open_nursery() as nursery:
            cutoff_ages = check_retention(retention)
            router = Router(nursery, namespaces_of_engine(), idle_seconds=idle_seconds)
            registry_of(router)
            nursery.start_soon(router.run_reaper)
            if data_dir is None:
                engine = cls(router, journal if journal is not None else MemoryJournal())
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
            # Recoverable; snapshots/ uses the engine's value types and validators (records,
            # lists, boards) and, in transfer.py, runs an offline Engine of its own.
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

    async def _send_routes(self, routes: dict[Any, Callable[..., Any]]) -> Completion:
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
        if isinstance(self._journal, Renumbering):
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
    # Unique-set series (engine/uniques.py): distinct members per bucket, exact then sketch
    ########################################################################################

    async def add_uniques(self, items: Any, field: str = "body") -> int:
        """Validate and add a batch of ``{"name", "member", "ts"}``; returns how many.

        The whole batch is validated first (``validate_unique_items``); an ``InvalidInput``
        naming the field means none of it was applied. A series created by this batch keeps
        the levels and limits of ``unique_settings``.
        """
        return await self.add_uniques_validated(validate_unique_items(items, field))

    async def add_uniques_validated(
        self,
        items: list[tuple[str, int, int | str]],
        *,
        config: UniqueConfig | None = None,
        counts: Sequence[tuple[str, int, int]] = (),
    ) -> int:
        """Apply validated ``(name, ts, member)`` items (``validate_unique_items``) and, in
        the same log record, global counter increments ``(name, ts, value)`` (the Narrative
        API's event and its click or impression count are one command). ``config`` is what a series created here keeps
        (default: from ``unique_settings``)."""
        if items or counts:
            await self.submit(AddUniques(
                items=items, config=config or self.unique_settings.config(), counts=list(counts)
            ))
        return len(items)

    # Reads are budgeted per request (engine/uniques.py, MAX_QUERY_BUCKETS): the buckets of
    # every count's fewest-bucket cover are added up here, by arithmetic, before anything is
    # sent, and a request over budget is refused naming the parameter to change. Each count
    # charges the same budget again where it runs (a series created meanwhile by a write in
    # flight may keep other levels than the peek below saw). Long requests go out in turns
    # of at most TURN_BUCKETS buckets / TURN_PERIODS periods, each awaited before the next,
    # so other requests and /healthz run between them.

    def _peek_unique(self, name: str) -> UniqueSeries:
        """The series' state for planning only, read between actor turns (its levels are fixed
        at its first write and horizons change only inside a turn); a fresh one if unknown."""
        series = self._router.directory[UNIQUE].get(name)
        return series if series is not None else UniqueSeries()

    async def unique_count(self, name: str, t1: int, t2: int) -> UniqueCount:
        """Distinct members of series ``name`` over [t1, t2] (the covered range, rounded to
        whole buckets where an edge falls inside one, is in the answer).

        Runtime complexity: one message to the series' actor; ``UniqueSeries.count`` there.

        Raises:
            InvalidInput: (``t1``) the range's cover takes more than ``MAX_QUERY_BUCKETS``.
        """
        size = self._peek_unique(name).cover_size(t1, t2)
        if size > MAX_QUERY_BUCKETS:
            raise query_refused([name], t1, t2, size, size, False)
        budget = BucketBudget()
        return await self.ask(UNIQUE, name, lambda state: state.count(t1, t2, budget))

    async def unique_counts(
        self, names: Sequence[str], t1: int, t2: int, *, union: bool = False
    ) -> tuple[dict[str, UniqueCount], UniqueCount | None]:
        """Counts of several series over [t1, t2], and with ``union`` the distinct count
        across all of them (their unions merged here: exact if every part is exact; its
        range is the widest any series covered).

        Each series costs its cover's buckets, twice with ``union`` (its count and its part
        of the union); the series are asked in waves of at most ``TURN_BUCKETS``.

        Raises:
            InvalidInput: (``names``, or ``t1`` where one series alone is over) the counts
                take more than ``MAX_QUERY_BUCKETS`` buckets; nothing was asked then.
        """
        if self._closed:
            raise EngineClosed("the engine is closed")
        distinct = list(dict.fromkeys(names))
        per = 2 if union else 1
        sizes: list[int] = []
        total = largest = 0
        for name in distinct:
            size = self._peek_unique(name).cover_size(t1, t2) * per
            sizes.append(size)
            total += size
            largest = max(largest, size)
            if total > MAX_QUERY_BUCKETS:
                raise query_refused(distinct, t1, t2, total, largest, union)
        budget = BucketBudget(field="names" if len(distinct) > 1 else "t1",
                              advice="name fewer series or ask for a shorter range")

        def op(state: UniqueSeries) -> tuple[UniqueCount, tuple[int, int, Partial] | None]:
            return state.count(t1, t2, budget), state.union_part(t1, t2, budget) if union else None

        results: dict[Hashable, Any] = {}
        wave: list[str] = []
        cost = 0
        for i, name in enumerate(distinct):
            wave.append(name)
            cost += sizes[i]
            if cost >= TURN_BUCKETS or i == len(distinct) - 1:
                completion = Completion(len(wave))
                for member in wave:
                    await self._router.ask((UNIQUE, member), op, completion)
                results.update(await completion.wait())
                wave, cost = [], 0
        counts = {name: results[name][0] for name in distinct}
        if not union:
            return counts, None
        merged = Partial()
        starts, ends = [], []
        for name in distinct:
            start, end, part = results[name][1]
            starts.append(start)
            ends.append(end)
            merged.merge(part)
        start, end = min(starts), max(ends)
        return counts, merged.result(start, end, (start, end) != (t1, t2))

    async def unique_breakdown(
        self,
        name: str,
        t1: int,
        t2: int,
        step: str | int,
        *,
        tz: str | None = None,
        offset: int = 0,
    ) -> tuple[list[int], list[UniqueCount]]:
        """Distinct members per period over [t1, t2] (periods as in :meth:`breakdown`):
        the period bounds, and one count per period, each stating the range it covers.

        The periods' covers are planned first (arithmetic, ~25 us a period at most, with a
        checkpoint every ``TURN_PERIODS``); then they are counted in turns of at most
        ``TURN_BUCKETS`` buckets or ``TURN_PERIODS`` periods. Each turn is consistent; a
        write landing between two turns shows only in the later periods, as it would in a
        breakdown asked a moment later.

        Runtime complexity: O(periods) planning; one message a turn, one
        ``UniqueSeries.count`` per period there.

        Raises:
            InvalidInput: (``step``) the periods' covers take more than ``MAX_QUERY_BUCKETS``
                buckets; nothing was counted then.
        """
        bounds = period_bounds(t1, t2, step, zone=load_zone(tz), offset=offset)
        if self._closed:
            raise EngineClosed("the engine is closed")
        series = self._peek_unique(name)
        periods = len(bounds) - 1
        sizes: list[int] = []
        total = 0
        for i in range(periods):
            if i and i % TURN_PERIODS == 0:
                await trio.lowlevel.checkpoint()
            size = series.cover_size(bounds[i], bounds[i + 1] - 1)
            sizes.append(size)
            total += size
            if total > MAX_QUERY_BUCKETS:
                raise breakdown_refused(name, periods, i + 1, total)
        budget = BucketBudget(field="step", advice="use a coarser step or a shorter range")
        counts: list[UniqueCount] = []
        first = cost = 0
        for i in range(periods):
            cost += sizes[i]
            if cost >= TURN_BUCKETS or i + 1 - first >= TURN_PERIODS or i == periods - 1:
                chunk = bounds[first:i + 2]
                counts += await self.ask(UNIQUE, name, lambda state, c=chunk: state.breakdown(c, budget))
                first, cost = i + 1, 0
        return bounds, counts

    async def unique_and_counts(
        self, name: str, t1: int, t2: int, counters: Sequence[str]
    ) -> tuple[UniqueCount, dict[str, int]]:
        """A series' distinct count and global counters' sums over one range, asked of
        their actors at once (the Narrative API's hourly answer: one round trip).

        Runtime complexity: O(1) for a range that is one exact bucket (the current hour)
        and counters' prefix walks inside one hour.
        """
        if self._closed:
            raise EngineClosed("the engine is closed")
        distinct = list(dict.fromkeys(counters))
        unique, sums = Completion(1), Completion(len(distinct))
        await self._router.ask((UNIQUE, name), lambda state: state.count(t1, t2), unique)
        for counter in distinct:
            await self._router.ask((COUNTER, counter), lambda state: state.range_sum(t1, t2), sums)
        count = (await unique.wait())[name]
        results = await sums.wait()
        return count, {counter: results[counter] for counter in distinct}

    async def expire_uniques_now(self, ages: Sequence[int], now: int | None = None) -> None:
        """Drop unique buckets older than ``ages[level]`` seconds (0 keeps a level)."""
        now = int(time.time()) if now is None else now
        cutoffs = [max(0, now - age) if age else 0 for age in ages]
        await self.submit(ExpireUniques(cutoffs=cutoffs))

    def _start_unique_retention(self, nursery: trio.Nursery, every_s: float) -> None:
        ages = self.unique_settings.retention_ages()
        if ages:
            nursery.start_soon(self._run_unique_retention, ages, every_s)

    async def _run_unique_retention(self, ages: list[int], every_s: float) -> None:
        while True:
            await trio.sleep(min(every_s, 5.0))
            if not self._closed:
                await self.expire_uniques_now(ages)
            await trio.sleep(max(0.0, every_s - 5.0))

    ########################################################################################
    # (end of unique-set series)

    ########################################################################################
    # Density: people counting per space from doorway sensors (engine/density.py). Sensors
    # own raw events and placements, spaces own contributions and counts; a write goes to
    # the sensors' actors, which forward each space its share (see the module docstring for
    # what a reader can see while a correction is applied).

    async def density_ingest(self, events: Any, field: str = "body") -> tuple[int, int]:
        """Validate and apply a batch of crossings (the seed's ``/send`` bodies, plus an
        optional ``event_id``); returns (new events, duplicates). Nothing is applied unless
        every event is valid; a timestamp more than ``MAX_AHEAD_MS`` ahead of this clock is
        refused (``engine.density``: "Time")."""
        now_ms = int(time.time() * 1000)
        return await self.density_ingest_validated(validate_dpu_events(events, field, now_ms=now_ms))

    async def density_ingest_validated(self, events: list[DensityEvent]) -> tuple[int, int]:
        """Apply crossings checked by ``validate_dpu_events``; returns (new, duplicates)."""
        if not events:
            return 0, 0
        command = DensityIngest(events=events)
        await self.submit(command)
        return command.tally[0], command.tally[1]

    async def place_sensor(self, dpu: str, body: Any) -> dict[str, Any]:
        """Place sensor ``dpu`` from ``body``'s ``installed`` on (``engine.density.
        check_placement``); a past ``installed`` re-counts its stretch from the raw events.
        Returns the sensor as stored (``sensor``).

        Runtime complexity: O(events of this sensor) in its actor, plus one message per
        space that gains or loses contributions.
        """
        installed, doorway, spaces = check_placement(body)
        await self.submit(
            PlaceSensor(dpu=dpu, installed=installed, doorway=doorway, spaces=list(spaces.items()))
        )
        return await self.sensor(dpu)  # type: ignore[return-value]

    async def sensor(self, dpu: str) -> dict[str, Any] | None:
        """A sensor's placements (oldest first) and event statistics; ``None`` if unknown."""
        return await self.ask(DPU, dpu, lambda state: state.public(dpu) if state.known else None)

    def density_sensors(self) -> list[dict[str, Any]]:
        """Every known sensor with its current placement, sorted by id (read between turns,
        as ``list_catalog``: each entry is consistent)."""
        sensors = self._router.directory[DPU]
        return [
            {"dpu": dpu, "current": s.placements[-1].public() if s.placements else None,
             "events": len(s.raw)}
            for dpu, s in sorted(list(sensors.items())) if s.known
        ]

    def density_spaces(self) -> list[str]:
        """Every space named by a placement or given options, sorted."""
        return sorted(name for name, s in list(self._router.directory[SPACE].items()) if s.known)

    def density_doorways(self) -> list[dict[str, Any]]:
        """Every doorway a sensor was ever placed at: the sensors there now, and the spaces
        their current placements count for."""
        doorways: dict[str, dict[str, Any]] = {}
        for dpu, state in sorted(list(self._router.directory[DPU].items())):
            for placement in state.placements:
                doorways.setdefault(placement.doorway, {"doorway": placement.doorway, "sensors": [],
                                                        "spaces": {}})
            if state.placements:
                current = state.placements[-1]
                entry = doorways[current.doorway]
                entry["sensors"].append(dpu)
                entry["spaces"][dpu] = dict(current.spaces)
        return [doorways[name] for name in sorted(doorways)]

    async def set_space_options(self, space: str, body: Any) -> dict[str, Any]:
        """Set a space's nightly reset (``{"nightly_reset": bool, "tz": zone}``)."""
        reset, tz = check_space_options(body)
        await self.submit(SetSpaceOptions(space=space, reset=reset, tz=tz))
        return await self.space(space)  # type: ignore[return-value]

    async def space(self, space: str, now_ms: int | None = None) -> dict[str, Any] | None:
        """A space's count now, its options and sensors; ``None`` for an unknown space."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return await self.ask(SPACE, space, lambda s: s.public(space, now) if s.known else None)

    async def space_count(self, space: str, at_ms: int | None = None) -> int | None:
        """The exact count of ``space`` at instant ``at_ms`` (every crossing at or before it);
        without ``at_ms``, now: a crossing stamped later counts from its own instant.
        ``None`` for a space no placement named.

        Runtime complexity: one message; two prefix walks (four with the nightly reset).
        """
        at = int(time.time() * 1000) if at_ms is None else at_ms

        def read(state: SpaceState) -> int | None:
            return state.count_at(at) if state.known else None

        return await self.ask(SPACE, space, read)

    async def occupancy(
        self, space: str, t1: int, t2: int, step: str | int, *, tz: str | None = None, offset: int = 0
    ) -> tuple[Breakdown, Occupancy] | None:
        """Per period of [t1, t2] (Unix seconds; periods as in :meth:`breakdown`): the count
        at each period's end and the highest and lowest count at any instant in it. ``None``
        for an unknown space.

        Runtime complexity: see ``SpaceState.occupancy``.
        """
        bounds = period_bounds(t1, t2, step, zone=load_zone(tz), offset=offset)
        bounds_ms = [b * 1000 for b in bounds]

        def read(state: SpaceState) -> Occupancy | None:
            return state.occupancy(bounds_ms) if state.known else None

        result = await self.ask(SPACE, space, read)
        return None if result is None else (Breakdown(bounds, {}), result)

    ########################################################################################
    # (end of Density)

    ########################################################################################
    # Board listing (GET /api/leaderboards: discovery, issue 16)

    def board_catalog(self) -> list[dict[str, Any]]:
        """Every live leaderboard's definition and size, sorted by id: ``{"id", "metric",
        "atid", "window", "members" (how many, or None for every user), "size"}``.

        Reads the directory between actor turns, as :meth:`list_catalog` does.

        Runtime complexity: O(lists).
        """
        out = []
        for list_id, state in sorted(list(self._router.directory[LIST].items())):
            if state.settings is None or state.board is None:
                continue
            public = state.board.public()
            members = public["members"]
            out.append({"id": list_id, "metric": public["metric"], "atid": public["atid"],
                        "window": public["window"],
                        "members": None if members is None else len(members),
                        "size": len(state.ranked)})
        return out

    ########################################################################################
    # (end of board listing)

    ########################################################################################
    # Dimensional stats (engine/stats.py): statshub's updates, roll-ups, totals and series

    #: Seconds per gauge period for new writes and for reads (``Engine.open``'s
    #: ``stats_gauge_period_s``).
    stats_gauge_period_s: int = DEFAULT_GAUGE_PERIOD_S

    def configure_stats(self, *, gauge_period_s: int = DEFAULT_GAUGE_PERIOD_S) -> None:
        """Set the gauge period (whole seconds, 1 .. 86400; statshub's default 360)."""
        if type(gauge_period_s) is not int or not 1 <= gauge_period_s <= 86400:
            raise InvalidInput(
                f"stats_gauge_period_s must be whole seconds in 1 .. 86400, got {gauge_period_s!r}",
                "stats_gauge_period_s",
            )
        self.stats_gauge_period_s = gauge_period_s

    def _stat_locks(self) -> dict[str, list[Any]]:
        # Created on first use: [lock, holders and waiters] per id being updated now.
        locks = self.__dict__.get("_stat_id_locks")
        if locks is None:
            locks = self.__dict__["_stat_id_locks"] = {}
        return locks

    async def stats_update(self, stat_id: Any, body: Any, *, now: int | None = None) -> bool:
        """Validate and apply one statshub update of ``stat_id``; nothing is applied unless
        the whole body is valid. Returns whether anything was logged (an update without
        dimensions or detail, such as members with no dims, changes nothing)."""
        return await self.stats_update_validated(check_stat_id(stat_id), validate_update(body), now=now)

    async def stats_update_validated(self, stat_id: str, update: UpdateInput, *, now: int | None = None) -> bool:
        """Plan the update in the id's actor, then log and apply it as one command, under
        the id's lock (``engine/stats.py``: why the change is decided before logging).

        Runtime complexity: two messages to the id's actor and one per dimension.
        """
        now = int(time.time()) if now is None else now
        period = period_start(now, self.stats_gauge_period_s)
        locks = self._stat_locks()
        entry = locks.get(stat_id)
        if entry is None:
            entry = locks[stat_id] = [trio.Lock(), 0]
        entry[1] += 1
        try:
            async with entry[0]:
                plan = await self.ask(STAT_ID, stat_id, lambda state: state.plan(update, period))
                # Checked against the stored stats and the updates in flight, and held, in one
                # synchronous step with submit's routing (engine.stats.StatsLedger).
                reservation = self._stats_ledger().reserve(update, plan, period)
                command = build_update(stat_id, now, period, update, plan,
                                       member_config_from(self.unique_settings.config()), reservation)
                if not command.has_effect():
                    reservation.release_unrouted()
                    return False
                try:
                    await self.submit(command)
                except BaseException:
                    reservation.release_unrouted()  # a no-op once the command was logged
                    raise
                return True
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del locks[stat_id]

    def _stats_ledger(self) -> StatsLedger:
        # Built on the first update, from the recovered directory (no update is in flight
        # then); kept up to date by every update since.
        ledger = self.__dict__.get("_stats_ledger_state")
        if ledger is None:
            ledger = self.__dict__["_stats_ledger_state"] = StatsLedger(self._router.directory[STAT_DIM])
        return ledger

    def stat_dimensions(self) -> dict[str, list[str]]:
        """Every dimension name with its known values, sorted (read between actor turns;
        rebuilt only when a value was added: entries are never removed)."""
        directory = self._router.directory[STAT_DIM]
        cached = self.__dict__.get("_stat_dims")
        if cached is None or cached[0] != len(directory):
            index: dict[str, list[str]] = {}
            for name, value in sorted(list(directory)):
                index.setdefault(name, []).append(value)
            cached = self.__dict__["_stat_dims"] = (len(directory), index)
        return cached[1]

    async def _scan_stat_values(self, dim: str, values: Sequence[str], operation: Callable[[Any], Any],
                                consume: Callable[[dict[str, Any]], None], *, chunk_size: int = STATS_READ_CHUNK,
                                ) -> None:
        """Run ``operation`` on each value's state, ``chunk_size`` values at a time, handing
        each round's answers to ``consume`` and checkpointing after it."""
        for first in range(0, len(values), chunk_size):
            if self._closed:
                raise EngineClosed("the engine is closed")
            chunk = values[first:first + chunk_size]
            completion = Completion(len(chunk))
            for value in chunk:
                await self._router.ask((STAT_DIM, (dim, value)), operation, completion)
            results = await completion.wait()
            consume({value: results[(dim, value)] for value in chunk})
            await trio.lowlevel.checkpoint()

    async def _ask_stat_values(self, dim: str, values: Sequence[str], operation: Callable[[Any], Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        await self._scan_stat_values(dim, values, operation, out.update)
        return out

    async def _stats_shared(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """``await compute()`` once for concurrent and later callers with the same ``key``
        (the answer is shared: callers must not change it). A failed or cancelled computation
        is forgotten, and a waiter computes it itself."""
        cache: dict[Hashable, list[Any]] = self.__dict__.setdefault("_stats_stream_cache", {})
        while True:
            entry = cache.get(key)
            if entry is None:
                entry = cache[key] = [trio.Event(), None]
                try:
                    entry[1] = await compute()
                except BaseException:
                    if cache.get(key) is entry:
                        del cache[key]
                    raise
                finally:
                    entry[0].set()
                for old in [k for k, e in cache.items() if e[0].is_set()][:max(0, len(cache) - STATS_STREAM_CACHE)]:
                    del cache[old]
                return entry[1]
            await entry[0].wait()
            if cache.get(key) is entry:
                return entry[1]

    async def stats_query(
        self, dims: Sequence[str] | None = None, *, union: bool = False, now: int | None = None
    ) -> dict[str, dict[str, dict[str, dict[str, int]]]]:
        """statshub's ``QueryDims``: per dimension (all when ``dims`` is None), each value's
        ``counters`` / ``gauges`` / ``gaugesCurrent`` and the query-time ``total``. Member
        totals are the sum of cardinalities (statshub), or with ``union`` the true distinct
        count across the dimension's values.

        Runtime complexity: one message per value; O(stats) in each.
        """
        now = int(time.time()) if now is None else now
        period_s = self.stats_gauge_period_s
        index = self.stat_dimensions()
        names = sorted(index) if dims is None else list(dict.fromkeys(dims))
        out: dict[str, dict[str, dict[str, dict[str, int]]]] = {}
        for dim in names:
            values = index.get(dim, [])

            def read(state: DimValueStats) -> Any:
                parts = {s: state.member_part(s) for s in state.members} if union else None
                return state.figures(period_s, now), parts

            answers = await self._ask_stat_values(dim, values, read)
            member_names = sorted({s for figures, _ in answers.values() for s in figures.members})
            shaped = {value: statshub_maps(figures, member_names) for value, (figures, _) in answers.items()}
            total = totals(shaped)
            if union and member_names:
                gauges = total.setdefault("gauges", {})
                for stat in member_names:
                    merged = Partial()
                    for _, parts in answers.values():
                        part = parts.get(stat) if parts else None
                        if part is not None:
                            merged.merge(part)
                    gauges[stat] = merged.result(0, 0, False).count
            out[dim] = {**shaped, "total": total}
        return out

    async def stats_history(
        self,
        dim: str,
        stat: str,
        kind: str,
        t1: int,
        t2: int,
        step: str | int,
        *,
        tz: str | None = None,
        offset: int = 0,
        values: Sequence[str] | None = None,
        union: bool = False,
    ) -> tuple[list[int], dict[str, dict[str, list[Any]]], dict[str, list[Any]]]:
        """A roll-up's series per period of [t1, t2] (periods as in :meth:`breakdown`) for
        the given values of ``dim`` (all when ``values`` is None), and their total.

        Per value, by ``kind``: ``counter`` -- ``values`` (the roll-up at each period's last
        second) and ``changes``; ``gauge`` -- ``sums`` of the gauge periods starting in each
        period, ``periods`` (how many start there) and ``values`` (their mean: exactly
        statshub's gauge when the step is the gauge period); ``member`` -- ``values``, the
        distinct members seen in each period (edges rounded out to minutes), the total being
        their sum, or the true union with ``union``. Values without the stat are left out.

        Runtime complexity: one message per value; one prefix walk per bound (counters,
        gauges) or one union per period (members).
        """
        bounds = period_bounds(t1, t2, step, zone=load_zone(tz), offset=offset)
        known = self.stat_dimensions().get(dim, [])
        chosen = known if values is None else [v for v in dict.fromkeys(values) if v in known]

        def read(state: DimValueStats) -> dict[str, list[Any]] | None:
            if kind == "counter":
                levels = state.counter_levels(stat, bounds)
                changes = state.counter_changes(stat, bounds)
                return None if levels is None or changes is None else {"values": levels, "changes": changes}
            if kind == "gauge":
                sums = state.gauge_sums(stat, bounds)
                return None if sums is None else {"sums": sums}
            if union:
                parts = state.member_parts(stat, bounds)
                counts = state.member_breakdown(stat, bounds)
                return None if parts is None or counts is None else {"values": counts, "parts": parts}
            counts = state.member_breakdown(stat, bounds)
            return None if counts is None else {"values": counts}

        answers = {v: a for v, a in (await self._ask_stat_values(dim, chosen, read)).items() if a is not None}
        n = len(bounds) - 1
        period_s = self.stats_gauge_period_s
        counts = [-(-b // period_s) - -(-a // period_s) for a, b in zip(bounds, bounds[1:], strict=False)]
        total: dict[str, list[Any]] = {}
        for answer in answers.values():
            for key, series in answer.items():
                if key == "parts":
                    continue
                acc = total.setdefault(key, [0] * n)
                for i, x in enumerate(series):
                    acc[i] += x
        if kind == "gauge":
            for answer in [*answers.values(), total]:
                sums = answer.setdefault("sums", [0] * n)
                answer["periods"] = counts
                answer["values"] = [s / c if c else None for s, c in zip(sums, counts, strict=True)]
        if kind == "member" and union:
            merged_counts = []
            for i in range(n):
                merged = Partial()
                for answer in answers.values():
                    merged.merge(answer["parts"][i])
                merged_counts.append(merged.result(0, 0, False).count)
            total["values"] = merged_counts
            for answer in answers.values():
                del answer["parts"]
        if kind != "gauge" and not answers:
            total = {key: [0] * n for key in (("values", "changes") if kind == "counter" else ("values",))}
        return bounds, answers, total

    async def stats_stream_values(
        self, dim: str, value: str, kind: str, stat: str, ranges: Sequence[tuple[int, int, int]], now: int
    ) -> list[dict[str, Any]]:
        """The stream's history with every value (:meth:`stats_stream_history`, no limit)."""
        return (await self.stats_stream_history(dim, value, kind, stat, ranges, now))[0]

    async def stats_stream_history(
        self, dim: str, value: str, kind: str, stat: str, ranges: Sequence[tuple[int, int, int]], now: int,
        *, limit: int | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """The stream's history: for each range ``(start, end, interval)``, epoch-aligned
        intervals of ``interval`` seconds clipped to [start, end), each with the stat's value
        per dimension value (``value``: one, ``"*"`` every one and ``total``, or ``"total"``),
        and how many values were left out: with ``limit``, a ``"*"`` history carries the
        ``limit`` values with the largest figure now (ties by name); ``total`` is always the
        total over every value.

        statshub sent ``MAX(stat)`` per interval per ``_dim`` of its archive table, whose
        rows held each value and their ``total``. Here: a counter's value is its roll-up at
        the interval's end (its largest, for a counter that only grows); a gauge's is the
        largest of the complete gauge periods in the interval (statshub's archive sampled
        one period per run), and ``total``'s the largest per-period sum across values; a
        member stat's (read as a gauge, as statshub did) is the all-time distinct count at
        the interval's end. An interval where no value has data is left out; where a
        coarser range's last interval is the next one's first, the finer one replaces it.

        Concurrent and later calls with the same arguments share one computation (a stream
        opened by many dashboards at once costs one); the answer must not be changed.

        Runtime complexity: O(values x intervals), read :data:`STATS_HISTORY_CHUNK` values per
        actor round with a checkpoint between rounds (``bench/bench_statshub.py``: ~4.4 s of
        CPU for a year of 3,000 values here, in rounds of ~12 ms); memory O(carried values x
        intervals).
        """
        key = ("history", dim, value, kind, stat, tuple(ranges), now, limit)
        return await self._stats_shared(key, lambda: self._stream_history(dim, value, kind, stat, ranges, now, limit))

    async def _stream_history(
        self, dim: str, value: str, kind: str, stat: str, ranges: Sequence[tuple[int, int, int]], now: int,
        limit: int | None,
    ) -> tuple[list[dict[str, Any]], int]:
        period_s = self.stats_gauge_period_s
        current = period_start(now, period_s)
        slots: list[tuple[int, int, int]] = []  # (asOf, start, end)
        for start, end, interval in ranges:
            first = start // interval
            for index in range(first, (end - 1) // interval + 1):
                as_of = index * interval
                slot = (as_of, max(as_of, start), min(as_of + interval, end))
                if slots and slots[-1][0] == as_of:
                    slots[-1] = slot
                else:
                    slots.append(slot)

        known = self.stat_dimensions().get(dim, [])
        wanted = known if value in ("*", "total") else [v for v in known if v == value]
        carried: set[str] | None = None  # None: every value
        omitted = 0
        if value == "*" and limit is not None and len(wanted) > limit:
            figures = await self._stream_figures(dim, wanted, kind, stat, now)
            having = sorted(((f, v) for v, f in figures.items() if f is not None), key=lambda fv: (-fv[0], fv[1]))
            if len(having) > limit:
                carried = {v for _, v in having[:limit]}
                omitted = len(having) - limit
        with_total = value in ("*", "total")
        per_slot: list[dict[str, int]] = [{} for _ in slots]
        sums: list[dict[int, int]] = [{} for _ in slots]  # the total row per sample instant

        def read(state: DimValueStats) -> list[dict[int, int]]:
            return stream_series(state, kind, stat, slots, now, current, period_s)

        def consume(answers: dict[str, list[dict[int, int]]]) -> None:
            for name, samples in answers.items():
                keep = value != "total" and (carried is None or name in carried)
                for i, sample in enumerate(samples):
                    if not sample:
                        continue
                    if keep:
                        per_slot[i][name] = max(sample.values())
                    if with_total:
                        acc = sums[i]
                        for instant, x in sample.items():
                            acc[instant] = acc.get(instant, 0) + x

        await self._scan_stat_values(dim, wanted, read, consume, chunk_size=STATS_HISTORY_CHUNK)
        intervals = []
        for i, (as_of, _, _) in enumerate(slots):
            figures = per_slot[i]
            if with_total and sums[i]:
                total = max(sums[i].values())
                figures = {"total": total} if value == "total" else {**figures, "total": total}
            if figures:
                intervals.append({"asOfSeconds": as_of, "values": figures})
        return intervals, omitted

    async def _stream_figures(self, dim: str, values: Sequence[str], kind: str, stat: str,
                              now: int) -> dict[str, int | None]:
        period_s = self.stats_gauge_period_s
        out: dict[str, int | None] = {}
        await self._scan_stat_values(dim, values, lambda state: stream_figure(state, kind, stat, period_s, now),
                                     out.update)
        return out

    async def stats_stream_now(self, dim: str, value: str, kind: str, stat: str, *, now: int | None = None) -> dict[str, int]:
        """The stream's live figures with every value (:meth:`stats_stream_live`, no limit)."""
        now = int(time.time()) if now is None else now
        return (await self.stats_stream_live(dim, value, kind, stat, now))[0]

    async def stats_stream_live(
        self, dim: str, value: str, kind: str, stat: str, now: int, *, limit: int | None = None
    ) -> tuple[dict[str, int], int]:
        """The stream's live figures, as statshub pushed them: per value of ``dim`` (every
        one and ``total`` for ``"*"``) the counter, or the last complete period's gauge (or
        member count), 0 where a value lacks the stat; and how many values were left out:
        with ``limit``, a ``"*"`` answer carries the ``limit`` largest (ties by name), and
        ``total`` stays the total over every value. Shared like :meth:`stats_stream_history`
        (every stream wakes at the same wall-clock boundary).

        Runtime complexity: O(values), read :data:`STATS_READ_CHUNK` values per actor round.
        """
        key = ("live", dim, value, kind, stat, now, limit)
        return await self._stats_shared(key, lambda: self._stream_live(dim, value, kind, stat, now, limit))

    async def _stream_live(self, dim: str, value: str, kind: str, stat: str, now: int,
                           limit: int | None) -> tuple[dict[str, int], int]:
        known = self.stat_dimensions().get(dim, [])
        wanted = known if value in ("*", "total") else [v for v in known if v == value]
        out = {v: f or 0 for v, f in (await self._stream_figures(dim, wanted, kind, stat, now)).items()}
        if value == "total":
            return {"total": sum(out.values())}, 0
        omitted = 0
        if value == "*":
            total = sum(out.values())
            if limit is not None and len(out) > limit:
                omitted = len(out) - limit
                out = dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0]))[:limit])
            out["total"] = total
        return out, omitted

    async def stats_archive(
        self, dim: str, stamps: Sequence[int]
    ) -> tuple[list[str], list[str], list[tuple[str, int, dict[str, int], dict[str, int]]]]:
        """statshub's archive table of ``dim`` at each instant of ``stamps``: the sorted
        counter and gauge column names, and ``(value, ts, counters, gauges)`` rows, each
        instant's values then its ``total`` (the sum over values that have the column).

        Runtime complexity: one message per value; ``engine.stats.archive_rows`` there.
        """
        period_s = self.stats_gauge_period_s
        values = self.stat_dimensions().get(dim, [])
        answers = await self._ask_stat_values(dim, values, lambda state: archive_rows(state, stamps, period_s))
        counter_names = sorted({s for rows in answers.values() for c, _ in rows for s in c})
        gauge_names = sorted({s for rows in answers.values() for _, g in rows for s in g})
        out = []
        for i, ts in enumerate(stamps):
            total_c: dict[str, int] = {}
            total_g: dict[str, int] = {}
            for value in values:
                counters, gauges = answers[value][i]
                if counters or gauges:
                    out.append((value, ts, counters, gauges))
                for s, x in counters.items():
                    total_c[s] = total_c.get(s, 0) + x
                for s, x in gauges.items():
                    total_g[s] = total_g.get(s, 0) + x
            if total_c or total_g:
                out.append(("total", ts, total_c, total_g))
        return counter_names, gauge_names, out

    ########################################################################################
    # (end of dimensional stats)


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
        if isinstance(ident, list):  # msgpack turns tuples into lists
            ident = tuple(ident)
        if namespace == USER:  # into the user's partition store
            state = self._router.new_state(USER, ident)
            state.load(plain)
        else:
            state = loader(plain)
        state.applied_seq = applied_seq
        if isinstance(self._journal, Renumbering):
            self._journal.advance_to(applied_seq)
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
