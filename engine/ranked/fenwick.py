"""Rank bookkeeping of a ranked list: a Fenwick tree over its block sizes.

Theory of operation
===================

Ranks are positions in the concatenation of the blocks, so two questions need the block sizes:
"how many rows come before block ``pos``" (the rank of a row is that plus its index in the
block) and "which block holds rank ``r``" (ranges, percentiles, ``at_rank``). A Fenwick (binary
indexed) tree over the sizes answers both in ``O(log(n / load))`` Python steps and takes a +1 or
-1 on a block's size in the same time, so an insert or delete that stays inside its block keeps
the tree current.

A split or merge shifts block positions, so it drops the tree (``_tree = None``) instead of
patching it; the next rank query rebuilds it in ``O(n / load)`` with numpy (about 1 ms at 10M
elements), which amortises over the >= ``load // 2`` writes between two splits of one block.

Worked example: blocks of sizes ``3 5 2 4``. Node ``i`` (1-based) sums the blocks
``(i - lowbit(i), i]``, so ``tree = [0, 3, 8, 2, 14]``: node 2 covers blocks 0-1 and node 4
blocks 0-3. Rows before block 3 are ``tree[3] + tree[2] = 2 + 8 = 10``. Rank 9 is found by
descending from the top step 4: ``tree[4] = 14 > 9``, so not past node 4; ``tree[2] = 8 <= 9``,
so skip blocks 0-1 and look for rank ``9 - 8 = 1`` from node 2; ``tree[3] = 2 > 1``, so stop:
block 2, row 1.

Invariants (``_check_rank_index``): when built, the tree equals ``_fenwick_of`` the current block
sizes and ``_tree_top`` is the highest power of two <= the block count (0 for no blocks).

Why a mixin
-----------
``RankIndex`` is a base class of ``RankedList`` rather than an object it holds, so the per-write
``_tree_add`` and per-read ``_prefix`` cost no extra attribute hop or call. It owns ``_tree`` and
``_tree_top``; the one thing it needs from its host is ``_block_sizes()``.

Example
-------
>>> class Sizes(RankIndex):
...     def __init__(self, sizes: list[int]) -> None:
...         self.sizes = sizes
...         self._tree = None
...     def _block_sizes(self) -> np.ndarray:
...         return np.array(self.sizes, dtype=np.int64)
>>> s = Sizes([3, 5, 2, 4])
>>> s._prefix(3), s._tree, s._tree_top
(10, [0, 3, 8, 2, 14], 4)
>>> s._locate_rank(9)
(2, 1)
>>> s.sizes[0] += 1
>>> s._tree_add(0, 1)
>>> s._locate_rank(9), s._prefix(3)
((2, 0), 11)
>>> s._check_rank_index()
"""

from __future__ import annotations

import numpy as np


def _fenwick_of(sizes: np.ndarray) -> list[int]:
    """The Fenwick tree of the block sizes: node ``i`` sums blocks ``(i - lowbit(i), i]``."""
    nblocks = len(sizes)
    cum = np.zeros(nblocks + 1, dtype=np.int64)
    np.cumsum(sizes, out=cum[1:])
    idx = np.arange(1, nblocks + 1, dtype=np.int64)
    return [0, *(cum[idx] - cum[idx - (idx & -idx)]).tolist()]


def _top_step(nblocks: int) -> int:
    """The first step of the rank descent: the highest power of two <= ``nblocks`` (or 0)."""
    return 1 << (nblocks.bit_length() - 1) if nblocks else 0


class RankIndex:
    """Fenwick tree over block sizes, mixed into ``RankedList`` (see the module docstring)."""

    _tree: list[int] | None  # None: dropped by a split or merge, rebuilt on the next rank query
    _tree_top: int

    def _block_sizes(self) -> np.ndarray:
        """Rows in each block, in block order, as int64; the host class defines it."""
        raise NotImplementedError

    def _tree_build(self) -> list[int]:
        sizes = self._block_sizes()
        tree = self._tree = _fenwick_of(sizes)
        self._tree_top = _top_step(len(sizes))
        return tree

    def _tree_of_sizes(self) -> list[int]:
        """The Fenwick tree of the current block sizes (what ``_tree`` must equal when built)."""
        return _fenwick_of(self._block_sizes())

    def _tree_add(self, pos: int, delta: int) -> None:
        tree = self._tree
        if tree is None:
            return
        i = pos + 1
        size = len(tree)
        while i < size:
            tree[i] += delta
            i += i & -i

    def _prefix(self, pos: int) -> int:
        """Rows in blocks ``0..pos-1``."""
        tree = self._tree
        if tree is None:
            tree = self._tree_build()
        total = 0
        while pos:
            total += tree[pos]
            pos &= pos - 1
        return total

    def _locate_rank(self, rank: int) -> tuple[int, int]:
        """``(block position, row in block)`` of rank ``0 <= rank < len``."""
        tree = self._tree
        if tree is None:
            tree = self._tree_build()
        pos = 0
        step = self._tree_top
        size = len(tree)
        while step:
            nxt = pos + step
            if nxt < size and tree[nxt] <= rank:
                pos = nxt
                rank -= tree[nxt]
            step >>= 1
        return pos, rank

    def _check_rank_index(self) -> None:
        """Assert that the tree, when built, matches the block sizes and count."""
        if self._tree is not None:
            sizes = self._block_sizes()
            assert self._tree == _fenwick_of(sizes), "Fenwick tree does not match the block sizes"
            top = _top_step(len(sizes))
            assert self._tree_top == top, "Fenwick tree top step does not match the block count"
