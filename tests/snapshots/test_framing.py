"""Tests for snapshots/framing.py: pure, in memory, no event loop."""

from __future__ import annotations

import doctest

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snapshots import framing
from snapshots.framing import (
    HEADER_SIZE,
    NEED_DATA,
    CleanEnd,
    Corruption,
    Record,
    RecordDecoder,
    TornTail,
    encode_record,
)


def decode_all(data: bytes, *, first_seq: int | None = 1, chunks: list[int] | None = None):
    """Feed ``data`` (split at ``chunks`` sizes, else whole), then EOF; return all events."""
    decoder = RecordDecoder(first_seq=first_seq)
    pieces = []
    pos = 0
    for size in chunks or []:
        pieces.append(data[pos : pos + size])
        pos += size
    pieces.append(data[pos:])
    pieces = [p for p in pieces if p]
    events = []
    while True:
        event = decoder.next_event()
        if event is NEED_DATA:
            decoder.receive_data(pieces.pop(0) if pieces else b"")
            continue
        events.append(event)
        if not isinstance(event, Record):
            return events


def build_log(payloads: list[bytes], first_seq: int = 1) -> tuple[bytes, list[int]]:
    """The concatenated records and each record's starting offset."""
    records = [encode_record(first_seq + i, p) for i, p in enumerate(payloads)]
    offsets = []
    pos = 0
    for r in records:
        offsets.append(pos)
        pos += len(r)
    return b"".join(records), offsets


def test_encode_record_layout():
    record = encode_record(1, b"hi")
    assert len(record) == HEADER_SIZE + 2
    assert record[0] == 0xA1
    assert record[1:5] == (2).to_bytes(4, "little")
    assert record[5:13] == (1).to_bytes(8, "little")
    assert record[-2:] == b"hi"


def test_encode_record_rejects_seq_zero():
    with pytest.raises(ValueError, match=r"^seq must be in 1\.\.2\*\*64-1, got 0$"):
        encode_record(0, b"")


def test_encode_record_rejects_huge_payload():
    decoder_max = framing.MAX_PAYLOAD_BYTES
    with pytest.raises(ValueError, match=r"^payload must be at most \d+ bytes"):
        encode_record(1, bytes(decoder_max + 1))


@settings(max_examples=200, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=64), max_size=20),
    first_seq=st.integers(1, 2**64 - 100),
    cuts=st.lists(st.integers(1, 40), max_size=30),
)
def test_RecordDecoder_round_trips_any_chunking(payloads, first_seq, cuts):
    data, offsets = build_log(payloads, first_seq)
    events = decode_all(data, first_seq=first_seq, chunks=cuts)
    assert events[-1] == CleanEnd(len(data))
    records = events[:-1]
    assert [r.payload for r in records] == payloads
    assert [r.seq for r in records] == list(range(first_seq, first_seq + len(payloads)))
    assert [r.offset for r in records] == offsets


def test_RecordDecoder_learns_first_seq_when_not_given():
    data, _ = build_log([b"a", b"b"], first_seq=40)
    events = decode_all(data, first_seq=None)
    assert [e.seq for e in events[:-1]] == [40, 41]


def test_RecordDecoder_torn_tail_at_every_byte_of_last_record():
    payloads = [b"alpha", b"beta", b"gamma-gamma"]
    data, offsets = build_log(payloads)
    last = offsets[-1]
    for cut in range(last, len(data)):
        events = decode_all(data[:cut])
        assert [e.payload for e in events[:-1]] == payloads[:-1]
        if cut == last:
            assert events[-1] == CleanEnd(last)
        else:
            tail = events[-1]
            assert isinstance(tail, TornTail), (cut, tail)
            assert (tail.offset, tail.nbytes) == (last, cut - last)


def test_RecordDecoder_flipped_byte_in_middle_record_is_corruption():
    payloads = [b"one", b"two-two", b"three"]
    data, offsets = build_log(payloads)
    for pos in range(offsets[1], offsets[2]):
        damaged = bytearray(data)
        damaged[pos] ^= 0x40
        events = decode_all(bytes(damaged))
        assert [e.payload for e in events[:-1]] == [b"one"]
        assert isinstance(events[-1], Corruption), (pos, events[-1])
        assert events[-1].offset == offsets[1]


def test_RecordDecoder_flipped_byte_in_last_record_is_torn_tail():
    data, offsets = build_log([b"one", b"two"])
    damaged = bytearray(data)
    damaged[-1] ^= 0x01
    events = decode_all(bytes(damaged))
    assert events[-1] == TornTail(offsets[1], len(data) - offsets[1], events[-1].reason)
    assert events[-1].reason == "checksum mismatch in record claiming seq 2"


