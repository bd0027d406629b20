"""PSD-compatible routes: pointspaced's nine endpoints at its own paths, with its bodies.

See ../shared/compat/psd.md for the reference behaviour. What PSD clients rely on is kept:
form-encoded ``ids``/``things``/``offsets``, plain-text sums, text-wrapped JSON for
``query_ids`` and ``readcount_with_ids``, ``_atids`` lists, the mumt drop rules, 406 for a
rejected write and 422 for a rejected multi-user query. Where PSD silently read garbage as 0
(non-numeric path parameters, missing fields) we answer 400 with a JSON body naming the field:
a client that relied on "garbage means 0" was already getting wrong answers.

Differences, on purpose: any metric name is accepted (PSD knew five: steps, calories, points,
distance, cb), and a write whose ts1 is after ts2 is refused (406) instead of re-adding the
full value.

PSD's NSQ queue messages (``{"command": "metric" | "count", ...}``) are accepted at
``POST /v1/batch`` as a JSON array or NDJSON, validated whole, in place of the NSQ worker.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from functools import wraps
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct
from quart import Blueprint, Response, current_app, request

from engine.counters import DIFF
from engine.engine import Engine
from engine.errors import InvalidInput, PointspaceError, quote
from engine.events import (
    INT64_MAX,
    INT64_MIN,
    MAX_NAME_LENGTH,
    RESERVED_PREFIX,
    UserEvent,
    check_int,
    check_name,
    check_ts,
    check_writable_name,
    normalize_user,
)
from engine.timebuckets import MAX_TS, MIN_TS
from web.bodies import (
    FAST_DECODE,
    MSGPACK_TYPES,
    NDJSON_TYPES,
    decode_body,
    json_text,
    mark_body_read,
    media_type,
    read_body,
    respond,
    text,
)
from web.context import closing_on_error, engine_of, settings_of

psd = Blueprint("psd", __name__)
#: The API family of these routes (``web/apis.py``: GET /api/apis, OpenAPI tags).
SEED = "psd"
SEED_DOC = "PSD / pointspaced: per-user time-bucketed sums at pointspaced's own paths."

Handler = Callable[..., Awaitable[Response]]



class InvalidPathParameter(InvalidInput):
    """A malformed URL path parameter: a plain 400 on every route, whatever its PSD status."""


def psd_status(status: int) -> Callable[[Handler], Handler]:
    """Answer this route's input errors with PSD's own status (406 for writes, 422 for mumt)."""

    def decorate(handler: Handler) -> Handler:
        @wraps(handler)
        async def wrapper(*args: Any, **kwargs: Any) -> Response:
            try:
                return await handler(*args, **kwargs)
            except InvalidInput as exc:
                if isinstance(exc, InvalidPathParameter):
                    raise
                return closing_on_error(respond(exc.to_json(), request, status))

        return wrapper

    return decorate


def _engine() -> Engine:
    return engine_of(current_app)


#: What Go's ``strconv.ParseInt`` (PSD's parser) takes: ASCII digits with an optional sign.
#: Python's ``int()`` also takes ``1_000``, spaces and other scripts' digits (``１２``).
_GO_INT = re.compile(r"[+-]?[0-9]+")


def go_int(raw: str) -> int:
    """``raw`` as Go's ``strconv.ParseInt`` reads it, else ``ValueError``.

    >>> go_int("-12"), go_int("+7")
    (-12, 7)
    >>> go_int("1_000")
    Traceback (most recent call last):
    ...
    ValueError: not an integer: '1_000'
    """
    if not _GO_INT.fullmatch(raw):
        raise ValueError(f"not an integer: {quote(raw)}")
    return int(raw)


def _path_int(raw: str, field: str) -> int:
    try:
        return go_int(raw)
    except ValueError:
        raise InvalidPathParameter(f"{field} must be an integer, got {quote(raw)}", field) from None


def _path_ts(raw: str, field: str) -> int:
    value = _path_int(raw, field)
    try:
        return check_ts(value, field)
    except InvalidInput as exc:
        raise InvalidPathParameter(exc.message, field) from None


def _path_atid(raw: str) -> int | None:
    """``all`` (no filter) or an activity-type id."""
    return None if raw == "all" else _path_int(raw, "atid")


async def _form_list(name: str) -> list[str]:
    """A comma-separated form field (body first, then the query string), split and trimmed."""
    mark_body_read()
    form = await request.form
    raw = form.get(name)
    if raw is None:
        raw = request.args.get(name)
    parts = [part.strip() for part in (raw or "").split(",") if part.strip()]
    if not parts:
        raise InvalidInput(f"form field {name} is required (comma-separated)", name)
    return parts


async def _form_users() -> list[tuple[str, Any]]:
    """``ids`` as (the id as the client wrote it, the normalized user id)."""
    return [(raw, normalize_user(raw, "ids")) for raw in await _form_list("ids")]


@psd.get("/health/ping")
async def ping() -> Response:
    """PSD's health check: `{"pong": "OK"}`."""
    return respond({"pong": "OK"})


