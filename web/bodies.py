"""Request and response bodies: JSON, msgpack and NDJSON in, JSON or msgpack out.

Parsing is the largest per-request cost after the framework itself, so bodies are read as
bytes and decoded with orjson or msgpack directly (not through Quart's ``get_json``). A body
that does not decode is an ``InvalidInput`` naming ``body``, never a 500. Which media types a
route takes at all is decided before it runs, by ``web/edge.py``.

Theory of operation: reading a body
-----------------------------------
A client that sends its headers and then a body slowly, or not at all, holds a connection
and every byte it sent so far for as long as the server waits (slowloris). Quart's own
``BODY_TIMEOUT`` only bounds ``get_data``; a route that iterates ``request.body`` waits
forever. So the waiting itself is guarded, once, in :class:`GuardedBody`, the request body
class of our app (:func:`request_class`): every way of reading a body -- :func:`body_chunks`,
:func:`read_body`, Quart's ``get_data`` and form parser, a bare ``async for chunk in
request.body`` -- waits for each chunk under two clocks, both started when the request's
headers arrived:

* the **rate window**: each ``body_rate_window_s`` window must bring at least
  ``min_body_rate_bytes_s * body_rate_window_s`` bytes. A stalled client is cut at the end of
  its window, a trickling one at the end of the first window it falls short in.
* the **deadline**: an ordinary body must be complete within ``body_timeout_s``. A *stream*
  (NDJSON ingest, a restore), which may rightly take hours, has no deadline but the rate:
  :func:`body_chunks` with ``stream=True`` lifts it.

Bytes are counted as they arrive, not as the route takes them. Time the route spends on a
chunk it was given (applying a group of events, decoding a backup block in a thread) is the
server's, not the client's: a window that ends while the route is busy is not judged, and a
new one starts when it next waits.
A violation raises :class:`BodyTimeout`: 408 naming ``body``; the connection is then closed
(hypercorn closes a connection whose request body was not read to its end), which frees the
buffered bytes with the request.

Integers past 2**53 in JSON answers
-----------------------------------
JSON numbers are written exactly, however large (sums may pass 64 bits). JavaScript reads
numbers as doubles (exact to 2**53) and many 64-bit clients fail past 2**64, so a client may
ask for such integers as decimal strings with ``Accept: application/json;
IEEE754Compatible=true`` -- OData's parameter for the same problem (OData JSON Format 4.01,
section 4.5.6, "Controlling the Representation of Numbers"). Integers within +-(2**53 - 1)
stay numbers; the answer's ``Content-Type`` carries the parameter back, as OData's does.
msgpack answers carry integers beyond 64 bits as decimal strings always (msgpack has no
wider integer).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, ClassVar

import msgpack
import orjson
import trio
from quart import Request, Response, g
from quart_trio.wrappers.request import TrioBody, TrioRequest

from engine.errors import InvalidInput, PayloadTooLarge, PointspaceError
from web.serving.settings import Settings

#: Whether the fast body decoders run (``web/api/event_bodies.py``, PSD's writes in
#: ``web/compat/psd.py``): ``POINTSPACE_FAST_DECODE=0`` in the server's environment sends every
#: body the reference way (decode, check, validate), as before they existed. Read at start.
FAST_DECODE = os.environ.get("POINTSPACE_FAST_DECODE", "1") != "0"
MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack")
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonlines")
#: The largest integer magnitude a double holds exactly (JavaScript's Number.MAX_SAFE_INTEGER).
MAX_SAFE_INTEGER = 2**53 - 1


def media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


def decode_body(data: bytes, content_type: str | None) -> Any:
    """Decode a whole request body by its Content-Type (JSON when absent or unknown: the
    edge has refused any type the route does not take before this runs).

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


############################################################################################
# Reading bodies: deadline and minimum rate


class BodyTimeout(PointspaceError):
    """The request body did not arrive in time: too slow, stalled, or past the deadline."""

    http_status = 408
    #: goa's code on RankDB routes (``web/compat/rankdb/common.py`` reads ``code``).
    code = "request_timeout"


