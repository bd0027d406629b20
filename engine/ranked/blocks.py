"""Sorted blocks of packed rows: the "list of lists" a ranked list keeps its elements in.

Theory of operation
===================

Rows (``engine/ranked/rows.py``) live in sorted blocks, the sortedcontainers "list of lists" with
packed rows instead of Python objects. A block is a ``(capacity, 3)`` ``'>u8'`` array holding
``n`` rows at its front, plus three views of the same memory:

* ``keys`` views the rows as ``'V24'`` items, so ``searchsorted`` finds a key by memcmp;
* ``idcol`` is the id column as native int64 words (so it holds byte-swapped ids) for the
  vectorised id scan of ``find_id``: at most ``2 * load`` compares in one numpy call, 2-3 us at
  the default load on the 2-core dev machine;
* ``mv`` is a flat byte memoryview, because CPython's memoryview slice assignment is a plain
  memmove: shifting rows through it costs a third of numpy's overlap-checked copy, and reading
  or writing one key through it a quarter (see bench/bench_ranked.py::update).

A block splits in halves above ``2 * load`` rows and merges with a neighbour at ``load // 2``
rows or fewer, so an insert or delete moves at most ``2 * load`` rows with one memmove. When a
block is full it grows by ``max(GROW_MIN_ROWS, n >> GROW_SHIFT)`` rows of spare capacity (at most
about 6% slack per written block; bulk-loaded blocks start with none), and a block left under a
quarter full is copied into a smaller array so a drained list gives memory back.

Why blocks and not a tree, a skip list or one sorted array? A balanced tree or skip list costs a
Python object per element: 100+ bytes, and tens of millions of objects for the garbage collector
to walk. One big sorted array makes inserts ``O(n)``. Blocks of about a thousand packed rows keep
inserts to a small memmove and keep memory to the payload-free row itself. This is RankDB's own
"segments" design, without its storage round trips.

This module knows one block at a time (rows, search, split, merge). The list of blocks, their
maxima, handles, the rank index and the id index are ``RankedList``'s (``ranked_list.py``),
which decides when a block splits or merges.

Invariants of one block (``RankedList._check()`` asserts them for every block):

* ``1 <= n <= len(arr)`` and ``n <= 2 * load``; ``arr`` is ``'>u8'``;
* its rows are strictly ascending, and ``maxkey`` is the key of row ``n - 1``;
* ``keys``, ``idcol`` and ``mv`` view ``arr`` (``set_rows`` is the only way to change ``arr``).

Rows past ``n`` are spare capacity and may hold stale copies of rows; nothing reads them except
``find_id``'s whole-capacity scan, which stops at the first (live) match.

Example
-------
>>> from engine.ranked.rows import _pack
>>> keys = [_pack(score, 0, 0, score) for score in (90, 70, 50, 30)]
>>> block = _Block.single(keys[0], handle=0)
>>> for key in keys[1:]:       # appending: the caller keeps ``maxkey``
...     block.insert(block.n, key)
...     block.maxkey = key
>>> probe, probe_mv = _new_probe()
>>> block.search(_pack(60, 0, 0, 60), probe, probe_mv)   # 60 goes between 70 and 50
2
>>> block.find_id(50)
2
>>> upper = block.split(handle=1)
>>> block.n, upper.n, upper.maxkey == keys[-1]
(2, 2, True)
"""

from __future__ import annotations

import numpy as np

from engine.ranked.elements import RankedListCorrupt
from engine.ranked.rows import _ROW, _VKEY, _swapped

###################################################################################################
# Tuning constants
###################################################################################################

#: Target rows per block. Blocks split above ``2 * load`` and merge at ``load // 2`` or fewer.
#: Precedents: sortedcontainers' ``DEFAULT_LOAD_FACTOR = 1000``; RankDB splits at 2000 and merges
#: at 500 rows. A smaller load makes each memmove and id scan cheaper but adds blocks (about 1 KB
#: of Python objects each) and splits more often; a bigger load does the opposite. Loads from 256
#: to 2048 measured within noise of each other for single operations at 1M elements (bench
#: ``--load``), because per-call Python and numpy overhead dominates. It's best to leave the load
#: at the default until you start benchmarking.
DEFAULT_LOAD = 1024

#: The smallest load accepted. Tests use 4 to 8 so that splits and merges happen all the time.
MIN_LOAD = 4

#: Rows of spare capacity a block gets when it is full: ``max(GROW_MIN_ROWS, n >> GROW_SHIFT)``.
#: At most about 6% slack per written block; bulk-loaded blocks start with none.
GROW_MIN_ROWS = 16
GROW_SHIFT = 4