############################################################################################
# Writes


def metric_job_event(job: Any, field: str = "body") -> UserEvent:
    """PSD's MetricJob ``{thing, uid, atid, aid, value, ts1, ts2}`` as a diff-mode event.

    As in PSD, ``atid``, ``aid`` and ``ts1`` default to 0; ``thing``, ``uid``, ``value`` and
    ``ts2`` are required, and ts2 must be a positive timestamp.
    """
    if not isinstance(job, Mapping):
        raise InvalidInput(f"{field} must be a MetricJob object", field)
    prefix = "" if field == "body" else f"{field}."
    for name in ("thing", "uid", "value", "ts2"):
        if name not in job:
            raise InvalidInput(f"{prefix}{name} is required", f"{prefix}{name}")
    thing = check_name(job["thing"], f"{prefix}thing")
    uid = normalize_user(job["uid"], f"{prefix}uid")
    ts2 = check_ts(job["ts2"], f"{prefix}ts2")
    if ts2 <= 0:
        raise InvalidInput("timestamp was invalid: ts2 must be > 0", f"{prefix}ts2")
    ts1 = check_ts(job.get("ts1", 0), f"{prefix}ts1")
    if ts1 > ts2:
        raise InvalidInput(f"{prefix}ts1 must be <= ts2, got ts1={ts1} ts2={ts2}", f"{prefix}ts1")
    atid = check_int(job.get("atid", 0), f"{prefix}atid")
    aid = check_int(job.get("aid", 0), f"{prefix}aid")
    value = check_int(job["value"], f"{prefix}value")
    return (uid, thing, atid, aid, ts2, value, ts1, DIFF)


def count_job(job: Any, field: str) -> tuple[str, int, int]:
    """PSD's CountJob ``{thing, value, ts}``: thing of 2..64 characters (no control
    characters, as for every name: ``engine/events.py``), ts > 0."""
    if not isinstance(job, Mapping):
        raise InvalidInput(f"{field} must be a CountJob object", field)
    for name in ("thing", "value", "ts"):
        if name not in job:
            raise InvalidInput(f"{field}.{name} is required", f"{field}.{name}")
    thing = job["thing"]
    if not isinstance(thing, str) or not 2 <= len(thing) <= 64:
        raise InvalidInput(f"{field}.thing must be 2..64 characters, got {quote(thing)}", f"{field}.thing")
    check_writable_name(thing, f"{field}.thing")  # no control characters, no reserved names
    ts = check_ts(job["ts"], f"{field}.ts")
    if ts <= 0:
        raise InvalidInput(f"{field}.ts must be > 0", f"{field}.ts")
    return (thing, ts, check_int(job["value"], f"{field}.value"))


