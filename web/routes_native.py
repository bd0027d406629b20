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
from quart import Blueprint, Response, current_app, request

from engine.engine import check_range
from engine.errors import InvalidInput
from engine.events import (
    check_int,
    check_name,
    check_names,
    check_ts,
    check_users,
    normalize_user,
    validate_counter_events,
)
from web.app import engine_of, settings_of
from web.bodies import decode_body, mark_body_read, read_body, respond

native = Blueprint("native", __name__, url_prefix="/api")


async def _body() -> Any:
    data = await read_body(request, settings_of(current_app).max_body_bytes)
    return decode_body(data, request.headers.get("Content-Type"))


def _object(body: Any) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise InvalidInput("request body must be a JSON (or msgpack) object", "body")
    return body


def _optional_int(body: Mapping[str, Any], name: str) -> int | None:
    value = body.get(name)
    return None if value is None else check_int(value, name)


@native.post("/events")
async def ingest_events() -> Response:
    """Apply a batch of counter events: a list, or ``{"events": [...]}``, or NDJSON lines."""
    body = await _body()
    events = body.get("events") if isinstance(body, Mapping) else body
    field = "events" if isinstance(body, Mapping) else "body"
    applied = await engine_of(current_app).ingest_validated(validate_counter_events(events, field))
    return respond({"applied": applied}, request)


@native.post("/events/stream")
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
    pending = b""
    received = 0
    limit = settings.max_stream_bytes
    async for chunk in request.body:
        received += len(chunk)
        if received > limit:
            await stream.fail_at(stream.line_no + 1, f"stream exceeds the limit of {limit} bytes")
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            await stream.feed(line)
    if pending:
        await stream.feed(pending)  # a last line without a newline
    await stream.flush()
    return respond({"applied": stream.applied, "lines": stream.line_no}, request)


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
async def query() -> Response:
    """Sums per user and metric over [t1, t2]: ``{"users", "metrics", "t1", "t2", "atid"?,
    "aid"?, "offsets"?, "with_atids"?}`` -> ``{"results": [{"user", "sums", "atids"?}]}``."""
    body = _object(await _body())
    users = check_users(body.get("users"))
    metrics = check_names(body.get("metrics"), "metrics")
    t1, t2 = check_range(body.get("t1"), body.get("t2"))
    offsets = body.get("offsets")
    if offsets is not None:
        if not isinstance(offsets, list) or len(offsets) != len(users):
            raise InvalidInput("offsets must be a list with one offset per user", "offsets")
        offsets = [check_int(o, f"offsets[{i}]", -(2**31), 2**31) for i, o in enumerate(offsets)]
    with_atids = body.get("with_atids", False)
    if not isinstance(with_atids, bool):
        raise InvalidInput(f"with_atids must be true or false, got {with_atids!r}", "with_atids")
    results = await engine_of(current_app).query(
        users,
        metrics,
        t1,
        t2,
        atid=_optional_int(body, "atid"),
        aid=_optional_int(body, "aid"),
        offsets=offsets,
        with_atids=with_atids,
    )
    out = []
    for user, result in results.items():
        item: dict[str, Any] = {"user": user, "sums": result.sums}
        if with_atids:
            item["atids"] = result.atids
        out.append(item)
    return respond({"t1": t1, "t2": t2, "results": out}, request)


@native.post("/breakdown")
async def breakdown() -> Response:
    """Per-period sums: ``{"users", "metrics", "t1", "t2", "step", "tz"?, "offset"?,
    "atid"?}`` -> ``{"periods": [[first, last], ...], "results": [{"user", "series"}]}``.

    ``step``: year, month, day, hour, minute, second, or a number of seconds. Calendar periods
    follow the wall clock of ``tz`` (IANA name) or of UTC + ``offset`` seconds.
    """
    body = _object(await _body())
    users = check_users(body.get("users"))
    metrics = check_names(body.get("metrics"), "metrics")
    t1, t2 = check_range(body.get("t1"), body.get("t2"))
    step = body.get("step", "day")
    if not isinstance(step, str):
        step = check_int(step, "step", 1, 2**40)
    offset = check_int(body.get("offset", 0), "offset", -(2**31), 2**31)
    tz = body.get("tz")
    if tz is not None and not isinstance(tz, str):
        raise InvalidInput(f"tz must be an IANA time zone name, got {tz!r}", "tz")
    results = await engine_of(current_app).breakdown(
        users, metrics, t1, t2, step, tz=tz, offset=offset, atid=_optional_int(body, "atid")
    )
    periods: list[tuple[int, int]] = []
    out = []
    for user, result in results.items():
        periods = result.periods
        out.append({"user": user, "series": result.series})
    return respond({"step": step, "periods": periods, "results": out}, request)


