"""The ranked-list backup stream (RankDB ``PUT /xlist/backup`` / ``POST /xlist/restore``): bytes
in and out, no I/O (STYLE.md, point 11).

Theory of operation
===================

A backup is a *stream*: the server writes it list by list while it reads lists one at a time,
and a restore reads it while the body arrives. So the format is self-delimiting (no length or
index up front, no trailer), and both sides here are incremental: :class:`BackupEncoder`
returns the compressed bytes of one list header or one chunk of elements at a time, and
:class:`BackupDecoder` is fed bytes as they come and hands back each list once it is complete
(h11's "bring your own I/O"). Neither side ever holds the stream as one piece.

Layout (RankDB's own layout, section 3 of docs ``rankdb.md``, in spirit; not byte-compatible)::

    zstd frame(s), content checksum on, whose concatenated content is a msgpack value sequence:
      repeat per list:
        true                          another list follows
        2                             list record version (RankDB writes 1 + a Go binary blob)
        "list-id"                     the list's id on the source server
        {"settings": {"set", "metadata", "split_size", "merge_size", "load_index"},
         "elements": n, "chunks": k,
         "board": [...]}              the list header; "board" only for a live leaderboard:
                                      ``BoardDefinition.to_plain()`` (engine/boards.py)
        k chunks                      ``RankedList.to_records()`` maps, in rank order:
                                      {"v": 1, "count", "ids": <u64 LE>, "scores": <u64 LE>,
                                       "tie_breakers": <u32 LE>, "updated_at": <u32 LE>,
                                       "payloads": {id: object}}
      false                           end of stream; nothing may follow

The chunks are the ones ``snapshots/codec.py`` stores for a list inside a snapshot item
(``ListState.to_plain``), msgpack'd the same way (``use_bin_type``, big ints as ExtType 1) and
compressed with the same zstd settings, so a list has one wire form of its elements.

Integrity: zstd's per-frame XXH64 content checksum catches damaged bytes; the header's
``elements`` and ``chunks`` counts, each chunk's array lengths and the end marker catch
truncation and framing mistakes. Restore must consume the whole stream (``close()``) before it
trusts any list: a stream that stops early, even at a list boundary, raises.

Wrong layers get their own messages (RankDB issue #13, where a user zstd'd an already
compressed ``.bin`` and got "magic number mismatch"): an uncompressed stream, a stream
compressed twice, gzip, a pointspace snapshot file, or a RankDB backup each say what they are
and what to do.

A restore of a list with a ``board`` brings back a live leaderboard (``RestoreBoard``): its
entries are recomputed from the restoring server's counters, never taken from the stream, so a
crafted backup cannot forge standings. A stream without the field (older backups) restores
plain lists.

Untrusted input: decompression is bounded by its output (``snapshots/codec.py``,
``BoundedZstdFrame``: one zstd block, at most 128 KiB, per step), the decoder counts what it
inflated against ``max_inflated`` (``Settings.max_inflated_bytes``), zstd windows are held to
8 MiB, and one msgpack value to ``MAX_RECORD_BYTES``. With ``reveal=False`` (a file read on the
server) error messages describe values by type only, never quoting the bytes.

Cost: O(size) time; encoder memory O(one chunk); decoder memory O(one list's records + one
128 KiB block), the unit restore must hold anyway to validate before replacing. Not
benchmarked yet.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import msgpack
import zstandard

from engine.boards import BoardDefinition, check_board_plain
from engine.errors import InvalidInput, PayloadTooLarge
from engine.lists import LIST_ID, ListSettings, check_payload
from engine.ranked import RECORDS_VERSION
from snapshots.codec import (
    DEFAULT_LEVEL,
    UNTRUSTED_MAX_WINDOW,
    BoundedZstdFrame,
    InflateBudget,
    ZstdFrameError,
    _convert_big_ints,
    _ext_hook,
)

__all__ = [
    "LIST_RECORD_VERSION",
    "MAX_RECORD_BYTES",
    "BackupCorrupted",
    "BackupDecoder",
    "BackupEncoder",
    "BackupList",
    "BackupTooLarge",
    "decode_backup",
    "encode_backup",
]

#####################################################################
# Format constants
#####################################################################

#: The per-list record version. RankDB's records are version 1 followed by a Go binary blob
#: that pointspace cannot read; pointspace writes 2, so a RankDB file is told apart at once.
LIST_RECORD_VERSION: Final = 2
_RANKDB_RECORD_VERSION: Final = 1

#: The largest single msgpack value (one chunk: 64Ki rows are ~1.5 MB plus payloads). Precedent:
#: msgpack's Unpacker defaults to 100 MiB for untrusted input; backups arrive over HTTP, so we
#: stay near that rather than the snapshot codec's 1 GiB.
MAX_RECORD_BYTES: Final = 256 * 1024 * 1024

_ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"  # 0xFD2FB528 little-endian (RFC 8878, 3.1.1)
_GZIP_MAGIC: Final = b"\x1f\x8b"
_SNAPSHOT_MAGIC: Final = b"PSSNAP"
_MSGPACK_TRUE: Final = 0xC3
_MSGPACK_FALSE: Final = 0xC2

_SETTINGS_KEYS: Final = ("set", "metadata", "split_size", "merge_size", "load_index")


class BackupCorrupted(InvalidInput):
    """The bytes are not a valid backup stream: damaged, truncated, or the wrong format or
    compression. A 400: the client sent them."""


class BackupTooLarge(PayloadTooLarge):
    """The stream inflates past the decoder's ``max_inflated`` bytes. A 413: the request is
    well-formed as far as it went, but its content, decompressed, is more than this server
    takes (``max_inflated_bytes``), and sending it again will not help."""


@dataclass(frozen=True, slots=True)
class BackupList:
    """One decoded list: its source id, settings, element count and ``to_records`` chunks,
    and the definition of the live leaderboard it was (``None``: a plain ranked list)."""

    list_id: str
    settings: ListSettings
    elements: int
    records: list[dict[str, Any]]
    board: BoardDefinition | None = None


#####################################################################
# Encoding
#####################################################################


def settings_to_plain(settings: ListSettings) -> dict[str, Any]:
    return {
        "set": settings.set,
        "metadata": dict(settings.metadata),
        "split_size": settings.split_size,
        "merge_size": settings.merge_size,
        "load_index": settings.load_index,
    }


class BackupEncoder:
    """Turns lists into backup bytes incrementally; the caller does the I/O.

    For each list call ``start_list`` once, then ``add_chunk`` exactly ``chunks`` times; end
    with ``finish``. Each call returns compressed bytes to send (possibly ``b""``: zstd keeps
    up to a block back). ``start_list`` and ``finish`` also flush the previous list's last
    block, so every list is on the wire once the next begins.

    >>> enc = BackupEncoder()
    >>> settings = ListSettings(set="s1")
    >>> data = enc.start_list("top", settings, elements=0, chunks=0) + enc.finish()
    >>> [(b.list_id, b.elements) for b in decode_backup(data)]
    [('top', 0)]

    Runtime complexity: O(size of each chunk) per call.
    """

    def __init__(self, *, level: int = DEFAULT_LEVEL) -> None:
        self._packer = msgpack.Packer(use_bin_type=True, datetime=False)
        self._compressor = zstandard.ZstdCompressor(level=level, write_checksum=True).compressobj()
        self._chunks_left = 0
        self._list_id: str | None = None
        self._finished = False
        self.lists = 0
        self.bytes_out = 0

    def _out(self, data: bytes) -> bytes:
        self.bytes_out += len(data)
        return data

    def _pack(self, value: Any) -> bytes:
        try:
            return self._packer.pack(value)  # fast path: no ints beyond 64 bits
        except OverflowError:
            return self._packer.pack(_convert_big_ints(value))

    def _check_between_lists(self, what: str) -> None:
        if self._finished:
            raise RuntimeError("the backup is finished; start a new BackupEncoder")
        if self._chunks_left:
            raise RuntimeError(
                f"list {self._list_id!r} still needs {self._chunks_left} chunk(s) before {what}"
            )

    def _flush_block(self) -> bytes:
        if self._list_id is None:
            return b""
        return self._compressor.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)

    def start_list(self, list_id: str, settings: ListSettings, *, elements: int, chunks: int,
                   board: BoardDefinition | None = None) -> bytes:
        """Begin a list of ``elements`` elements that will come as ``chunks`` chunks;
        ``board`` is the definition of a live leaderboard (kept so a restore revives it).

        Raises:
            RuntimeError: the previous list is missing chunks, or the backup is finished.
            ValueError: a negative count, or elements without chunks.
        """
        self._check_between_lists(f"list {list_id!r} can start")
        if elements < 0 or chunks < 0 or (elements and not chunks):
            raise ValueError(f"list {list_id!r}: need elements >= 0 and chunks >= 1 when elements > 0, "
                             f"got elements={elements!r} chunks={chunks!r}")
        head = self._flush_block()
        header: dict[str, Any] = {"settings": settings_to_plain(settings), "elements": elements,
                                  "chunks": chunks}
        if board is not None:
            header["board"] = board.to_plain()
        packed = b"".join((self._pack(True), self._pack(LIST_RECORD_VERSION),
                           self._pack(list_id), self._pack(header)))
        self._list_id = list_id
        self._chunks_left = chunks
        self.lists += 1
        return self._out(head + self._compressor.compress(packed))

    def add_chunk(self, record: Mapping[str, Any]) -> bytes:
        """Append one ``RankedList.to_records()`` chunk of the current list."""
        if self._chunks_left <= 0:
            raise RuntimeError(
                f"list {self._list_id!r} announced no more chunks; call start_list or finish"
            )
        packed = self._pack(record)
        if len(packed) > MAX_RECORD_BYTES:
            raise ValueError(
                f"a backup chunk must pack to at most {MAX_RECORD_BYTES} bytes, got {len(packed)} "
                f"in list {self._list_id!r}; use a smaller chunk size"
            )
        self._chunks_left -= 1
        return self._out(self._compressor.compress(packed))

    def finish(self) -> bytes:
        """The end marker and the end of the zstd frame: the last bytes to send."""
        self._check_between_lists("the backup can finish")
        self._finished = True
        return self._out(self._compressor.compress(self._pack(False)) + self._compressor.flush())

    def encode_list(self, list_id: str, settings: ListSettings,
                    records: list[Mapping[str, Any]],
                    board: BoardDefinition | None = None) -> Iterator[bytes]:
        """``start_list`` then ``add_chunk`` for each record, as an iterator of byte pieces."""
        elements = sum(int(r["count"]) for r in records)
        yield self.start_list(list_id, settings, elements=elements, chunks=len(records),
                              board=board)
        for record in records:
            yield self.add_chunk(record)


def encode_backup(lists: Iterable[tuple[Any, ...]]) -> bytes:
    """A whole backup in memory, for tests and small tools: ``(id, settings, records)`` or
    ``(id, settings, records, board)`` each."""
    enc = BackupEncoder()
    parts = [piece for item in lists for piece in enc.encode_list(*item)]
    parts.append(enc.finish())
    return b"".join(parts)


#####################################################################
# Decoding
#####################################################################

# Decoder states: what the next msgpack value must be. Transitions are data: each state has
# one handler method, named in _HANDLERS, which returns the next state.
MARKER = "MARKER"  # true (a list follows) or false (the end)
VERSION = "VERSION"
LIST_ID_STATE = "LIST_ID"
HEADER = "HEADER"
CHUNK = "CHUNK"
ENDED = "ENDED"
ERROR = "ERROR"


class BackupDecoder:
    """Decodes a backup stream fed in pieces of any size; returns each list once complete.

    ``feed(data)`` returns the lists completed by ``data`` (often none). ``close()`` says the
    input ended and raises if the stream did not end properly. After any error the decoder is
    in state ``ERROR`` and every later call raises again (h11's rule: fail into a known state).

    Args:
        max_inflated: the most bytes the stream may inflate to (``None``: no limit; every
            server path passes ``Settings.max_inflated_bytes``).
        reveal: whether messages may quote the stream's values (``False`` for a file read on
            the server: a message then says what kind of value was wrong, never its bytes).
        source: the request field the stream came in (``body``, ``src_file``), named by
            ``BackupTooLarge``.

    Raises (from ``feed`` and ``close``):
        BackupCorrupted: the message names the problem and, where one is known, the fix.
        BackupTooLarge: the stream inflates past ``max_inflated``.

    >>> decoder = BackupDecoder(max_inflated=1 << 20)
    >>> decoder.feed(encode_backup([("top", ListSettings(set="s1"), [])]))[0].list_id
    'top'
    >>> decoder.close()

    Runtime complexity: O(bytes fed) in total; memory O(the list being decoded).
    """

    def __init__(self, *, max_inflated: int | None = None, reveal: bool = True,
                 source: str = "body") -> None:
        self.state = MARKER
        self.lists = 0  # complete lists decoded so far
        self.bytes_in = 0
        # Only the message is kept: keeping the exception would keep its traceback, whose
        # frames hold this decoder and the buffers being decoded (a reference cycle that held
        # a decompression bomb's output until the next garbage collection).
        self._error: str | None = None
        self._show = _short if reveal else _kind
        self._reveal = reveal
        self._budget = InflateBudget(max_inflated, BackupTooLarge, "the backup stream", source)
        self._dctx = zstandard.ZstdDecompressor(max_window_size=UNTRUSTED_MAX_WINDOW)
        self._frame: BoundedZstdFrame | None = None  # the current frame; None between frames
        self._frames = 0
        self._pending = b""  # compressed bytes not yet given to a frame
        self._unpacker = msgpack.Unpacker(
            use_list=True,
            raw=False,
            strict_map_key=False,
            ext_hook=_ext_hook,
            max_buffer_size=MAX_RECORD_BYTES,
        )
        self._list_id = ""
        self._settings: ListSettings | None = None
        self._board: BoardDefinition | None = None
        self._elements = 0
        self._chunks = 0
        self._seen_elements = 0
        self._records: list[dict[str, Any]] = []

    @property
    def inflated(self) -> int:
        """Bytes decompressed so far."""
        return self._budget.used

    # ----- the public edge: every failure moves to ERROR, once -------------------------------

    def feed(self, data: bytes) -> list[BackupList]:
        """Take the next compressed bytes; return the lists they completed, in stream order."""
        self._raise_if_failed()
        out: list[BackupList] = []
        try:
            self.bytes_in += len(data)
            self._pending += data
            self._decompress(out)
        except (BackupCorrupted, BackupTooLarge) as exc:
            self._fail(exc.message)
            raise  # ``exc`` is unbound again as it leaves the block: no frame -> exc cycle
        return out

    def close(self) -> None:
        """The input ended: raise unless the stream was complete and nothing followed it."""
        self._raise_if_failed()
        try:
            self._check_complete()
        except BackupCorrupted as exc:
            self._fail(exc.message)
            raise

    def _check_complete(self) -> None:
        if self.bytes_in == 0:
            raise BackupCorrupted("backup stream is empty; send the bytes PUT /xlist/backup wrote")
        if self._frame is None and self._frames == 0:
            self._check_outer_magic(final=True)
        if self.state != ENDED:
            inside = f" inside zstd frame {self._frames}" if self._frame is not None else ""
            raise BackupCorrupted(
                f"backup stream is truncated{inside}: {self._where()}, and the end marker "
                "never came (was the backup cancelled or cut off?)"
            )
        if self._frame is not None:
            raise BackupCorrupted(
                f"backup stream is truncated inside zstd frame {self._frames} (after its end "
                "marker): the frame's last bytes and checksum are missing"
            )
        if self._pending:
            raise BackupCorrupted(
                f"backup stream has {len(self._pending)} unexpected bytes after its last "
                "zstd frame"
            )

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise BackupCorrupted(
                f"the decoder is in state ERROR after an earlier error: {self._error}"
            )

    def _fail(self, message: str) -> None:
        """Move to ERROR and let go of every buffer: the decoder is dead."""
        self.state = ERROR
        self._error = message
        self._pending = b""
        self._frame = None
        self._records = []
        self._unpacker = None  # type: ignore[assignment]  # never used after ERROR

    def _where(self) -> str:
        done = f"{self.lists} complete list(s)"
        if self.state in (VERSION, LIST_ID_STATE, HEADER):
            return f"it stops after {done}, inside the next list's header"
        if self.state == CHUNK:
            return (f"it stops after {done}, inside list {self._list_id!r} ({len(self._records)} "
                    f"of {self._chunks} chunks)")
        return f"it stops after {done}"

    # ----- zstd layer ------------------------------------------------------------------------

    def _check_outer_magic(self, *, final: bool = False) -> bool:
        """Before the first frame: is this zstd at all? False means "need more bytes"."""
        head = self._pending[:8]
        if len(head) < 4 and not final:
            return False
        if head[:4] == _ZSTD_MAGIC:
            return True
        if final and _ZSTD_MAGIC.startswith(head):
            raise BackupCorrupted(f"backup stream is truncated: it ends after {len(head)} bytes")
        if head[:6] == _SNAPSHOT_MAGIC:
            raise BackupCorrupted(
                "this is a pointspace snapshot file, not a backup stream; load it with "
                "`pointspace snapshot import`, or make a backup with PUT /xlist/backup"
            )
        if head[:2] == _GZIP_MAGIC:
            raise BackupCorrupted(
                "backup stream is gzip-compressed; backups are zstd-compressed: decompress it "
                "with `gunzip` and send the .bin file PUT /xlist/backup wrote"
            )
        if head[:1] and head[0] in (_MSGPACK_TRUE, _MSGPACK_FALSE):
            raise BackupCorrupted(
                "backup stream is not zstd-compressed: it looks like an already decompressed "
                "backup; send the file exactly as PUT /xlist/backup wrote it, or compress it "
                "once with `zstd`"
            )
        starts = f"it starts with {head[:4].hex(' ')!r}, " if self._reveal else ""
        raise BackupCorrupted(
            f"backup stream is not zstd-compressed: {starts}expected the zstd frame magic "
            f"{_ZSTD_MAGIC.hex(' ')!r} (invalid input: magic number mismatch)"
        )

    def _decompress(self, out: list[BackupList]) -> None:
        while self._pending:
            if self._frame is None:  # between frames: 4 bytes say whether another one starts
                if self._frames == 0:
                    if not self._check_outer_magic():
                        return
                elif len(self._pending) < 4:
                    return
                elif self._pending[:4] != _ZSTD_MAGIC:
                    what = "after its end marker" if self.state == ENDED else "between zstd frames"
                    starts = f" (starting {self._pending[:4].hex(' ')!r})" if self._reveal else ""
                    raise BackupCorrupted(
                        f"backup stream has {len(self._pending)}+ unexpected bytes {what}"
                        f"{starts}; the file is damaged or has something appended"
                    )
                self._frame = BoundedZstdFrame(self._dctx)
                self._frames += 1
            frame = self._frame
            data, self._pending = self._pending, b""
            try:
                # One block (<= 128 KiB) at a time, each parsed before the next is inflated,
                # so a bomb is refused after its first block of nonsense or at the budget.
                for inner in frame.feed(data):
                    self._budget.spend(len(inner))
                    self._inner(inner, out)
            except ZstdFrameError as exc:
                raise BackupCorrupted(
                    f"backup stream is damaged (zstd frame {self._frames}): {exc}"
                ) from None
            if frame.eof:
                self._pending = frame.unused_data
                self._frame = None

    # ----- msgpack layer -----------------------------------------------------------------------

    def _inner(self, data: bytes, out: list[BackupList]) -> None:
        """Parse one inflated piece (at most one zstd block) before the next is inflated."""
        if self.state == ENDED:
            raise BackupCorrupted("backup stream has data after its end marker")
        try:
            self._unpacker.feed(data)
        except msgpack.BufferFull:
            raise BackupCorrupted(
                f"backup stream holds a value larger than {MAX_RECORD_BYTES} bytes "
                f"({self._where()})"
            ) from None
        self._drain(out)

    def _drain(self, out: list[BackupList]) -> None:
        unpacker = self._unpacker
        while True:
            try:
                value = unpacker.unpack()
            except msgpack.OutOfData:
                return
            except (ValueError, TypeError, msgpack.UnpackException) as exc:
                # UnicodeDecodeError and friends quote bytes: a file's only by its error type.
                why = str(exc) if self._reveal else f"undecodable msgpack ({type(exc).__name__})"
                raise BackupCorrupted(f"backup stream is damaged: {self._where()}: {why}") from None
            if self.state == ENDED:
                raise BackupCorrupted("backup stream has data after its end marker")
            self.state = _HANDLERS[self.state](self, value, out)

    # ----- per-state handlers (each returns the next state) -----------------------------------

    def _on_marker(self, value: Any, out: list[BackupList]) -> str:
        if value is True:
            return VERSION
        if value is False:
            return ENDED
        if self.lists == 0 and value == _ZSTD_MAGIC[0] and type(value) is int:
            # 0x28, the zstd magic's first byte, read as a msgpack fixint: a second zstd layer.
            raise BackupCorrupted(
                "backup stream is compressed twice (zstd inside zstd), as when a backup .bin "
                "is compressed again with zstd (RankDB issue #13); decompress one layer with "
                "`zstd -d` and send the result"
            )
        raise BackupCorrupted(
            f"backup stream is damaged: expected true (another list) or false (the end) after "
            f"{self.lists} list(s), got {self._show(value)}"
        )

    def _on_version(self, value: Any, out: list[BackupList]) -> str:
        if value == LIST_RECORD_VERSION and type(value) is int:
            return LIST_ID_STATE
        if value == _RANKDB_RECORD_VERSION and type(value) is int:
            raise BackupCorrupted(
                "this looks like a RankDB backup (list record version 1, Go binary segments), "
                f"which pointspace cannot read; pointspace reads version {LIST_RECORD_VERSION}, "
                "written by its own PUT /xlist/backup"
            )
        raise BackupCorrupted(
            f"unsupported list record version {self._show(value)} after {self.lists} list(s); this "
            f"server reads version {LIST_RECORD_VERSION}"
        )

    def _on_list_id(self, value: Any, out: list[BackupList]) -> str:
        if not isinstance(value, str) or not LIST_ID.match(value):
            raise BackupCorrupted(
                f"backup stream is damaged: list {self.lists + 1} has an invalid id {self._show(value)}"
            )
        self._list_id = value
        return HEADER

    def _on_header(self, value: Any, out: list[BackupList]) -> str:
        name = self._list_id
        if isinstance(value, bytes):
            raise BackupCorrupted(
                f"list {name!r} is a binary blob: this looks like a RankDB backup, which "
                "pointspace cannot read"
            )
        if not isinstance(value, dict) or not isinstance(value.get("settings"), dict):
            raise BackupCorrupted(f"backup stream is damaged: list {name!r} has no valid header")
        elements, chunks = value.get("elements"), value.get("chunks")
        for field, count in (("elements", elements), ("chunks", chunks)):
            if type(count) is not int or count < 0:
                raise BackupCorrupted(
                    f"backup stream is damaged: list {name!r} header {field} must be an integer "
                    f">= 0, got {self._show(count)}"
                )
        if elements and not chunks:
            raise BackupCorrupted(
                f"backup stream is damaged: list {name!r} has {elements} elements in 0 chunks"
            )
        raw = value["settings"]
        unknown = set(raw) - set(_SETTINGS_KEYS)
        if unknown:
            shown = sorted(map(str, unknown)) if self._reveal else f"{len(unknown)} of them"
            raise BackupCorrupted(f"list {name!r} has unknown settings {shown!r}")
        try:
            settings = ListSettings.from_body(raw)
        except InvalidInput as exc:
            why = exc.message if self._reveal else f"field {exc.field!r} is invalid"
            raise BackupCorrupted(f"list {name!r} has invalid settings: {why}") from None
        board = None
        if value.get("board") is not None:
            try:
                board = check_board_plain(value["board"], "board")
            except InvalidInput as exc:
                why = exc.message if self._reveal else f"field {exc.field!r} is invalid"
                raise BackupCorrupted(
                    f"list {name!r} has an invalid leaderboard definition: {why}"
                ) from None
        self._settings, self._elements, self._chunks = settings, elements, chunks
        self._board = board
        self._seen_elements = 0
        self._records = []
        return self._list_done(out) if chunks == 0 else CHUNK

    def _on_chunk(self, value: Any, out: list[BackupList]) -> str:
        where = f"list {self._list_id!r} chunk {len(self._records)}"
        record = _check_chunk(value, where, self._reveal)
        self._seen_elements += record["count"]
        if self._seen_elements > self._elements:
            raise BackupCorrupted(
                f"backup stream is damaged: {where} brings the list past the {self._elements} "
                "elements its header announced"
            )
        self._records.append(record)
        if len(self._records) < self._chunks:
            return CHUNK
        if self._seen_elements != self._elements:
            raise BackupCorrupted(
                f"backup stream is damaged: list {self._list_id!r} has {self._seen_elements} "
                f"elements in its chunks, its header announced {self._elements}"
            )
        return self._list_done(out)

    def _list_done(self, out: list[BackupList]) -> str:
        assert self._settings is not None  # set by _on_header just before
        out.append(BackupList(self._list_id, self._settings, self._elements, self._records,
                              self._board))
        self.lists += 1
        self._records = []
        return MARKER


_HANDLERS: Final = {
    MARKER: BackupDecoder._on_marker,
    VERSION: BackupDecoder._on_version,
    LIST_ID_STATE: BackupDecoder._on_list_id,
    HEADER: BackupDecoder._on_header,
    CHUNK: BackupDecoder._on_chunk,
}

_ARRAYS: Final = (("ids", 8), ("scores", 8), ("tie_breakers", 4), ("updated_at", 4))
_U64: Final = 2**64 - 1


def _check_chunk(value: Any, where: str, reveal: bool) -> dict[str, Any]:
    """The checks ``RankedList.from_records`` makes, done here so that a bad chunk is a
    stream error naming its list and chunk, before any list is touched. ``reveal=False``
    describes bad values by type only (a file on the server)."""
    show = _short if reveal else _kind
    if not isinstance(value, dict):
        raise BackupCorrupted(f"backup stream is damaged: {where} is {show(value)}, not a chunk")
    if value.get("v") != RECORDS_VERSION or type(value.get("v")) is not int:
        raise BackupCorrupted(
            f"{where} has records version {show(value.get('v'))}; this server reads "
            f"version {RECORDS_VERSION}"
        )
    count = value.get("count")
    if type(count) is not int or count < 0:
        raise BackupCorrupted(f"backup stream is damaged: {where} count is {show(count)}")
    for name, width in _ARRAYS:
        array = value.get(name)
        if not isinstance(array, bytes) or len(array) != count * width:
            got = f"{len(array)} bytes" if isinstance(array, bytes) else show(array)
            raise BackupCorrupted(
                f"backup stream is damaged: {where} {name} must be {count * width} bytes "
                f"({count} x u{width * 8}), got {got}"
            )
    payloads = value.get("payloads") or {}
    if not isinstance(payloads, dict):
        raise BackupCorrupted(f"backup stream is damaged: {where} payloads is {show(payloads)}")
    for key, payload in payloads.items():
        if type(key) is not int or not 0 <= key <= _U64 or not (
            payload is None or isinstance(payload, dict)
        ):
            raise BackupCorrupted(
                f"backup stream is damaged: {where} has a bad payload entry {show(key)}: "
                f"{show(payload)}"
            )
        try:
            check_payload(payload, f"payload of element {key}")
        except InvalidInput as exc:
            why = exc.message if reveal else f"payload of element {key} holds a non-JSON value"
            raise BackupCorrupted(f"backup stream is damaged: {where}: {why}") from None
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    """A value described without its contents (messages about a file on the server)."""
    if value is None or isinstance(value, bool):
        return repr(value)
    return f"a value of type {type(value).__name__}"


def decode_backup(data: bytes, *, max_inflated: int | None = None) -> list[BackupList]:
    """Decode a whole backup held in memory (tests, small tools); see :class:`BackupDecoder`."""
    decoder = BackupDecoder(max_inflated=max_inflated)
    lists = decoder.feed(data)
    decoder.close()
    return lists
