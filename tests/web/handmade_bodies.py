"""Request bodies written byte by byte, for tests that hold two decoders to one answer.

orjson and msgpack's packer never write what a client may still send: duplicate keys, lone
surrogate escapes (``"\\ud800"``), surrogates encoded as UTF-8, integral floats such as
``10.0``, integers past 64 bits in msgpack's place. These writers do: an object is a list of
(key, value) pairs, so a key may repeat.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import msgpack

Pairs = list[tuple[str, Any]]


class Raw:
    """A JSON number or literal written as given (``10.0``, ``1e3``, ``-0``, ``NaN``)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Raw({self.text!r})"


class Surrogates(str):
    """A string whose UTF-8 form keeps its surrogates (``surrogatepass``): not UTF-8 at all."""


############################################################################################
# Writing bodies by hand


def json_value(value: Any, ascii_only: bool) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, list) and value and isinstance(value[0], tuple):
        return json_object(value, ascii_only)
    if isinstance(value, Surrogates):
        return '"' + str(value) + '"'  # raw surrogates; encoded with surrogatepass below
    if isinstance(value, list):
        return "[" + ",".join(json_value(v, ascii_only) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)  # a lone surrogate: "\ud800"


def json_object(pairs: Pairs, ascii_only: bool) -> str:
    return "{" + ",".join(f"{json.dumps(k)}:{json_value(v, ascii_only)}" for k, v in pairs) + "}"


def to_json(body: Any, ascii_only: bool) -> bytes:
    return json_value(body, ascii_only).encode("utf-8", "surrogatepass")


def msgpack_value(value: Any) -> bytes:
    if isinstance(value, Raw):
        number = float(value.text)
        if value.text.lstrip("-").isdigit() and abs(int(value.text)) < 2**63:
            return msgpack.packb(int(value.text))  # "-0" and friends
        return msgpack.packb(number)
    if isinstance(value, list) and value and isinstance(value[0], tuple):
        return msgpack_map(value)
    if isinstance(value, list):
        head = bytes([0x90 | len(value)]) if len(value) < 16 else b"\xdc" + struct.pack(">H", len(value))
        return head + b"".join(msgpack_value(v) for v in value)
    if isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
        return (bytes([0xA0 | len(data)]) if len(data) < 32 else b"\xd9" + bytes([len(data)])) + data
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        return msgpack.packb(str(value))  # msgpack has no wider integer
    return msgpack.packb(value, use_bin_type=True)


def msgpack_map(pairs: Pairs) -> bytes:
    head = bytes([0x80 | len(pairs)]) if len(pairs) < 16 else b"\xde" + struct.pack(">H", len(pairs))
    return head + b"".join(msgpack_value(k) + msgpack_value(v) for k, v in pairs)
