"""The native API's request and response shapes, declared once as msgspec structs.

These declarations do two jobs (``web/openapi.py``): quart-schema turns them into the
OpenAPI 3.1 document at ``/openapi.json``, and :func:`web.openapi.accepts` and
:func:`web.openapi.query_args` validate incoming bodies and query strings against them, so
the documentation cannot drift from what the server enforces.

They describe the *shape* of a request: types, ranges, lengths, required fields. Rules that
tie fields together (``t1 <= t2``, ``ts1 <= ts``, ``mode: diff`` needs ``aid``) stay in the
engine's validators (``engine/events.py``, ``engine/boards.py``), which also guard in-process
embedders that never pass through HTTP. The limits are the engine's (its constants where it
names them). Bodies refuse unknown fields, so a misspelt option is an error rather than
silently ignored; query strings ignore unknown parameters, as web clients expect.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct

from engine.events import (
    FORBIDDEN_IN_NAMES,
    INT64_MAX,
    INT64_MIN,
    MAX_BATCH_EVENTS,
    MAX_NAME_LENGTH,
)
from engine.lists import LIST_ID
from engine.periods import MAX_ZONE_NAME
from engine.timebuckets import MAX_TS, MIN_TS
from snapshots.store import RecoveryReport, SnapshotRecord
from snapshots.wal import WalStatistics

Int64 = Annotated[int, Meta(ge=INT64_MIN, le=INT64_MAX)]
#: Seconds east of UTC (the engine's bound, +-2**31).
Offset = Annotated[int, Meta(ge=-(2**31), le=2**31)]
Timestamp = Annotated[
    int, Meta(ge=MIN_TS, le=MAX_TS, description="Unix seconds, 1970-01-01 .. 9999-12-31")
]
#: No control characters (Cc) or surrogates (Cs) in names and string ids (``engine/events.py``
#: says why). In JSON Schema's (ECMA-262) reading ``$`` is the end of the string; Python's
#: ``re``, which msgspec uses, also lets it match before a final newline, and the engine's
#: ``check_name`` refuses that one.
TEXT_PATTERN = f"^[^{FORBIDDEN_IN_NAMES}]*$"
Name = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=MAX_NAME_LENGTH,
        pattern=TEXT_PATTERN,
        description="a metric or counter name, without control characters",
    ),
]
#: A user id given as a string.
UserText = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=MAX_NAME_LENGTH,
        pattern=TEXT_PATTERN,
        description="a user id as text, without control characters",
    ),
]
UserId = Annotated[
    Int64 | UserText,
    Meta(description='an integer, or a string; "42" and 42 name the same user'),
]
#: Checked against the IANA names by ``engine.periods.load_zone`` (one place for the rule);
#: the document states the length bound and the source of the names.
TimeZone = Annotated[
    str,
    Meta(
        max_length=MAX_ZONE_NAME,
        description="an IANA time zone name, such as Europe/Oslo (the tz database's list)",
        examples=["Europe/Oslo"],
    ),
]
ListId = Annotated[str, Meta(pattern=LIST_ID.pattern, description="2..100 of [a-zA-Z0-9-_.]")]
Users = Annotated[list[UserId], Meta(min_length=1)]
Metrics = Annotated[
    Name | Annotated[list[Name], Meta(min_length=1)],
    Meta(description="one metric name or a non-empty list of them"),
]
Step = Annotated[
    Literal["year", "month", "day", "hour", "minute", "second"]
    | Annotated[int, Meta(ge=1, le=2**40)],
    Meta(description="a calendar period in the time zone, or a number of seconds"),
]


############################################################################################
# Requests


class CounterEvent(Struct, forbid_unknown_fields=True):
    """One counter write: ``value`` added to ``user``'s ``metric`` at second ``ts``."""

    metric: Name
    user: UserId
    value: Int64
    ts: Timestamp
    atid: Int64 = 0
    aid: Int64 | None = None
    #: The activity's start; its value is spread over [ts1, ts] (default: ts).
    ts1: Timestamp | None = None
    #: ``diff``: ``value`` is the activity's running total (needs ``aid``).
    mode: Literal["add", "diff"] = "add"


#: Larger batches are refused whole with a 413 (by the engine's validator, not here).
EventList = Annotated[
    list[CounterEvent], Meta(description=f"at most {MAX_BATCH_EVENTS} events; more is a 413")
]


class EventBatch(Struct, forbid_unknown_fields=True):
    """A batch of counter events, applied whole or not at all."""

    events: EventList


#: ``POST /api/events`` takes a bare list or ``{"events": [...]}``.
EventsBody = EventList | EventBatch

