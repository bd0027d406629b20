"""Tests for engine/mailbox.py and engine/actors.py, in virtual time where time matters."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing

from engine.actors import DIRECT_READS_PER_YIELD, Completion, Namespace, Router, Share
from engine.errors import InternalError, InvalidInput, NotFound
from engine.mailbox import Mailbox, MailboxStatistics

############################################################################################
# Mailbox


def test_mailbox_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match=r"^capacity must be >= 1$"):
        Mailbox(0)


async def test_mailbox_put_nowait_raises_wouldblock_when_full() -> None:
    box: Mailbox[int] = Mailbox(3)
    for i in range(3):
        box.put_nowait(i)
    with pytest.raises(trio.WouldBlock):
        box.put_nowait(3)
    assert len(box) == 3
    assert await box.take_all() == [0, 1, 2]
    box.put_nowait(3)  # room again
    assert len(box) == 1


async def test_mailbox_take_all_drains_everything_in_one_wakeup() -> None:
    box: Mailbox[int] = Mailbox(100)
    batches: list[list[int]] = []

    async def receiver() -> None:
        while batch := await box.take_all():
            batches.append(batch)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        for i in range(5):  # no checkpoint between puts: one burst
            box.put_nowait(i)
        await trio.testing.wait_all_tasks_blocked()
        for i in range(5, 8):
            box.put_nowait(i)
        await trio.testing.wait_all_tasks_blocked()
        box.close()
    assert batches == [[0, 1, 2, 3, 4], [5, 6, 7]]


async def test_mailbox_take_all_returns_queued_items_at_once() -> None:
    box: Mailbox[str] = Mailbox()
    box.put_nowait("a")
    box.put_nowait("b")
    assert await box.take_all() == ["a", "b"]
    assert len(box) == 0


async def test_mailbox_put_waits_for_room() -> None:
    box: Mailbox[int] = Mailbox(1)
    box.put_nowait(1)
    done = trio.Event()

    async def sender() -> None:
        await box.put(2)
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        await trio.testing.wait_all_tasks_blocked()
        assert not done.is_set()  # parked: the mailbox is full
        assert await box.take_all() == [1]
        await done.wait()
    assert await box.take_all() == [2]


async def test_mailbox_put_returns_at_once_with_room() -> None:
    box: Mailbox[int] = Mailbox(2)
    await box.put(1)
    await box.put(2)
    assert len(box) == 2


async def test_mailbox_close_refuses_new_messages() -> None:
    box: Mailbox[int] = Mailbox()
    box.close()
    assert box.closed
    with pytest.raises(trio.ClosedResourceError, match=r"^mailbox is closed$"):
        box.put_nowait(1)
    with pytest.raises(trio.ClosedResourceError, match=r"^mailbox is closed$"):
        await box.put(1)


async def test_mailbox_close_drains_queued_then_empty() -> None:
    box: Mailbox[int] = Mailbox()
    box.put_nowait(1)
    box.put_nowait(2)
    box.close()
    assert await box.take_all() == [1, 2]
    assert await box.take_all() == []
    assert await box.take_all() == []


async def test_mailbox_close_wakes_a_parked_receiver() -> None:
    box: Mailbox[int] = Mailbox()
    got: list[list[int]] = []

    async def receiver() -> None:
        got.append(await box.take_all())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        box.close()
    assert got == [[]]


async def test_mailbox_close_wakes_a_parked_sender_with_an_error() -> None:
    box: Mailbox[int] = Mailbox(1)
    box.put_nowait(1)
    errors: list[BaseException] = []

    async def sender() -> None:
        try:
            await box.put(2)
        except trio.ClosedResourceError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        await trio.testing.wait_all_tasks_blocked()
        box.close()
    assert len(errors) == 1
    assert await box.take_all() == [1]


async def test_mailbox_take_all_can_be_cancelled(autojump_clock: trio.abc.Clock) -> None:
    box: Mailbox[int] = Mailbox()
    with trio.move_on_after(5) as scope:
        await box.take_all()
    assert scope.cancelled_caught
    box.put_nowait(1)
    assert await box.take_all() == [1]


async def test_mailbox_cancelled_put_does_not_queue(autojump_clock: trio.abc.Clock) -> None:
    box: Mailbox[int] = Mailbox(1)
    box.put_nowait(1)
    with trio.move_on_after(5) as scope:
        await box.put(2)
    assert scope.cancelled_caught
    assert await box.take_all() == [1]
    assert len(box) == 0


async def test_mailbox_statistics() -> None:
    box: Mailbox[int] = Mailbox(10)
    assert box.statistics() == MailboxStatistics(depth=0, peak_depth=0, capacity=10, closed=False)
    for i in range(4):
        box.put_nowait(i)
    await box.take_all()
    box.put_nowait(9)
    box.close()
    assert box.statistics() == MailboxStatistics(depth=1, peak_depth=4, capacity=10, closed=True)


############################################################################################
# Completion


async def test_completion_with_nothing_expected_is_done() -> None:
    assert await Completion(0).wait() == {}


async def test_completion_collects_results_and_keeps_the_first_error() -> None:
    completion = Completion(3)
    completion.done("a", 1)
    first = InvalidInput("first")
    completion.fail("b", first)
    completion.fail("c", NotFound("second"))
    with pytest.raises(InvalidInput) as info:
        await completion.wait()
    assert info.value is first
    assert completion.results == {"a": 1, "b": None, "c": None}


############################################################################################
# Router


def append(item: Any) -> Callable[[list[Any]], int]:
    def op(state: list[Any]) -> int:
        state.append(item)
        return len(state)

    return op


def read(state: list[Any]) -> list[Any]:
    return list(state)


def fail(state: list[Any]) -> None:
    raise InvalidInput("no such thing, got 'x'", "thing")


NAMESPACES = [Namespace("solo", list, partitions=0), Namespace("part", list, partitions=3)]


def make_router(nursery: trio.Nursery, **kwargs: Any) -> Router:
    kwargs.setdefault("idle_seconds", math.inf)
    return Router(nursery, NAMESPACES, **kwargs)


async def send(router: Router, key: tuple[str, Any], op: Callable[[Any], Any]) -> Any:
    completion = Completion(1)
    await router.send(key, op, completion)
    return (await completion.wait())[key[1]]


async def ask(router: Router, key: tuple[str, Any], op: Callable[[Any], Any]) -> Any:
    completion = Completion(1)
    await router.ask(key, op, completion)
    return (await completion.wait())[key[1]]


async def test_router_activates_an_actor_on_first_message() -> None:
    async with trio.open_nursery() as nursery:
        router = make_router(nursery)
        stats = router.statistics()
        assert (stats.entities, stats.live_actors, stats.activations) == (0, 0, 0)
        assert await send(router, ("solo", "a"), append(1)) == 1
        stats = router.statistics()
        assert (stats.entities, stats.live_actors, stats.activations) == (1, 1, 1)
        assert await send(router, ("solo", "a"), append(2)) == 2
        assert router.statistics().activations == 1
        assert router.statistics().messages_applied == 2
        router.retire_all()
    assert router.directory["solo"]["a"] == [1, 2]


async def test_router_dedicated_and_partitioned_placement() -> None:
    async with trio.open_nursery() as nursery:
        router = make_router(nursery)
        for i in range(10):
            await send(router, ("solo", i), append(i))
            await send(router, ("part", i), append(-i))
        stats = router.statistics()
        assert stats.live_actors == 10 + 3  # one per solo entity, three partitions
        assert stats.entities == 20
        for i in range(10):
            assert await ask(router, ("part", i), read) == [-i]
        router.retire_all()


@pytest.mark.parametrize("namespace, capacity", [("solo", 4), ("part", 4), ("part", 4096)])
async def test_router_per_entity_fifo_under_concurrent_senders(
    namespace: str, capacity: int
) -> None:
    rng = random.Random(7)
    senders, per_sender, entities = 6, 60, 4
    async with trio.open_nursery() as nursery:
        router = make_router(nursery, capacity=capacity)

        async def sender(s: int) -> None:
            for i in range(per_sender):
                entity = (s + i) % entities
                await router.send((namespace, entity), append((s, i)), None)
                if rng.random() < 0.3:
                    await trio.sleep(0)

        async with trio.open_nursery() as senders_nursery:
            for s in range(senders):
                senders_nursery.start_soon(sender, s)
        # A read queued behind every write sees all of them.
        states = {e: await ask(router, (namespace, e), read) for e in range(entities)}
        router.retire_all()
    assert sum(len(s) for s in states.values()) == senders * per_sender
    for entity, state in states.items():
        for s in range(senders):
            seq = [i for (who, i) in state if who == s]
            assert seq == sorted(seq)
            assert seq == [i for i in range(per_sender) if (s + i) % entities == entity]


async def test_router_retire_idle_keeps_state(autojump_clock: trio.abc.Clock) -> None:
    async with trio.open_nursery() as nursery:
        router = make_router(nursery, idle_seconds=10)
        nursery.start_soon(router.run_reaper)
        assert await send(router, ("solo", "a"), append(1)) == 1
        await send(router, ("part", "b"), append(1))
        await trio.sleep(30)
        stats = router.statistics()
        assert stats.live_actors == 0
        assert stats.retirements == 2
        assert router.directory["solo"]["a"] == [1]  # state survives its actor
        assert await send(router, ("solo", "a"), append(2)) == 2
        assert router.statistics().activations == 3
        assert router.statistics().live_actors == 1
        nursery.cancel_scope.cancel()
    assert router.directory["solo"]["a"] == [1, 2]


async def test_router_busy_actor_is_not_retired(autojump_clock: trio.abc.Clock) -> None:
    async with trio.open_nursery() as nursery:
        router = make_router(nursery, idle_seconds=10)
        nursery.start_soon(router.run_reaper)
        for i in range(20):
            await send(router, ("solo", "a"), append(i))
            await trio.sleep(3)
        stats = router.statistics()
        assert (stats.activations, stats.retirements, stats.live_actors) == (1, 0, 1)
        nursery.cancel_scope.cancel()


async def test_router_retire_idle_skips_actors_with_queued_messages() -> None:
    async with trio.open_nursery() as nursery:
        router = make_router(nursery)
        completion = Completion(2)
        router.send_nowait(("solo", "a"), append(1), completion)
        router.send_nowait(("solo", "a"), append(2), completion)
        assert router.retire_idle(math.inf) == 0  # two messages queued, the actor has not run
        await completion.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert router.retire_idle(math.inf) == 1
        assert router.retire_idle(math.inf) == 0
        assert router.statistics().live_actors == 0
    assert router.directory["solo"]["a"] == [1, 2]


async def test_router_ask_of_a_never_written_entity_creates_nothing() -> None:
    async with trio.open_nursery() as nursery:
        router = make_router(nursery)
        assert await ask(router, ("solo", "ghost"), read) == []
        assert await ask(router, ("part", "ghost"), read) == []
        stats = router.statistics()
        assert (stats.entities, stats.live_actors, stats.activations) == (0, 0, 0)
        assert router.ids("solo") == []
        router.retire_all()


async def test_router_read_sent_after_a_write_sees_it() -> None:
    async with trio.open_nursery() as nursery:
        router = make_router(nursery)
        router.send_nowait(("solo", "a"), append(1), None)  # not yet applied
        completion = Completion(1)
        router.ask_nowait(("solo", "a"), read, completion)
        assert (await completion.wait())["a"] == [1]
        router.retire_all()


async def test_router_read_of_an_idle_entity_is_answered_at_once_in_the_caller() -> None:
    async with trio.open_nursery() as nursery:
        router = make_router(nursery)
        await send(router, ("solo", "a"), append(1))
        await send(router, ("part", 5), append(5))
        applied = router.statistics().messages_applied
        for key, expected in ((("solo", "a"), [1]), (("part", 5), [5])):
            completion = Completion(1)
            router.ask_nowait(key, read, completion)
            assert completion.results == {key[1]: expected}  # before any await
        stats = router.statistics()
        assert (stats.messages_applied, stats.direct_reads) == (applied, 2)
        # A retired actor is not woken for a read.
        assert router.retire_idle(math.inf) == 2
        assert await ask(router, ("solo", "a"), read) == [1]
        stats = router.statistics()
        assert (stats.live_actors, stats.activations, stats.direct_reads) == (0, 2, 3)
        router.retire_all()


async def test_router_read_waits_while_its_actor_has_messages_queued() -> None:
    async with trio.open_nursery() as nursery:
        router = make_router(nursery)
        same_partition = [i for i in range(1, 50) if hash(i) % 3 == hash(1) % 3]
        other = same_partition[1]
        await send(router, ("part", 1), append("old"))
        router.send_nowait(("part", other), append("x"), None)  # queued, not applied
        router.send_nowait(("part", 1), append("new"), None)
        completion = Completion(1)
        router.ask_nowait(("part", 1), read, completion)
        assert completion.results == {}  # queued behind the writes
        assert (await completion.wait())[1] == ["old", "new"]
        assert router.statistics().direct_reads == 0
        router.retire_all()


async def test_router_without_direct_reads_queues_every_read() -> None:
    async with trio.open_nursery() as nursery:
        router = make_router(nursery, read_directly=False)
        await send(router, ("solo", "a"), append(1))
        completion = Completion(1)
        router.ask_nowait(("solo", "a"), read, completion)
        assert completion.results == {}
        assert (await completion.wait())["a"] == [1]
        stats = router.statistics()
        assert (stats.messages_applied, stats.direct_reads) == (2, 0)
        router.retire_all()


async def test_router_read_sent_from_inside_a_turn_is_queued() -> None:
    inner = Completion(1)
    answered_at_once: list[bool] = []

    async with trio.open_nursery() as nursery:
        router = make_router(nursery)
        await send(router, ("solo", "b"), append("b"))

        def ask_b_then_append(state: list[Any]) -> None:
            router.ask_nowait(("solo", "b"), read, inner)
            answered_at_once.append(bool(inner.results))
            state.append("a")

        await send(router, ("solo", "a"), ask_b_then_append)
        assert (await inner.wait())["b"] == ["b"]
        assert answered_at_once == [False]
        router.retire_all()


async def test_router_bug_in_a_direct_read_fails_that_read_only(caplog: pytest.LogCaptureFixture) -> None:
    def crash(state: list[Any]) -> None:
        raise ZeroDivisionError("engine bug")

    async with trio.open_nursery() as nursery:
        router = make_router(nursery)
        await send(router, ("solo", "a"), append(1))
        with pytest.raises(InternalError, match=r"^internal error on solo 'a'$"):
            await ask(router, ("solo", "a"), crash)
        assert "read of ('solo', 'a') failed" in caplog.text
        assert router.statistics().failures == 1
        assert await ask(router, ("solo", "a"), read) == [1]
        router.retire_all()


async def test_router_direct_reads_yield_to_other_tasks_now_and_then() -> None:
    """A read over many idle entities has no scheduling point of its own: ``ask`` yields after
    every DIRECT_READS_PER_YIELD of them, so another task runs long before the loop ends."""
    ran_at: list[int] = []
    done = 0

    async def other_task() -> None:
        ran_at.append(done)

    async with trio.open_nursery() as nursery:
        router = make_router(nursery)
        for i in range(300):
            router.send_nowait(("part", i), append(i), None)
        await ask(router, ("part", 0), read)  # every write applied: the actors are idle
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(other_task)
        completion = Completion(300)
        for i in range(300):
            await router.ask(("part", i), read, completion)
            done += 1
        await completion.wait()
        assert router.statistics().direct_reads >= 300
        router.retire_all()
    # trio runs a batch of ready tasks in random order: the reader may go on first, to its
    # next yield, so the other task runs after at most two rounds of reads.
    assert ran_at and ran_at[0] < 2 * DIRECT_READS_PER_YIELD


async def test_router_sender_blocked_on_a_mailbox_retired_meanwhile_sends_again() -> None:
    """The actor drains a full mailbox (waking the blocked sender) and is retired before the
    sender runs again: the sender activates it anew instead of failing."""
    async with trio.open_nursery() as nursery:
        router = make_router(nursery, capacity=1)

        def drain_then_retire(state: list[Any]) -> None:
            state.append("first")
            assert router.retire_idle(math.inf) == 1  # the mailbox is empty during the turn

        router.send_nowait(("solo", "a"), drain_then_retire, None)
        with pytest.raises(trio.WouldBlock):
            router.send_nowait(("solo", "a"), append("second"), None)
        await send(router, ("solo", "a"), append("second"))  # blocks, then sends anew
        assert router.directory["solo"]["a"] == ["first", "second"]
        assert router.statistics().activations == 2
        router.retire_all()


async def test_router_turn_flag_is_cleared_when_a_turn_dies() -> None:
    class Stop(BaseException):
        pass

    def stop(state: list[Any]) -> None:
        raise Stop

    router: Router | None = None
    with pytest.raises(BaseException) as info:  # noqa: PT011 -- trio may wrap it in a group
        async with trio.open_nursery() as nursery:
            router = make_router(nursery)
            router.send_nowait(("solo", "a"), stop, None)
            await trio.sleep_forever()
    assert info.group_contains(Stop) if isinstance(info.value, BaseExceptionGroup) else info.type is Stop
    assert router is not None and router._in_turn is False


async def test_router_domain_error_reaches_caller_and_actor_survives() -> None:
    async with trio.open_nursery() as nursery:
        router = make_router(nursery)
        await send(router, ("solo", "a"), append(1))
        with pytest.raises(InvalidInput, match=r"^no such thing, got 'x'$") as info:
            await send(router, ("solo", "a"), fail)
        assert info.value.field == "thing"
        assert await send(router, ("solo", "a"), append(2)) == 2
        assert router.statistics().activations == 1
        # The same through ask, for a written and a never-written entity.
        with pytest.raises(InvalidInput):
            await ask(router, ("solo", "a"), fail)
        with pytest.raises(InvalidInput):
            await ask(router, ("solo", "nobody"), fail)
        assert await ask(router, ("solo", "a"), read) == [1, 2]
        router.retire_all()


async def test_router_domain_error_in_a_shared_completion() -> None:
    async with trio.open_nursery() as nursery:
        router = make_router(nursery)
        completion = Completion(3)
        router.send_nowait(("part", 1), append(1), completion)
        router.send_nowait(("part", 2), fail, completion)
        router.send_nowait(("part", 3), append(3), completion)
        with pytest.raises(InvalidInput):
            await completion.wait()
        # The other entities' shares were applied.
        assert completion.results == {1: 1, 2: None, 3: 1}
        router.retire_all()


async def test_router_bug_in_an_operation_fails_that_message_only() -> None:
    def crash(state: list[Any]) -> None:
        raise ZeroDivisionError("engine bug")

    async with trio.open_nursery() as nursery:
        router = make_router(nursery)
        with pytest.raises(InternalError, match=r"^internal error on solo 'a'$"):
            await send(router, ("solo", "a"), crash)
        # The actor survived and keeps serving the entity.
        await send(router, ("solo", "a"), append(1))
        assert await ask(router, ("solo", "a"), read) == [1]
        assert router.statistics().failures == 1
        nursery.cancel_scope.cancel()


async def test_router_backpressure_send_waits_until_the_actor_drains() -> None:
    async with trio.open_nursery() as nursery:
        router = make_router(nursery, capacity=2)
        router.send_nowait(("solo", "a"), append(1), None)
        router.send_nowait(("solo", "a"), append(2), None)
        with pytest.raises(trio.WouldBlock):
            router.send_nowait(("solo", "a"), append(3), None)
        assert router.directory["solo"]["a"] == []  # nothing applied yet
        await router.send(("solo", "a"), append(3), None)
        # send could only return after the actor took the first two messages.
        assert router.directory["solo"]["a"][:2] == [1, 2]
        assert router.statistics().peak_mailbox_depth == 2
        assert await ask(router, ("solo", "a"), read) == [1, 2, 3]
        router.retire_all()


async def test_router_backpressure_ask_waits_too() -> None:
    async with trio.open_nursery() as nursery:
        router = make_router(nursery, capacity=1)
        router.send_nowait(("solo", "a"), append(1), None)
        completion = Completion(1)
        with pytest.raises(trio.WouldBlock):
            router.ask_nowait(("solo", "a"), read, completion)
        await router.ask(("solo", "a"), read, completion)
        assert (await completion.wait())["a"] == [1]
        router.retire_all()


async def test_router_backpressure_sender_blocks_while_mailbox_full() -> None:
    # With many senders and a tiny mailbox, no message is lost and depth never exceeds it.
    async with trio.open_nursery() as nursery:
        router = make_router(nursery, capacity=2)
        async with trio.open_nursery() as senders:
            for s in range(5):
                senders.start_soon(lambda s=s: _send_many(router, s, 40))
        assert router.statistics().peak_mailbox_depth <= 2
        state = await ask(router, ("solo", "x"), read)
        router.retire_all()
    assert sorted(state) == sorted((s, i) for s in range(5) for i in range(40))


async def _send_many(router: Router, s: int, n: int) -> None:
    for i in range(n):
        await router.send(("solo", "x"), append((s, i)), None)


async def test_router_retire_all_lets_the_nursery_finish() -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            router = make_router(nursery)
            for i in range(5):
                router.send_nowait(("solo", i), append(i), None)
            router.retire_all()  # actors apply what is queued, then exit
    assert all(router.directory["solo"][i] == [i] for i in range(5))
    assert router.statistics().live_actors == 0


async def test_router_install_remove_and_iter_states() -> None:
    async with trio.open_nursery() as nursery:
        router = make_router(nursery)
        router.install(("solo", "a"), [1])
        router.install(("part", 7), [2])
        assert sorted(router.iter_states(), key=repr) == [(("part", 7), [2]), (("solo", "a"), [1])]
        assert await send(router, ("solo", "a"), append(3)) == 2
        router.remove(("part", 7))
        router.remove(("part", 8))  # absent: no error
        assert router.ids("part") == []
        assert await ask(router, ("part", 7), read) == []
        router.retire_all()


async def test_router_unknown_namespace_is_a_caller_bug() -> None:
    async with trio.open_nursery() as nursery:
        router = make_router(nursery)
        with pytest.raises(KeyError):
            router.send_nowait(("nope", 1), append(1), None)
        router.retire_all()


############################################################################################
# Shares: one message per partition for many entities


def extend(ident: Any, state: list[Any], item: list[Any]) -> None:
    if item == ["boom"]:
        raise ZeroDivisionError("engine bug")
    if item == ["refuse"]:
        raise InvalidInput("no such thing, got 'x'", "thing")
    state.extend(item)


async def test_router_share_is_one_message_applied_per_entity_in_order() -> None:
    async with trio.open_nursery() as nursery:
        router = make_router(nursery)
        await send(router, ("part", 3), append("before"))  # partition 0, as the share below
        completion = Completion(1)
        share = Share("part", 0, {3: [1, 2], 6: [3], 9: [4, 5]})
        router.send_nowait(share, extend, completion)
        # The states exist from the send on, so a read sent now queues behind the share.
        assert set(router.directory["part"]) == {3, 6, 9}
        assert await ask(router, ("part", 9), read) == [4, 5]
        assert await completion.wait() == {share: None}
        assert router.directory["part"] == {3: ["before", 1, 2], 6: [3], 9: [4, 5]}
        assert router.statistics().live_actors == 1  # one partition actor took all of it
        router.retire_all()


async def test_router_share_failures_stay_with_their_entity() -> None:
    async with trio.open_nursery() as nursery:
        router = make_router(nursery)
        completion = Completion(1)
        items = {0: [1], 3: ["boom"], 6: ["refuse"], 9: [2]}
        router.send_nowait(Share("part", 0, items), extend, completion)
        # The first error is the caller's; the entities after the failing ones were applied.
        with pytest.raises(InternalError, match=r"^internal error on part 3$"):
            await completion.wait()
        assert router.directory["part"] == {0: [1], 3: [], 6: [], 9: [2]}
        assert router.statistics().failures == 1
        router.retire_all()


def extend_once(ident: Any, state: list[Any], item: list[Any]) -> None:
    """``extend``, idempotent per entity (as ``applied_seq`` makes ingest): a state that
    holds the item's first value already took it."""
    if not (state and item and state[-len(item):] == item):
        extend(ident, state, item)


