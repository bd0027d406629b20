"""cluster/bridge.py: asyncio coroutines called from trio, with results, errors, cancellation
and closing carried across the thread boundary."""

from __future__ import annotations

import asyncio
import threading

import pytest
import trio

from cluster.bridge import AsyncioBridge


async def test_a_call_runs_on_the_loop_thread_and_returns_its_result(bridge):
    async def where(x: int) -> tuple[str, int, bool]:
        await asyncio.sleep(0.01)
        return threading.current_thread().name, x * 2, asyncio.get_running_loop() is bridge.loop

    name, doubled, on_loop = await bridge.call(where, 21)
    assert (name, doubled, on_loop) == ("pointspace-asyncio", 42, True)
    assert threading.current_thread().name != name


async def test_an_exception_crosses_as_itself(bridge):
    async def fail() -> None:
        raise KeyError("missing")

    with pytest.raises(KeyError, match="missing"):
        await bridge.call(fail)


async def test_many_concurrent_calls_all_complete(bridge):
    results: list[int] = []

    async def echo(i: int) -> int:
        await asyncio.sleep(0.001 * (i % 5))
        return i

    async def one(i: int) -> None:
        results.append(await bridge.call(echo, i))

    async with trio.open_nursery() as nursery:
        for i in range(500):
            nursery.start_soon(one, i)
    assert sorted(results) == list(range(500))


async def test_cancelling_the_trio_side_cancels_the_asyncio_task_before_returning(bridge):
    started = threading.Event()
    state: list[str] = []

    async def slow() -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # cleanup that must finish before the caller goes on
            state.append("cleaned up")
            raise

    with trio.move_on_after(5) as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(bridge.call, slow)
            await trio.to_thread.run_sync(started.wait)
            nursery.cancel_scope.cancel()
    assert not scope.cancelled_caught  # the call ended promptly, not at the 5 s bound
    assert state == ["cleaned up"]


async def test_a_deadline_during_a_call_cancels_it_and_the_bridge_goes_on(bridge):
    """A deadline that expires during a call raises Cancelled out of it (caught by the
    scope), and the bridge still works afterwards."""

    async def sleep(s: float) -> str:
        await asyncio.sleep(s)
        return "done"

    with trio.move_on_after(0.05) as scope:
        await bridge.call(sleep, 10)
    assert scope.cancelled_caught
    assert await bridge.call(sleep, 0) == "done"


async def test_closing_cancels_calls_in_flight_and_refuses_new_ones():
    outcome: list[BaseException] = []
    started = threading.Event()

    async def forever() -> None:
        started.set()
        await asyncio.sleep(3600)

    async with AsyncioBridge.open() as bridge:

        async def caller() -> None:
            try:
                await bridge.call(forever)
            except trio.BrokenResourceError as exc:
                outcome.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller)
            await trio.to_thread.run_sync(started.wait)
            await bridge._close()  # what leaving ``open`` does, while a call is in flight
    assert len(outcome) == 1 and "closed during the call" in str(outcome[0])
    with pytest.raises(trio.ClosedResourceError, match="^the asyncio bridge is closed$"):
        await bridge.call(asyncio.sleep, 0)
    assert bridge.loop.is_closed()


async def test_leaving_open_joins_the_thread():
    async with AsyncioBridge.open(name="bridge-under-test") as bridge:
        await bridge.call(asyncio.sleep, 0)
    assert not any(t.name == "bridge-under-test" for t in threading.enumerate())


async def test_a_task_that_swallows_its_cancellation_releases_the_caller_after_the_grace(bridge, caplog):
    bridge.cancel_grace_s = 0.2
    started = threading.Event()

    async def stubborn() -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(30)  # as nats-py's close does: catches it and goes on

    with trio.fail_after(5):
        with trio.move_on_after(0.05):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(bridge.call, stubborn)
                await trio.to_thread.run_sync(started.wait)
                await trio.sleep(1)
    assert any("did not end within 0.2 s of its cancellation" in r.getMessage() for r in caplog.records)
