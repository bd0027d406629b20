"""The snapshot byte format: items to bytes and back, with no file I/O (STYLE.md, point 11).

Theory of operation
===================

A snapshot is the engine's state as a stream of *items*, one per entity::

    (kind: str, key: msgpack-able, applied_seq: int, state: msgpack-able)

``applied_seq`` is the seq of the last log record applied to that entity. Snapshots are
*fuzzy*: the writer walks live state while writes continue, so the file header's ``start_seq``
only promises that every item reflects **at least** the records ``< start_seq``; an item may
already include later ones. Recovery loads the snapshot, then replays the log from
``start_seq``, and each entity skips records with ``seq <= applied_seq`` (Redis's RDB-plus-AOF
and ZooKeeper's fuzzy snapshots rest on the same idempotence argument).

File layout (all integers little-endian, like the log)::

    header, 32 bytes:
      0   6  magic b"PSSNAP"
      6   2  format version (1)
      8   8  start_seq, u64
      16  8  created, i64 microseconds since the Unix epoch
      24  4  flags, u32: bit 0 = body is zstd-compressed (must be set); other bits must be 0
      28  4  CRC-32 (zlib) of bytes 0..27
    body: one or more zstd frames whose concatenated content is
      item, item, ..., item   each a msgpack array of 4 (see above)
      nil                     the end marker, a single msgpack nil byte (0xc0)
    trailer, 24 bytes, uncompressed, right after the last frame:
      0   8  magic b"PSSNAPTR"
      8   8  item count, u64
      16  4  CRC-32 (zlib) of the uncompressed body (items and end marker)
      20  4  CRC-32 (zlib) of trailer bytes 0..19

The encoder writes a single frame; the decoder accepts any number, because ``zstd -c a b``, a
future parallel writer, or a tool that recompresses may produce several, and zstandard's
``decompressobj`` stops at the end of the first frame unless told otherwise. The decoder walks
frames itself: after each frame, the next 4 bytes are either the zstd frame magic (another
frame) or the trailer (``read_across_frames=True`` would try to decode the trailer as a frame).

Values: msgpack with ``use_bin_type`` (bytes stay bytes, str stays str). Integers outside
msgpack's range (-2**63 .. 2**64-1) are stored as ExtType code 1 holding the value as signed
big-endian two's complement in the fewest bytes. msgpack's ``Packer`` raises OverflowError for
them instead of calling ``default``, so the encoder packs optimistically and, only when that
fails, walks the item converting big ints (fast path first). On the way back, **arrays come
back as lists** (tuples are not preserved), except arrays used as map keys, which come back as
tuples (recursively) so they stay hashable. Map keys may be any hashable msgpack value (ints for
time buckets, for instance), not only strings.

Integrity: each frame carries zstd's own content checksum (XXH64), the body CRC in the trailer
covers the uncompressed bytes, and the item count and end marker catch truncation at an item
boundary. Items are yielded *before* the checks at the end run: consume the iterator to the end
before trusting what it produced (``validate_snapshot`` does exactly that without keeping
anything).

Decompression is bounded by its *output* (``BoundedZstdFrame``): one step inflates at most one
zstd block (128 KiB), whatever the ratio (zstd reaches ~32,000:1 on zeros), and a file from
elsewhere (``max_inflated``) also has a total bound and a window bound; ``backup.py`` decodes
RankDB backups through the same class.

Cost: O(size) time; memory O(largest item + one 64 KiB read + one 128 KiB block).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Final, NamedTuple

import msgpack
import zstandard

from engine.errors import InvalidInput, PayloadTooLarge

__all__ = [
    "FLAG_ZSTD",
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "MAX_ITEM_BYTES",
    "SNAPSHOT_MAGIC",
    "TRAILER_SIZE",
    "SnapshotCorrupted",
    "SnapshotEncoder",
    "SnapshotHeader",
    "SnapshotInfo",
    "SnapshotItem",
    "SnapshotTooLarge",
    "BoundedZstdFrame",
    "InflateBudget",
    "ZstdFrameError",
    "ZSTD_MAX_BLOCK",
    "UNTRUSTED_MAX_WINDOW",
    "check_snapshot",
    "iter_snapshot_items",
    "read_snapshot_header",
    "validate_snapshot",
]

#####################################################################
# Format constants
#####################################################################

# Six ASCII bytes, like PNG's "\x89PNG\r\n" or SQLite's "SQLite format 3": `file` and `head`
# recognise the file, and a text-mode transfer mangling would show.
SNAPSHOT_MAGIC: Final = b"PSSNAP"
# Bump on any incompatible change; readers refuse versions they do not know (as PostgreSQL
# refuses a data directory whose catalog version differs).
FORMAT_VERSION: Final = 1
FLAG_ZSTD: Final = 0x1
_KNOWN_FLAGS: Final = FLAG_ZSTD
_HEADER: Final = struct.Struct("<6sHQqI")
_CRC: Final = struct.Struct("<I")
HEADER_SIZE: Final = _HEADER.size + _CRC.size  # 32

_TRAILER_MAGIC: Final = b"PSSNAPTR"
_TRAILER: Final = struct.Struct("<8sQI")
TRAILER_SIZE: Final = _TRAILER.size + _CRC.size  # 24

_END_MARKER: Final = b"\xc0"  # msgpack nil
_ZSTD_FRAME_MAGIC: Final = b"\x28\xb5\x2f\xfd"  # 0xFD2FB528 little-endian (RFC 8878, 3.1.1)

# zstd level 3 is the zstd CLI's default and the library's: ~300+ MB/s compression on one core
# with ratios close to gzip -9's. Not benchmarked on pointspace state yet.
DEFAULT_LEVEL: Final = 3

# The largest packed item. The engine splits bigger entities into several items. Precedent:
# msgpack's own Unpacker defaults to 100 MiB for untrusted input; snapshots are ours, so we
# allow 1 GiB (well under msgpack's 4 GiB hard limit).
MAX_ITEM_BYTES: Final = 1 << 30

_EXT_BIGINT: Final = 1
_MSGPACK_MIN: Final = -(2**63)
_MSGPACK_MAX: Final = 2**64 - 1

# Read compressed input 64 KiB at a time (zstd's recommended input size is 128 KiB; smaller
# reads bound how much one read can inflate).
_READ_CHUNK: Final = 64 * 1024


class SnapshotCorrupted(InvalidInput):
    """The bytes are not a valid snapshot: damaged, truncated, wrong format or compression."""


class SnapshotItem(NamedTuple):
    """One entity's state. The engine may pass plain 4-tuples; decoding yields these."""

    kind: str
    key: Any
    applied_seq: int
    state: Any


