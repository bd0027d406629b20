"""Tests of web/heap.py and its use by the RankDB routes (issue 17: RSS after bulk loads).

The memory figures themselves are bench/bench_ranked_rss.py's: nothing here is timed or
measured in bytes of RSS. These tests pin the pacing rule, that pinning the mmap threshold
takes effect on glibc, and that bulk writes through the routes trigger the trim.
"""

from __future__ import annotations

import ctypes
import platform

import pytest

import web.compat.rankdb.routes as routes
from engine.engine import Engine
from web.app import create_app
from web.heap import TrimPacer, pin_mmap_threshold, release_free_heap
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


@pytest.mark.skipif(not GLIBC, reason="mallopt and mallinfo2 are glibc's")
def test_pin_mmap_threshold_stops_glibc_raising_it() -> None:
    """Freeing a big mmapped block raises glibc's threshold to its size; once pinned, a
    20 MiB block (larger than any free stretch of the test process's heap, so it cannot be
    carved from one) still gets its own mapping after a 30 MiB one was freed."""
    libc = ctypes.CDLL("libc.so.6")
    if not hasattr(libc, "mallinfo2"):
        pytest.skip("glibc older than 2.33 has no mallinfo2")

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
            "fordblks", "keepcost")]

    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    assert pin_mmap_threshold() is True
    libc.free(libc.malloc(30 << 20))  # unpinned, this would raise the threshold to 30 MiB
    mapped_before = libc.mallinfo2().hblks
    block = libc.malloc(20 << 20)
    try:
        assert libc.mallinfo2().hblks == mapped_before + 1
    finally:
        libc.free(block)
    assert isinstance(release_free_heap(), bool)


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
