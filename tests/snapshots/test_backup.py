"""The backup stream codec (snapshots/backup.py): round trips, incremental feeding, and a clear
error for every way a stream goes wrong. No sockets, no files."""

from __future__ import annotations

import random
import re

import msgpack
import pytest
import zstandard

from engine.boards import BoardDefinition
from engine.lists import ListSettings
from engine.ranked import ElementIn, RankedList
from snapshots.backup import (
    LIST_RECORD_VERSION,
    BackupCorrupted,
    BackupDecoder,
    BackupEncoder,
    BackupTooLarge,
    decode_backup,
    encode_backup,
)

U64 = 2**64 - 1
U32 = 2**32 - 1
NOW = 1_700_000_000


def make_list(seed: int, n: int) -> RankedList:
    """Random elements with edge values: ids and scores at 0 and 2**64-1, ties, payloads."""
    rng = random.Random(seed)
    edges = [0, 1, U64, U64 - 1, 2**63, 2**63 - 1]
    elements = []
    for i in range(n):
        element_id = edges[i] if i < len(edges) else rng.randrange(U64 + 1)
        score = rng.choice([0, U64, rng.randrange(100), rng.randrange(U64 + 1)])
        tie = rng.choice([0, U32, rng.randrange(U32 + 1)])
        payload = rng.choice([None, {}, {"name": f"user-{i}", "n": -i, "deep": {"x": [1.5, None, "é"]}},
                              {"big": U64, "neg": -(2**63)}])
        elements.append(ElementIn(element_id, score, tie, payload))
    ranked = RankedList()
    ranked.bulk_load(elements, NOW - seed)
    return ranked


def settings(i: int) -> ListSettings:
    return ListSettings(set=f"set-{i % 3}", metadata={"team": str(i), "kind": "stress"},
                        split_size=2000 + i, merge_size=500, load_index=bool(i % 2))


def sample_lists(count: int = 5, chunk: int = 7) -> list[tuple[str, ListSettings, list[dict]]]:
    sizes = [0, 1, chunk, chunk + 1, 60, 200]
    return [(f"list-{i}", settings(i), list(make_list(i, sizes[i % len(sizes)]).to_records(chunk)))
            for i in range(count)]


def assert_same(decoded, originals) -> None:
    assert [d.list_id for d in decoded] == [o[0] for o in originals]
    for d, (list_id, s, records) in zip(decoded, originals, strict=True):
        assert d.settings == s
        assert d.elements == sum(r["count"] for r in records)
        again = RankedList.from_records(d.records)
        want = RankedList.from_records(records)
        again._check()
        assert list(again) == list(want), list_id


############################################################################################
# Round trips


def test_encode_backup_round_trip_keeps_settings_elements_and_payloads():
    lists = sample_lists(6)
    assert_same(decode_backup(encode_backup(lists)), lists)


def test_encode_backup_round_trip_of_no_lists_is_just_the_end_marker():
    data = encode_backup([])
    assert data[:4] == b"\x28\xb5\x2f\xfd"
    assert decode_backup(data) == []


@pytest.mark.parametrize("seed", range(8))
def test_backup_decoder_seeded_round_trip_with_random_feed_sizes(seed):
    rng = random.Random(seed)
    lists = sample_lists(rng.randrange(1, 7), chunk=rng.choice([1, 3, 16, 1000]))
    data = encode_backup(lists)
    decoder = BackupDecoder()
    decoded, pos = [], 0
    while pos < len(data):
        step = rng.choice([1, 2, 5, 64, 4096])
        decoded += decoder.feed(data[pos : pos + step])
        pos += step
    decoder.close()
    assert_same(decoded, lists)
    assert decoder.lists == len(lists)


def test_backup_decoder_fed_byte_by_byte_yields_each_list_once_complete():
    lists = sample_lists(4)
    enc = BackupEncoder()
    pieces = [b"".join(enc.encode_list(*item)) for item in lists] + [enc.finish()]
    data = b"".join(pieces)
    decoder = BackupDecoder()
    yielded_at = []
    for i in range(len(data)):
        for item in decoder.feed(data[i : i + 1]):
            yielded_at.append((item.list_id, i))
    decoder.close()
    assert [name for name, _ in yielded_at] == [item[0] for item in lists]
    assert [at for _, at in yielded_at] == sorted(at for _, at in yielded_at)


def test_backup_encoder_sends_each_list_before_the_next_one_starts():
    """Per-list flushing: the bytes out after list k's last chunk decode to k complete lists."""
    lists = sample_lists(3, chunk=50)
    enc = BackupEncoder()
    sent = b""
    for k, item in enumerate(lists):
        sent += b"".join(enc.encode_list(*item))
        if k:
            assert [d.list_id for d in BackupDecoder().feed(sent)] == [i[0] for i in lists[:k]]
    sent += enc.finish()
    assert enc.bytes_out == len(sent)
    assert enc.lists == 3


