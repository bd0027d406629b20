"""The C heap under the Python process: keep big temporaries out of it, give free pages back.

Theory of operation
-------------------
What a user sees of our memory is the process's RSS, not the size of our structures. On glibc,
RSS outgrows the structures in two ways after a bulk load (measured with
``bench/bench_ranked_rss.py --diagnose``, 1M ranked-list elements over HTTP in 10,000-element
PUTs: structures 43 B/element, RSS growth 89 B/element):

* **The mmap threshold drifts up.** glibc serves blocks of ``M_MMAP_THRESHOLD`` (128 KiB) or
  more with their own ``mmap``, returned to the kernel by ``free``. But each time such a block
  is freed, glibc raises the threshold to its size (up to 32 MiB), so afterwards the request
  bodies, id-index tables and rebuild temporaries of a bulk load are carved from the main heap,
  and when they are freed their pages stay in the process between live blocks: 38 MB of free
  heap at 1M elements. Pinning the threshold (:func:`pin_mmap_threshold`, glibc's
  ``mallopt(M_MMAP_THRESHOLD)``, which also turns the drift off) keeps them in their own
  mappings: 89 -> 60 B/element.
* **Free pages inside the heap stay resident.** ``free`` only gives back the top of the heap.
  ``malloc_trim(0)`` also returns whole free pages in the middle (``MADV_DONTNEED``), which is
  what jemalloc's purge and Redis's ``MEMORY PURGE`` do: :func:`release_free_heap`, after a
  request that wrote many elements: 60 -> 53 B/element.

Both are no-ops where the C library lacks them (musl, macOS, Windows): they are tuning, not
correctness. ``malloc_trim`` walks every free chunk of the heap with its arena locked and
drops the pages of each: its cost grows with the free heap, not the used one. Measured on the
2-core dev machine (not in the server): 60 to 210 ms for a 400 MB heap with 200 MB free in
5,000 holes of 40 KB; with the threshold pinned, the server's heap after a 1M bulk load holds
about 8 MB free, so its trims are far cheaper (not benchmarked on their own yet). Callers trim
only after large writes, from a worker thread (``TRIM_AFTER_ELEMENTS`` and ``_wrote_elements``
in ``web/compat/rankdb/routes.py``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
from typing import Any

#: glibc's ``M_MMAP_THRESHOLD`` parameter number (``malloc.h``).
M_MMAP_THRESHOLD = -3
#: Blocks this large or larger get their own mapping. glibc's own initial value (128 KiB);
#: pinning it only stops the drift described in the module docstring.
MMAP_THRESHOLD_BYTES = 128 * 1024


def _glibc() -> Any | None:
    """The C library when it is glibc and has ``mallopt`` and ``malloc_trim``; else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not (hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim")):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    libc.malloc_trim.restype = ctypes.c_int
    return libc


_LIBC = _glibc()


def pin_mmap_threshold(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes (and so turn its drift off).

    Call it once when the server starts; later calls only set the value again. Returns whether
    it took effect (False off glibc).
    """
    if _LIBC is None:
        return False
    return bool(_LIBC.mallopt(M_MMAP_THRESHOLD, threshold))


def release_free_heap() -> bool:
    """Give the heap's free pages back to the kernel (glibc ``malloc_trim(0)``).

    For after a large request, not for every one: it walks every free chunk of the heap.
    Returns whether any memory was released (False off glibc).

    Runtime complexity: ``O(free chunks)`` (see the module docstring for figures).
    """
    if _LIBC is None:
        return False
    return bool(_LIBC.malloc_trim(0))


class TrimPacer:
    """Decides when writes have freed enough to be worth a :func:`release_free_heap`.

    Counts the elements written since the last trim and says "trim" once they reach
    ``every``: a bulk load in requests of any size then trims about once per ``every``
    elements, and a trim stays a small share of the writes it follows (about 1 s per 50,000
    elements over HTTP). The heap is the process's, so one pacer serves a process.

    >>> pacer = TrimPacer(every=100)
    >>> pacer.note(60), pacer.note(60), pacer.note(60)
    (False, True, False)
    """

    __slots__ = ("every", "pending")

    def __init__(self, every: int) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every!r}")
        self.every = every
        self.pending = 0

    def note(self, elements: int) -> bool:
        """Count ``elements`` written; True (and the count restarts) when a trim is due."""
        self.pending += elements
        if self.pending < self.every:
            return False
        self.pending = 0
        return True
