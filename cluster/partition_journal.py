"""The journal of one partition's engine, kept in the partition's JetStream log.

Theory of operation
-------------------
In a cluster every global partition's state is held by an :class:`~engine.engine.Engine` of
its own on the node that owns the partition, and that engine's journal
(``engine/journal.py``) is a :class:`PartitionJournal`: the records it appends go to the
partition's subject (``cluster/partition_log.py``) instead of a local log. The engine's
contract is unchanged -- ``append`` numbers a record and never waits, ``wait_durable``
returns once it is as durable as promised, here "acknowledged by a quorum of the stream's
replicas" -- so the engine's own ordering argument (log order is apply order) holds.

**Numbering.** Records are numbered densely per partition (1, 2, 3, ...), as the engine
needs, independently of the stream's sequence (which counts every partition of the stream).
Each message states the number of its first record, so a node replaying the partition
assigns every record the number its writer gave it, and a snapshot's per-entity
``applied_seq`` means the same record on every node.

**Group commit.** A publish to a replicated stream waits for a quorum to store (and, with
``sync_interval: always``, to sync) the message: a few milliseconds. One publish is in flight
per partition at a time -- each names the sequence of the one before (fencing), which is
only known once it is acknowledged -- and every record appended meanwhile rides in the next
message, up to ``max_message_bytes``. Under load, messages grow rather than queue.

**Failure is final.** A publish that is fenced (another node appended: this one was deposed)
or that cannot be acknowledged within the log's retry time leaves records that this engine
applied but the log does not hold. The journal then refuses every later append and fails
every waiter with :class:`PartitionUnavailable` (503: the client retries, and reaches the
partition's owner); the node must drop this engine and, if it still owns the partition,
rebuild it from the log (:func:`catch_up`). Nothing acknowledged is lost, and nothing the
log does not hold was acknowledged.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import msgpack
import trio

from cluster.partition_log import Fenced, LogUnavailable, PartitionLog
from engine.engine import Engine
from engine.errors import PayloadTooLarge, PointspaceError

__all__ = ["CaughtUp", "LogGap", "PartitionJournal", "PartitionUnavailable", "catch_up", "decode_message",
           "encode_message"]

#: The largest message the journal publishes (JetStream's default ``max_payload`` is 1 MiB;
#: ``cluster/nats_servers.py`` raises it to 8 MiB for single records of large batches).
DEFAULT_MAX_MESSAGE_BYTES = 8 * 1024 * 1024
#: Recent message positions a journal remembers (a few minutes of messages at a busy
#: partition's rate; a snapshot older than all of them cuts nothing).
POSITIONS_KEPT = 4096


class PartitionUnavailable(PointspaceError):
    """This node can no longer write the partition (moved to another node, or its log did not
    acknowledge in time); the write was not acknowledged: retry."""

    http_status = 503


class LogGap(Exception):
    """A partition's log skips record numbers: it was trimmed below what a reader needs, or
    written by something other than a :class:`PartitionJournal`."""


def encode_message(first_seq: int, records: list[bytes]) -> bytes:
    """One log message: the number of its first record, and the records (msgpack).

    >>> decode_message(encode_message(7, [b"a", b"bc"]))
    (7, [b'a', b'bc'])
    """
    return msgpack.packb([first_seq, records], use_bin_type=True)


def decode_message(data: bytes) -> tuple[int, list[bytes]]:
    first_seq, records = msgpack.unpackb(data, raw=False)
    if type(first_seq) is not int or first_seq < 1 or not all(type(r) is bytes for r in records):
        raise ValueError("not a partition journal message")
    return first_seq, records


class PartitionJournal:
    """A :class:`~engine.journal.Journal` writing to one partition's JetStream subject.

    A journal starts as a **follower**: its engine is fed by :func:`catch_up` (numbering
    follows, ``advance_to``) and appends are refused (503). :meth:`lead` makes it the
    partition's writer, once, after the engine caught up to the log's tail.

    Args:
        log: the cluster's partition logs.
        partition: the partition written.
        writer: to lead at once (tests, tools): as for :meth:`lead`.
        last_seq: the number of the last record already in the log and the engine.
        last_stream_seq: with ``writer``, as for :meth:`lead`.

    Run :meth:`run` in a nursery for as long as the engine writes.
    """

    def __init__(self, log: PartitionLog, partition: int, *, writer: str | None = None, last_seq: int = 0,
                 last_stream_seq: int = 0, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.log = log
        self.partition = partition
        self.writer = writer
        self.max_message_bytes = max_message_bytes
        self._last_seq = last_seq
        self._durable_seq = last_seq
        self._last_stream_seq = last_stream_seq
        #: Appended, not yet in a publish; ``_pending_first`` is the first one's number.
        self._pending: list[bytes] = []
        self._pending_first = last_seq + 1
        self._failure: PartitionUnavailable | None = None
        self._published = trio.Event()  # replaced after each acknowledgement or failure
        self._appended = trio.Event()  # set when the publisher has records to send
        self.messages = 0  # published (for statistics and tests)
        #: (last record number, stream sequence) of recent messages, oldest first: where a
        #: snapshot's replay starts (:meth:`stream_seq_before`).
        self.positions: deque[tuple[int, int]] = deque(maxlen=POSITIONS_KEPT)

    # ----- the Journal protocol ----------------------------------------------------------

    def append(self, record: bytes) -> int:
        if self._failure is not None:
            raise PartitionUnavailable(self._failure.message)
        if self.writer is None:
            raise PartitionUnavailable(f"this node does not write partition {self.partition} (now); retry")
        if len(record) > self.max_message_bytes - 64:
            raise PayloadTooLarge(f"a record of {len(record)} bytes exceeds the cluster log's message limit "
                                  f"of {self.max_message_bytes}; send smaller batches", "body")
        self._last_seq += 1
        self._pending.append(record)
        self._appended.set()
        return self._last_seq

    async def wait_durable(self, seq: int) -> None:
        while self._durable_seq < seq:
            if self._failure is not None:
                raise PartitionUnavailable(self._failure.message)
            await self._published.wait()

    @property
    def last_seq(self) -> int:
        return self._last_seq

    def advance_to(self, seq: int) -> None:
        """Continue numbering after ``seq`` (records replayed or loaded from the log)."""
        assert not self._pending, "advance_to is for catching up, before any append"
        if seq > self._last_seq:
            self._last_seq = self._durable_seq = seq
            self._pending_first = seq + 1

    # ----- more ----------------------------------------------------------------------------

    def note_position(self, last_record: int, stream_seq: int) -> None:
        """The message at ``stream_seq`` ends with record ``last_record`` (a catch-up's end)."""
        if last_record and (not self.positions or stream_seq > self.positions[-1][1]):
            self.positions.append((last_record, stream_seq))

    def stream_seq_before(self, record: int) -> int | None:
        """The stream sequence of the last message known to hold only records before
        ``record``, other than the partition's newest message: the log may be cut up to it
        once a snapshot holds every record before ``record``. The newest message always
        stays, since the writer's next publish names its sequence as the subject's last
        (``Nats-Expected-Last-Subject-Sequence``). ``None``: nothing to cut."""
        for last_record, stream_seq in reversed(self.positions):
            if last_record < record and stream_seq < self._last_stream_seq:
                return stream_seq
        return None

    def lead(self, writer: str, last_stream_seq: int) -> None:
        """Become the partition's writer.

        Args:
            writer: this node's id and ownership epoch (``Placement.writer``), in every
                message id, so two ownerships' messages are never taken for each other's
                retries.
            last_stream_seq: the stream sequence of the partition's last message, which the
                engine has applied (0: none); the first publish expects it, so if another
                node appended since, this one is fenced at once.
        """
        if self.writer is not None:
            raise RuntimeError(f"partition {self.partition}'s journal already leads as {self.writer}")
        self.writer = writer
        self._last_stream_seq = last_stream_seq

    @property
    def durable_seq(self) -> int:
        """The last record the log acknowledged."""
        return self._durable_seq

    @property
    def last_stream_seq(self) -> int:
        return self._last_stream_seq

    @property
    def failure(self) -> PartitionUnavailable | None:
        """Why this journal stopped, once it has (see the module docstring)."""
        return self._failure

    async def wait_failed(self) -> None:
        """Return once the journal has failed (:attr:`failure` says why)."""
        while self._failure is None:
            await self._published.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Publish appended records until cancelled or failed (module docstring). A journal
        whose publisher stopped is failed: its waiters get 503 rather than wait for ever."""
        task_status.started()
        try:
            while self._failure is None:
                await self._appended.wait()
                self._appended = trio.Event()
                while self._pending and self._failure is None:
                    await self._publish_some()
        finally:
            if self._failure is None:
                self._fail(f"partition {self.partition}'s writer on this node stopped (the partition moved, "
                           "or the node is stopping); retry")

    async def _publish_some(self) -> None:
        count, size = 0, 0
        for record in self._pending:
            if count and size + len(record) > self.max_message_bytes - 64:
                break
            count += 1
            size += len(record)
        records = self._pending[:count]
        first = self._pending_first
        message = encode_message(first, records)
        try:
            appended = await self.log.append(self.partition, message, msg_id=f"{self.writer}/{self.partition}/{first}",
                                             expected_last=self._last_stream_seq)
        except Fenced as exc:
            self._fail(f"partition {self.partition} moved to another node ({exc}); retry")
            return
        except LogUnavailable as exc:
            self._fail(f"partition {self.partition}'s log did not acknowledge ({exc}); retry")
            return
        del self._pending[:count]
        self._pending_first += count
        self._last_stream_seq = appended.seq
        self._durable_seq = first + count - 1
        self.note_position(self._durable_seq, appended.seq)
        self.messages += 1
        self._notify()

    def _fail(self, message: str) -> None:
        self._failure = PartitionUnavailable(message)
        self._notify()

    def _notify(self) -> None:
        self._published.set()
        self._published = trio.Event()


@dataclass(frozen=True, slots=True)
class CaughtUp:
    """Where a replay ended: the last record's number and its message's stream sequence."""

    last_seq: int
    last_stream_seq: int
    records: int


async def catch_up(log: PartitionLog, partition: int, engine: Engine, *, after_seq: int = 0,
                   after_stream_seq: int = 0, upto_stream_seq: int | None = None,
                   messages_per_read: int = 256, from_leader: bool = True) -> CaughtUp:
    """Replay into ``engine`` the partition's records numbered after ``after_seq``, reading
    its messages after ``after_stream_seq`` (0: from the start) up to ``upto_stream_seq``
    (default: the tail when called: the stream leader's, or with ``from_leader=False`` any
    replica's, which may be a record or two behind; ``PartitionLog.last_seq``).

    Records a snapshot already holds (numbered up to ``after_seq``) are skipped, so a reader
    may start at an earlier message than the snapshot's exact one.

    Raises:
        LogGap: a message starts after the next record number expected.
    """
    upto = await log.last_seq(partition, from_leader=from_leader) if upto_stream_seq is None else upto_stream_seq
    last_seq, stream_seq, replayed = after_seq, after_stream_seq, 0
    while stream_seq < upto:
        batch = await log.read(partition, stream_seq, upto=upto, batch=messages_per_read, limit=messages_per_read)
        if not batch:
            break
        for message in batch:
            first, records = decode_message(message.data)
            if first > last_seq + 1:
                raise LogGap(f"partition {partition}: message {message.seq} starts at record {first}, "
                             f"but record {last_seq + 1} is the next expected")
            for number, record in enumerate(records, first):
                if number > last_seq:
                    await engine.replay(number, record)
                    last_seq = number
                    replayed += 1
            stream_seq = message.seq
    return CaughtUp(last_seq, stream_seq, replayed)

