"""One function per API operation, building its :class:`~client._transport.Call`.

Both clients send exactly these, so paths, bodies, content types and which calls are safe to
repeat are written once. Streaming calls (NDJSON ingest, snapshot export) are built by the
clients themselves from :func:`ingest_stream_call` and :func:`export_call`, since their bodies
are iterators of the client's own kind.

>>> call = query([1, "alice"], "steps", 10, 20)
>>> call.method, call.path, call.safe, call.content
('POST', '/api/query', True, b'{"users":[1,"alice"],"metrics":"steps","t1":10,"t2":20}')
>>> ingest([{"metric": "m", "user": 1, "value": 1, "ts": 1}], fmt="json").content_type
'application/json'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from client import models as m
from client._transport import (
    JSON,
    NDJSON,
    Call,
    decoder,
    encode_batch,
    encode_json,
    params_of,
    path_segment,
)

#: Users: a list of ids (an int or a str each).
Users = Sequence[m.UserId]
#: One metric name, or a list of them.
Metrics = str | Sequence[str]


def _json_call(method: str, path: str, body: Any, kind: Any, *, safe: bool,
               params: tuple[tuple[str, str], ...] = ()) -> Call[Any]:
    return Call(method=method, path=path, params=params, content=encode_json(body),
                content_type=JSON, safe=safe, decode=decoder(kind))


def _body(**fields: Any) -> dict[str, Any]:
    """A request body without the fields left at ``None`` (the server applies its defaults)."""
    return {k: v for k, v in fields.items() if v is not None}


def _metrics(metrics: Metrics) -> str | list[str]:
    return metrics if isinstance(metrics, str) else list(metrics)


############################################################################################
# Events, queries, counters


def ingest(events: Iterable[m.Event | Mapping[str, Any]], *, fmt: str = "msgpack",
           idempotent: bool = False) -> Call[m.Applied]:
    content, content_type = encode_batch(events, fmt)
    return Call(method="POST", path="/api/events", content=content, content_type=content_type,
                safe=idempotent, decode=decoder(m.Applied))


def ingest_stream_call(*, idempotent: bool) -> Call[m.StreamApplied]:
    """``POST /api/events/stream``; the client supplies the NDJSON body."""
    return Call(method="POST", path="/api/events/stream", content_type=NDJSON, safe=idempotent,
                decode=decoder(m.StreamApplied))


def query(users: Users, metrics: Metrics, t1: int, t2: int, *, atid: int | None = None,
          aid: int | None = None, offsets: Sequence[int] | None = None,
          with_atids: bool = False) -> Call[m.RangeResult]:
    body = _body(users=list(users), metrics=_metrics(metrics), t1=t1, t2=t2, atid=atid, aid=aid,
                 offsets=None if offsets is None else list(offsets),
                 with_atids=with_atids or None)
    return _json_call("POST", "/api/query", body, m.RangeResult, safe=True)


def breakdown(users: Users, metrics: Metrics, t1: int, t2: int, *, step: str | int = "day",
              tz: str | None = None, offset: int | None = None,
              atid: int | None = None) -> Call[m.BreakdownResult]:
    body = _body(users=list(users), metrics=_metrics(metrics), t1=t1, t2=t2, step=step, tz=tz,
                 offset=offset, atid=atid)
    return _json_call("POST", "/api/breakdown", body, m.BreakdownResult, safe=True)


def user_sum(user: m.UserId, metric: str, t1: int, t2: int, *, atid: int | None = None,
             aid: int | None = None) -> Call[m.UserSum]:
    return Call(method="GET",
                path=f"/api/users/{path_segment(user)}/sums/{path_segment(metric)}",
                params=params_of(t1=t1, t2=t2, atid=atid, aid=aid), safe=True,
                decode=decoder(m.UserSum))


def add_counts(counts: Iterable[m.Count | Mapping[str, Any]], *, fmt: str = "msgpack",
               idempotent: bool = False) -> Call[m.Applied]:
    content, content_type = encode_batch(counts, fmt)
    return Call(method="POST", path="/api/counters", content=content, content_type=content_type,
                safe=idempotent, decode=decoder(m.Applied))


def counter_sum(name: str, t1: int, t2: int) -> Call[m.CounterSum]:
    return Call(method="GET", path=f"/api/counters/{path_segment(name)}",
                params=params_of(t1=t1, t2=t2), safe=True, decode=decoder(m.CounterSum))


def counter_breakdown(name: str, t1: int, t2: int, *, step: str | int = "day",
                      tz: str | None = None, offset: int | None = None) -> Call[m.CounterSeries]:
    return Call(method="GET", path=f"/api/counters/{path_segment(name)}/breakdown",
                params=params_of(t1=t1, t2=t2, step=step, tz=tz, offset=offset), safe=True,
                decode=decoder(m.CounterSeries))


############################################################################################
# Leaderboards


def rank(metric: str, t1: int, t2: int, *, atid: int | None = None, users: Users | None = None,
         top: int | None = None, user: m.UserId | None = None,
         radius: int | None = None) -> Call[m.RankResult]:
    body = _body(metric=metric, t1=t1, t2=t2, atid=atid,
                 users=None if users is None else list(users), top=top, user=user, range=radius)
    return _json_call("POST", "/api/leaderboards/rank", body, m.RankResult, safe=True)


def create_leaderboard(board_id: str, metric: str, window: m.Window | Mapping[str, Any], *,
                       atid: int | None = None, members: Users | None = None,
                       idempotent: bool = False) -> Call[m.Leaderboard]:
    body = _body(id=board_id, metric=metric, window=window, atid=atid,
                 members=None if members is None else list(members))
    return _json_call("POST", "/api/leaderboards", body, m.Leaderboard, safe=idempotent)


def leaderboard(board_id: str, *, top: int | None = None, user: m.UserId | None = None,
                radius: int | None = None) -> Call[m.LeaderboardView]:
    return Call(method="GET", path=f"/api/leaderboards/{path_segment(board_id)}",
                params=params_of(top=top, user=user, range=radius), safe=True,
                decode=decoder(m.LeaderboardView))


def list_leaderboards() -> Call[m.LeaderboardCatalog]:
    return Call(method="GET", path="/api/leaderboards", safe=True,
                decode=decoder(m.LeaderboardCatalog))


def delete_leaderboard(board_id: str, *, idempotent: bool = False) -> Call[None]:
    return Call(method="DELETE", path=f"/api/leaderboards/{path_segment(board_id)}",
                safe=idempotent)


############################################################################################
# Ranked lists (RankDB's routes)


def _list_path(list_id: str, *rest: object) -> str:
    return "/".join(["/lists", path_segment(list_id), *(path_segment(r) for r in rest)])


def create_list(list_id: str, *, set: str, metadata: Mapping[str, str] | None = None,
                populate: Iterable[m.NewElement | Mapping[str, Any]] | None = None,
                replace: bool = False, split_size: int | None = None,
                merge_size: int | None = None, idempotent: bool = False) -> Call[m.RankList]:
    body = _body(id=list_id, set=set, metadata=None if metadata is None else dict(metadata),
                 populate=None if populate is None else list(populate), split_size=split_size,
                 merge_size=merge_size)
    return _json_call("POST", "/lists", body, m.RankList, safe=idempotent,
                      params=params_of(replace=replace or None))


def get_list(list_id: str, *, top_bottom: bool = False) -> Call[m.RankList]:
    return Call(method="GET", path=_list_path(list_id),
                params=params_of(top_bottom=top_bottom or None), safe=True,
                decode=decoder(m.RankList))


def lists(*, after_id: str | None = None, before_id: str | None = None,
          limit: int | None = None) -> Call[m.ListsPage]:
    return Call(method="GET", path="/lists",
                params=params_of(after_id=after_id, before_id=before_id, limit=limit), safe=True,
                decode=decoder(m.ListsPage))


def delete_list(list_id: str, *, idempotent: bool = False) -> Call[None]:
    return Call(method="DELETE", path=_list_path(list_id), safe=idempotent)


def put_elements(list_id: str, elements: Iterable[m.NewElement | Mapping[str, Any]], *,
                 results: bool = False, idempotent: bool = False) -> Call[m.FoundElements]:
    return _json_call("PUT", _list_path(list_id, "elements"), list(elements), m.FoundElements,
                      safe=idempotent, params=params_of(results=results or None))


def put_element(list_id: str, element: m.NewElement | Mapping[str, Any], *,
                radius: int | None = None, idempotent: bool = False) -> Call[m.ElementView]:
    element_id = element.id if isinstance(element, m.NewElement) else element.get("id")
    return _json_call("PUT", _list_path(list_id, "elements", element_id), element,
                      m.ElementView, safe=idempotent, params=params_of(range=radius))


def get_element(list_id: str, element_id: int, *,
                radius: int | None = None) -> Call[m.ElementView]:
    return Call(method="GET", path=_list_path(list_id, "elements", element_id),
                params=params_of(range=radius), safe=True, decode=decoder(m.ElementView))


def find_elements(list_id: str, element_ids: Iterable[int]) -> Call[m.FoundElements]:
    return _json_call("POST", _list_path(list_id, "elements", "find"),
                      {"element_ids": list(element_ids)}, m.FoundElements, safe=True)


def get_range(list_id: str, *, from_top: int | None = None, from_bottom: int | None = None,
              limit: int | None = None) -> Call[tuple[m.Element, ...]]:
    return Call(method="GET", path=_list_path(list_id, "range"),
                params=params_of(from_top=from_top, from_bottom=from_bottom, limit=limit),
                safe=True, decode=decoder(tuple[m.Element, ...]))


def percentile(list_id: str, from_top: float = 50.0, *,
               radius: int | None = None) -> Call[m.ElementView]:
    return Call(method="GET", path=_list_path(list_id, "percentile"),
                params=params_of(from_top=from_top, range=radius), safe=True,
                decode=decoder(m.ElementView))


def delete_elements(list_id: str, element_ids: Iterable[int], *,
                    idempotent: bool = False) -> Call[None]:
    params = tuple(("element_ids", str(i)) for i in element_ids)
    return Call(method="DELETE", path=_list_path(list_id, "elements"), params=params,
                safe=idempotent)


def delete_element(list_id: str, element_id: int, *, idempotent: bool = False) -> Call[None]:
    return Call(method="DELETE", path=_list_path(list_id, "elements", element_id),
                safe=idempotent)


############################################################################################
# Admin, statistics, health


def take_snapshot(*, idempotent: bool = False) -> Call[m.SnapshotRecord]:
    return Call(method="POST", path="/api/admin/snapshot", safe=idempotent,
                decode=decoder(m.SnapshotRecord))


def snapshot_status() -> Call[m.SnapshotStatus]:
    return Call(method="GET", path="/api/admin/snapshot", safe=True,
                decode=decoder(m.SnapshotStatus))


def export_call() -> Call[None]:
    """``GET /api/admin/snapshot/export``; the client streams the answer to its destination."""
    return Call(method="GET", path="/api/admin/snapshot/export", safe=True)


def stats() -> Call[m.EngineStatistics]:
    return Call(method="GET", path="/api/stats", safe=True, decode=decoder(m.EngineStatistics))


def health() -> Call[m.Health]:
    return Call(method="GET", path="/healthz", safe=True, decode=decoder(m.Health))


def ready() -> Call[m.Readiness]:
    # Not repeated: a readiness probe reports the state now, 503 included.
    return Call(method="GET", path="/readyz", safe=False, decode=decoder(m.Readiness))


def raw(method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None,
        idempotent: bool | None = None) -> Call[Any]:
    """Any route, for what the typed methods do not cover (PSD's, the newest): a JSON body;
    the answer decoded as JSON when it is JSON, else its text; errors mapped as everywhere;
    safe to repeat for GET/HEAD unless told otherwise."""
    method = method.upper()
    safe = method in ("GET", "HEAD") if idempotent is None else idempotent
    content = None if json is None else encode_json(json)
    return Call(method=method, path=path, params=params_of(**(params or {})), content=content,
                content_type=None if content is None else JSON, safe=safe, untyped=True,
                decode=lambda data: _ANY(data) if data else None)


_ANY = decoder(Any)
