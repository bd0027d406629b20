"""Tests for engine/ranked/: RankedList against a brute-force model (a sorted Python list).

Every mutation is followed by ``_check()``, which asserts all invariants of the structure. Small
loads (4 to 16 rows per block) make splits and merges happen in every test.
"""

from __future__ import annotations

import math
import random
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from engine.errors import Conflict, InvalidInput, NotFound
from engine.ranked import (
    HASH_PAD,
    RECORDS_VERSION,
    ElementIn,
    RankedElement,
    RankedList,
    RankedListCorrupt,
    RankedListStatistics,
    _home,
    _homes,
)

M64 = 2**64 - 1
M32 = 2**32 - 1
NOW = 1_700_000_000


###################################################################################################
# The model
###################################################################################################


class Model:
    """The obviously-correct version: a dict, sorted on every read."""

    def __init__(self) -> None:
        self.elements: dict[int, tuple[int, int, int, dict[str, Any] | None]] = {}

    def upsert(
        self, i: int, score: int, tie: int, payload: dict[str, Any] | None, now: int
    ) -> None:
        self.elements[i] = (score, tie, now, payload)

    def ranked(self) -> list[RankedElement]:
        rows = sorted(self.elements.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[1][2], kv[0]))
        n = len(rows)
        return [
            RankedElement(i, s, t, u, p, rank, n - 1 - rank)
            for rank, (i, (s, t, u, p)) in enumerate(rows)
        ]


def assert_same(rl: RankedList, model: Model) -> None:
    rl._check()
    expected = model.ranked()
    assert len(rl) == len(expected)
    assert list(rl) == expected
    for e in random.Random(len(expected)).sample(expected, min(5, len(expected))):
        assert rl.get(e.id) == e
        assert rl.rank_of(e.id) == e.from_top
        assert rl.at_rank(e.from_top) == e


def filled(n: int, load: int = 4, seed: int = 0) -> tuple[RankedList, Model]:
    rng = random.Random(seed)
    rl, model = RankedList(load), Model()
    for i in range(n):
        score, tie = rng.randrange(50), rng.randrange(3)
        payload = {"i": i} if i % 3 == 0 else None
        rl.upsert(i, score, tie, payload, NOW + i % 4)
        model.upsert(i, score, tie, payload, NOW + i % 4)
        rl._check()
    return rl, model


###################################################################################################
# Order, ranks, reads
###################################################################################################


def test_ranked_order_uses_score_then_tie_then_earlier_update_then_lower_id() -> None:
    rl = RankedList(4)
    rl.upsert(1, 10, 0, None, NOW)
    rl.upsert(2, 20, 0, None, NOW)  # higher score
    rl.upsert(3, 10, 5, None, NOW)  # same score, higher tie
    rl.upsert(4, 10, 0, None, NOW - 1)  # same score and tie, earlier update
    rl.upsert(5, 10, 0, None, NOW)  # like 1 but higher id
    rl.upsert(0, 10, 0, None, NOW)  # like 1 but lower id
    rl._check()
    assert [e.id for e in rl] == [2, 3, 4, 0, 1, 5]
    assert [e.from_bottom for e in rl] == [5, 4, 3, 2, 1, 0]


def test_ranked_reput_moves_below_equal_peers() -> None:
    rl = RankedList(4)
    rl.bulk_load([(1, 10), (2, 10), (3, 10)], NOW)
    assert [e.id for e in rl] == [1, 2, 3]
    rl.upsert(1, 10, 0, None, NOW + 1)  # same score, later: now below its peers
    rl._check()
    assert [e.id for e in rl] == [2, 3, 1]


def test_ranked_extreme_values_round_trip() -> None:
    rl = RankedList(4)
    rl.upsert(M64, M64, M32, None, M32)
    rl.upsert(0, 0, 0, None, 0)
    rl.upsert(1, M64, M32, None, 0)
    rl._check()
    assert list(rl) == [
        RankedElement(1, M64, M32, 0, None, 0, 2),
        RankedElement(M64, M64, M32, M32, None, 1, 1),
        RankedElement(0, 0, 0, 0, None, 2, 0),
    ]
    assert rl.get(M64).score == M64
    assert M64 in rl and 0 in rl and 2 not in rl


def test_ranked_get_missing_raises_not_found() -> None:
    rl, _ = filled(10)
    with pytest.raises(NotFound, match=r"^no element 99 in this list$") as info:
        rl.get(99)
    assert info.value.http_status == 404
    with pytest.raises(NotFound, match=r"^no element 99 in this list$"):
        rl.rank_of(99)
    with pytest.raises(NotFound, match=r"^no element 99 in this list$"):
        rl.neighbours(99, 3)


