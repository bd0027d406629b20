"""One cluster node: the partitions it owns or stands by for, each an engine of its own.

Theory of operation
-------------------
A node runs membership (``cluster/membership.py``) and, for each partition the assignment
gives it, a :class:`Replica`: an :class:`~engine.engine.Engine` whose journal is the
partition's log (``cluster/partition_journal.py``).

- A **standby** replica catches up from the log when it starts, then tails it: every
  ``tail_interval_s`` it applies what was appended since. Its engine is never written to.
- An **owner** replica catches up to the log's tail, then leads: its journal becomes the
  partition's writer, fenced by the sequence of the last message it applied. A standby that
  is promoted keeps its engine and only catches up the last few records, which is why
  failover takes about as long as membership needs to notice (``ttl_s``) plus one tick.
- A replica starts from the partition's snapshot when one is stored, then reads the log after
  it; an owner stores a snapshot every ``snapshot_interval_s`` and cuts the log below it
  (``cluster/partition_snapshots.py``), so logs stay short and a takeover replays little.
- A replica whose journal failed (fenced by another writer, or the log unavailable past its
  retry time), or that found a hole in the log (cut below what it had read), holds state the
  log may not: it is dropped, and started again from the snapshot and the log if the
  assignment still gives the partition to this node.
- A partition the assignment takes away refuses new calls at once (the callers retry at the new
  owner) and stops once the calls inside have finished, or after ``retire_grace_s``. Its engine
  may hold records that were applied but not acknowledged; those were never acknowledged to a
  client either.

Partitions are chosen by :func:`partition_of`, a hash that is the same in every process
(Python's ``hash`` of a string is not: it is salted per process).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import nats.errors
import trio

from cluster.membership import Membership, MembershipConfig
from cluster.partition_journal import LogGap, PartitionJournal, PartitionUnavailable, catch_up
from cluster.partition_log import JetStream, LogLayout, LogUnavailable, PartitionLog
from cluster.partition_snapshots import PartitionSnapshots
from cluster.placement import Assignment, Placement
from engine.engine import Engine

__all__ = ["ClusterNode", "NodeConfig", "NotLeading", "Replica", "partition_of"]

log = logging.getLogger("pointspace.cluster")

T = TypeVar("T")


class NotLeading(PartitionUnavailable):
    """This node does not lead the partition now, and refused the call before changing
    anything: safe to send again to the partition's owner (``cluster/serving/routing.py``)."""


def partition_of(key: int | str, partitions: int) -> int:
    """The partition of a user (or list, board) id: the same in every process.

    >>> partition_of(7, 64), partition_of("7", 64) == partition_of(7, 64), partition_of("alice", 64)
    (11, False, 25)
    """
    tagged = (b"i:%d" % key) if type(key) is int else b"s:" + str(key).encode()
    return zlib.crc32(tagged) % partitions


@dataclass(frozen=True, slots=True)
class NodeConfig:
    layout: LogLayout = LogLayout()
    membership: MembershipConfig = MembershipConfig()
    #: Seconds between a standby's reads of its partitions' logs.
    tail_interval_s: float = 0.2
    #: Seconds a partition taken away lets the calls inside it finish before it stops.
    retire_grace_s: float = 2.0
    #: Seconds between an owner's snapshots of a partition that was written to (each lets
    #: the log be cut below it: ``cluster/partition_snapshots.py``).
    snapshot_interval_s: float = 30.0


