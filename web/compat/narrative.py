"""The Narrative hourly analytics API at its own paths (``../shared/compat/narrative.md``).

* ``POST /analytics?timestamp=<ms>&user=<id>&event=click|impression`` -- 204, empty body.
* ``GET /analytics?timestamp=<ms>`` -- for the UTC hour holding that instant, the task's
  three text lines (``text/plain``)::

      unique_users,3
      clicks,10
      impressions,7

  or the seed's JSON ``{"unique_users":3,"clicks":10,"impressions":7}`` when the client's
  ``Accept`` prefers ``application/json``: the higher q-value wins, and at equal q the type
  the client listed first (``Accept: application/json, text/plain`` is JSON); ``*/*`` or no
  ``Accept`` is the task's text (:func:`preferred_type`).

Theory of operation
-------------------
One event is one engine command (``engine.uniques.AddUniques``): the user joins the hour's
unique-set series ``narrative.users`` and the global counter ``narrative.clicks`` or
``narrative.impressions`` gains 1 -- logged as one record, applied together. The user series
keeps hour buckets only and is exact always (``NARRATIVE_CONFIG``: the task counts distinct
usernames, so usernames are kept as text, not as 64-bit hashes, and integer ids apart from
them), and its exact buckets keep their cardinality beside the sets, so the GET for an
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
from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_list_header

from engine.errors import InvalidInput, quote
from engine.timebuckets import MAX_TS
from engine.uniques import NARRATIVE_CONFIG, RESERVED_PREFIX, member_of
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
TEXT, JSON = "text/plain", "application/json"


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


def preferred_type(accept: MIMEAccept, raw: str | None) -> str:
    """Text or JSON for an ``Accept`` header (``raw``, parsed by werkzeug as ``accept``).

    Each type's q-value is werkzeug's (``accept.quality``: the q of the most specific entry
    that matches it, so ``text/plain;q=0, */*`` refuses text). Between types of equal q the
    client's order decides (the first entry of ``raw`` that each matches), as RFC 9110
    gives specificity no say in preference -- werkzeug's ``best_match`` would take
    ``text/plain`` over ``application/*`` listed first. ``*/*``, no header, or nothing
    acceptable: text, the task's format.

    >>> from werkzeug.http import parse_accept_header
    >>> [preferred_type(parse_accept_header(h, MIMEAccept), h) for h in
    ...  ("application/json, text/plain", "application/*, text/plain", "*/*",
    ...   "application/json;q=0.5, text/plain", "text/plain;q=0, */*", "")]
    ['application/json', 'application/json', 'text/plain', 'text/plain', 'application/json', 'text/plain']
    """
    if not raw:
        return TEXT
    named = [item.split(";", 1)[0].strip().lower() for item in parse_list_header(raw)]

    def first_named(offer: str) -> int:
        wanted = (offer, offer.split("/", 1)[0] + "/*", "*/*")
        return next((i for i, value in enumerate(named) if value in wanted), len(named))

    offers = sorted((TEXT, JSON), key=first_named)  # stable: text first on a tie
    top = max(accept.quality(offer) for offer in offers)
    if top <= 0:
        return TEXT
    return next(offer for offer in offers if accept.quality(offer) == top)


@narrative.post("/analytics")
async def record_event() -> Response:
    """Record one click or impression of ``user`` at ``timestamp`` (ms); 204, no body."""
    args = request.args
    ts = timestamp_seconds(args.get("timestamp"))
    user = args.get("user")
    if not user:
        raise InvalidInput("user is required: ?user=<user id> (a non-empty string)", "user")
    member = member_of(user, "user")
    event = args.get("event")
    if event is None:
        raise InvalidInput("event is required (click or impression): ?event=click", "event")
    counter = EVENTS.get(event)
    if counter is None:
        raise InvalidInput(f"event must be 'click' or 'impression', got {quote(event)}", "event")
    await engine_of(current_app).add_uniques_validated(
        [(USERS, ts, member)], config=NARRATIVE_CONFIG, counts=[(counter, ts, 1)]
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
    if preferred_type(request.accept_mimetypes, request.headers.get("Accept")) == JSON:
        return Response(orjson.dumps(figures), content_type=JSON)
    text = "".join(f"{key},{value}\n" for key, value in figures.items())
    return Response(text, content_type="text/plain; charset=utf-8")


__all__ = ["CLICKS", "EVENTS", "IMPRESSIONS", "USERS", "narrative", "preferred_type", "timestamp_seconds"]