def test_ranked_contains_rejects_non_ids_quietly() -> None:
    rl, _ = filled(5)
    assert 3 in rl
    assert np.uint64(3) in rl
    assert -1 not in rl
    assert "3" not in rl
    assert True not in rl


def test_ranked_find_sorts_found_by_rank_and_missing_ascending() -> None:
    rl, model = filled(30)
    expected = {e.id: e for e in model.ranked()}
    found, missing = rl.find([5, 100, 7, 5, 3, 99])
    assert found == sorted((expected[i] for i in (3, 5, 7)), key=lambda e: e.from_top)
    assert missing == [99, 100]
    assert rl.find([]) == ([], [])


def test_ranked_at_rank_walks_every_rank() -> None:
    rl, model = filled(40)
    for e in model.ranked():
        assert rl.at_rank(e.from_top) == e
    with pytest.raises(
        NotFound, match=r"^offset out of list bounds: from_top=40 but the list has 40 elements$"
    ):
        rl.at_rank(40)


###################################################################################################
# Ranges, percentiles, neighbours
###################################################################################################


def test_ranked_range_from_top_pages_across_blocks() -> None:
    rl, model = filled(37)
    expected = model.ranked()
    for start in range(37):
        for limit in (1, 2, 5, 100):
            assert rl.range_from_top(start, limit) == expected[start : start + limit]


def test_ranked_range_from_bottom_walks_downward_like_rankdb() -> None:
    # rankdb.md 1.3: 100 elements, from_bottom=49, limit=5 -> 5 elements, the first has
    # from_top 50 / from_bottom 49.
    rl = RankedList(8)
    rl.bulk_load([(i, 1000 - i) for i in range(100)], NOW)
    got = rl.range_from_bottom(49, 5)
    assert [(e.from_top, e.from_bottom) for e in got] == [
        (50, 49),
        (51, 48),
        (52, 47),
        (53, 46),
        (54, 45),
    ]
    assert [e.id for e in rl.range_from_bottom(0, 25)] == [99]  # only the bottom element
    assert [e.from_bottom for e in rl.range_from_bottom(2, 25)] == [2, 1, 0]
    assert [e.from_top for e in rl.range_from_bottom(99, 3)] == [0, 1, 2]


def test_ranked_range_out_of_bounds_raises_not_found() -> None:
    rl, _ = filled(5)
    with pytest.raises(
        NotFound, match=r"^offset out of list bounds: from_top=5 but the list has 5 elements$"
    ) as info:
        rl.range_from_top(5, 10)
    assert info.value.field == "from_top"
    with pytest.raises(
        NotFound, match=r"^offset out of list bounds: from_bottom=5 but the list has 5 elements$"
    ):
        rl.range_from_bottom(5, 10)
    with pytest.raises(
        NotFound, match=r"^offset out of list bounds: from_top=0 but the list has 0 elements$"
    ):
        RankedList().range_from_top(0, 10)


def test_ranked_range_rejects_bad_offsets_and_limits() -> None:
    rl, _ = filled(5)
    with pytest.raises(InvalidInput, match=r"^from_top must be an integer >= 0, got -1$") as info:
        rl.range_from_top(-1, 10)
    assert info.value.field == "from_top" and info.value.http_status == 400
    with pytest.raises(InvalidInput, match=r"^from_bottom must be an integer >= 0, got -1$"):
        rl.range_from_bottom(-1, 10)
    with pytest.raises(InvalidInput, match=r"^limit must be an integer >= 1, got 0$") as info:
        rl.range_from_top(0, 0)
    assert info.value.field == "limit"
    with pytest.raises(InvalidInput, match=r"^limit must be an integer >= 1, got '5'$"):
        rl.range_from_top(0, "5")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("n", "pct", "from_top"),
    [
        (100, 50.0, 50),  # RankDB's own test: from_top 50 / from_bottom 49
        (14, 50.0, 7),
        (10, 0.0, 0),
        (10, 100.0, 9),  # clamped to n - 1
        (10, 99.99, 9),
        (1, 73.0, 0),
        (6, 500 / 6, 4),  # exact: float arithmetic would say floor(5.0) = 5
        (7, 300 / 7, 2),  # exact: float arithmetic would say 3
        (1000, 0.1, 1),
        (5, 40, 2),  # ints are numbers too
    ],
)
def test_ranked_percentile_floors_the_exact_index(n: int, pct: float, from_top: int) -> None:
    rl = RankedList(4)
    rl.bulk_load([(i, 10_000 - i) for i in range(n)], NOW)
    e = rl.percentile(pct)
    assert (e.from_top, e.from_bottom, e.id) == (from_top, n - 1 - from_top, from_top)


