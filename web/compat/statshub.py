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
reserved value ``total`` (statshub answered 500), 413 past :data:`MAX_BODY_BYTES`.

The stream's history comes from the engine's own series (statshub queried BigQuery; the
export of ``pointspace stats export`` is its archive table). A websocket handshake passes
the same checks as every request (``web/edge.py``: a foreign ``Origin`` or ``Host`` is
refused before the handshake completes, 403 / 421) and, with JWT on, needs an ``api:read``
token (``web/auth.py``'s keys and scopes): Quart runs ``before_request`` hooks for HTTP
only, so :func:`guard_websocket` applies them to the handshake.

Deliberate differences: the dimension in a GET or stream path is lower-cased (values are
stored lower-case; statshub answered a mixed-case name with nothing); the one-minute cache of
``/stats/country`` is not kept (a query is one message per value, not a Redis round trip per
value and stat); a stream with a stat type other than ``counter`` or ``gauge`` gets the
malformed-path error instead of empty values.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import orjson
import trio
from quart import Blueprint, Response, current_app, request, websocket
from werkzeug.exceptions import HTTPException

from engine.errors import InvalidInput, PointspaceError
from engine.stats import stat_name
from web.auth import READ, AuthError, Grant, KeyRing, bearer_token
from web.bodies import decode_body, read_body
from web.context import closing_on_error, engine_of, settings_of
from web.edge import EdgePolicy

log = logging.getLogger("pointspace.web.statshub")

statshub = Blueprint("statshub", __name__)
SEED = "statshub"
SEED_DOC = "statshub: dimensional counters, gauges and unique members with roll-ups, at /stats and /stream."

#: Largest update body. Lantern's updates were a few KB; 4 MiB holds 100,000 members of ~40
#: bytes (``engine.stats.MAX_UPDATE_MEMBERS``), and nothing a stats client sends is larger.
MAX_BODY_BYTES = 4 * 1024 * 1024
#: statshub's stream history: (days ago from, days ago to, interval seconds).
HISTORY_RANGES = ((365, 30, 7 * 86400), (30, 7, 86400), (7, 0, 3600))
EXPECTED_STREAM = "/stream/country/*/counter/bytesGiven"
_OTHER_METHODS = ["PUT", "DELETE", "PATCH", "OPTIONS"]


def _body(succeeded: bool, error: str = "", **more: Any) -> bytes:
    return orjson.dumps({"succeeded": succeeded, "error": error, **more})


def _answer(status: int, succeeded: bool, error: str = "", **more: Any) -> Response:
    return Response(_body(succeeded, error, **more), status=status, content_type="application/json")


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
    data = await read_body(request, MAX_BODY_BYTES)
    try:
        body = decode_body(data, "application/json")  # statshub decoded JSON whatever the type
    except InvalidInput as exc:
        return closing_on_error(_answer(400, False, f"Unable to decode request: {exc.message}"))
    try:
        await engine_of(current_app).stats_update(stat_id, body)
    except InvalidInput as exc:
        prefix = "Unable to post stats" if "reserved" in exc.message else "Unable to decode request"
        return closing_on_error(_answer(400, False, f"{prefix}: {exc.message}"))
    return _answer(200, True)


async def _get(rest: str) -> Response:
    dims = None if not rest.strip("/") else [_base(rest).lower()]
    answer = await engine_of(current_app).stats_query(dims)
    return _answer(200, True, dims=answer)


@statshub.errorhandler(PointspaceError)
async def _domain_error(exc: PointspaceError) -> Response:
    return closing_on_error(_answer(exc.http_status, False, f"Unable to post stats: {exc.message}"))


@statshub.errorhandler(HTTPException)
async def _http_error(exc: HTTPException) -> Response:
    return closing_on_error(_answer(exc.code or 500, False, (exc.description or exc.name or "error").rstrip(".")))


############################################################################################
# /stream (websocket)


def stream_interval(app: Any) -> float:
    """Seconds between live messages: the settings' ``stats_stream_interval_s`` (statshub: 30)."""
    return float(settings_of(app).stats_stream_interval_s)


def parse_stream_path(path: str) -> tuple[str, str, str, str] | None:
    """``(dim, value, kind, stat)`` of a stream path as statshub split it (``//`` read as
    ``/``, segments after the stat ignored), or ``None`` when malformed.

    >>> parse_stream_path("/stream/Country/*/counter/bytes-given")
    ('country', '*', 'counter', 'bytes_given')
    >>> parse_stream_path("/stream/country/es/counter") is None
    True
    """
    parts = path.replace("//", "/").split("/")
    if len(parts) < 6 or not all(parts[2:6]) or parts[4] not in ("counter", "gauge"):
        return None
    return parts[2].lower(), parts[3].lower(), parts[4], stat_name(parts[5])


def history_ranges(now: int) -> list[tuple[int, int, int]]:
    """statshub's three history ranges as ``(start, end, interval)``, end exclusive."""
    return [(now - older * 86400, now - newer * 86400 + (1 if newer == 0 else 0), interval)
            for older, newer, interval in HISTORY_RANGES]


@statshub.before_websocket
async def guard_websocket() -> Response | None:
    """The edge's Host and Origin checks and JWT's ``api:read``, for the handshake."""
    app = current_app
    settings = settings_of(app)
    policy = app.extensions.get("pointspace.statshub.edge")
    if policy is None:
        policy = app.extensions["pointspace.statshub.edge"] = EdgePolicy.from_settings(settings)
    headers = websocket.headers
    host = headers.get("Host")
    why = policy.host_refusal(host)
    if why is not None:
        return _refusal(421, why, "Host")
    origin = headers.get("Origin")
    if origin is not None:
        why = policy.origin_refusal(origin, host)
        if why is not None:
            return _refusal(403, why, "Origin")
    if settings.jwt_key_dir is not None:
        keyring = app.extensions.get("pointspace.statshub.keys")
        if keyring is None:
            keyring = app.extensions["pointspace.statshub.keys"] = KeyRing.load(settings.jwt_key_dir)
        try:
            Grant.from_claims(keyring.verify(bearer_token(headers.get("Authorization")))).require_scope(READ)
        except AuthError as exc:
            response = _refusal(401, exc.message, "Authorization")
            response.headers["WWW-Authenticate"] = 'Bearer realm="pointspace"'
            return response
    return None


def _refusal(status: int, message: str, field: str) -> Response:
    return Response(orjson.dumps({"error": message, "field": field}), status=status,
                    content_type="application/json")


@statshub.websocket("/stream/<path:rest>")
async def stream(rest: str) -> None:
    """Send the history, then the figures at every interval boundary until the client goes."""
    await websocket.accept()
    parsed = parse_stream_path(websocket.path)
    if parsed is None:
        await websocket.send(_body(False, f"Wrong path: {websocket.path.replace('//', '/')}. "
                                          f"Expected something like: {EXPECTED_STREAM}").decode())
        return
    dim, value, kind, stat = parsed
    engine = engine_of(current_app)
    interval = stream_interval(current_app)
    now = int(time.time())
    history = await engine.stats_stream_values(dim, value, kind, stat, history_ranges(now), now)
    await websocket.send(_body(True, intervals=history).decode())
    while True:
        # Wake at the next wall-clock multiple of the interval (statshub: Truncate + interval).
        wall = time.time()
        boundary = (math.floor(wall / interval) + 1) * interval
        await trio.sleep(boundary - wall)
        as_of = int(boundary)
        values = await engine.stats_stream_now(dim, "*" if value == "*" else value, kind, stat, now=as_of)
        await websocket.send(_body(True, intervals=[{"asOfSeconds": as_of, "values": values}]).decode())


__all__ = [
    "EXPECTED_STREAM",
    "MAX_BODY_BYTES",
    "history_ranges",
    "parse_stream_path",
    "statshub",
    "stream_interval",
]
