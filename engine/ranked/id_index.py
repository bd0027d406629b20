"""The id index of a ranked list: id -> block handle, in an open-addressing table of numpy arrays.

Theory of operation
===================

A ranked list finds an element by id through this table: it gives the *handle* of the block that
holds the row, then ``_Block.find_id`` scans that block's id column for the row itself.

The table is two numpy arrays (u64 id, u32 handle): 12 bytes a slot where a ``dict`` costs over
100 bytes per entry (entry, hash slot and two int objects). It uses linear probing *without*
wrap-around: the table has ``HASH_PAD`` spare slots past its nominal capacity and its last slot is
always empty, so a probe always ends. Home slots come from Fibonacci hashing of the mixed id, and
deletion shifts entries back instead of leaving tombstones. Handles stay stable across splits; a
split or merge re-points only the rows it moves (vectorised, ``_repoint_ids``). Scalar probes
read the arrays through memoryviews (``_hk``, ``_hv``): item access on a memoryview is about
twice as fast as numpy's ``.item()``.

Costs and worst cases:

* A hit takes about 3 probes and a miss 13 at the maximum load of 0.8 (linear probing).
* Growing or shrinking the table rebuilds it: ``O(n log n)`` (about 2.5 s at 10M) inside the one
  insert that crosses ``HASH_MAX_LOAD``. A build sizes the table at ``HASH_BUILD_LOAD``, so that
  happens after roughly ``0.23 n`` further inserts. This is the p99.99 hazard of a ranked list.
* Ids built to collide in the top 32 bits of the mixed hash degrade lookups towards ``O(n)``
  probes. Sequential, random and strided ids all spread well (see the stress tests).

Invariants (``_check_id_table``; the ranked list checks the rows against it):

* ``_hcount`` entries are occupied, which is the number of rows;
* every entry sits at or after its home slot with no empty slot in between;
* empty slots have key 0 and value ``_EMPTY``; the last slot is empty.

Why a mixin
-----------
``IdIndex`` is a base class of ``RankedList`` rather than an object it holds, so the hot probe
loop reads ``self._hk`` with no extra attribute hop or call on every lookup, and the attributes
stay where tests and tools reach them. It owns only the ``_h*`` attributes below; the one thing it
needs from its host is ``_hash_rebuild`` (the host knows where the rows, hence the ids and their
handles, are).

Example
-------
>>> class Table(IdIndex):
...     def _hash_rebuild(self, count: int | None = None) -> None:
...         used = self._hvals != _EMPTY
...         self._hash_build(self._hkeys[used], self._hvals[used], count)
>>> t = Table()
>>> t._hash_build(np.array([10, 20, 30], dtype=np.uint64), np.array([0, 0, 1], dtype=np.uint32))
>>> t._hv[t._hfind(30)], t._hfind(40) < 0
(1, True)
>>> t._hdelete(t._hfind(20))
>>> t._hfind(20) < 0, t._hcount
(True, 2)
>>> t._check_id_table(2)
"""

from __future__ import annotations

import math

import numpy as np

from engine.ranked.rows import _M32, _M64, _SHIFT32

###################################################################################################
# Tuning constants
###################################################################################################

#: Id index load after a (re)build, and the load at which an insert grows it. Linear probing at
#: 0.8 takes about 3 probes for a hit and 13 for a miss; 12 bytes / 0.65 is 18.5 B per element.
HASH_BUILD_LOAD = 0.65
HASH_MAX_LOAD = 0.8
#: Below this load a delete shrinks the id index (rebuild), so a drained list gives memory back.
HASH_MIN_LOAD = 0.2
#: Spare slots past the nominal capacity, so that probing needs no wrap-around.
HASH_PAD = 64
HASH_MIN_CAPACITY = 16

_EMPTY = _M32  # hash value of an empty slot; block handles are always smaller
_MULT = 0x9E3779B97F4A7C15  # 2**64 / golden ratio, the Fibonacci-hashing multiplier


###################################################################################################
# Home slots
###################################################################################################


def _home(element_id: int, cap: int) -> int:
    """Home slot of ``element_id`` in a table of nominal capacity ``cap`` (see ``_homes``)."""
    x = ((element_id ^ (element_id >> 32)) * _MULT) & _M64
    return ((x >> 32) * cap) >> 32


def _homes(ids: np.ndarray, cap: int) -> np.ndarray:
    """Vectorised ``_home``: mix, multiply (wrapping), then map the top 32 bits onto ``0..cap``."""
    x = ids ^ (ids >> _SHIFT32)
    x *= np.uint64(_MULT)
    x >>= _SHIFT32
    x *= np.uint64(cap)
    x >>= _SHIFT32
    return x


###################################################################################################
# The table
###################################################################################################