@pytest.mark.parametrize("pct", [-0.5, 100.01, math.nan, math.inf, True, "50", None])
def test_ranked_percentile_rejects_values_outside_0_to_100(pct: object) -> None:
    rl, _ = filled(5)
    with pytest.raises(
        InvalidInput, match=rf"^pct must be a number in 0\.\.100, got {pct!r}$"
    ) as info:
        rl.percentile(pct)  # type: ignore[arg-type]
    assert info.value.field == "pct"


def test_ranked_percentile_of_empty_list_is_not_found() -> None:
    with pytest.raises(
        NotFound, match=r"^the list is empty; a percentile needs at least one element$"
    ) as info:
        RankedList().percentile(50.0)
    assert info.value.http_status == 404


def test_ranked_neighbours_are_top_down_and_cut_at_the_edges() -> None:
    rl, model = filled(23, load=4)  # 23 elements in blocks of 4 to 8: every radius crosses blocks
    expected = model.ranked()
    for e in expected:
        for r in (0, 1, 2, 5, 30):
            above, below = rl.neighbours(e.id, r)
            rank = e.from_top
            assert above == expected[max(0, rank - r) : rank]
            assert below == expected[rank + 1 : rank + 1 + r]
            assert rl.neighbours_of_rank(rank, r) == (above, below)
    top, bottom = expected[0], expected[-1]
    assert rl.neighbours(top.id, 3)[0] == []
    assert rl.neighbours(bottom.id, 3)[1] == []
    above, _ = rl.neighbours(expected[5].id, 2)
    assert [a.from_top for a in above] == [3, 4]  # ends with the element directly above


def test_ranked_neighbours_reject_negative_radius() -> None:
    rl, _ = filled(5)
    with pytest.raises(InvalidInput, match=r"^range must be an integer >= 0, got -1$") as info:
        rl.neighbours(1, -1)
    assert info.value.field == "range"


###################################################################################################
# Writes
###################################################################################################


def test_ranked_upsert_returns_the_previous_state_with_its_rank() -> None:
    rl = RankedList(4)
    assert rl.upsert(1, 10, 0, {"a": 1}, NOW) is None
    assert rl.upsert(2, 20, 0, None, NOW) is None
    previous = rl.upsert(1, 30, 2, None, NOW + 5)
    assert previous == RankedElement(1, 10, 0, NOW, {"a": 1}, 1, 0)
    assert rl.get(1) == RankedElement(1, 30, 2, NOW + 5, None, 0, 1)  # payload None clears it
    rl._check()


def test_ranked_upsert_validates_before_changing_anything() -> None:
    rl, model = filled(6)
    cases = [
        (
            (-1, 1, 0, None, NOW),
            r"^id must be an integer in 0\.\.18446744073709551615, got -1$",
            "id",
        ),
        (
            (2**64, 1, 0, None, NOW),
            r"^id must be an integer in 0\.\.18446744073709551615, got 18446744073709551616$",
            "id",
        ),
        (
            (1, -5, 0, None, NOW),
            r"^score must be an integer in 0\.\.18446744073709551615, got -5$",
            "score",
        ),
        (
            (1, 1.5, 0, None, NOW),
            r"^score must be an integer in 0\.\.18446744073709551615, got 1\.5$",
            "score",
        ),
        (
            (1, 1, 2**32, None, NOW),
            r"^tie_breaker must be an integer in 0\.\.4294967295, got 4294967296$",
            "tie_breaker",
        ),
        (
            (1, 1, True, None, NOW),
            r"^tie_breaker must be an integer in 0\.\.4294967295, got True$",
            "tie_breaker",
        ),
        ((1, 1, 0, None, -1), r"^now must be an integer in 0\.\.4294967295, got -1$", "now"),
        (
            (1, 1, 0, [1], NOW),
            r"^payload must be a JSON object \(dict\) or None, got 'list'$",
            "payload",
        ),
    ]
    for args, message, field in cases:
        with pytest.raises(InvalidInput, match=message) as info:
            rl.upsert(*args)
        assert info.value.field == field
    assert_same(rl, model)


def test_ranked_upsert_accepts_numpy_integers() -> None:
    rl = RankedList(4)
    rl.upsert(np.uint64(M64), np.uint64(7), np.uint32(1), None, np.int64(NOW))
    assert rl.get(M64) == RankedElement(M64, 7, 1, NOW, None, 0, 0)


