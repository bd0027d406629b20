"""statshub's HTTP API and live stream at its own paths (``../shared/compat/statshub.md``).

* ``POST /stats/<id>`` -- one update (``dims``, ``counters``, ``increments``, ``gauges``,
  ``members``, ``multiMembers``); 200 ``{"succeeded":true,"error":""}``.
* ``GET /stats/<dim>`` -- each value's ``counters`` / ``gauges`` (the last complete gauge
  period, and member counts) / ``gaugesCurrent`` and the query-time ``total``, empty maps
  omitted; ``GET /stats/`` -- every dimension (what statshub's README promised; its code
  read a dimension named "stats").
* Other methods: 405 with an empty body, as statshub.
* ``/stream/<dim>/<value|*>/<counter|gauge>/<stat>`` (websocket) -- first the history
  (weekly for 30 to 365 days ago, daily for 7 to 30, hourly for the last 7 days), then the
  current figures every ``stream_interval_s`` (statshub: 30 s), each message
  ``{"succeeded":true,"error":"","intervals":[{"asOfSeconds":..,"values":{..}}]}``.

Theory of operation
-------------------
One POST is one engine command (``engine/stats.py``): validated whole first, so a refused
body changes nothing. Errors keep statshub's body, ``{"succeeded": false, "error": ...}``:
400 ``Unable to decode request: ...`` for a body that does not decode or does not fit the
update's types (the message names the field), 400 ``Unable to post stats: ...`` for the
reserved value ``total`` (statshub answered 500), 413 past the server's ``max_body_bytes``
(statshub set no limit of its own: Go's ``net/http`` reads a body of any size). A body is
read as statshub's ``json.NewDecoder(r.Body).Decode(&update)`` read it
(:func:`decode_update`).

The stream's history comes from the engine's own series (statshub queried BigQuery; the
export of ``pointspace stats export`` is its archive table). A websocket handshake passes
the app's checks like every request: ``web/edge.py`` refuses a foreign ``Origin`` or
``Host`` (403 / 421) and, with JWT on, ``web/auth.py`` wants an ``api:read`` token, each
from its own ``before_websocket`` hook.

Streams are bounded (statshub set no bounds; its streams fed a few dashboards):

* At most :data:`MAX_STREAMS` are open at once; past it a handshake is refused with 503
  and statshub's error body saying so (each stream holds a connection, and the server's
  ``--max-connections`` is 1000 by default: streams may take at most a quarter of them).
* A ``*`` stream carries at most :data:`MAX_STREAM_VALUES` values: the ones with the largest
  figure now (at the handshake for the history, at each push for the live figures), ties by
  name. ``total`` is still the total over every value, and a message that left values out
  says how many in ``"valuesOmitted"`` (a field statshub's clients ignore).
* The history is computed from the figures as of the last interval boundary and shared by
  every stream that asks the same question within the interval; live figures are shared by
  every stream of the same stat at each boundary. Both read the dimension's values in small
  rounds with checkpoints between them (``engine.engine.STATS_READ_CHUNK``).

Names in paths are checked as everywhere else (``engine.events.check_name``: non-empty, at
most 200 characters, no control characters); a bad GET dimension is a 400, a bad stream part
gets the malformed-path message, and every echo of a path or name is cut
(``engine.errors.quote``). Integers past 64 bits (a ``total`` summing values near statshub's
int64 limit) are written exactly, never a 500: updates that would take a stored roll-up or an
id's counter outside int64 are refused (``engine/stats.py``), but a sum across values may
still pass it.

Deliberate differences: the dimension in a GET or stream path is lower-cased (values are
stored lower-case; statshub answered a mixed-case name with nothing); the one-minute cache of
``/stats/country`` is not kept (a query is one message per value, not a Redis round trip per
value and stat); a stream with a stat type other than ``counter`` or ``gauge`` gets the
malformed-path error instead of empty values.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any

import orjson
import trio
from quart import Blueprint, Response, current_app, has_request_context, request, websocket
from werkzeug.exceptions import HTTPException

from engine.errors import InvalidInput, PointspaceError, quote
from engine.events import check_name
from engine.stats import StatsLimit, stat_name, statshub_fields
from web.bodies import read_body
from web.context import closing_on_error, engine_of, settings_of

log = logging.getLogger("pointspace.web.statshub")

statshub = Blueprint("statshub", __name__)
SEED = "statshub"
SEED_DOC = "statshub: dimensional counters, gauges and unique members with roll-ups, at /stats and /stream."

#: statshub's stream history: (days ago from, days ago to, interval seconds).
HISTORY_RANGES = ((365, 30, 7 * 86400), (30, 7, 86400), (7, 0, 3600))
EXPECTED_STREAM = "/stream/country/*/counter/bytesGiven"
_OTHER_METHODS = ["PUT", "DELETE", "PATCH", "OPTIONS"]
#: Streams open at once, per server: a quarter of the default ``--max-connections`` (1000),
#: so streams can never take the connections HTTP needs (statshub's streams fed a few
#: dashboards). Over it, a handshake is refused with 503.
MAX_STREAMS = 256
#: Values one ``*`` stream carries: every ISO 3166-1 country (249 codes) fits, and
#: ``/stream/country/*/...`` was statshub's stream. A year of history for 300 values is
#: ~1 MB of JSON; for the 10,000 values a dimension may hold it would be ~35 MB per stream.
MAX_STREAM_VALUES = 300
_STREAMS_KEY = "statshub_streams"


def _body(succeeded: bool, error: str = "", **more: Any) -> bytes:
    value = {"succeeded": succeeded, "error": error, **more}
    try:
        return orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):
        # orjson stops at 64 bits; a total across values near statshub's int64 limit may
        # pass them. JSON numbers have no limit: written exactly (as web/bodies.respond).
        return json.dumps(value, separators=(",", ":")).encode()


def _answer(status: int, succeeded: bool, error: str = "", **more: Any) -> Response:
    response = Response(_body(succeeded, error, **more), status=status, content_type="application/json")
    # A websocket handshake's refusal has no request body to close the connection after.
    return closing_on_error(response) if status >= 400 and has_request_context() else response


def _base(rest: str) -> str:
    """Go's ``path.Base`` of ``/stats/<rest>``: the last non-empty segment, else "stats"."""
    parts = [p for p in rest.split("/") if p]
    return parts[-1] if parts else "stats"


