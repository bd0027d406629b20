"""Each partition's log on a JetStream subject: append with fencing and de-duplication, read
from a sequence.

Theory of operation
-------------------
A cluster has a fixed number of global partitions (:class:`LogLayout`, 64 by default). Each
partition's records are the messages of one subject, ``<prefix>.log.<k>.<partition>``, where
``k = partition % streams``: partitions are spread over several replicated streams
(``<PREFIX>_LOG_<k>``, R3 by default), so the streams' Raft leaders -- which order every write
-- spread over the servers instead of all writes going through one. A record's position is
the stream's sequence number, which orders it against every other record of the stream; the
records of one partition are its subject's messages in that order.

**Fencing.** The owner of a partition appends with ``Nats-Expected-Last-Subject-Sequence``:
the sequence of the last record it knows on that subject (0 for none). The stream leader
refuses the append if another record landed after it, which is what happens when a node that
was deposed (it stalled; the coordinator gave the partition to another node, which appended)
tries to go on writing: :class:`Fenced`. So at most one node extends a partition's log at a
time, without a lease clock.

**De-duplication.** Every append carries ``Nats-Msg-Id`` (the batch's id). Within the
stream's ``duplicate_window`` a second append with the same id is not stored again: the
acknowledgement says ``duplicate`` and names the first one's sequence. A client that retries
a batch whose answer it lost is therefore counted once.

**Reading.** :meth:`PartitionLog.read` replays a partition from a sequence: an ephemeral,
unacknowledged pull consumer filtered to the subject, fetched in batches up to the tail seen
when the read began. It is how a node catches up when it takes a partition over.

Every method is a trio coroutine; the nats-py calls run on the asyncio loop of an
:class:`~cluster.bridge.AsyncioBridge`, one crossing per call (per batch when reading).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import nats
import nats.errors
import nats.js.errors
import trio
from nats.aio.client import Client as NatsClient
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.client import JetStreamContext

from cluster.bridge import AsyncioBridge

__all__ = ["Appended", "Fenced", "JetStream", "LogLayout", "LogRecord", "LogUnavailable", "PartitionLog"]

log = logging.getLogger("pointspace.cluster")

#: JetStream's error codes for a failed ``Nats-Expected-Last-Subject-Sequence`` check: with
#: the sequence in the message (10071), and without (10164, from a clustered stream's leader
#: checking before it proposes; seen in ``test_concurrent_owners_racing...``).
WRONG_LAST_SEQUENCE = frozenset({10071, 10164})
#: ... for a stream that exists with another configuration.
STREAM_NAME_IN_USE = 10058


#: Failures that say "not now" rather than "no": retried, then :class:`LogUnavailable`.
#: Records a read takes one by one with direct gets before it makes a consumer for the rest.
DIRECT_READ_MESSAGES = 16

#: JetStream refusals that pass: 10005, "no suitable peers for placement" (a replica's server
#: is offline, or not yet known to the others just after the cluster started).
TRANSIENT_CODES = frozenset({10005})

TRANSIENT = (
    nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.errors.ConnectionReconnectingError,
    nats.js.errors.NoStreamResponseError, nats.js.errors.ServiceUnavailableError,
)


class Fenced(Exception):
    """Another record was appended to the partition after the one this writer expected:
    the writer is no longer the partition's owner, or raced one."""

    def __init__(self, partition: int, expected_last: int, detail: str) -> None:
        super().__init__(f"partition {partition}: the log moved past sequence {expected_last} "
                         f"(another owner appended); {detail}")
        self.partition = partition
        self.expected_last = expected_last


class LogUnavailable(Exception):
    """JetStream did not answer in time, or no stream answered for the subject."""


@dataclass(frozen=True, slots=True)
class LogLayout:
    """Where a partition's records live: its subject and stream."""

    partitions: int = 64
    streams: int = 4
    replicas: int = 3
    prefix: str = "pointspace"
    #: Seconds within which a repeated ``Nats-Msg-Id`` is recognised (JetStream's default: 120).
    duplicate_window_s: float = 120.0

    def __post_init__(self) -> None:
        if not 1 <= self.streams <= self.partitions:
            raise ValueError("streams must be between 1 and the number of partitions")
        if not self.prefix.replace("_", "").replace("-", "").isalnum():
            raise ValueError("prefix must be letters, digits, '-' and '_' (it is part of subjects)")

    def stream_index(self, partition: int) -> int:
        self._check(partition)
        return partition % self.streams

    def stream_name(self, index: int) -> str:
        return f"{self.prefix.upper()}_LOG_{index}"

    def stream_of(self, partition: int) -> str:
        return self.stream_name(self.stream_index(partition))

    def subject_of(self, partition: int) -> str:
        return f"{self.prefix}.log.{self.stream_index(partition)}.{partition}"

    def stream_config(self, index: int) -> StreamConfig:
        return StreamConfig(
            name=self.stream_name(index),
            subjects=[f"{self.prefix}.log.{index}.*"],
            num_replicas=self.replicas,
            storage=StorageType.FILE,
            duplicate_window=self.duplicate_window_s,
            allow_direct=True,
        )

    def _check(self, partition: int) -> None:
        if not 0 <= partition < self.partitions:
            raise ValueError(f"partition {partition} is outside 0..{self.partitions - 1}")