def test_ranked_insert_refuses_an_existing_id() -> None:
    rl, model = filled(5)
    with pytest.raises(
        Conflict, match=r"^element 2 already exists; use upsert to replace it$"
    ) as info:
        rl.insert(2, 1, 0, None, NOW)
    assert info.value.http_status == 409
    with pytest.raises(
        InvalidInput, match=r"^score must be an integer in 0\.\.18446744073709551615, got -1$"
    ):
        rl.insert(2, -1, 0, None, NOW)  # bad input is reported before the conflict
    rl.insert(77, 3, 0, {"x": 1}, NOW)
    model.upsert(77, 3, 0, {"x": 1}, NOW)
    assert_same(rl, model)


def test_ranked_same_block_moves_up_and_down() -> None:
    rl = RankedList(16)
    rl.bulk_load([(i, 100 - i) for i in range(10)], NOW)  # one block
    model = Model()
    for i in range(10):
        model.upsert(i, 100 - i, 0, None, NOW)
    for i, score in [(9, 1000), (0, 0), (5, 95), (5, 96), (3, 50), (9, 99), (0, 200)]:
        rl.upsert(i, score, 0, None, NOW)
        model.upsert(i, score, 0, None, NOW)
        assert_same(rl, model)
    assert len(rl._blocks) == 1


def test_ranked_delete_reports_whether_the_element_existed() -> None:
    rl, model = filled(20)
    assert rl.delete(3) is True
    del model.elements[3]
    assert rl.delete(3) is False
    assert rl.delete(M64) is False
    assert_same(rl, model)
    for i in list(model.elements):
        rl.delete(i)
        del model.elements[i]
        assert_same(rl, model)
    assert rl._blocks == [] and rl._payloads == {}


def test_ranked_delete_rejects_bad_ids() -> None:
    with pytest.raises(
        InvalidInput, match=r"^id must be an integer in 0\.\.18446744073709551615, got 'x'$"
    ):
        RankedList().delete("x")  # type: ignore[arg-type]


def test_ranked_splits_and_merges_keep_blocks_in_bounds() -> None:
    rl, model = filled(200, load=4)
    sizes = [b.n for b in rl._blocks]
    assert max(sizes) <= 8 and len(sizes) > 25
    rng = random.Random(5)
    for i in rng.sample(range(200), 190):
        rl.delete(i)
        del model.elements[i]
        rl._check()
    assert_same(rl, model)
    assert all(b.n > 2 for b in rl._blocks) or len(rl._blocks) == 1


def test_ranked_hash_grows_and_shrinks() -> None:
    rl = RankedList(8)
    caps = set()
    for i in range(2000):
        rl.upsert(i * 2**40 + 7, i % 13, 0, None, NOW)  # ids that differ only in high bits
        caps.add(rl._hcap)
    rl._check()
    assert len(caps) > 3
    grown = rl._hcap
    for i in range(1990):
        rl.delete(i * 2**40 + 7)
    rl._check()
    assert rl._hcap < grown / 10
    assert [e.id for e in rl] == sorted(
        (i * 2**40 + 7 for i in range(1990, 2000)), key=lambda x: (-(((x - 7) >> 40) % 13), x)
    )


def test_ranked_scalar_and_vector_home_slots_agree() -> None:
    rng = random.Random(7)
    ids = [0, 1, M64, 2**63, 2**32, *(rng.randrange(M64) for _ in range(500))]
    for cap in (16, 1000, 153_847, 2**31 + 11):
        vector = _homes(np.array(ids, dtype=np.uint64), cap).tolist()
        assert vector == [_home(i, cap) for i in ids]
        assert all(0 <= h < cap for h in vector)


def test_ranked_hash_never_fills_its_last_slot() -> None:
    rl = RankedList(8)
    for i in range(3000):
        rl.upsert(i, 0, 0, None, NOW)
    assert len(rl._hkeys) >= rl._hcap + HASH_PAD
    assert rl._hvals[-1] == 2**32 - 1
    rl._check()


###################################################################################################
# Bulk writes
###################################################################################################


@pytest.mark.parametrize("rebuild", [False, True])
def test_ranked_bulk_upsert_deduplicates_and_the_last_wins(rebuild: bool) -> None:
    rl, model = filled(30)
    if rebuild:
        rl._bulk_rebuild_min = 0  # take the merge-and-rebuild path even for small batches
    batch = [(5, 1, 0, None), (100, 7, 1, {"n": 1}), (5, 99, 2, {"last": True}), (6, 3), (100, 8)]
    created = rl.bulk_upsert(batch, NOW + 10)
    assert created == 1
    for item in batch:
        element = ElementIn(*item)
        model.upsert(element.id, element.score, element.tie_breaker, element.payload, NOW + 10)
    assert_same(rl, model)
    assert rl.get(5) == RankedElement(5, 99, 2, NOW + 10, {"last": True}, 0, 30)


