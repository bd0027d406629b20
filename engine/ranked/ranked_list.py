"""RankedList: the operations of a ranked list, combining packed rows, blocks, id and rank indexes.

Theory of operation
===================

A ranked list answers "what rank is element X", "who is at rank R", rank ranges, percentiles and
neighbours, while taking single and bulk updates. It is the state behind one RankDB list
(``shared/compat/rankdb.md``): every element has ``id`` (u64), ``score`` (u64), ``tie_breaker``
(u32), ``updated_at`` (u32 unix seconds, set from the caller's ``now`` on every write) and an
optional JSON ``payload``. "a above b" means:

1. higher ``score`` first, then
2. higher ``tie_breaker``, then
3. *earlier* ``updated_at``, then
4. *lower* ``id``.

Rank ``from_top`` 0 is the highest element and ``from_bottom = n - 1 - from_top``. This class is
pure and synchronous: no trio, no clock (time comes in as ``now``), no I/O. An actor owns one
instance and is its only caller.

How the parts combine
---------------------
* Each element is one 24-byte row whose byte order is rank order (``rows.py``).
* Rows live in sorted blocks (``blocks.py``). ``_blocks`` holds them in order and ``_maxes[i]``
  is the last key of block ``i`` (``bytes``), so bisecting ``_maxes`` finds the block for any
  key. ``_by_handle`` maps a block's stable *handle* to the block; freed handles are reused.
* The id index (``id_index.py``) maps id -> handle. To find a row, look the id up there, scan
  that block's id column for the row, then bisect ``_maxes`` with the block's last key to get
  its position.
* The rank index (``fenwick.py``) gives "rows before block ``pos``" and "block holding rank
  ``r``", so a row's rank is ``_prefix(pos) + i``.
* Payloads: a plain ``dict`` from id to payload, only for elements that have one. Payload
  objects are stored by reference and must be treated as immutable.

A write is: look the id up, remove its row from its block (merging the block if it got small)
and insert the new row in the block its key bisects to (splitting it above ``2 * load`` rows),
keeping ``_maxes``, the Fenwick tree and the id index in step. Splits and merges re-point only the
moved rows in the id index, and drop the Fenwick tree for the next rank query to rebuild.

Costs and worst cases
---------------------
``n`` elements, ``L = load``. Per single-element operation ``O(log n)`` Python steps plus an
``O(L)`` memmove or vectorised scan inside one block (constant in ``n``; a few us at the default
load). Worst cases, all rare, none silent:

* Growing or shrinking the id index rebuilds it: ``O(n log n)`` (about 2.5 s at 10M) inside the
  one insert that crosses ``HASH_MAX_LOAD``. ``bulk_load`` sizes the table at ``HASH_BUILD_LOAD``, so
  that happens after roughly ``0.23 n`` further inserts. This is the p99.99 hazard of the class.
* Ids built to collide in the top 32 bits of the mixed hash degrade lookups towards ``O(n)``
  probes. Sequential, random and strided ids all spread well (see the stress tests).
* A split or merge copies ``O(L)`` rows and re-points them in the hash, then the next rank query
  rebuilds the Fenwick tree in ``O(n / L)``.
* ``bulk_upsert`` / ``bulk_delete`` of ``k >= n / BULK_REBUILD_DIVISOR`` elements rebuild the whole
  list: a merge in ``O(n + k log k)`` plus an ``O(n log n)`` id index rebuild.

Invariants (``_check()`` asserts all of them and dumps the internals when one fails)
-----------------------------------------------------------------------------------
1. ``len(_blocks) == len(_maxes)``; the list is empty iff there are no blocks.
2. Every block has ``1 <= n <= capacity`` and ``n <= 2 * load``. (Not an invariant, but kept:
   a delete merges a block left with ``load // 2`` rows or fewer, and loads spread rows evenly,
   so blocks hold about ``load / 2`` to ``2 * load`` rows.)
3. Rows are strictly ascending within every block and across block boundaries.
4. ``_maxes[i]`` and ``_blocks[i].maxkey`` equal the key of the last row of block ``i``.
5. ``_len`` is the sum of block sizes, and the Fenwick tree (when built) matches the sizes.
6. ``_by_handle[b.handle] is b`` for every block, and unused handles are ``None`` and free.
7. The hash holds exactly the ids of the rows, each pointing at the handle of its block; every
   entry sits at or after its home slot with no empty slot in between; empty slots have key 0;
   the last slot is empty.
8. Ids are unique, and every payload belongs to a present id.

Example
-------
>>> rl = RankedList()
>>> rl.bulk_load([(1, 50, 0, None), (2, 70, 0, {"name": "ada"}), (3, 50, 1, None)], 1_700_000_000)
>>> [e.id for e in rl.range_from_top(0, 10)]
[2, 3, 1]
>>> rl.rank_of(1)
2
>>> previous = rl.upsert(1, 99, 0, None, 1_700_000_060)
>>> previous.from_top, rl.get(1).from_top, rl.get(1).from_bottom
(2, 0, 2)
>>> rl.percentile(50.0).id
2
>>> above, below = rl.neighbours(2, 1)
>>> [e.id for e in above], [e.id for e in below]
([1], [3])
"""

from __future__ import annotations

import math
import sys
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from engine.errors import Conflict, InvalidInput, NotFound
from engine.ranked.blocks import (
    _BLOCK_OVERHEAD_BYTES,
    DEFAULT_LOAD,
    MIN_LOAD,
    _Block,
    _chunked,
    _merged,
    _new_probe,
    _rows_of,
)
from engine.ranked.elements import (
    ElementIn,
    Payload,
    RankedChunk,
    RankedElement,
    RankedListStatistics,
    _element_in,
    _int_at_least,
    _int_in,
    _payload,
    _uint_array,
)
from engine.ranked.fenwick import RankIndex
from engine.ranked.id_index import HASH_MIN_CAPACITY, HASH_MIN_LOAD, IdIndex
from engine.ranked.rows import (
    _KEY,
    _M32,
    _M64,
    _NP_M32,
    _ROW,
    _SHIFT32,
    _VKEY,
    _ascending,
    _k2_of,
    _last_of_each_id,
    _pack,
    _rank_order,
    _rows_from,
)

###################################################################################################
# Tuning constants
###################################################################################################