class IdIndex:
    """Open-addressing id -> handle table, mixed into ``RankedList`` (see the module docstring)."""

    _hkeys: np.ndarray  # u64 ids; 0 where empty
    _hvals: np.ndarray  # u32 block handles; _EMPTY where empty
    _hk: memoryview  # views of the two arrays for scalar access
    _hv: memoryview
    _hcap: int  # nominal capacity: home slots are 0..cap-1; the arrays are longer
    _hcount: int  # occupied slots

    def _hash_rebuild(self, count: int | None = None) -> None:
        """Rebuild the table from the host's rows, sized for ``count`` ids (default: the rows).

        The host class defines it; ``_hclaim`` calls it to grow the table.
        """
        raise NotImplementedError

    def _set_hash(self, keys: np.ndarray, vals: np.ndarray, cap: int, count: int) -> None:
        self._hkeys = keys
        self._hvals = vals
        self._hk = memoryview(keys)  # memoryview item access is about twice numpy's .item()
        self._hv = memoryview(vals)
        self._hcap = cap
        self._hcount = count

    def _hash_build(self, ids: np.ndarray, handles: np.ndarray, count: int | None = None) -> None:
        """Build the table from scratch, sized for ``count`` ids (default ``len(ids)``).

        Sorting the entries by home slot lets numpy place them all at once: in that order linear
        probing puts entry ``i`` at ``max(home[i], slot[i-1] + 1)``, which is
        ``i + cummax(home - i)``.
        """
        n = len(ids)
        cap = max(HASH_MIN_CAPACITY, math.ceil(max(n, count or 0) / HASH_BUILD_LOAD))
        length = cap + HASH_PAD
        slots = order = None
        if n:
            homes = _homes(ids, cap).astype(np.int64)
            order = np.argsort(homes, kind="stable")
            ramp = np.arange(n, dtype=np.int64)
            slots = np.maximum.accumulate(homes[order] - ramp) + ramp
            del homes, ramp
            length = max(cap, int(slots[-1]) + 1) + HASH_PAD
        keys = np.zeros(length, dtype=np.uint64)
        vals = np.full(length, _EMPTY, dtype=np.uint32)
        if slots is not None:
            keys[slots] = ids[order]
            vals[slots] = handles[order]
        self._set_hash(keys, vals, cap, n)

    def _hfind(self, element_id: int) -> int:
        """Slot holding ``element_id``, or ``~slot`` of the empty slot that ended the probe."""
        keys = self._hk
        vals = self._hv
        x = ((element_id ^ (element_id >> 32)) * _MULT) & _M64  # _home(), inlined: hot path
        s = ((x >> 32) * self._hcap) >> 32
        while True:
            if vals[s] == _EMPTY:
                return ~s
            if keys[s] == element_id:
                return s
            s += 1

    def _hclaim(self, element_id: int, slot: int) -> int:
        """Store the absent ``element_id`` at ``slot`` (where its probe ended); return its slot.

        Grows the table first when one more id would pass ``HASH_MAX_LOAD``, or when the probe
        ended on the last slot (which must stay empty), and probes again. The caller then sets
        ``_hv[slot]`` to the handle of the id's block.
        """
        if self._hcount + 1 > self._hcap * HASH_MAX_LOAD:
            self._hash_rebuild(self._hcount + 1)
            slot = ~self._hfind(element_id)
        while slot >= len(self._hkeys) - 1:  # never fill the last slot: probes must end
            self._hash_rebuild(self._hcount + 1)
            slot = ~self._hfind(element_id)
        self._hk[slot] = element_id
        self._hcount += 1
        return slot

    def _hdelete(self, slot: int) -> None:
        """Empty ``slot`` and shift later entries of its run back (no tombstones)."""
        keys = self._hk
        vals = self._hv
        cap = self._hcap
        i = slot
        j = slot + 1
        while True:
            v = vals[j]
            if v == _EMPTY:
                break
            k = keys[j]
            x = ((k ^ (k >> 32)) * _MULT) & _M64
            if ((x >> 32) * cap) >> 32 <= i:
                keys[i] = k
                vals[i] = v
                i = j
            j += 1
        keys[i] = 0
        vals[i] = _EMPTY
        self._hcount -= 1

    def _hslots(self, ids: np.ndarray) -> np.ndarray:
        """Vectorised ``_hfind`` for many ids: the slot of each, or -1 where absent."""
        keys, vals = self._hkeys, self._hvals
        slot = _homes(ids, self._hcap).astype(np.int64)
        out = np.full(len(ids), -1, dtype=np.int64)
        todo = np.arange(len(ids))
        while todo.size:
            s = slot[todo]
            empty = vals[s] == _EMPTY
            hit = ~empty & (keys[s] == ids[todo])
            out[todo[hit]] = s[hit]
            todo = todo[~(empty | hit)]
            slot[todo] += 1
        return out

    def _repoint_ids(self, ids: np.ndarray, handle: int) -> None:
        slots = self._hslots(ids)
        # See test_stress_ranked_small_load for a test that exercises this assert:
        assert (slots >= 0).all(), "moved rows have ids missing from the id index"
        self._hvals[slots] = handle

    def _check_id_table(self, rows: int) -> None:
        """Assert the table's own invariants, and that it holds ``rows`` ids."""
        keys, vals = self._hkeys, self._hvals
        occupied = vals != _EMPTY
        assert not occupied[-1], "last hash slot is not empty"
        assert not keys[~occupied].any(), "an empty hash slot has a non-zero key"
        assert self._hcount == int(occupied.sum()) == rows, (
            f"hash holds {int(occupied.sum())} ids ({self._hcount} counted) for {rows} rows"
        )
        slots = np.flatnonzero(occupied)
        homes = _homes(keys[slots], self._hcap).astype(np.int64)
        assert (homes <= slots).all(), "a hash entry sits before its home slot"
        filled = np.concatenate(([0], np.cumsum(occupied)))
        assert (filled[slots + 1] - filled[homes] == slots - homes + 1).all(), (
            "an empty slot separates a hash entry from its home slot"
        )