@pytest.mark.parametrize("rebuild", [False, True])
def test_ranked_bulk_upsert_into_empty_list(rebuild: bool) -> None:
    rl, model = RankedList(4), Model()
    rl._bulk_rebuild_min = 0 if rebuild else 10**9
    batch = [(i, i % 7, i % 2, {"i": i} if i % 5 == 0 else None) for i in range(50)]
    assert rl.bulk_upsert(batch, NOW) == 50
    for i, s, t, p in batch:
        model.upsert(i, s, t, p, NOW)
    assert_same(rl, model)
    assert rl.bulk_upsert([], NOW) == 0


def test_ranked_bulk_upsert_validates_the_whole_batch_first() -> None:
    rl, model = filled(10)
    with pytest.raises(
        InvalidInput,
        match=r"^elements\[2\]: score must be an integer in 0\.\.18446744073709551615, got -5$",
    ) as info:
        rl.bulk_upsert([(1, 1), (2, 2), (3, -5)], NOW)
    assert info.value.field == "elements[2].score"
    with pytest.raises(
        InvalidInput,
        match=r"^elements\[0\] must be a \(id, score, tie_breaker, payload\) tuple, got 7$",
    ) as info:
        rl.bulk_upsert([7], NOW)  # type: ignore[list-item]
    assert info.value.field == "elements[0]"
    with pytest.raises(
        InvalidInput, match=r"^now must be an integer in 0\.\.4294967295, got 4294967296$"
    ):
        rl.bulk_upsert([(1, 1)], 2**32)
    assert_same(rl, model)


@pytest.mark.parametrize("rebuild", [False, True])
def test_ranked_bulk_delete_ignores_missing_ids(rebuild: bool) -> None:
    rl, model = filled(40)
    rl._bulk_rebuild_min = 0 if rebuild else 10**9
    assert rl.bulk_delete([1, 2, 2, 3, 1000, 0]) == 4
    for i in (0, 1, 2, 3):
        del model.elements[i]
    assert_same(rl, model)
    assert rl.bulk_delete([]) == 0
    assert rl.bulk_delete([5000]) == 0
    assert rl.bulk_delete(list(range(40))) == 36
    assert_same(rl, Model())


def test_ranked_bulk_load_replaces_contents_from_unsorted_input() -> None:
    rl, _ = filled(10)
    rng = random.Random(3)
    items = [(rng.randrange(M64), rng.randrange(5), rng.randrange(3)) for _ in range(300)]
    items += [(items[0][0], 123, 0, {"dup": 1})]  # a duplicate id: the last wins
    rl.bulk_load(items, NOW)
    model = Model()
    for item in items:
        element = ElementIn(*item)
        model.upsert(element.id, element.score, element.tie_breaker, element.payload, NOW)
    assert_same(rl, model)
    assert len(rl._blocks) == math.ceil(300 / 4)


def test_ranked_load_arrays_takes_numpy_input_and_checks_it() -> None:
    ids = np.array([M64, 0, 5, 5], dtype=np.uint64)
    scores = np.array([M64, 0, 3, 4], dtype=np.uint64)
    rl = RankedList(4)
    rl.load_arrays(ids, scores, [1, 2, 3, 4], NOW, payloads={5: {"p": 1}, 9: {"gone": 1}})
    rl._check()
    assert list(rl) == [
        RankedElement(M64, M64, 1, NOW, None, 0, 2),
        RankedElement(5, 4, 4, NOW, {"p": 1}, 1, 1),
        RankedElement(0, 0, 2, NOW, None, 2, 0),
    ]
    with pytest.raises(
        InvalidInput, match=r"^ids must be integers in 0\.\.18446744073709551615, got -1$"
    ) as info:
        rl.load_arrays(np.array([-1, 2]), [1, 2], None, NOW)
    assert info.value.field == "ids"
    with pytest.raises(
        InvalidInput,
        match=r"^scores must be integers in 0\.\.18446744073709551615, got dtype 'float64'$",
    ):
        rl.load_arrays([1, 2], np.array([1.0, 2.0]), None, NOW)
    with pytest.raises(
        InvalidInput, match=r"^tie_breakers must be integers in 0\.\.4294967295, got 4294967296$"
    ):
        rl.load_arrays([1], [1], [2**32], NOW)
    with pytest.raises(
        InvalidInput,
        match=r"^ids, scores and tie_breakers must have the same length, got 2, 1 and 2$",
    ):
        rl.load_arrays([1, 2], [1], None, NOW)
    with pytest.raises(
        InvalidInput,
        match=r"^ids must be integers in 0\.\.18446744073709551615, got values that are not$",
    ):
        rl.load_arrays([1, -1, 2**64], [1, 2, 3], None, NOW)
    assert len(rl) == 3  # the failed loads changed nothing
    rl.load_arrays([], [], None, NOW)
    assert_same(rl, Model())


