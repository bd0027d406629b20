"""cluster/placement.py: every partition owned by a live node, standbys elsewhere, even load,
and nothing moved without a reason -- over random histories of nodes joining and dying."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.placement import Assignment, Placement, assign

NODES = [f"n{i}" for i in range(6)]


def check(a: Assignment, live: set[str], partitions: int) -> None:
    assert len(a.partitions) == partitions
    load = {n: 0 for n in live}
    for placed in a.partitions:
        assert placed.owner in live
        load[placed.owner] += 1
        if len(live) > 1:
            assert placed.standby in live and placed.standby != placed.owner
        else:
            assert placed.standby is None
        assert placed.epoch >= 1
    assert max(load.values()) - min(load.values()) <= 1, load


histories = st.lists(st.sets(st.sampled_from(NODES), min_size=1), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(partitions=st.integers(1, 70), history=histories)
def test_every_step_of_a_history_is_valid_and_moves_only_what_it_must(partitions, history):
    previous: Assignment | None = None
    for live in history:
        current = assign(partitions, sorted(live), previous)
        check(current, live, partitions)
        assert assign(partitions, sorted(live), current) is current  # stable
        if previous is not None:
            assert current.version in (previous.version, previous.version + 1)
            for p, (old, new) in enumerate(zip(previous.partitions, current.partitions, strict=True)):
                # The epoch rises by one exactly when the owner changes.
                assert new.epoch == old.epoch + (new.owner != old.owner), (p, old, new)
                # A live owner keeps its partition unless it held more than the least even
                # share (a node joined, or its load was uneven).
                if old.owner in live and new.owner != old.owner:
                    assert len(previous.owned_by(old.owner)) > partitions // len(live), (p, old, new)
            if live == previous.nodes():
                # The same nodes as before: nothing to do.
                assert current is previous
        previous = current


@settings(max_examples=300, deadline=None)
@given(partitions=st.integers(2, 70), start=st.sets(st.sampled_from(NODES), min_size=2),
       dying=st.integers(0, 5))
def test_a_node_dying_moves_only_its_own_partitions(partitions, start, dying):
    first = assign(partitions, sorted(start))
    dead = sorted(start)[dying % len(start)]
    survivors = start - {dead}
    after = assign(partitions, sorted(survivors), first)
    check(after, survivors, partitions)
    moved = {p for p in range(partitions) if after.partitions[p].owner != first.partitions[p].owner}
    assert moved == set(first.owned_by(dead))


def test_orphans_go_to_their_warm_standby_when_the_load_allows():
    first = assign(6, ["a", "b", "c"])
    orphans = first.owned_by("a")
    assert [first.partitions[p].standby for p in orphans] == ["b", "c"]
    after = assign(6, ["b", "c"], first)
    assert [after.partitions[p].owner for p in orphans] == ["b", "c"]
    assert [after.partitions[p].epoch for p in orphans] == [2, 2]
    assert all(after.partitions[p].epoch == 1 for p in range(6) if p not in orphans)


@settings(max_examples=200, deadline=None)
@given(partitions=st.integers(1, 70), start=st.sets(st.sampled_from(NODES[:5]), min_size=1))
def test_a_node_joining_only_takes_partitions(partitions, start):
    first = assign(partitions, sorted(start))
    after = assign(partitions, sorted(start | {"n5"}), first)
    check(after, start | {"n5"}, partitions)
    for old, new in zip(first.partitions, after.partitions, strict=True):
        assert new.owner in (old.owner, "n5")


def test_round_trip_and_refusals():
    a = assign(8, ["x", "y", "z"])
    assert Assignment.from_plain(a.to_plain()) == a
    assert a.partitions[0].writer == f"{a.partitions[0].owner}@1"
    assert sorted(a.nodes()) == ["x", "y", "z"]
    assert sorted(a.owned_by("x") + a.owned_by("y") + a.owned_by("z")) == list(range(8))
    assert len(a.standing_by("x")) + len(a.standing_by("y")) + len(a.standing_by("z")) == 8
    with pytest.raises(ValueError, match="^no live node to assign partitions to$"):
        assign(8, [])
    with pytest.raises(ValueError, match="^the previous assignment has 8 partitions, not 9$"):
        assign(9, ["x"], a)
    assert Placement("x", None, 3).writer == "x@3"