############################################################################################
# /stats


@statshub.route("/stats/", methods=["GET", "POST", *_OTHER_METHODS], defaults={"rest": ""})
@statshub.route("/stats/<path:rest>", methods=["GET", "POST", *_OTHER_METHODS])
async def stats(rest: str) -> Response:
    """statshub's one handler: POST updates the id, GET queries the dimension."""
    if request.method == "POST":
        return await _post(_base(rest))
    if request.method in ("GET", "HEAD"):
        return await _get(rest)
    response = Response(b"", status=405)
    response.headers["Allow"] = "GET, POST"
    del response.headers["Content-Type"]
    return closing_on_error(response)


async def _post(stat_id: str) -> Response:
    data = await read_body(request, settings_of(current_app).max_body_bytes)
    try:
        body = decode_update(data)  # statshub decoded JSON whatever the type
    except InvalidInput as exc:
        return _answer(400, False, f"Unable to decode request: {exc.message}")
    try:
        await engine_of(current_app).stats_update(stat_id, body)
    except InvalidInput as exc:
        posting = isinstance(exc, StatsLimit) or "reserved" in exc.message
        prefix = "Unable to post stats" if posting else "Unable to decode request"
        return _answer(400, False, f"{prefix}: {exc.message}")
    return _answer(200, True)


class _GoObject(dict[str, Any]):
    """A decoded JSON object that also keeps its members in document order, repeats
    included (a ``dict`` keeps one value per key)."""

    pairs: list[tuple[str, Any]]


def _object_pairs(pairs: list[tuple[str, Any]]) -> _GoObject:
    obj = _GoObject(pairs)  # a repeated key inside a map: the last wins, as Go's map assignment
    obj.pairs = pairs
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(object_pairs_hook=_object_pairs, parse_constant=_no_constant)


def decode_update(data: bytes) -> Any:
    """An update body as statshub's ``json.NewDecoder(r.Body).Decode(&update)`` read it.

    * One document is read: ``Decode`` stops at the end of the first JSON value, and
      statshub never looked further, so ``{...} trailing`` is the object. Only JSON's
      whitespace may come before it.
    * Invalid UTF-8 inside a string becomes U+FFFD (``Unmarshal``: "replaced by the
      Unicode replacement character"); ``NaN`` and ``Infinity`` are not JSON.
    * An object's keys are matched to the update's fields by
      :func:`engine.stats.statshub_fields` (exact, else case-insensitive; unknown keys
      ignored; a field named twice merges), which is applied here to the document's
      members in order, repeats included.

    Kept stricter than Go (``engine/stats.py``): a body that is not an object (``null``
    decoded into nothing in Go) and values of the wrong type are refused by the engine.

    Raises:
        InvalidInput: no JSON value at the start of the body (the message names ``body``).
    """
    text = data.decode("utf-8", errors="replace")
    start = len(text) - len(text.lstrip(" \t\r\n"))
    if start == len(text):
        raise InvalidInput("request body is empty; send a JSON object of dims and stats (EOF)", "body")
    try:
        value, _ = _DECODER.raw_decode(text, start)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}", "body") from None
    if isinstance(value, _GoObject):
        return statshub_fields(value.pairs)
    return value


async def _get(rest: str) -> Response:
    if rest.strip("/"):
        try:
            dims: list[str] | None = [check_name(_base(rest), "dim").lower()]
        except InvalidInput as exc:
            return _answer(400, False, f"Unable to query stats: {exc.message}")
    else:
        dims = None
    answer = await engine_of(current_app).stats_query(dims)
    return _answer(200, True, dims=answer)


@statshub.errorhandler(PointspaceError)
async def _domain_error(exc: PointspaceError) -> Response:
    return _answer(exc.http_status, False, f"Unable to post stats: {exc.message}")