#: ``POST /api/events/stream``: NDJSON, one event per line, applied in groups as they arrive.
StreamLine = Annotated[CounterEvent, Meta(title="StreamLine", description="one event per line")]


class CountEvent(Struct, forbid_unknown_fields=True):
    """A global counter increment (PSD ``count``)."""

    name: Name
    value: Int64
    ts: Timestamp


CountList = Annotated[
    list[CountEvent], Meta(description=f"at most {MAX_BATCH_EVENTS} items; more is a 413")
]


class CountBatch(Struct, forbid_unknown_fields=True):
    counts: CountList


CountsBody = CountList | CountBatch


class RangeQuery(Struct, forbid_unknown_fields=True):
    """Sums per user and metric over the inclusive range [t1, t2]."""

    users: Users
    metrics: Metrics
    t1: Timestamp
    t2: Timestamp
    atid: Int64 | None = None
    aid: Int64 | None = None
    #: Per-user seconds added to t1 and t2 (one per user): local days for each user.
    offsets: list[Offset] | None = None
    with_atids: bool = False


class BreakdownQuery(Struct, forbid_unknown_fields=True):
    """Per-period sums over [t1, t2]."""

    users: Users
    metrics: Metrics
    t1: Timestamp
    t2: Timestamp
    step: Step = "day"
    #: An IANA zone name for calendar periods (``Europe/Paris``).
    tz: TimeZone | None = None
    #: Or a fixed offset from UTC in seconds.
    offset: Offset = 0
    atid: Int64 | None = None


class Window(Struct, forbid_unknown_fields=True):
    """Fixed, ``{"t1", "t2"}``; or rolling, ``{"rolling", "tz"?}``: the current local day, ISO
    week or month in ``tz``, moving on at midnight."""

    t1: Timestamp | None = None
    t2: Timestamp | None = None
    rolling: Literal["day", "week", "month"] | None = None
    tz: TimeZone | None = None


#: One struct with optional fields (msgspec cannot tell two untagged structs apart); the
#: document states the two forms, the engine's ``check_board`` enforces them.
WindowForms = Annotated[
    Window, Meta(extra_json_schema={"anyOf": [{"required": ["t1", "t2"]}, {"required": ["rolling"]}]})
]


class LeaderboardDefinition(Struct, forbid_unknown_fields=True):
    """A live leaderboard: users ranked by their sum of ``metric`` over ``window``."""

    id: ListId
    metric: Name
    window: WindowForms
    atid: Int64 | None = None
    #: Only these users (default: every user who writes the metric).
    members: Users | None = None


class RankQuery(Struct, forbid_unknown_fields=True):
    """Rank users by a metric's sum over any past window: the leaderboard as it stood at t2."""

    metric: Name
    t1: Timestamp
    t2: Timestamp
    atid: Int64 | None = None
    users: Users | None = None
    top: Annotated[int, Meta(ge=0, le=100_000)] = 10
    user: UserId | None = None
    range: Annotated[int, Meta(ge=0, le=1000)] = 5


class SumArgs(Struct):
    t1: Timestamp
    t2: Timestamp
    atid: Int64 | None = None
    aid: Int64 | None = None


class RangeArgs(Struct):
    """An inclusive range of Unix seconds: the query string of every range read."""

    t1: Timestamp
    t2: Timestamp


class PeriodArgs(RangeArgs):
    """A range cut into periods (``engine/periods.py``): calendar units in an IANA zone or at
    a fixed offset, or fixed steps of N seconds. Every breakdown route's query string."""

    step: Step = "day"
    #: An IANA zone name for calendar periods (``Europe/Paris``).
    tz: TimeZone | None = None
    #: Or a fixed offset from UTC in seconds.
    offset: Offset = 0


class CounterArgs(RangeArgs):
    """``GET /api/counters/{name}``."""


class CounterBreakdownArgs(PeriodArgs):
    """``GET /api/counters/{name}/breakdown``."""


#: Longest window a dashboard series may cover (a year): the dashboard shows recent activity;
#: longer ranges are what ``POST /api/breakdown`` is for.
MAX_WINDOW_S = 366 * 86400


class SeriesArgs(Struct):
    """One chart's series: ``counter``, or ``user`` and ``metric`` (with ``atid``), over the
    ``last`` seconds up to ``t2`` (default: now, by the server's clock) in ``step`` periods."""

    counter: Name | None = None
    user: UserText | None = None
    metric: Name | None = None
    atid: Int64 | None = None
    last: Annotated[int, Meta(ge=1, le=MAX_WINDOW_S)] = 120
    step: Annotated[int, Meta(ge=1, le=86400)] = 1
    t2: Timestamp | None = None


