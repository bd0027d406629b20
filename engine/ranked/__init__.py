"""Ranked lists: tens of millions of (id, score) elements in RankDB order, in packed numpy blocks.

Theory of operation
===================

A ranked list answers "what rank is element X", "who is at rank R", rank ranges, percentiles and
neighbours, while taking single and bulk updates: the state behind one RankDB list
(``shared/compat/rankdb.md``). ``RankedList`` is pure and synchronous; an actor owns one
instance and is its only caller. The package is split along the parts of the structure, each
module with its own theory of operation and invariants, in strict layers (a module imports only
those above it in this list):

* ``rows.py``       -- the packed row: an element as a 24-byte big-endian key whose byte order
                       is rank order, and building sorted row arrays in bulk.
* ``elements.py``   -- values in and out (``ElementIn``, ``RankedElement``, ...) and the
                       validation of caller input.
* ``blocks.py``     -- sorted blocks of rows: search, insert and remove inside one block,
                       split and merge (the sortedcontainers "list of lists").
* ``id_index.py``   -- id -> block handle, an open-addressing hash table in two numpy arrays.
* ``fenwick.py``    -- rank bookkeeping: a Fenwick tree over the block sizes.
* ``ranked_list.py``-- ``RankedList``, the operations that combine them, and its ``_check()``.

Why this and not a tree, a skip list or a sorted array?
-------------------------------------------------------
A balanced tree or skip list costs a Python object per element: 100+ bytes, and tens of millions
of objects for the garbage collector to walk. One big sorted array makes inserts ``O(n)``. Blocks of
about a thousand packed rows keep inserts to a small memmove and keep memory to the payload-free
row itself. This is RankDB's own "segments" design, without its storage round trips.

Memory without payloads, 10M elements at ``DEFAULT_LOAD``: 24 B per row, plus up to 6% growth
slack in blocks that have been written to since the bulk load, plus 12 B / hash load (0.65 after a
build, at most 0.8: 15 to 18.5 B), plus about 1 KB of Python objects per block (0.9 B per
element). ``bench/bench_ranked.py`` measured 43.7 B per element retained after a 10M bulk load
(tracemalloc; ``statistics().bytes_estimate`` says 43.1), where Redis 7.0 grew ``used_memory`` by
126 to 138 B per element for the same sorted set.

Imports
-------
``from engine.ranked import ...`` is the way in; every name below keeps the import path it had
when this package was one module (``engine/ranked.py``), the two private helpers the tests use
included. Names with a leading underscore are private to the package.
"""

from engine.ranked.blocks import DEFAULT_LOAD as DEFAULT_LOAD
from engine.ranked.blocks import GROW_MIN_ROWS as GROW_MIN_ROWS
from engine.ranked.blocks import GROW_SHIFT as GROW_SHIFT
from engine.ranked.blocks import MIN_LOAD as MIN_LOAD
from engine.ranked.elements import ElementIn as ElementIn
from engine.ranked.elements import Payload as Payload
from engine.ranked.elements import RankedChunk as RankedChunk
from engine.ranked.elements import RankedElement as RankedElement
from engine.ranked.elements import RankedListCorrupt as RankedListCorrupt
from engine.ranked.elements import RankedListStatistics as RankedListStatistics
from engine.ranked.id_index import HASH_BUILD_LOAD as HASH_BUILD_LOAD
from engine.ranked.id_index import HASH_MAX_LOAD as HASH_MAX_LOAD
from engine.ranked.id_index import HASH_MIN_CAPACITY as HASH_MIN_CAPACITY
from engine.ranked.id_index import HASH_MIN_LOAD as HASH_MIN_LOAD
from engine.ranked.id_index import HASH_PAD as HASH_PAD
from engine.ranked.id_index import _home as _home
from engine.ranked.id_index import _homes as _homes
from engine.ranked.ranked_list import BULK_REBUILD_DIVISOR as BULK_REBUILD_DIVISOR
from engine.ranked.ranked_list import BULK_REBUILD_MIN as BULK_REBUILD_MIN
from engine.ranked.ranked_list import DEFAULT_CHUNK_SIZE as DEFAULT_CHUNK_SIZE
from engine.ranked.ranked_list import RECORDS_VERSION as RECORDS_VERSION
from engine.ranked.ranked_list import RankedList as RankedList

__all__ = [
    "BULK_REBUILD_DIVISOR",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_LOAD",
    "ElementIn",
    "HASH_BUILD_LOAD",
    "HASH_MAX_LOAD",
    "RECORDS_VERSION",
    "RankedChunk",
    "RankedElement",
    "RankedList",
    "RankedListCorrupt",
    "RankedListStatistics",
]
