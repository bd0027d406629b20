"""Stress tests for engine/ranked/: seeded random operation mixes with tiny blocks.

Like sortedcontainers' ``tests/test_stress_sortedlist.py``: ``random.seed(0)``, a load of 4 to 8
rows per block so that blocks split and merge all the time, ``_check()`` after every step and a
full comparison with a naive model (a dict sorted on demand) every few steps.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from fractions import Fraction

import pytest

from engine.errors import NotFound
from engine.ranked import RankedElement, RankedList

M64 = 2**64 - 1
M32 = 2**32 - 1
NOW = 1_700_000_000


class Stress:
    """A RankedList, its model, and the random actions applied to both."""

    def __init__(self, load: int, ids: Callable[[], int], scores: Callable[[], int]) -> None:
        self.rl = RankedList(load)
        self.model: dict[int, tuple[int, int, int, dict[str, int] | None]] = {}
        self.ids = ids
        self.scores = scores
        self.now = NOW
        self.most_blocks = 0

    def expected(self) -> list[RankedElement]:
        rows = sorted(self.model.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[1][2], kv[0]))
        n = len(rows)
        return [
            RankedElement(i, s, t, u, p, r, n - 1 - r) for r, (i, (s, t, u, p)) in enumerate(rows)
        ]

    def compare(self) -> None:
        self.rl._check()
        assert list(self.rl) == self.expected()

    # Writes

    def add(self) -> None:
        i, score = self.ids(), self.scores()
        tie = random.choice((0, 0, 1, M32))
        payload = {"step": random.randrange(100)} if random.random() < 0.3 else None
        self.rl.upsert(i, score, tie, payload, self.now)
        self.model[i] = (score, tie, self.now, payload)

    def bump(self) -> None:
        """A small score change of an existing element: usually a move inside its block."""
        if not self.model:
            return
        i = random.choice(list(self.model))
        score, tie, _, payload = self.model[i]
        score = max(0, min(M64, score + random.randint(-2, 2)))
        previous = self.rl.upsert(i, score, tie, payload, self.now)
        assert previous is not None and previous.id == i
        self.model[i] = (score, tie, self.now, payload)

    def remove(self) -> None:
        i = random.choice(list(self.model)) if self.model and random.random() < 0.8 else self.ids()
        assert self.rl.delete(i) == (i in self.model)
        self.model.pop(i, None)

    def bulk_add(self) -> None:
        batch = [
            (self.ids(), self.scores(), random.choice((0, 1)), None)
            for _ in range(random.randrange(1, 40))
        ]
        self.rl.bulk_upsert(batch, self.now)
        for i, score, tie, payload in batch:
            self.model[i] = (score, tie, self.now, payload)

    def bulk_remove(self) -> None:
        ids = random.sample(list(self.model), min(len(self.model), random.randrange(1, 40)))
        ids += [self.ids() for _ in range(3)]
        assert self.rl.bulk_delete(ids) == len(set(ids) & set(self.model))
        for i in ids:
            self.model.pop(i, None)

    def tick(self) -> None:
        self.now += random.randrange(3)

    # Reads

    def rank(self) -> None:
        if not self.model:
            return
        expected = self.expected()
        e = random.choice(expected)
        assert self.rl.rank_of(e.id) == e.from_top
        assert self.rl.get(e.id) == e
        assert self.rl.at_rank(e.from_top) == e

    def ranges(self) -> None:
        expected = self.expected()
        n = len(expected)
        if not n:
            with pytest.raises(NotFound):
                self.rl.range_from_top(0, 5)
            return
        start, limit = random.randrange(n), random.randrange(1, 60)
        assert self.rl.range_from_top(start, limit) == expected[start : start + limit]
        first = n - 1 - start
        assert self.rl.range_from_bottom(start, limit) == expected[first : first + limit]

    def percentile(self) -> None:
        expected = self.expected()
        if not expected:
            with pytest.raises(NotFound):
                self.rl.percentile(10.0)
            return
        pct = random.uniform(0, 100)
        index = min(len(expected) - 1, int(Fraction(pct) * len(expected) / 100))
        assert self.rl.percentile(pct) == expected[index]

    def neighbours(self) -> None:
        expected = self.expected()
        if not expected:
            return
        e = random.choice(expected)
        r = random.randrange(12)
        above, below = self.rl.neighbours(e.id, r)
        assert above == expected[max(0, e.from_top - r) : e.from_top]
        assert below == expected[e.from_top + 1 : e.from_top + 1 + r]

    def run(self, steps: int, weights: dict[Callable[[], None], int]) -> None:
        actions = list(weights)
        counts = list(weights.values())
        for step in range(steps):
            random.choices(actions, counts)[0]()
            self.rl._check()
            self.most_blocks = max(self.most_blocks, len(self.rl._blocks))
            if step % 25 == 0:
                self.compare()
        self.compare()


def mix(s: Stress, *, bulk: int = 1) -> dict[Callable[[], None], int]:
    return {
        s.add: 30,
        s.bump: 15,
        s.remove: 18,
        s.bulk_add: bulk,
        s.bulk_remove: bulk,
        s.tick: 5,
        s.rank: 5,
        s.ranges: 3,
        s.percentile: 3,
        s.neighbours: 3,
    }


def test_stress_ranked_small_load() -> None:
    random.seed(0)
    s = Stress(4, lambda: random.randrange(400), lambda: random.randrange(30))
    s.run(5000, mix(s))
    assert s.most_blocks > 20  # the list grew big enough to split into many blocks


def test_stress_ranked_load_8_many_ties() -> None:
    random.seed(0)
    s = Stress(8, lambda: random.randrange(1000), lambda: random.choice((0, 1, 2, M64)))
    s.run(2500, mix(s))


def test_stress_ranked_bulk_rebuild_paths() -> None:
    random.seed(0)
    s = Stress(5, lambda: random.randrange(300), lambda: random.randrange(50))
    s.rl._bulk_rebuild_min = 0  # every bulk call of >= n/8 elements takes the rebuild path
    s.run(1500, mix(s, bulk=20))


def test_stress_ranked_ids_that_share_low_bits() -> None:
    """Ids that differ only in their high bits or sit at the top of the range: hash clusters."""
    random.seed(0)
    shapes = (
        lambda: random.randrange(64) << 58,
        lambda: random.randrange(300) << 32,
        lambda: M64 - random.randrange(200),
        lambda: random.randrange(300) * 1024,
    )
    s = Stress(6, lambda: random.choice(shapes)(), lambda: random.randrange(1000))
    s.run(4000, mix(s))


def test_stress_ranked_grow_then_drain() -> None:
    """Fill to thousands (splits, hash growth), then delete everything (merges, shrinking)."""
    random.seed(0)
    rl = RankedList(4)
    model: dict[int, int] = {}
    for step in range(3000):
        i = random.randrange(10**6)
        score = random.randrange(100)
        rl.upsert(i, score, 0, None, NOW)
        model[i] = score
        if step % 50 == 0:
            rl._check()
    rl._check()
    assert [e.id for e in rl] == sorted(model, key=lambda i: (-model[i], i))
    for step, i in enumerate(random.sample(list(model), len(model))):
        assert rl.delete(i)
        del model[i]
        if step % 50 == 0:
            rl._check()
            if model:
                j = random.choice(list(model))
                assert rl.rank_of(j) == sorted(model, key=lambda k: (-model[k], k)).index(j)
    rl._check()
    assert len(rl) == 0 and rl._hcap == 16


def test_stress_ranked_snapshots_and_clones_between_writes() -> None:
    random.seed(0)
    s = Stress(4, lambda: random.randrange(500), lambda: random.randrange(40))

    def round_trip() -> None:
        s.rl = RankedList.from_records(s.rl.to_records(random.randrange(1, 50)), load=4)

    def clone() -> None:
        old = s.rl
        s.rl = old.clone()
        old.upsert(10**9, 1, 0, None, s.now)  # the clone must not see this
        old._check()

    def reset() -> None:
        s.rl._reset(random.choice((4, 5, 7)))

    weights = mix(s)
    weights.update({round_trip: 2, clone: 2, reset: 2})
    s.run(2500, weights)