def test_backup_decoder_reads_concatenated_zstd_frames():
    """``zstd`` tools may split or join frames; the content is what counts."""
    lists = sample_lists(3)
    inner = zstandard.ZstdDecompressor().decompressobj().decompress(encode_backup(lists))
    cut = len(inner) // 2
    cctx = zstandard.ZstdCompressor(write_checksum=True)
    data = cctx.compress(inner[:cut]) + cctx.compress(inner[cut:])
    assert_same(decode_backup(data), lists)


def test_backup_encoder_packs_payload_ints_beyond_64_bits():
    ranked = RankedList()
    ranked.bulk_load([ElementIn(5, 1, 0, {"huge": 2**70, "tiny": -(2**70)})], NOW)
    data = encode_backup([("big-ints", settings(0), list(ranked.to_records()))])
    (decoded,) = decode_backup(data)
    assert RankedList.from_records(decoded.records).get(5).payload == {"huge": 2**70, "tiny": -(2**70)}


def test_backup_encoder_refuses_a_list_missing_chunks():
    enc = BackupEncoder()
    enc.start_list("a1", settings(0), elements=2, chunks=2)
    enc.add_chunk(next(iter(make_list(0, 1).to_records())))
    with pytest.raises(RuntimeError, match=r"^list 'a1' still needs 1 chunk\(s\) before the backup can finish$"):
        enc.finish()


############################################################################################
# Damage, truncation, wrong layers


def inner_of(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def recompress(inner: bytes) -> bytes:
    return zstandard.ZstdCompressor(write_checksum=True).compress(inner)


def raises(data: bytes, pattern: str) -> None:
    with pytest.raises(BackupCorrupted, match=pattern) as info:
        decode_backup(data)
    assert info.value.http_status == 400


def test_issue_13_double_compressed_stream_says_so():
    data = encode_backup(sample_lists(2))
    raises(zstandard.ZstdCompressor().compress(data),
           r"^backup stream is compressed twice \(zstd inside zstd\).*RankDB issue #13.*`zstd -d`")


def test_backup_decoder_uncompressed_stream_says_it_is_not_zstd():
    raises(inner_of(encode_backup(sample_lists(2))),
           r"^backup stream is not zstd-compressed: it looks like an already decompressed backup")


def test_backup_decoder_random_bytes_name_the_magic_mismatch():
    raises(b"hello world", r"^backup stream is not zstd-compressed: it starts with '68 65 6c 6c'.*"
                           r"magic number mismatch\)$")


def test_backup_decoder_gzip_and_snapshot_files_are_named():
    raises(b"\x1f\x8b\x08\x00\x00\x00", r"^backup stream is gzip-compressed")
    raises(b"PSSNAP\x01\x00" + bytes(24), r"^this is a pointspace snapshot file, not a backup stream")


def test_backup_decoder_empty_body():
    raises(b"", r"^backup stream is empty")


def test_backup_decoder_damaged_byte_fails_the_checksum_or_the_frame():
    data = bytearray(encode_backup(sample_lists(3)))
    rng = random.Random(4)
    for _ in range(20):
        damaged = bytearray(data)
        at = rng.randrange(4, len(data))
        damaged[at] ^= 1 << rng.randrange(8)
        with pytest.raises(BackupCorrupted, match=r"^backup stream"):
            decode_backup(bytes(damaged))


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.999])
def test_backup_decoder_truncated_stream_is_never_accepted(keep):
    data = encode_backup(sample_lists(4))
    raises(data[: min(int(len(data) * keep), len(data) - 1)], r"^backup stream is truncated")


def test_backup_decoder_truncated_at_a_list_boundary_names_the_missing_end_marker():
    lists = sample_lists(2)
    enc = BackupEncoder()
    body = b"".join(p for item in lists for p in enc.encode_list(*item))
    # A cancelled backup: whole lists, then the frame closed without the end marker.
    inner = inner_of(body + enc._compressor.flush())
    raises(recompress(inner), r"^backup stream is truncated: it stops after 2 complete list\(s\), "
                              r"and the end marker never came")


def test_backup_decoder_data_after_the_end_marker():
    data = encode_backup(sample_lists(1))
    raises(recompress(inner_of(data) + msgpack.packb(True)), r"^backup stream has data after its end marker$")
    raises(data + b"junk", r"^backup stream has 4\+ unexpected bytes after its end marker "
                           r"\(starting '6a 75 6e 6b'\)")
    raises(data + b"xy", r"^backup stream has 2 unexpected bytes after its last zstd frame$")


