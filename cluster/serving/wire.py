"""What one node sends another for a partition, and what comes back: the forms of
``cluster/serving/routing.py``'s calls, and how the owner checks and runs them.

A forwarded request is the public route's own body, cut to one partition's share: a list of
event objects for ``events``, a ``/api/query`` or ``/api/breakdown`` body for the reads. The
owner validates it with the same validators as the public route (``web/api/models.py``,
``engine/events.py``), because the forwarding route is reachable by any client that can reach
the node, with the same JWT scopes as the route it stands for (``web/auth.py``).

Answers are plain lists (msgpack between nodes), the same whether the owner was this node or
another, so the merge in ``cluster/serving/routing.py`` has one form to read.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

from engine.counters import DIFF
from engine.engine import Breakdown, Engine, UserResult, check_range
from engine.errors import InvalidInput
from engine.events import User, UserEvent, check_names, check_users, validate_counter_events
from web.api import models as m
from web.openapi import check

__all__ = [
    "breakdown_request", "counts_request", "decode_breakdown", "decode_query", "events_request",
    "query_request", "rank_request", "readcount_request", "run_breakdown", "run_counts", "run_events",
    "run_query", "run_rank", "run_readcount",
]

# ----- events -------------------------------------------------------------------------------


def events_request(share: list[UserEvent]) -> list[dict[str, Any]]:
    """A share of validated events as the event objects ``POST /api/events`` takes."""
    out = []
    for user, metric, atid, aid, ts, value, ts1, mode in share:
        event: dict[str, Any] = {"user": user, "metric": metric, "value": value, "ts": ts, "atid": atid}
        if aid is not None:
            event["aid"] = aid
        if ts1 != ts:
            event["ts1"] = ts1
        if mode == DIFF:
            event["mode"] = "diff"
        out.append(event)
    return out


async def run_events(engine: Engine, body: Any) -> dict[str, int]:
    """Validate and apply a forwarded share (all of it or none)."""
    return {"applied": await engine.ingest_validated(validate_counter_events(body, "body"))}


# ----- query --------------------------------------------------------------------------------


def query_request(
    users: list[User], metrics: Sequence[str], t1: int, t2: int, *, atid: int | None, aid: int | None,
    offsets: list[int] | None, with_atids: bool,
) -> dict[str, Any]:
    """A ``/api/query`` body for one partition's users."""
    body: dict[str, Any] = {"users": users, "metrics": list(metrics), "t1": t1, "t2": t2, "with_atids": with_atids}
    if atid is not None:
        body["atid"] = atid
    if aid is not None:
        body["aid"] = aid
    if offsets is not None:
        body["offsets"] = offsets
    return body


async def run_query(engine: Engine, body: Any) -> list[list[Any]]:
    """Validate and answer a forwarded query: ``[[user, sums, atids], ...]``."""
    query = check(body, m.RangeQuery, "body")
    users = check_users(query.users)
    t1, t2 = check_range(query.t1, query.t2)
    if query.offsets is not None and len(query.offsets) != len(users):
        raise InvalidInput("offsets must be a list with one offset per user", "offsets")
    results = await engine.query(users, check_names(query.metrics, "metrics"), t1, t2, atid=query.atid,
                                 aid=query.aid, offsets=query.offsets, with_atids=query.with_atids)
    return [[user, r.sums, r.atids] for user, r in results.items()]


def decode_query(answer: list[list[Any]]) -> dict[Hashable, UserResult]:
    return {user: UserResult(sums, atids) for user, sums, atids in answer}


# ----- breakdown ----------------------------------------------------------------------------


def breakdown_request(
    users: list[User], metrics: Sequence[str], t1: int, t2: int, step: str | int, *, tz: str | None,
    offset: int, atid: int | None,
) -> dict[str, Any]:
    """A ``/api/breakdown`` body for one partition's users."""
    body: dict[str, Any] = {"users": users, "metrics": list(metrics), "t1": t1, "t2": t2, "step": step,
                            "offset": offset}
    if tz is not None:
        body["tz"] = tz
    if atid is not None:
        body["atid"] = atid
    return body


