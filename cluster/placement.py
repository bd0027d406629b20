"""Which node owns each partition, and which keeps a warm standby: a pure function of the live
nodes and the previous assignment.

Theory of operation
-------------------
The coordinator (``cluster/membership.py``) calls :func:`assign` whenever the set of live
nodes changes and writes the result for every node to read. It is pure and deterministic, so
it is tested alone (``tests/cluster/test_placement.py``, with hypothesis), and two
coordinators that ever raced would compute the same thing from the same inputs.

Goals, in order:

1. **Every partition has a live owner.** A partition whose owner is gone goes to its standby
   when that one is live (it has been tailing the partition's log, so it takes over by
   catching up to the tail -- Kafka Streams' standby replicas), else to the least loaded node.
2. **Nothing moves without a reason.** A live owner keeps its partitions unless the load is
   uneven by more than one; only then are partitions moved, from the most to the least
   loaded node: first a dead node's partitions (they change owner anyway), then those whose
   standby is the receiving node (a warm move).
3. **Even load**: owner counts differ by at most one between live nodes.
4. **A standby on another node** for every partition when there are two nodes or more, kept
   where it was while it is live and not the owner, else on the node with the fewest.

Each partition carries an **epoch**, raised whenever its owner changes. A writer names
itself ``node@epoch`` in its log messages' ids (``cluster/partition_journal.py``), so two
ownerships of one partition never share a message id, even on the same node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Assignment", "Placement", "assign"]


@dataclass(frozen=True, slots=True)
class Placement:
    """One partition's owner, standby (``None`` on a one-node cluster) and epoch."""

    owner: str
    standby: str | None
    epoch: int

    @property
    def writer(self) -> str:
        """The writer id the owner puts in its log messages' ids."""
        return f"{self.owner}@{self.epoch}"


@dataclass(frozen=True, slots=True)
class Assignment:
    """Every partition's placement, and the coordinator's version counter."""

    version: int
    partitions: tuple[Placement, ...]

    def owned_by(self, node: str) -> list[int]:
        return [p for p, placed in enumerate(self.partitions) if placed.owner == node]

    def standing_by(self, node: str) -> list[int]:
        return [p for p, placed in enumerate(self.partitions) if placed.standby == node]

    def nodes(self) -> set[str]:
        return {p.owner for p in self.partitions} | {p.standby for p in self.partitions if p.standby}

    def to_plain(self) -> dict[str, Any]:
        return {"version": self.version, "partitions": [[p.owner, p.standby, p.epoch] for p in self.partitions]}

    @classmethod
    def from_plain(cls, plain: dict[str, Any]) -> Assignment:
        return cls(int(plain["version"]), tuple(Placement(o, s, int(e)) for o, s, e in plain["partitions"]))


def assign(partitions: int, nodes: Sequence[str], previous: Assignment | None = None) -> Assignment:
    """The assignment of ``partitions`` partitions over the live ``nodes`` (module docstring).

    Returns ``previous`` itself when nothing changes, else a new one with ``version + 1``.

    Raises:
        ValueError: no live node, or ``previous`` has another number of partitions.

    >>> a = assign(4, ["b", "a"])
    >>> [(p.owner, p.standby, p.epoch) for p in a.partitions]
    [('a', 'b', 1), ('b', 'a', 1), ('a', 'b', 1), ('b', 'a', 1)]
    >>> b = assign(4, ["b"], a)  # a died: its partitions go to their standby, b
    >>> [(p.owner, p.standby, p.epoch) for p in b.partitions], b.version
    ([('b', None, 2), ('b', None, 1), ('b', None, 2), ('b', None, 1)], 2)
    >>> assign(4, ["b"], b) is b
    True
    """
    live = sorted(set(nodes))
    if not live:
        raise ValueError("no live node to assign partitions to")
    if previous is not None and len(previous.partitions) != partitions:
        raise ValueError(f"the previous assignment has {len(previous.partitions)} partitions, not {partitions}")
    alive = set(live)
    old: list[Placement | None] = list(previous.partitions) if previous is not None else [None] * partitions

    # 1. Live owners keep their partitions; a dead owner's partition goes to a live standby.
    owners: list[str | None] = []
    for placed in old:
        if placed is None:
            owners.append(None)
        elif placed.owner in alive:
            owners.append(placed.owner)
        elif placed.standby in alive:
            owners.append(placed.standby)
        else:
            owners.append(None)
    load = {node: 0 for node in live}
    for owner in owners:
        if owner is not None:
            load[owner] += 1

    # 2. Partitions without an owner go to the least loaded nodes.
    for p, owner in enumerate(owners):
        if owner is None:
            node = min(live, key=lambda n: (load[n], n))
            owners[p] = node
            load[node] += 1

    # 3. Even out: move from the most to the least loaded node until they differ by <= 1:
    #    first partitions that changed owner in this round anyway (a dead node's), so no
    #    live ownership is disturbed; then one whose standby is the receiver (a warm move).
    while True:
        most = max(live, key=lambda n: (load[n], n))
        least = min(live, key=lambda n: (load[n], n))
        if load[most] - load[least] <= 1:
            break
        mine = [p for p, owner in enumerate(owners) if owner == most]
        moving = [p for p in mine if old[p] is None or old[p].owner != most]  # type: ignore[union-attr]
        warm = [p for p in mine if old[p] is not None and old[p].standby == least]  # type: ignore[union-attr]
        p = (moving or warm or mine)[-1]
        owners[p] = least
        load[most] -= 1
        load[least] += 1

    # 4. Standbys: kept while live and not the owner, else on the node with the fewest.
    standbys: list[str | None] = [None] * partitions
    standing = {node: 0 for node in live}
    if len(live) > 1:
        for p, placed in enumerate(old):
            if placed is not None and placed.standby in alive and placed.standby != owners[p]:
                standbys[p] = placed.standby
                standing[placed.standby] += 1
        for p in range(partitions):
            if standbys[p] is None:
                node = min((n for n in live if n != owners[p]), key=lambda n: (standing[n], n))
                standbys[p] = node
                standing[node] += 1

    # 5. The epoch rises by one where the owner changed.
    placements = tuple(
        Placement(owner, standby,  # type: ignore[arg-type]
                  1 if placed is None else placed.epoch + (owner != placed.owner))
        for owner, standby, placed in zip(owners, standbys, old, strict=True))
    if previous is not None and placements == previous.partitions:
        return previous
    return Assignment((previous.version if previous is not None else 0) + 1, placements)