@psd.post("/v1/write")
@psd_status(406)
async def write() -> Response:
    """One MetricJob in diff-add mode; answers the text ``ok``."""
    data = await read_body(request, settings_of(current_app).max_body_bytes)
    event = decode_write(data)
    await _engine().ingest_validated([event])
    return text("ok")


def decode_write(data: bytes) -> UserEvent:
    """A ``/v1/write`` body (JSON, whatever its Content-Type, as PSD read it) as an event:
    the fast path when it can vouch for it, else the reference, which words every error."""
    if FAST_DECODE and data:
        try:
            event = _metric_tuple(_JOB_JSON.decode(data), {})
        except (msgspec.DecodeError, ValueError):
            event = None
        if event is not None:
            return event
    return metric_job_event(decode_body(data, "application/json"))


@psd.post("/v1/batch")
async def batch() -> Response:
    """PSD queue messages, validated whole: ``[{"command": "metric", "metric": {...}}, ...]``."""
    data = await read_body(request, settings_of(current_app).max_body_bytes)
    events, counts = decode_batch(data, request.headers.get("Content-Type"))
    engine = _engine()
    applied = await engine.ingest_validated(events)
    if counts:
        from engine.commands import CountBatch

        await engine.submit(CountBatch(counts=counts))
    return respond({"metrics": applied, "counts": len(counts)}, request)


def decode_batch(
    data: bytes, content_type: str | None
) -> tuple[list[UserEvent], list[tuple[str, int, int]]]:
    """A ``/v1/batch`` body as (metric events, global-counter increments): the fast path
    when it can vouch for the body, else :func:`decode_batch_reference`.

    Raises:
        InvalidInput: the first bad message, in PSD's words (``messages[3].metric.ts2``).
    """
    if FAST_DECODE:
        decoded = decode_batch_fast(data, content_type)
        if decoded is not None:
            return decoded
    return decode_batch_reference(data, content_type)


def decode_batch_reference(
    data: bytes, content_type: str | None
) -> tuple[list[UserEvent], list[tuple[str, int, int]]]:
    """The body decoded to dicts, then message by message: the path every error comes from."""
    messages = decode_body(data, content_type)
    if isinstance(messages, Mapping):
        messages = [messages]
    if not isinstance(messages, list):
        raise InvalidInput("body must be a list of PSD queue messages", "body")
    events: list[UserEvent] = []
    counts: list[tuple[str, int, int]] = []
    for i, message in enumerate(messages):
        field = f"messages[{i}]"
        command = message.get("command") if isinstance(message, Mapping) else None
        if command == "metric":
            events.append(metric_job_event(message.get("metric"), f"{field}.metric"))
        elif command == "count":
            counts.append(count_job(message.get("count"), f"{field}.count"))
        else:
            raise InvalidInput(
                f"{field}.command must be 'metric' or 'count', got {quote(command)}", f"{field}.command"
            )
    return events, counts


############################################################################################
# Writes: the fast path
#
# msgspec decodes the bytes straight into the structs below, whose types already hold what
# metric_job_event and count_job check one call at a time (exact ints in range, strings of
# the right length, no unknown field, no null); the loop adds PSD's cross-field rules (ts2 >
# 0, ts1 <= ts2, names without control characters), normalising each distinct string uid
# once. It answers only for bodies the reference accepts, with the same result, and returns
# None on any doubt (web/api/event_bodies.py gives the argument and the decoders'
# differences; tests/web/test_psd_bodies.py holds the two paths to the same answers).

_Int64 = Annotated[int, Meta(ge=INT64_MIN, le=INT64_MAX)]
_Ts = Annotated[int, Meta(ge=MIN_TS, le=MAX_TS)]


class _MetricJob(Struct, forbid_unknown_fields=True, gc=False):
    thing: Annotated[str, Meta(min_length=1, max_length=MAX_NAME_LENGTH)]
    uid: _Int64 | str
    value: _Int64
    ts2: _Ts
    ts1: _Ts = 0
    atid: _Int64 = 0
    aid: _Int64 = 0