@dataclass(frozen=True, slots=True)
class SnapshotHeader:
    """The fixed header: which log position the snapshot is consistent with, and when."""

    start_seq: int
    created: float  # Unix time, seconds
    version: int
    flags: int


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """What a written or validated snapshot holds."""

    start_seq: int
    items: int
    created: float  # Unix time, seconds


#####################################################################
# Encoding
#####################################################################


def _bigint_to_ext(value: int) -> msgpack.ExtType:
    length = (value.bit_length() + 8) // 8  # room for the sign bit
    return msgpack.ExtType(_EXT_BIGINT, value.to_bytes(length, "big", signed=True))


def _convert_big_ints(obj: Any) -> Any:
    """Replace out-of-range ints, anywhere in ``obj``, by their ExtType; copies containers."""
    if isinstance(obj, int) and not isinstance(obj, bool):
        return obj if _MSGPACK_MIN <= obj <= _MSGPACK_MAX else _bigint_to_ext(obj)
    if isinstance(obj, tuple):  # stays a tuple: it may be a dict key
        return tuple(_convert_big_ints(x) for x in obj)
    if isinstance(obj, list):
        return [_convert_big_ints(x) for x in obj]
    if isinstance(obj, dict):
        return {_convert_big_ints(k): _convert_big_ints(v) for k, v in obj.items()}
    return obj


