"""Tests for snapshots/codec.py: pure, in memory."""

from __future__ import annotations

import doctest
import gzip
import io
import struct
import zlib

import msgpack
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import InvalidInput
from snapshots import codec
from snapshots.codec import (
    HEADER_SIZE,
    TRAILER_SIZE,
    SnapshotCorrupted,
    SnapshotEncoder,
    SnapshotInfo,
    SnapshotItem,
    iter_snapshot_items,
    read_snapshot_header,
    validate_snapshot,
)


def encode(items, *, start_seq: int = 10, created: float = 1_700_000_000.5) -> bytes:
    encoder = SnapshotEncoder(start_seq, created)
    parts = [encoder.header_bytes()]
    parts.extend(encoder.encode_item(item) for item in items)
    parts.append(encoder.finish())
    return b"".join(parts)


def decode(data: bytes) -> list[SnapshotItem]:
    return list(iter_snapshot_items(io.BytesIO(data)))


ITEMS = [
    ("counter", "page:home", 7, {"total": 12, "buckets": {1700000000: 3, 1700000060: 9}}),
    ("ranked", ["board", 2], 9, {"scores": [[b"\x00id", 1.5], [b"id2", -2.25]], "name": "é"}),
    ("meta", None, 0, [True, False, None, "", b""]),
]


def test_codec_round_trips_items():
    decoded = decode(encode(ITEMS))
    assert [tuple(item) for item in decoded] == [tuple(item) for item in ITEMS]
    assert decoded[0].kind == "counter" and decoded[0].applied_seq == 7


def test_codec_tuples_come_back_as_lists_except_map_keys():
    item = ("k", ("a", 1), 1, {("x", ("y", 2)): ("v", [1, (2, 3)]), 5: "int key"})
    (decoded,) = decode(encode([item]))
    assert decoded.key == ["a", 1]
    assert decoded.state == {("x", ("y", 2)): ["v", [1, [2, 3]]], 5: "int key"}


def test_codec_header_fields():
    data = encode([], start_seq=123, created=1_700_000_000.25)
    header = read_snapshot_header(io.BytesIO(data))
    assert (header.start_seq, header.created, header.version, header.flags) == (
        123,
        1_700_000_000.25,
        1,
        codec.FLAG_ZSTD,
    )
    assert data[:6] == b"PSSNAP"
    assert len(encode([])) > HEADER_SIZE + TRAILER_SIZE


def test_validate_snapshot_counts_items():
    info = validate_snapshot(io.BytesIO(encode(ITEMS, start_seq=5, created=2.0)))
    assert info == SnapshotInfo(start_seq=5, items=3, created=2.0)
    assert validate_snapshot(io.BytesIO(encode([]))).items == 0


BIG_INTS = [
    2**63 - 1,
    2**63,
    2**64 - 1,
    2**64,
    -(2**63),
    -(2**63) - 1,
    -(2**64),
    10**40,
    -(10**40),
    2**1000 + 1,
]


def test_codec_big_ints_round_trip_anywhere():
    state = {"values": BIG_INTS, 2**70: "big key", (2**65, -(2**65)): [2**80]}
    item = ("big", 2**100, 3, state)
    (decoded,) = decode(encode([item]))
    assert decoded.key == 2**100
    assert decoded.state == {"values": BIG_INTS, 2**70: "big key", (2**65, -(2**65)): [2**80]}


