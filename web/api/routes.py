"""The native API under ``/api/``: batch and streaming ingest, range queries, breakdowns.

Bodies are JSON, or msgpack with ``Content-Type: application/msgpack`` (answers follow the
``Accept`` header). Every route validates its whole input before the engine changes anything;
errors are ``{"error": ..., "field": ...}`` with a 4xx status (``web/app.py``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson
from quart import Blueprint, Response, current_app, g, request

from engine.engine import EngineStatistics, check_range
from engine.errors import InvalidInput
from engine.events import (
    UserEvent,
    check_name,
    check_names,
    check_ts,
    check_users,
    normalize_user,
    validate_counter_events,
)
from web.api import models as m
from web.api.event_bodies import decode_counter_events
from web.apis import served_apis
from web.bodies import body_chunks, mark_body_read, respond
from web.context import engine_of, settings_of
from web.openapi import accepts, answers, document_stream, query_args

native = Blueprint("native", __name__, url_prefix="/api")
#: The API family (``web/apis.py``): the native API.
SEED = "pointspace"
SEED_DOC = "pointspace's own API: events, sums, breakdowns, counters, leaderboards, administration."





@native.post("/events")
@accepts(m.EventsBody, ndjson=True, decode=decode_counter_events)
@answers(m.Applied)
async def ingest_events(body: list[UserEvent]) -> Response:
    """Apply a batch of counter events: a list, or ``{"events": [...]}``, or NDJSON lines.

    The batch is applied whole or not at all. The body is decoded straight into validated
    events (``web/api/event_bodies.py``: a fast path, and the reference for every error).
    """
    applied = await engine_of(current_app).ingest_validated(body)
    return respond({"applied": applied}, request)


@native.post("/events/stream")
@document_stream(m.StreamLine)
@answers(m.StreamApplied)
async def ingest_stream() -> Response:
    """NDJSON streaming ingest: one event per line, applied in groups as the body arrives.

    Groups of ``stream_group_events`` lines are validated whole and applied as one command
    each, so memory stays bounded however long the stream. A bad line stops the stream: every
    event line before it has been applied, none from it on, and the 400 answer names the line
    and says how many were applied (resend from that line).
    """
    settings = settings_of(current_app)
    engine = engine_of(current_app)
    mark_body_read()
    stream = _LineGroups(engine, settings.stream_group_events)
    # The unfinished last line, kept apart so each byte is searched for a newline once: a
    # stream without newlines costs O(bytes), not O(bytes^2) (one rescan per chunk).
    pending = bytearray()
    received = 0
    limit = settings.max_stream_bytes
    async for chunk in body_chunks(request, None, stream=True):  # no deadline; the rate
        received += len(chunk)
        if received > limit:
            await stream.fail_at(stream.line_no + 1, f"stream exceeds the limit of {limit} bytes")
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            if pending:
                await _check_line_length(stream, len(pending) + end - start)
                pending += chunk[start:end]
                line, pending = bytes(pending), bytearray()
            else:
                line = chunk[start:end]
            await stream.feed(line)
            start = end + 1
        if start < len(chunk):
            await _check_line_length(stream, len(pending) + len(chunk) - start)
            pending += chunk[start:]
    if pending:
        await stream.feed(bytes(pending))  # a last line without a newline
    await stream.flush()
    return respond({"applied": stream.applied, "lines": stream.line_no}, request)


#: One NDJSON line is one event: a few hundred bytes. A line past 1 MiB is a client that sends
#: no newlines (or the wrong format), and holding it would grow toward ``max_stream_bytes``.
MAX_LINE_BYTES = 1 << 20


async def _check_line_length(stream: _LineGroups, length: int) -> None:
    if length > MAX_LINE_BYTES:
        await stream.fail_at(stream.line_no + 1, f"line {stream.line_no + 1} is longer than "
                             f"{MAX_LINE_BYTES} bytes; send one event per line, each ended by a newline")


class _LineGroups:
    """Collects parsed NDJSON lines into groups and applies each group as one batch."""

    def __init__(self, engine: Any, group_size: int) -> None:
        self.engine = engine
        self.group_size = group_size
        self.events: list[Any] = []
        self.lines: list[int] = []
        self.line_no = 0
        self.applied = 0

    async def feed(self, line: bytes) -> None:
        """Take one line (without its newline); blank lines count but carry no event."""
        self.line_no += 1
        if not line.strip():
            return
        try:
            self.events.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            await self.fail_at(self.line_no, f"line {self.line_no} is not valid JSON: {exc}")
        self.lines.append(self.line_no)
        if len(self.events) >= self.group_size:
            await self.flush()

    async def flush(self, upto: int | None = None) -> None:
        """Apply the collected events (only the first ``upto`` of them, when given)."""
        events = self.events if upto is None else self.events[:upto]
        try:
            validated = validate_counter_events(events, "line")
        except InvalidInput as exc:
            index = int(_INDEX.match(exc.field or "line[0]").group(1))  # type: ignore[union-attr]
            line = self.lines[index]
            await self.flush(index)
            raise InvalidInput(
                f"{exc.message.replace(f'line[{index}]', f'line {line}')}; the {self.applied} "
                f"events before line {line} were applied, none after",
                f"line {line}",
            ) from None
        self.applied += await self.engine.ingest_validated(validated)
        del self.events[: len(events)]
        del self.lines[: len(events)]

    async def fail_at(self, line: int, message: str) -> None:
        await self.flush()
        raise InvalidInput(
            f"{message}; the {self.applied} events before line {line} were applied, none after",
            f"line {line}",
        )


_INDEX = re.compile(r"^line\[(\d+)\]")


@native.post("/query")
@accepts(m.RangeQuery)
@answers(m.RangeResult)
async def query(body: m.RangeQuery) -> Response:
    """Sums per user and metric over [t1, t2].

    ``offsets`` shifts the range per user (one offset per user), for per-user local days;
    ``with_atids`` also answers which activity types contributed (PSD's ``_atids``).
    """
    users = check_users(body.users)
    metrics = check_names(body.metrics, "metrics")
    t1, t2 = check_range(body.t1, body.t2)
    offsets = body.offsets
    if offsets is not None and len(offsets) != len(users):
        raise InvalidInput("offsets must be a list with one offset per user", "offsets")
    with_atids = body.with_atids
    results = await engine_of(current_app).query(
        users, metrics, t1, t2, atid=body.atid, aid=body.aid, offsets=offsets, with_atids=with_atids
    )
    out = []
    for user, result in results.items():
        item: dict[str, Any] = {"user": user, "sums": result.sums}
        if with_atids:
            item["atids"] = result.atids
        out.append(item)
    return respond({"t1": t1, "t2": t2, "results": out}, request)


@native.post("/breakdown")
@accepts(m.BreakdownQuery)
@answers(m.BreakdownResult)
async def breakdown(body: m.BreakdownQuery) -> Response:
    """Per-period sums over [t1, t2]: ``periods`` holds each period's [first, last] second.

    ``step``: year, month, day, hour, minute, second, or a number of seconds. Calendar periods
    follow the wall clock of ``tz`` (IANA name) or of UTC + ``offset`` seconds.
    """
    users = check_users(body.users)
    metrics = check_names(body.metrics, "metrics")
    t1, t2 = check_range(body.t1, body.t2)
    step = body.step
    results = await engine_of(current_app).breakdown(
        users, metrics, t1, t2, step, tz=body.tz, offset=body.offset, atid=body.atid
    )
    periods: list[tuple[int, int]] = []
    out = []
    for user, result in results.items():
        periods = result.periods
        out.append({"user": user, "series": result.series})
    return respond({"step": step, "periods": periods, "results": out}, request)


@native.get("/users/<user>/sums/<metric>")
@query_args(m.SumArgs)
@answers(m.UserSum)
async def user_sum(user: str, metric: str, args: m.SumArgs) -> Response:
    """One user's sum of one metric over [t1, t2]."""
    user_id = normalize_user(user)
    metric = check_name(metric, "metric")
    t1, t2 = check_range(args.t1, args.t2)
    result = await engine_of(current_app).query(
        [user_id], [metric], t1, t2, atid=args.atid, aid=args.aid
    )
    body = {"user": user_id, "metric": metric, "t1": t1, "t2": t2, "sum": result[user_id].sums[metric]}
    return respond(body, request)


@native.post("/counters")
@accepts(m.CountsBody, raw=True, root="counts", batch="counts")
@answers(m.Applied)
async def add_counts(body: Any) -> Response:
    """Add to global counters (PSD ``count``): a list, or ``{"counts": [...]}``."""
    counts = body.get("counts") if isinstance(body, Mapping) else body
    applied = await engine_of(current_app).count(counts)
    return respond({"applied": applied}, request)


@native.get("/counters/<name>")
@query_args(m.CounterArgs)
@answers(m.CounterSum)
async def read_counter(name: str, args: m.CounterArgs) -> Response:
    """A global counter's sum over [t1, t2]."""
    name = check_name(name, "name")
    t1, t2 = check_range(args.t1, args.t2)
    sums = await engine_of(current_app).read_counts([name], t1, t2)
    return respond({"name": name, "t1": t1, "t2": t2, "sum": sums[name]}, request)


@native.get("/counters/<name>/breakdown")
@query_args(m.CounterBreakdownArgs)
@answers(m.CounterSeries)
async def counter_breakdown(name: str, args: m.CounterBreakdownArgs) -> Response:
    """A global counter's sums per period over [t1, t2] (periods as in ``/api/breakdown``)."""
    name = check_name(name, "name")
    t1, t2 = check_range(args.t1, args.t2)
    result = await engine_of(current_app).counter_breakdown(
        name, t1, t2, args.step, tz=args.tz, offset=args.offset
    )
    body = {"name": name, "step": args.step, "periods": result.periods,
            "series": result.series[name]}
    return respond(body, request)


@native.get("/stats")
@answers(EngineStatistics)
async def stats() -> Response:
    """Engine statistics: entities, live actors, mailbox depth, commands and events applied."""
    return respond(_plain(engine_of(current_app).statistics()), request)



def _plain(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return {k: _plain(getattr(value, k)) for k in value.__dataclass_fields__}
    return value


__all__ = ["native", "check_ts"]


############################################################################################
# Leaderboards


def _standing(element: Any) -> dict[str, Any]:
    payload = element.payload or {}
    return {"user": payload.get("user", element.id), "score": element.score,
            "rank": element.from_top, "updated_at": element.updated_at}



@native.post("/leaderboards")
@accepts(m.LeaderboardDefinition, raw=True)
@answers(m.Leaderboard, 201)
async def create_leaderboard(body: Any) -> Response:
    """Create a live leaderboard, fed by every counter write.

    The window is fixed (``{"t1", "t2"}``) or rolling (``{"rolling": "day"|"week"|"month",
    "tz"?}``). A leaderboard is also a ranked list, readable through the RankDB element
    endpoints (``/lists/<id>/...``).
    """
    created = await engine_of(current_app).create_board(body)
    return respond(created, request, 201)


@native.get("/leaderboards")
@answers(m.LeaderboardCatalog)
async def list_leaderboards() -> Response:
    """The live leaderboards: id, metric, activity type, window, members and size.

    With JWT on, a token's `only_lists` claim limits the answer to the boards it names (as
    `/ui/api/boards` does).

    Runtime complexity: O(lists), read from the directory without messages to actors.
    """
    grant = g.get("grant")
    allowed = None if grant is None else grant.only_lists
    boards = [board for board in engine_of(current_app).board_catalog()
              if allowed is None or board["id"] in allowed]
    return respond({"leaderboards": boards}, request)


@native.get("/apis")
@answers(m.ApiCatalog)
async def list_apis() -> Response:
    """The APIs this server speaks (its own, and each seed system's) with their paths.

    Derived from the routes registered (`web/apis.py`): a seed-compatible API appears here
    once its blueprint is registered.
    """
    return respond({"apis": served_apis(current_app)}, request)


@native.get("/leaderboards/<board_id>")
@query_args(m.LeaderboardArgs)
@answers(m.LeaderboardView)
async def read_leaderboard(board_id: str, args: m.LeaderboardArgs) -> Response:
    """A leaderboard's top ``top`` and, with ``user``, that user's rank and neighbours."""
    user = normalize_user(args.user) if args.user is not None else None
    board = await engine_of(current_app).board(
        board_id, top=args.top, user=user, radius=args.range
    )
    body: dict[str, Any] = {k: v for k, v in board.items() if k not in ("top", "user")}
    body["top"] = [_standing(e) for e in board["top"]]
    if user is not None:
        mine = board["user"]
        body["user"] = None if mine is None else {
            **_standing(mine["element"]),
            "above": [_standing(e) for e in mine["above"]],
            "below": [_standing(e) for e in mine["below"]],
        }
    return respond(body, request)


@native.delete("/leaderboards/<board_id>")
@answers(m.NoContent, 204)
async def delete_leaderboard(board_id: str) -> Response:
    """Delete a leaderboard: 204 also when there is none; 404 when the id is a ranked list."""
    from engine.lists import check_list_id

    await engine_of(current_app).delete_board(check_list_id(board_id, "id"))
    response = Response(b"", status=204)
    del response.headers["Content-Type"]  # no body, so no type
    return response


@native.post("/leaderboards/rank")
@accepts(m.RankQuery)
@answers(m.RankResult)
async def rank_users(body: m.RankQuery) -> Response:
    """Rank users by a metric's sum over any past window: the leaderboard as it stood at t2.

    ``users`` defaults to every user with the metric; ``user`` also answers that user's
    standing and ``range`` neighbours on each side.
    """
    metric = check_name(body.metric, "metric")
    t1, t2 = check_range(body.t1, body.t2)
    users = check_users(body.users) if body.users is not None else None
    top, radius = body.top, body.range
    standings = await engine_of(current_app).rank_users(
        metric, t1, t2, atid=body.atid, users=users
    )
    plain = [{"user": s.user, "score": s.score, "rank": s.rank} for s in standings]
    out: dict[str, Any] = {"metric": metric, "t1": t1, "t2": t2, "total": len(plain), "top": plain[:top]}
    if body.user is not None:
        who = normalize_user(body.user, "user")
        index = next((i for i, s in enumerate(standings) if s.user == who), None)
        out["user"] = None if index is None else {
            **plain[index],
            "above": plain[max(0, index - radius) : index],
            "below": plain[index + 1 : index + 1 + radius],
        }
    return respond(out, request)
