"""Request and response bodies: JSON, msgpack and NDJSON in, JSON or msgpack out.

Parsing is the largest per-request cost after the framework itself, so bodies are read as
bytes and decoded with orjson or msgpack directly (not through Quart's ``get_json``). A body
that does not decode is an ``InvalidInput`` naming ``body``, never a 500.

Integers: orjson refuses integers beyond 64 bits, which our sums may reach; responses fall
back to the standard json module for those (rare) bodies. msgpack responses carry such
integers as decimal strings.
"""

from __future__ import annotations

import json
from typing import Any

import msgpack
import orjson
from quart import Request, Response, g

from engine.errors import InvalidInput, PayloadTooLarge

MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack")
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonlines")


def media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


def decode_body(data: bytes, content_type: str | None) -> Any:
    """Decode a whole request body by its Content-Type (JSON when absent or unknown).

    Raises:
        InvalidInput: the body is empty or not valid in its declared format.
    """
    kind = media_type(content_type)
    if not data:
        raise InvalidInput("request body is empty; send a JSON or msgpack document", "body")
    try:
        if kind in MSGPACK_TYPES:
            return msgpack.unpackb(data, raw=False, strict_map_key=False)
        if kind in NDJSON_TYPES:
            return [orjson.loads(line) for line in data.splitlines() if line.strip()]
        return orjson.loads(data)
    # TypeError: a msgpack map with an array or map key, which no dict can hold.
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        label = "msgpack" if kind in MSGPACK_TYPES else "JSON"
        raise InvalidInput(f"request body is not valid {label}: {exc}", "body") from None


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or ``PayloadTooLarge`` (413) past ``limit`` bytes."""
    mark_body_read()
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"request body is {length} bytes; the limit is {limit}", "body")
    chunks = []
    size = 0
    async for chunk in request.body:
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes", "body")
        chunks.append(chunk)
    return b"".join(chunks)


def mark_body_read() -> None:
    """Note that this request's body is (being) consumed; see ``web/app.py``'s
    ``close_if_body_unread``."""
    g.body_read = True


def _dumps_json(value: Any) -> bytes:
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(value, separators=(",", ":"), default=str).encode()


def _msgpack_safe(value: Any) -> Any:
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        return str(value)
    if isinstance(value, dict):
        return {k: _msgpack_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_msgpack_safe(v) for v in value]
    return value


def respond(value: Any, request: Request | None = None, status: int = 200) -> Response:
    """A JSON response, or msgpack when the request's Accept header asks for it."""
    accept = request.headers.get("Accept", "") if request is not None else ""
    if any(t in accept for t in MSGPACK_TYPES):
        try:
            body = msgpack.packb(value, use_bin_type=True)
        except (OverflowError, TypeError):
            body = msgpack.packb(_msgpack_safe(value), use_bin_type=True)
        return Response(body, status=status, content_type="application/msgpack")
    return Response(_dumps_json(value), status=status, content_type="application/json")


def text(value: object, status: int = 200) -> Response:
    """A plain-text response (PSD answers several queries as bare text)."""
    return Response(str(value), status=status, content_type="text/plain; charset=utf-8")


def json_text(value: Any, status: int = 200) -> Response:
    """JSON in a text/plain response, as PSD's ``query_ids`` and ``readcount_with_ids`` send."""
    return Response(_dumps_json(value), status=status, content_type="text/plain; charset=utf-8")
