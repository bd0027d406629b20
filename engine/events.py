"""Validation of incoming events: a whole batch is checked before any of it is applied.

Theory of operation
-------------------
Events arrive as decoded JSON or msgpack mappings (``{"metric", "user", "value", "ts", ...}``).
:func:`validate_counter_events` turns a whole batch into plain tuples or raises one
``InvalidInput`` naming the first bad field (``events[17].ts``); nothing is applied unless
every event passes. After this point nothing can reject an event, so a batch is appended to
the log and applied as a unit.

Two validators, one answer: :func:`validate_counter_events` first tries a fast path
(:func:`validate_counter_events_fast`: exact types only, no per-event field names or helper
calls, each distinct metric name checked once), and on any doubt runs the reference,
:func:`validate_counter_events_each`, which checks event by event and words every error. A
property test holds them to the same tuples and the same errors
(``tests/engine/test_events_fast.py``); ``bench/bench_ingest.py --validators`` measures them.

Tuples rather than one frozen dataclass per event: a batch of thousands would spend more
time constructing objects than counting (the batch itself, ``IngestBatch``, is the frozen,
validated command that goes to the log).

User ids may be integers or strings. A string that is the canonical decimal form of an
integer (``"42"``, not ``"042"``) names the same user as the integer, because PSD's form
endpoints carry uids as text while JSON clients send numbers.

Names and string ids are text a person can read: metric names, counter names and string
user ids refuse control characters (Unicode category Cc: NUL, newline, escape, DEL, C1) and
surrogates (Cs). A NUL ends the name in any C consumer (log viewers, shells, a Redis or
SQLite export), newlines and escapes forge lines in logs and terminals, and a lone surrogate
is not text at all: it cannot be encoded as UTF-8, so the log and snapshot writers (msgpack)
would fail on it. HTTP cannot carry one (orjson and msgpack refuse it, and URL paths and
forms decode it to U+FFFD), but an in-process embedder can. PSD's user ids are integers, so
nothing a seed client sends is refused by this. Everything else -- other scripts, emoji, spaces, format characters such as
the zero-width joiner inside emoji -- stays a valid name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from engine.counters import ADD, DIFF
from engine.errors import InvalidInput, PayloadTooLarge, quote
from engine.timebuckets import MAX_TS, MIN_TS

User = int | str

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
#: Floats stand for integers only up to 2**53: beyond, a float is one of several integers
#: (JSON parsers turn integer literals past 64 bits into such floats), so it is refused.
EXACT_FLOAT_INT = 2**53
#: Upper bound on events in one batch; larger batches get 413 (the HTTP layer also bounds
#: body size). 100k events is ~5 MB of JSON, a few hundred ms of work for one request.
MAX_BATCH_EVENTS = 100_000
MAX_NAME_LENGTH = 200
#: What a name or string id may not contain (see the module docstring): Cc is exactly
#: U+0000-U+001F and U+007F-U+009F; Cs is U+D800-U+DFFF. The same class, as a JSON Schema
#: ``pattern``, documents the rule in ``web/api/models.py``.
FORBIDDEN_IN_NAMES = r"\u0000-\u001f\u007f-\u009f\ud800-\udfff"
_FORBIDDEN = re.compile(f"[{FORBIDDEN_IN_NAMES}]")

#: A validated counter event: (user, metric, atid, aid, ts, value, ts1, mode).
UserEvent = tuple[User, str, int, "int | None", int, int, int, int]

_EVENT_FIELDS = frozenset({"metric", "user", "value", "ts", "atid", "aid", "ts1", "mode"})

#: Names that only their owning API may write: global counters and unique series under this
#: prefix are the Narrative API's (``web/compat/narrative.py``: ``narrative.clicks``,
#: ``narrative.impressions``, ``narrative.users``), whose figures must move only with its own
#: events. Checked at the validators every generic write goes through
#: (:func:`check_writable_name`); reading them is open to everyone.
RESERVED_PREFIX = "narrative."


def check_int(value: Any, field: str, low: int = INT64_MIN, high: int = INT64_MAX) -> int:
    """``value`` if it is an integer (not a bool) in [low, high], else ``InvalidInput``."""
    if type(value) is not int:
        if isinstance(value, float) and value.is_integer() and abs(value) <= EXACT_FLOAT_INT:
            value = int(value)
        else:
            raise InvalidInput(f"{field} must be an integer, got {quote(value)}", field)
    if not low <= value <= high:
        raise InvalidInput(f"{field} must be between {low} and {high}, got {quote(value)}", field)
    return value


def check_ts(value: Any, field: str) -> int:
    """A Unix timestamp in seconds within 1970-01-01 .. 9999-12-31."""
    if type(value) is int and MIN_TS <= value <= MAX_TS:
        return value
    return check_int(value, field, MIN_TS, MAX_TS)


def check_name(value: Any, field: str) -> str:
    """A metric or counter name: a non-empty string of at most 200 characters, without
    control characters or surrogates (see the module docstring).

    >>> check_name("steps", "metric")
    'steps'
    >>> check_name("st\\x00eps", "metric")
    Traceback (most recent call last):
    ...
    engine.errors.InvalidInput: metric must not contain control characters or surrogates, got 'st\\x00eps' (U+0000 at index 2)
    """
    if type(value) is not str or not 0 < len(value) <= MAX_NAME_LENGTH:
        raise InvalidInput(
            f"{field} must be a non-empty string of at most {MAX_NAME_LENGTH} characters, "
            f"got {quote(value)}",
            field,
        )
    if not value.isprintable():  # fast path: printable text holds no Cc or Cs
        check_text(value, field)
    return value


def check_writable_name(value: Any, field: str) -> str:
    """A name a generic write may use: :func:`check_name`, and not under ``RESERVED_PREFIX``
    (the Narrative API's entities, written only by ``POST /analytics``).

    >>> check_writable_name("narrative.clicks", "counts[0].name")
    Traceback (most recent call last):
    ...
    engine.errors.InvalidInput: counts[0].name: names starting with 'narrative.' are written only by the Narrative API (POST /analytics); read them anywhere, write another name
    """
    name = check_name(value, field)
    if name.startswith(RESERVED_PREFIX):
        raise InvalidInput(
            f"{field}: names starting with {RESERVED_PREFIX!r} are written only by the Narrative "
            "API (POST /analytics); read them anywhere, write another name",
            field,
        )
    return name


def check_text(value: str, field: str) -> str:
    """``value`` if it holds no control character (Cc) or surrogate (Cs), else
    ``InvalidInput`` naming the first one.

    Runtime complexity: O(len(value)).
    """
    bad = _FORBIDDEN.search(value)
    if bad is not None:
        raise InvalidInput(
            f"{field} must not contain control characters or surrogates, got {quote(value)} "
            f"(U+{ord(bad.group()):04X} at index {bad.start()})",
            field,
        )
    return value


def normalize_user(value: Any, field: str = "user") -> User:
    """A user id: an integer, or a non-empty string without control characters or
    surrogates (canonical decimal strings become ints).

    >>> normalize_user("42"), normalize_user("042"), normalize_user(7)
    (42, '042', 7)
    """
    if type(value) is int:
        if INT64_MIN <= value <= INT64_MAX:
            return value
    elif type(value) is str and 0 < len(value) <= MAX_NAME_LENGTH:
        if not value.isprintable():  # fast path, as in check_name
            check_text(value, field)
        if value.isdigit() and value.isascii() and (value == "0" or value[0] != "0"):
            number = int(value)
            if number <= INT64_MAX:
                return number
        elif value[:1] == "-" and value[1:].isdigit() and value[1:2] != "0" and value.isascii():
            number = int(value)
            if number >= INT64_MIN:
                return number
        return value
    raise InvalidInput(
        f"{field} must be an integer or a non-empty string of at most {MAX_NAME_LENGTH} "
        f"characters, got {quote(value)}",
        field,
    )


def validate_counter_events(events: Any, field: str = "events") -> list[UserEvent]:
    """Validate a whole batch of counter events; raise on the first bad one.

    Each event: ``metric`` (str), ``user`` (int or str), ``value`` (int), ``ts`` (Unix
    seconds), optional ``atid`` (int, default 0), ``aid`` (int), ``ts1`` (Unix seconds <= ts,
    default ts) and ``mode`` (``"add"``, the default, or ``"diff"``, which needs ``aid``).

    A valid batch of plain ints and strings takes the fast path
    (:func:`validate_counter_events_fast`); anything else -- an error, an integral float, an
    ``int`` subclass -- is decided and worded by :func:`validate_counter_events_each`, so the
    result and every message are the same either way (``tests/engine/test_events_fast.py``).

    >>> validate_counter_events([{"metric": "steps", "user": 1, "value": 10, "ts": 1496539747}])
    [(1, 'steps', 0, None, 1496539747, 10, 1496539747, 0)]

    Runtime complexity: O(n).
    """
    fast = validate_counter_events_fast(events)
    if fast is not None:
        return fast
    return validate_counter_events_each(events, field)


#: Stands for an optional field that is absent (``None`` is a value some fields may hold).
_ABSENT: Any = object()


def validate_counter_events_fast(events: Any) -> list[UserEvent] | None:
    """The tuples :func:`validate_counter_events_each` would return for ``events``, or
    ``None`` where this fast path cannot vouch for the batch (any doubt: a bad field, an
    integral float, a subclass of ``int`` or ``str``, a non-``dict`` mapping); the caller then
    runs the reference validator, which decides and words the error.

    Why it is faster (about 2x on a batch of six-field events; see
    ``bench/bench_ingest.py --validators``): it never builds a field name or calls a helper
    for a valid event, checks the types of the five integers in one chained comparison,
    recognises the two common shapes (the four required fields, or those plus ``atid`` and
    ``aid``) by their length alone, and checks each distinct metric name once per batch
    rather than once per event. Columns through C-level ``map``/``min``/``max`` and
    ``msgspec.convert`` were measured too: columns were slower (transposing costs what the
    checks save); ``msgspec`` was faster but turns an ``int`` subclass into an ``int`` where
    the reference refuses it, and checking every value's type costs the gain back.

    Runtime complexity: O(n); each distinct string user id is normalised once.
    """
    if type(events) is not list or len(events) > MAX_BATCH_EVENTS:
        return None
    lo, hi, ts_lo, ts_hi, absent, _int, _str, _dict, _type = (
        INT64_MIN, INT64_MAX, MIN_TS, MAX_TS, _ABSENT, int, str, dict, type,
    )
    out: list[UserEvent] = []
    append = out.append
    metrics: set[Any] = set()
    add_metric = metrics.add
    string_users: dict[str, User] = {}
    # KeyError: a required field is missing; TypeError: anything this path did not foresee.
    # Either way the reference decides (returning None is always safe).
    try:
        for event in events:
            if _type(event) is not _dict:
                return None
            metric = event["metric"]
            user = event["user"]
            value = event["value"]
            ts = event["ts"]
            size = len(event)
            if size == 4:  # the minimal add event
                atid, aid, ts1, mode = 0, None, ts, ADD
            else:
                general = True
                if size == 6:  # a live feed's add event, with its activity (any other
                    try:  # six fields take the general way)
                        atid = event["atid"]
                        aid = event["aid"]
                        ts1, mode, general = ts, ADD, False
                    except KeyError:
                        pass
                if general:  # count the fields we know, so an unknown one is noticed
                    get = event.get
                    atid, aid = get("atid", absent), get("aid", absent)
                    ts1, mode_name = get("ts1", absent), get("mode", absent)
                    if size != (4 + (atid is not absent) + (aid is not absent) + (ts1 is not absent)
                                + (mode_name is not absent)):
                        return None
                    if atid is absent:
                        atid = 0
                    if aid is absent:
                        aid = None
                    if ts1 is absent or ts1 is None:
                        ts1 = ts
                    elif _type(ts1) is not _int or not ts_lo <= ts1 <= ts_hi or _type(ts) is not _int or ts1 > ts:
                        return None
                    if mode_name is absent or (_type(mode_name) is _str and mode_name == "add"):
                        mode = ADD
                    elif _type(mode_name) is _str and mode_name == "diff" and aid is not None:
                        mode = DIFF
                    else:
                        return None
            if not (
                _type(value) is _type(ts) is _type(atid) is _int
                and ts_lo <= ts <= ts_hi
                and lo <= value <= hi
                and lo <= atid <= hi
                and (aid is None or (_type(aid) is _int and lo <= aid <= hi))
            ):
                return None
            if _type(user) is not _int or not lo <= user <= hi:
                if _type(user) is not _str:
                    return None
                known = string_users.get(user)
                if known is None:
                    try:
                        known = string_users[user] = normalize_user(user)
                    except InvalidInput:
                        return None
                user = known
            if _type(metric) is not _str:  # per event: a str subclass equals its str in a set
                return None
            add_metric(metric)
            append((user, metric, atid, aid, ts, value, ts1, mode))
    except (KeyError, TypeError):
        return None
    for metric in metrics:  # each distinct name once
        if not 0 < len(metric) <= MAX_NAME_LENGTH or not metric.isprintable():
            try:
                check_name(metric, "metric")
            except InvalidInput:
                return None
    return out


def validate_counter_events_each(events: Any, field: str = "events") -> list[UserEvent]:
    """The reference validator behind :func:`validate_counter_events`: one event at a time,
    in order, raising ``InvalidInput`` for the first bad field with its exact wording.

    Runtime complexity: O(n).
    """
    if not isinstance(events, list):
        raise InvalidInput(f"{field} must be a list of event objects", field)
    if len(events) > MAX_BATCH_EVENTS:
        raise PayloadTooLarge(
            f"{field} holds {len(events)} events; at most {MAX_BATCH_EVENTS} per batch", field
        )
    out: list[UserEvent] = []
    append = out.append
    for i, event in enumerate(events):
        if type(event) is not dict and not isinstance(event, Mapping):  # isinstance on an ABC is slow
            raise InvalidInput(f"{field}[{i}] must be an object, got {quote(event)}", f"{field}[{i}]")
        try:
            metric = event["metric"]
            user = event["user"]
            value = event["value"]
            ts = event["ts"]
        except KeyError as exc:
            name = exc.args[0]
            raise InvalidInput(f"{field}[{i}].{name} is required", f"{field}[{i}].{name}") from None
        if type(metric) is not str or not 0 < len(metric) <= MAX_NAME_LENGTH or not metric.isprintable():
            check_name(metric, f"{field}[{i}].metric")
        if type(user) is not int or not INT64_MIN <= user <= INT64_MAX:
            user = normalize_user(user, f"{field}[{i}].user")
        if type(value) is not int or not INT64_MIN <= value <= INT64_MAX:
            value = check_int(value, f"{field}[{i}].value")
        if type(ts) is not int or not MIN_TS <= ts <= MAX_TS:
            ts = check_ts(ts, f"{field}[{i}].ts")
        if len(event) == 4:  # the common, minimal add event
            append((user, metric, 0, None, ts, value, ts, ADD))
            continue
        # The optional fields, checked inline for the common valid case (a call per field
        # costs more than the check; see bench/bench_ingest.py), with the helpers only for
        # producing the error.
        if not _EVENT_FIELDS.issuperset(event):
            unknown = sorted(str(k) for k in event if k not in _EVENT_FIELDS)
            raise InvalidInput(
                f"{field}[{i}] has unknown fields {quote(unknown)}; allowed: {sorted(_EVENT_FIELDS)}",
                f"{field}[{i}].{unknown[0]}",
            )
        get = event.get
        atid = get("atid", 0)
        if type(atid) is not int or not INT64_MIN <= atid <= INT64_MAX:
            atid = check_int(atid, f"{field}[{i}].atid")
        aid = get("aid")
        if aid is not None and (type(aid) is not int or not INT64_MIN <= aid <= INT64_MAX):
            aid = check_int(aid, f"{field}[{i}].aid")
        ts1 = get("ts1")
        if ts1 is None:
            ts1 = ts
        elif type(ts1) is not int or not MIN_TS <= ts1 <= MAX_TS:
            ts1 = check_ts(ts1, f"{field}[{i}].ts1")
        if ts1 > ts:
            raise InvalidInput(
                f"{field}[{i}].ts1 must be <= ts, got ts1={ts1} ts={ts}", f"{field}[{i}].ts1"
            )
        mode_name = get("mode", "add")
        if mode_name == "add" and type(mode_name) is str:
            mode = ADD
        elif mode_name == "diff" and type(mode_name) is str:
            mode = DIFF
            if aid is None:
                raise InvalidInput(
                    f"{field}[{i}].aid is required when mode is 'diff' (the activity's running "
                    "total is tracked per aid)",
                    f"{field}[{i}].aid",
                )
        else:
            raise InvalidInput(
                f"{field}[{i}].mode must be 'add' or 'diff', got {quote(mode_name)}", f"{field}[{i}].mode"
            )
        append((user, metric, atid, aid, ts, value, ts1, mode))
    return out


def validate_count_events(events: Any, field: str = "counts") -> list[tuple[str, int, int]]:
    """Validate global-counter increments ``{"name", "value", "ts"}`` -> (name, ts, value).

    Names under ``RESERVED_PREFIX`` are refused (:func:`check_writable_name`): the Narrative
    API's clicks and impressions are global counters, moved only by its own events.
    """
    if not isinstance(events, list):
        raise InvalidInput(f"{field} must be a list of objects", field)
    if len(events) > MAX_BATCH_EVENTS:
        raise PayloadTooLarge(f"{field} holds {len(events)} items; at most {MAX_BATCH_EVENTS}", field)
    out = []
    for i, event in enumerate(events):
        if not isinstance(event, Mapping):
            raise InvalidInput(f"{field}[{i}] must be an object, got {quote(event)}", f"{field}[{i}]")
        for name in ("name", "value", "ts"):
            if name not in event:
                raise InvalidInput(f"{field}[{i}].{name} is required", f"{field}[{i}].{name}")
        out.append(
            (
                check_writable_name(event["name"], f"{field}[{i}].name"),
                check_ts(event["ts"], f"{field}[{i}].ts"),
                check_int(event["value"], f"{field}[{i}].value"),
            )
        )
    return out


def check_users(users: Any, field: str = "users") -> list[User]:
    """A non-empty list of user ids."""
    if not isinstance(users, list) or not users:
        raise InvalidInput(f"{field} must be a non-empty list of user ids", field)
    return [normalize_user(u, f"{field}[{i}]") for i, u in enumerate(users)]


def check_names(names: Any, field: str) -> list[str]:
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not names:
        raise InvalidInput(f"{field} must be a non-empty list of names", field)
    return [check_name(n, f"{field}[{i}]") for i, n in enumerate(names)]


def group_by_user(events: Iterable[UserEvent]) -> dict[User, list[tuple[Any, ...]]]:
    """Split a batch into one list per user, keeping each user's events in batch order."""
    groups: dict[User, list[tuple[Any, ...]]] = {}
    for user, metric, atid, aid, ts, value, ts1, mode in events:
        group = groups.get(user)
        if group is None:
            group = groups[user] = []
        group.append((metric, atid, aid, ts, value, ts1, mode))
    return groups
