"""Tests for snapshots/codec.py: check_snapshot, recovery's quick check (issue 17)."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

import msgpack
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from snapshots.codec import (
    HEADER_SIZE,
    SnapshotCorrupted,
    SnapshotEncoder,
    SnapshotInfo,
    check_snapshot,
    iter_snapshot_items,
    validate_snapshot,
)

ITEMS = [
    ("user", 1, 5, [["steps", [[0, [1, 2, 3, [[8, 1], [17, 2**70]], None]]], [], []]]),
    ("list", "big", 7, {"ids": b"\x00\x01", (1, 2): [3, 4]}),
    ("counter", "hits", 9, -(2**80)),
]


def encode(items: list, start_seq: int = 10) -> bytes:
    encoder = SnapshotEncoder(start_seq, 1_700_000_000.0)
    return b"".join([encoder.header_bytes(), *map(encoder.encode_item, items), encoder.finish()])


def with_body(data: bytes, body: bytes, count: int) -> bytes:
    """``data``'s header around a new body, with a trailer that vouches for it."""
    trailer = struct.pack("<8sQI", b"PSSNAPTR", count, zlib.crc32(body))
    frame = zstandard.ZstdCompressor(write_checksum=True).compress(body)
    return data[:HEADER_SIZE] + frame + trailer + struct.pack("<I", zlib.crc32(trailer))


def test_check_snapshot_agrees_with_validate_snapshot():
    for items in ([], ITEMS, ITEMS * 50):
        data = encode(items, start_seq=3)
        assert check_snapshot(io.BytesIO(data)) == validate_snapshot(io.BytesIO(data))
        assert check_snapshot(io.BytesIO(data)) == SnapshotInfo(3, len(items), 1_700_000_000.0)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["user", "list"]), st.integers(0, 2**64 - 1),
                          st.integers(0, 2**40),
                          st.recursive(st.none() | st.integers() | st.text(max_size=5),
                                       lambda c: st.lists(c, max_size=4), max_leaves=20)),
                max_size=20))
def test_check_snapshot_counts_any_items(items: list) -> None:
    data = encode(items)
    assert check_snapshot(io.BytesIO(data)).items == len(items)


def test_check_snapshot_rejects_truncation_at_every_byte():
    data = encode(ITEMS)
    for cut in range(len(data)):
        with pytest.raises(SnapshotCorrupted):
            check_snapshot(io.BytesIO(data[:cut]))


def outcome(check: Callable[[io.BytesIO], SnapshotInfo], data: bytes) -> SnapshotInfo | None:
    try:
        return check(io.BytesIO(data))
    except SnapshotCorrupted:
        return None


def test_check_snapshot_refuses_what_validate_snapshot_refuses():
    # A flipped bit in the zstd frame header's unused fields is harmless to both (the body and
    # its CRC are intact); everywhere else both refuse the file.
    data = encode(ITEMS * 5)
    refused = 0
    for pos in range(len(data)):
        damaged = bytearray(data)
        damaged[pos] ^= 0x10
        got = outcome(check_snapshot, bytes(damaged))
        assert got == outcome(validate_snapshot, bytes(damaged)), pos
        refused += got is None
    assert refused >= len(data) - 4


def test_check_snapshot_needs_the_end_marker_last():
    packed = msgpack.packb(["user", 1, 5, [[8, 1]]])
    data = encode(ITEMS)
    with pytest.raises(SnapshotCorrupted, match=r"^snapshot is truncated: no end marker after 0 items$"):
        check_snapshot(io.BytesIO(with_body(data, packed, 0)))
    with pytest.raises(SnapshotCorrupted, match=r"^snapshot is truncated: no end marker after 1 items$"):
        check_snapshot(io.BytesIO(with_body(data, b"\xc0" + packed, 1)))
    with pytest.raises(SnapshotCorrupted, match=r"^snapshot is truncated: no end marker after 2 items$"):
        check_snapshot(io.BytesIO(with_body(data, packed + b"\xc0\x92", 1)))
    with pytest.raises(SnapshotCorrupted, match=r"^snapshot is truncated: no end marker after 1 items$"):
        check_snapshot(io.BytesIO(with_body(data, packed + b"\x91\xc0", 1)))
    with pytest.raises(SnapshotCorrupted, match=r"^snapshot item count mismatch"):
        check_snapshot(io.BytesIO(with_body(data, packed + b"\xc0", 2)))


def test_check_snapshot_leaves_item_shapes_to_the_load():
    # Bytes the writer never makes, yet vouched for by the CRC: the load still refuses them.
    data = with_body(encode([]), msgpack.packb([1, 2]) + b"\xc0", 1)
    assert check_snapshot(io.BytesIO(data)).items == 1
    with pytest.raises(SnapshotCorrupted, match=r"is not \(kind, key, applied_seq, state\)"):
        list(iter_snapshot_items(io.BytesIO(data)))