@dataclass(frozen=True, slots=True, kw_only=True)
class BodyLimits:
    """How long a body may take: the settings of the same names (``web/serving/settings.py``)."""

    #: Seconds for a whole ordinary body, from its request's headers.
    body_timeout_s: float = 60.0
    #: Bytes per second a body must average over each window (streams included).
    min_body_rate_bytes_s: int = 1024
    body_rate_window_s: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> BodyLimits:
        return cls(
            body_timeout_s=settings.body_timeout_s,
            min_body_rate_bytes_s=settings.min_body_rate_bytes_s,
            body_rate_window_s=settings.body_rate_window_s,
        )

    @property
    def window_bytes(self) -> float:
        """Bytes each window must bring."""
        return self.min_body_rate_bytes_s * self.body_rate_window_s


class GuardedBody(TrioBody):
    """Quart-Trio's request body, with every wait for a chunk under the rate window and the
    deadline (see the module's theory of operation).

    Quart fills the body from the connection as bytes arrive (``append``, where they are
    counted); readers take what has arrived so far (``__anext__``) or wait for all of it
    (``await``). Both go through :meth:`__anext__` here, so no reader waits unguarded.
    """

    def __init__(self, expected_content_length: int | None, max_content_length: int | None) -> None:
        super().__init__(expected_content_length, max_content_length)
        self.limits = BodyLimits()
        #: Set by ``body_chunks(stream=True)``: no deadline, the rate alone.
        self.stream = False
        self._started = trio.current_time()
        #: Bytes received in all, and at the start of the current window, which ends then.
        self._received = 0
        self._window_start_received = 0
        self._window_end = self._started + self.limits.body_rate_window_s

    def guard(self, limits: BodyLimits) -> None:
        """Apply ``limits`` (the app's) from the request's start."""
        self.limits = limits
        self._window_end = self._started + limits.body_rate_window_s

    def append(self, data: bytes) -> None:
        self._received += len(data)
        super().append(data)

    async def __anext__(self) -> bytes:
        limits = self.limits
        now = trio.current_time()
        if now >= self._window_end:
            # The reader was busy past the window's end (applying the last chunk, before the
            # first read: auth): the server's time, not the client's. A new window starts.
            self._next_window(now)
        while True:
            deadline = math.inf if self.stream else self._started + limits.body_timeout_s
            with trio.move_on_at(min(self._window_end, deadline)):
                return await super().__anext__()
            if trio.current_time() >= deadline:
                raise BodyTimeout(
                    f"request body not complete within {limits.body_timeout_s:g} s; send it "
                    "faster, or in several requests", "body")
            received = self._received - self._window_start_received
            if received < limits.window_bytes:
                raise BodyTimeout(
                    f"request body too slow: {received} bytes in the last "
                    f"{limits.body_rate_window_s:g} s; it must keep arriving at "
                    f"{limits.min_body_rate_bytes_s} bytes per second or more", "body")
            self._next_window(self._window_end)

    def _next_window(self, start: float) -> None:
        self._window_start_received = self._received
        self._window_end = start + self.limits.body_rate_window_s

    def __await__(self) -> Any:
        return self._read_all().__await__()

    async def _read_all(self) -> bytes:
        """The whole body, read through the guard. Kept, as Quart's ``await body`` keeps it, so
        a later reader (the view after ``web/auth.py`` looked at the body) gets it again."""
        chunks = []
        size = 0
        limit = self._max_content_length
        async for chunk in self:
            size += len(chunk)
            if limit is not None and size > limit:
                raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes", "body")
            chunks.append(chunk)
        data = b"".join(chunks)
        self._data.extend(data)
        return data


class GuardedRequest(TrioRequest):
    """Quart-Trio's request with a :class:`GuardedBody`; :func:`request_class` makes one per
    app with its limits."""

    body_class = GuardedBody
    body_limits: ClassVar[BodyLimits] = BodyLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.body.guard(self.body_limits)  # type: ignore[attr-defined]


def request_class(settings: Settings) -> type[GuardedRequest]:
    """The request class for an app with ``settings``' body limits.

    Quart's own ``BODY_TIMEOUT`` should then be ``None``: the deadline is the body's.
    """
    limits = BodyLimits.from_settings(settings)
    return type("PointspaceRequest", (GuardedRequest,), {"body_limits": limits})