def test_backup_decoder_rankdb_record_version_is_recognised():
    inner = msgpack.packb(True) + b"\x01" + msgpack.packb("ranks") + msgpack.packb(b"\x01go-blob")
    raises(recompress(inner), r"^this looks like a RankDB backup \(list record version 1")


def test_backup_decoder_chunk_with_short_arrays_names_list_and_chunk():
    (list_id, s, records) = sample_lists(4)[3]
    bad = dict(records[0], ids=records[0]["ids"][:-8])
    stream = (msgpack.packb(True) + msgpack.packb(LIST_RECORD_VERSION) + msgpack.packb(list_id)
              + msgpack.packb({"settings": {"set": s.set}, "elements": records[0]["count"], "chunks": 1})
              + msgpack.packb(bad, use_bin_type=True) + msgpack.packb(False))
    raises(recompress(stream), rf"^backup stream is damaged: list '{list_id}' chunk 0 ids must be "
                               rf"{records[0]['count'] * 8} bytes")


def test_backup_decoder_element_count_mismatch():
    (list_id, s, records) = sample_lists(4)[3]
    stream = (msgpack.packb(True) + msgpack.packb(LIST_RECORD_VERSION) + msgpack.packb(list_id)
              + msgpack.packb({"settings": {"set": s.set}, "elements": 999, "chunks": 1})
              + msgpack.packb(records[0], use_bin_type=True) + msgpack.packb(False))
    raises(recompress(stream), rf"^backup stream is damaged: list '{list_id}' has "
                               rf"{records[0]['count']} elements in its chunks, its header announced 999$")


def test_backup_decoder_invalid_settings_are_a_stream_error():
    stream = (msgpack.packb(True) + msgpack.packb(LIST_RECORD_VERSION) + msgpack.packb("ok-id")
              + msgpack.packb({"settings": {"set": "x"}, "elements": 0, "chunks": 0}) + msgpack.packb(False))
    raises(recompress(stream), r"^list 'ok-id' has invalid settings: set must be a string of 2\.\.100")


def test_backup_decoder_stays_failed_after_an_error():
    decoder = BackupDecoder()
    with pytest.raises(BackupCorrupted):
        decoder.feed(b"nonsense")
    with pytest.raises(BackupCorrupted, match=re.escape("the decoder is in state ERROR after an earlier error: ")):
        decoder.feed(encode_backup([]))
    assert decoder.state == "ERROR"


############################################################################################
# Untrusted input: bounded inflation, no cycles, no quoted bytes, board definitions


def _zeros_stream(n: int) -> bytes:
    compressor = zstandard.ZstdCompressor(level=1).compressobj()
    return compressor.compress(bytes(n)) + compressor.flush()


def test_backup_decoder_bomb_fails_after_its_first_block() -> None:
    decoder = BackupDecoder()
    with pytest.raises(BackupCorrupted, match=r"^backup stream is damaged: expected true \(another "
                       r"list\) or false \(the end\) after 0 list\(s\), got 0$"):
        decoder.feed(_zeros_stream(256 * 1024 * 1024))
    # One 128 KiB zstd block was inflated, not 256 MiB (zstandard's decompressobj inflates a
    # whole input in one call).
    assert decoder.inflated <= 128 * 1024


def test_backup_decoder_max_inflated_counts_decompressed_bytes() -> None:
    data = encode_backup(sample_lists(6, chunk=50))
    total = BackupDecoder()
    total.feed(data)
    total.close()
    assert decode_backup(data, max_inflated=total.inflated)  # exactly the limit passes
    limited = BackupDecoder(max_inflated=total.inflated - 1)
    with pytest.raises(BackupTooLarge, match=rf"^the backup stream inflates to more than "
                       rf"{total.inflated - 1} bytes, the limit \(max_inflated_bytes\)"):
        limited.feed(data)
    with pytest.raises(BackupCorrupted, match=r"^the decoder is in state ERROR after an earlier "
                       r"error: the backup stream inflates"):
        limited.feed(b"")


def test_backup_decoder_failure_leaves_no_reference_cycle() -> None:
    """The reported bomb's buffers lived in a cycle (decoder -> exception -> traceback ->
    frames -> decoder and buffers) until a later collection: now refcounting frees them."""
    import gc

    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        decoder = BackupDecoder()
        try:
            decoder.feed(_zeros_stream(1 << 20))
        except BackupCorrupted:
            pass
        del decoder
        gc.collect()
        leaked = [o for o in gc.garbage if isinstance(o, (BackupDecoder, BackupCorrupted))]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert leaked == []


