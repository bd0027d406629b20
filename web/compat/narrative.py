"""The Narrative hourly analytics API at its own paths (``../shared/compat/narrative.md``).

* ``POST /analytics?timestamp=<ms>&user=<id>&event=click|impression`` -- 204, empty body.
* ``GET /analytics?timestamp=<ms>`` -- for the UTC hour holding that instant, the task's
  three text lines (``text/plain``)::

      unique_users,3
      clicks,10
      impressions,7

  or the seed's JSON ``{"unique_users":3,"clicks":10,"impressions":7}`` when the client's
  ``Accept`` prefers ``application/json``.

Theory of operation
-------------------
One event is one engine command (``engine.uniques.AddUniques``): the user joins the hour's
unique-set series ``narrative.users`` and the global counter ``narrative.clicks`` or
``narrative.impressions`` gains 1 -- logged as one record, applied together. The user series
keeps hour buckets only and is exact always (``NARRATIVE_CONFIG``: the task counts distinct
usernames), and its exact buckets keep their cardinality beside the bitmap, so the GET for an
hour -- the current one gets 95% of the traffic, says the task -- costs one bucket lookup and
two counters' walks inside one hour: no work grows with the hour's events (the seed counted
``DISTINCT user_id`` over the rows every time). Clicks and impressions are ordinary global
counters, readable as ``/api/counters/narrative.clicks`` too; the users series is readable
(not writable) at ``/api/uniques/narrative.users``.

Deliberate differences from the seed (its code, not its task):

* The GET answers the **hour** of the timestamp; the seed's SQL cast both sides to a date
  first and so answered the whole (session-zone) day -- a bug, not the task's intent.
* Bad input is a 400 naming the parameter (``{"error", "field"}``) and records nothing: a
  missing or non-integer ``timestamp`` (the seed: 404, its route did not match), a timestamp
  before 1970 or past 9999, a missing or empty ``user``, an ``event`` other than ``click`` or
  ``impression`` (the seed stored any string and failed with a 500 past 10 characters).
* The body of a POST is ignored as in the seed, but a request that carries a
  ``Content-Type`` must name JSON or msgpack: the form and text types a web page can post
  without a CORS preflight are refused by ``web/edge.py`` (415), and a foreign ``Origin`` is
  refused before that (403), so a page in a browser cannot drive this route.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from quart import Blueprint, Response, current_app, request

from engine.errors import InvalidInput, quote
from engine.timebuckets import MAX_TS
from engine.uniques import NARRATIVE_CONFIG, RESERVED_PREFIX, member_key
from web.context import engine_of

narrative = Blueprint("narrative", __name__)
SEED = "narrative"
SEED_DOC = "Narrative: hourly unique users, clicks and impressions at the task's /analytics path."

#: The engine entities the API keeps (names under the prefix native writes may not use).
USERS = f"{RESERVED_PREFIX}users"
CLICKS = f"{RESERVED_PREFIX}clicks"
IMPRESSIONS = f"{RESERVED_PREFIX}impressions"
EVENTS = {"click": CLICKS, "impression": IMPRESSIONS}

#: The last millisecond the engine can place (9999-12-31T23:59:59.999Z).
MAX_MS = (MAX_TS + 1) * 1000 - 1
_MILLIS = re.compile(r"^[+-]?[0-9]{1,20}$")


def timestamp_seconds(raw: str | None) -> int:
    """The second holding ``timestamp`` (milliseconds since the epoch, a Long in the seed).

    >>> timestamp_seconds("1600000000999"), timestamp_seconds("0")
    (1600000000, 0)

    Raises:
        InvalidInput: missing, not an integer, or outside 1970 .. 9999 (naming ``timestamp``).
    """
    if raw is None:
        raise InvalidInput(
            "timestamp is required: milliseconds since the epoch, e.g. ?timestamp=1600000000000",
            "timestamp",
        )
    if not _MILLIS.match(raw):
        raise InvalidInput(
            f"timestamp must be an integer number of milliseconds since the epoch, got {quote(raw)}",
            "timestamp",
        )
    millis = int(raw)
    if not 0 <= millis <= MAX_MS:
        raise InvalidInput(
            f"timestamp must be between 0 (1970-01-01) and {MAX_MS} (9999-12-31) milliseconds, "
            f"got {quote(raw)}",
            "timestamp",
        )
    return millis // 1000


@narrative.post("/analytics")
async def record_event() -> Response:
    """Record one click or impression of ``user`` at ``timestamp`` (ms); 204, no body."""
    args = request.args
    ts = timestamp_seconds(args.get("timestamp"))
    user = args.get("user")
    if not user:
        raise InvalidInput("user is required: ?user=<user id> (a non-empty string)", "user")
    key = member_key(user, "user")
    event = args.get("event")
    counter = EVENTS.get(event) if event is not None else None
    if counter is None:
        raise InvalidInput(f"event must be 'click' or 'impression', got {quote(event)}", "event")
    await engine_of(current_app).add_uniques_validated(
        [(USERS, ts, key)], config=NARRATIVE_CONFIG, counts=[(counter, ts, 1)]
    )
    response = Response(b"", status=204)
    del response.headers["Content-Type"]  # no body, so no type
    return response


@narrative.get("/analytics")
async def hourly() -> Response:
    """Unique users, clicks and impressions of the UTC hour holding ``timestamp`` (ms)."""
    ts = timestamp_seconds(request.args.get("timestamp"))
    start = ts - ts % 3600
    users, sums = await engine_of(current_app).unique_and_counts(
        USERS, start, start + 3599, [CLICKS, IMPRESSIONS]
    )
    assert users.exact, "narrative.users is exact by construction (NARRATIVE_CONFIG)"
    figures: dict[str, Any] = {
        "unique_users": users.count, "clicks": sums[CLICKS], "impressions": sums[IMPRESSIONS],
    }
    if request.accept_mimetypes.best_match(("text/plain", "application/json")) == "application/json":
        return Response(orjson.dumps(figures), content_type="application/json")
    text = "".join(f"{key},{value}\n" for key, value in figures.items())
    return Response(text, content_type="text/plain; charset=utf-8")


__all__ = ["CLICKS", "EVENTS", "IMPRESSIONS", "USERS", "narrative", "timestamp_seconds"]