@dataclass(frozen=True, slots=True)
class Appended:
    """A stored append: its sequence, and whether it repeated an id already stored (then
    ``seq`` is the first one's)."""

    seq: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class LogRecord:
    seq: int
    data: bytes
    msg_id: str | None


class JetStream:
    """A nats-py connection and its JetStream context, living on a bridge's loop."""

    def __init__(self, bridge: AsyncioBridge, client: NatsClient) -> None:
        self.bridge = bridge
        self.client = client
        self.js: JetStreamContext = client.jetstream()

    @classmethod
    @asynccontextmanager
    async def connect(cls, bridge: AsyncioBridge, servers: list[str], *, name: str = "pointspace",
                      timeout_s: float = 5.0) -> AsyncIterator[JetStream]:
        """Connect to any of ``servers`` (reconnecting for ever, to any of them, once up)."""

        async def on_error(exc: Exception) -> None:
            log.warning("NATS connection error: %s", exc)

        client = await bridge.call(functools.partial(
            nats.connect, servers=servers, name=name, connect_timeout=timeout_s,
            max_reconnect_attempts=-1, reconnect_time_wait=0.2, error_cb=on_error))
        try:
            yield cls(bridge, client)
        finally:
            await bridge.call(client.close)

    async def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """One nats-py call on the bridge's loop; its transient failures (no answer in time,
        no responders, reconnecting, a stream or consumer leader being elected) as
        :class:`LogUnavailable`, which callers may retry."""
        try:
            return await self.bridge.call(functools.partial(fn, *args, **kwargs))
        except TRANSIENT as exc:
            raise LogUnavailable(f"JetStream did not answer: {type(exc).__name__}") from exc
        except nats.js.errors.APIError as exc:
            if getattr(exc, "err_code", None) in TRANSIENT_CODES:
                raise LogUnavailable(f"JetStream: {exc.description}") from exc
            raise