# Per-block cost of the Python objects around the rows, measured with tracemalloc: the _Block,
# the array and its two views, the memoryview, the maxes bytes object and the list slots.
_BLOCK_OVERHEAD_BYTES = 960


###################################################################################################
# One block
###################################################################################################


def _spare(n: int) -> int:
    return max(GROW_MIN_ROWS, n >> GROW_SHIFT)


def _alloc_rows(rows: np.ndarray, spare: int) -> np.ndarray:
    """A fresh ``(len(rows) + spare, 3)`` array starting with a copy of ``rows``."""
    arr = np.empty((len(rows) + spare, 3), dtype=_ROW)
    arr[: len(rows)] = rows
    return arr


def _new_probe() -> tuple[np.ndarray, memoryview]:
    """A one-key array for ``_Block.search``, and a byte memoryview to fill it through.

    Reused for every in-block search: filling it through a memoryview is several times cheaper
    than building an np.void scalar per search.
    """
    probe = np.zeros(1, dtype=_VKEY)
    return probe, memoryview(probe.view(np.uint8))


class _Block:
    """``n`` sorted rows at the front of ``arr``, plus three views of the same memory.

    ``keys`` views the rows as ``'V24'`` items for memcmp searches; ``idcol`` is the id column as
    native int64 words (so it holds byte-swapped ids) for the vectorised id scan; ``mv`` is a
    flat byte memoryview for memmoves (why each: see the module docstring).
    """

    __slots__ = ("arr", "keys", "idcol", "mv", "n", "handle", "maxkey")

    def __init__(self, arr: np.ndarray, n: int, handle: int, maxkey: bytes) -> None:
        self.handle = handle
        self.maxkey = maxkey
        self.set_rows(arr, n)

    @classmethod
    def single(cls, key: bytes, handle: int) -> _Block:
        """A new block holding the one row ``key``, with room to grow."""
        block = cls(np.empty((_spare(1) + 1, 3), dtype=_ROW), 1, handle, key)
        block.mv[:24] = key
        return block

    def copy(self) -> _Block:
        """An independent copy (the array is copied, spare capacity included)."""
        return _Block(self.arr.copy(), self.n, self.handle, self.maxkey)

    def set_rows(self, arr: np.ndarray, n: int) -> None:
        self.arr = arr
        self.keys = arr.view(_VKEY).reshape(-1)
        self.idcol = arr.view(np.int64)[:, 2]
        self.mv = memoryview(arr).cast("B")
        self.n = n

    def key(self, i: int) -> bytes:
        return self.mv[24 * i : 24 * i + 24].tobytes()

    def ids(self) -> np.ndarray:
        """The ids of the rows, as native uint64."""
        return self.arr[: self.n, 2].astype(np.uint64)

    #####  Search ###############################################################################

    def find_id(self, element_id: int) -> int:
        """Row index of ``element_id`` in this block: a vectorised scan of the id column.

        The scan compares the raw int64 words with the id's byte-swapped value, which skips
        converting the big-endian column (comparing with a Python int that fits int64 is numpy's
        fast path).

        Raises:
            RankedListCorrupt: the block does not hold the id (the id index pointed here).
        """
        swapped = _swapped(element_id)
        # The whole capacity is compared (no slice to build): spare rows past n may hold stale
        # copies of ids, but live rows come first and are unique, so the first match is live.
        i = (self.idcol == swapped).argmax().item()
        if i >= self.n or self.idcol.item(i) != swapped:
            # See test_ranked_verify_reports_wrong_hash_entry for a test that reaches this.
            raise RankedListCorrupt(
                f"id index points element {element_id!r} at block handle {self.handle!r}, "
                "which does not hold it; run repair()"
            )
        return i

    def search(self, key: bytes, probe: np.ndarray, probe_mv: memoryview) -> int:
        """Index of the first row whose key is >= ``key`` (memcmp binary search).

        ``probe`` and ``probe_mv`` come from ``_new_probe()``; the caller owns and reuses them.
        """
        probe_mv[:] = key
        return self.keys[: self.n].searchsorted(probe).item()

    #####  Rows in and out ######################################################################

    def insert(self, j: int, key: bytes) -> None:
        """Insert the row ``key`` at index ``j``, growing the array if it is full.

        The caller has found ``j`` (so the rows stay sorted) and updates ``maxkey`` if needed.
        """
        n = self.n
        if n == len(self.arr):
            self.set_rows(_alloc_rows(self.arr[:n], _spare(n)), n)
        mv = self.mv
        if j < n:
            mv[24 * j + 24 : 24 * n + 24] = mv[24 * j : 24 * n]
        mv[24 * j : 24 * j + 24] = key
        self.n = n + 1

    def remove(self, i: int) -> None:
        """Remove row ``i`` (one memmove); the caller updates ``maxkey`` and merges if small."""
        n = self.n - 1
        if i < n:
            mv = self.mv
            mv[24 * i : 24 * n] = mv[24 * i + 24 : 24 * n + 24]
        self.n = n

    def trim(self) -> None:
        """Copy the rows into a smaller array when under a quarter of the capacity is used."""
        n = self.n
        if 4 * n < len(self.arr) and len(self.arr) > 2 * GROW_MIN_ROWS:
            self.set_rows(_alloc_rows(self.arr[:n], _spare(n)), n)

    def move(self, i: int, key: bytes, probe: np.ndarray, probe_mv: memoryview) -> bool:
        """Give row ``i`` the new ``key``, which belongs in this block; keep the rows sorted.

        Returns:
            Whether ``maxkey`` changed (the caller mirrors it in the list's maxima).
        """
        # Fast path: a small score change often keeps the row between its two neighbours, so
        # one comparison (against the neighbour it moves towards) replaces the binary search;
        # see bench/bench_ranked.py::update_small. Otherwise one memmove shifts the rows between
        # the old and the new place.
        n = self.n
        mv = self.mv
        if key < self.key(i):
            stays = i == 0 or self.key(i - 1) < key
        else:
            stays = i == n - 1 or key < self.key(i + 1)
        j = i if stays else self.search(key, probe, probe_mv)
        if j > i:
            j -= 1
            mv[24 * i : 24 * j] = mv[24 * i + 24 : 24 * j + 24]
        elif j < i:
            mv[24 * j + 24 : 24 * i + 24] = mv[24 * j : 24 * i]
        mv[24 * j : 24 * j + 24] = key
        if j == n - 1:
            self.maxkey = key
            return True
        if i == n - 1:
            self.maxkey = self.key(n - 1)
            return True
        return False

    #####  Split and merge ######################################################################

    def split(self, handle: int) -> _Block:
        """Keep the lower half of the rows; return the upper half as a new block with ``handle``."""
        n = self.n
        half = n >> 1
        arr = self.arr
        upper = _Block(_alloc_rows(arr[half:n], _spare(n - half)), n - half, handle, self.maxkey)
        self.set_rows(_alloc_rows(arr[:half], _spare(half)), half)
        self.maxkey = self.key(half - 1)
        return upper