class Replica:
    """One partition's engine on this node (module docstring)."""

    def __init__(self, node: ClusterNode, partition: int, placement: Placement) -> None:
        self.node = node
        self.partition = partition
        self.placement = placement
        self.journal = PartitionJournal(node.log, partition)
        self.engine: Engine | None = None
        #: Set once the replica leads (accepts writes); never for a standby.
        self.leading = trio.Event()
        self._promoted = trio.Event()
        self.cancel_scope = trio.CancelScope()
        self.last_stream_seq = 0
        #: The scopes of callers inside :meth:`call`, cancelled when the replica ends.
        self._callers: set[trio.CancelScope] = set()
        #: Set when the assignment took the partition away: no new calls, then stop.
        self.retiring = False

    @property
    def owner(self) -> bool:
        return self.placement.owner == self.node.node_id

    async def retire(self, grace_s: float) -> None:
        """Stop, letting the calls already inside finish first (for up to ``grace_s``): new
        calls are refused at once with :class:`NotLeading`, which callers retry against the
        new owner, so a partition moved by a rebalance fails no request that could wait.
        (Should the new owner publish first, a late write here is fenced, never stored.)"""
        self.retiring = True
        with trio.move_on_after(grace_s):
            while self._callers:
                await trio.sleep(0.01)
        self.cancel_scope.cancel()

    def promote(self, placement: Placement) -> None:
        """This node now owns the partition (it stood by): catch up and lead."""
        self.placement = placement
        self._promoted.set()

    async def call(self, operation: Callable[[Engine], Awaitable[T]]) -> T:
        """``operation(engine)`` on this replica, which must lead; a caller still inside when
        the replica ends (dropped, failed, the node stopping) gets :class:`PartitionUnavailable`
        rather than waiting on an engine that closed under it (its actors are cancelled, so
        the replies it waits for would never come).

        Raises:
            PartitionUnavailable: the replica does not lead, or stopped during the call.
        """
        engine = self.engine
        if engine is None or not self.leading.is_set() or self.journal.failure is not None or self.retiring:
            raise NotLeading(f"this node does not lead partition {self.partition} (now); retry")
        with trio.CancelScope() as scope:
            self._callers.add(scope)
            try:
                return await operation(engine)
            finally:
                self._callers.discard(scope)
        raise PartitionUnavailable(f"partition {self.partition} stopped on this node during the request; retry")

    async def run(self) -> None:
        """Catch up, then tail (standby) or lead (owner) until cancelled or the journal fails."""
        try:
            await self._run()
        finally:
            for scope in list(self._callers):
                scope.cancel()

    async def _run(self) -> None:
        with self.cancel_scope:
            async with Engine.open(journal=self.journal) as engine, trio.open_nursery() as nursery:
                self.engine = engine
                await self._restore()
                await self._catch_up(from_leader=False)
                while not self.owner:
                    with trio.move_on_after(self.node.config.tail_interval_s):
                        await self._promoted.wait()
                    await self._catch_up(from_leader=False)
                # Owner: the last records up to the leader's tail (every acknowledged write,
                # before this replica answers a read), then lead from there.
                await self._catch_up(from_leader=True)
                self.journal.lead(self.placement.writer, self.last_stream_seq)
                await nursery.start(self.journal.run)
                self.leading.set()
                log.info("node %s leads partition %d as %s from record %d", self.node.node_id,
                         self.partition, self.placement.writer, self.journal.last_seq)
                nursery.start_soon(self._snapshot_now_and_then)
                while self.journal.failure is None:
                    await self.journal.wait_failed()
                nursery.cancel_scope.cancel()
        self.engine = None

    async def _catch_up(self, *, from_leader: bool) -> None:
        caught = await catch_up(self.node.log, self.partition, self.engine,  # type: ignore[arg-type]
                                after_seq=self.journal.last_seq, after_stream_seq=self.last_stream_seq,
                                from_leader=from_leader)
        self.last_stream_seq = caught.last_stream_seq
        self.journal.note_position(caught.last_seq, caught.last_stream_seq)

    async def _restore(self) -> None:
        """Start from the partition's stored snapshot, if there is one: the log before it may
        have been cut (``cluster/partition_snapshots.py``)."""
        snapshot = await self.node.snapshots.load(self.partition)
        if snapshot is None:
            return
        items = PartitionSnapshots.restore(self.engine, snapshot)  # type: ignore[arg-type]
        self.journal.advance_to(snapshot.start_seq - 1)
        self.last_stream_seq = snapshot.cut
        log.info("node %s: partition %d restored from its snapshot (%d items, records before %d)",
                 self.node.node_id, self.partition, items, snapshot.start_seq)

    async def _snapshot_now_and_then(self) -> None:
        """While leading: store a snapshot every ``snapshot_interval_s`` when records were
        written since the last, and cut the log below it. A failure to store is logged and
        tried again next time; the partition goes on being served either way."""
        interval = self.node.config.snapshot_interval_s
        saved_upto = self.journal.last_seq
        while True:
            await trio.sleep(interval)
            if self.journal.last_seq == saved_upto or self.engine is None:
                continue
            try:
                saved = await self.node.snapshots.save(self.partition, self.engine, self.journal)
            except (LogUnavailable, nats.errors.Error) as exc:
                log.warning("partition %d: snapshot not stored (%s); next in %g s", self.partition, exc, interval)
                continue
            if saved is not None:
                saved_upto = saved.start_seq - 1