def test_backup_decoder_window_over_8_mib_is_refused() -> None:
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=24)
    compressor = zstandard.ZstdCompressor(compression_params=params).compressobj()
    data = compressor.compress(bytes(100)) + compressor.flush()  # size unknown: a 16 MiB window
    with pytest.raises(BackupCorrupted, match=r"^backup stream is damaged \(zstd frame 1\): .*"
                       r"Frame requires too much memory"):
        decode_backup(data)


@pytest.mark.parametrize("value", [b"\xc3\x02\xa9secret-id", b"\xc3\x07", b"\x01secret"])
def test_backup_decoder_reveal_false_never_quotes_values(value: bytes) -> None:
    data = zstandard.ZstdCompressor().compress(value)
    with pytest.raises(BackupCorrupted) as shown:
        decode_backup(data)
    with pytest.raises(BackupCorrupted) as hidden:
        decoder = BackupDecoder(reveal=False)
        decoder.feed(data)
        decoder.close()
    assert "secret" not in hidden.value.message and "7" not in hidden.value.message.split("version")[-1]
    assert hidden.value.message != shown.value.message or "secret" not in shown.value.message


def test_backup_decoder_reveal_false_hides_the_magic_bytes() -> None:
    decoder = BackupDecoder(reveal=False)
    with pytest.raises(BackupCorrupted, match=r"^backup stream is not zstd-compressed: expected the "
                       r"zstd frame magic '28 b5 2f fd' \(invalid input: magic number mismatch\)$"):
        decoder.feed(b"root:x:0:0")


def test_backup_board_definition_round_trips_and_old_streams_have_none() -> None:
    board = BoardDefinition(metric="steps", atid=2, members=(1, "ann"), window_kind="week",
                            tz="Europe/Oslo", t1=NOW, t2=NOW + 7 * 86400 - 1)
    lists = sample_lists(2)
    data = encode_backup([(*lists[0], board), lists[1]])
    first, second = decode_backup(data)
    assert (first.board, second.board) == (board, None)
    assert all(b.board is None for b in decode_backup(encode_backup(lists)))


def crafted_board_backup(plain: list) -> bytes:
    """A one-list backup whose header carries ``plain`` as its board definition, as a
    hand-made (hostile) stream would."""
    header = {"settings": {"set": "s1", "metadata": {}, "split_size": 2000, "merge_size": 500,
                           "load_index": False}, "elements": 0, "chunks": 0, "board": plain}
    inner = b"".join(msgpack.packb(v) for v in (True, LIST_RECORD_VERSION, "lb", header, False))
    return zstandard.ZstdCompressor().compress(inner)


@pytest.mark.parametrize(("plain", "field"), [
    (["steps"], "board"),
    (["", None, None, "fixed", None, 0, 1], "board[0]"),
    (["m", "2", None, "fixed", None, 0, 1], "board[1]"),
    (["m", None, [], "fixed", None, 0, 1], "board[2]"),
    (["m", None, None, "hour", None, 0, 1], "board[3]"),
    (["m", None, None, "day", "Mars/Olympus", 0, 1], "board[4]"),
    (["m", None, None, "fixed", None, 5, 1], "board[5]"),
    (["st\x00eps", None, None, "fixed", None, 0, 1], "board[0]"),
    (["a\x07b", None, None, "day", None, 0, 1], "board[0]"),
    (["m", 2**63, None, "fixed", None, 0, 1], "board[1]"),
    (["m", None, ["ann", "b\x1bob"], "fixed", None, 0, 1], "board[2][1]"),
])
def test_backup_invalid_board_definition_is_a_stream_error(plain: list, field: str) -> None:
    data = crafted_board_backup(plain)
    with pytest.raises(BackupCorrupted, match=r"^list 'lb' has an invalid leaderboard definition: "):
        decode_backup(data)
    with pytest.raises(BackupCorrupted, match=rf"field '{re.escape(field)}' is invalid$"):
        decoder = BackupDecoder(reveal=False)
        decoder.feed(data)


def test_backup_board_metric_with_a_control_character_is_refused_like_a_request() -> None:
    """The README promises names never hold control characters: a crafted backup header
    cannot bring in a board whose metric a POST /api/leaderboards would refuse."""
    data = crafted_board_backup(["st\x00eps", None, None, "fixed", None, 0, 1])
    with pytest.raises(BackupCorrupted, match=re.escape(
        "list 'lb' has an invalid leaderboard definition: board[0] must not contain control "
        "characters or surrogates, got 'st\\x00eps' (U+0000 at index 2)"
    )):
        decode_backup(data)
    good = crafted_board_backup(["steps", None, None, "fixed", None, 0, 1])
    assert decode_backup(good)[0].board == BoardDefinition(metric="steps", atid=None, members=None,
                                                           t1=0, t2=1)