def test_ranked_load_arrays_spreads_rows_evenly_over_blocks() -> None:
    rl = RankedList(1000)
    rl.load_arrays(np.arange(2500), np.arange(2500), None, NOW)
    assert [b.n for b in rl._blocks] == [833, 833, 834]
    rl._check()


###################################################################################################
# Snapshots and copies
###################################################################################################


def test_ranked_clone_is_independent() -> None:
    rl, model = filled(60)
    copy = rl.clone()
    copy._check()
    assert list(copy) == list(rl)
    copy.upsert(1, 10**6, 0, None, NOW)
    copy.delete(2)
    copy.bulk_upsert([(500 + i, i) for i in range(40)], NOW)
    copy._check()
    assert_same(rl, model)  # the original did not move
    rl.upsert(3, 0, 0, None, NOW)
    assert copy.get(3) != rl.get(3)


def test_ranked_records_round_trip() -> None:
    rl, model = filled(130)
    records = list(rl.to_records(chunk_size=50))
    assert [r["count"] for r in records] == [50, 50, 30]
    assert all(r["v"] == RECORDS_VERSION and isinstance(r["ids"], bytes) for r in records)
    back = RankedList.from_records(records, load=8)
    assert back._load == 8
    assert_same(back, model)
    assert list(RankedList.from_records([])) == []


def test_ranked_from_records_sorts_unsorted_and_duplicate_rows() -> None:
    rl, model = filled(40)
    records = list(rl.to_records(chunk_size=7))
    records.reverse()  # chunks out of order: must be sorted again
    dup = dict(records[0])  # the same chunk twice: duplicate ids
    back = RankedList.from_records([*records, dup], load=4)
    assert_same(back, model)


def test_ranked_from_records_rejects_malformed_records() -> None:
    good = next(filled(5)[0].to_records())
    with pytest.raises(
        InvalidInput, match=r"^records\[0\] has version 2; this build reads version 1$"
    ) as info:
        RankedList.from_records([{**good, "v": 2}])
    assert info.value.field == "records"
    with pytest.raises(
        InvalidInput, match=r"^records\[1\] is not a ranked list record: KeyError\('ids'\)$"
    ):
        RankedList.from_records([good, {"v": 1, "count": 0}])
    with pytest.raises(
        InvalidInput,
        match=r"^records\[0\] arrays must all hold count=6 values, got \[5, 5, 5, 5\]$",
    ):
        RankedList.from_records([{**good, "count": 6}])


def test_ranked_iter_chunks_copies_chunk_by_chunk() -> None:
    rl, model = filled(45)
    expected = model.ranked()
    chunks = list(rl.iter_chunks(10))
    assert [c.from_top for c in chunks] == [0, 10, 20, 30, 40]
    ids = np.concatenate([c.ids for c in chunks])
    assert ids.tolist() == [e.id for e in expected]
    assert np.concatenate([c.scores for c in chunks]).tolist() == [e.score for e in expected]
    assert chunks[0].tie_breakers.dtype == np.uint32 and chunks[0].updated_at.dtype == np.uint32
    payloads: dict[int, Any] = {}
    for c in chunks:
        payloads.update(c.payloads)
    assert payloads == {e.id: e.payload for e in expected if e.payload is not None}
    with pytest.raises(InvalidInput, match=r"^chunk_size must be an integer >= 1, got 0$"):
        rl.iter_chunks(0)


def test_ranked_iter_chunks_detects_changes_during_iteration() -> None:
    rl, _ = filled(30)
    chunks = rl.iter_chunks(10)
    next(chunks)
    rl.upsert(1000, 1, 0, None, NOW)
    with pytest.raises(
        RuntimeError,
        match=r"^ranked list changed during iteration; finish the snapshot before applying commands, or iterate over a clone\(\)$",
    ):
        next(chunks)


###################################################################################################
# Verify, repair, reindex, statistics
###################################################################################################