def test_RecordDecoder_zero_filled_tail_is_torn_tail():
    data, _ = build_log([b"one", b"two"])
    events = decode_all(data + bytes(4096))
    assert events[-1] == TornTail(len(data), 4096, "bad magic byte 0x00, expected 0xa1")


def test_RecordDecoder_garbage_then_intact_record_is_corruption():
    data, offsets = build_log([b"one", b"two"])
    # Garbage where record 2 should be, then record 2 intact: whatever the garbage is, a
    # later intact record proves it is not a torn write.
    damaged = data[: offsets[1]] + b"\x00\x01garbage" + data[offsets[1] :]
    events = decode_all(damaged)
    assert events[-1] == Corruption(offsets[1], "bad magic byte 0x00, expected 0xa1")


def test_RecordDecoder_sequence_gap_is_corruption():
    data = encode_record(1, b"a") + encode_record(2, b"b") + encode_record(4, b"d")
    events = decode_all(data)
    assert events[-1] == Corruption(2 * (HEADER_SIZE + 1), "sequence gap: expected seq 3, found 4")


def test_RecordDecoder_sequence_gap_in_last_record_is_still_corruption():
    # The record is intact (its CRC checks), so no crash explains it.
    events = decode_all(encode_record(1, b"a") + encode_record(3, b"c"))
    assert isinstance(events[-1], Corruption)


def test_RecordDecoder_first_record_must_match_first_seq():
    events = decode_all(encode_record(8, b"a"), first_seq=7)
    assert events == [Corruption(0, "sequence gap: expected seq 7, found 8")]


def test_RecordDecoder_corrupted_length_with_data_after_is_corruption():
    data, offsets = build_log([b"one", b"two", b"three"])
    damaged = bytearray(data)
    damaged[offsets[1] + 1 : offsets[1] + 5] = (10_000).to_bytes(4, "little")  # runs off the end
    events = decode_all(bytes(damaged))
    remaining = len(data) - offsets[1] - HEADER_SIZE
    assert events[-1] == Corruption(offsets[1], f"incomplete payload: {remaining} of 10000 bytes")


def test_RecordDecoder_absurd_length_is_damage_without_waiting():
    decoder = RecordDecoder(first_seq=1, max_payload=100)
    header = bytearray(encode_record(1, b"x"))
    header[1:5] = (101).to_bytes(4, "little")
    decoder.receive_data(bytes(header) + encode_record(2, b"y"))
    event = decoder.next_event()
    assert event == Corruption(0, "payload length 101 exceeds the maximum 100")


def test_RecordDecoder_waits_for_more_data_before_judging_damage():
    data, offsets = build_log([b"one", b"two", b"three"])
    damaged = bytearray(data)
    damaged[offsets[1] + HEADER_SIZE] ^= 0xFF  # payload of record 2
    decoder = RecordDecoder(first_seq=1)
    decoder.receive_data(bytes(damaged[: offsets[2]]))
    assert decoder.next_event().seq == 1
    assert decoder.next_event() is NEED_DATA  # torn tail or corruption? depends on what follows
    decoder.receive_data(bytes(damaged[offsets[2] :]))
    assert decoder.next_event() == Corruption(
        offsets[1], "checksum mismatch in record claiming seq 2"
    )
    assert decoder.next_event() == Corruption(
        offsets[1], "checksum mismatch in record claiming seq 2"
    )


def test_RecordDecoder_base_offset_shifts_reported_offsets():
    decoder = RecordDecoder(first_seq=1, base_offset=1000)
    decoder.receive_data(encode_record(1, b"a"))
    decoder.receive_data(b"")
    assert decoder.next_event().offset == 1000
    assert decoder.next_event() == CleanEnd(1000 + HEADER_SIZE + 1)


def test_RecordDecoder_rejects_data_after_end():
    decoder = RecordDecoder()
    decoder.receive_data(b"")
    with pytest.raises(RuntimeError, match=r"^received data after the end of data was signalled$"):
        decoder.receive_data(b"x")


def test_RecordDecoder_compacts_its_buffer_on_long_streams():
    payload = bytes(1000)
    decoder = RecordDecoder(first_seq=1)
    seq = 0
    for i in range(3000):
        decoder.receive_data(encode_record(i + 1, payload))
        event = decoder.next_event()
        assert event.seq == i + 1
        seq = event.seq
    assert seq == 3000
    assert len(decoder._buf) < 2 * framing._COMPACT_AT
    assert decoder.offset == 3000 * (HEADER_SIZE + 1000)


def test_framing_doctests():
    assert doctest.testmod(framing).failed == 0