class PartitionLog:
    """The partitions' logs of one cluster (module docstring).

    Transient unavailability -- a server lost, a stream leader being elected, a consumer not
    yet placed -- is retried inside each method for up to ``retry_s`` seconds, then raised as
    :class:`LogUnavailable`. Every method is safe to retry: reads and look-ups change nothing,
    and an append carries its batch id, so a retry of one that was stored is answered with the
    first one's sequence, not stored twice (``test_a_retried_batch_is_stored_once``).
    """

    def __init__(self, jetstream: JetStream, layout: LogLayout | None = None, *, timeout_s: float = 5.0,
                 publish_timeout_s: float = 1.0, retry_s: float = 15.0) -> None:
        self.jetstream = jetstream
        self.layout = layout or LogLayout()
        self.timeout_s = timeout_s
        #: One append's wait for its acknowledgement before it is sent again (same batch id,
        #: so never stored twice). Short, so that an append sent while the stream's leader is
        #: being elected is repeated soon after the election rather than a long timeout later.
        self.publish_timeout_s = publish_timeout_s
        self.retry_s = retry_s

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await self.jetstream.call(fn, *args, **kwargs)

    async def _retrying(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """:meth:`_call`, retried on :class:`LogUnavailable` until ``retry_s`` has passed."""
        deadline = trio.current_time() + self.retry_s
        pause = 0.05
        while True:
            try:
                return await self._call(fn, *args, **kwargs)
            except LogUnavailable:
                if trio.current_time() + pause > deadline:
                    raise
                await trio.sleep(pause)
                pause = min(pause * 2, 0.25)

    async def ensure_streams(self) -> None:
        """Create the streams, or bring existing ones to the layout's configuration."""
        js = self.jetstream.js
        for index in range(self.layout.streams):
            config = self.layout.stream_config(index)
            try:
                await self._retrying(js.add_stream, config)
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code != STREAM_NAME_IN_USE:
                    raise
                await self._retrying(js.update_stream, config)

    async def append(self, partition: int, record: bytes, *, msg_id: str, expected_last: int | None) -> Appended:
        """Store ``record`` as the partition's next record, once acknowledged by a quorum.

        Args:
            msg_id: the batch's id; a repeat within the duplicate window is not stored again.
            expected_last: the sequence of the partition's last record as this writer knows it
                (0: none yet); ``None`` skips the check (for tools, never for an owner).

        Raises:
            Fenced: the partition's log has a later record than ``expected_last``.
            LogUnavailable: no acknowledgement within ``retry_s`` (the record may or may not
                be stored; retry with the same ``msg_id``).
        """
        headers = {"Nats-Msg-Id": msg_id}
        if expected_last is not None:
            headers["Nats-Expected-Last-Subject-Sequence"] = str(expected_last)
        try:
            ack = await self._retrying(self.jetstream.js.publish, self.layout.subject_of(partition), record,
                                       timeout=self.publish_timeout_s, headers=headers)
        except nats.js.errors.APIError as exc:
            if exc.err_code in WRONG_LAST_SEQUENCE:
                raise Fenced(partition, expected_last or 0, exc.description or "") from None
            raise
        return Appended(ack.seq, bool(ack.duplicate))

    async def last_seq(self, partition: int, *, from_leader: bool = True) -> int:
        """The sequence of the partition's last record; 0 when it has none.

        ``from_leader``: ask the stream's leader, which knows every acknowledged record (what a
        writer must start from, and a reader that must see every acknowledged write). Else
        any replica answers (a direct get), perhaps a record or two behind: cheap, and
        answered while a leader is being elected; enough for a standby's tailing.
        """
        try:
            message = await self._retrying(self.jetstream.js.get_last_msg, self.layout.stream_of(partition),
                                           self.layout.subject_of(partition), direct=not from_leader)
        except nats.js.errors.NotFoundError:
            return 0
        return int(message.seq)

    async def read(self, partition: int, after: int, *, upto: int | None = None, batch: int = 512,
                   limit: int | None = None) -> list[LogRecord]:
        """The partition's records with sequences in ``(after, upto]``, in order, at most
        ``limit`` of them; ``upto`` defaults to the last record when the read begins. A read
        interrupted by a transient failure goes on from its last record with a new consumer.

        Memory: every record read is held; a caller replaying a long log reads in ranges
        (``limit``).
        """
        if upto is None:
            upto = await self.last_seq(partition)
        records: list[LogRecord] = []
        if await self._read_direct(partition, after, upto, records, limit):
            return records
        deadline = trio.current_time() + self.retry_s
        while (records[-1].seq if records else after) < upto and (limit is None or len(records) < limit):
            start = records[-1].seq if records else after
            try:
                await self._read_some(partition, start, upto, batch, records, limit)
            except LogUnavailable:
                if trio.current_time() > deadline:
                    raise
                await trio.sleep(0.1)
        return records

    async def _read_direct(self, partition: int, after: int, upto: int, out: list[LogRecord],
                           limit: int | None) -> bool:
        """Read the first few records one by one with direct gets; whether that was all.

        A standby tailing its partitions reads a message or two every tick: a consumer for
        each read would cost JetStream a consumer's creation and deletion through its
        metadata leader each time, and after a NATS server's death no consumer can be made
        until a new metadata leader is elected (4-9 s: nats-server's raft election timeout),
        which held back the standbys' catch-up and so every failover. A direct get is
        answered by any replica of the stream, leader or not. A replica that has not yet
        stored a record answers "not found": the rest is then read with a consumer, from
        the stream's leader.
        """
        js = self.jetstream.js
        stream, subject = self.layout.stream_of(partition), self.layout.subject_of(partition)
        for _ in range(DIRECT_READ_MESSAGES):
            start = out[-1].seq if out else after
            if start >= upto or (limit is not None and len(out) >= limit):
                return True
            try:
                message = await self._retrying(js.get_msg, stream, seq=start + 1, subject=subject, direct=True,
                                               next=True)
            except nats.js.errors.NotFoundError:
                return False
            if message.seq > upto:
                return True
            headers = message.headers or {}
            out.append(LogRecord(message.seq, message.data or b"", headers.get("Nats-Msg-Id")))
        start = out[-1].seq if out else after
        return start >= upto or (limit is not None and len(out) >= limit)

    async def _read_some(self, partition: int, after: int, upto: int, batch: int, out: list[LogRecord],
                         limit: int | None) -> None:
        """Append to ``out`` the records after ``after`` up to ``upto`` (``out`` at most
        ``limit`` long), with one consumer."""
        js = self.jetstream.js
        subject = self.layout.subject_of(partition)
        config = ConsumerConfig(
            filter_subject=subject, deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after + 1,
            ack_policy=AckPolicy.NONE, inactive_threshold=10.0, mem_storage=True, num_replicas=1,
        )
        subscription = await self._retrying(js.pull_subscribe, subject, durable=None,
                                            stream=self.layout.stream_of(partition), config=config)
        try:
            while (not out or out[-1].seq < upto) and (limit is None or len(out) < limit):
                want = batch if limit is None else min(batch, limit - len(out))
                for message in await self._call(subscription.fetch, want, timeout=self.timeout_s):
                    seq = message.metadata.sequence.stream
                    if seq > upto:
                        return
                    headers = message.headers or {}
                    out.append(LogRecord(seq, message.data, headers.get("Nats-Msg-Id")))
        finally:
            with trio.CancelScope(shield=True):
                await self._drop(subscription)

    async def _drop(self, subscription: Any) -> None:
        """Unsubscribe and delete a read's consumer now (else it lingers until its
        ``inactive_threshold``); best effort: a failure leaves it to expire."""
        with trio.move_on_after(self.timeout_s):
            try:
                info = await self._call(subscription.consumer_info)
                await self._call(subscription.unsubscribe)
                await self._call(self.jetstream.js.delete_consumer, info.stream_name, info.name)
            except (LogUnavailable, nats.errors.Error) as exc:
                log.debug("a read's consumer was left to expire: %s", exc)
