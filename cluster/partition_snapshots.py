"""Partition snapshots in the JetStream object store, and the log cut below them.

Theory of operation
-------------------
A partition's log would grow for ever, and a node taking a partition over would replay all of
it. So the partition's owner, every ``interval_s`` while it writes, stores a snapshot of its
engine in the object store bucket ``<prefix>-snapshots`` (replicated like the logs) as the
object ``partition-<p>``, then purges the partition's subject up to the position of the
snapshot it replaced (so the log keeps one interval of messages, and a standby a little behind
finds no hole). Any node can then start the partition from the snapshot and the log after it.

- **What a snapshot covers**: ``snapshots/codec.py``'s format, the single node's, whose
  ``start_seq`` is the engine's stable position: every record numbered below it is applied by
  every entity (later ones may be, and replay skips them per entity by ``applied_seq``). The
  object holds the snapshot and the stream sequence ``cut`` of the last log message whose
  records are all below ``start_seq`` (``PartitionJournal.stream_seq_before``).
- **Restore** (``Replica`` start): load the items, continue numbering after
  ``start_seq - 1``, and catch up from the messages after ``cut``. A message that also holds
  records below ``start_seq`` replays only the rest.
- **The cut** happens only after the object store acknowledged the snapshot (stored on a
  quorum), and removes only messages at or below the replaced snapshot's ``cut``, which the
  new snapshot covers as well. A standby that had not read that far
  finds a hole where its next record should be (``LogGap``): it is rebuilt from the snapshot,
  as any replica that fails. A deposed owner that stores an older snapshot after a newer one
  would point restores below the cut: the object names its writer and start, and a snapshot is
  only replaced by one that starts later.

Snapshots are whole (a partition holds 1/P of the data set); their envelope is msgpack
``[1, start_seq, cut, writer, snapshot bytes]``.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import msgpack
import nats.js.errors
from nats.js.api import ObjectStoreConfig, StorageType

from cluster.partition_journal import PartitionJournal
from cluster.partition_log import JetStream, LogLayout
from engine.engine import Engine
from snapshots.codec import iter_snapshot_items, read_snapshot_header
from snapshots.transfer import stream_engine_snapshot

__all__ = ["PartitionSnapshot", "PartitionSnapshots"]

log = logging.getLogger("pointspace.cluster")

ENVELOPE_VERSION = 1


@dataclass(frozen=True, slots=True)
class PartitionSnapshot:
    """A stored snapshot's position: records before ``start_seq`` are in it; the log after
    stream sequence ``cut`` holds the rest."""

    start_seq: int
    cut: int
    writer: str
    data: bytes


class PartitionSnapshots:
    """The snapshot bucket: save, load, and cut a partition's log below a saved snapshot."""

    def __init__(self, jetstream: JetStream, layout: LogLayout) -> None:
        self.jetstream = jetstream
        self.layout = layout
        self.bucket = f"{layout.prefix}-snapshots"
        self._store: object | None = None

    async def setup(self) -> None:
        """Create the bucket, or open it."""
        js = self.jetstream.js
        config = ObjectStoreConfig(bucket=self.bucket, replicas=self.layout.replicas, storage=StorageType.FILE)
        try:
            self._store = await self.jetstream.call(js.create_object_store, self.bucket, config)
        except nats.js.errors.BadRequestError:  # exists
            self._store = await self.jetstream.call(js.object_store, self.bucket)

    def _object(self, partition: int) -> str:
        return f"partition-{partition}"

    async def load(self, partition: int) -> PartitionSnapshot | None:
        """The partition's stored snapshot, or ``None``."""
        assert self._store is not None, "setup() first"
        try:
            result = await self.jetstream.call(self._store.get, self._object(partition))  # type: ignore[attr-defined]
        except nats.js.errors.ObjectNotFoundError:
            return None
        version, start_seq, cut, writer, data = msgpack.unpackb(result.data, raw=False)
        if version != ENVELOPE_VERSION:
            raise ValueError(f"partition {partition}'s snapshot has envelope version {version}, not {ENVELOPE_VERSION}")
        return PartitionSnapshot(start_seq, cut, writer, data)

    async def save(self, partition: int, engine: Engine, journal: PartitionJournal) -> PartitionSnapshot | None:
        """Snapshot ``engine`` (written through ``journal``, which must lead) and store it,
        unless the stored one starts as late; then cut the partition's log up to the
        messages it covers. The snapshot saved, or ``None`` (nothing new, or no message
        position known for its start yet).

        The snapshot holds only logged records: entities apply a record before its message
        is acknowledged, so it is stored only once every record it may hold is durable (a
        journal that fails meanwhile raises, and nothing is stored).
        """
        assert self._store is not None, "setup() first"
        newest = engine.last_seq
        chunks = [chunk async for chunk in stream_engine_snapshot(engine)]
        start_seq = read_snapshot_header(io.BytesIO(chunks[0])).start_seq
        await journal.wait_durable(newest)
        cut = journal.stream_seq_before(start_seq)
        if cut is None:
            return None
        stored = await self.load(partition)
        if stored is not None and stored.start_seq >= start_seq:
            return None
        data = b"".join(chunks)
        envelope = msgpack.packb([ENVELOPE_VERSION, start_seq, cut, journal.writer, data], use_bin_type=True)
        await self.jetstream.call(self._store.put, self._object(partition), envelope)  # type: ignore[attr-defined]
        # The log is cut up to the previous snapshot's position, not this one's: a standby
        # that has not yet read the messages after it (it tails every fraction of a second)
        # finds no hole, and the log keeps one interval of messages.
        if stored is not None:
            await self.cut(partition, stored.cut)
        log.info("partition %d: snapshot at record %d stored (%d bytes); log cut up to message %d",
                 partition, start_seq, len(envelope), stored.cut if stored is not None else 0)
        return PartitionSnapshot(start_seq, cut, journal.writer or "", data)

    async def cut(self, partition: int, upto: int) -> None:
        """Remove the partition's log messages at or below stream sequence ``upto``."""
        if upto < 1:
            return
        await self.jetstream.call(self.jetstream.js.purge_stream, self.layout.stream_of(partition),
                                  seq=upto + 1, subject=self.layout.subject_of(partition))

    @staticmethod
    def restore(engine: Engine, snapshot: PartitionSnapshot) -> int:
        """Load ``snapshot`` into a fresh ``engine``; the number of items."""
        count = 0
        for kind, key, applied_seq, state in iter_snapshot_items(io.BytesIO(snapshot.data)):
            engine.load_snapshot_item(kind, key, applied_seq, state)
            count += 1
        return count

