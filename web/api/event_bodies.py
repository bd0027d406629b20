"""``POST /api/events`` bodies decoded in one step into the engine's event tuples.

Theory of operation
-------------------
The reference path, :func:`decode_counter_events_reference`, takes four passes over a batch:
orjson builds dicts, ``check`` converts them to ``CounterEvent`` structs for the shape (and
drops them), and ``validate_counter_events`` walks the dicts again into tuples. The fast path,
:func:`decode_counter_events_fast`, lets msgspec decode the bytes straight into small structs
whose types already say what the model says (exact ints in range, strings of the right
length, ``mode`` one of two words, no unknown field), then makes the tuples in one Python
loop with the checks msgspec cannot express: ``ts1 <= ts``, ``diff`` needs ``aid``, string
user ids normalised (once per distinct id), metric names free of control characters and
surrogates (once per distinct name).

Soundness, not completeness: the fast path answers only for bodies that the reference
accepts, with the same tuples, and returns ``None`` on any doubt -- any msgspec error, any
check that fails -- so the reference decides and words every error, byte for byte. Where the
decoders differ, the fast one is the stricter:

* integral floats (``10.0``, ``1e3``): msgspec refuses them for an ``int`` (the reference
  accepts them up to 2**53), so they go the reference's way;
* integers past 64 bits: orjson reads them as floats, msgspec as exact ints; either way out of
  range, refused by both;
* bools are not ints to msgspec; ``"42"`` stays a string until ``normalize_user``;
* duplicate keys: both keep the last value, and msgspec checks every one;
* lone surrogate escapes (``"\\ud800"``), invalid or surrogate UTF-8, a BOM, trailing bytes,
  ``NaN``: both refuse; in any case every string the fast path keeps is checked for
  surrogates and control characters;
* msgpack: ``bin`` for ``str``, ext types (timestamps), non-string keys are refused by
  msgspec; ``uint64`` past int64 is out of range.

The body's size, its emptiness and the batch's length are the reference's to word too: an
empty body and a batch of more than ``MAX_BATCH_EVENTS`` events take that path.
``tests/web/test_event_bodies.py`` holds the two paths to the same answer on generated
bodies; ``bench/bench_http.py --compare-decoders`` measures them over HTTP.

``POINTSPACE_FAST_DECODE=0`` in the server's environment turns the fast paths off (this
module's and PSD's writes, ``web/compat/psd.py``; ``web.bodies.FAST_DECODE``): every body then
takes the reference path, as before the fast path existed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from engine.counters import ADD, DIFF
from engine.errors import InvalidInput
from engine.events import (
    MAX_BATCH_EVENTS,
    MAX_NAME_LENGTH,
    UserEvent,
    normalize_user,
    validate_counter_events,
)
from web.api import models as m
from web.bodies import FAST_DECODE, MSGPACK_TYPES, NDJSON_TYPES, decode_body, media_type
from web.openapi import check, check_batch_size

#: A metric name's length; what it may contain is checked once per distinct name.
_Metric = Annotated[str, Meta(min_length=1, max_length=MAX_NAME_LENGTH)]


class _Event(Struct, forbid_unknown_fields=True, gc=False):
    """``m.CounterEvent``'s shape without the per-event regular expression (names are checked
    once per batch); ``gc=False``: a batch of thousands is not tracked by the collector."""

    metric: _Metric
    user: m.Int64 | str
    value: m.Int64
    ts: m.Timestamp
    atid: m.Int64 = 0
    aid: m.Int64 | None = None
    ts1: m.Timestamp | None = None
    mode: Literal["add", "diff"] = "add"


class _Batch(Struct, forbid_unknown_fields=True, gc=False):
    events: list[_Event]


_JSON = msgspec.json.Decoder(list[_Event] | _Batch)
_MSGPACK = msgspec.msgpack.Decoder(list[_Event] | _Batch)
_LINE = msgspec.json.Decoder(_Event)


def decode_counter_events(data: bytes, content_type: str | None) -> list[UserEvent]:
    """A ``POST /api/events`` body (JSON, msgpack or NDJSON by ``content_type``) as validated
    event tuples: the fast path when it can vouch for the body, else the reference.

    Raises:
        InvalidInput: the body is not a valid batch (the reference's message and field).
        PayloadTooLarge: more than ``MAX_BATCH_EVENTS`` events.

    Runtime complexity: O(len(data)).
    """
    if FAST_DECODE:
        events = decode_counter_events_fast(data, content_type)
        if events is not None:
            return events
    return decode_counter_events_reference(data, content_type)


def decode_counter_events_reference(data: bytes, content_type: str | None) -> list[UserEvent]:
    """The body decoded, checked against ``m.EventsBody`` and validated event by event, in
    that order, each step raising its own error: the path every error answer comes from."""
    decoded = decode_body(data, content_type)
    check_batch_size(decoded, "events", "body")
    check(decoded, m.EventsBody, "body")
    if isinstance(decoded, Mapping):
        return validate_counter_events(decoded.get("events"), "events")
    return validate_counter_events(decoded, "body")


def decode_counter_events_fast(data: bytes, content_type: str | None) -> list[UserEvent] | None:
    """The tuples :func:`decode_counter_events_reference` would return for ``data``, or
    ``None`` where this path cannot vouch for them (the module docstring says why that is
    sound); it never raises for a client's body."""
    if not data:
        return None
    kind = media_type(content_type)
    try:
        if kind in MSGPACK_TYPES:
            body = _MSGPACK.decode(data)
        elif kind in NDJSON_TYPES:
            # The reference's own line split (bytes.splitlines, blank lines skipped).
            decode_line = _LINE.decode
            body = [decode_line(line) for line in data.splitlines() if line.strip()]
        else:
            body = _JSON.decode(data)
    except (msgspec.DecodeError, ValueError):  # ValidationError is a DecodeError
        return None
    return event_tuples(body.events if type(body) is _Batch else body)


def event_tuples(events: list[_Event]) -> list[UserEvent] | None:
    """Decoded events as the engine's tuples, or ``None`` when one breaks a rule msgspec
    cannot express (the reference then words it).

    Runtime complexity: O(n); each distinct string user id and metric name is checked once.
    """
    if len(events) > MAX_BATCH_EVENTS:
        return None
    out: list[UserEvent] = []
    append = out.append
    metrics: set[str] = set()
    add_metric = metrics.add
    string_users: dict[str, Any] = {}
    _str, _none = str, None
    for event in events:
        user = event.user
        if type(user) is _str:
            known = string_users.get(user)
            if known is _none:
                try:
                    known = string_users[user] = normalize_user(user)
                except InvalidInput:
                    return None
            user = known
        ts = event.ts
        ts1 = event.ts1
        if ts1 is _none:
            ts1 = ts
        elif ts1 > ts:
            return None
        aid = event.aid
        if event.mode == "add":
            mode = ADD
        elif aid is _none:
            return None
        else:
            mode = DIFF
        metric = event.metric
        add_metric(metric)
        append((user, metric, event.atid, aid, ts, event.value, ts1, mode))
    for metric in metrics:  # printable text holds no Cc or Cs (engine.events.check_name)
        if not metric.isprintable():
            return None
    return out
