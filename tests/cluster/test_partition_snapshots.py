"""cluster/partition_snapshots.py: owners store snapshots in the object store and cut their
logs below them; nodes started later restore every partition from snapshot plus log, and a
reader behind a cut finds the hole instead of replaying past it."""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from cluster.bridge import AsyncioBridge
from cluster.membership import MembershipConfig
from cluster.nats_servers import LocalNatsCluster
from cluster.node import ClusterNode, NodeConfig, partition_of
from cluster.partition_journal import LogGap, catch_up, decode_message
from cluster.partition_log import JetStream, LogLayout
from cluster.partition_snapshots import PartitionSnapshots
from engine.engine import Engine
from engine.events import validate_counter_events

_prefixes = itertools.count()
PARTITIONS = 4
T0 = 1_700_000_000
USERS = 40


def config(prefix: str) -> NodeConfig:
    return NodeConfig(layout=LogLayout(partitions=PARTITIONS, streams=2, prefix=prefix),
                      membership=MembershipConfig(prefix=prefix, heartbeat_s=0.2, ttl_s=1.5),
                      tail_interval_s=0.1, snapshot_interval_s=0.3)


@asynccontextmanager
async def nodes_of(nats: LocalNatsCluster, prefix: str, names: list[str]) -> AsyncIterator[dict[str, ClusterNode]]:
    out: dict[str, ClusterNode] = {}
    async with trio.open_nursery() as nursery:

        async def node(name: str, task_status: trio.TaskStatus[None]) -> None:
            async with AsyncioBridge.open() as bridge, JetStream.connect(bridge, nats.urls) as js:
                out[name] = ClusterNode(js, name, address=f"http://{name}", config=config(prefix))
                await out[name].run(task_status=task_status)

        for name in names:
            await nursery.start(node, name)
        yield out
        nursery.cancel_scope.cancel()


async def until(condition, timeout: float = 30.0) -> None:  # noqa: ANN001
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.05)


def all_led(nodes: dict[str, ClusterNode]) -> bool:
    """Every partition led by one node, and every node leading some (the rebalance done)."""
    return (all(sum(n.leads(p) for n in nodes.values()) == 1 for p in range(PARTITIONS))
            and all(any(n.leads(p) for p in range(PARTITIONS)) for n in nodes.values()))


async def write(nodes: dict[str, ClusterNode], batches: int, rng: random.Random, totals: dict[int, int]) -> None:
    any_node = next(iter(nodes.values()))
    for i in range(batches):
        events = validate_counter_events([{"metric": "steps", "user": rng.randrange(USERS), "value": rng.randrange(1, 9),
                                           "ts": T0 + i} for _ in range(20)])
        shares: dict[int, list] = defaultdict(list)
        for event in events:
            shares[partition_of(event[0], PARTITIONS)].append(event)
        for p, share in shares.items():
            owner = nodes[any_node.owner_of(p)]  # type: ignore[index]
            await owner.on_partition(p, lambda engine, share=share: engine.ingest_validated(share))
            for event in share:
                totals[event[0]] += event[5]


async def served(nodes: dict[str, ClusterNode]) -> dict[int, int]:
    out: dict[int, int] = {}
    for p in range(PARTITIONS):
        users = [u for u in range(USERS) if partition_of(u, PARTITIONS) == p]
        owner = next(n for n in nodes.values() if n.leads(p))

        async def read(engine: Engine, users: list[int] = users) -> dict[int, int]:
            result = await engine.query(users, ["steps"], T0, T0 + 10_000)
            return {u: r.sums["steps"] for u, r in result.items()}

        out.update(await owner.on_partition(p, read))
    return out


async def first_record_in_log(node: ClusterNode, p: int) -> int | None:
    records = await node.log.read(p, 0, limit=1)
    return decode_message(records[0].data)[0] if records else None


async def test_a_cluster_started_after_the_logs_were_cut_restores_every_partition(nats_cluster):
    prefix = f"s{next(_prefixes)}"
    totals: dict[int, int] = defaultdict(int)
    rng = random.Random(5)
    async with nodes_of(nats_cluster, prefix, ["a", "b"]) as nodes:
        await until(lambda: all_led(nodes))
        await write(nodes, 60, rng, totals)
        await trio.sleep(1.0)  # snapshots taken, logs cut
        await write(nodes, 30, rng, totals)  # and records after the snapshots
        node = nodes["a"]
        for p in range(PARTITIONS):
            snapshot = await node.snapshots.load(p)
            assert snapshot is not None and snapshot.start_seq > 1, p
            first = await first_record_in_log(node, p)
            assert first is None or first > 1, (p, first)  # the log was cut
        assert await served(nodes) == {u: totals[u] for u in range(USERS)}
    # Everything stopped; a node of a new cluster starts every partition from its snapshot
    # and the log after it.
    async with nodes_of(nats_cluster, prefix, ["c"]) as nodes:
        await until(lambda: all_led(nodes))
        assert await served(nodes) == {u: totals[u] for u in range(USERS)}
        await write(nodes, 10, rng, totals)
        assert await served(nodes) == {u: totals[u] for u in range(USERS)}


async def test_a_reader_behind_the_cut_finds_the_hole_and_the_snapshot_fills_it(nats_cluster):
    """Reading a cut log from its start is refused (``LogGap``: a replica that meets it is
    rebuilt by its node), and snapshot + the log after its cut equals the owner's state."""
    prefix = f"s{next(_prefixes)}"
    totals: dict[int, int] = defaultdict(int)
    async with nodes_of(nats_cluster, prefix, ["a"]) as nodes:
        await until(lambda: all_led(nodes))
        await write(nodes, 60, random.Random(6), totals)
        await trio.sleep(1.0)
        await write(nodes, 20, random.Random(7), totals)
        node = nodes["a"]
        for p in range(PARTITIONS):
            async with Engine.open() as fresh:
                with pytest.raises(LogGap):
                    await catch_up(node.log, p, fresh)
            snapshot = await node.snapshots.load(p)
            assert snapshot is not None
            async with Engine.open() as rebuilt:
                PartitionSnapshots.restore(rebuilt, snapshot)
                await catch_up(node.log, p, rebuilt, after_seq=snapshot.start_seq - 1, after_stream_seq=snapshot.cut)
                users = [u for u in range(USERS) if partition_of(u, PARTITIONS) == p]
                result = await rebuilt.query(users, ["steps"], T0, T0 + 10_000)
                assert {u: r.sums["steps"] for u, r in result.items()} == {u: totals[u] for u in users}, p