@native.get("/users/<user>/sums/<metric>")
async def user_sum(user: str, metric: str) -> Response:
    """One user's sum of one metric: ``?t1=&t2=&atid=&aid=``."""
    args = request.args
    user_id = normalize_user(user)
    metric = check_name(metric, "metric")
    t1, t2 = check_range(_arg_int(args, "t1"), _arg_int(args, "t2"))
    atid = _arg_int(args, "atid") if "atid" in args else None
    aid = _arg_int(args, "aid") if "aid" in args else None
    result = await engine_of(current_app).query([user_id], [metric], t1, t2, atid=atid, aid=aid)
    body = {"user": user_id, "metric": metric, "t1": t1, "t2": t2, "sum": result[user_id].sums[metric]}
    return respond(body, request)


@native.post("/counters")
async def add_counts() -> Response:
    """Global counters (PSD ``count``): a list of ``{"name", "value", "ts"}``."""
    body = await _body()
    counts = body.get("counts") if isinstance(body, Mapping) else body
    applied = await engine_of(current_app).count(counts)
    return respond({"applied": applied}, request)


@native.get("/counters/<name>")
async def read_counter(name: str) -> Response:
    """A global counter's sum over [t1, t2]: ``?t1=&t2=``."""
    name = check_name(name, "name")
    t1, t2 = check_range(_arg_int(request.args, "t1"), _arg_int(request.args, "t2"))
    sums = await engine_of(current_app).read_counts([name], t1, t2)
    return respond({"name": name, "t1": t1, "t2": t2, "sum": sums[name]}, request)


@native.get("/stats")
async def stats() -> Response:
    """Engine statistics: entities, live actors, mailbox depth, commands and events applied."""
    return respond(_plain(engine_of(current_app).statistics()), request)


def _arg_int(args: Mapping[str, str], name: str) -> int:
    raw = args.get(name)
    if raw is None:
        raise InvalidInput(f"{name} is required", name)
    try:
        return int(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be an integer, got {raw!r}", name) from None


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


def _bounded_int(args: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    if name not in args:
        return default
    value = _arg_int(args, name)
    if not low <= value <= high:
        raise InvalidInput(f"{name} must be between {low} and {high}, got {value}", name)
    return value


@native.post("/leaderboards")
async def create_leaderboard() -> Response:
    """A live leaderboard fed by every counter write: ``{"id", "metric", "atid"?, "members"?,
    "window": {"t1", "t2"} | {"rolling": "day"|"week"|"month", "tz"?}}``. It is also a ranked
    list, readable through the RankDB element endpoints (``/lists/<id>/...``)."""
    created = await engine_of(current_app).create_board(await _body())
    return respond(created, request, 201)


@native.get("/leaderboards/<board_id>")
async def read_leaderboard(board_id: str) -> Response:
    """Top ``?top=`` (default 10) and, with ``?user=``, that user's rank and ``?range=``
    neighbours."""
    args = request.args
    top = _bounded_int(args, "top", 10, 0, 1000)
    radius = _bounded_int(args, "range", 5, 0, 100)
    user = normalize_user(args["user"]) if "user" in args else None
    board = await engine_of(current_app).board(board_id, top=top, user=user, radius=radius)
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
async def delete_leaderboard(board_id: str) -> Response:
    from engine.lists import check_list_id

    await engine_of(current_app).delete_board(check_list_id(board_id, "id"))
    return Response(b"", status=204)


@native.post("/leaderboards/rank")
async def rank_users() -> Response:
    """Ad-hoc: rank users by a metric's sum over any past window -- the leaderboard as it
    stood at t2. ``{"metric", "t1", "t2", "atid"?, "users"? (default: every user with the
    metric), "top"? (10), "user"?, "range"? (5)}``."""
    body = _object(await _body())
    metric = check_name(body.get("metric"), "metric")
    t1, t2 = check_range(body.get("t1"), body.get("t2"))
    users = check_users(body["users"]) if body.get("users") is not None else None
    top = check_int(body.get("top", 10), "top", 0, 100_000)
    radius = check_int(body.get("range", 5), "range", 0, 1000)
    standings = await engine_of(current_app).rank_users(
        metric, t1, t2, atid=_optional_int(body, "atid"), users=users
    )
    plain = [{"user": s.user, "score": s.score, "rank": s.rank} for s in standings]
    out: dict[str, Any] = {"metric": metric, "t1": t1, "t2": t2, "total": len(plain), "top": plain[:top]}
    if body.get("user") is not None:
        who = normalize_user(body["user"], "user")
        index = next((i for i, s in enumerate(standings) if s.user == who), None)
        out["user"] = None if index is None else {
            **plain[index],
            "above": plain[max(0, index - radius) : index],
            "below": plain[index + 1 : index + 1 + radius],
        }
    return respond(out, request)
