"""cluster/partition_log.py against a real three-server JetStream cluster on loopback:
appends are ordered per partition, fenced by the expected last sequence, de-duplicated by
batch id, readable from any sequence, and survive the loss of one server."""

from __future__ import annotations

import itertools

import pytest
import trio

from cluster.partition_log import (
    Appended,
    Fenced,
    JetStream,
    LogLayout,
    PartitionLog,
)

_prefixes = itertools.count()


@pytest.fixture
async def plog(jetstream: JetStream) -> PartitionLog:
    """A log of 8 partitions over 3 streams, under a prefix of its own (tests share servers)."""
    log = PartitionLog(jetstream, LogLayout(partitions=8, streams=3, prefix=f"t{next(_prefixes)}"))
    await log.ensure_streams()
    return log


def test_layout_spreads_partitions_over_streams():
    layout = LogLayout(partitions=8, streams=3, prefix="ps")
    assert [layout.stream_of(p) for p in range(4)] == ["PS_LOG_0", "PS_LOG_1", "PS_LOG_2", "PS_LOG_0"]
    assert layout.subject_of(7) == "ps.log.1.7"
    assert layout.stream_config(1).subjects == ["ps.log.1.*"] and layout.stream_config(1).num_replicas == 3
    with pytest.raises(ValueError, match=r"^partition 8 is outside 0\.\.7$"):
        layout.subject_of(8)
    with pytest.raises(ValueError, match="^streams must be between 1 and the number of partitions$"):
        LogLayout(partitions=2, streams=3)
    with pytest.raises(ValueError, match="prefix must be"):
        LogLayout(prefix="a.b")


async def test_appends_are_read_back_in_order_per_partition(plog):
    assert await plog.last_seq(0) == 0
    last = {0: 0, 3: 0}
    for i in range(20):
        partition = 0 if i % 3 else 3  # 0 and 3 share a stream
        appended = await plog.append(partition, b"r%d" % i, msg_id=f"b{i}", expected_last=last[partition])
        assert not appended.duplicate and appended.seq > last[partition]
        last[partition] = appended.seq
    assert await plog.last_seq(0) == last[0] and await plog.last_seq(3) == last[3]
    records = await plog.read(0, 0)
    assert [r.data for r in records] == [b"r%d" % i for i in range(20) if i % 3]
    assert [r.msg_id for r in records] == [f"b{i}" for i in range(20) if i % 3]
    assert records[-1].seq == last[0]
    # From the middle, to a bound, and in small fetches.
    middle = records[5].seq
    tail = await plog.read(0, middle, batch=2)
    assert [r.seq for r in tail] == [r.seq for r in records[6:]]
    assert [r.seq for r in await plog.read(0, 0, upto=middle)] == [r.seq for r in records[:6]]
    assert await plog.read(0, last[0]) == []
    assert await plog.read(5, 0) == []  # a partition never written


async def test_a_deposed_writer_is_fenced(plog):
    first = await plog.append(2, b"owner A", msg_id="a1", expected_last=0)
    # B takes over: it read the log's tail, and appends after it.
    taken = await plog.append(2, b"owner B", msg_id="b1", expected_last=await plog.last_seq(2))
    # A, still believing the tail is its own last append, must not extend the log.
    with pytest.raises(Fenced, match=rf"^partition 2: the log moved past sequence {first.seq} ") as caught:
        await plog.append(2, b"owner A again", msg_id="a2", expected_last=first.seq)
    assert (caught.value.partition, caught.value.expected_last) == (2, first.seq)
    assert [r.data for r in await plog.read(2, 0)] == [b"owner A", b"owner B"]
    # Expecting an empty log once it has records is fenced too.
    with pytest.raises(Fenced):
        await plog.append(2, b"late starter", msg_id="c1", expected_last=0)
    assert await plog.last_seq(2) == taken.seq


async def test_a_retried_batch_is_stored_once(plog):
    first = await plog.append(1, b"batch", msg_id="batch-7", expected_last=0)
    # The client lost the answer and sends again: same id. The expected sequence it sends is
    # the same stale one, and the repeat must still be recognised, not fenced.
    again = await plog.append(1, b"batch", msg_id="batch-7", expected_last=0)
    assert again == Appended(first.seq, True)
    assert [r.data for r in await plog.read(1, 0)] == [b"batch"]


async def test_concurrent_owners_racing_on_one_partition_never_interleave(plog):
    """Two writers each append 30 records, each always expecting its own last append: only
    one can extend the log at a time, so every stored record follows its writer's previous
    one, and the loser sees Fenced."""
    stored: dict[str, list[int]] = {"A": [], "B": []}
    fenced: dict[str, int] = {"A": 0, "B": 0}

    async def writer(name: str) -> None:
        expected = await plog.last_seq(4)
        for i in range(30):
            try:
                appended = await plog.append(4, f"{name}{i}".encode(), msg_id=f"{name}{i}", expected_last=expected)
            except Fenced:
                fenced[name] += 1
                expected = await plog.last_seq(4)  # re-read the tail (a new owner would stop)
                continue
            stored[name].append(appended.seq)
            expected = appended.seq

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer, "A")
        nursery.start_soon(writer, "B")
    records = await plog.read(4, 0)
    assert len(records) == len(stored["A"]) + len(stored["B"])
    assert sorted(stored["A"] + stored["B"]) == [r.seq for r in records]
    assert fenced["A"] + fenced["B"] == 60 - len(records)


async def test_the_log_survives_one_server_killed(plog, nats_cluster):
    """R3 streams: with one of three servers gone, appends are acknowledged and every
    acknowledged record is read back; the server then rejoins."""
    last = 0
    for i in range(5):
        last = (await plog.append(6, b"before %d" % i, msg_id=f"k{i}", expected_last=last)).seq
    nats_cluster.kill(1)
    try:
        with trio.fail_after(40):
            # A stream leader may be re-elected meanwhile: the log retries within its
            # retry_s, with the same batch id, so nothing is stored twice.
            for i in range(5, 15):
                last = (await plog.append(6, b"after %d" % i, msg_id=f"k{i}", expected_last=last)).seq
        records = await plog.read(6, 0)
        assert [r.msg_id for r in records] == [f"k{i}" for i in range(15)]
    finally:
        await trio.to_thread.run_sync(nats_cluster.restart, 1)
    assert await plog.last_seq(6) == last