class LeaderboardArgs(Struct):
    top: Annotated[int, Meta(ge=0, le=1000)] = 10
    #: Also answer this user's standing and neighbours.
    user: UserText | None = None
    range: Annotated[int, Meta(ge=0, le=100)] = 5


############################################################################################
# Responses

#: A period's [first, last] second. (A list of two rather than a tuple: the tuple's
#: ``prefixItems`` schema trips schemathesis's response checks.)
Period = Annotated[list[int], Meta(min_length=2, max_length=2)]


class Error(Struct):
    """Every 4xx and 5xx answer: what is wrong, and the field at fault when there is one."""

    error: str
    field: str | None = None


class Applied(Struct):
    applied: int


class StreamApplied(Struct):
    applied: int
    lines: int


class UserSums(Struct):
    user: UserId
    sums: dict[str, int]
    atids: list[int] | None = None


class RangeResult(Struct):
    t1: int
    t2: int
    results: list[UserSums]


class UserSeries(Struct):
    user: UserId
    series: dict[str, list[int]]


class BreakdownResult(Struct):
    step: str | int
    periods: list[Period]
    results: list[UserSeries]


class UserSum(Struct):
    user: UserId
    metric: str
    t1: int
    t2: int
    sum: int


class CounterSum(Struct):
    name: str
    t1: int
    t2: int
    sum: int


class CounterSeries(Struct):
    """A global counter's sum per period; ``periods`` holds each period's [first, last]."""

    name: str
    step: str | int
    periods: list[Period]
    series: list[int]


class Series(Struct):
    """A chart's series: ``starts[i]`` is the first second of the period summed in
    ``values[i]``; the last period is the one in progress."""

    kind: Literal["counter", "user"]
    t1: int
    t2: int
    step: int
    now: int
    starts: list[int]
    values: list[int]
    total: int
    counter: str | None = None
    user: UserId | None = None
    metric: str | None = None
    atid: int | None = None


class BoardEntry(Struct):
    id: str
    metric: str | None


class BoardList(Struct):
    """The live leaderboards (those a token's ``only_lists`` allows)."""

    boards: list[BoardEntry]


class WindowInfo(Struct):
    kind: str | None
    tz: str | None
    t1: int
    t2: int


class Leaderboard(Struct):
    id: str
    metric: str
    atid: int | None
    members: list[UserId] | None
    window: WindowInfo


class Standing(Struct):
    user: UserId
    score: int
    rank: int
    updated_at: int | None = None


class UserStanding(Struct):
    user: UserId
    score: int
    rank: int
    above: list[Standing]
    below: list[Standing]
    updated_at: int | None = None


class LeaderboardView(Struct):
    id: str
    metric: str
    atid: int | None
    members: list[UserId] | None
    window: WindowInfo
    size: int
    top: list[Standing]
    user: UserStanding | None = None


class RankResult(Struct):
    metric: str
    t1: int
    t2: int
    total: int
    top: list[Standing]
    user: UserStanding | None = None


class NoContent(Struct):
    """Done; the answer has no body."""


class SnapshotStatus(Struct):
    """The last snapshot, how the server recovered at start, and the log (null in memory).

    Its parts, like ``/api/stats`` and ``POST /api/admin/snapshot``, are the engine's and the
    store's own dataclasses, which msgspec describes as well as structs: the document is
    built from the records themselves and cannot drift from them.
    """

    data_dir: str | None
    last: SnapshotRecord | None
    recovery: RecoveryReport | None
    log: WalStatistics | None = None


class SnapshotStream(Struct):
    """A snapshot file (``.pssnap``: zstd-compressed msgpack, see ``snapshots/FORMAT.md``)."""

    # Documented as application/octet-stream by web/openapi.py, not as this struct.


############################################################################################
# Discovery (GET /api/leaderboards, GET /api/apis; issue 16)


class LeaderboardSummary(Struct):
    id: str
    metric: str
    atid: int | None
    window: WindowInfo
    #: How many members a member-set board ranks; ``null``: every user who writes the metric.
    members: int | None
    #: Users ranked now.
    size: int


class LeaderboardCatalog(Struct):
    """The live leaderboards, sorted by id (those a token's ``only_lists`` allows)."""

    leaderboards: list[LeaderboardSummary]


class ApiPath(Struct):
    path: str
    methods: list[str]


class ApiFamily(Struct):
    name: str
    doc: str
    paths: list[ApiPath]


class ApiCatalog(Struct):
    """The APIs this server speaks, each with its paths: the native one first."""

    apis: list[ApiFamily]
