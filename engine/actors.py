"""Virtual actors on trio: entity state owned by actor tasks, activated and retired on demand.

Theory of operation
-------------------
Every entity -- a user's counters, a global counter, a ranked list -- has a key
``(namespace, id)`` and one state object, a plain synchronous class from ``engine/``. All
states rest in the router's *directory*. Each entity is owned by exactly one *actor*: a trio
task with a bounded :class:`Mailbox`, and only that task reads or changes the states it owns.
It applies each message synchronously, with no ``await`` between reading and writing state, so
nothing interleaves, and it drains its whole mailbox per wake-up.

Placement decides which actor owns an entity. A namespace is either

* **dedicated**: one actor per entity (ranked lists: a list is big and busy, and its
  operations are long enough that one task per list is the right unit), or
* **partitioned** into ``partitions`` actors by a hash of the id (users, global counters).

Why partition users: waking a trio task costs 6 to 8 us on the 2-core dev machine
(``bench/bench_actors.py``: 6.3 us for a bare ``trio.Event`` wake-up, 7.5 us per no-op message
fanned out through this Router to 1,000 dedicated actors), and a batch of 1,000 sparse events
over 10,000 users touches ~950 different users. With one task per user that is one wake-up per
event, a ceiling of ~130k events/s before any counting is done; with 32 partition actors a batch
costs at most 32 wake-ups. The same bench ingests such batches through the Router side by side:
one actor per user 36-41k events/s, 32 partitions 2.6 to 2.9 times that (96-107k events/s). The
per-entity guarantees are the same either way: one owner task per entity, messages to one
entity applied in send order, bounded mailboxes, one message per entity per batch.

Actors are *virtual* (Orleans' term): sending to an actor that is not running activates it (a
task is started in the router's nursery with a fresh mailbox); after ``idle_seconds`` without
messages the reaper closes its mailbox, the task finishes what is queued and exits, and the
states stay in the directory for the next activation. Ten million users mean ten million small
state objects, and no more tasks than there are busy actors.

A message is ``(id, operation, completion)``: ``operation(state)`` returns a result or raises a
``PointspaceError``, which travels back through ``completion``; one :class:`Completion`
collects the replies for a whole batch or multi-user query, so the caller waits once. Any
other exception is a bug in an operation: it is logged, that entity's reply is an
``InternalError``, and the actor goes on with the next entity.

A *share* (:class:`Share`) is one message for every entity of one partition that a command
touches: ``(share, operation, completion)``, where the actor calls ``operation(id, state,
item)`` for each ``(id, item)`` of ``share.items`` in order, with the same per-entity
failure handling, and replies once for the share. A batch of 1,000 sparse events then costs
<= 32 messages instead of ~950 (one closure, send and reply per user cost more than applying
that user's event did). Per-entity order is unchanged: an entity's items of one command sit
in one share, in command order, and a share queues in its partition's mailbox like any
message. Only partitioned namespaces whose states are never dropped take shares.

Reads
-----
Every change to a state is one synchronous step: an actor's turn applies each message with
no ``await`` inside (and the few reads that rebuild a ranked list's indexes, ``verify`` and
``reindex``, are such steps too), so between steps every state is consistent (snapshots read
them there too, ``iter_states``). A read therefore goes through the mailbox only when it must
wait: when the owning actor has messages queued (a write sent before the read is applied
first), or when it is sent from inside a turn. Otherwise the owner has applied everything sent
to it, the queued read would see exactly the state there is now, and ``ask_nowait`` runs it at
once in the caller's task, with the same failure handling. That saves the two task switches of
a round trip: ``bench/bench_range_windows.py`` runs ``Engine.query`` both ways side by side
(one user, median: 76 -> 54 us for hour windows, 108 -> 68 us for mid-month edges, on the
2-core dev machine). Reads still see every write acknowledged before them, and a read of a busy
entity still waits its turn. A direct read has no scheduling point, so ``ask`` yields to other
tasks after every ``DIRECT_READS_PER_YIELD`` of them: a query over a million users would
otherwise hold the event loop (and /health) for its whole length.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any

import trio

from engine.errors import InternalError, PointspaceError
from engine.mailbox import DEFAULT_CAPACITY, Mailbox

log = logging.getLogger("pointspace.actors")

EntityKey = tuple[str, Hashable]
Operation = Callable[[Any], Any]
Message = tuple[Hashable, Operation, "Completion | None"]
ActorKey = tuple[str, Hashable]

#: Seconds without a message before an actor's task retires (its states stay in memory).
#: Activation costs one task start (~10 us), so this only has to be long compared with the gaps
#: between a busy actor's messages.
DEFAULT_IDLE_SECONDS = 30.0

#: Direct reads (see "Reads") answered by ``Router.ask`` before it yields to other tasks once:
#: a read over many entities then pauses the event loop for at most this many reads at a time
#: (64 one-user range sums: about 2-4 ms), and the yield costs one scheduler pass per 64.
DIRECT_READS_PER_YIELD = 64

#: Actors per partitioned namespace. More partitions mean more wake-ups per batch; fewer mean
#: longer turns (one turn applies everything queued for the partition, and a read queued behind
#: it waits). 32 keeps a 1,000-event batch at <= 32 wake-ups; see bench/bench_actors.py before
#: changing it (in three runs there, one client's sparse batches ingested 5-20% faster on 1 to 16
#: partitions and 6-16% slower on 64 or 128; that bench does not measure read latency).
DEFAULT_PARTITIONS = 32

#: Partition actors of the users' counters. Their shares are applied by one compiled call per
#: partition (engine/partition_counters.pyx), so a turn is short and the wake-ups dominate:
#: 8 partitions ingested 9% more than 32 (in-process sparse, four alternating rounds: medians
#: 206k against 189k events/s; bench/bench_actors.py's router rows: 233k against 196k). A read
#: queued behind a turn waits for at most one partition's share of the queued batches.
USER_PARTITIONS = 8


@dataclass(frozen=True, eq=False, slots=True)
class Share:
    """One command's share for the entities of one partition (see the module docstring).

    ``items`` maps each entity id to what ``operation(id, state, item)`` applies to it, in
    the order the command touched them. Hashed by identity (it is a completion's reply key).
    """

    namespace: str
    partition: int
    items: dict[Hashable, Any]


ShareOperation = Callable[[Hashable, Any, Any], Any]


class Completion:
    """Collects one reply per entity from ``expected`` entities; the caller awaits all of them.

    Replies are stored by entity id. The first ``PointspaceError`` is kept and re-raised by
    :meth:`wait` after every entity has answered.
    """

    __slots__ = ("_pending", "_event", "results", "error")

    def __init__(self, expected: int) -> None:
        self._pending = expected
        self._event = trio.Event()
        self.results: dict[Hashable, Any] = {}
        self.error: PointspaceError | None = None
        if expected == 0:
            self._event.set()

    def expect(self, more: int = 1) -> None:
        """Wait for ``more`` replies than announced (a forwarded message joins this batch)."""
        self._pending += more

    def done(self, ident: Hashable, result: Any) -> None:
        self.results[ident] = result
        self._pending -= 1
        if self._pending == 0:
            self._event.set()

    def fail(self, ident: Hashable, error: PointspaceError) -> None:
        if self.error is None:
            self.error = error
        self.done(ident, None)

    async def wait(self) -> dict[Hashable, Any]:
        """Wait for every reply; raise the first domain error if an actor reported one."""
        await self._event.wait()
        if self.error is not None:
            raise self.error
        return self.results


@dataclass(frozen=True, slots=True)
class Namespace:
    """How entities of one kind are created and placed."""

    name: str
    factory: Callable[..., Any]
    #: 0 = dedicated (one actor per entity); otherwise the number of partition actors.
    partitions: int = DEFAULT_PARTITIONS
    #: Forget a state after a turn that leaves it ``vacant`` (a deleted list, or a write to
    #: a list that does not exist), so the directory keeps no empty entries.
    drop_vacant: bool = False
    #: ``factory`` takes the entity's id (user counters: a view into its partition's packed
    #: store, engine/partition_counters.pyx).
    keyed: bool = False

    def new_state(self, ident: Hashable) -> Any:
        """A new empty state for entity ``ident``."""
        return self.factory(ident) if self.keyed else self.factory()  # type: ignore[call-arg]


@dataclass(frozen=True, slots=True)
class RouterStatistics:
    entities: int
    live_actors: int
    mailbox_depth: int
    peak_mailbox_depth: int
    messages_applied: int
    activations: int
    retirements: int
    failures: int
    #: Reads answered in the caller's task because the owning actor was idle.
    direct_reads: int = 0


class Router:
    """Maps entity keys to their actors, starting and retiring actor tasks as needed.

    Args:
        nursery: where actor tasks (and the reaper) run; the engine owns it.
        namespaces: the kinds of entity, with their factories and placement.
        idle_seconds: how long an actor may sit idle before its task retires.
        capacity: mailbox capacity per actor (the backpressure bound).
        read_directly: answer a read of an idle actor's entity in the caller's task (see
            "Reads" above); False sends every read through the mailbox (benchmarks compare
            the two, and tests that need reads to fill mailboxes use it).
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        namespaces: list[Namespace],
        *,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
        capacity: int = DEFAULT_CAPACITY,
        read_directly: bool = True,
    ) -> None:
        self._nursery = nursery
        #: Answer reads of idle actors in the caller (public: benchmarks switch it per run).
        self.read_directly = read_directly
        self._namespaces = {ns.name: ns for ns in namespaces}
        self._idle_seconds = idle_seconds
        self._capacity = capacity
        #: namespace -> {id: state}; one dict per namespace so "every user" is one lookup.
        self.directory: dict[str, dict[Hashable, Any]] = {ns.name: {} for ns in namespaces}
        self._live: dict[ActorKey, Mailbox[Message]] = {}
        self._last_active: dict[ActorKey, float] = {}
        self._applied = 0
        self._peak_depth = 0
        self._activations = 0
        self._retirements = 0
        self._failures = 0
        #: The completion of the message being applied (for ``forward``).
        self._turn_completion: Completion | None = None
        #: True while an actor applies a batch: a read sent from inside an operation queues.
        self._in_turn = False
        self._direct_reads = 0
        self._direct_reads_since_yield = 0
        #: Engine-level registries that operations consult (live leaderboards: boards.py).
        self.hooks: dict[str, Any] = {}

    def _actor_key(self, namespace: str, ident: Hashable) -> ActorKey:
        partitions = self._namespaces[namespace].partitions
        return (namespace, ident if partitions == 0 else hash(ident) % partitions)

    def new_state(self, namespace: str, ident: Hashable) -> Any:
        """A new empty state for entity ``(namespace, ident)`` (not installed)."""
        return self._namespaces[namespace].new_state(ident)

    def partitions(self, namespace: str) -> int:
        """How many partition actors ``namespace`` has (0: one actor per entity). An entity
        ``ident`` belongs to partition ``hash(ident) % partitions`` (commands that build
        :class:`Share` messages compute it inline)."""
        return self._namespaces[namespace].partitions

    ########################################################################################
    # Sending

    def send_nowait(
        self, key: EntityKey | Share, operation: Operation | ShareOperation, completion: Completion | None
    ) -> None:
        """Queue a mutation for entity ``key`` (or for every entity of a :class:`Share`),
        creating missing states and activating the owning actor.

        Raises:
            KeyError: unknown namespace (a bug in the caller).
            trio.WouldBlock: the owning actor's mailbox is full; use :meth:`send`.
        """
        if type(key) is Share:
            self._send_share_nowait(key, operation, completion)
            return
        namespace, ident = key  # type: ignore[misc]
        states = self.directory[namespace]
        if ident not in states:
            states[ident] = self._namespaces[namespace].new_state(ident)
        actor = self._actor_key(namespace, ident)
        mailbox = self._live.get(actor)
        if mailbox is None:
            mailbox = self._activate(actor)
        mailbox.put_nowait((ident, operation, completion))

    def _send_share_nowait(self, share: Share, operation: Any, completion: Completion | None) -> None:
        """``send_nowait`` for a share. Its entities' states are created here, at send time,
        as ``send_nowait`` does for one entity, so a read sent after it queues behind it."""
        namespace = self._namespaces[share.namespace]
        if namespace.partitions == 0 or namespace.drop_vacant:
            raise ValueError(f"namespace {share.namespace!r} does not take shares")
        states = self.directory[share.namespace]
        if not states.keys() >= share.items.keys():  # (a loop in C; most writes find all)
            for ident in share.items:
                if ident not in states:
                    states[ident] = namespace.new_state(ident)
        actor = (share.namespace, share.partition)
        mailbox = self._live.get(actor)
        if mailbox is None:
            mailbox = self._activate(actor)
        mailbox.put_nowait((share, operation, completion))

    async def send(
        self, key: EntityKey | Share, operation: Operation | ShareOperation, completion: Completion | None
    ) -> None:
        """Queue a mutation, waiting while the owning actor's mailbox is full."""
        while True:
            try:
                self.send_nowait(key, operation, completion)
                return
            except trio.WouldBlock:
                if type(key) is Share:
                    actor, ident = (key.namespace, key.partition), key
                else:
                    actor, ident = self._actor_key(*key), key[1]  # type: ignore[misc]
                try:
                    await self._live[actor].put((ident, operation, completion))
                    return
                except trio.ClosedResourceError:
                    # The actor drained its mailbox and was retired before this sender ran
                    # again: nothing of ours was queued, so send anew (activating it again).
                    continue

    def ask_nowait(self, key: EntityKey, operation: Operation, completion: Completion) -> None:
        """Run a read now if its entity's actor is idle, else queue it behind what is queued.

        An entity that was never written answers from a fresh empty state, without creating
        it. A written entity whose actor has nothing queued (and no turn is under way: this is
        not called from inside an operation) answers from its state at once, in the caller's
        task: every message sent to it before has been applied, so the queued path would see
        the same state (see "Reads" in the module docstring). Otherwise the read queues, and
        so a read sent after a write always sees it (a written entity's state is created when
        the write is *sent*).
        """
        namespace, ident = key
        state = self.directory[namespace].get(ident)
        if state is None:
            state = self._namespaces[namespace].new_state(ident)
        else:
            actor = self._actor_key(namespace, ident)
            mailbox = self._live.get(actor)
            if self._in_turn or not self.read_directly or (mailbox is not None and len(mailbox)):
                if mailbox is None:
                    mailbox = self._activate(actor)
                mailbox.put_nowait((ident, operation, completion))
                return
            self._direct_reads += 1
        try:
            result = operation(state)
        except PointspaceError as exc:
            completion.fail(ident, exc)
        except Exception:
            log.exception("read of %r failed", key)
            self._failures += 1
            completion.fail(ident, InternalError(f"internal error on {namespace} {ident!r}"))
        else:
            completion.done(ident, result)

    async def ask(self, key: EntityKey, operation: Operation, completion: Completion) -> None:
        """``ask_nowait``, waiting while the owning actor's mailbox is full, and yielding to
        other tasks after every ``DIRECT_READS_PER_YIELD`` reads answered directly."""
        while True:
            answered = self._direct_reads
            try:
                self.ask_nowait(key, operation, completion)
            except trio.WouldBlock:
                try:
                    await self._live[self._actor_key(*key)].put((key[1], operation, completion))
                    return
                except trio.ClosedResourceError:
                    continue  # retired after it drained (see ``send``): ask anew
            if self._direct_reads != answered:
                self._direct_reads_since_yield += 1
                if self._direct_reads_since_yield >= DIRECT_READS_PER_YIELD:
                    self._direct_reads_since_yield = 0
                    await trio.lowlevel.checkpoint()
            return

    def forward(self, key: EntityKey, operation: Operation) -> None:
        """From inside an actor's turn: send ``operation`` to another entity's actor.

        The message joins the completion of the message being applied, so the original caller
        also waits for it (a counter write returns after the leaderboards it feeds moved).
        Never waits: forwarded messages may exceed the mailbox capacity (``put_forwarded``).
        Messages forwarded from one actor to another arrive in the order they were sent.
        """
        namespace, ident = key
        states = self.directory[namespace]
        if ident not in states:
            states[ident] = self._namespaces[namespace].new_state(ident)
        actor = self._actor_key(namespace, ident)
        mailbox = self._live.get(actor)
        if mailbox is None:
            mailbox = self._activate(actor)
        completion = self._turn_completion
        if completion is not None:
            completion.expect()
        mailbox.put_forwarded((ident, operation, completion))

    ########################################################################################
    # Actors

    def _activate(self, actor: ActorKey) -> Mailbox[Message]:
        mailbox: Mailbox[Message] = Mailbox(self._capacity)
        self._live[actor] = mailbox
        self._last_active[actor] = trio.current_time()
        self._activations += 1
        self._nursery.start_soon(self._run_actor, actor, self.directory[actor[0]], mailbox)
        return mailbox

    async def _run_actor(
        self, actor: ActorKey, states: dict[Hashable, Any], mailbox: Mailbox[Message]
    ) -> None:
        """The actor: drain the mailbox, apply each message to its entity's state, reply."""
        last_active = self._last_active
        while True:
            batch = await mailbox.take_all()
            if not batch:
                return  # closed by the reaper (or shutdown) and drained
            depth = len(batch)
            if depth > self._peak_depth:
                self._peak_depth = depth
            drop_vacant = self._namespaces[actor[0]].drop_vacant
            self._in_turn = True
            try:
                self._apply_batch(actor, states, batch, drop_vacant)
            finally:
                self._in_turn = False
            self._applied += depth
            if actor in last_active:
                last_active[actor] = trio.current_time()
            # Let go of the last batch while idle (its messages' names died with
            # _apply_batch's frame): it may hold a whole request's data (a bulk load's
            # elements: ~400 B per element, bench/bench_ranked_rss.py), which would otherwise
            # stay alive until this actor's next message.
            self._turn_completion = None
            batch = None  # type: ignore[assignment]

    def _apply_batch(
        self, actor: ActorKey, states: dict[Hashable, Any], batch: list[Message], drop_vacant: bool
    ) -> None:
        """One turn: apply each message of ``batch`` to its entity's state and reply."""
        for ident, operation, completion in batch:
            self._turn_completion = completion
            if type(ident) is Share:
                self._apply_share(actor, states, ident, operation, completion)
                continue
            state = states.get(ident)
            if state is None:  # dropped as vacant by an earlier message of this batch
                state = states[ident] = self._namespaces[actor[0]].new_state(ident)
            try:
                result = operation(state)
            except PointspaceError as exc:
                if completion is not None:
                    completion.fail(ident, exc)
            except Exception:
                # A bug in an operation. Failing this one message keeps every other
                # entity of this actor (and the process) serving; the traceback is logged.
                log.exception("operation on %r failed", (actor[0], ident))
                self._failures += 1
                if completion is not None:
                    completion.fail(ident, InternalError(f"internal error on {actor[0]} {ident!r}"))
            else:
                if completion is not None:
                    completion.done(ident, result)
            if drop_vacant and state.vacant and states.get(ident) is state:
                del states[ident]

    def _apply_share(
        self,
        actor: ActorKey,
        states: dict[Hashable, Any],
        share: Share,
        operation: ShareOperation,
        completion: Completion | None,
    ) -> None:
        """Apply a share entity by entity, each failure confined to its entity as for single
        messages; one reply for the share, carrying the first error.

        An operation with a ``whole`` attribute applies the whole share in one call first
        (``whole(states, items)``: counter writes into a partition's packed store, one call
        instead of one per user). It must be idempotent per entity (an entity it already
        applied, even in part, ignores a second application, as ``applied_seq`` makes ingest),
        so that if it raises, the share is applied again entity by entity, confining the
        failure; the share then fails with the first error (the whole call's if the redo met
        none)."""
        whole = getattr(operation, "whole", None)
        whole_error: PointspaceError | None = None
        if whole is not None:
            try:
                whole(states, share.items)
            except PointspaceError as exc:
                whole_error = exc
            except Exception:  # a bug: logged, and the share redone entity by entity below
                log.exception("operation on a share of %r failed", actor)
                self._failures += 1
                whole_error = InternalError(f"internal error on a share of {actor[0]}")
            else:
                if completion is not None:
                    completion.done(share, None)
                return
        error: PointspaceError | None = None
        for ident, item in share.items.items():
            state = states.get(ident)
            if state is None:  # not expected: shares go to namespaces that keep their states
                state = states[ident] = self._namespaces[actor[0]].new_state(ident)
            try:
                operation(ident, state, item)
            except PointspaceError as exc:
                if error is None:
                    error = exc
            except Exception:
                log.exception("operation on %r failed", (actor[0], ident))
                self._failures += 1
                if error is None:
                    error = InternalError(f"internal error on {actor[0]} {ident!r}")
        error = error or whole_error  # (an entity the failed whole call marked is skipped)
        if completion is not None:
            if error is None:
                completion.done(share, None)
            else:
                completion.fail(share, error)

    async def run_reaper(self) -> None:
        """Retire actors idle for ``idle_seconds``; runs until cancelled."""
        if math.isinf(self._idle_seconds):
            return
        while True:
            await trio.sleep(self._idle_seconds / 2)
            self.retire_idle(trio.current_time() - self._idle_seconds)

    def retire_idle(self, cutoff: float) -> int:
        """Close the mailboxes of empty actors last active before ``cutoff``; return how many."""
        retired = [
            actor
            for actor, mailbox in self._live.items()
            if not len(mailbox) and self._last_active.get(actor, 0.0) < cutoff
        ]
        for actor in retired:
            self._live.pop(actor).close()
            del self._last_active[actor]
        self._retirements += len(retired)
        return len(retired)

    def retire_all(self) -> None:
        """Close every mailbox: actors finish what is queued and exit (engine shutdown)."""
        for mailbox in self._live.values():
            mailbox.close()
        self._retirements += len(self._live)
        self._live.clear()
        self._last_active.clear()

    ########################################################################################
    # State directory (snapshots, recovery)

    def install(self, key: EntityKey, state: Any) -> None:
        """Put a recovered state in the directory (recovery runs before any write)."""
        self.directory[key[0]][key[1]] = state

    def remove(self, key: EntityKey) -> None:
        """Forget an entity's state (e.g. a deleted ranked list); its actor must be idle."""
        self.directory[key[0]].pop(key[1], None)

    def iter_states(self) -> Iterator[tuple[EntityKey, Any]]:
        """Every (key, state), over a copy of each key list so writes may continue between
        items; a state read between actor turns is always consistent (turns are synchronous)."""
        for namespace, states in self.directory.items():
            for ident in list(states):
                state = states.get(ident)
                if state is not None:
                    yield (namespace, ident), state

    def ids(self, namespace: str) -> list[Hashable]:
        """The ids of every entity of a namespace that has state."""
        return list(self.directory[namespace])

    def statistics(self) -> RouterStatistics:
        return RouterStatistics(
            entities=sum(len(states) for states in self.directory.values()),
            live_actors=len(self._live),
            mailbox_depth=sum(len(m) for m in self._live.values()),
            peak_mailbox_depth=self._peak_depth,
            messages_applied=self._applied,
            activations=self._activations,
            retirements=self._retirements,
            failures=self._failures,
            direct_reads=self._direct_reads,
        )
