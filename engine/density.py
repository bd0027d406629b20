"""People counting per space from doorway sensors (the Density seed), exact at any instant.

Theory of operation
-------------------
A *sensor* (a DPU) hangs over a *doorway* and reports crossings: a timestamp in milliseconds
and a direction, +1 or -1. A *placement* says where a sensor is: a doorway and a sign per
*space* (a doorway between A and B is ``{"A": 1, "B": -1}``: a +1 crossing enters A and leaves
B), valid from its ``installed`` instant until the sensor's next placement. Moving a sensor is
a new placement; placing one with a past ``installed`` corrects history from that instant on.

The model is one rule: **every raw event contributes ``sign x direction`` to every space of the
placement valid at the event's own time**, and a space's count at instant T is the sum of the
contributions with a timestamp <= T (since the last local midnight when the space resets
nightly). Late and out-of-order events land at their time; a correction changes the
contributions of the events it re-places; nothing else is ever derived.

Who owns what. Two namespaces, each partitioned over actors by a hash of the id
(``engine/actors.py``):

* ``dpu``: a :class:`SensorState` holds one sensor's placements and every raw event it ever
  sent (``raw``: event key -> packed timestamp and direction), kept for audit and re-counting.
  An event's key is its ``event_id`` when the client gave one (a repeated id is a duplicate:
  kept once, counted once), else ``seq << 20 | index``: the log record's sequence number and
  the event's index in it, the same live and on replay.
* ``space``: a :class:`SpaceState` holds the contributions it received, by ``(sensor, event
  key)`` (``sources``), and two views of them: a :class:`~engine.counters.CounterSeries` of
  net deltas by second (the engine's counter store: the count before second s is one prefix
  walk, ``CounterSeries.before``) and hourly buckets of net deltas by millisecond (the
  sub-second rest of an instant, and the peaks of occupancy).

The path of a write. ``DensityIngest`` (a batch of events) and ``PlaceSensor`` (one
placement) are logged commands routed to sensor actors. A sensor applies its share in one
turn -- stores new raw events, or inserts the placement -- and *forwards* to each affected
space one message holding the new contribution of every affected event (``Router.forward``:
the message joins the command's completion, so the write is acknowledged after the spaces
applied it, and messages from one actor to another arrive in the order sent). A space applies
a contribution message by *setting* each ``(sensor, key)`` to the value given and moving the
series and buckets by the difference -- an assignment, not an increment, so applying a message
twice changes nothing. That is what makes replay simple (below).

A correction -- a placement put with an ``installed`` in the past -- is ONE logged command.
The sensor scans its raw events once (O(events of this sensor)), finds those in the placement's
stretch ``[installed, next placement's installed)`` and computes their new contributions: to
every space of the new placement, and 0 to every space that ever counted this stretch before
(each placement keeps ``ever``, the spaces of every placement that covered its stretch, so a
space dropped by a correction is told). Each affected space gets the correction as one
message.

Atomicity, exactly. Reads are messages to the same space actors (``Engine.ask``), and an actor
applies one message per step with no ``await`` inside, so:

* a read of one space sees all or nothing of a correction's effect on that space (never a
  half-done correction), and all or nothing of one sensor's share of an ingest batch;
* a read sent after a write was acknowledged sees the whole write, in every space;
* two spaces are two actors: a reader who asks A and then B while a correction touching both
  is being applied may see A corrected and B not yet (or the reverse); once the PUT answered,
  both are. An ingest batch spanning several sensors is, per space, one message per sensor.

Replay and snapshots. Snapshots are written entity by entity while writes go on, so a sensor
item and a space item may reflect different moments. Records from the snapshot's position on
are replayed; a sensor that has not applied a record applies it (and forwards, as live); a
sensor that already holds it (its ``applied_seq``) *re-forwards the current contributions* of
the events the record touched, to every space that ever counted them. Since spaces assign
rather than add, every space converges to exactly what the sensors hold, whichever of the two
was snapshotted first. A space's snapshot keeps only its options and ``sources``; the series
and buckets are rebuilt from them on load (one pass).

Occupancy. For a period [a, b) the count at its end is ``before(b)``; its peak and its lowest
are over every instant of the period, derived from the event sequence, not sampled: ``before(a)``
plus the extreme prefix sums of the net deltas in [a, b) grouped by millisecond (simultaneous
events are one step: a +1 and a -1 in the same millisecond never show a phantom peak), and
``before(a)`` itself unless an event falls exactly on a. Each hourly bucket keeps, once read,
its sorted milliseconds, prefix sums and whole-bucket extremes (dropped when the bucket
changes), so a period costs O(hours with events in it) for whole hours plus O(events) in the
two partial hours at its edges; consecutive periods chain (``before(b)`` of one is the start
of the next), so a breakdown costs one prefix walk in all. A year by day with an event every
hour: 8,760 bucket summaries. With the nightly reset a period is split at the local midnights
inside it and each piece starts at the count since the midnight before it.

Time. A crossing's timestamp lies between 1970-01-01 and the server's clock plus
``MAX_AHEAD_MS`` (10 minutes): late data is normal and lands at its time; future data is a
wrong clock, refused with a 400 naming ``timestamp``. The bound is applied where requests are
validated (``validate_dpu_events(now_ms=...)``), never on replay: a log written before the
bound may hold crossings up to 9999-12-31, and every read stays exact for them -- local
midnights are computed for any instant (``SpaceState.midnight_at_or_before``). "Now" is the
clock: a crossing stamped after it counts from its own instant, not at once.

Memory: a sensor keeps about 100 bytes per raw event; a space about 200 per contribution
(``sources`` and a bucket entry) plus the counter cells (at most six per distinct second).

Nothing here imports trio or reads the clock.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from engine.commands import Command, EntityKey, Operation, register
from engine.counters import CounterSeries
from engine.errors import InvalidInput, PayloadTooLarge, quote
from engine.events import MAX_BATCH_EVENTS, check_name
from engine.periods import load_zone, period_bounds
from engine.timebuckets import MAX_TS, MIN_TS

DPU = "dpu"
SPACE = "space"

#: Milliseconds per hour: the bucket of the per-millisecond view of a space.
HOUR_MS = 3_600_000
MIN_MS = MIN_TS * 1000
MAX_MS = MAX_TS * 1000 + 999
#: Spaces one placement may name. A doorway joins two spaces; a sensor over a door inside
#: nested spaces (a room in a floor in a building) counts for a few more. 64 is far above any
#: real doorway and keeps a correction's fan-out bounded.
MAX_PLACEMENT_SPACES = 64
#: Longest timestamp text taken: ISO-8601 with microseconds and an offset is 32 characters.
MAX_TIMESTAMP_CHARS = 64
#: How far ahead of the server's clock a crossing may be stamped: 10 minutes, the default of
#: Loki's and Cortex's ``creation_grace_period`` (Mimir: ``-validation.create-grace-period``),
#: which refuse samples "too far in the future" the same way. A late crossing is normal (a
#: sensor offline for a week sends its backlog) and taken back to 1970; a crossing from the
#: future is a wrong clock. Ten minutes is far more than NTP-less drift (a 20 ppm crystal
#: needs most of a year) and less than any zone's offset (30 minutes at least), so a sensor
#: that sends local time as UTC east of Greenwich is refused, not counted hours late.
MAX_AHEAD_MS = 10 * 60_000
#: Index bits of a derived event key (``seq << 20 | index``): 2**20 > MAX_BATCH_EVENTS.
_INDEX_BITS = 20
assert MAX_BATCH_EVENTS < 1 << _INDEX_BITS

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAY_MS = 86_400_000
#: 400 Gregorian years: 146,097 days, a whole number of weeks (20,871). The calendar repeats
#: after it, and so does every zone's rule past its last listed transition (a POSIX TZ rule
#: such as "last Sunday of March, 01:00 UTC"), so the wall clock at t and at t - 400 years
#: read the same.
_CYCLE_MS = 146_097 * DAY_MS
#: Instants whose local date ``datetime`` can hold in every zone (offsets stay within a day):
#: from 1570 to two days before the end of 9999. East of UTC the last hours of 9999 are local
#: 10000-01-01, which ``datetime`` cannot hold (``OverflowError``); their midnight is found
#: 400 years earlier and moved back (``SpaceState.midnight_at_or_before``).
_LOCAL_LO = MIN_MS - _CYCLE_MS
_LOCAL_HI = MAX_MS - 2 * DAY_MS

#: A validated crossing: (sensor id, timestamp in ms, direction +1/-1, event id or None).
DensityEvent = tuple[str, int, int, "str | None"]
#: An event's key on its sensor: the client's event id, or ``seq << 20 | index``.
EventKey = int | str
#: A contribution as forwarded to a space: (event key, timestamp in ms, delta -1/0/+1).
Contribution = tuple[EventKey, int, int]


############################################################################################
# Validation: timestamps, directions, ids, placements
############################################################################################


#: What an instant may be, for messages: every refusal lists the accepted forms.
INSTANT_FORMS = (
    "an ISO-8601 instant such as '2018-02-24T08:45:21.893Z' or '2018-02-24' (UTC when it "
    "names no offset), or Unix seconds: a number, or 10 digits with an optional fraction "
    "such as '1519461921.893'"
)
_DIGITS = re.compile(r"^([0-9]+)(?:\.([0-9]+))?$")
#: Digits in Unix seconds from 2001-09-09 to 2286-11-20: the only digit strings taken. Fewer
#: digits read as a compact ISO date (``20180224``, which ``datetime.fromisoformat`` takes) as
#: readily as seconds (1970-08-22), and 13 are Unix milliseconds (JavaScript's ``Date.now()``)
#: -- guessing either way silently moves a count by years, so both are refused.
SECONDS_DIGITS = 10


def parse_instant(value: Any, field: str) -> int:
    """An instant as Unix milliseconds, by one rule for every route and the loader.

    * ISO-8601 text (``2018-02-24T08:45:21.893Z``, ``2018-02-24 17:24:25.493z``,
      ``2018-02-24``): UTC when it names no offset; finer than a millisecond is cut.
    * Unix seconds as a JSON number (``1519461921.893``: a fraction keeps milliseconds).
    * Unix seconds as text -- a query string has no numbers -- with exactly
      ``SECONDS_DIGITS`` digits and an optional fraction (``"1519461921.893"``). Other digit
      strings are refused, naming the forms taken: ``"20180224"`` (a compact date or
      1970-08-22?) and ``"1519461921893"`` (milliseconds) are ambiguous.

    >>> parse_instant("2018-02-24T08:45:21.893Z", "timestamp")
    1519461921893
    >>> parse_instant("2018-02-24 17:24:25.493z", "timestamp"), parse_instant(1.5, "t")
    (1519493065493, 1500)
    >>> parse_instant("1519461921.8939", "at")
    1519461921893
    >>> parse_instant("20180224", "timestamp")
    Traceback (most recent call last):
    ...
    engine.errors.InvalidInput: timestamp as digits is Unix seconds, which takes 10 digits (2001-09-09 to 2286-11-20), got '20180224'; write a date in ISO-8601 ('2018-02-24'), and milliseconds as seconds with a fraction ('1519461921.893')
    """
    kind = type(value)
    if kind is str:
        if len(value) <= MAX_TIMESTAMP_CHARS:
            text = value.strip()
            digits = _DIGITS.match(text)
            if digits is not None:
                whole, fraction = digits.groups()
                if len(whole) != SECONDS_DIGITS:
                    raise InvalidInput(
                        f"{field} as digits is Unix seconds, which takes {SECONDS_DIGITS} digits "
                        f"(2001-09-09 to 2286-11-20), got {quote(value)}; write a date in "
                        "ISO-8601 ('2018-02-24'), and milliseconds as seconds with a fraction "
                        "('1519461921.893')",
                        field,
                    )
                return int(whole) * 1000 + int(((fraction or "") + "000")[:3])
            if text[-1:] == "z":
                text = text[:-1] + "Z"
            try:
                moment = datetime.fromisoformat(text)
            except ValueError:
                pass
            else:
                if moment.tzinfo is None:
                    moment = moment.replace(tzinfo=UTC)
                delta = moment - _EPOCH
                ms = delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000
                return _in_range(ms, value, field)
    elif kind is int or kind is float:
        # The range is checked on the seconds, before multiplying: 1e306 * 1000 is inf, and
        # math.floor(inf) raises OverflowError (a red-team finding: it answered 500).
        if MIN_TS <= value < MAX_TS + 1:
            return _in_range(math.floor(value * 1000) if kind is float else value * 1000, value, field)
        if kind is int or math.isfinite(value):
            raise _out_of_range(value, value, field)
    raise InvalidInput(f"{field} must be {INSTANT_FORMS}, got {quote(value)}", field)


def _in_range(ms: int, value: Any, field: str) -> int:
    if MIN_MS <= ms <= MAX_MS:
        return ms
    raise _out_of_range(ms // 1000, value, field)


def _out_of_range(seconds: float, value: Any, field: str) -> InvalidInput:
    hint = ""
    if type(value) is not str and MIN_MS <= seconds <= MAX_MS:
        hint = " (Unix milliseconds? a number is Unix seconds: divide by 1000)"
    return InvalidInput(
        f"{field} must lie between 1970-01-01 and 9999-12-31 UTC, got {quote(value)}{hint}", field
    )


def check_not_ahead(ts: int, value: Any, field: str, now_ms: int) -> None:
    """Refuse a crossing stamped more than ``MAX_AHEAD_MS`` after ``now_ms`` (the server's
    clock, read by the caller: this module reads none).

    >>> check_not_ahead(1_000_000_000, "x", "timestamp", 0)
    Traceback (most recent call last):
    ...
    engine.errors.InvalidInput: timestamp must not lie more than 10 minutes ahead of this server's clock (1970-01-01T00:00:00.000Z): a crossing from the future comes from a wrong clock, or from local time sent as UTC (name the offset: '2018-02-24T09:45:21.893+01:00'); got 'x', 11 days ahead
    """
    if ts > now_ms + MAX_AHEAD_MS:
        raise InvalidInput(
            f"{field} must not lie more than {MAX_AHEAD_MS // 60_000} minutes ahead of this "
            f"server's clock ({iso_ms(now_ms)}): a crossing from the future comes from a wrong "
            "clock, or from local time sent as UTC (name the offset: "
            f"'2018-02-24T09:45:21.893+01:00'); got {quote(value)}, {_span(ts - now_ms)} ahead",
            field,
        )


def _span(ms: int) -> str:
    """A duration for a message, in its largest unit that is at least 2: ``'9 hours'``."""
    for unit, size in (("days", DAY_MS), ("hours", HOUR_MS), ("minutes", 60_000)):
        if ms >= 2 * size:
            return f"{ms // size} {unit}"
    return f"{ms // 1000} seconds"


_DIRECTIONS = {"1": 1, "+1": 1, "-1": -1}


def check_direction(value: Any, field: str) -> int:
    """+1 or -1: an integer, an integral float (``1.0``: what the seed's ``int()`` took from
    JSON), or text (``"1"``, ``"+1"``, ``"-1"``; the seed's clients send both). ``"1.0"`` is
    refused, as the seed's ``int("1.0")`` raised.

    >>> check_direction("-1", "direction"), check_direction(1, "direction"), check_direction(-1.0, "d")
    (-1, 1, -1)
    """
    kind = type(value)
    if (kind is int or kind is float) and (value == 1 or value == -1):
        return int(value)
    if kind is str:
        direction = _DIRECTIONS.get(value.strip())
        if direction is not None:
            return direction
    raise InvalidInput(
        f"{field} must be 1 or -1 (a number, 1.0 included, or the text '1', '+1' or '-1'), "
        f"got {quote(value)}",
        field,
    )


def check_ident(value: Any, field: str) -> str:
    """A sensor, space, doorway or event id: text (or an integer, read as its decimal text)
    under the rules of every name (``engine.events.check_name``).

    >>> check_ident(423, "dpu_id"), check_ident("A", "space")
    ('423', 'A')
    """
    if type(value) is int:
        value = str(value)
    return check_name(value, field)


def validate_dpu_events(
    events: Any, field: str = "body", *, now_ms: int | None = None
) -> list[DensityEvent]:
    """Validate a whole batch of crossings ``{"timestamp", "direction", "dpu_id",
    "event_id"?}`` (the seed's body, plus an optional id); raise on the first bad one.

    Other fields are ignored, as the seed's Flask handler ignored them. A timestamp lies in
    1970-01-01 .. ``now_ms + MAX_AHEAD_MS``: every route and the loader pass the server's
    clock as ``now_ms``; ``None`` (tests, benchmarks) only bounds it at 9999-12-31.

    >>> validate_dpu_events([{"timestamp": "2018-02-24T08:45:21.893Z", "direction": "1",
    ...                       "dpu_id": "423"}])
    [('423', 1519461921893, 1, None)]

    Runtime complexity: O(n).
    """
    if not isinstance(events, list):
        raise InvalidInput(f"{field} must be a list of event objects", field)
    if len(events) > MAX_BATCH_EVENTS:
        raise PayloadTooLarge(
            f"{field} holds {len(events)} events; at most {MAX_BATCH_EVENTS} per batch", field
        )
    out: list[DensityEvent] = []
    append = out.append
    for i, event in enumerate(events):
        at = f"{field}[{i}]"
        append(_one_event(event, at, now_ms))
    return out


def validate_dpu_event(event: Any, field: str = "body", *, now_ms: int | None = None) -> DensityEvent:
    """One crossing (the seed's ``POST /send`` body); see :func:`validate_dpu_events`."""
    return _one_event(event, field, now_ms)


def _one_event(event: Any, at: str, now_ms: int | None) -> DensityEvent:
    if not isinstance(event, Mapping):
        raise InvalidInput(f"{at} must be an object, got {quote(event)}", at)
    prefix = "" if at == "body" else f"{at}."
    for name in ("timestamp", "direction", "dpu_id"):
        if name not in event:
            raise InvalidInput(f"{prefix}{name} is required", f"{prefix}{name}")
    ts = parse_instant(event["timestamp"], f"{prefix}timestamp")
    if now_ms is not None:
        check_not_ahead(ts, event["timestamp"], f"{prefix}timestamp", now_ms)
    direction = check_direction(event["direction"], f"{prefix}direction")
    dpu = event["dpu_id"]
    if type(dpu) is not str or not 0 < len(dpu) <= 200 or not dpu.isprintable():
        dpu = check_ident(dpu, f"{prefix}dpu_id")
    event_id = event.get("event_id")
    if event_id is not None:
        event_id = check_ident(event_id, f"{prefix}event_id")
    return (dpu, ts, direction, event_id)


def check_spaces(value: Any, field: str = "spaces") -> dict[str, int]:
    """A placement's ``{space: sign}``: at most ``MAX_PLACEMENT_SPACES`` spaces, signs 1 or -1
    (``{}`` is a sensor that counts for no space: taken down, or over a doorway inside one
    space).

    The seed's ``dpu_location`` table translates row by row: a sensor's current rows become
    one placement at their doorway, each space with the SUM of its rows' ``direction`` signs,
    and a space whose signs sum to 0 is left out -- it moved by ``sign x direction`` per row,
    so the seed's DPU 423 with both +1 and -1 for space A counted nothing for A (density.md
    3.3), which is ``{"doorway": "Z", "spaces": {}}``. Sign 0 is refused rather than stored:
    a space that counts nothing is not in the map.
    """
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{field} must be an object of space: 1 or -1, got {quote(value)}", field)
    if len(value) > MAX_PLACEMENT_SPACES:
        raise InvalidInput(
            f"{field} names {len(value)} spaces; a placement takes at most {MAX_PLACEMENT_SPACES}", field
        )
    out: dict[str, int] = {}
    for name, sign in value.items():
        space = check_ident(name, f"{field} key")
        if type(sign) is not int or sign not in (1, -1):
            raise InvalidInput(
                f"{field}.{space} must be 1 (a +1 crossing enters the space) or -1 (it leaves), "
                f"got {quote(sign)}; a space the sensor counts nothing for is left out (the "
                "seed's +1 and -1 rows for one space cancel: leave it out)",
                f"{field}.{space}",
            )
        out[space] = sign
    return dict(sorted(out.items()))


def check_placement(body: Any) -> tuple[int, str, dict[str, int]]:
    """``{"installed": <ISO-8601 or Unix s>, "doorway": "Z", "spaces": {"A": 1}}`` ->
    (installed ms, doorway, spaces)."""
    if not isinstance(body, Mapping):
        raise InvalidInput("body must be an object with installed, doorway and spaces", "body")
    for name in ("installed", "doorway", "spaces"):
        if name not in body:
            raise InvalidInput(f"{name} is required", name)
    unknown = sorted(str(k) for k in body if k not in ("installed", "doorway", "spaces"))
    if unknown:
        raise InvalidInput(f"{unknown[0]} is not a known field", unknown[0])
    return (
        parse_instant(body["installed"], "installed"),
        check_ident(body["doorway"], "doorway"),
        check_spaces(body["spaces"]),
    )


def check_space_options(body: Any) -> tuple[bool, str | None]:
    """``{"nightly_reset": bool, "tz": IANA name or null}`` -> (reset, tz)."""
    if not isinstance(body, Mapping):
        raise InvalidInput("body must be an object with nightly_reset and tz", "body")
    unknown = sorted(str(k) for k in body if k not in ("nightly_reset", "tz"))
    if unknown:
        raise InvalidInput(f"{unknown[0]} is not a known field", unknown[0])
    reset = body.get("nightly_reset", False)
    if type(reset) is not bool:
        raise InvalidInput(f"nightly_reset must be true or false, got {quote(reset)}", "nightly_reset")
    tz = body.get("tz")
    load_zone(tz, "tz")
    return reset, tz


def iso_ms(ms: int) -> str:
    """Unix milliseconds as ISO-8601 UTC with milliseconds (the seed's own format).

    >>> iso_ms(1519461921893)
    '2018-02-24T08:45:21.893Z'
    """
    moment = _EPOCH + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


############################################################################################
# A sensor: placements and raw events
############################################################################################


def _pack(ts_ms: int, delta: int) -> int:
    """A timestamp and a sign (+1 or -1) in one int: an int per event instead of a tuple."""
    return ts_ms * 2 + (delta > 0)


def _unpack(packed: int) -> tuple[int, int]:
    return packed >> 1, 1 if packed & 1 else -1


@dataclass(slots=True)
class Placement:
    """Where a sensor was from ``installed`` (ms) until its next placement."""

    installed: int
    doorway: str
    spaces: dict[str, int]
    #: Every space that ever counted this placement's stretch (its own and those of the
    #: placements it replaced or split): who must hear about a re-count.
    ever: frozenset[str]

    def public(self) -> dict[str, Any]:
        return {
            "installed": iso_ms(self.installed),
            "installed_ms": self.installed,
            "doorway": self.doorway,
            "spaces": dict(self.spaces),
        }


@dataclass(frozen=True, slots=True)
class SensorStatistics:
    placements: int
    events: int
    duplicates: int
    late: int


class SensorState:
    """One sensor: its placements (oldest first) and every raw event it sent.

    >>> s = SensorState()
    >>> s.place(1000, "Z", {"A": 1, "B": -1})
    {'A': [], 'B': []}
    >>> s.ingest(7, [(0, 1500, 1, "e1"), (1, 1600, -1, "e1"), (2, 900, 1, None)])
    (2, 1, {'A': [('e1', 1500, 1)], 'B': [('e1', 1500, -1)]})
    >>> s.place(500, "Z", {"A": 1})  # a correction from 500 on: the unplaced event counts
    {'A': [(7340034, 900, 1)]}
    >>> s._check()
    """

    __slots__ = ("placements", "raw", "applied_seq", "duplicates", "late", "last_ms")

    def __init__(self) -> None:
        self.placements: list[Placement] = []
        #: event key -> packed (timestamp ms, direction); insertion (arrival) order.
        self.raw: dict[EventKey, int] = {}
        self.applied_seq = 0
        self.duplicates = 0
        #: Events that arrived after a later one of this sensor (out of order).
        self.late = 0
        self.last_ms = -1

    @property
    def known(self) -> bool:
        return bool(self.placements or self.raw)

    def placement_at(self, ts_ms: int) -> Placement | None:
        """The placement valid at ``ts_ms`` (the last one installed at or before it).

        Runtime complexity: O(log placements).
        """
        placements = self.placements
        if not placements or ts_ms < placements[0].installed:
            return None
        if ts_ms >= placements[-1].installed:
            return placements[-1]
        lo, hi = 0, len(placements) - 1
        while lo < hi:  # the last index with installed <= ts_ms
            mid = (lo + hi + 1) // 2
            if placements[mid].installed <= ts_ms:
                lo = mid
            else:
                hi = mid - 1
        return placements[lo]

    def ingest(
        self, seq: int, items: Iterable[tuple[int, int, int, str | None]]
    ) -> tuple[int, int, dict[str, list[Contribution]]]:
        """Keep new events ``(index in record, ts ms, direction, event id)``; return (new,
        duplicates, contributions by space) -- a repeated event id changes nothing.

        Runtime complexity: O(1) per event (O(log placements) to find its placement).
        """
        raw = self.raw
        out: dict[str, list[Contribution]] = {}
        new = duplicates = 0
        last = self.placements[-1] if self.placements else None
        for index, ts, direction, event_id in items:
            key: EventKey = event_id if event_id is not None else (seq << _INDEX_BITS) | index
            if key in raw:
                duplicates += 1
                continue
            raw[key] = _pack(ts, direction)
            new += 1
            if ts < self.last_ms:
                self.late += 1
            else:
                self.last_ms = ts
            placement = last if last is not None and ts >= last.installed else self.placement_at(ts)
            if placement is not None:
                for space, sign in placement.spaces.items():
                    group = out.get(space)
                    if group is None:
                        group = out[space] = []
                    group.append((key, ts, sign * direction))
        self.duplicates += duplicates
        return new, duplicates, out

    def current_contributions(self, keys: Iterable[EventKey]) -> dict[str, list[Contribution]]:
        """What the events ``keys`` contribute now, to every space that ever counted them
        (0 where no longer): the re-forward of a record this sensor already applied."""
        out: dict[str, list[Contribution]] = {}
        raw = self.raw
        for key in keys:
            packed = raw.get(key)
            if packed is not None:
                self._contribute(key, packed, out)
        return out

    def _contribute(self, key: EventKey, packed: int, out: dict[str, list[Contribution]]) -> None:
        ts, direction = _unpack(packed)
        placement = self.placement_at(ts)
        if placement is None:
            return
        spaces = placement.spaces
        for space in placement.ever:
            out.setdefault(space, []).append((key, ts, spaces.get(space, 0) * direction))

    def place(self, installed: int, doorway: str, spaces: dict[str, int]) -> dict[str, list[Contribution]]:
        """Insert (or, at the same ``installed``, replace) a placement; return the new
        contributions of every event in its stretch, by space (every space of the new
        placement appears, with an empty list when nothing needs re-counting).

        Runtime complexity: O(events of this sensor): one scan of the raw events.
        """
        placements = self.placements
        starts = [p.installed for p in placements]
        index = bisect_left(starts, installed)
        if index < len(placements) and placements[index].installed == installed:
            previous: Placement | None = placements[index]
            del placements[index]
        else:
            previous = placements[index - 1] if index else None
        ever = frozenset(spaces) | (previous.ever if previous is not None else frozenset())
        placement = Placement(installed, doorway, dict(spaces), ever)
        placements.insert(index, placement)
        end = placements[index + 1].installed if index + 1 < len(placements) else MAX_MS + 1
        out: dict[str, list[Contribution]] = {space: [] for space in spaces}
        for space in ever:
            out.setdefault(space, [])
        for key, packed in self.raw.items():
            if installed <= packed >> 1 < end:
                self._contribute(key, packed, out)
        return out

    def recount_from(self, installed: int) -> dict[str, list[Contribution]]:
        """Current contributions of every event at or after ``installed`` (the re-forward
        of a placement record this sensor already applied; see the module docstring)."""
        out: dict[str, list[Contribution]] = {}
        placement = self.placement_at(installed)
        if placement is not None:
            for space in placement.spaces:
                out.setdefault(space, [])
        for key, packed in self.raw.items():
            if packed >> 1 >= installed:
                self._contribute(key, packed, out)
        return out

    def public(self, dpu: str) -> dict[str, Any]:
        current = self.placements[-1] if self.placements else None
        return {
            "dpu": dpu,
            "placements": [p.public() for p in self.placements],
            "current": current.public() if current is not None else None,
            "events": len(self.raw),
            "duplicates": self.duplicates,
            "late": self.late,
            "last_event": iso_ms(self.last_ms) if self.last_ms >= 0 else None,
        }

    def statistics(self) -> SensorStatistics:
        return SensorStatistics(len(self.placements), len(self.raw), self.duplicates, self.late)

    def to_plain(self) -> list[Any]:
        return [
            [[p.installed, p.doorway, list(p.spaces.items()), sorted(p.ever)] for p in self.placements],
            list(self.raw.keys()),
            list(self.raw.values()),
            self.duplicates,
            self.late,
            self.last_ms,
        ]

    @classmethod
    def from_plain(cls, plain: Sequence[Any]) -> SensorState:
        state = cls()
        placements, keys, values, state.duplicates, state.late, state.last_ms = plain
        state.placements = [
            Placement(installed, doorway, {s: sign for s, sign in spaces}, frozenset(ever))
            for installed, doorway, spaces, ever in placements
        ]
        state.raw = dict(zip(keys, values, strict=True))
        return state

    def _check(self) -> None:
        starts = [p.installed for p in self.placements]
        assert starts == sorted(set(starts)), f"placements out of order: {starts}"
        for p in self.placements:
            assert set(p.spaces) <= p.ever, f"ever {p.ever} misses spaces of {p}"
            assert all(sign in (1, -1) for sign in p.spaces.values())
        if self.raw:
            assert self.last_ms == max(v >> 1 for v in self.raw.values())


############################################################################################
# A space: contributions, the counter series, and per-millisecond buckets
############################################################################################


class _Hour:
    """One hourly bucket, summarised for reads: sorted milliseconds and prefix sums of their
    net deltas, and the whole bucket's sum and extreme prefix sums."""

    __slots__ = ("times", "prefix", "high", "low")

    def __init__(self, nets: Mapping[int, int]) -> None:
        self.times = sorted(nets)
        prefix = [0]
        running = 0
        for t in self.times:
            running += nets[t]
            prefix.append(running)
        self.prefix = prefix
        self.high = max(prefix[1:])
        self.low = min(prefix[1:])

    def slice(self, a: int, b: int) -> tuple[int, int, int, bool] | None:
        """(sum, highest prefix, lowest prefix, an event exactly at a) over times in [a, b),
        or None when none falls there."""
        times = self.times
        i = bisect_left(times, a)
        j = bisect_left(times, b)
        if i >= j:
            return None
        if i == 0 and j == len(times):
            return self.prefix[-1], self.high, self.low, times[0] == a
        part = self.prefix[i + 1 : j + 1]
        base = self.prefix[i]
        return part[-1] - base, max(part) - base, min(part) - base, times[i] == a


@dataclass(frozen=True, slots=True)
class Occupancy:
    """Per period [bounds[i], bounds[i+1]) (ms): the count at its end, its peak and lowest."""

    bounds: list[int]
    end: list[int]
    peak: list[int]
    low: list[int]


@dataclass(frozen=True, slots=True)
class SpaceStatistics:
    sources: int
    contributions: int
    hours: int
    cells: int


class SpaceState:
    """One space's contributions and the views that answer counts and occupancy.

    >>> s = SpaceState()
    >>> s.contribute("d1", [("a", 1_000, 1), ("b", 1_500, 1), ("c", 2_000, -1)])
    >>> s.count_at(1_499), s.count_at(1_500), s.count_at(10_000)
    (1, 2, 1)
    >>> s.contribute("d1", [("b", 1_500, 0)])  # a correction: b no longer counts here
    >>> s.count_at(1_500), s.occupancy([0, 5_000]).peak
    (1, [1])
    >>> s._check()
    """

    __slots__ = ("series", "sources", "buckets", "_hours", "_summaries", "reset", "tz", "_zone",
                 "known", "applied_seq")

    def __init__(self) -> None:
        #: Net deltas by second: the engine's counter store (``engine/counters.py``).
        self.series = CounterSeries()
        #: sensor -> event key -> packed (ts ms, delta): what each event contributes here.
        self.sources: dict[str, dict[EventKey, int]] = {}
        #: hour -> {ms: net delta} (no zero entries).
        self.buckets: dict[int, dict[int, int]] = {}
        self._hours: list[int] | None = []  # sorted hours with entries; None: to rebuild
        self._summaries: dict[int, _Hour] = {}
        self.reset = False
        self.tz: str | None = None
        self._zone: Any = None
        #: Named by a placement or given options (a space nobody named is unknown).
        self.known = False
        self.applied_seq = 0

    # Writing ------------------------------------------------------------------------------

    def contribute(self, sensor: str, items: Iterable[Contribution]) -> None:
        """Set what each ``(sensor, key)`` contributes (delta 0: nothing); an assignment, so
        applying the same items again changes nothing.

        Runtime complexity: O(1) per item (six counter cells and a bucket entry).
        """
        self.known = True
        source = self.sources.get(sensor)
        if source is None:
            source = self.sources[sensor] = {}
        for key, ts, delta in items:
            old = source.get(key)
            if old is not None:
                if old == _pack(ts, delta) and delta:
                    continue
                old_ts, old_delta = _unpack(old)
                self._move(old_ts, -old_delta)
            if delta:
                source[key] = _pack(ts, delta)
                self._move(ts, delta)
            elif old is not None:
                del source[key]
        if not source:
            del self.sources[sensor]

    def _move(self, ts: int, delta: int) -> None:
        self.series.add(ts // 1000, delta)
        hour = ts // HOUR_MS
        bucket = self.buckets.get(hour)
        if bucket is None:
            bucket = self.buckets[hour] = {}
            self._hours = None
        net = bucket.get(ts, 0) + delta
        if net:
            bucket[ts] = net
        else:
            del bucket[ts]
            if not bucket:
                del self.buckets[hour]
                self._hours = None
        self._summaries.pop(hour, None)

    def set_options(self, reset: bool, tz: str | None) -> None:
        self.known = True
        self.reset = reset
        self.tz = tz
        self._zone = load_zone(tz) if reset else None

    # Reading ------------------------------------------------------------------------------

    @property
    def first_ms(self) -> int:
        """The earliest contribution's instant (-1: none)."""
        hours = self._sorted_hours()
        summary = self._summary(hours[0]) if hours else None
        return summary.times[0] if summary is not None else -1

    @property
    def last_ms(self) -> int:
        """The latest contribution's instant (-1: none). Runtime complexity: O(1) once the
        last hour's summary is built."""
        hours = self._sorted_hours()
        summary = self._summary(hours[-1]) if hours else None
        return summary.times[-1] if summary is not None else -1

    def _summary(self, hour: int) -> _Hour | None:
        summary = self._summaries.get(hour)
        if summary is None:
            bucket = self.buckets.get(hour)
            if not bucket:
                return None
            summary = self._summaries[hour] = _Hour(bucket)
        return summary

    def before(self, t: int) -> int:
        """The sum of every contribution strictly before millisecond ``t`` (no reset).

        Runtime complexity: one ``CounterSeries.before`` (at most ~100 cell lookups) and a
        binary search in one hourly bucket.
        """
        second = t // 1000
        acc = self.series.before(second)
        start = second * 1000
        if start < t:
            summary = self._summary(start // HOUR_MS)
            if summary is not None:
                part = summary.slice(start, t)
                if part is not None:
                    acc += part[0]
        return acc

    def midnight_at_or_before(self, t: int) -> int:
        """The last local midnight (ms) at or before ``t`` in the space's zone (UTC if none),
        for any ``t``: the last hours of 9999 east of UTC, whose local date is in year 10000,
        are read 400 years earlier (``_CYCLE_MS``), where the zone's rules are the same.

        >>> s = SpaceState(); s.set_options(True, "Asia/Tokyo")
        >>> iso_ms(s.midnight_at_or_before(MAX_MS))  # local 10000-01-01T00:00+09:00
        '9999-12-31T15:00:00.000Z'
        """
        zone = self._zone
        if zone is None:
            return t - t % DAY_MS
        if t > _LOCAL_HI:
            shift = -(-(t - _LOCAL_HI) // _CYCLE_MS) * _CYCLE_MS
            return self.midnight_at_or_before(t - shift) + shift
        if t < _LOCAL_LO:
            shift = -(-(_LOCAL_LO - t) // _CYCLE_MS) * _CYCLE_MS
            return self.midnight_at_or_before(t + shift) - shift
        seconds = t // 1000
        local = datetime.fromtimestamp(seconds, zone).replace(tzinfo=None)
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        instant = int(start.replace(tzinfo=zone).timestamp()) * 1000
        if instant > t:  # a zone whose midnight fell in a DST gap
            instant = int((start - timedelta(days=1)).replace(tzinfo=zone).timestamp()) * 1000
        return instant

    def count_at(self, t: int) -> int:
        """The exact count at instant ``t`` (ms): every contribution at or before it, since
        the last local midnight when the space resets nightly."""
        count = self.before(t + 1)
        if self.reset:
            count -= self.before(self.midnight_at_or_before(t))
        return count

    def occupancy(self, bounds: Sequence[int]) -> Occupancy:
        """Per period [bounds[i], bounds[i+1]) (ms): the count at its last instant, and the
        highest and lowest count at any instant in it (see the module docstring).

        Runtime complexity: O(periods + hours with events in the range + events in the
        partial hours at period edges), plus, with the nightly reset, one prefix walk per
        local midnight in the range.
        """
        ends: list[int] = []
        peaks: list[int] = []
        lows: list[int] = []
        if len(bounds) < 2:
            return Occupancy(list(bounds), ends, peaks, lows)
        cuts = self._midnights(bounds[0], bounds[-1]) if self.reset else []
        hours = self._sorted_hours()
        count = self.count_at(bounds[0] - 1) if bounds[0] > 0 else 0
        if self.reset and bounds[0] in cuts:
            count = 0
        cut_index = 0
        for a, b in zip(bounds, bounds[1:], strict=False):
            high = low = None
            start = a
            while start < b:
                while cut_index < len(cuts) and cuts[cut_index] <= start:
                    if cuts[cut_index] == start:
                        count = 0  # local midnight: the count starts again
                    cut_index += 1
                stop = cuts[cut_index] if cut_index < len(cuts) and cuts[cut_index] < b else b
                total, top, bottom, at_start = self._extremes(hours, start, stop)
                if not at_start:
                    top = max(top, 0)
                    bottom = min(bottom, 0)
                high = count + top if high is None else max(high, count + top)
                low = count + bottom if low is None else min(low, count + bottom)
                count += total
                start = stop
            ends.append(count)
            peaks.append(high if high is not None else count)
            lows.append(low if low is not None else count)
        return Occupancy(list(bounds), ends, peaks, lows)

    def _extremes(self, hours: list[int], a: int, b: int) -> tuple[int, int, int, bool]:
        """(sum, highest prefix, lowest prefix, an event exactly at a) of the nets in [a, b);
        the extremes are -inf/+inf-like (never chosen) when there is no event."""
        total = 0
        top = -(1 << 62)
        bottom = 1 << 62
        at_start = False
        first = a // HOUR_MS
        i = bisect_left(hours, first)
        j = bisect_right(hours, (b - 1) // HOUR_MS)
        for hour in hours[i:j]:
            summary = self._summary(hour)
            if summary is None:
                continue
            part = summary.slice(a, b)
            if part is None:
                continue
            s, high, low, exact = part
            if hour == first and exact:
                at_start = True
            top = max(top, total + high)
            bottom = min(bottom, total + low)
            total += s
        return total, top, bottom, at_start

    def _sorted_hours(self) -> list[int]:
        if self._hours is None:
            self._hours = sorted(self.buckets)
        return self._hours

    def _midnights(self, a: int, b: int) -> list[int]:
        """Local midnights (ms) in [a, b)."""
        first = self.midnight_at_or_before(a)
        out = [first] if first == a else []
        inner = period_bounds(a // 1000, (b - 1) // 1000, "day", zone=self._zone)[1:-1]
        out.extend(s * 1000 for s in inner if a < s * 1000 < b)
        # period_bounds walks local dates, which end at 9999-12-31: east of UTC the midnight
        # starting local 10000-01-01 lies inside 9999 UTC, and only this finds it.
        last = self.midnight_at_or_before(b - 1)
        if a < last and (not out or out[-1] < last):
            out.append(last)
        return out

    def public(self, name: str, now_ms: int) -> dict[str, Any]:
        """The space as the API shows it, its count at ``now_ms``: a crossing stamped later
        (a sensor clock ahead, within ``MAX_AHEAD_MS``; or any, from an older log) counts
        from its own instant, never "now" -- one crossing dated 9999 once changed today's
        count."""
        return {
            "space": name,
            "count": self.count_at(now_ms),
            "nightly_reset": self.reset,
            "tz": self.tz,
            "sensors": sorted(self.sources),
            "first_event": iso_ms(self.first_ms) if self.first_ms >= 0 else None,
            "last_event": iso_ms(self.last_ms) if self.last_ms >= 0 else None,
        }

    def statistics(self) -> SpaceStatistics:
        return SpaceStatistics(
            sources=len(self.sources),
            contributions=sum(len(s) for s in self.sources.values()),
            hours=len(self.buckets),
            cells=len(self.series.cells),
        )

    # Snapshots ----------------------------------------------------------------------------

    def to_plain(self) -> list[Any]:
        """Options and contributions; the series and buckets are rebuilt from them."""
        return [
            self.known,
            self.reset,
            self.tz,
            [[sensor, list(src.keys()), list(src.values())] for sensor, src in self.sources.items()],
        ]

    @classmethod
    def from_plain(cls, plain: Sequence[Any]) -> SpaceState:
        state = cls()
        known, reset, tz, sources = plain
        for sensor, keys, values in sources:
            state.contribute(sensor, [(k, *_unpack(v)) for k, v in zip(keys, values, strict=True)])
        try:
            state.set_options(reset, tz)
        except InvalidInput:  # a zone this host no longer has: midnights in UTC, kept named
            state.reset, state.tz = reset, tz
        state.known = known
        return state

    def _check(self) -> None:
        expected: dict[int, int] = {}
        for source in self.sources.values():
            for packed in source.values():
                ts, delta = _unpack(packed)
                expected[ts] = expected.get(ts, 0) + delta
        flat = {t: n for bucket in self.buckets.values() for t, n in bucket.items()}
        assert flat == {t: n for t, n in expected.items() if n}, "buckets disagree with sources"
        for hour, bucket in self.buckets.items():
            assert bucket and all(t // HOUR_MS == hour for t in bucket)
        assert self.series.total == sum(expected.values())
        self.series._check()


############################################################################################
# Commands
############################################################################################


def _forward(router: Any, sensor: str, out: dict[str, list[Contribution]]) -> None:
    for space, items in out.items():
        router.forward((SPACE, space), _contribute_op(sensor, items))


def _contribute_op(sensor: str, items: list[Contribution]) -> Operation:
    def operation(state: SpaceState) -> None:
        state.contribute(sensor, items)

    return operation


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class DensityIngest(Command):
    """A batch of validated crossings (``validate_dpu_events``)."""

    op: ClassVar[str] = "density.ingest"
    events: list[DensityEvent]
    #: [new events, duplicates] once applied (not logged: a live request's answer).
    tally: list[int] = field(default_factory=lambda: [0, 0], compare=False)

    def to_plain(self) -> Any:
        return self.events

    @classmethod
    def from_plain(cls, plain: Any) -> DensityIngest:
        return cls(events=[tuple(e) for e in plain])  # type: ignore[misc]

    def route(self, seq: int, router: Any = None) -> dict[EntityKey, Operation]:
        groups: dict[str, list[tuple[int, int, int, str | None]]] = {}
        for index, (dpu, ts, direction, event_id) in enumerate(self.events):
            group = groups.get(dpu)
            if group is None:
                group = groups[dpu] = []
            group.append((index, ts, direction, event_id))
        return {(DPU, dpu): _ingest_op(seq, dpu, items, router, self.tally) for dpu, items in groups.items()}

    def size(self) -> int:
        return len(self.events)


def _ingest_op(
    seq: int, dpu: str, items: list[tuple[int, int, int, str | None]], router: Any, tally: list[int]
) -> Operation:
    def operation(state: SensorState) -> None:
        if state.applied_seq < seq:
            new, duplicates, out = state.ingest(seq, items)
            state.applied_seq = seq
            tally[0] += new
            tally[1] += duplicates
        else:  # already held (a snapshot taken after it): tell the spaces again
            out = state.current_contributions(
                event_id if event_id is not None else (seq << _INDEX_BITS) | index
                for index, _, _, event_id in items
            )
        _forward(router, dpu, out)

    return operation


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class PlaceSensor(Command):
    """A sensor's placement from ``installed`` (ms) on; re-counts its stretch."""

    op: ClassVar[str] = "density.place"
    dpu: str
    installed: int
    doorway: str
    spaces: list[tuple[str, int]]

    def to_plain(self) -> Any:
        return [self.dpu, self.installed, self.doorway, self.spaces]

    @classmethod
    def from_plain(cls, plain: Any) -> PlaceSensor:
        dpu, installed, doorway, spaces = plain
        return cls(dpu=dpu, installed=installed, doorway=doorway, spaces=[tuple(s) for s in spaces])

    def route(self, seq: int, router: Any = None) -> dict[EntityKey, Operation]:
        spaces = dict(self.spaces)

        def operation(state: SensorState) -> None:
            if state.applied_seq < seq:
                out = state.place(self.installed, self.doorway, spaces)
                state.applied_seq = seq
            else:
                out = state.recount_from(self.installed)
            _forward(router, self.dpu, out)

        return {(DPU, self.dpu): operation}


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class SetSpaceOptions(Command):
    """A space's options: the nightly reset and the zone whose midnight it follows."""

    op: ClassVar[str] = "density.space"
    space: str
    reset: bool
    tz: str | None

    def to_plain(self) -> Any:
        return [self.space, self.reset, self.tz]

    @classmethod
    def from_plain(cls, plain: Any) -> SetSpaceOptions:
        space, reset, tz = plain
        return cls(space=space, reset=reset, tz=tz)

    def route(self, seq: int, router: Any = None) -> dict[EntityKey, Operation]:
        def operation(state: SpaceState) -> None:
            if state.applied_seq < seq:
                state.set_options(self.reset, self.tz)
                state.applied_seq = seq

        return {(SPACE, self.space): operation}


__all__ = [
    "DPU",
    "SPACE",
    "DensityEvent",
    "DensityIngest",
    "Occupancy",
    "PlaceSensor",
    "Placement",
    "SensorState",
    "SetSpaceOptions",
    "SpaceState",
    "check_direction",
    "check_placement",
    "check_space_options",
    "iso_ms",
    "parse_instant",
    "validate_dpu_events",
]
