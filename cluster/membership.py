"""Who is in the cluster, who coordinates, and the assignment every node reads: three
JetStream key-value buckets.

Theory of operation
-------------------
- ``<prefix>-nodes``: each node puts its own key every ``heartbeat_s``; the bucket's TTL
  (``ttl_s``) removes the key of a node that stopped. The live nodes are the keys present.
- ``<prefix>-coordinator``: one key, ``leader``, with the same TTL. A node that finds it
  absent creates it (``create`` succeeds for one node only); the holder keeps it by
  ``update`` with the revision it last wrote (compare-and-set), so a holder that stalled
  past the TTL and was replaced fails its next update and stops coordinating.
- ``<prefix>-assignment``: one key, ``current``, written by the coordinator with
  compare-and-set against the revision it read; its value is
  ``cluster/placement.py``'s :class:`~cluster.placement.Assignment`, computed from the live
  nodes and the current assignment. Every node reads it each tick and acts on a new version.

So a node that dies is gone from ``nodes`` within ``ttl_s``; within one more tick the
coordinator (or, if it was the one that died, its successor after the lease's TTL) writes an
assignment without it, and the standbys of its partitions take them over. The buckets are
replicated like the logs (R3 by default): this state survives the loss of a NATS server.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import nats.errors
import nats.js.errors
import trio
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from cluster.partition_log import JetStream, LogUnavailable
from cluster.placement import Assignment, assign

__all__ = ["Membership", "MembershipConfig"]

log = logging.getLogger("pointspace.cluster")


@dataclass(frozen=True, slots=True)
class MembershipConfig:
    prefix: str = "pointspace"
    #: Seconds between a node's heartbeats and coordinator ticks.
    heartbeat_s: float = 0.5
    #: Seconds after its last heartbeat that a node counts as dead (and a coordinator's lease
    #: lapses). Several heartbeats, so one slow tick does not evict a node.
    ttl_s: float = 3.0
    replicas: int = 3


class Membership:
    """One node's part in membership and coordination (module docstring).

    Args:
        node_id: this node's name, unique in the cluster (letters, digits, ``-``, ``_``).
        address: how other nodes reach this one (its HTTP URL), published with heartbeats.
        partitions: the cluster's number of partitions.
    """

    def __init__(self, jetstream: JetStream, node_id: str, *, address: str, partitions: int,
                 config: MembershipConfig | None = None) -> None:
        if not node_id.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"node id {node_id!r} must be letters, digits, '-' and '_'")
        self.jetstream = jetstream
        self.node_id = node_id
        self.address = address
        self.partitions = partitions
        self.config = config or MembershipConfig()
        self._nodes: KeyValue | None = None
        self._coordinator: KeyValue | None = None
        self._assignments: KeyValue | None = None
        self._lease_revision: int | None = None  # set while this node coordinates
        #: The newest assignment read, and the addresses of the live nodes with it.
        self.assignment: Assignment | None = None
        self.addresses: dict[str, str] = {}

    @property
    def coordinating(self) -> bool:
        return self._lease_revision is not None

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await self.jetstream.call(fn, *args, **kwargs)

    async def setup(self) -> None:
        """Create the three buckets, or open them if they exist."""
        c = self.config
        self._nodes = await self._bucket(f"{c.prefix}-nodes", ttl=c.ttl_s)
        self._coordinator = await self._bucket(f"{c.prefix}-coordinator", ttl=c.ttl_s)
        self._assignments = await self._bucket(f"{c.prefix}-assignment", ttl=None)

    async def _bucket(self, name: str, *, ttl: float | None, retry_s: float = 30.0) -> KeyValue:
        """Create or open a bucket; JetStream being briefly unable to place its replicas (a
        server offline, or a cluster just started) is retried for up to ``retry_s``."""
        js = self.jetstream.js
        config = KeyValueConfig(bucket=name, history=1, ttl=ttl, replicas=self.config.replicas,
                                storage=StorageType.FILE)
        deadline = trio.current_time() + retry_s
        while True:
            try:
                try:
                    return await self._call(js.create_key_value, config)
                except nats.js.errors.BadRequestError:  # exists (with this or another configuration)
                    return await self._call(js.key_value, name)
            except LogUnavailable:
                if trio.current_time() > deadline:
                    raise
                await trio.sleep(0.2)

    # ----- one tick --------------------------------------------------------------------------

    async def heartbeat(self) -> None:
        assert self._nodes is not None, "setup() first"
        await self._call(self._nodes.put, self.node_id, json.dumps({"address": self.address}).encode())

    async def live_nodes(self) -> dict[str, str]:
        """The live nodes' ids and addresses.

        The keys come from the bucket's stream info (its subjects), not ``KeyValue.keys``,
        which creates a consumer per call: several nodes ticking twice a second made
        JetStream refuse consumers ("maximum consumers limit reached").
        """
        assert self._nodes is not None, "setup() first"
        bucket = f"{self.config.prefix}-nodes"
        info = await self._call(self.jetstream.js.stream_info, f"KV_{bucket}", subjects_filter=f"$KV.{bucket}.>")
        keys = [subject.removeprefix(f"$KV.{bucket}.") for subject in (info.state.subjects or {})]
        out = {}
        for key in keys:
            try:
                entry = await self._call(self._nodes.get, key)
            except nats.js.errors.KeyNotFoundError:
                continue  # expired meanwhile
            out[key] = json.loads(entry.value or b"{}").get("address", "")
        return out

    async def hold_lease(self) -> bool:
        """Take or keep the coordinator's lease; whether this node coordinates now."""
        assert self._coordinator is not None, "setup() first"
        value = self.node_id.encode()
        try:
            if self._lease_revision is None:
                self._lease_revision = await self._call(self._coordinator.create, "leader", value)
                log.info("node %s coordinates the cluster", self.node_id)
            else:
                self._lease_revision = await self._call(self._coordinator.update, "leader", value,
                                                        last=self._lease_revision)
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.KeyNotFoundError):
            # Another node holds the lease, or ours lapsed (the key expired): not coordinating.
            if self._lease_revision is not None:
                log.warning("node %s lost the coordinator's lease", self.node_id)
            self._lease_revision = None
        return self._lease_revision is not None

    async def read_assignment(self) -> tuple[Assignment | None, int]:
        """The current assignment and its revision (``None, 0`` before the first)."""
        assert self._assignments is not None, "setup() first"
        try:
            entry = await self._call(self._assignments.get, "current")
        except nats.js.errors.KeyNotFoundError:
            return None, 0
        return Assignment.from_plain(json.loads(entry.value)), int(entry.revision)

    async def coordinate(self, live: list[str]) -> Assignment | None:
        """As coordinator: write the assignment for ``live`` if it changes; what was written."""
        assert self._assignments is not None, "setup() first"
        current, revision = await self.read_assignment()
        wanted = assign(self.partitions, live, current)
        if wanted is current:
            return None
        value = json.dumps(wanted.to_plain()).encode()
        try:
            if revision == 0:
                await self._call(self._assignments.create, "current", value)
            else:
                await self._call(self._assignments.update, "current", value, last=revision)
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.KeyNotFoundError):
            return None  # another coordinator wrote meanwhile; the next tick recomputes
        log.info("assignment %d written for nodes %s", wanted.version, ", ".join(live))
        return wanted

    async def tick(self) -> Assignment | None:
        """Heartbeat, coordinate if this node holds the lease, and read the assignment;
        the assignment when it is newer than the last one read."""
        await self.heartbeat()
        live = await self.live_nodes()
        self.addresses = live
        if await self.hold_lease() and live:
            await self.coordinate(sorted(live))
        assignment, _ = await self.read_assignment()
        if assignment is not None and (self.assignment is None or assignment.version > self.assignment.version):
            self.assignment = assignment
            return assignment
        return None

    async def run(self, on_assignment: Callable[[Assignment], Awaitable[None]], *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Tick every ``heartbeat_s`` for ever, calling ``on_assignment`` with each new one.
        JetStream being unavailable for a while is logged and retried; started once set up."""
        await self.setup()
        task_status.started()
        # A tick that hangs (a bucket whose JetStream leader died: its followers wait 4-9 s
        # before electing another) is cut well before the TTL and tried again, so the first
        # tick after the election comes within a second of it, not a TTL later.
        timeout_s = min(max(self.config.ttl_s / 3, 1.0), self.config.ttl_s)
        while True:
            try:
                with trio.fail_after(timeout_s):
                    new = await self.tick()
            except (LogUnavailable, trio.TooSlowError) as exc:
                reason = str(exc) or f"no answer within {timeout_s:g} s"
                log.warning("node %s: membership tick failed (%s); retrying", self.node_id, reason)
                new = None
            if new is not None:
                await on_assignment(new)
            await trio.sleep(self.config.heartbeat_s)
