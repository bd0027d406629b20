"""cluster/membership.py on a real JetStream cluster: nodes heartbeat, one coordinates, every
node reads the same assignment; a node that stops is dropped within the TTL, and when it
was the coordinator another one takes over."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from cluster.bridge import AsyncioBridge
from cluster.membership import Membership, MembershipConfig
from cluster.nats_servers import LocalNatsCluster
from cluster.partition_log import JetStream
from cluster.placement import Assignment

_prefixes = itertools.count()
TTL = 1.5


@asynccontextmanager
async def nodes(nats_cluster: LocalNatsCluster, names: list[str]) -> AsyncIterator[dict[str, tuple[Membership, trio.CancelScope, list[Assignment]]]]:
    """Each name a node with its own bridge and connection, running membership in a scope
    the test can cancel (a node that stops heartbeating, as one that died)."""
    config = MembershipConfig(prefix=f"m{next(_prefixes)}", heartbeat_s=0.2, ttl_s=TTL)
    out: dict[str, tuple[Membership, trio.CancelScope, list[Assignment]]] = {}
    async with trio.open_nursery() as nursery:

        async def node(name: str, task_status: trio.TaskStatus[None]) -> None:
            with trio.CancelScope() as scope:
                async with AsyncioBridge.open() as bridge, JetStream.connect(bridge, nats_cluster.urls) as js:
                    membership = Membership(js, name, address=f"http://{name}", partitions=12, config=config)
                    seen: list[Assignment] = []

                    async def record(a: Assignment) -> None:
                        seen.append(a)

                    out[name] = (membership, scope, seen)
                    async with trio.open_nursery() as own:
                        await own.start(membership.run, record)
                        task_status.started()

        for name in names:
            await nursery.start(node, name)
        yield out
        nursery.cancel_scope.cancel()


async def until(condition, timeout: float = 15.0) -> None:  # noqa: ANN001
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.05)


def test_node_ids_are_checked():
    with pytest.raises(ValueError, match="node id 'a.b' must be letters"):
        Membership(None, "a.b", address="", partitions=1)  # type: ignore[arg-type]


async def test_three_nodes_agree_on_one_assignment_with_one_coordinator(nats_cluster):
    async with nodes(nats_cluster, ["a", "b", "c"]) as running:
        def agreed() -> bool:
            seen = [m.assignment for m, _, _ in running.values()]
            return all(a is not None and a.nodes() == {"a", "b", "c"} for a in seen) and len(
                {a.version for a in seen if a}) == 1
        await until(agreed)
        assert sum(m.coordinating for m, _, _ in running.values()) == 1
        a = running["a"][0].assignment
        assert a is not None
        assert sorted(len(a.owned_by(n)) for n in "abc") == [4, 4, 4]
        assert running["b"][0].addresses == {"a": "http://a", "b": "http://b", "c": "http://c"}


async def test_a_stopped_node_is_dropped_and_a_stopped_coordinator_replaced(nats_cluster):
    async with nodes(nats_cluster, ["a", "b", "c"]) as running:
        await until(lambda: all(m.assignment is not None and len(m.assignment.nodes()) == 3
                                for m, _, _ in running.values()))
        coordinator = next(n for n, (m, _, _) in running.items() if m.coordinating)
        before = running[coordinator][0].assignment
        assert before is not None
        stopped_at = trio.current_time()
        running[coordinator][1].cancel()  # it stops heartbeating, holding the lease
        survivors = [n for n in running if n != coordinator]
        await until(lambda: all(running[n][0].assignment is not None
                                and running[n][0].assignment.nodes() == set(survivors) for n in survivors))
        took = trio.current_time() - stopped_at
        assert took < TTL * 2 + 2, took  # the node's key and the lease lapse, then one tick
        assert sum(running[n][0].coordinating for n in survivors) == 1
        after = running[survivors[0]][0].assignment
        assert after is not None and after.version > before.version
        # Its partitions went to their standbys, the others stayed.
        for p, (old, new) in enumerate(zip(before.partitions, after.partitions, strict=True)):
            if old.owner == coordinator:
                assert new.owner == old.standby and new.epoch == old.epoch + 1, p
            else:
                assert new.owner == old.owner, p