@settings(max_examples=100, deadline=None)
@given(
    value=st.recursive(
        st.integers()
        | st.integers(-(2**70), 2**70)
        | st.text(max_size=5)
        | st.binary(max_size=5)
        | st.none()
        | st.booleans(),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.integers() | st.text(max_size=5), children, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_codec_any_int_round_trips(value):
    (decoded,) = decode(encode([("v", 0, 1, value)]))
    assert decoded.state == value


def test_codec_packer_is_clean_after_an_overflow():
    encoder = SnapshotEncoder(1, 0.0)
    big = encoder.pack_item(("a", 0, 1, 2**64))
    small = encoder.pack_item(("a", 0, 1, 1))
    assert msgpack.unpackb(small) == ["a", 0, 1, 1]
    assert len(big) > len(small)


def test_codec_rejects_malformed_items():
    encoder = SnapshotEncoder(1, 0.0)
    with pytest.raises(
        TypeError, match=r"^a snapshot item must be \(kind, key, applied_seq, state\)"
    ):
        encoder.encode_item(("a", 1, 2))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^item kind must be a str, got 1$"):
        encoder.encode_item((1, 1, 2, 3))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^applied_seq must be an int >= 0, got -1$"):
        encoder.encode_item(("a", 1, -1, 3))
    with pytest.raises(TypeError):
        encoder.encode_item(("a", 1, 1, object()))
    assert encoder.items == 0


def test_codec_finish_twice_is_a_bug():
    encoder = SnapshotEncoder(1, 0.0)
    encoder.finish()
    with pytest.raises(RuntimeError, match=r"^the snapshot is already finished$"):
        encoder.finish()
    with pytest.raises(
        RuntimeError, match=r"^the snapshot is finished; start a new SnapshotEncoder$"
    ):
        encoder.encode_item(("a", 1, 1, 1))


#####################################################################
# Damage
#####################################################################


def assert_corrupted(data: bytes, match: str) -> None:
    with pytest.raises(SnapshotCorrupted, match=match):
        decode(data)
    with pytest.raises(SnapshotCorrupted, match=match):
        validate_snapshot(io.BytesIO(data))


def test_codec_corruption_is_invalid_input():
    assert issubclass(SnapshotCorrupted, InvalidInput)


def test_codec_rejects_wrong_magic():
    assert_corrupted(
        b"NOTSNAP" + bytes(40),
        r"^not a pointspace snapshot: the file starts with b'NOTSNA', expected b'PSSNAP'$",
    )


def test_codec_rejects_unknown_version():
    data = bytearray(encode(ITEMS))
    data[6:8] = struct.pack("<H", 2)
    assert_corrupted(
        bytes(data), r"^unsupported snapshot format version 2; this server reads version 1$"
    )


def test_codec_rejects_damaged_header():
    data = bytearray(encode(ITEMS))
    data[9] ^= 1  # start_seq
    assert_corrupted(bytes(data), r"^snapshot header checksum mismatch: the header is damaged$")


def test_codec_rejects_unknown_flags():
    data = bytearray(encode(ITEMS))
    data[24:28] = struct.pack("<I", 3)
    data[28:32] = struct.pack("<I", zlib.crc32(bytes(data[:28])))
    assert_corrupted(
        bytes(data), r"^unsupported snapshot flags 0x00000003; this server reads 0x00000001$"
    )


def test_codec_rejects_wrong_compression():
    encoder = SnapshotEncoder(1, 0.0)
    packed = encoder.pack_item(ITEMS[0]) + b"\xc0"
    data = encoder.header_bytes() + gzip.compress(packed)
    assert_corrupted(
        data,
        r"^snapshot body is not zstd-compressed: it starts with 1f 8b 08 00, expected the zstd "
        r"frame magic 28 b5 2f fd$",
    )


def test_codec_rejects_a_flipped_byte_anywhere():
    data = encode(ITEMS * 20)
    for pos in range(0, len(data), 7):
        damaged = bytearray(data)
        damaged[pos] ^= 0x10
        with pytest.raises(SnapshotCorrupted):
            decode(bytes(damaged))


def test_codec_rejects_truncation_at_every_byte():
    data = encode(ITEMS)
    for cut in range(len(data)):
        with pytest.raises(SnapshotCorrupted):
            validate_snapshot(io.BytesIO(data[:cut]))


def test_codec_truncated_messages():
    data = encode(ITEMS)
    assert_corrupted(
        data[:10], r"^snapshot is truncated: the header needs 32 bytes, the file has 10$"
    )
    assert_corrupted(
        data[: len(data) - TRAILER_SIZE - 3], r"^snapshot is truncated inside zstd frame 1$"
    )
    assert_corrupted(
        data[:-1], r"^snapshot trailer is truncated: expected 24 bytes after the body$"
    )
    assert_corrupted(data + b"x", r"^snapshot trailer is followed by extra bytes")


def body_of(data: bytes) -> bytes:
    """The uncompressed body of an encoded snapshot."""
    return zstandard.ZstdDecompressor().decompressobj().decompress(data[HEADER_SIZE:-TRAILER_SIZE])


def rebuild(header: bytes, frames: list[bytes], count: int, crc: int) -> bytes:
    trailer = struct.pack("<8sQI", b"PSSNAPTR", count, crc)
    return header + b"".join(frames) + trailer + struct.pack("<I", zlib.crc32(trailer))


def test_codec_reads_across_multiple_zstd_frames():
    data = encode(ITEMS)
    body = body_of(data)
    cctx = zstandard.ZstdCompressor(write_checksum=True)
    # Split mid-item on purpose: frames and items are independent.
    frames = [cctx.compress(body[:5]), cctx.compress(body[5:40]), cctx.compress(body[40:])]
    multi = rebuild(data[:HEADER_SIZE], frames, len(ITEMS), zlib.crc32(body))
    assert [tuple(i) for i in decode(multi)] == [tuple(i) for i in ITEMS]
    # The same, through a stream that returns one byte per read.
    assert len(list(iter_snapshot_items(OneByteStream(multi)))) == len(ITEMS)


class OneByteStream(io.RawIOBase):
    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._data.read(1)


def test_codec_rejects_wrong_item_count():
    data = encode(ITEMS)
    body = body_of(data)
    frames = [zstandard.ZstdCompressor().compress(body)]
    wrong = rebuild(data[:HEADER_SIZE], frames, 4, zlib.crc32(body))
    assert_corrupted(wrong, r"^snapshot item count mismatch: the trailer says 4, the body has 3$")


def test_codec_rejects_wrong_body_checksum():
    data = encode(ITEMS)
    body = body_of(data)
    wrong = rebuild(data[:HEADER_SIZE], [zstandard.ZstdCompressor().compress(body)], 3, 0)
    assert_corrupted(wrong, r"^snapshot body checksum mismatch: the items are damaged$")


def test_codec_rejects_data_after_end_marker():
    data = encode(ITEMS)
    body = body_of(data) + msgpack.packb(["x", 1, 1, 1])
    wrong = rebuild(
        data[:HEADER_SIZE], [zstandard.ZstdCompressor().compress(body)], 3, zlib.crc32(body)
    )
    assert_corrupted(wrong, r"^snapshot has data after its end marker$")
    body = body_of(data) + b"\x92"  # half an item
    wrong = rebuild(
        data[:HEADER_SIZE], [zstandard.ZstdCompressor().compress(body)], 3, zlib.crc32(body)
    )
    assert_corrupted(wrong, r"^snapshot has data after its end marker$")


def test_codec_rejects_missing_end_marker():
    data = encode(ITEMS)
    body = body_of(data)[:-1]
    wrong = rebuild(
        data[:HEADER_SIZE], [zstandard.ZstdCompressor().compress(body)], 3, zlib.crc32(body)
    )
    assert_corrupted(wrong, r"^snapshot is truncated: no end marker after 3 items$")


def test_codec_rejects_malformed_item_in_body():
    data = encode([])
    body = msgpack.packb(["only", "three", 1]) + b"\xc0"
    wrong = rebuild(
        data[:HEADER_SIZE], [zstandard.ZstdCompressor().compress(body)], 1, zlib.crc32(body)
    )
    assert_corrupted(wrong, r"^snapshot item 0 is not \(kind, key, applied_seq, state\)")


def test_codec_rejects_unknown_ext_type():
    data = encode([])
    body = msgpack.packb(["k", msgpack.ExtType(9, b"x"), 1, 1]) + b"\xc0"
    wrong = rebuild(
        data[:HEADER_SIZE], [zstandard.ZstdCompressor().compress(body)], 1, zlib.crc32(body)
    )
    assert_corrupted(wrong, r"^snapshot item 0 is damaged: unknown msgpack extension type 9$")


def test_codec_doctests():
    assert doctest.testmod(codec).failed == 0