def test_ranked_verify_is_empty_for_a_healthy_list() -> None:
    rl, _ = filled(50)
    assert rl.verify() == []
    assert RankedList().verify() == []


def test_ranked_repair_after_swapped_rows() -> None:
    rl, model = filled(20, load=8)
    block = rl._blocks[0]
    block.arr[[0, 1]] = block.arr[[1, 0]]
    assert rl.verify() == ["rows of block 0 are not strictly ascending"]
    assert rl.repair() == 0
    assert_same(rl, model)


def test_ranked_verify_reports_overlapping_blocks() -> None:
    rl = RankedList(4)
    rl.bulk_load([(i, 100 - i) for i in range(1, 9)], NOW)
    rl._blocks[1].arr[0, 0] = M64 - 99  # id 5 now claims score 99, above the whole of block 1
    assert rl.verify() == ["block 0 overlaps block 1"]
    assert rl.repair() == 0
    rl._check()
    assert [e.id for e in rl] == [1, 5, 2, 3, 4, 6, 7, 8]
    assert rl.get(5).score == 99


def test_ranked_repair_drops_duplicate_rows() -> None:
    rl = RankedList(4)
    rl.bulk_load([(i, 100 - i, 0, {"i": i}) for i in range(1, 9)], NOW)
    assert [b.n for b in rl._blocks] == [4, 4]
    rl._blocks[1].arr[0, 2] = 2  # the row of id 5 now claims to be id 2
    assert rl.verify() == ["an id appears in two rows"]
    assert rl.repair() == 1
    rl._check()
    assert [(e.id, e.score) for e in rl] == [(i, 100 - i) for i in (1, 2, 3, 4, 6, 7, 8)]
    assert 5 not in rl._payloads and rl.get(2).payload == {"i": 2}


def test_ranked_verify_reports_wrong_hash_entry() -> None:
    rl, model = filled(30)
    slot = rl._hfind(7)
    good = int(rl._hvals[slot])
    rl._hvals[slot] = next(b.handle for b in rl._blocks if b.handle != good)
    assert rl.verify() == ["a hash entry points at the wrong block"]
    with pytest.raises(
        RankedListCorrupt,
        match=r"^id index points element 7 at block handle \d+, which does not hold it; run repair\(\)$",
    ):
        rl.get(7)
    rl.reindex()
    assert_same(rl, model)


def test_ranked_reindex_rebuilds_maxes_and_rank_index() -> None:
    rl, model = filled(30)
    rl.rank_of(3)  # builds the Fenwick tree
    assert rl._tree is not None
    rl._tree[1] += 1
    assert rl.verify() == ["Fenwick tree does not match the block sizes"]
    rl._maxes[0] = b"\x00" * 24
    assert rl.verify() == ["maxes[0] is not the last key of its block"]
    rl._hkeys[rl._hfind(5)] = 12345  # an id the index no longer finds
    rl.reindex()
    assert_same(rl, model)


def test_ranked_verify_reports_internals_too_broken_to_check() -> None:
    rl, model = filled(12)
    rl._by_handle.pop()
    assert rl.verify() == ["IndexError: list index out of range"]
    assert rl.repair() == 0
    assert_same(rl, model)


def test_ranked_check_dumps_internals_on_failure(capsys: pytest.CaptureFixture[str]) -> None:
    rl, _ = filled(10)
    rl._len += 1
    with pytest.raises(AssertionError, match=r"^len 11 but blocks hold 10 rows($|\n)"):
        rl._check()
    assert "RankedList internals" in capsys.readouterr().err


def test_ranked_statistics_reports_sizes_and_memory() -> None:
    rl = RankedList(1024)
    rl.load_arrays(np.arange(100_000) * 7919, np.arange(100_000) % 1000, None, NOW)
    stats = rl.statistics()
    assert isinstance(stats, RankedListStatistics)
    assert stats.elements == 100_000 and stats.blocks == 98 and stats.load == 1024
    assert stats.smallest_block == 1020 and stats.largest_block == 1021
    assert stats.payloads == 0
    assert 0.6 < stats.hash_load < 0.66
    assert stats.bytes_per_element < 48
    with pytest.raises(AttributeError):
        stats.elements = 1  # type: ignore[misc]
    empty = RankedList().statistics()
    assert (empty.elements, empty.blocks, empty.bytes_per_element) == (0, 0, 0.0)