async def run_breakdown(engine: Engine, body: Any) -> list[list[Any]]:
    """Validate and answer a forwarded breakdown: ``[[user, bounds, series], ...]``."""
    query = check(body, m.BreakdownQuery, "body")
    users = check_users(query.users)
    t1, t2 = check_range(query.t1, query.t2)
    results = await engine.breakdown(users, check_names(query.metrics, "metrics"), t1, t2, query.step,
                                     tz=query.tz, offset=query.offset, atid=query.atid)
    return [[user, r.bounds, r.series] for user, r in results.items()]


def decode_breakdown(answer: list[list[Any]]) -> dict[Hashable, Breakdown]:
    return {user: Breakdown(bounds, series) for user, bounds, series in answer}


# ----- global counters ----------------------------------------------------------------------


def counts_request(share: list[tuple[str, int, int]]) -> list[dict[str, Any]]:
    """Validated counter increments ``(name, ts, value)`` as ``POST /api/counters`` takes them."""
    return [{"name": name, "ts": ts, "value": value} for name, ts, value in share]


async def run_counts(engine: Engine, body: Any) -> dict[str, int]:
    """Validate and apply a forwarded share of counter increments (all or none; names under
    the reserved prefix are refused here as on the public route)."""
    return {"applied": await engine.count(body)}


def readcount_request(names: list[str], t1: int, t2: int, step: str | int | None = None, *,
                      tz: str | None = None, offset: int = 0) -> dict[str, Any]:
    """Sums of counters over [t1, t2]; with ``step``, one counter's breakdown."""
    body: dict[str, Any] = {"names": names, "t1": t1, "t2": t2}
    if step is not None:
        body.update(step=step, offset=offset)
        if tz is not None:
            body["tz"] = tz
    return body


async def run_readcount(engine: Engine, body: Any) -> list[list[Any]] | dict[str, Any]:
    """Validate and answer a forwarded counter read: ``[[name, sum], ...]``, or with ``step``
    one counter's ``{"bounds", "series"}``."""
    if not isinstance(body, dict):
        raise InvalidInput("body must be an object with names, t1, t2", "body")
    names = check_names(body.get("names"), "names")
    args = {k: v for k, v in body.items() if k != "names"}
    if "step" not in args:
        sums = check(args, m.CounterArgs, "body")
        t1, t2 = check_range(sums.t1, sums.t2)
        return [[name, total] for name, total in (await engine.read_counts(names, t1, t2)).items()]
    if len(names) != 1:
        raise InvalidInput("a breakdown reads one counter", "names")
    period = check(args, m.CounterBreakdownArgs, "body")
    t1, t2 = check_range(period.t1, period.t2)
    result = await engine.counter_breakdown(names[0], t1, t2, period.step, tz=period.tz, offset=period.offset)
    return {"bounds": result.bounds, "series": result.series[names[0]]}


# ----- ranking every user -------------------------------------------------------------------


def rank_request(metric: str, t1: int, t2: int, atid: int | None) -> dict[str, Any]:
    """Every user of a partition with ``metric``, and their sums over [t1, t2]."""
    body: dict[str, Any] = {"metric": metric, "t1": t1, "t2": t2}
    if atid is not None:
        body["atid"] = atid
    return body


async def run_rank(engine: Engine, body: Any) -> list[list[Any]]:
    """Validate and answer a forwarded ranking: ``[[user, sum], ...]`` for every user of the
    partition that wrote the metric (the caller ranks the partitions' answers together)."""
    query = check(body, m.RankQuery, "body")
    t1, t2 = check_range(query.t1, query.t2)
    standings = await engine.rank_users(check_names(query.metric, "metric")[0], t1, t2, atid=query.atid)
    return [[s.user, s.score] for s in standings]
