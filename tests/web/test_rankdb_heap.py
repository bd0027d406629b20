"""Tests of web/heap.py and its use by the RankDB routes (issue 17: RSS after bulk loads).

The memory figures themselves are bench/bench_ranked_rss.py's: nothing here is timed or
measured in bytes of RSS. These tests pin the pacing rule, that pinning the mmap threshold
takes effect on glibc, and that bulk writes through the routes trigger the trim.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

import web.compat.rankdb.routes as routes
from engine.engine import Engine
from web.app import create_app
from web.heap import TrimPacer
from web.serving.settings import Settings

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def test_trim_pacer_trims_once_per_every_elements() -> None:
    pacer = TrimPacer(every=100)
    assert [pacer.note(40) for _ in range(6)] == [False, False, True, False, False, True]
    assert pacer.pending == 0
    assert pacer.note(250) is True  # one large write trims once, and the count restarts
    assert pacer.pending == 0


def test_trim_pacer_refuses_a_non_positive_period() -> None:
    with pytest.raises(ValueError, match=r"^every must be >= 1, got 0$"):
        TrimPacer(every=0)


#: Run in a fresh interpreter: a test process that has run hundreds of tests holds free
#: stretches of heap larger than 20 MiB, which glibc reuses whatever the threshold (the
#: threshold only decides how the heap grows), so the check would depend on test order.
_MAPPED_BLOCKS_AFTER_A_BIG_FREE = """
import ctypes, sys
from web.heap import pin_mmap_threshold

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
if not hasattr(libc, "mallinfo2"):
    print("no-mallinfo2")
    sys.exit(0)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "pin":
    assert pin_mmap_threshold() is True
libc.free(libc.malloc(30 << 20))  # unpinned, this raises the threshold to 30 MiB
before = libc.mallinfo2().hblks
block = libc.malloc(20 << 20)
print(libc.mallinfo2().hblks - before)
libc.free(block)
"""


def _in_fresh_interpreter(script: str, *args: str) -> str:
    """What ``script`` prints, run by a new Python process from the repository root."""
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _mapped_blocks_after_a_big_free(mode: str) -> int:
    printed = _in_fresh_interpreter(_MAPPED_BLOCKS_AFTER_A_BIG_FREE, mode)
    if printed.strip() == "no-mallinfo2":
        pytest.skip("glibc older than 2.33 has no mallinfo2")
    return int(printed)


@pytest.mark.skipif(not GLIBC, reason="mallopt and mallinfo2 are glibc's")
def test_pin_mmap_threshold_stops_glibc_raising_it() -> None:
    """Freeing a big mmapped block raises glibc's threshold to its size, so a later 20 MiB
    block is carved from the heap; once pinned, the 20 MiB block still gets its own mapping.
    Both halves run in a fresh interpreter, whose heap has no free stretch that large."""
    assert _mapped_blocks_after_a_big_free("drift") == 0
    assert _mapped_blocks_after_a_big_free("pin") == 1


_FREE_PAGES_IN_THE_MIDDLE = """
import ctypes
from web.heap import release_free_heap

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
blocks = [libc.malloc(4096) for _ in range(4096)]  # 16 MiB of heap, below the threshold
for block in blocks[:-1]:
    libc.free(block)  # the last one stays, so free() cannot give the stretch back at the top

def rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))

before = rss_kib()
released = release_free_heap()
print(released, before - rss_kib())
"""


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's")
def test_release_free_heap_gives_back_free_pages_below_the_top() -> None:
    """16 MiB freed below a live block stays resident until a trim, which gives at least
    12 MiB of it back to the kernel (RSS, read from /proc) and says so."""
    released, kib_given_back = _in_fresh_interpreter(_FREE_PAGES_IN_THE_MIDDLE).split()
    assert released == "True"
    assert int(kib_given_back) >= 12 * 1024


@pytest.fixture
def trims(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Trims the routes ask for, with a pacer of 10 elements; no real trim runs."""
    calls: list[int] = []
    monkeypatch.setattr(routes, "_trim_pacer", TrimPacer(10))
    monkeypatch.setattr(routes, "release_free_heap", lambda: calls.append(1) or True)
    return calls


async def test_rankdb_bulk_writes_trim_the_heap_once_per_period(engine: Engine, trims: list[int]) -> None:
    app = create_app(engine, Settings(data_dir=None))
    async with app.test_app() as test_app:
        client = test_app.test_client()
        populate = [{"id": i, "score": 100 - i} for i in range(1, 8)]
        reply = await client.post("/lists", json={"id": "heap-a", "set": "heap", "populate": populate})
        assert reply.status_code == 200
        assert trims == []  # 7 elements: under the period
        reply = await client.put("/lists/heap-a/elements", json=[{"id": 50, "score": 1}, {"id": 51, "score": 2},
                                                                 {"id": 52, "score": 3}])
        assert (reply.status_code, await reply.get_json()) == (200, {"found": []})
        assert trims == [1]  # 10 elements written in all
        reply = await client.put("/xlist/elements", json={"lists": ["heap-a"], "payload": [
            {"id": i, "score": i} for i in range(60, 72)]})
        assert reply.status_code == 200
        assert trims == [1, 1]
        reply = await client.get("/lists/heap-a")
        assert (await reply.get_json())["elements"] == 22