def test_ranked_reset_rechunks_and_validates_the_load() -> None:
    rl, model = filled(50, load=16)
    rl._reset(4)
    assert_same(rl, model)
    assert max(b.n for b in rl._blocks) <= 4
    with pytest.raises(InvalidInput, match=r"^load must be an integer >= 4, got 3$") as info:
        RankedList(3)
    assert info.value.field == "load"


def test_ranked_clear_empties_the_list() -> None:
    rl, _ = filled(20)
    rl.clear()
    assert_same(rl, Model())
    rl.upsert(1, 1, 0, None, NOW)
    rl._check()


def test_ranked_repr_names_size_and_load() -> None:
    assert repr(filled(3)[0]) == "RankedList(len=3, load=4)"


###################################################################################################
# Property test: a rule-based state machine against the model
###################################################################################################

ids_st = st.one_of(st.integers(0, 40), st.sampled_from([M64, M64 - 1, 2**63, 2**32]))
scores_st = st.one_of(st.integers(0, 6), st.sampled_from([M64, 2**63]))
ties_st = st.integers(0, 2) | st.just(M32)
payload_st = st.none() | st.fixed_dictionaries({"v": st.integers(0, 9)})
element_st = st.tuples(ids_st, scores_st, ties_st, payload_st)


class RankedListMachine(RuleBasedStateMachine):
    """Random upserts, deletes, bulk writes, clock ticks and re-chunks, checked after each step."""

    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        self.rl = RankedList()
        self.now = NOW

    @initialize(load=st.sampled_from([4, 5, 8, 16]))
    def start(self, load: int) -> None:
        self.rl = RankedList(load)

    @rule(element=element_st)
    def upsert(self, element: tuple[int, int, int, dict[str, int] | None]) -> None:
        i, score, tie, payload = element
        before = {e.id: e for e in self.model.ranked()}.get(i)
        previous = self.rl.upsert(i, score, tie, payload, self.now)
        assert previous == before
        self.model.upsert(i, score, tie, payload, self.now)

    @rule(i=ids_st)
    def delete(self, i: int) -> None:
        assert self.rl.delete(i) == (i in self.model.elements)
        self.model.elements.pop(i, None)

    @rule(batch=st.lists(element_st, max_size=25), rebuild=st.booleans())
    def bulk_upsert(
        self, batch: list[tuple[int, int, int, dict[str, int] | None]], rebuild: bool
    ) -> None:
        self.rl._bulk_rebuild_min = 0 if rebuild else 10**9
        created = self.rl.bulk_upsert(batch, self.now)
        assert created == len({e[0] for e in batch} - set(self.model.elements))
        for i, score, tie, payload in batch:
            self.model.upsert(i, score, tie, payload, self.now)

    @rule(ids=st.lists(ids_st, max_size=25), rebuild=st.booleans())
    def bulk_delete(self, ids: list[int], rebuild: bool) -> None:
        self.rl._bulk_rebuild_min = 0 if rebuild else 10**9
        assert self.rl.bulk_delete(ids) == len(set(ids) & set(self.model.elements))
        for i in ids:
            self.model.elements.pop(i, None)

    @rule(seconds=st.integers(0, 2))
    def tick(self, seconds: int) -> None:
        self.now += seconds

    @rule(load=st.sampled_from([4, 6, 8]))
    def reset(self, load: int) -> None:
        self.rl._reset(load)

    @rule()
    def round_trip(self) -> None:
        self.rl = RankedList.from_records(self.rl.to_records(chunk_size=7), load=self.rl._load)

    @rule(data=st.data())
    def queries(self, data: st.DataObject) -> None:
        expected = self.model.ranked()
        if not expected:
            with pytest.raises(NotFound):
                self.rl.percentile(50.0)
            return
        n = len(expected)
        pct = data.draw(st.floats(0, 100))
        assert self.rl.percentile(pct) == expected[min(n - 1, math.floor(Fraction(pct) * n / 100))]
        start = data.draw(st.integers(0, n - 1))
        limit = data.draw(st.integers(1, 12))
        assert self.rl.range_from_top(start, limit) == expected[start : start + limit]
        first = n - 1 - start
        assert self.rl.range_from_bottom(start, limit) == expected[first : first + limit]
        e = data.draw(st.sampled_from(expected))
        r = data.draw(st.integers(0, 6))
        assert self.rl.neighbours(e.id, r) == (
            expected[max(0, e.from_top - r) : e.from_top],
            expected[e.from_top + 1 : e.from_top + 1 + r],
        )

    @invariant()
    def matches_model(self) -> None:
        self.rl._check()
        assert list(self.rl) == self.model.ranked()


RankedListMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_ranked_matches_model_under_random_operations = RankedListMachine.TestCase