@statshub.errorhandler(HTTPException)
async def _http_error(exc: HTTPException) -> Response:
    return _answer(exc.code or 500, False, (exc.description or exc.name or "error").rstrip("."))


############################################################################################
# /stream (websocket)


def stream_interval(app: Any) -> float:
    """Seconds between live messages: the settings' ``stats_stream_interval_s`` (statshub: 30)."""
    return float(settings_of(app).stats_stream_interval_s)


def parse_stream_path(path: str) -> tuple[str, str, str, str] | None:
    """``(dim, value, kind, stat)`` of a stream path as statshub split it (``//`` read as
    ``/``, segments after the stat ignored), or ``None`` when malformed.

    Raises:
        InvalidInput: a dimension, value or stat that is no valid name
            (``engine.events.check_name``), naming the part.

    >>> parse_stream_path("/stream/Country/*/counter/bytes-given")
    ('country', '*', 'counter', 'bytes_given')
    >>> parse_stream_path("/stream/country/es/counter") is None
    True
    """
    parts = path.replace("//", "/").split("/")
    if len(parts) < 6 or not all(parts[2:6]) or parts[4] not in ("counter", "gauge"):
        return None
    dim = check_name(parts[2], "dimension").lower()
    value = parts[3] if parts[3] == "*" else check_name(parts[3], "value").lower()
    return dim, value, parts[4], stat_name(check_name(parts[5], "stat"))


def _wrong_path(path: str, reason: str = "") -> str:
    return (f"Wrong path: {quote(path.replace('//', '/'))}{reason}. "
            f"Expected something like: {EXPECTED_STREAM}")


class _OpenStreams:
    """How many streams this app has open (``MAX_STREAMS``)."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


def _open_streams(app: Any) -> _OpenStreams:
    streams = app.extensions.get(_STREAMS_KEY)
    if streams is None:
        streams = app.extensions[_STREAMS_KEY] = _OpenStreams()
    return streams


def _carried(message: dict[str, Any], omitted: int) -> dict[str, Any]:
    if omitted:
        message["valuesOmitted"] = omitted
    return message


def history_ranges(now: int) -> list[tuple[int, int, int]]:
    """statshub's three history ranges as ``(start, end, interval)``, end exclusive."""
    return [(now - older * 86400, now - newer * 86400 + (1 if newer == 0 else 0), interval)
            for older, newer, interval in HISTORY_RANGES]


@statshub.websocket("/stream", defaults={"rest": ""})
@statshub.websocket("/stream/", defaults={"rest": ""})
@statshub.websocket("/stream/<path:rest>")
async def stream(rest: str) -> Response | None:
    """Send the history, then the figures at every interval boundary until the client goes;
    a malformed path (``/stream`` itself included) gets the message naming the expected form.
    Past :data:`MAX_STREAMS` open streams the handshake is refused (503)."""
    streams = _open_streams(current_app)
    if streams.count >= MAX_STREAMS:
        response = _answer(503, False, f"too many streams: at most {MAX_STREAMS} are open at once; "
                                       "close one or retry later")
        response.headers["Retry-After"] = "30"
        return response  # before accept(): the handshake's answer
    streams.count += 1
    try:
        await _serve_stream()
    finally:
        streams.count -= 1
    return None


async def _serve_stream() -> None:
    await websocket.accept()
    try:
        parsed = parse_stream_path(websocket.path)
    except InvalidInput as exc:
        await websocket.send(_body(False, _wrong_path(websocket.path, f" ({exc.message})")).decode())
        return
    if parsed is None:
        await websocket.send(_body(False, _wrong_path(websocket.path)).decode())
        return
    dim, value, kind, stat = parsed
    engine = engine_of(current_app)
    interval = stream_interval(current_app)
    # The history as of the last interval boundary: streams opened within one interval ask
    # the same question and share one answer; the first push follows at the next boundary.
    now = int(math.floor(time.time() / interval) * interval)
    history, omitted = await engine.stats_stream_history(dim, value, kind, stat, history_ranges(now), now,
                                                         limit=MAX_STREAM_VALUES)
    await websocket.send(_body(True, **_carried({"intervals": history}, omitted)).decode())
    while True:
        # Wake at the next wall-clock multiple of the interval (statshub: Truncate + interval).
        wall = time.time()
        boundary = (math.floor(wall / interval) + 1) * interval
        await trio.sleep(boundary - wall)
        as_of = int(boundary)
        values, omitted = await engine.stats_stream_live(dim, value, kind, stat, as_of, limit=MAX_STREAM_VALUES)
        message = _carried({"intervals": [{"asOfSeconds": as_of, "values": values}]}, omitted)
        await websocket.send(_body(True, **message).decode())


__all__ = [
    "EXPECTED_STREAM",
    "MAX_STREAMS",
    "MAX_STREAM_VALUES",
    "decode_update",
    "history_ranges",
    "parse_stream_path",
    "statshub",
    "stream_interval",
]