class SnapshotEncoder:
    """Turns items into snapshot bytes incrementally; the caller does the I/O.

    Write ``header_bytes()``, then the (possibly empty) result of ``encode_item`` for each
    item, then ``finish()``. ``encode_item`` is ``add_packed(pack_item(item))``; the two halves
    exist so that a writer can pack items where the live state is (the event loop) and
    compress elsewhere (a worker thread). Calls to ``add_packed`` must follow item order.

    >>> import io
    >>> enc = SnapshotEncoder(start_seq=5, created=0.0)
    >>> data = enc.header_bytes() + enc.encode_item(("counter", "hits", 4, {1: 2**70})) + enc.finish()
    >>> list(iter_snapshot_items(io.BytesIO(data)))
    [SnapshotItem(kind='counter', key='hits', applied_seq=4, state={1: 1180591620717411303424})]
    """

    def __init__(self, start_seq: int, created: float, *, level: int = DEFAULT_LEVEL) -> None:
        if not 0 <= start_seq <= _MSGPACK_MAX:
            raise ValueError(f"start_seq must be in 0..2**64-1, got {start_seq!r}")
        self.start_seq = start_seq
        self.created = created
        self._packer = msgpack.Packer(use_bin_type=True, datetime=False)
        self._compressor = zstandard.ZstdCompressor(level=level, write_checksum=True).compressobj()
        self._crc = 0
        self._count = 0
        self._finished = False

    @property
    def items(self) -> int:
        """Items added so far."""
        return self._count

    def header_bytes(self) -> bytes:
        """The fixed 32-byte header."""
        prefix = _HEADER.pack(
            SNAPSHOT_MAGIC,
            FORMAT_VERSION,
            self.start_seq,
            round(self.created * 1_000_000),
            FLAG_ZSTD,
        )
        return prefix + _CRC.pack(zlib.crc32(prefix))

    def pack_item(self, item: tuple[str, Any, int, Any]) -> bytes:
        """Validate and msgpack one item; no state changes, so it can run anywhere.

        Raises:
            TypeError: ``item`` is not a 4-tuple ``(str, key, int, state)`` or holds something
                msgpack cannot encode (a bug in the engine's item generator).
            ValueError: ``applied_seq`` is negative or the packed item exceeds MAX_ITEM_BYTES.

        Runtime complexity: O(size of the item); a second pass only if it holds big ints.
        """
        if not isinstance(item, tuple | list) or len(item) != 4:
            raise TypeError(
                f"a snapshot item must be (kind, key, applied_seq, state), got {item!r:.200}"
            )
        kind, _, applied_seq, _ = item
        if not isinstance(kind, str):
            raise TypeError(f"item kind must be a str, got {kind!r}")
        if not isinstance(applied_seq, int) or isinstance(applied_seq, bool) or applied_seq < 0:
            raise ValueError(f"applied_seq must be an int >= 0, got {applied_seq!r}")
        try:
            # Fast path: no big ints, one C call.
            packed = self._packer.pack(tuple(item))
        except OverflowError:
            packed = self._packer.pack(_convert_big_ints(tuple(item)))
        if len(packed) > MAX_ITEM_BYTES:
            raise ValueError(
                f"a snapshot item must pack to at most {MAX_ITEM_BYTES} bytes, got "
                f"{len(packed)} for kind {kind!r}; split the entity into several items"
            )
        return packed

    def add_packed(self, packed: bytes) -> bytes:
        """Append one packed item to the body; returns compressed bytes to write (maybe b"")."""
        if self._finished:
            raise RuntimeError("the snapshot is finished; start a new SnapshotEncoder")
        self._crc = zlib.crc32(packed, self._crc)
        self._count += 1
        return self._compressor.compress(packed)

    def encode_item(self, item: tuple[str, Any, int, Any]) -> bytes:
        """``add_packed(pack_item(item))``: compressed bytes to write, possibly b""."""
        return self.add_packed(self.pack_item(item))

    def finish(self) -> bytes:
        """The end marker, the end of the zstd frame and the trailer: the last bytes to write."""
        if self._finished:
            raise RuntimeError("the snapshot is already finished")
        self._finished = True
        self._crc = zlib.crc32(_END_MARKER, self._crc)
        body_end = self._compressor.compress(_END_MARKER) + self._compressor.flush()
        trailer = _TRAILER.pack(_TRAILER_MAGIC, self._count, self._crc)
        return body_end + trailer + _CRC.pack(zlib.crc32(trailer))