#: Bulk writes of ``k >= n / BULK_REBUILD_DIVISOR`` elements (and at least ``BULK_REBUILD_MIN``)
#: rebuild the whole list instead of applying ``k`` single writes: a single write costs 15 to
#: 35 us here, and a rebuild about 1 us per element of the *whole* list, so the rebuild wins once
#: a batch is around 1/20 of the list; 1/8 leaves a margin for slower rebuilds.
BULK_REBUILD_DIVISOR = 8
BULK_REBUILD_MIN = 256

#: Rows per chunk for ``iter_chunks`` / ``to_records``: 64Ki rows are about 1.5 MB of arrays.
DEFAULT_CHUNK_SIZE = 65536

#: Version of the plain-data chunks made by ``to_records`` and read by ``from_records``.
RECORDS_VERSION = 1


###################################################################################################
# Ranked list
###################################################################################################


class RankedList(IdIndex, RankIndex):
    """Elements ordered by score (RankDB order), with O(log n) rank queries and updates.

    Methods for writing: ``upsert``, ``insert``, ``bulk_upsert``, ``delete``, ``bulk_delete``,
    ``bulk_load``, ``load_arrays``, ``clear``.

    Methods for reading: ``len()``, ``in``, ``get``, ``rank_of``, ``find``, ``at_rank``,
    ``range_from_top``, ``range_from_bottom``, ``percentile``, ``neighbours``,
    ``neighbours_of_rank``, iteration.

    Methods for snapshots: ``iter_chunks``, ``to_records``, ``from_records``, ``clone``.

    Methods for miscellany: ``statistics``, ``verify``, ``repair``, ``reindex``, ``_check``,
    ``_reset``.

    Args:
        load: target rows per block; see ``DEFAULT_LOAD`` before changing it.

    Raises:
        InvalidInput: ``load`` is not an integer >= ``MIN_LOAD``.
    """

    def __init__(self, load: int = DEFAULT_LOAD) -> None:
        self._load = _int_at_least(load, "load", MIN_LOAD)
        self._bulk_rebuild_min = BULK_REBUILD_MIN
        self._version = 0
        self._payloads: dict[int, dict[str, Any]] = {}
        self._init_probe()
        self._set_rows(np.empty((0, 3), dtype=_ROW))

    def _init_probe(self) -> None:
        # A one-key array reused for every in-block search (see blocks._new_probe).
        self._probe, self._probe_mv = _new_probe()

    def __repr__(self) -> str:
        return f"RankedList(len={self._len}, load={self._load})"

    #####  Loading ##############################################################################

    def bulk_load(self, elements: Iterable[ElementIn | tuple[Any, ...]], now: int) -> None:
        """Replace the whole contents with ``elements``, all stamped ``updated_at = now``.

        The way to create or populate a list (RankDB ``POST /lists`` with ``populate``). Input
        may be in any order; duplicate ids keep the last one. For millions of elements that are
        already in arrays, ``load_arrays`` skips the per-element Python validation.

        Args:
            elements: ``(id, score[, tie_breaker[, payload]])`` tuples or ``ElementIn``.
            now: unix seconds, u32.

        Raises:
            InvalidInput: an element or ``now`` is out of range; the list is left unchanged.

        Runtime complexity: ``O(n log n)``, vectorised (10M elements in a few seconds).
        """
        now = _int_in(now, "now", _M32)
        ids: list[int] = []
        scores: list[int] = []
        ties: list[int] = []
        payloads: dict[int, dict[str, Any]] = {}
        for index, item in enumerate(elements):
            element_id, score, tie, payload = _element_in(item, index)
            ids.append(element_id)
            scores.append(score)
            ties.append(tie)
            if payload is not None:
                payloads[element_id] = payload
            else:
                payloads.pop(element_id, None)
        self._load_columns(
            np.array(ids, dtype=np.uint64),
            np.array(scores, dtype=np.uint64),
            np.array(ties, dtype=np.uint64),
            now,
            payloads,
        )

    def load_arrays(
        self,
        ids: object,
        scores: object,
        tie_breakers: object | None,
        now: int,
        payloads: Mapping[int, dict[str, Any]] | None = None,
    ) -> None:
        """Replace the whole contents from parallel arrays: the fast path of ``bulk_load``.

        Args:
            ids: u64 values (any integer array or sequence).
            scores: u64 values, same length.
            tie_breakers: u32 values, same length, or None for all zero.
            now: unix seconds (u32) stamped on every element.
            payloads: id -> payload for the elements that have one; other ids are ignored.

        Raises:
            InvalidInput: a value is out of range or the lengths differ; the list is unchanged.

        Runtime complexity: ``O(n log n)``, vectorised. See bench/bench_ranked.py::bulk_load.
        """
        now = _int_in(now, "now", _M32)
        id_arr = _uint_array(ids, "ids", _M64)
        score_arr = _uint_array(scores, "scores", _M64)
        if tie_breakers is None:
            tie_arr = np.zeros(len(id_arr), dtype=np.uint64)
        else:
            tie_arr = _uint_array(tie_breakers, "tie_breakers", _M32)
        if not len(id_arr) == len(score_arr) == len(tie_arr):
            raise InvalidInput(
                f"ids, scores and tie_breakers must have the same length, got "
                f"{len(id_arr)!r}, {len(score_arr)!r} and {len(tie_arr)!r}",
                field="scores",
            )
        kept: dict[int, dict[str, Any]] = {}
        for key, value in (payloads or {}).items():
            if value is not None:
                kept[_int_in(key, "id", _M64)] = _payload(value)  # type: ignore[assignment]
        self._load_columns(id_arr, score_arr, tie_arr, now, kept)

    def _load_columns(
        self,
        ids: np.ndarray,
        scores: np.ndarray,
        ties: np.ndarray,
        updated: np.ndarray | int,
        payloads: dict[int, dict[str, Any]],
    ) -> None:
        by_id = _last_of_each_id(ids)
        k1 = ~scores
        k2 = _k2_of(ties, updated)
        order = _rank_order(k1, k2, ids, by_id)
        del by_id
        rows = _rows_from(k1, k2, ids, order)
        del k1, k2, order
        self._set_rows(rows)
        self._payloads = self._present_payloads(payloads)

    def _present_payloads(self, payloads: Mapping[int, Any]) -> dict[int, dict[str, Any]]:
        """The payloads whose ids are in the list (after a rebuild from rows)."""
        return {i: p for i, p in payloads.items() if p is not None and self._hfind(i) >= 0}

    def _set_rows(self, rows: np.ndarray) -> None:
        """Rebuild every structure from ``rows``: ``(n, 3)`` words, sorted, unique ids."""
        # numpy's concatenate and insert return native byte order: convert back to big-endian.
        rows = rows.astype(_ROW, copy=False)
        n = len(rows)
        load = self._load
        self._version += 1
        self._blocks: list[_Block] = []
        self._maxes: list[bytes] = []
        self._by_handle: list[_Block | None] = []
        self._free: list[int] = []
        self._tree = None
        self._tree_top = 0
        self._len = n
        if n:
            blocks = _chunked(rows, load)
            self._blocks = blocks
            self._maxes = [block.maxkey for block in blocks]
            self._by_handle = list(blocks)
            handles = np.repeat(np.arange(len(blocks), dtype=np.uint32), [b.n for b in blocks])
            self._hash_build(rows[:, 2].astype(np.uint64), handles)
        else:
            self._hash_build(np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.uint32))

    def clear(self) -> None:
        """Remove every element. Runtime complexity: ``O(1)`` (memory is released)."""
        self._payloads = {}
        self._set_rows(np.empty((0, 3), dtype=_ROW))

    def _reset(self, load: int) -> None:
        """Change the load and re-chunk the rows (tests shrink it to force splits and merges).

        Runtime complexity: ``O(n log n)`` for the id index rebuild.
        """
        self._load = _int_at_least(load, "load", MIN_LOAD)
        self._set_rows(_rows_of(self._blocks))

    #####  Reads ################################################################################

    def __len__(self) -> int:
        return self._len

    def __contains__(self, element_id: object) -> bool:
        try:
            return self._hfind(_int_in(element_id, "id", _M64)) >= 0
        except InvalidInput:
            return False

    def __iter__(self) -> Iterator[RankedElement]:
        """Every element in rank order. Runtime complexity: ``O(n)``, in 64Ki-row chunks."""
        n = self._len
        for chunk in self.iter_chunks():
            rank = chunk.from_top
            payloads = chunk.payloads
            for element_id, score, tie, updated in zip(
                chunk.ids.tolist(),
                chunk.scores.tolist(),
                chunk.tie_breakers.tolist(),
                chunk.updated_at.tolist(),
                strict=True,
            ):
                yield RankedElement(
                    element_id, score, tie, updated, payloads.get(element_id), rank, n - 1 - rank
                )
                rank += 1

    def get(self, id: int) -> RankedElement:
        """The element with this id, with its rank.

        Raises:
            InvalidInput: ``id`` is not a u64.
            NotFound: no such element.

        Runtime complexity: ``O(log n)`` plus an ``O(load)`` vectorised scan of one block.
        """
        element_id, block, i, rank = self._locate(id)
        k1, k2, _ = _KEY.unpack_from(block.mv, 24 * i)
        return RankedElement(
            element_id,
            _M64 - k1,
            _M32 - (k2 >> 32),
            k2 & _M32,
            self._payloads.get(element_id),
            rank,
            self._len - 1 - rank,
        )

    def rank_of(self, id: int) -> int:
        """Rank from the top (0 = best) of the element with this id.

        Raises:
            InvalidInput: ``id`` is not a u64.
            NotFound: no such element.

        Runtime complexity: ``O(log n)`` plus an ``O(load)`` vectorised scan of one block.
        """
        return self._locate(id)[3]

    def _locate(self, id: int) -> tuple[int, _Block, int, int]:
        """(checked id, its block, its row in the block, its rank) for ``get`` and ``rank_of``."""
        element_id = _int_in(id, "id", _M64)
        slot = self._hfind(element_id)
        if slot < 0:
            raise NotFound(f"no element {element_id!r} in this list")
        block = self._by_handle[self._hv[slot]]
        assert block is not None
        i = block.find_id(element_id)
        return element_id, block, i, self._prefix(bisect_left(self._maxes, block.maxkey)) + i

    def find(self, ids: Iterable[int]) -> tuple[list[RankedElement], list[int]]:
        """Look up many ids at once (RankDB ``POST .../elements/find``).

        Returns:
            ``(found, not_found)``: found elements sorted by rank, and the missing ids ascending.
            Duplicate ids are looked up once.

        Raises:
            InvalidInput: an id is not a u64.

        Runtime complexity: ``O(k log n)`` for ``k`` ids.
        """
        wanted = {_int_in(i, "id", _M64) for i in ids}
        found: list[RankedElement] = []
        missing: list[int] = []
        for element_id in wanted:
            if self._hfind(element_id) >= 0:
                found.append(self.get(element_id))
            else:
                missing.append(element_id)
        found.sort(key=lambda e: e.from_top)
        missing.sort()
        return found, missing

    def at_rank(self, from_top: int) -> RankedElement:
        """The element at rank ``from_top`` (0 = best).

        Raises:
            InvalidInput: ``from_top`` is negative or not an integer.
            NotFound: ``from_top >= len(self)``.

        Runtime complexity: ``O(log n)``.
        """
        start = self._offset(from_top, "from_top")
        return self._slice(start, start + 1)[0]

    def range_from_top(self, start: int, limit: int) -> list[RankedElement]:
        """Up to ``limit`` elements from rank ``start`` downwards (RankDB ``range?from_top=``).

        Raises:
            InvalidInput: ``start < 0`` or ``limit < 1``.
            NotFound: ``start >= len(self)`` ("offset out of list bounds"), also on an empty list.

        Runtime complexity: ``O(log n + limit)``.
        """
        first = self._offset(start, "from_top")
        count = _int_at_least(limit, "limit", 1)
        return self._slice(first, min(self._len, first + count))

    def range_from_bottom(self, start: int, limit: int) -> list[RankedElement]:
        """Up to ``limit`` elements from ``from_bottom = start`` *downwards*, as RankDB does.

        RankDB's ``range?from_bottom=k`` starts at the element whose ``from_bottom`` is ``k`` and
        walks towards the bottom, in top-down order, so it returns at most ``k + 1`` elements:
        ``from_bottom=0`` gives only the last element (``shared/compat/rankdb.md`` 1.3 and 2.2).
        For "the last ``m`` elements" use ``range_from_bottom(m - 1, m)``.

        Raises:
            InvalidInput: ``start < 0`` or ``limit < 1``.
            NotFound: ``start >= len(self)``, also on an empty list.

        Runtime complexity: ``O(log n + limit)``.
        """
        from_bottom = self._offset(start, "from_bottom")
        count = _int_at_least(limit, "limit", 1)
        first = self._len - 1 - from_bottom
        return self._slice(first, min(self._len, first + count))

    def percentile(self, pct: float) -> RankedElement:
        """The element at percentile ``pct`` from the top: rank ``floor(n * pct / 100)``.

        The index is clamped to ``n - 1``, so 0 gives the top element and 100 the bottom one.
        The product is exact (integer arithmetic on the float's ratio), as RankDB's big.Float is.

        Raises:
            InvalidInput: ``pct`` is not a finite number in 0..100.
            NotFound: the list is empty.

        Runtime complexity: ``O(log n)``.
        """
        if (
            not isinstance(pct, int | float | np.integer | np.floating)
            or isinstance(pct, bool)
            or not math.isfinite(pct)
            or not 0 <= pct <= 100
        ):
            raise InvalidInput(f"pct must be a number in 0..100, got {pct!r}", field="pct")
        n = self._len
        if not n:
            raise NotFound("the list is empty; a percentile needs at least one element")
        num, den = float(pct).as_integer_ratio()
        index = min(n - 1, (n * num) // (den * 100))
        return self._slice(index, index + 1)[0]

    def neighbours(
        self,
        id: int,
        r: int,
    ) -> tuple[list[RankedElement], list[RankedElement]]:
        """Up to ``r`` elements directly above and below the element with this id.

        Returns:
            ``(above, below)``, both top-down: ``above`` *ends* with the element directly above,
            ``below`` *starts* with the element directly below (RankDB's documented contract,
            not its mislabelled ``above`` quirk; ``shared/compat/rankdb.md`` 2.5). Both are cut
            at the ends of the list and cross block boundaries.

        Raises:
            InvalidInput: ``id`` is not a u64 or ``r`` is negative.
            NotFound: no such element.

        Runtime complexity: ``O(log n + r)``.
        """
        return self.neighbours_of_rank(self.rank_of(id), r)

    def neighbours_of_rank(
        self, from_top: int, r: int
    ) -> tuple[list[RankedElement], list[RankedElement]]:
        """``neighbours`` for the element at a rank (percentile answers use this).

        Raises:
            InvalidInput: ``from_top`` or ``r`` is negative.
            NotFound: ``from_top >= len(self)``.

        Runtime complexity: ``O(log n + r)``.
        """
        rank = self._offset(from_top, "from_top")
        radius = _int_at_least(r, "range", 0)
        above = self._slice(max(0, rank - radius), rank)
        below = self._slice(rank + 1, min(self._len, rank + 1 + radius))
        return above, below

    def _offset(self, value: int, field: str) -> int:
        start = _int_at_least(value, field, 0)
        if start >= self._len:
            raise NotFound(
                f"offset out of list bounds: {field}={start!r} but the list has "
                f"{self._len!r} elements",
                field=field,
            )
        return start

    def _slice(self, start: int, stop: int) -> list[RankedElement]:
        """Elements with ranks ``start <= rank < stop``, walking blocks from ``start``."""
        out: list[RankedElement] = []
        if start >= stop:
            return out
        pos, off = self._locate_rank(start)
        blocks = self._blocks
        payloads = self._payloads
        last = self._len - 1
        if stop - start >= 32:
            # Long slices: decode all rows with a few numpy calls rather than row by row
            # (about twice as fast for 100 rows; see bench/bench_ranked.py::range_100).
            parts = []
            remaining = stop - start
            while remaining > 0:
                block = blocks[pos]
                take = min(block.n - off, remaining)
                parts.append(block.arr[off : off + take])
                remaining -= take
                pos += 1
                off = 0
            native = np.concatenate(parts).astype(np.uint64)
            k2 = native[:, 1]
            ids = native[:, 2].tolist()
            fields = zip(
                ids,
                (~native[:, 0]).tolist(),
                (_NP_M32 - (k2 >> _SHIFT32)).tolist(),
                (k2 & _NP_M32).tolist(),
                [payloads.get(i) for i in ids] if payloads else [None] * len(ids),
                range(start, stop),
                range(last - start, last - stop, -1),
                strict=True,
            )
            # tuple.__new__ skips the NamedTuple's Python-level __new__: half the cost per row.
            return [tuple.__new__(RankedElement, row) for row in fields]
        rank = start
        remaining = stop - start
        while remaining > 0:
            block = blocks[pos]
            take = min(block.n - off, remaining)
            for k1, k2, element_id in block.arr[off : off + take].tolist():
                out.append(
                    RankedElement(
                        element_id,
                        _M64 - k1,
                        _M32 - (k2 >> 32),
                        k2 & _M32,
                        payloads.get(element_id),
                        rank,
                        last - rank,
                    )
                )
                rank += 1
            remaining -= take
            pos += 1
            off = 0
        return out

    #####  Writes ###############################################################################

    def upsert(
        self,
        id: int,
        score: int,
        tie_breaker: int,
        payload: Payload,
        now: int,
    ) -> RankedElement | None:
        """Create or replace one element; ``updated_at`` becomes ``now``.

        The whole element is replaced, payload included: ``payload=None`` removes a stored
        payload (what RankDB's code does, whatever its design doc says).

        Returns:
            The element as it was before, with its old rank (RankDB's ``previous_rank``), or
            None if it was created.

        Raises:
            InvalidInput: a value is out of range; nothing was changed.

        Runtime complexity: ``O(log n)`` plus ``O(load)`` memmoves; amortised ``O(1)`` extra
        for splits, merges and id index growth. See bench/bench_ranked.py::update.
        """
        # Fast path: four plain in-range ints (checked inline: a call per field costs ~10%).
        if (
            type(id) is int
            and type(score) is int
            and type(tie_breaker) is int
            and type(now) is int
            and 0 <= id <= _M64
            and 0 <= score <= _M64
            and 0 <= tie_breaker <= _M32
            and 0 <= now <= _M32
        ):
            element_id = id
            key = _KEY.pack(_M64 - score, ((_M32 - tie_breaker) << 32) | now, id)
        else:
            element_id = _int_in(id, "id", _M64)
            key = _pack(
                _int_in(score, "score", _M64),
                _int_in(tie_breaker, "tie_breaker", _M32),
                _int_in(now, "now", _M32),
                element_id,
            )
        return self._write(element_id, key, _payload(payload), True)

    def _write(
        self, element_id: int, key: bytes, payload: Payload, want_previous: bool
    ) -> RankedElement | None:
        """Upsert a validated element; the previous state is built only if asked for."""
        self._version += 1
        slot = self._hfind(element_id)
        if slot < 0:
            self._insert_new(element_id, key, ~slot)
            previous = None
        else:
            previous = self._move(slot, element_id, key, want_previous)
        if payload is None:
            if self._payloads:
                self._payloads.pop(element_id, None)
        else:
            self._payloads[element_id] = payload
        return previous

    def insert(
        self,
        id: int,
        score: int,
        tie_breaker: int,
        payload: Payload,
        now: int,
    ) -> None:
        """Create one element that must not exist yet (RankDB ``POST .../elements``).

        Raises:
            InvalidInput: a value is out of range (checked first).
            Conflict: the id is already in the list; nothing was changed.

        Runtime complexity: as ``upsert``.
        """
        element_id = _int_in(id, "id", _M64)
        key = _pack(
            _int_in(score, "score", _M64),
            _int_in(tie_breaker, "tie_breaker", _M32),
            _int_in(now, "now", _M32),
            element_id,
        )
        payload = _payload(payload)
        if self._hfind(element_id) >= 0:
            raise Conflict(
                f"element {element_id!r} already exists; use upsert to replace it", field="id"
            )
        self._write(element_id, key, payload, False)

    def delete(self, id: int) -> bool:
        """Remove one element if present (RankDB answers 204 either way).

        Returns:
            Whether the element existed.

        Raises:
            InvalidInput: ``id`` is not a u64.

        Runtime complexity: ``O(log n)`` plus an ``O(load)`` memmove; amortised ``O(1)`` extra
        for merges and id index shrinking.
        """
        element_id = _int_in(id, "id", _M64)
        slot = self._hfind(element_id)
        if slot < 0:
            return False
        self._version += 1
        block = self._by_handle[self._hv[slot]]
        assert block is not None
        i = block.find_id(element_id)
        self._hdelete(slot)
        self._payloads.pop(element_id, None)
        self._remove_at(bisect_left(self._maxes, block.maxkey), block, i)
        if self._hcap > HASH_MIN_CAPACITY and self._hcount < self._hcap * HASH_MIN_LOAD:
            self._hash_rebuild()
        return True

    def bulk_upsert(self, elements: Iterable[ElementIn | tuple[Any, ...]], now: int) -> int:
        """Create or replace many elements, all with ``updated_at = now`` (RankDB bulk PUT).

        Duplicate ids in ``elements`` are de-duplicated first and the last one wins. The batch
        is validated whole before anything changes.

        Returns:
            How many elements were created (the rest replaced existing ones).

        Raises:
            InvalidInput: an element or ``now`` is out of range; nothing was changed.

        Runtime complexity: ``O(k log n)`` for ``k`` elements; batches of ``k >= n / 8``
        rebuild the list instead, in ``O(n + k log k)`` plus the id index rebuild.
        """
        now = _int_in(now, "now", _M32)
        batch: dict[int, tuple[int, int, Payload]] = {}
        for index, item in enumerate(elements):
            element_id, score, tie, payload = _element_in(item, index)
            batch.pop(element_id, None)  # last wins, and takes the last position too
            batch[element_id] = (score, tie, payload)
        if not batch:
            return 0
        if self._rebuild_pays(len(batch)):
            return self._bulk_upsert_rebuild(batch, now)
        before = self._len
        for element_id, (score, tie, payload) in batch.items():
            self._write(element_id, _pack(score, tie, now, element_id), payload, False)
        return self._len - before

    def bulk_delete(self, ids: Iterable[int]) -> int:
        """Remove many elements; missing ids are ignored (RankDB bulk DELETE).

        Returns:
            How many elements were removed.

        Raises:
            InvalidInput: an id is not a u64; nothing was changed.

        Runtime complexity: ``O(k log n)`` for ``k`` ids; batches of ``k >= n / 8`` rebuild
        the list in ``O(n)`` plus the id index rebuild.
        """
        wanted = {_int_in(i, "id", _M64) for i in ids}
        if not wanted:
            return 0
        if self._rebuild_pays(len(wanted)):
            rows = _rows_of(self._blocks)
            drop = np.isin(rows[:, 2].astype(np.uint64), np.fromiter(wanted, np.uint64))
            removed = int(drop.sum())
            if removed:
                for element_id in wanted:
                    self._payloads.pop(element_id, None)
                self._set_rows(rows[~drop])
            return removed
        return sum(self.delete(element_id) for element_id in wanted)

    def _rebuild_pays(self, k: int) -> bool:
        return k >= self._bulk_rebuild_min and k * BULK_REBUILD_DIVISOR >= self._len

    def _bulk_upsert_rebuild(self, batch: dict[int, tuple[int, int, Payload]], now: int) -> int:
        """Merge a large sorted batch into the sorted rows, then rebuild everything."""
        ids = np.fromiter(batch, dtype=np.uint64, count=len(batch))
        values = list(batch.values())
        scores = np.array([v[0] for v in values], dtype=np.uint64)
        ties = np.array([v[1] for v in values], dtype=np.uint64)
        k1 = ~scores
        k2 = _k2_of(ties, now)
        new_rows = _rows_from(k1, k2, ids, _rank_order(k1, k2, ids, np.argsort(ids)))
        rows = _rows_of(self._blocks)
        replaced = np.isin(rows[:, 2].astype(np.uint64), ids)
        created = len(batch) - int(replaced.sum())
        rows = rows[~replaced]
        at = rows.view(_VKEY).reshape(-1).searchsorted(new_rows.view(_VKEY).reshape(-1))
        merged = np.insert(rows, at, new_rows, axis=0)
        for element_id, (_, _, payload) in batch.items():
            if payload is None:
                self._payloads.pop(element_id, None)
            else:
                self._payloads[element_id] = payload
        self._set_rows(merged)
        return created

    #####  Snapshots ############################################################################

    def iter_chunks(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[RankedChunk]:
        """The elements in rank order, ``chunk_size`` rows at a time, as fresh numpy arrays.

        For snapshots and backups: only one chunk is copied at a time, never the whole list.
        The list must not change while the iterator is in use: apply no command between two
        chunks (or iterate over a ``clone()``). A change is detected and raises RuntimeError.

        Raises:
            InvalidInput: ``chunk_size < 1``.
            RuntimeError: the list changed during iteration.

        Runtime complexity: ``O(n)`` in total, ``O(chunk_size + log n)`` per chunk.
        """
        size = _int_at_least(chunk_size, "chunk_size", 1)
        return self._chunks(size)

    def _chunks(self, size: int) -> Iterator[RankedChunk]:
        version = self._version
        blocks = self._blocks
        pos = off = rank = 0
        while pos < len(blocks):
            parts = []
            need = size
            while need and pos < len(blocks):
                block = blocks[pos]
                take = min(block.n - off, need)
                parts.append(block.arr[off : off + take])
                need -= take
                off += take
                if off == block.n:
                    pos += 1
                    off = 0
            native = np.concatenate(parts).astype(np.uint64)
            chunk = self._decode_chunk(rank, native)
            rank += len(native)
            yield chunk
            if self._version != version:
                raise RuntimeError(
                    "ranked list changed during iteration; finish the snapshot before applying "
                    "commands, or iterate over a clone()"
                )

    def _decode_chunk(self, rank: int, native: np.ndarray) -> RankedChunk:
        ids = native[:, 2].copy()
        k2 = native[:, 1]
        payloads: dict[int, dict[str, Any]] = {}
        if self._payloads:
            source = self._payloads
            payloads = {i: source[i] for i in ids.tolist() if i in source}
        return RankedChunk(
            rank,
            ids,
            ~native[:, 0],
            (_NP_M32 - (k2 >> _SHIFT32)).astype(np.uint32),
            (k2 & _NP_M32).astype(np.uint32),
            payloads,
        )

    def to_records(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[dict[str, Any]]:
        """The elements as plain-data chunks (ints, bytes, dicts) for the snapshot codec.

        Each record is ``{"v": RECORDS_VERSION, "count": k, "ids": bytes, "scores": bytes,
        "tie_breakers": bytes, "updated_at": bytes, "payloads": {id: payload}}``, where the bytes
        are little-endian u64 (ids, scores) and u32 (tie_breakers, updated_at) arrays in rank
        order. Same rules as ``iter_chunks``.

        Runtime complexity: ``O(n)`` in total.
        """
        for chunk in self.iter_chunks(chunk_size):
            yield {
                "v": RECORDS_VERSION,
                "count": len(chunk.ids),
                "ids": chunk.ids.astype("<u8").tobytes(),
                "scores": chunk.scores.astype("<u8").tobytes(),
                "tie_breakers": chunk.tie_breakers.astype("<u4").tobytes(),
                "updated_at": chunk.updated_at.astype("<u4").tobytes(),
                "payloads": chunk.payloads,
            }

    @classmethod
    def from_records(
        cls, records: Iterable[Mapping[str, Any]], load: int = DEFAULT_LOAD
    ) -> RankedList:
        """Build a list from ``to_records`` chunks, keeping each element's ``updated_at``.

        Rows that arrive in rank order (as ``to_records`` writes them) are not sorted again.
        Duplicate ids keep the last one, as everywhere else.

        Raises:
            InvalidInput: a record has the wrong version, keys or sizes (``field="records"``).

        Runtime complexity: ``O(n)`` for sorted input, ``O(n log n)`` otherwise.
        """
        id_parts: list[np.ndarray] = []
        score_parts: list[np.ndarray] = []
        tie_parts: list[np.ndarray] = []
        updated_parts: list[np.ndarray] = []
        payloads: dict[int, dict[str, Any]] = {}
        for index, record in enumerate(records):
            try:
                version = record["v"]
                count = record["count"]
                arrays = (
                    np.frombuffer(record["ids"], dtype="<u8"),
                    np.frombuffer(record["scores"], dtype="<u8"),
                    np.frombuffer(record["tie_breakers"], dtype="<u4"),
                    np.frombuffer(record["updated_at"], dtype="<u4"),
                )
                chunk_payloads = record.get("payloads") or {}
            except (KeyError, TypeError, ValueError) as exc:
                raise InvalidInput(
                    f"records[{index}] is not a ranked list record: {exc!r}", field="records"
                ) from None
            if version != RECORDS_VERSION:
                raise InvalidInput(
                    f"records[{index}] has version {version!r}; this build reads version "
                    f"{RECORDS_VERSION!r}",
                    field="records",
                )
            if any(len(a) != count for a in arrays):
                raise InvalidInput(
                    f"records[{index}] arrays must all hold count={count!r} values, got "
                    f"{[len(a) for a in arrays]!r}",
                    field="records",
                )
            id_parts.append(arrays[0])
            score_parts.append(arrays[1])
            tie_parts.append(arrays[2])
            updated_parts.append(arrays[3])
            for key, value in chunk_payloads.items():
                payloads[_int_in(key, "id", _M64)] = _payload(value)  # type: ignore[assignment]
        out = cls(load)

        def joined(parts: list[np.ndarray]) -> np.ndarray:
            return np.concatenate(parts).astype(np.uint64) if parts else np.empty(0, np.uint64)

        ids = joined(id_parts)
        k1 = ~joined(score_parts)
        k2 = _k2_of(joined(tie_parts), joined(updated_parts))
        if len(ids) < 2 or _ascending(k1, k2, ids).all():
            order = np.arange(len(ids))  # already in rank order, as to_records writes it
        else:
            order = _rank_order(k1, k2, ids, _last_of_each_id(ids))
        out._set_rows(_rows_from(k1, k2, ids, order))
        out._payloads = out._present_payloads(payloads)
        return out

    def clone(self) -> RankedList:
        """An independent copy (RankDB ``PUT /lists/{id}/clone``). Payload objects are shared.

        Runtime complexity: ``O(n)`` memcpy.
        """
        out = RankedList.__new__(RankedList)
        out._load = self._load
        out._bulk_rebuild_min = self._bulk_rebuild_min
        out._version = 0
        out._init_probe()
        out._payloads = dict(self._payloads)
        out._blocks = []
        out._by_handle = [None] * len(self._by_handle)
        for block in self._blocks:
            copy = block.copy()
            out._blocks.append(copy)
            out._by_handle[block.handle] = copy
        out._maxes = list(self._maxes)
        out._free = list(self._free)
        out._tree = None if self._tree is None else list(self._tree)
        out._tree_top = self._tree_top
        out._len = self._len
        out._set_hash(self._hkeys.copy(), self._hvals.copy(), self._hcap, self._hcount)
        return out

    #####  Maintenance ##########################################################################

    def statistics(self) -> RankedListStatistics:
        """Sizes and memory, for ``/metrics`` and list info. Runtime complexity: ``O(n / load)``."""
        sizes = [b.n for b in self._blocks]
        data = sum(b.arr.nbytes for b in self._blocks)
        overhead = len(self._blocks) * _BLOCK_OVERHEAD_BYTES + 8 * len(self._by_handle)
        total = data + overhead + self._hkeys.nbytes + self._hvals.nbytes
        n = self._len
        return RankedListStatistics(
            elements=n,
            blocks=len(self._blocks),
            load=self._load,
            smallest_block=min(sizes, default=0),
            largest_block=max(sizes, default=0),
            hash_slots=len(self._hkeys),
            hash_load=self._hcount / self._hcap,
            payloads=len(self._payloads),
            bytes_estimate=total,
            bytes_per_element=total / n if n else 0.0,
        )

    def verify(self) -> list[str]:
        """Check every invariant; return what is broken (empty when the list is healthy).

        For RankDB's ``verify`` endpoint: a non-empty answer means ``repair()`` is due.

        Runtime complexity: ``O(n log n)``, vectorised.
        """
        try:
            self._check_invariants()
        except AssertionError as exc:
            # The first line is our message (pytest's assert rewriting appends an explanation).
            return [str(exc).split("\n", 1)[0] or "assertion failed"]
        except Exception as exc:  # internals too broken to even check (e.g. a bad row count)
            return [f"{type(exc).__name__}: {exc}"]
        return []

    def _check(self) -> None:
        """Assert every invariant (see the module docstring); print the internals on failure."""
        try:
            self._check_invariants()
        except AssertionError:
            self._dump()
            raise

    def _check_invariants(self) -> None:
        blocks = self._blocks
        load = self._load
        assert len(blocks) == len(self._maxes), "block and maxes counts differ"
        assert (self._len == 0) == (not blocks), "empty list must have no blocks"
        total = 0
        handles = set()
        for pos, block in enumerate(blocks):
            n = block.n
            assert 1 <= n <= len(block.arr), f"block {pos} holds {n} rows of {len(block.arr)}"
            assert n <= 2 * load, f"block {pos} holds {n} rows, more than 2 * load"
            assert block.arr.dtype == _ROW, f"block {pos} rows are not big-endian"
            assert np.shares_memory(block.keys, block.arr), f"block {pos} keys view is stale"
            assert np.shares_memory(block.idcol, block.arr), f"block {pos} id view is stale"
            assert block.mv.obj is block.arr, f"block {pos} memoryview is stale"
            last = block.key(n - 1)
            assert self._maxes[pos] == last, f"maxes[{pos}] is not the last key of its block"
            assert block.maxkey == last, f"block {pos} maxkey is not its last key"
            assert self._by_handle[block.handle] is block, f"handle of block {pos} is stale"
            handles.add(block.handle)
            total += n
        assert total == self._len, f"len {self._len} but blocks hold {total} rows"
        assert len(handles) == len(blocks), "two blocks share a handle"
        free = set(self._free)
        assert len(free) == len(self._free), "a handle is free twice"
        for h, block in enumerate(self._by_handle):
            assert (block is None) == (h in free), f"handle {h} is both used and free"
        if self._len > 1:
            # Order of all rows at once, within and across blocks (one vectorised pass).
            native = _rows_of(self._blocks).astype(np.uint64)
            ok = _ascending(native[:, 0], native[:, 1], native[:, 2])
            if not ok.all():
                # See test_ranked_repair_after_swapped_rows for a test that reaches this.
                bad = int(np.argmin(ok))  # rows bad and bad + 1 are out of order
                ends = np.cumsum([b.n for b in blocks])
                pos = int(np.searchsorted(ends, bad, side="right"))
                if bad + 1 < ends[pos]:
                    raise AssertionError(f"rows of block {pos} are not strictly ascending")
                raise AssertionError(f"block {pos} overlaps block {pos + 1}")
        self._check_rank_index()
        self._check_hash()

    def _check_hash(self) -> None:
        """Assert the id index's own invariants, then that it holds exactly the rows' ids."""
        self._check_id_table(self._len)
        if not self._blocks:
            assert not self._payloads, "payloads stored for an empty list"
            return
        ids = np.concatenate([b.ids() for b in self._blocks])
        owner = np.repeat(
            np.array([b.handle for b in self._blocks], dtype=np.uint32),
            [b.n for b in self._blocks],
        )
        found = self._hslots(ids)
        assert (found >= 0).all(), "a row's id is missing from the hash"
        # A slot holds one id, so distinct slots mean distinct ids (no sort: np.unique of 10M
        # ids takes over ten seconds with numpy 2's hash-based unique).
        seen = np.zeros(len(self._hkeys), dtype=bool)
        seen[found] = True
        assert int(seen.sum()) == len(ids), "an id appears in two rows"
        assert (self._hvals[found] == owner).all(), "a hash entry points at the wrong block"
        if self._payloads:
            extra = np.fromiter(self._payloads, dtype=np.uint64, count=len(self._payloads))
            assert (self._hslots(extra) >= 0).all(), "a payload belongs to no element"

    def _dump(self) -> None:
        print("RankedList internals:", repr(self), file=sys.stderr)
        print("  load", self._load, "len", self._len, "version", self._version, file=sys.stderr)
        for pos, block in enumerate(self._blocks[:50]):
            rows = block.arr[: block.n].astype(np.uint64).tolist()
            print(
                f"  block {pos} handle={block.handle} n={block.n} cap={len(block.arr)}"
                f" first={rows[:3]} last={rows[-3:]}",
                file=sys.stderr,
            )
        print("  maxes", [m.hex() for m in self._maxes[:50]], file=sys.stderr)
        print("  tree", self._tree if self._tree is None else self._tree[:50], file=sys.stderr)
        print("  free handles", self._free[:50], file=sys.stderr)
        print(
            f"  hash cap={self._hcap} slots={len(self._hkeys)} count={self._hcount}",
            file=sys.stderr,
        )
        print("  payload ids", sorted(self._payloads)[:50], file=sys.stderr)

    def reindex(self) -> None:
        """Rebuild the id index, block maxima, handles and rank index from the rows.

        RankDB's ``reindex``: cheaper than ``repair`` and enough when only the indexes are
        damaged. It trusts the rows; if ``verify()`` still reports a problem, use ``repair()``.

        Runtime complexity: ``O(n log n)`` for the id index build.
        """
        self._version += 1
        blocks = [b for b in self._blocks if 0 < b.n <= len(b.arr)]
        self._blocks = blocks
        self._by_handle = list(blocks)
        self._free = []
        self._maxes = []
        for h, block in enumerate(blocks):
            block.handle = h
            block.maxkey = block.key(block.n - 1)
            self._maxes.append(block.maxkey)
        self._len = sum(b.n for b in blocks)
        self._tree = None
        self._hash_rebuild()

    def repair(self) -> int:
        """Rebuild everything from the rows alone: re-sort, de-duplicate, re-chunk, re-index.

        RankDB's ``repair``. Duplicate ids keep the row with the latest ``updated_at`` (then the
        higher-ranked one); payloads of ids that are gone are dropped.

        Returns:
            How many duplicate rows were dropped.

        Runtime complexity: ``O(n log n)``, vectorised.
        """
        parts = [b.arr[: min(b.n, len(b.arr))] for b in self._blocks if b.n > 0]
        rows = np.concatenate(parts) if parts else np.empty((0, 3), dtype=_ROW)
        native = rows.astype(np.uint64)
        k1, k2, ids = native[:, 0].copy(), native[:, 1].copy(), native[:, 2].copy()
        n = len(ids)
        # Order rows by (id, updated_at, rank position) and keep the last of each id.
        position = np.arange(n, dtype=np.uint64)
        order = np.lexsort((~position, k2 & _NP_M32, ids)) if n else position.astype(np.int64)
        sorted_ids = ids[order]
        keep = np.ones(n, dtype=bool)
        keep[:-1] = sorted_ids[1:] != sorted_ids[:-1]
        by_id = order[keep]
        dropped = n - len(by_id)
        rows = _rows_from(k1, k2, ids, _rank_order(k1, k2, ids, by_id))
        self._set_rows(rows)
        self._payloads = self._present_payloads(self._payloads)
        return dropped

    #####  Internals: elements in blocks #########################################################

    def _insert_new(self, element_id: int, key: bytes, slot: int) -> None:
        """Insert a row for an id known to be absent; ``slot`` is where its probe ended."""
        slot = self._hclaim(element_id, slot)
        if not self._blocks:
            block = _Block.single(key, self._new_handle())
            self._by_handle[block.handle] = block
            self._blocks.append(block)
            self._maxes.append(key)
            self._hv[slot] = block.handle
            self._len = 1
            self._tree = None
            return
        self._insert_key(key, slot)

    def _insert_key(self, key: bytes, slot: int) -> None:
        """Insert the row ``key`` into its block and point hash ``slot`` at that block."""
        maxes = self._maxes
        pos = bisect_left(maxes, key)
        if pos == len(maxes):
            pos -= 1
        block = self._blocks[pos]
        n = block.n
        if key > block.maxkey:
            j = n  # fast path: appending to the last block, as sequential inserts do
            block.maxkey = maxes[pos] = key
        else:
            j = block.search(key, self._probe, self._probe_mv)
        block.insert(j, key)
        self._len += 1
        self._tree_add(pos, 1)
        self._hv[slot] = block.handle
        if n >= 2 * self._load:
            self._split(pos)

    def _move(
        self, slot: int, element_id: int, key: bytes, want_previous: bool
    ) -> RankedElement | None:
        """Give an existing element a new key; return its previous state if asked for."""
        block = self._by_handle[self._hv[slot]]
        assert block is not None
        i = block.find_id(element_id)
        maxes = self._maxes
        old_pos = bisect_left(maxes, block.maxkey)
        previous = None
        if want_previous:
            k1, k2, _ = _KEY.unpack_from(block.mv, 24 * i)
            rank = self._prefix(old_pos) + i
            previous = RankedElement(
                element_id,
                _M64 - k1,
                _M32 - (k2 >> 32),
                k2 & _M32,
                self._payloads.get(element_id),
                rank,
                self._len - 1 - rank,
            )
        pos = bisect_left(maxes, key)
        if pos == len(maxes):
            pos -= 1
        if pos != old_pos:
            self._remove_at(old_pos, block, i)
            self._insert_key(key, slot)
            return previous
        # Same block: move the row inside it (with a fast path for small score changes).
        if block.move(i, key, self._probe, self._probe_mv):
            maxes[pos] = block.maxkey
        return previous

    def _remove_at(self, pos: int, block: _Block, i: int) -> None:
        """Remove row ``i`` of ``block`` (at position ``pos``); merge or drop the block if small."""
        block.remove(i)
        n = block.n
        self._len -= 1
        self._tree_add(pos, -1)
        if n == 0:
            del self._blocks[pos]
            del self._maxes[pos]
            self._drop_handle(block.handle)
            self._tree = None
            return
        if i == n:
            block.maxkey = self._maxes[pos] = block.key(n - 1)
        if n <= self._load // 2 and len(self._blocks) > 1:
            self._merge(pos)
        else:
            block.trim()

    def _split(self, pos: int) -> None:
        """Split block ``pos`` in halves; the upper half gets a new handle."""
        block = self._blocks[pos]
        upper = block.split(self._new_handle())
        self._by_handle[upper.handle] = upper
        self._maxes[pos] = block.maxkey
        self._blocks.insert(pos + 1, upper)
        self._maxes.insert(pos + 1, upper.maxkey)
        self._repoint(upper)
        self._tree = None

    def _merge(self, pos: int) -> None:
        """Merge the small block ``pos`` with a neighbour, keeping the bigger one's handle."""
        blocks = self._blocks
        lo = pos if pos + 1 < len(blocks) else pos - 1
        keep, gone, moved_ids = _merged(blocks[lo], blocks[lo + 1])
        blocks[lo] = keep
        del blocks[lo + 1]
        self._maxes[lo] = keep.maxkey
        del self._maxes[lo + 1]
        self._drop_handle(gone.handle)
        self._tree = None
        self._repoint_ids(moved_ids, keep.handle)  # the rows that came from the other block
        if keep.n > 2 * self._load:
            self._split(lo)

    def _new_handle(self) -> int:
        if self._free:
            return self._free.pop()
        self._by_handle.append(None)
        return len(self._by_handle) - 1

    def _drop_handle(self, handle: int) -> None:
        self._by_handle[handle] = None
        self._free.append(handle)

    #####  Internals: what the id and rank indexes need from the blocks #########################

    def _block_sizes(self) -> np.ndarray:
        """Rows in each block, for the Fenwick tree (``RankIndex``)."""
        blocks = self._blocks
        return np.fromiter((b.n for b in blocks), dtype=np.int64, count=len(blocks))

    def _hash_rebuild(self, count: int | None = None) -> None:
        """Rebuild the id index from the rows in the blocks (``IdIndex`` calls it to grow)."""
        blocks = self._blocks
        if not blocks:
            self._hash_build(np.empty(0, np.uint64), np.empty(0, np.uint32), count)
            return
        ids = np.concatenate([b.ids() for b in blocks])
        handles = np.repeat(
            np.array([b.handle for b in blocks], dtype=np.uint32), [b.n for b in blocks]
        )
        self._hash_build(ids, handles, count)

    def _repoint(self, block: _Block) -> None:
        self._repoint_ids(block.ids(), block.handle)