class body_chunks:  # noqa: N801 - used as a function: ``async for chunk in body_chunks(...)``
    """The request body chunk by chunk, as it arrives: the one way routes read bodies.

    Args:
        request: the current request.
        limit: most bytes in all, ``PayloadTooLarge`` (413, ``body``) past it; ``None`` for a
            route that counts (and words the error) itself.
        stream: the body is a stream (NDJSON ingest, a restore): no overall deadline, the
            minimum rate alone (``BodyTimeout``, 408). Otherwise the whole body must arrive
            within ``body_timeout_s``.

    Marks the body read (``mark_body_read``). Memory: one chunk at a time, as received.
    """

    def __init__(self, request: Request, limit: int | None, *, stream: bool = False) -> None:
        mark_body_read()
        self._body = request.body
        self._limit = limit
        self._size = 0
        if stream:
            assert isinstance(self._body, GuardedBody), "the app's request_class guards bodies"
            self._body.stream = True
        length = request.content_length
        if limit is not None and length is not None and length > limit:
            raise PayloadTooLarge(f"request body is {length} bytes; the limit is {limit}", "body")

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._body.__anext__()
        self._size += len(chunk)
        if self._limit is not None and self._size > self._limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {self._limit} bytes", "body")
        return chunk


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or ``PayloadTooLarge`` (413) past ``limit`` bytes, or ``BodyTimeout``
    (408) when it does not arrive in time."""
    return b"".join([chunk async for chunk in body_chunks(request, limit)])


def mark_body_read() -> None:
    """Note that this request's body is (being) consumed; see ``web/app.py``'s
    ``close_if_body_unread``."""
    g.body_read = True


############################################################################################
# Answers


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


def wants_safe_integers(accept: str) -> bool:
    """Whether an ``Accept`` header asks for integers past 2**53 as strings: a JSON media
    range with OData's ``IEEE754Compatible=true`` (names and values in any case).

    >>> wants_safe_integers("application/json; IEEE754Compatible=true")
    True
    >>> wants_safe_integers("text/html, application/json;ieee754compatible=TRUE;q=0.9")
    True
    >>> wants_safe_integers("application/json"), wants_safe_integers("text/plain; IEEE754Compatible=true")
    (False, False)
    """
    if "=" not in accept:
        return False  # the common case, without parsing
    for media_range in accept.split(","):
        kind, *params = media_range.split(";")
        if kind.strip().lower() not in _JSON_RANGES:
            continue
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "ieee754compatible" and value.strip().strip('"').lower() == "true":
                return True
    return False


_JSON_RANGES = frozenset({"application/json", "application/*", "*/*"})


def _js_safe(value: Any) -> Any:
    """``value`` with every integer beyond +-(2**53 - 1) as its decimal string.

    >>> _js_safe({"sum": 2**64 + 1, "n": [2**53 - 1, -(2**53), True]})
    {'sum': '18446744073709551617', 'n': [9007199254740991, '-9007199254740992', True]}
    """
    if type(value) is int:
        return value if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER else str(value)
    if isinstance(value, dict):
        return {k: _js_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_js_safe(v) for v in value]
    return value


def respond(value: Any, request: Request | None = None, status: int = 200) -> Response:
    """A JSON response, or msgpack when the request's Accept header asks for it; integers
    past 2**53 as strings when it asks for ``IEEE754Compatible=true`` (module docstring)."""
    accept = request.headers.get("Accept", "") if request is not None else ""
    if any(t in accept for t in MSGPACK_TYPES):
        try:
            body = msgpack.packb(value, use_bin_type=True)
        except (OverflowError, TypeError):
            body = msgpack.packb(_msgpack_safe(value), use_bin_type=True)
        return Response(body, status=status, content_type="application/msgpack")
    if wants_safe_integers(accept):
        return Response(_dumps_json(_js_safe(value)), status=status,
                        content_type="application/json; IEEE754Compatible=true")
    return Response(_dumps_json(value), status=status, content_type="application/json")


def text(value: object, status: int = 200) -> Response:
    """A plain-text response (PSD answers several queries as bare text)."""
    return Response(str(value), status=status, content_type="text/plain; charset=utf-8")


def json_text(value: Any, status: int = 200) -> Response:
    """JSON in a text/plain response, as PSD's ``query_ids`` and ``readcount_with_ids`` send."""
    return Response(_dumps_json(value), status=status, content_type="text/plain; charset=utf-8")