#####################################################################
# Decoding
#####################################################################


def _read_exactly(stream: BinaryIO, n: int) -> bytes:
    chunks = []
    while n > 0:
        chunk = stream.read(n)
        if not chunk:
            break
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_snapshot_header(stream: BinaryIO) -> SnapshotHeader:
    """Read and check the 32-byte header, leaving ``stream`` at the body.

    Raises:
        SnapshotCorrupted: not a snapshot, an unknown version or flags, or a damaged header.
    """
    data = _read_exactly(stream, HEADER_SIZE)
    if len(data) < HEADER_SIZE:
        raise SnapshotCorrupted(
            f"snapshot is truncated: the header needs {HEADER_SIZE} bytes, the file has {len(data)}"
        )
    magic, version, start_seq, created_us, flags = _HEADER.unpack_from(data)
    if magic != SNAPSHOT_MAGIC:
        raise SnapshotCorrupted(
            f"not a pointspace snapshot: the file starts with {magic!r}, expected {SNAPSHOT_MAGIC!r}"
        )
    if version != FORMAT_VERSION:
        raise SnapshotCorrupted(
            f"unsupported snapshot format version {version}; this server reads version "
            f"{FORMAT_VERSION}"
        )
    (stored_crc,) = _CRC.unpack_from(data, _HEADER.size)
    if zlib.crc32(data[: _HEADER.size]) != stored_crc:
        raise SnapshotCorrupted("snapshot header checksum mismatch: the header is damaged")
    if flags & ~_KNOWN_FLAGS or not flags & FLAG_ZSTD:
        raise SnapshotCorrupted(
            f"unsupported snapshot flags 0x{flags:08x}; this server reads 0x{FLAG_ZSTD:08x}"
        )
    return SnapshotHeader(start_seq, created_us / 1_000_000, version, flags)


