"""Write-ahead-log record framing: bytes in, records out, and no I/O at all.

Theory of operation
===================

A log segment is a plain concatenation of records. Each record is a 17-byte header followed by
the payload (an encoded engine command, opaque here)::

    offset  size  field
    0       1     magic/version byte, 0xA1 ("A" for the magic nibble, 1 for the version)
    1       4     payload length, unsigned little-endian
    5       8     sequence number, unsigned little-endian
    13      4     CRC-32 (zlib) of bytes 0..12 of the header followed by the payload
    17      n     payload

``encode_record`` builds one record. :class:`RecordDecoder` is a sans-IO incremental decoder in
the style of h11: the caller feeds whatever bytes it has with ``receive_data`` (``b""`` marks the
end of the data) and pulls events with ``next_event``, which returns

* :class:`Record` for every intact record, in order;
* ``NEED_DATA`` when it cannot decide without more bytes (a return value, not an exception);
* exactly one terminal event, repeated on every later call:
  :class:`CleanEnd` (the data ended on a record boundary), :class:`TornTail` (the data ends with
  damage that a crash in the middle of a write can explain) or :class:`Corruption` (damage that
  a crash cannot explain, with the byte offset of the first bad record).

Torn tail or corruption? A crash while appending leaves the file ending in a partial record, or,
on filesystems that extend the size before the data lands (ext4 and XFS after a power cut), in
zero-filled or stale blocks. What it never leaves is an intact record *after* the damage. So the
rule is: the first damaged record at offset X (bad magic byte, absurd length, checksum mismatch,
or data ending inside the record) is a **torn tail** when no intact record can be found anywhere
after X, and **corruption** otherwise. Cutting a torn tail loses nothing that a later intact
record vouches for; cutting at corruption would silently drop acknowledged records, so the
caller must refuse. The resynchronisation scan looks at every later 0xA1 byte whose header has a
plausible length and sequence number and checks its CRC (etcd's WAL decoder makes the same
distinction for torn writes, in ``isTornEntry``; RocksDB calls it kTolerateCorruptedTailRecords).
Known ambiguity: a bit flip inside the very last record of the data is indistinguishable from a
torn write and is reported as a torn tail.

Sequence numbers are consecutive: once the first record's number is known (given to the
decoder, or taken from the first record), each record must carry the previous one plus one. A
gap, or a repeat, in a record whose checksum is fine is corruption, never a torn tail.

Why zlib.crc32 and not CRC-32C: CRC-32C (Castagnoli) is what LevelDB/RocksDB logs, etcd's WAL,
Kafka record batches and PostgreSQL's WAL use, because CPUs compute it in hardware and it has a
slightly better Hamming distance on long messages. Python's standard library has no CRC-32C, and
a pure-Python one runs about a hundred times slower than ``zlib.crc32`` (C, table-driven, about
1 GB/s; not benchmarked here). Both detect every burst error of up to 32 bits and all but 2**-32
of random damage, which is what a log checksum is for; none of the log's records embed CRCs of
themselves, so LevelDB's CRC masking is not needed either. Changing the polynomial later means a
new version byte (0xA2).

Complexity: decoding is O(n) in the bytes processed (each byte is checksummed once, and the
consumed prefix of the buffer is dropped in amortised O(1) per byte). After damage the decoder
keeps the rest of the data in memory to scan it; that happens only on the damage path, and a
segment is at most a few tens of MiB. The resynchronisation scan is O(rest of data) when the
expected seq is known (random 0xA1 bytes are rejected by the seq check before any CRC); with an
unknown first seq and damage in the very first record, a hostile input can make it quadratic.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Final

__all__ = [
    "HEADER_SIZE",
    "MAGIC",
    "MAX_PAYLOAD_BYTES",
    "MAX_SEQ",
    "NEED_DATA",
    "CleanEnd",
    "Corruption",
    "DecoderEvent",
    "Record",
    "RecordDecoder",
    "TornTail",
    "encode_record",
]

#####################################################################
# Format constants
#####################################################################

# Version 1 of the record format. Not 0x00 (what a zero-filled tail holds) and not 0xFF (erased
# flash); a future format gets 0xA2. Precedent: LevelDB's log record type byte, which sits in
# the same place and doubles as a sanity check.
MAGIC: Final = 0xA1

# magic u8, payload length u32, sequence number u64: little-endian like LevelDB's and etcd's logs.
_HEADER_PREFIX: Final = struct.Struct("<BIQ")
_CRC: Final = struct.Struct("<I")
HEADER_SIZE: Final = _HEADER_PREFIX.size + _CRC.size  # 17

# The largest payload a record may carry. A length above it is treated as damage at once instead
# of waiting for gigabytes that will never come. Precedent: etcd caps a WAL entry at 10 MiB
# (maxWALEntrySizeLimit); we allow one default segment's worth (64 MiB), since the HTTP body
# limit bounds batches upstream.
MAX_PAYLOAD_BYTES: Final = 64 * 1024 * 1024

MAX_SEQ: Final = 2**64 - 1

# Drop the consumed prefix of the receive buffer once it is this large (and at least half the
# buffer), so that compaction costs amortised O(1) per byte.
_COMPACT_AT: Final = 1 << 20


def encode_record(seq: int, payload: bytes) -> bytes:
    """Frame one payload as a log record.

    Args:
        seq: the record's sequence number, 1 <= seq < 2**64.
        payload: the bytes to store, at most ``MAX_PAYLOAD_BYTES`` long.

    Returns:
        ``HEADER_SIZE + len(payload)`` bytes.

    Raises:
        ValueError: ``seq`` or the payload size is out of range (a bug in the caller; the log
            checks sizes before it frames).

    Runtime complexity: O(len(payload)).

    >>> encode_record(1, b"hi").hex()
    'a1020000000100000000000000ea818c3f6869'
    """
    if not 1 <= seq <= MAX_SEQ:
        raise ValueError(f"seq must be in 1..2**64-1, got {seq!r}")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(
            f"payload must be at most {MAX_PAYLOAD_BYTES} bytes, got {len(payload)} bytes"
        )
    prefix = _HEADER_PREFIX.pack(MAGIC, len(payload), seq)
    crc = zlib.crc32(payload, zlib.crc32(prefix))
    return b"".join((prefix, _CRC.pack(crc), payload))


#####################################################################
# Events
#####################################################################


class _NeedData:
    """Sentinel type: the decoder needs more bytes before it can say anything."""

    _instance: _NeedData | None = None

    def __new__(cls) -> _NeedData:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()


@dataclass(frozen=True, slots=True)
class Record:
    """One intact record; ``offset`` is where its header starts in the data."""

    seq: int
    payload: bytes
    offset: int

    @property
    def end(self) -> int:
        """The offset just past this record."""
        return self.offset + HEADER_SIZE + len(self.payload)


@dataclass(frozen=True, slots=True)
class CleanEnd:
    """The data ended on a record boundary at ``offset`` (its length)."""

    offset: int


@dataclass(frozen=True, slots=True)
class TornTail:
    """The data ends in damage a crash can explain: cut it at ``offset``, dropping ``nbytes``."""

    offset: int
    nbytes: int
    reason: str


@dataclass(frozen=True, slots=True)
class Corruption:
    """Damage at ``offset`` with an intact record after it: the log must not be cut here silently."""

    offset: int
    reason: str


DecoderEvent = Record | _NeedData | CleanEnd | TornTail | Corruption


#####################################################################
# The decoder
#####################################################################


class RecordDecoder:
    """Incremental, sans-IO decoder of a concatenation of records.

    Feed bytes with :meth:`receive_data`, then call :meth:`next_event` until it returns
    ``NEED_DATA`` (feed more) or a terminal event. Offsets in events count from the first byte
    ever fed, plus ``base_offset``.

    Args:
        first_seq: the sequence number the first record must carry (a segment's file name gives
            it); ``None`` accepts whatever the first record says.
        base_offset: added to every reported offset (when decoding starts mid-file).
        max_payload: lengths above this are damage.

    >>> d = RecordDecoder(first_seq=7)
    >>> d.receive_data(encode_record(7, b"x") + encode_record(8, b"y")[:5])
    >>> d.next_event()
    Record(seq=7, payload=b'x', offset=0)
    >>> d.next_event()
    NEED_DATA
    >>> d.receive_data(b"")
    >>> d.next_event()
    TornTail(offset=18, nbytes=5, reason='incomplete header: 5 of 17 bytes')
    """

    def __init__(
        self,
        *,
        first_seq: int | None = None,
        base_offset: int = 0,
        max_payload: int = MAX_PAYLOAD_BYTES,
    ) -> None:
        self._buf = bytearray()
        self._pos = 0  # index into _buf of the next undecoded record
        self._base = base_offset  # absolute offset of _buf[0]
        self._eof = False
        self._expected_seq = first_seq
        self._max_payload = max_payload
        self._terminal: CleanEnd | TornTail | Corruption | None = None
        # Set once the first damaged record is found: (index into _buf, reason).
        self._damage: tuple[int, str] | None = None
        self._scan_at = 0  # resynchronisation scan position, index into _buf

    @property
    def expected_seq(self) -> int | None:
        """The sequence number the next record must carry (None until known)."""
        return self._expected_seq

    @property
    def offset(self) -> int:
        """Absolute offset of the end of the last record returned (the last good boundary)."""
        return self._base + self._pos

    def receive_data(self, data: bytes) -> None:
        """Add bytes to decode; ``b""`` says the data has ended (like h11's receive_data).

        Raises:
            RuntimeError: data arrived after the end was signalled.
        """
        if not data:
            self._eof = True
            return
        if self._eof:
            raise RuntimeError("received data after the end of data was signalled")
        self._buf += data

    def next_event(self) -> DecoderEvent:
        """Decode the next event; see the module docstring for what each one means.

        Runtime complexity: O(record size) amortised; O(rest of data) once, on damage.
        """
        if self._terminal is not None:
            return self._terminal
        if self._damage is not None:
            return self._classify_damage()
        buf = self._buf
        pos = self._pos
        avail = len(buf) - pos
        if avail == 0:
            if self._eof:
                return self._finish(CleanEnd(self.offset))
            return NEED_DATA
        if buf[pos] != MAGIC:
            return self._found_damage(pos, f"bad magic byte 0x{buf[pos]:02x}, expected 0xa1")
        if avail < HEADER_SIZE:
            if self._eof:
                return self._found_damage(pos, f"incomplete header: {avail} of {HEADER_SIZE} bytes")
            return NEED_DATA
        _, length, seq = _HEADER_PREFIX.unpack_from(buf, pos)
        if length > self._max_payload:
            return self._found_damage(
                pos, f"payload length {length} exceeds the maximum {self._max_payload}"
            )
        end = pos + HEADER_SIZE + length
        if end > len(buf):
            if self._eof:
                return self._found_damage(
                    pos, f"incomplete payload: {avail - HEADER_SIZE} of {length} bytes"
                )
            return NEED_DATA
        if not _crc_ok(buf, pos, length):
            return self._found_damage(pos, f"checksum mismatch in record claiming seq {seq}")
        # The record is intact; from here on, problems are corruption, never a torn tail.
        if self._expected_seq is not None and seq != self._expected_seq:
            return self._finish(
                Corruption(
                    self._base + pos,
                    f"sequence gap: expected seq {self._expected_seq}, found {seq}",
                )
            )
        record = Record(seq, bytes(buf[pos + HEADER_SIZE : end]), self._base + pos)
        self._pos = end
        self._expected_seq = seq + 1
        self._compact()
        return record

    # --- damage handling -------------------------------------------------------------------

    def _found_damage(self, pos: int, reason: str) -> DecoderEvent:
        self._damage = (pos, reason)
        self._scan_at = pos + 1
        return self._classify_damage()

    def _classify_damage(self) -> DecoderEvent:
        """Corruption if an intact record follows the damage, torn tail if none can (see top)."""
        assert self._damage is not None
        pos, reason = self._damage
        verdict = self._scan_for_intact_record()
        if verdict is True:
            return self._finish(Corruption(self._base + pos, reason))
        if verdict is None:  # undecided until more data (or the end) arrives
            return NEED_DATA
        return self._finish(TornTail(self._base + pos, len(self._buf) - pos, reason))

    def _scan_for_intact_record(self) -> bool | None:
        """True if an intact record starts after the damage, False if none can, None: wait."""
        buf = self._buf
        size = len(buf)
        expected = self._expected_seq
        while True:
            cand = buf.find(MAGIC, self._scan_at)
            if cand < 0:
                self._scan_at = size
                return None if not self._eof else False
            if size - cand < HEADER_SIZE:
                if self._eof:
                    return False
                self._scan_at = cand
                return None
            _, length, seq = _HEADER_PREFIX.unpack_from(buf, cand)
            # Plausibility first, so random 0xA1 bytes in payloads cost O(1) each: a record
            # after the damage carries a later seq, and no more of them fit than the bytes allow.
            plausible = length <= self._max_payload and (
                expected is None or expected <= seq <= expected + (size - cand) // HEADER_SIZE + 1
            )
            if plausible:
                end = cand + HEADER_SIZE + length
                if end > size:
                    if not self._eof:
                        self._scan_at = cand  # decide this candidate once its bytes arrive
                        return None
                elif _crc_ok(buf, cand, length):
                    return True
            self._scan_at = cand + 1

    def _finish(self, event: CleanEnd | TornTail | Corruption) -> CleanEnd | TornTail | Corruption:
        self._terminal = event
        return event

    def _compact(self) -> None:
        # Amortised O(1) per byte: only drop the prefix when it is big and most of the buffer.
        if self._pos >= _COMPACT_AT and self._pos * 2 >= len(self._buf):
            del self._buf[: self._pos]
            self._base += self._pos
            self._pos = 0


def _crc_ok(buf: bytearray, pos: int, length: int) -> bool:
    """Check the CRC of the record at ``pos`` without copying its payload."""
    prefix_end = pos + _HEADER_PREFIX.size
    (stored,) = _CRC.unpack_from(buf, prefix_end)
    with memoryview(buf) as view:
        crc = zlib.crc32(view[pos:prefix_end])
        crc = zlib.crc32(view[pos + HEADER_SIZE : pos + HEADER_SIZE + length], crc)
    return crc == stored
