"""``engine/record_encoding.pyx`` writes a counter batch's log record: it must give exactly
``msgpack.packb``'s bytes (logs on disk and their readers stay as they are), fall back to
msgpack for anything outside its fast path, and raise where msgpack raises."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.commands import IngestBatch, decode_command, encode_command
from engine.events import validate_counter_events
from engine.record_encoding import pack_rows

# Every boundary of msgpack's int forms (fixint, 8/16/32/64 bits, signed and unsigned).
EDGES = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1,
         -1, -32, -33, -128, -129, -32768, -32769, -(2**31), -(2**31) - 1, -(2**63)]

ints = st.one_of(st.sampled_from(EDGES), st.integers(-(2**63), 2**64 - 1))
texts = st.text(max_size=40) | st.sampled_from(["", "a" * 31, "a" * 32, "b" * 255, "c" * 256, "é" * 40000, "x" * 70000])
values = st.one_of(st.none(), ints, texts)
rows = st.lists(st.tuples(ints, texts, ints, values, ints, ints, values, ints)
                | st.lists(values, max_size=20).map(tuple), max_size=40)


def packb(op: str, items: Any) -> bytes:
    return msgpack.packb([op, items], use_bin_type=True)


@settings(max_examples=400, deadline=None)
@given(op=texts, items=rows)
def test_same_bytes_as_msgpack(op: str, items: list[tuple[Any, ...]]) -> None:
    assert pack_rows(op, items) == packb(op, items)


@pytest.mark.parametrize("n", [0, 1, 15, 16, 65535, 65536])
def test_array_headers_of_every_length(n: int) -> None:
    items = [(i, None) for i in range(n)]
    assert pack_rows("ingest", items) == packb("ingest", items)
    assert pack_rows("ingest", [tuple(range(n % 70))]) == packb("ingest", [tuple(range(n % 70))])


@pytest.mark.parametrize("odd", [1.5, True, False, b"bytes", [1, [2]], {"a": 1}, 2**64 - 1, -(2**63)])
def test_anything_else_goes_to_msgpack_whole(odd: Any) -> None:
    items = [(1, "steps", odd), [2, odd]]
    assert pack_rows("ingest", items) == packb("ingest", items)
    assert msgpack.unpackb(pack_rows("ingest", items), strict_map_key=False)[1][0][2] == odd


@pytest.mark.parametrize("bad", [2**64, -(2**63) - 1, "\ud800"])
def test_raises_where_msgpack_raises(bad: Any) -> None:
    with pytest.raises(Exception) as ours:
        pack_rows("ingest", [(1, bad)])
    with pytest.raises(Exception) as theirs:
        packb("ingest", [(1, bad)])
    assert type(ours.value) is type(theirs.value)


def test_rows_that_are_not_tuples_or_lists_go_to_msgpack() -> None:
    with pytest.raises(TypeError):
        pack_rows("ingest", [object()])


def test_an_ingest_record_round_trips_through_the_log_codec() -> None:
    events = validate_counter_events([
        {"metric": "steps", "user": 7, "value": -5, "ts": 1_700_000_000, "atid": 3, "aid": 2**62},
        {"metric": "points", "user": "ana", "value": 2**63 - 1, "ts": 1_700_000_001, "ts1": 1_699_999_000,
         "mode": "diff", "aid": 1},
    ])
    command = IngestBatch(events=events)
    record = encode_command(command)
    assert record == packb("ingest", events)
    assert decode_command(record) == command


class _Text(str):
    pass


class _Rows(list):  # type: ignore[type-arg]
    pass


@pytest.mark.parametrize("op, items", [(_Text("ingest"), [(1,)]), ("ingest", _Rows([(1,)])), ("ingest", ((1,),)),
                                       ("ingest", None), (None, [(1,)])])
def test_arguments_of_other_types_go_to_msgpack(op: Any, items: Any) -> None:
    assert pack_rows(op, items) == packb(op, items)
