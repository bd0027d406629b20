"""cluster/partition_journal.py: an engine whose journal is a partition's JetStream log.

A writer engine takes batches; a fresh engine replays the partition's log and must answer
every query the same. A deposed writer is fenced and fails its waiters; records are numbered
densely whoever wrote them; concurrent writes share messages (group commit)."""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from cluster.partition_journal import (
    PartitionJournal,
    PartitionUnavailable,
    catch_up,
    decode_message,
    encode_message,
)
from cluster.partition_log import JetStream, LogLayout, PartitionLog
from engine.engine import Engine
from engine.errors import PayloadTooLarge

_prefixes = itertools.count()
PARTITION = 3
T0 = 1_700_000_000


@pytest.fixture
async def plog(jetstream: JetStream) -> PartitionLog:
    log = PartitionLog(jetstream, LogLayout(partitions=4, streams=2, prefix=f"j{next(_prefixes)}"))
    await log.ensure_streams()
    return log


@asynccontextmanager
async def writer(plog: PartitionLog, name: str, *, catch: bool = True, **kw: object) -> AsyncIterator[
        tuple[Engine, PartitionJournal]]:
    """An engine writing the partition: caught up from the log first (as a new owner is)."""
    async with Engine.open() as replica:
        position = await catch_up(plog, PARTITION, replica) if catch else None
    journal = PartitionJournal(plog, PARTITION, writer=name,
                               last_seq=position.last_seq if position else 0,
                               last_stream_seq=position.last_stream_seq if position else 0, **kw)  # type: ignore[arg-type]
    async with Engine.open(journal=journal) as engine, trio.open_nursery() as nursery:
        if position is not None and position.records:
            await catch_up(plog, PARTITION, engine)  # the writer's own engine holds the state
        await nursery.start(journal.run)
        yield engine, journal
        nursery.cancel_scope.cancel()


def batch(rng: random.Random, n: int, users: int = 40) -> list[dict[str, object]]:
    return [{"metric": rng.choice(["steps", "points"]), "user": rng.randrange(users), "value": rng.randrange(1, 50),
             "ts": T0 + rng.randrange(86_400), "atid": rng.randrange(3)} for _ in range(n)]


async def answers(engine: Engine, users: int = 40) -> dict:
    result = await engine.query(list(range(users)), ["steps", "points"], T0, T0 + 86_400)
    return {u: r for u, r in result.items()}


def test_message_round_trip_and_refusal():
    assert decode_message(encode_message(1, [])) == (1, [])
    with pytest.raises(ValueError, match="not a partition journal message"):
        decode_message(encode_message(0, [b"x"]))


async def test_a_replica_replaying_the_log_answers_as_the_writer(plog):
    rng = random.Random(5)
    async with writer(plog, "w1") as (engine, journal):
        for _ in range(12):
            await engine.ingest(batch(rng, 200))
        expected = await answers(engine)
        assert journal.last_seq == journal.durable_seq == 12
    async with Engine.open() as replica:
        caught = await catch_up(plog, PARTITION, replica, messages_per_read=3)
        assert (caught.last_seq, caught.records) == (12, 12)
        assert caught.last_stream_seq == await plog.last_seq(PARTITION)
        assert await answers(replica) == expected
        # From the middle (a snapshot holding the first 5 records): nothing applied twice.
    async with Engine.open() as partial:
        first = await catch_up(plog, PARTITION, partial, upto_stream_seq=(await plog.read(PARTITION, 0))[4].seq)
        assert first.last_seq == 5
        # From the log's start again, as a reader whose snapshot holds records 1..5 may: the
        # first five are skipped by number.
        rest = await catch_up(plog, PARTITION, partial, after_seq=5, after_stream_seq=0)
        assert (rest.last_seq, rest.records) == (12, 7)
        assert await answers(partial) == expected


async def test_concurrent_writes_share_messages_and_stay_densely_numbered(plog):
    rng = random.Random(9)
    batches = [batch(rng, 50) for _ in range(60)]
    async with writer(plog, "w1") as (engine, journal):
        async with trio.open_nursery() as nursery:
            for b in batches:
                nursery.start_soon(engine.ingest, b)
        assert journal.durable_seq == 60
        assert journal.messages < 60  # group commit: records appended during a publish ride along
        expected = await answers(engine)
    numbers = []
    for message in await plog.read(PARTITION, 0):
        first, records = decode_message(message.data)
        numbers += range(first, first + len(records))
    assert numbers == list(range(1, 61))
    async with Engine.open() as replica:
        await catch_up(plog, PARTITION, replica)
        assert await answers(replica) == expected


async def test_a_deposed_writer_is_fenced_and_its_unlogged_write_is_not_acknowledged(plog):
    rng = random.Random(1)
    async with writer(plog, "old") as (old, old_journal):
        await old.ingest(batch(rng, 30))
        # A new owner catches up and writes.
        async with writer(plog, "new") as (new, new_journal):
            await new.ingest(batch(rng, 30))
            assert new_journal.last_seq == 2
            # The old owner still believes it owns the partition: its write is applied locally
            # but not logged, and is refused to the client.
            with pytest.raises(PartitionUnavailable, match="^partition 3 moved to another node"):
                await old.ingest(batch(rng, 30))
            assert old_journal.failure is not None
            with pytest.raises(PartitionUnavailable):
                await old.ingest(batch(rng, 1))  # and every later one, at once
            await new.ingest(batch(rng, 30))
            expected = await answers(new)
    async with Engine.open() as replica:
        caught = await catch_up(plog, PARTITION, replica)
        assert caught.last_seq == 3
        assert await answers(replica) == expected


async def test_a_record_over_the_message_limit_is_refused_before_it_is_applied(plog):
    rng = random.Random(2)
    async with writer(plog, "w", max_message_bytes=4096) as (engine, journal):
        empty = await answers(engine)
        with pytest.raises(PayloadTooLarge, match="exceeds the cluster log's message limit of 4096"):
            await engine.ingest(batch(rng, 500))
        assert await answers(engine) == empty  # nothing of it applied
        await engine.ingest(batch(rng, 5))
        assert journal.durable_seq == 1 and await answers(engine) != empty