def whole_share_failing_at(bad: Any, calls: list[int]) -> Any:
    """A share operation whose ``whole`` applies entities in order and raises at ``bad``."""

    def operation(ident: Any, state: list[Any], item: list[Any]) -> None:
        extend_once(ident, state, item)

    def whole(states: dict[Any, Any], items: dict[Any, Any]) -> None:
        calls.append(len(items))
        for ident, item in items.items():
            if ident == bad:
                raise ZeroDivisionError("bug in the whole-share path")
            extend_once(ident, states[ident], item)

    operation.whole = whole  # type: ignore[attr-defined]
    return operation


async def test_router_share_applies_a_whole_share_operation_in_one_call() -> None:
    async with trio.open_nursery() as nursery:
        router = make_router(nursery)
        calls: list[int] = []
        completion = Completion(1)
        share = Share("part", 0, {0: [1], 3: [2], 6: [3]})
        router.send_nowait(share, whole_share_failing_at(None, calls), completion)
        assert await completion.wait() == {share: None}
        assert calls == [3]
        assert router.directory["part"] == {0: [1], 3: [2], 6: [3]}
        router.retire_all()


async def test_router_share_redoes_a_failed_whole_share_entity_by_entity() -> None:
    # The whole-share call fails half way: the entities it applied are not applied twice, the
    # rest are, and the failure is confined to its entity (the per-entity path fails too).
    async with trio.open_nursery() as nursery:
        router = make_router(nursery)
        calls: list[int] = []
        completion = Completion(1)
        items = {0: [1], 3: ["boom"], 6: [2]}
        router.send_nowait(Share("part", 0, items), whole_share_failing_at(3, calls), completion)
        with pytest.raises(InternalError, match=r"^internal error on part 3$"):
            await completion.wait()
        assert calls == [3]
        assert router.directory["part"] == {0: [1], 3: [], 6: [2]}
        assert router.statistics().failures == 2  # the whole call's, then entity 3's
        router.retire_all()