class _CountJob(Struct, forbid_unknown_fields=True, gc=False):
    thing: Annotated[str, Meta(min_length=2, max_length=64)]
    value: _Int64
    ts: _Ts


class _Message(Struct, forbid_unknown_fields=True, gc=False):
    command: Literal["metric", "count"]
    metric: _MetricJob | None = None
    count: _CountJob | None = None


_JOB_JSON = msgspec.json.Decoder(_MetricJob)
_MESSAGES_JSON = msgspec.json.Decoder(list[_Message] | _Message)
_MESSAGES_MSGPACK = msgspec.msgpack.Decoder(list[_Message] | _Message)
_MESSAGE_LINE = msgspec.json.Decoder(_Message)


def _metric_tuple(job: _MetricJob, users: dict[str, Any]) -> UserEvent | None:
    """``metric_job_event``'s tuple for a decoded job, or ``None`` on doubt; ``users`` caches
    normalised string uids."""
    uid = job.uid
    if type(uid) is str:
        known = users.get(uid)
        if known is None:
            try:
                known = users[uid] = normalize_user(uid)
            except InvalidInput:
                return None
        uid = known
    ts2, ts1, thing = job.ts2, job.ts1, job.thing
    if ts2 <= 0 or ts1 > ts2 or not thing.isprintable():
        return None
    return (uid, thing, job.atid, job.aid, ts2, job.value, ts1, DIFF)


def decode_batch_fast(
    data: bytes, content_type: str | None
) -> tuple[list[UserEvent], list[tuple[str, int, int]]] | None:
    """What :func:`decode_batch_reference` returns for ``data``, or ``None`` where this path
    cannot vouch for it; never raises for a client's body.

    Runtime complexity: O(len(data)).
    """
    if not data:
        return None
    kind = media_type(content_type)
    try:
        if kind in MSGPACK_TYPES:
            body = _MESSAGES_MSGPACK.decode(data)
        elif kind in NDJSON_TYPES:  # the reference's own line split, blank lines skipped
            decode_line = _MESSAGE_LINE.decode
            body = [decode_line(line) for line in data.splitlines() if line.strip()]
        else:
            body = _MESSAGES_JSON.decode(data)
    except (msgspec.DecodeError, ValueError):
        return None
    messages = [body] if type(body) is _Message else body
    events: list[UserEvent] = []
    counts: list[tuple[str, int, int]] = []
    users: dict[str, Any] = {}
    for message in messages:
        if message.command == "metric":
            job = message.metric
            event = None if job is None else _metric_tuple(job, users)
            if event is None:
                return None
            events.append(event)
        else:
            count = message.count
            if (count is None or count.ts <= 0 or not count.thing.isprintable()
                    or count.thing.startswith(RESERVED_PREFIX)):
                return None
            counts.append((count.thing, count.ts, count.value))
    return events, counts


############################################################################################
# Queries


@psd.get("/v1/query/<uid>/<thing>/<atid>/<start_ts>/<end_ts>")
async def query_one(uid: str, thing: str, atid: str, start_ts: str, end_ts: str) -> Response:
    """One user's sum as plain text."""
    user = normalize_user(uid, "uid")
    t1, t2 = _path_ts(start_ts, "start_ts"), _path_ts(end_ts, "end_ts")
    results = await _engine().query([user], [thing], t1, t2, atid=_path_atid(atid))
    return text(results[user].sums[thing])


@psd.post("/v1/query_ids/<thing>/<atid>/<start_ts>/<end_ts>")
async def query_ids(thing: str, atid: str, start_ts: str, end_ts: str) -> Response:
    """Sums for many users: text holding JSON ``{"1": 105, "2": 0}``, every id present."""
    t1, t2 = _path_ts(start_ts, "start_ts"), _path_ts(end_ts, "end_ts")
    ids = await _form_users()
    results = await _engine().query([u for _, u in ids], [thing], t1, t2, atid=_path_atid(atid))
    return json_text({raw: results[user].sums[thing] for raw, user in ids})