class ClusterNode:
    """A node's partitions, kept as the assignment says (module docstring)."""

    def __init__(self, jetstream: JetStream, node_id: str, *, address: str, config: NodeConfig | None = None) -> None:
        self.config = config or NodeConfig()
        self.node_id = node_id
        self.log = PartitionLog(jetstream, self.config.layout)
        self.snapshots = PartitionSnapshots(jetstream, self.config.layout)
        self.membership = Membership(jetstream, node_id, address=address,
                                     partitions=self.config.layout.partitions, config=self.config.membership)
        self.replicas: dict[int, Replica] = {}
        self._nursery: trio.Nursery | None = None

    @property
    def partitions(self) -> int:
        return self.config.layout.partitions

    @property
    def assignment(self) -> Assignment | None:
        return self.membership.assignment

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the assigned partitions until cancelled; started once membership runs."""
        await self.log.ensure_streams()
        await self.snapshots.setup()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.membership.run, self._on_assignment)
            task_status.started()
            await trio.sleep_forever()

    async def _on_assignment(self, assignment: Assignment) -> None:
        self._reconcile(assignment)

    def _reconcile(self, assignment: Assignment) -> None:
        """Start, promote or drop replicas to match ``assignment``."""
        assert self._nursery is not None
        me = self.node_id
        for partition, placement in enumerate(assignment.partitions):
            replica = self.replicas.get(partition)
            wanted = me in (placement.owner, placement.standby)
            if replica is not None and not wanted:
                self._drop(partition)
            elif replica is not None and placement.owner == me and not replica.owner:
                replica.promote(placement)
            elif replica is not None and replica.owner and placement != replica.placement:
                # Still ours, but the placement changed under an owner (its epoch cannot have
                # moved without another owner in between): start again from the log.
                self._drop(partition)
                self._start(partition, placement)
            elif replica is None and wanted:
                self._start(partition, placement)

    def _start(self, partition: int, placement: Placement) -> None:
        assert self._nursery is not None
        replica = Replica(self, partition, placement)
        self.replicas[partition] = replica
        self._nursery.start_soon(self._keep, replica)

    def _drop(self, partition: int) -> None:
        replica = self.replicas.pop(partition)
        if replica._callers and self._nursery is not None:
            self._nursery.start_soon(replica.retire, self.config.retire_grace_s)
        else:
            replica.retiring = True
            replica.cancel_scope.cancel()

    async def _keep(self, replica: Replica) -> None:
        """Run a replica; if it ends on its own (its journal failed), start it again from the
        log while the assignment still gives this node the partition."""
        try:
            await replica.run()
        except* (LogUnavailable, PartitionUnavailable, LogGap) as failures:  # raised in nurseries: grouped
            log.warning("node %s: partition %d's replica stopped: %s", self.node_id, replica.partition,
                        _first_leaf(failures))
        if self.replicas.get(replica.partition) is replica:  # not dropped: it failed
            del self.replicas[replica.partition]
            await trio.sleep(0.2)
            assignment = self.membership.assignment
            if assignment is not None and self.replicas.get(replica.partition) is None:
                placement = assignment.partitions[replica.partition]
                if self.node_id in (placement.owner, placement.standby):
                    self._start(replica.partition, placement)

    # ----- what the web layer uses ---------------------------------------------------------

    def leads(self, partition: int) -> bool:
        """Whether this node owns and leads the partition now."""
        replica = self.replicas.get(partition)
        return (replica is not None and replica.engine is not None and replica.leading.is_set()
                and replica.journal.failure is None)

    async def on_partition(self, partition: int, operation: Callable[[Engine], Awaitable[T]]) -> T:
        """``operation(engine)`` on the partition's engine, which this node must lead
        (:meth:`Replica.call`).

        Raises:
            NotLeading: this node does not lead the partition (nothing was done).
            PartitionUnavailable: this node stopped leading it during the call (503: the call
                may or may not have been applied).
        """
        replica = self.replicas.get(partition)
        if replica is None:
            raise NotLeading(f"this node does not lead partition {partition} (now); retry")
        return await replica.call(operation)

    def owner_of(self, partition: int) -> str | None:
        assignment = self.membership.assignment
        return None if assignment is None else assignment.partitions[partition].owner


def _first_leaf(error: BaseException) -> BaseException:
    """The first exception inside (nested) exception groups."""
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error
