"""The engine a cluster node's web app serves: each call split by partition and sent to the
partitions' owners, this node or another.

Theory of operation
-------------------
The routes of ``web/`` are thin clients of an :class:`~engine.engine.Engine`. On a cluster
node they get a :class:`ClusterEngine` instead, which has the same methods for what a cluster
serves so far and answers 501 for the rest (:class:`NotServedByCluster`), so no route changes
and no route of a single node learns about the cluster.

- **Writes** (``ingest_validated``): the route has validated the whole batch; here it is split
  by :func:`~cluster.node.partition_of` of each event's user, and each partition's share goes
  to its owner: this node's replica (``ClusterNode.on_partition``) or another node over HTTP
  (``cluster/serving/forwarding.py``: one request per other node, carrying the shares of all
  the partitions it owns). The shares run concurrently; the answer is 200 once every owner
  acknowledged, which an owner does only after JetStream stored the share's record. Global
  counters (``count``, PSD's counts) are split by counter name the same way.
- **Reads** (``query``, ``breakdown``, ``read_counts``): the keys are split the same way, each
  owner answers for its keys, and the answers are merged in the order the route asked.
  ``rank_users`` over every user asks every partition for its users' sums and ranks them
  together.
- **Failover**: an owner that is not (or no longer) leading refuses *before* it changes
  anything (:class:`~cluster.node.NotLeading`), and an owner that cannot be reached never got
  the request: both are retried against the owner the assignment names then, for up to
  ``retry_s``, which covers a failover (membership's TTL plus a catch-up). Reads are retried
  on any unavailability. A write whose owner failed *during* the call may or may not be in
  the log; it is answered 503 and never retried here, so it is counted at most once.

A batch spanning several partitions is atomic per partition, not across them: a 503 may leave
the shares of other partitions applied (each partition's log holds exactly what it
acknowledged; ``tests/cluster/test_serve.py`` checks acknowledged <= served <= attempted).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import fields
from typing import Any

import trio

from cluster.node import ClusterNode, NotLeading, partition_of
from cluster.partition_journal import PartitionUnavailable
from cluster.serving.forwarding import Forwarder, OwnerUnreachable
from cluster.serving.wire import (
    breakdown_request,
    counts_request,
    decode_breakdown,
    decode_query,
    events_request,
    query_request,
    rank_request,
    readcount_request,
    run_breakdown,
    run_query,
    run_rank,
    run_readcount,
)
from engine.actors import RouterStatistics
from engine.boards import Standing, rank_sums
from engine.commands import Command, CountBatch, IngestBatch
from engine.engine import Breakdown, Engine, EngineStatistics, UserResult
from engine.errors import PointspaceError
from engine.events import User, UserEvent, normalize_user, validate_count_events

__all__ = ["ClusterEngine", "NotServedByCluster"]


class NotServedByCluster(PointspaceError):
    """A route a cluster does not serve yet (it needs a query across partitions that is not
    written, or state that is not partitioned)."""

    http_status = 501


class ClusterEngine:
    """What the web app calls on a cluster node (module docstring).

    Args:
        node: this node's partitions and membership.
        forwarder: the HTTP client to other nodes.
        retry_s: how long a call waits for a partition's owner to be reachable and leading.
    """

    def __init__(self, node: ClusterNode, forwarder: Forwarder, *, retry_s: float = 10.0) -> None:
        self.node = node
        self.forwarder = forwarder
        self.retry_s = retry_s
        self.closed = False
        #: No local store: the partitions' logs are in JetStream (``/readyz``, ``/metrics``).
        self.store = None

    # ----- what routes call ---------------------------------------------------------------

    async def ingest_validated(self, events: list[UserEvent]) -> int:
        """Apply a validated batch: each partition's share through its owner (module docstring)."""
        if not events:
            return 0
        shares: dict[int, list[UserEvent]] = defaultdict(list)
        partitions = self.node.partitions
        for event in events:
            shares[partition_of(event[0], partitions)].append(event)

        def local(share: list[UserEvent]) -> Callable[[Engine], Awaitable[int]]:
            return lambda engine: engine.ingest_validated(share)

        await self._on_owners({p: (local(share), events_request(share)) for p, share in shares.items()},
                              "events", write=True)
        return len(events)

    async def count(self, counts: Any) -> int:
        """Validate and add global-counter increments, each counter's through its owner."""
        validated = validate_count_events(counts)
        await self._count_validated(validated)
        return len(validated)

    async def _count_validated(self, counts: list[tuple[str, int, int]]) -> None:
        shares: dict[int, list[tuple[str, int, int]]] = defaultdict(list)
        for item in counts:
            shares[partition_of(item[0], self.node.partitions)].append(item)

        def local(share: list[tuple[str, int, int]]) -> Callable[[Engine], Awaitable[Any]]:
            return lambda engine: engine.submit(CountBatch(counts=share))

        await self._on_owners({p: (local(share), counts_request(share)) for p, share in shares.items()},
                              "counters", write=True)

    async def submit(self, command: Command) -> dict[Hashable, Any]:
        """The commands a cluster routes (counter events, counter increments: PSD's write)."""
        if isinstance(command, IngestBatch):
            await self.ingest_validated(command.events)
        elif isinstance(command, CountBatch):
            await self._count_validated(command.counts)
        else:
            raise NotServedByCluster(f"a pointspace cluster does not serve this yet ({command.op}); "
                                     f"use a single-node server for it")
        return {}

    async def read_counts(self, names: Sequence[str], t1: int, t2: int) -> dict[str, int]:
        """Sums of global counters over [t1, t2], each from its owner."""

        def request_for(share: list[Any]) -> tuple[dict[str, Any], Callable[[Engine], Awaitable[Any]]]:
            body = readcount_request(share, t1, t2)
            return body, lambda engine: run_readcount(engine, body)

        return await self._scatter(list(dict.fromkeys(names)), "readcount", request_for, dict)

    async def counter_breakdown(self, name: str, t1: int, t2: int, step: str | int, *, tz: str | None = None,
                                offset: int = 0) -> Breakdown:
        """A global counter's per-period sums, from its owner."""
        body = readcount_request([name], t1, t2, step, tz=tz, offset=offset)
        partition = partition_of(name, self.node.partitions)
        answers = await self._on_owners({partition: (lambda engine: run_readcount(engine, body), body)},
                                        "readcount", write=False)
        answer = answers[partition]
        return Breakdown(answer["bounds"], {name: answer["series"]})

    async def query(
        self, users: Sequence[User], metrics: Sequence[str], t1: int, t2: int, *,
        atid: int | None = None, aid: int | None = None, offsets: Sequence[int] | None = None,
        with_atids: bool = False,
    ) -> dict[User, UserResult]:
        """Sums per user over [t1, t2], each user's from its partition's owner."""
        shifts = None if offsets is None else dict(zip((normalize_user(u) for u in users), offsets, strict=True))

        def request_for(share: list[User]) -> tuple[dict[str, Any], Callable[[Engine], Awaitable[Any]]]:
            share_offsets = None if shifts is None else [shifts[u] for u in share]
            body = query_request(share, metrics, t1, t2, atid=atid, aid=aid, offsets=share_offsets,
                                 with_atids=with_atids)
            return body, lambda engine: run_query(engine, body)

        return await self._read_users(users, "query", request_for, decode_query)

    async def breakdown(
        self, users: Sequence[User], metrics: Sequence[str], t1: int, t2: int, step: str | int, *,
        tz: str | None = None, offset: int = 0, atid: int | None = None,
    ) -> dict[User, Breakdown]:
        """Per-period sums per user, each user's from its partition's owner."""

        def request_for(share: list[User]) -> tuple[dict[str, Any], Callable[[Engine], Awaitable[Any]]]:
            body = breakdown_request(share, metrics, t1, t2, step, tz=tz, offset=offset, atid=atid)
            return body, lambda engine: run_breakdown(engine, body)

        return await self._read_users(users, "breakdown", request_for, decode_breakdown)

    async def rank_users(self, metric: str, t1: int, t2: int, *, atid: int | None = None,
                         users: Sequence[User] | None = None) -> list[Standing]:
        """Rank users by their sum of ``metric`` over [t1, t2], across every partition.

        With ``users``, their sums are queried (each from its owner); without, every
        partition's owner answers the sums of all its users with the metric. Either way the
        sums are ranked together here (``engine.boards.rank_sums``: the same order a single
        node gives), so ranks and the top are global.
        """
        if users is not None:
            results = await self.query(users, [metric], t1, t2, atid=atid)
            return rank_sums({user: result.sums[metric] for user, result in results.items()})
        body = rank_request(metric, t1, t2, atid)
        answers = await self._on_owners(
            {p: (lambda engine: run_rank(engine, body), body) for p in range(self.node.partitions)},
            "rank", write=False)
        sums: dict[Hashable, int] = {}
        for answer in answers.values():
            sums.update((user, score) for user, score in answer)
        return rank_sums(sums)

    def statistics(self) -> EngineStatistics:
        """The sum over the partitions this node leads now (``/api/stats``, ``/metrics``)."""
        stats = [r.engine.statistics() for r in list(self.node.replicas.values())
                 if r.engine is not None and self.node.leads(r.partition)]
        routers = [s.router for s in stats]
        router = RouterStatistics(**{
            f.name: (max if f.name.startswith("peak") else sum)(getattr(r, f.name) for r in routers) if routers else 0
            for f in fields(RouterStatistics)
        })
        return EngineStatistics(router=router, commands=sum(s.commands for s in stats),
                                events=sum(s.events for s in stats), last_seq=max((s.last_seq for s in stats), default=0))

    def __getattr__(self, name: str) -> Any:
        # Any other engine method: a route this cluster does not serve yet. Raised when the
        # route calls it, so the answer is a clear 501 naming what is missing, never a 500.
        if name.startswith("_"):
            raise AttributeError(name)

        def not_served(*args: Any, **kwargs: Any) -> Any:
            raise NotServedByCluster(f"a pointspace cluster does not serve this yet ({name}); "
                                     f"use a single-node server for it")

        return not_served

    # ----- routing ------------------------------------------------------------------------

    async def _read_users(
        self, users: Sequence[User], op: str,
        request_for: Callable[[list[Any]], tuple[dict[str, Any], Callable[[Engine], Awaitable[Any]]]],
        decode: Callable[[Any], dict[Hashable, Any]],
    ) -> dict[User, Any]:
        distinct = list(dict.fromkeys(normalize_user(u) for u in users))
        return await self._scatter(distinct, op, request_for, decode)  # type: ignore[return-value]

    async def _scatter(
        self, keys: list[Any], op: str,
        request_for: Callable[[list[Any]], tuple[dict[str, Any], Callable[[Engine], Awaitable[Any]]]],
        decode: Callable[[Any], dict[Any, Any]],
    ) -> dict[Any, Any]:
        """Ask each partition's owner about its keys (distinct, in order); the answers merged
        back into the order of ``keys``."""
        by_partition: dict[int, list[Any]] = defaultdict(list)
        for key in keys:
            by_partition[partition_of(key, self.node.partitions)].append(key)
        shares = {}
        for partition, share in by_partition.items():
            body, local = request_for(share)
            shares[partition] = (local, body)
        answers: dict[Any, Any] = {}
        for answer in (await self._on_owners(shares, op, write=False)).values():
            answers.update(decode(answer))
        return {key: answers[key] for key in keys}

    async def _on_owners(
        self, shares: dict[int, tuple[Callable[[Engine], Awaitable[Any]], Any]], op: str, *, write: bool,
    ) -> dict[int, Any]:
        """Each partition's share on its owner: ``local(engine)`` on this node's replica for
        the partitions it leads, and ``op`` with the bodies in one request per other owner
        node (``cluster/serving/forwarding.py``); each partition's answer.

        Partitions whose owner refused before changing anything, or could not be reached, or
        had none, are sent again to the owner the assignment names then, until ``retry_s``
        has passed; for reads, any unavailability is retried. The first other error is raised
        once every share has ended (module docstring).
        """
        deadline = trio.current_time() + self.retry_s
        delay = 0.05
        pending = dict(shares)
        done: dict[int, Any] = {}
        while True:
            failures = await self._one_round(pending, op, done)
            if not failures:
                return done
            retry = {p for p, exc in failures.items()
                     if isinstance(exc, NotLeading | OwnerUnreachable)
                     or (not write and isinstance(exc, PartitionUnavailable))}
            final = {p: exc for p, exc in failures.items() if p not in retry}
            if final:
                partition, exc = min(final.items())
                if isinstance(exc, PartitionUnavailable):
                    raise PartitionUnavailable(f"{exc.message} (partition {partition})")
                raise exc
            if trio.current_time() + delay > deadline:
                partition = min(retry)
                raise PartitionUnavailable(f"{failures[partition].message} (partition {partition}; gave up "
                                           f"after {self.retry_s:g} s)")
            pending = {p: pending[p] for p in retry}
            await trio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def _one_round(
        self, pending: dict[int, tuple[Callable[[Engine], Awaitable[Any]], Any]], op: str, done: dict[int, Any],
    ) -> dict[int, PointspaceError]:
        """Send every pending share once (to the owners the assignment names now); answers go
        into ``done``; the failures are returned by partition."""
        node = self.node
        failures: dict[int, PointspaceError] = {}
        local: list[int] = []
        remote: dict[str, list[int]] = defaultdict(list)
        for partition in pending:
            owner = node.owner_of(partition)
            address = None if owner is None else node.membership.addresses.get(owner)
            if owner == node.node_id:
                local.append(partition)
            elif address is None:
                failures[partition] = NotLeading(f"partition {partition} has no live owner now "
                                                 f"(the cluster is starting, or failing over)")
            else:
                remote[address].append(partition)

        async def run_local(partition: int) -> None:
            try:
                done[partition] = await node.on_partition(partition, pending[partition][0])
            except PointspaceError as exc:
                failures[partition] = exc

        async def run_remote(address: str, partitions: list[int]) -> None:
            try:
                answers = await self.forwarder.call(address, op, {p: pending[p][1] for p in partitions})
            except PointspaceError as exc:
                failures.update((p, exc) for p in partitions)
                return
            for partition in partitions:
                if partition not in answers:
                    failures[partition] = PartitionUnavailable(f"{address} did not answer for partition {partition}")
                elif isinstance(answers[partition], PointspaceError):
                    failures[partition] = answers[partition]
                else:
                    done[partition] = answers[partition]

        async with trio.open_nursery() as nursery:
            for partition in local:
                nursery.start_soon(run_local, partition)
            for address, partitions in remote.items():
                nursery.start_soon(run_remote, address, partitions)
        return failures