async def test_router_share_fails_with_the_whole_calls_error_when_the_redo_meets_none() -> None:
    # The whole call applied entity 0, marked it, then failed: the redo skips 0, applies the
    # rest, and the share still fails (the bug is not lost).
    async with trio.open_nursery() as nursery:
        router = make_router(nursery)

        def operation(ident: Any, state: list[Any], item: list[Any]) -> None:
            extend_once(ident, state, item)

        def whole(states: dict[Any, Any], items: dict[Any, Any]) -> None:
            extend_once(0, states[0], items[0])
            raise ZeroDivisionError("bug after applying entity 0")

        operation.whole = whole  # type: ignore[attr-defined]
        completion = Completion(1)
        router.send_nowait(Share("part", 0, {0: [1], 3: [2]}), operation, completion)
        with pytest.raises(InternalError, match=r"^internal error on a share of part$"):
            await completion.wait()
        assert router.directory["part"] == {0: [1], 3: [2]}
        assert router.statistics().failures == 1
        router.retire_all()


async def test_router_share_waits_on_a_full_mailbox_and_keeps_order() -> None:
    async with trio.open_nursery() as nursery:
        router = make_router(nursery, capacity=2)
        for i in range(2):
            router.send_nowait(Share("part", 1, {1: [i]}), extend, None)
        with pytest.raises(trio.WouldBlock):
            router.send_nowait(Share("part", 1, {1: [2]}), extend, None)
        await router.send(Share("part", 1, {1: [3], 4: [3]}), extend, None)
        assert await ask(router, ("part", 4), read) == [3]
        assert router.directory["part"][1] == [0, 1, 3]
        router.retire_all()


async def test_router_refuses_shares_for_dedicated_namespaces() -> None:
    async with trio.open_nursery() as nursery:
        router = make_router(nursery)
        assert router.partitions("solo") == 0 and router.partitions("part") == 3
        with pytest.raises(ValueError, match=r"^namespace 'solo' does not take shares$"):
            router.send_nowait(Share("solo", 0, {"a": [1]}), extend, None)
        router.retire_all()


@pytest.mark.parametrize("key", [("solo", "a"), ("part", "b")])
async def test_idle_actor_lets_go_of_its_last_message(key: tuple[str, Any]) -> None:
    # A bulk load's command holds every element it carried: an idle actor that kept its last
    # message alive held ~400 B per element until the next write (bench/bench_ranked_rss.py).
    import gc
    import weakref

    class Payload:
        pass

    async with trio.open_nursery() as nursery:
        router = make_router(nursery)
        payload = Payload()
        alive = weakref.ref(payload)

        def op(state: list[Any], payload: Any = payload) -> None:
            state.append(len(vars(payload)))

        await send(router, key, op)
        del op, payload
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        assert alive() is None, "the idle actor still holds its last message"
        assert router.statistics().live_actors == 1
        nursery.cancel_scope.cancel()