@psd.post("/v1/mu_query/<thing>/<atid>/<start_ts>/<end_ts>")
@psd_status(422)
async def mu_query(thing: str, atid: str, start_ts: str, end_ts: str) -> Response:
    """``{"values": {id: sum}, "atids": {id: [atid per activity]}}``, zeros included."""
    t1, t2 = _path_ts(start_ts, "start_ts"), _path_ts(end_ts, "end_ts")
    ids = await _form_users()
    results = await _engine().query(
        [u for _, u in ids], [thing], t1, t2, atid=_path_atid(atid), with_atids=True
    )
    return respond(
        {
            "values": {raw: results[user].sums[thing] for raw, user in ids},
            "atids": {raw: results[user].atids for raw, user in ids},
        }
    )


async def _mumt(atid: str, start_ts: str, end_ts: str, with_offsets: bool) -> Response:
    t1, t2 = _path_ts(start_ts, "start_ts"), _path_ts(end_ts, "end_ts")
    things = [check_name(t, "things") for t in await _form_list("things")]
    ids = await _form_users()
    offsets = None
    if with_offsets:
        raw_offsets = await _form_list("offsets")
        if len(raw_offsets) != len(ids):
            raise InvalidInput("len(uids) != len(offsets)", "offsets")
        try:
            offsets = [go_int(o) for o in raw_offsets]
        except ValueError:
            raise InvalidInput(f"offsets must be integers, got {quote(raw_offsets)}", "offsets") from None
    users = [u for _, u in ids]
    results = await _engine().query(
        users, things, t1, t2, atid=_path_atid(atid), offsets=offsets, with_atids=True
    )
    data: dict[str, Any] = {}
    for raw, user in ids:
        result = results[user]
        # PSD drops a user with no contributing activity, or with zero points when asked.
        if not result.atids or ("points" in result.sums and result.sums["points"] == 0):
            continue
        entry: dict[str, Any] = dict(result.sums)
        entry["_atids"] = result.atids
        data[raw] = entry
    return respond({"data": data})


@psd.post("/v1/mumt_query/<atid>/<start_ts>/<end_ts>")
@psd_status(422)
async def mumt_query(atid: str, start_ts: str, end_ts: str) -> Response:
    """Many users x many things, with ``_atids`` and PSD's drop rules."""
    return await _mumt(atid, start_ts, end_ts, with_offsets=False)


@psd.post("/v2/mumt_query/<atid>/<start_ts>/<end_ts>")
@psd_status(422)
async def mumt_query_v2(atid: str, start_ts: str, end_ts: str) -> Response:
    """As v1, with one offset per user added to both ends of the window."""
    return await _mumt(atid, start_ts, end_ts, with_offsets=True)


@psd.get("/v1/readcount/<thing>/<start_ts>/<end_ts>")
async def readcount(thing: str, start_ts: str, end_ts: str) -> Response:
    """A global counter's sum as plain text."""
    t1, t2 = _path_ts(start_ts, "start_ts"), _path_ts(end_ts, "end_ts")
    sums = await _engine().read_counts([thing], t1, t2)
    return text(sums[thing])


@psd.post("/v1/readcount_with_ids/<prefix>/<start_ts>/<end_ts>")
async def readcount_with_ids(prefix: str, start_ts: str, end_ts: str) -> Response:
    """Counters ``<prefix>_<id>`` for each id: text holding JSON ``{"id": n}``."""
    t1, t2 = _path_ts(start_ts, "start_ts"), _path_ts(end_ts, "end_ts")
    ids = await _form_list("ids")
    sums = await _engine().read_counts([f"{prefix}_{i}" for i in ids], t1, t2)
    return json_text({i: sums[f"{prefix}_{i}"] for i in ids})


__all__ = ["psd", "PointspaceError"]
