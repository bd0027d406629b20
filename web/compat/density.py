"""Density-compatible routes: the dhw seed's ``POST /send`` and ``GET /count`` at its paths.

See ../shared/compat/density.md. What the seed's clients rely on is kept: the datapoint body
``{"timestamp", "direction", "dpu_id"}`` with the direction as a string or an integer,
``{"status": "OK"}`` answers, ``{"status": "OK", "count": n}`` for a count, and ``count: null``
for a space nobody placed a sensor in (the seed's README; its code answered a 500).

Differences, on purpose:

* ``GET /count?space=A&timestamp=T`` is the exact count at T (every crossing at or before
  it, counted by the placement valid at each crossing's own time), not the seed's "stored row
  nearest in time, for space A whatever was asked". ``timestamp`` is read as everywhere
  else (``engine.density.parse_instant``): ISO-8601, or Unix seconds as 10 digits with an
  optional fraction; a digit string of another length (``20180224``: a compact date, or
  1970-08-22 in seconds?) is refused with the forms taken, never guessed.
* A datapoint's ``direction`` may also be an integral float (``1.0``, which the seed's
  ``int()`` took); ``"1.0"`` is refused, as the seed's ``int("1.0")`` raised.
* The seed's placement table (``dpu_location``) becomes ``PUT /api/sensors/{dpu}/placement``
  bodies: per sensor, each space with the sum of its rows' signs, a space whose signs cancel
  left out -- the seed's DPU 423 (+1 and -1 for A) is ``{"doorway": "Z", "spaces": {}}``.
  With that table and every row of the seed's sample loaded (``pointspace density load``),
  ``/count?space=A`` answers the seed's 19.
* Bad input is a 400 naming the field (``{"error", "field"}``), and nothing is stored: the
  seed answered 500s and had already written part of the datapoint.
* A datapoint's ``timestamp`` lies between 1970-01-01 and 10 minutes after this server's
  clock (``engine.density.MAX_AHEAD_MS``); the seed took any date. A later one is a sensor's
  wrong clock (or local time sent as UTC) and answers 400 naming ``timestamp``.
* ``/count?space=A`` without a timestamp is the count now, by this server's clock: the seed's
  Redis counter summed every crossing received whatever its date; here one stamped ahead of
  the clock counts from its own instant.
* An optional ``event_id`` makes a resend harmless (a repeated id changes nothing).
* ``POST /send/batch`` takes thousands of datapoints per request (a JSON array, NDJSON or
  msgpack), validated whole -- the seed's loader sent one request per row.
"""

from __future__ import annotations

import time
from typing import Any

from quart import Blueprint, Response, current_app, request

from engine.density import check_ident, parse_instant, validate_dpu_event
from engine.errors import InvalidInput
from web.bodies import decode_body, read_body, respond
from web.context import engine_of, settings_of

#: The API family these routes belong to (``web/apis.py``).
SEED = "density"
SEED_DOC = "Density (dhw): doorway sensors' crossings in, people per space out, exact at any instant."

density_compat = Blueprint("density_compat", __name__)


async def _body() -> Any:
    data = await read_body(request, settings_of(current_app).max_body_bytes)
    return decode_body(data, request.headers.get("Content-Type"))


@density_compat.post("/send")
async def send() -> Response:
    """One datapoint: ``{"timestamp":"2018-02-24T08:45:21.893Z","direction":"1","dpu_id":"423"}``."""
    event = validate_dpu_event(await _body(), now_ms=int(time.time() * 1000))
    await engine_of(current_app).density_ingest_validated([event])
    return respond({"status": "OK"}, request)


@density_compat.post("/send/batch")
async def send_batch() -> Response:
    """Many datapoints, applied whole or not at all: a JSON array (or ``{"events": [...]}``),
    NDJSON lines, or msgpack. Answers how many were new and how many repeated an
    ``event_id`` already stored."""
    body = await _body()
    if isinstance(body, dict) and set(body) == {"events"}:
        events, field = body["events"], "events"
    else:
        events, field = body, "body"
    new, duplicates = await engine_of(current_app).density_ingest(events, field)
    return respond({"status": "OK", "received": new + duplicates, "new": new,
                    "duplicates": duplicates}, request)


@density_compat.get("/count")
async def count() -> Response:
    """``?space=A``: the count now; ``&timestamp=<ISO-8601 or 10-digit Unix seconds>``: the
    exact count at that instant. An unknown space answers ``count: null``."""
    raw_space = request.args.get("space")
    if raw_space is None:
        raise InvalidInput("space is required (GET /count?space=A)", "space")
    space = check_ident(raw_space, "space")
    raw_ts = request.args.get("timestamp")
    at = None if raw_ts is None else parse_instant(raw_ts, "timestamp")
    value = await engine_of(current_app).space_count(space, at)
    return respond({"status": "OK", "count": value}, request)