def _freeze(value: Any) -> Any:
    """Make a decoded map key hashable: lists become tuples, recursively."""
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _pairs_hook(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    try:
        return dict(pairs)  # fast path: every key already hashable
    except TypeError:
        return {_freeze(k): v for k, v in pairs}


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _EXT_BIGINT:
        return int.from_bytes(data, "big", signed=True)
    raise ValueError(f"unknown msgpack extension type {code}")


#####################################################################
# Bounded zstd decompression (every reader of untrusted zstd goes through here)
#####################################################################

#: The largest block a zstd frame may hold, decompressed: RFC 8878 3.1.1.2.3
#: (``Block_Maximum_Size`` = min(Window_Size, 128 KiB)). One decompression step inflates at most
#: one block, so this is also the bound on the output of one step.
ZSTD_MAX_BLOCK: Final = 128 * 1024

#: The window an untrusted frame may ask for. RFC 9659 (zstd as an HTTP content coding) caps
#: it at 8 MiB for the same reason: the decoder allocates the window up front. Our own writers
#: use level 3 (a 2 MiB window at most); ``zstd -19`` stays within 8 MiB, ``zstd --long`` does not.
UNTRUSTED_MAX_WINDOW: Final = 8 * 1024 * 1024

_SKIP_FIELDS: Final = (0, 1, 2, 4)  # Dictionary_ID field sizes by Dictionary_ID_flag
_FCS_FIELDS: Final = (0, 2, 4, 8)  # Frame_Content_Size field sizes by FCS_Field_Size flag
_BLOCK_RLE: Final = 1
_BLOCK_RESERVED: Final = 3

# Walker states: the part of the frame the next byte belongs to.
_F_HEAD = 0  # magic and frame header descriptor (5 bytes, collected)
_F_HEAD_REST = 1  # window descriptor, dictionary id, content size
_F_BLOCK_HEAD = 2  # a block header (3 bytes, collected)
_F_BLOCK_BODY = 3
_F_CHECKSUM = 4
_F_DONE = 5


class ZstdFrameError(Exception):
    """A zstd frame that cannot be decoded (damaged, or over a bound). The caller turns it
    into its own format's error (``SnapshotCorrupted``, ``BackupCorrupted``)."""


class BoundedZstdFrame:
    """One zstd frame, fed in pieces of any size, inflated one block at a time.

    zstandard's ``decompressobj().decompress(data)`` inflates everything ``data`` holds in
    one call, and has no output bound: 32 KB can hold a gigabyte of zeros (about 4 bytes per
    128 KiB block), all of it in one ``bytes``. So this class walks the frame's structure
    (RFC 8878 3.1.1: header, then blocks of a 3-byte header and a known length, then an
    optional checksum) and hands the decompressor one piece of one block at a time. A block
    is at most ``ZSTD_MAX_BLOCK`` bytes once inflated (checked here, not left to libzstd), so
    every piece :meth:`feed` yields is at most 128 KiB, however the input was cut; the caller
    counts the total and stops when it is too much. The walk also knows exactly where the
    frame ends, which ``decompressobj`` only tells after the fact, and checks that the two
    agree.

    >>> data = zstandard.ZstdCompressor(write_checksum=True).compress(bytes(1 << 20))
    >>> frame = BoundedZstdFrame(zstandard.ZstdDecompressor())
    >>> pieces = list(frame.feed(data + b"tail"))
    >>> max(map(len, pieces)) <= ZSTD_MAX_BLOCK, sum(map(len, pieces)), frame.eof, frame.unused_data
    (True, 1048576, True, b'tail')

    Runtime complexity: O(input + output), two or three decompressor calls per block.
    """

    __slots__ = ("_obj", "_state", "_left", "_small", "_checksum", "_last", "eof", "unused_data")

    def __init__(self, dctx: zstandard.ZstdDecompressor) -> None:
        self._obj = dctx.decompressobj()
        self._state = _F_HEAD
        self._left = 5
        self._small = bytearray()
        self._checksum = False
        self._last = False
        #: True once the frame's last byte (its checksum, or its last block) went in.
        self.eof = False
        #: What followed the frame's end in the input (empty until ``eof``).
        self.unused_data = b""

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Yield the decompressed pieces that ``data`` completes (each <= 128 KiB).

        Raises:
            ZstdFrameError: the frame is damaged, or breaks a bound (block size).
        """
        if self.eof:
            raise ZstdFrameError("the frame already ended; start a new BoundedZstdFrame")
        view = memoryview(data)
        pos, end = 0, len(view)
        while pos < end and not self.eof:
            take = min(self._left, end - pos)
            piece = view[pos : pos + take]
            pos += take
            self._left -= take
            if self._state in (_F_HEAD, _F_BLOCK_HEAD):
                self._small += piece
            try:
                out = self._obj.decompress(piece)
            except zstandard.ZstdError as exc:
                raise ZstdFrameError(str(exc)) from None
            if out:
                yield out
            if self._left == 0:
                self._advance()
        if self.eof:
            if not self._obj.eof:
                raise ZstdFrameError("the frame's blocks end where the decompressor expects more")
            self.unused_data = bytes(view[pos:])
        elif self._obj.eof:
            raise ZstdFrameError("the decompressor saw the frame end before its last block")

    def _advance(self) -> None:
        """The current field is complete: parse it if it was collected, and move on."""
        state = self._state
        if state == _F_HEAD:
            descriptor = self._small[4]
            single_segment = descriptor >> 5 & 1
            fcs = _FCS_FIELDS[descriptor >> 6] or single_segment
            self._checksum = bool(descriptor >> 2 & 1)
            self._small.clear()
            self._state, self._left = _F_HEAD_REST, (1 - single_segment) + _SKIP_FIELDS[descriptor & 3] + fcs
            if self._left == 0:
                self._advance()
        elif state == _F_HEAD_REST:
            self._state, self._left = _F_BLOCK_HEAD, 3
        elif state == _F_BLOCK_HEAD:
            header = int.from_bytes(self._small, "little")
            self._small.clear()
            self._last = bool(header & 1)
            kind, size = header >> 1 & 3, header >> 3
            if kind == _BLOCK_RESERVED:
                raise ZstdFrameError("a block has the reserved block type 3")
            if size > ZSTD_MAX_BLOCK:
                raise ZstdFrameError(
                    f"a block is {size} bytes, over zstd's {ZSTD_MAX_BLOCK}-byte block maximum"
                )
            self._state, self._left = _F_BLOCK_BODY, 1 if kind == _BLOCK_RLE else size
            if self._left == 0:
                self._advance()
        elif state == _F_BLOCK_BODY:
            if not self._last:
                self._state, self._left = _F_BLOCK_HEAD, 3
            elif self._checksum:
                self._state, self._left = _F_CHECKSUM, 4
            else:
                self._state, self.eof = _F_DONE, True
        elif state == _F_CHECKSUM:
            self._state, self.eof = _F_DONE, True


class InflateBudget:
    """Counts inflated bytes against a limit (``Settings.max_inflated_bytes``).

    ``limit=None`` counts without a limit (the server reading its own snapshots).
    """

    __slots__ = ("limit", "used", "_error")

    def __init__(self, limit: int | None, error: type[PayloadTooLarge], what: str,
                 field: str | None = None) -> None:
        self.limit = limit
        self.used = 0
        self._error = (error, what, field)

    def spend(self, n: int) -> None:
        """Count ``n`` more bytes; raise the configured error once past the limit."""
        self.used += n
        if self.limit is not None and self.used > self.limit:
            error, what, field = self._error
            raise error(
                f"{what} inflates to more than {self.limit} bytes, the limit "
                "(max_inflated_bytes); raise that setting if the data is genuine",
                field,
            )


class SnapshotTooLarge(PayloadTooLarge):
    """A snapshot inflates past the caller's limit (``max_inflated_bytes``)."""


def _body_chunks(stream: BinaryIO, tail: bytearray, budget: InflateBudget,
                 max_window: int) -> Iterator[bytes]:
    """Yield the decompressed body across all zstd frames, each piece <= 128 KiB; leave what
    follows them in ``tail``."""
    dctx = zstandard.ZstdDecompressor(max_window_size=max_window)
    buf = b""
    frame: BoundedZstdFrame | None = None
    frames = 0
    eof = False
    while True:
        if frame is None:  # between frames: 4 bytes tell a frame from the trailer
            if len(buf) < 4 and not eof:
                more = stream.read(_READ_CHUNK)
                eof = not more
                buf += more
                continue
            if buf[:4] != _ZSTD_FRAME_MAGIC:
                if frames == 0:
                    raise SnapshotCorrupted(
                        f"snapshot body is not zstd-compressed: it starts with {buf[:4].hex(' ')}"
                        f", expected the zstd frame magic {_ZSTD_FRAME_MAGIC.hex(' ')}"
                    )
                tail += buf
                tail += _read_exactly(stream, TRAILER_SIZE + 1 - len(tail))
                return
            frame = BoundedZstdFrame(dctx)
            frames += 1
        if buf:
            try:
                for out in frame.feed(buf):
                    budget.spend(len(out))
                    yield out
            except ZstdFrameError as exc:
                raise SnapshotCorrupted(f"snapshot body is damaged (zstd frame {frames}): {exc}") from None
            buf = b""
            if frame.eof:
                buf, frame = frame.unused_data, None
                continue
        if eof:
            raise SnapshotCorrupted(f"snapshot is truncated inside zstd frame {frames}")
        buf = stream.read(_READ_CHUNK)
        eof = not buf


def iter_snapshot_items(stream: BinaryIO, *, max_inflated: int | None = None) -> Iterator[SnapshotItem]:
    """Decode a snapshot from a binary stream, yielding its items in order.

    Validates the header first and, once the items are exhausted, the end marker, item count,
    body checksum and trailer. Arrays in keys and states come back as lists (map keys as
    tuples); see the module docstring.

    Args:
        max_inflated: for a file from elsewhere (an import, a download): the most bytes the
            body may inflate to, and zstd windows are held to ``UNTRUSTED_MAX_WINDOW``.
            ``None`` is for the server's own snapshots.

    Raises:
        SnapshotCorrupted: anything wrong with the bytes, possibly after some items were yielded.
        SnapshotTooLarge: the body inflates past ``max_inflated``.

    Runtime complexity: O(file size); memory O(largest item + one 128 KiB zstd block).
    """
    read_snapshot_header(stream)
    return _iter_body(stream, max_inflated)


def _iter_body(stream: BinaryIO, max_inflated: int | None) -> Iterator[SnapshotItem]:
    """The items after the header, then the end-of-stream checks."""
    budget = InflateBudget(max_inflated, SnapshotTooLarge, "the snapshot")
    max_window = 0 if max_inflated is None else UNTRUSTED_MAX_WINDOW  # 0: libzstd's default
    unpacker = msgpack.Unpacker(
        use_list=True,
        raw=False,
        strict_map_key=False,
        object_pairs_hook=_pairs_hook,
        ext_hook=_ext_hook,
        max_buffer_size=MAX_ITEM_BYTES,
    )
    crc = 0
    fed = 0
    count = 0
    ended = False
    end_at = 0
    tail = bytearray()
    for chunk in _body_chunks(stream, tail, budget, max_window):
        crc = zlib.crc32(chunk, crc)
        fed += len(chunk)
        try:
            unpacker.feed(chunk)
        except msgpack.BufferFull:
            raise SnapshotCorrupted(
                f"snapshot item {count} is larger than the {MAX_ITEM_BYTES}-byte limit"
            ) from None
        while True:
            try:
                obj = unpacker.unpack()
            except msgpack.OutOfData:
                break
            except (ValueError, TypeError, msgpack.UnpackException) as exc:
                raise SnapshotCorrupted(f"snapshot item {count} is damaged: {exc}") from None
            if ended:
                raise SnapshotCorrupted("snapshot has data after its end marker")
            if obj is None:
                ended = True
                end_at = unpacker.tell()
                continue
            if (
                not isinstance(obj, list)
                or len(obj) != 4
                or not isinstance(obj[0], str)
                or type(obj[2]) is not int
            ):
                raise SnapshotCorrupted(
                    f"snapshot item {count} is not (kind, key, applied_seq, state): {obj!r:.200}"
                )
            count += 1
            yield SnapshotItem(*obj)
    if not ended:
        raise SnapshotCorrupted(f"snapshot is truncated: no end marker after {count} items")
    if end_at != fed:  # a partial object after the end marker
        raise SnapshotCorrupted("snapshot has data after its end marker")
    _check_trailer(bytes(tail), count, crc)


def _scan_body(stream: BinaryIO) -> int:
    """The item count of the body after the header, checked as :func:`_iter_body` checks it
    (zstd, body CRC, item count, end marker, trailer) but with each item skipped by msgpack's
    ``skip()`` instead of built: no objects, so ~4x faster (0.25 s instead of 1.0 s for a
    10M-bucket snapshot, bench/bench_durability.py). Item shapes are left to the load.

    The body's last byte is held back and decoded on its own at the end: it must be exactly
    the nil end marker, with nothing unfinished before it (``Unpacker.tell`` cannot say where
    a skipped object began: it drifts when ``skip`` runs out of data).
    """
    unpacker = msgpack.Unpacker(max_buffer_size=MAX_ITEM_BYTES)
    budget = InflateBudget(None, SnapshotTooLarge, "the snapshot")
    crc = items = 0
    held = b""
    tail = bytearray()
    for chunk in _body_chunks(stream, tail, budget, 0):
        if not chunk:
            continue
        crc = zlib.crc32(chunk, crc)
        try:
            unpacker.feed(held)
            unpacker.feed(chunk[:-1])
        except msgpack.BufferFull:
            raise SnapshotCorrupted(
                f"snapshot item {items} is larger than the {MAX_ITEM_BYTES}-byte limit"
            ) from None
        held = chunk[-1:]
        while True:
            try:
                unpacker.skip()
            except msgpack.OutOfData:
                break
            except (ValueError, TypeError, msgpack.UnpackException) as exc:
                raise SnapshotCorrupted(f"snapshot item {items} is damaged: {exc}") from None
            items += 1
    unpacker.feed(held)
    try:
        last = unpacker.unpack()
    except (msgpack.OutOfData, ValueError):
        # The held byte ends nothing, or an item is cut before it (msgpack then refuses to
        # switch from skip to unpack): either way no end marker closes the body.
        last = ...
    if held != _END_MARKER or last is not None:
        raise SnapshotCorrupted(f"snapshot is truncated: no end marker after {items} items")
    _check_trailer(bytes(tail), items, crc)
    return items


def check_snapshot(stream: BinaryIO) -> SnapshotInfo:
    """Check one of the server's own snapshots before loading it: every check of
    :func:`validate_snapshot` on the bytes (header, zstd, body CRC, item count, end marker,
    trailer), without building the items.

    Recovery uses it to pick the newest intact snapshot, then loads that one with
    :func:`iter_snapshot_items`, which checks each item's shape as it goes: the body CRC
    already vouches that the bytes are the ones the writer packed. Files from elsewhere go
    through :func:`validate_snapshot`, with its bounds.

    Raises:
        SnapshotCorrupted: see :func:`iter_snapshot_items`.

    Runtime complexity: O(file size); memory O(largest item).
    """
    header = read_snapshot_header(stream)
    return SnapshotInfo(header.start_seq, _scan_body(stream), header.created)


def _check_trailer(tail: bytes, count: int, crc: int) -> None:
    if len(tail) != TRAILER_SIZE:
        what = "truncated" if len(tail) < TRAILER_SIZE else "followed by extra bytes"
        raise SnapshotCorrupted(
            f"snapshot trailer is {what}: expected {TRAILER_SIZE} bytes after the body"
        )
    magic, stored_count, stored_crc = _TRAILER.unpack_from(tail)
    (trailer_crc,) = _CRC.unpack_from(tail, _TRAILER.size)
    if magic != _TRAILER_MAGIC or zlib.crc32(tail[: _TRAILER.size]) != trailer_crc:
        raise SnapshotCorrupted("snapshot trailer is damaged")
    if stored_count != count:
        raise SnapshotCorrupted(
            f"snapshot item count mismatch: the trailer says {stored_count}, the body has {count}"
        )
    if stored_crc != crc:
        raise SnapshotCorrupted("snapshot body checksum mismatch: the items are damaged")


def validate_snapshot(stream: BinaryIO, *, max_inflated: int | None = None) -> SnapshotInfo:
    """Read a whole snapshot, checking everything, without keeping any item.

    Use it before replacing anything with an imported file (``pointspace snapshot import``),
    with ``max_inflated`` set for a file from elsewhere (see :func:`iter_snapshot_items`).

    Raises:
        SnapshotCorrupted: see :func:`iter_snapshot_items`.
        SnapshotTooLarge: the body inflates past ``max_inflated``.

    Runtime complexity: O(file size); memory O(largest item).
    """
    header = read_snapshot_header(stream)
    items = sum(1 for _ in _iter_body(stream, max_inflated))
    return SnapshotInfo(header.start_seq, items, header.created)