def _merged(left: _Block, right: _Block) -> tuple[_Block, _Block, np.ndarray]:
    """Move the rows of two adjacent blocks into the bigger one (``left``'s rows first).

    Returns:
        ``(keep, gone, moved_ids)``: the block that now holds all rows (it keeps its handle),
        the emptied one (its handle is free to drop), and the ids of the rows that came from
        ``gone``, which the id index must re-point at ``keep``.
    """
    split_at = left.n
    n = split_at + right.n
    arr = np.empty((n + _spare(n), 3), dtype=_ROW)
    arr[:split_at] = left.arr[:split_at]
    arr[split_at:n] = right.arr[: right.n]
    keep, gone = (left, right) if left.n >= right.n else (right, left)
    keep.set_rows(arr, n)
    keep.maxkey = right.maxkey
    # The rows that came from the other block sit on its side of the merge.
    moved = arr[:split_at] if gone is left else arr[split_at:n]
    return keep, gone, moved[:, 2].astype(np.uint64)


###################################################################################################
# Blocks from rows and back
###################################################################################################


def _chunked(rows: np.ndarray, load: int) -> list[_Block]:
    """Cut ``n > 0`` sorted rows into ``ceil(n / load)`` blocks of near-equal size.

    Spreading the rows evenly (rather than ``load`` rows then a remainder) keeps every block
    away from both the split and the merge threshold. Handles are ``0..nblocks - 1`` in order.
    """
    n = len(rows)
    nblocks = -(-n // load)
    bounds = ((np.arange(nblocks + 1, dtype=np.int64) * n) // nblocks).tolist()
    lasts = np.ascontiguousarray(rows[np.asarray(bounds[1:]) - 1]).tobytes()
    blocks = []
    for h in range(nblocks):
        lo, hi = bounds[h], bounds[h + 1]
        blocks.append(_Block(rows[lo:hi].copy(), hi - lo, h, lasts[24 * h : 24 * h + 24]))
    return blocks


def _rows_of(blocks: list[_Block]) -> np.ndarray:
    """The live rows of ``blocks``, concatenated (a copy), as ``'>u8'``."""
    parts = [b.arr[: b.n] for b in blocks]
    return np.concatenate(parts, dtype=_ROW) if parts else np.empty((0, 3), dtype=_ROW)
