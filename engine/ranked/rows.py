"""The packed row: one ranked-list element as a 24-byte big-endian key, and building rows in bulk.

Theory of operation
===================

Each element is stored as one 24-byte row, three big-endian uint64 words::

    k1 = 2**64 - 1 - score                              higher score       -> smaller k1
    k2 = (2**32 - 1 - tie_breaker) << 32 | updated_at   higher tie, earlier -> smaller k2
    k3 = id                                             lower id           -> smaller k3

which encodes RankDB's order ("a above b": higher ``score``, then higher ``tie_breaker``, then
*earlier* ``updated_at``, then *lower* ``id``) as plain ascending ``(k1, k2, k3)``.

Big-endian words make byte order (memcmp) equal to the numeric order of ``(k1, k2, k3)``, so rank
order is plain ascending byte order. numpy searches a block viewed as a ``'V24'`` array
(``searchsorted`` compares void items with memcmp), and Python bisects a list of ``bytes``. The row
*is* the element: score, tie-breaker, time and id all decode back out of it, so nothing is stored
twice, and no Python object exists per element.

Invariants of a row array (what ``_rows_from`` builds and every other module keeps):

* dtype ``'>u8'``, shape ``(n, 3)``, columns ``k1, k2, id``;
* rows strictly ascending (``_ascending`` is true for every adjacent pair), hence ids unique.

This module is the bottom layer of the package: it imports nothing from it. Names with a
leading underscore are private to ``engine.ranked``; its modules import them from here.

Example
-------
>>> key = _pack(70, 1, 1_700_000_000, 2)
>>> len(key), _KEY.unpack(key) == (_M64 - 70, ((_M32 - 1) << 32) | 1_700_000_000, 2)
(24, True)
>>> _pack(70, 0, 0, 2) < _pack(50, 0, 0, 1)      # higher score first
True
>>> _pack(50, 0, 10, 2) < _pack(50, 0, 20, 1)    # same score and tie: earlier update first
True
"""

from __future__ import annotations

import struct

import numpy as np

_M64 = (1 << 64) - 1
_M32 = (1 << 32) - 1
_KEY = struct.Struct(">QQQ")
_ROW = np.dtype(">u8")
_VKEY = np.dtype("V24")
_SHIFT32 = np.uint64(32)
_NP_M32 = np.uint64(_M32)


def _pack(score: int, tie: int, updated: int, element_id: int) -> bytes:
    return _KEY.pack(_M64 - score, ((_M32 - tie) << 32) | updated, element_id)


def _swapped(value: int) -> int:
    """``value`` as the signed native int64 that its big-endian bytes read as."""
    return int.from_bytes(value.to_bytes(8, "big"), "little", signed=True)


def _ascending(k1: np.ndarray, k2: np.ndarray, k3: np.ndarray) -> np.ndarray:
    """For each adjacent pair of rows, whether ``(k1, k2, k3)[i] < (k1, k2, k3)[i + 1]``."""
    a1, b1 = k1[:-1], k1[1:]
    a2, b2 = k2[:-1], k2[1:]
    lower = (a2 < b2) | ((a2 == b2) & (k3[:-1] < k3[1:]))
    return (a1 < b1) | ((a1 == b1) & lower)


def _rank_order(k1: np.ndarray, k2: np.ndarray, ids: np.ndarray, by_id: np.ndarray) -> np.ndarray:
    """Indices that sort rows by ``(k1, k2, id)``, given ``by_id``: indices of unique ids, id-sorted.

    A chain of stable argsorts, least significant key first, like ``np.lexsort`` but about 30%
    faster here (quicksort on the unique ids, and the ``k2`` pass is skipped when all ``k2`` are
    equal, as they are in a bulk load without tie-breakers).
    """
    order = by_id
    sub2 = k2[order]
    if sub2.size and sub2.min() != sub2.max():
        order = order[np.argsort(sub2, kind="stable")]
    del sub2
    return order[np.argsort(k1[order], kind="stable")]


def _rows_from(k1: np.ndarray, k2: np.ndarray, ids: np.ndarray, order: np.ndarray) -> np.ndarray:
    rows = np.empty((len(order), 3), dtype=_ROW)
    rows[:, 0] = k1[order]
    rows[:, 1] = k2[order]
    rows[:, 2] = ids[order]
    return rows


def _k2_of(ties: np.ndarray, updated: np.ndarray | int) -> np.ndarray:
    return ((_NP_M32 - ties) << _SHIFT32) | np.asarray(updated, dtype=np.uint64)


def _last_of_each_id(ids: np.ndarray) -> np.ndarray:
    """Indices of unique ids in id order, keeping the *last* occurrence of a duplicated id."""
    order = np.argsort(ids)  # quicksort: fastest, fine when ids are unique
    sorted_ids = ids[order]
    dup = sorted_ids[1:] == sorted_ids[:-1]
    if not dup.any():
        return order
    order = np.argsort(ids, kind="stable")  # equal ids keep input order: the last one is last
    dup = ids[order][1:] == ids[order][:-1]
    keep = np.ones(len(order), dtype=bool)
    keep[:-1] = ~dup
    return order[keep]
