"""The blocking client: :class:`PointspaceClient`, one method per native API operation.

>>> from client import PointspaceClient, Event
>>> with PointspaceClient("http://127.0.0.1:1155") as ps:          # doctest: +SKIP
...     ps.ingest([Event(metric="steps", user=1, value=120, ts=1496539747)])
...     ps.query([1], "steps", 1496539746, 1496543347).sums()
Applied(applied=1)
{1: {'steps': 120}}

Requests, errors and retries are those of ``client/_transport.py`` (its theory of operation):
reads are retried with backoff when the server is briefly unreachable or overloaded; writes are
sent once unless you pass ``idempotent=True``; any 4xx/5xx raises the
:mod:`client.errors` class for its status, carrying the server's ``message`` and ``field``.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

import httpx

from client import _calls as c
from client import models as m
from client._transport import (
    DEFAULT_RETRY,
    Call,
    Pause,
    RetryPolicy,
    base_headers,
    ndjson_chunks,
    next_step,
)
from client.errors import PointspaceHTTPError, PointspaceTransportError, ServiceUnavailable

__all__ = ["DEFAULT_URL", "PointspaceClient", "USER_AGENT"]

T = TypeVar("T")

#: Where ``pointspace serve`` listens by default.
DEFAULT_URL = "http://127.0.0.1:1155"
USER_AGENT = "pointspace-client/0.1"
#: Bytes per read of a snapshot export (the server sends an entity at a time).
EXPORT_CHUNK_BYTES = 256 * 1024

Token = str | Callable[[], str] | None


def token_header(token: Token) -> dict[str, str]:
    """``Authorization: Bearer ...`` for a token or a token provider (called per request, so
    a provider can refresh an expiring token); nothing without one."""
    if token is None:
        return {}
    value = token() if callable(token) else token
    return {"Authorization": f"Bearer {value}"}


class PointspaceClient:
    """A pointspace server's native API over HTTP (blocking; thread-safe like ``httpx.Client``).

    Args:
        base_url: the server, ``http://127.0.0.1:1155`` by default.
        token: a JWT sent as ``Authorization: Bearer`` (servers started with
            ``--jwt-key-dir``), or a callable returning one, called for every request.
        timeout: seconds, or an ``httpx.Timeout``, for each attempt of a request.
        retry: how reads are retried (``client._transport.RetryPolicy``; ``NO_RETRY`` never).
        batch_format: ``"msgpack"`` (default) or ``"json"`` for event and counter batches.
        transport: an ``httpx`` transport (a Unix socket, a test double); default TCP.

    Methods by family: events (:meth:`ingest`, :meth:`ingest_stream`), reads (:meth:`query`,
    :meth:`breakdown`, :meth:`user_sum`), global counters (:meth:`add_counts`,
    :meth:`counter_sum`, :meth:`counter_breakdown`), leaderboards (:meth:`rank`,
    :meth:`create_leaderboard`, :meth:`leaderboard`, :meth:`list_leaderboards`,
    :meth:`delete_leaderboard`), ranked lists (:meth:`create_list`, :meth:`get_list`, :meth:`lists`, :meth:`delete_list`,
    :meth:`put_elements`, :meth:`put_element`, :meth:`get_element`, :meth:`find_elements`,
    :meth:`get_range`, :meth:`percentile`, :meth:`delete_elements`, :meth:`delete_element`),
    operations (:meth:`take_snapshot`, :meth:`snapshot_status`, :meth:`export_snapshot`,
    :meth:`stats`, :meth:`health`, :meth:`ready`) and :meth:`request` for any other route.
    Writes take ``idempotent=True`` to allow retries (``client._transport`` says when that
    is true).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        token: Token = None,
        timeout: float | httpx.Timeout = 30.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        batch_format: str = "msgpack",
        transport: httpx.BaseTransport | None = None,
        user_agent: str = USER_AGENT,
    ) -> None:
        if batch_format not in ("msgpack", "json"):
            raise ValueError(f"batch_format must be 'msgpack' or 'json', got {batch_format!r}")
        self.base_url = base_url
        self.retry = retry
        self.batch_format = batch_format
        self._token = token
        self._rand = random.random
        self._http = httpx.Client(
            base_url=base_url,
            timeout=timeout,
            transport=transport,
            headers=base_headers(user_agent),
            follow_redirects=False,
        )

    def close(self) -> None:
        """Close the connections (also on leaving a ``with`` block)."""
        self._http.close()

    def __enter__(self) -> PointspaceClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PointspaceClient({self.base_url!r})"

    ########################################################################################
    # Sending

    def _request(self, call: Call[Any], content: Any, timeout: Any) -> httpx.Request:
        headers = token_header(self._token)
        if call.content_type is not None:
            headers["Content-Type"] = call.content_type
        return self._http.build_request(
            call.method,
            call.path,
            params=call.params,
            content=content,
            headers=headers,
            timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
        )

    def _send(
        self, call: Call[Any], *, content: Any = None, stream: bool = False, timeout: Any = None
    ) -> httpx.Response:
        """Send ``call`` (retrying as the policy allows); a 2xx answer, or raise."""
        attempt = 0
        while True:
            attempt += 1
            request = self._request(call, call.content if content is None else content, timeout)
            outcome: httpx.Response | httpx.TransportError
            try:
                outcome = self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                outcome = exc
            else:
                if outcome.status_code >= 400:  # the error's message is in the body
                    try:
                        outcome.read()
                    finally:
                        outcome.close()
            step = next_step(call, self.retry, attempt=attempt, url=str(request.url), outcome=outcome,
                             rand=self._rand)
            if isinstance(step, Pause):
                time.sleep(step.seconds)
            elif isinstance(step, httpx.Response):
                return step
            else:
                raise step

    def _run(self, call: Call[T]) -> T:
        response = self._send(call)
        return call.answer(response.headers.get("Content-Type"), response.content)

    ########################################################################################
    # Events

    def ingest(
        self,
        events: Iterable[m.Event | Mapping[str, Any]],
        *,
        format: str | None = None,
        idempotent: bool = False,
    ) -> m.Applied:
        """Apply a batch of counter events, whole or not at all (``POST /api/events``).

        Sent as msgpack unless ``format="json"`` (or the client's ``batch_format``). At most
        100,000 events per batch (more is a 413, :class:`~client.errors.PayloadTooLarge`);
        :meth:`ingest_stream` takes any number.

        Args:
            events: :class:`~client.models.Event` values or dicts of the same fields.
            idempotent: retry on failure; true only if applying the batch twice equals
                applying it once (every event in ``mode="diff"``).

        Raises:
            InvalidRequest: an event is malformed; ``field`` names it (``body[3].ts``) and
                nothing was applied.
        """
        return self._run(c.ingest(events, fmt=format or self.batch_format, idempotent=idempotent))

    def ingest_stream(
        self,
        events: Iterable[m.Event | Mapping[str, Any]],
        *,
        timeout: float | httpx.Timeout | None = None,
    ) -> m.StreamApplied:
        """Stream events as NDJSON (``POST /api/events/stream``), drawn from ``events`` as the
        body is sent: memory stays bounded for any number (a generator, a file's lines).

        The server applies them in groups as they arrive. A bad line stops the stream with
        :class:`~client.errors.InvalidRequest` whose ``field`` is ``"line N"``; every event
        before line N was applied, none from it on, so resend from line N. Never retried (an
        iterator cannot be replayed).
        """
        call = c.ingest_stream_call(idempotent=False)
        response = self._send(call, content=ndjson_chunks(events), timeout=timeout)
        return call.decode(response.content)

    ########################################################################################
    # Reads

    def query(
        self,
        users: Sequence[m.UserId],
        metrics: str | Sequence[str],
        t1: int,
        t2: int,
        *,
        atid: int | None = None,
        aid: int | None = None,
        offsets: Sequence[int] | None = None,
        with_atids: bool = False,
    ) -> m.RangeResult:
        """Sums per user and metric over the inclusive range [t1, t2] (``POST /api/query``).

        ``atid``/``aid`` filter by activity type or activity; ``offsets`` shifts the range per
        user (one per user); ``with_atids`` also answers which activity types contributed.
        ``result.sums()`` gives ``{user: {metric: sum}}``.
        """
        return self._run(
            c.query(
                users, metrics, t1, t2, atid=atid, aid=aid, offsets=offsets, with_atids=with_atids
            )
        )

    def breakdown(
        self,
        users: Sequence[m.UserId],
        metrics: str | Sequence[str],
        t1: int,
        t2: int,
        *,
        step: str | int = "day",
        tz: str | None = None,
        offset: int | None = None,
        atid: int | None = None,
    ) -> m.BreakdownResult:
        """Per-period sums over [t1, t2] (``POST /api/breakdown``): ``step`` is year, month,
        day, hour, minute, second (in ``tz``, an IANA name, or UTC + ``offset`` seconds) or a
        number of seconds."""
        return self._run(
            c.breakdown(users, metrics, t1, t2, step=step, tz=tz, offset=offset, atid=atid)
        )

    def user_sum(
        self,
        user: m.UserId,
        metric: str,
        t1: int,
        t2: int,
        *,
        atid: int | None = None,
        aid: int | None = None,
    ) -> m.UserSum:
        """One user's sum of one metric over [t1, t2] (``GET /api/users/{user}/sums/{metric}``)."""
        return self._run(c.user_sum(user, metric, t1, t2, atid=atid, aid=aid))

    ########################################################################################
    # Global counters

    def add_counts(
        self,
        counts: Iterable[m.Count | Mapping[str, Any]],
        *,
        format: str | None = None,
        idempotent: bool = False,
    ) -> m.Applied:
        """Add to global counters (``POST /api/counters``), whole or not at all."""
        return self._run(
            c.add_counts(counts, fmt=format or self.batch_format, idempotent=idempotent)
        )

    def counter_sum(self, name: str, t1: int, t2: int) -> m.CounterSum:
        """A global counter's sum over [t1, t2] (``GET /api/counters/{name}``)."""
        return self._run(c.counter_sum(name, t1, t2))

    def counter_breakdown(
        self,
        name: str,
        t1: int,
        t2: int,
        *,
        step: str | int = "day",
        tz: str | None = None,
        offset: int | None = None,
    ) -> m.CounterSeries:
        """A global counter's sums per period (``GET /api/counters/{name}/breakdown``)."""
        return self._run(c.counter_breakdown(name, t1, t2, step=step, tz=tz, offset=offset))

    ########################################################################################
    # Leaderboards

    def rank(
        self,
        metric: str,
        t1: int,
        t2: int,
        *,
        atid: int | None = None,
        users: Sequence[m.UserId] | None = None,
        top: int | None = None,
        user: m.UserId | None = None,
        radius: int | None = None,
    ) -> m.RankResult:
        """Rank users by a metric's sum over any past window (``POST /api/leaderboards/rank``):
        the leaderboard as it stood at ``t2``. ``user`` adds that user's standing with
        ``radius`` neighbours each side (the server's ``range``)."""
        return self._run(
            c.rank(metric, t1, t2, atid=atid, users=users, top=top, user=user, radius=radius)
        )

    def create_leaderboard(
        self,
        board_id: str,
        metric: str,
        window: m.Window | Mapping[str, Any],
        *,
        atid: int | None = None,
        members: Sequence[m.UserId] | None = None,
        idempotent: bool = False,
    ) -> m.Leaderboard:
        """Create a live leaderboard fed by every counter write (``POST /api/leaderboards``).

        ``window``: ``Window(t1=..., t2=...)`` or ``Window(rolling="day", tz="Europe/Oslo")``;
        ``members`` limits it to those users (default: every user writing ``metric``).
        """
        return self._run(
            c.create_leaderboard(
                board_id, metric, window, atid=atid, members=members, idempotent=idempotent
            )
        )

    def leaderboard(
        self,
        board_id: str,
        *,
        top: int | None = None,
        user: m.UserId | None = None,
        radius: int | None = None,
    ) -> m.LeaderboardView:
        """A live board's ``top`` and, with ``user``, that user's standing and neighbours."""
        return self._run(c.leaderboard(board_id, top=top, user=user, radius=radius))

    def list_leaderboards(self) -> m.LeaderboardCatalog:
        """The live leaderboards, sorted by id (``GET /api/leaderboards``; with JWT, those the
        token's ``only_lists`` allows)."""
        return self._run(c.list_leaderboards())

    def delete_leaderboard(self, board_id: str, *, idempotent: bool = False) -> None:
        """Delete a live board (no error when there is none; 404 when the id is a plain list)."""
        self._run(c.delete_leaderboard(board_id, idempotent=idempotent))

    ########################################################################################
    # Ranked lists (RankDB's routes)

    def create_list(
        self,
        list_id: str,
        *,
        set: str,
        metadata: Mapping[str, str] | None = None,
        populate: Iterable[m.NewElement | Mapping[str, Any]] | None = None,
        replace: bool = False,
        split_size: int | None = None,
        merge_size: int | None = None,
        idempotent: bool = False,
    ) -> m.RankList:
        """Create a ranked list (``POST /lists``), optionally with elements; an existing id is
        :class:`~client.errors.Conflict` unless ``replace``."""
        return self._run(
            c.create_list(
                list_id,
                set=set,
                metadata=metadata,
                populate=populate,
                replace=replace,
                split_size=split_size,
                merge_size=merge_size,
                idempotent=idempotent,
            )
        )

    def get_list(self, list_id: str, *, top_bottom: bool = False) -> m.RankList:
        """A list's settings and size; ``top_bottom`` adds its first and last elements."""
        return self._run(c.get_list(list_id, top_bottom=top_bottom))

    def lists(
        self, *, after_id: str | None = None, before_id: str | None = None, limit: int | None = None
    ) -> m.ListsPage:
        """A page of lists sorted by id (``GET /lists``), after ``after_id`` or before
        ``before_id``; ``limit`` 1..1000 (default 25)."""
        return self._run(c.lists(after_id=after_id, before_id=before_id, limit=limit))

    def delete_list(self, list_id: str, *, idempotent: bool = False) -> None:
        """Delete a list (no error when there is none)."""
        self._run(c.delete_list(list_id, idempotent=idempotent))

    def put_elements(
        self,
        list_id: str,
        elements: Iterable[m.NewElement | Mapping[str, Any]],
        *,
        results: bool = False,
        idempotent: bool = False,
    ) -> m.FoundElements:
        """Insert or update elements (``PUT /lists/{id}/elements``); ``results`` answers the
        written elements with their ranks, sorted by rank."""
        return self._run(c.put_elements(list_id, elements, results=results, idempotent=idempotent))

    def put_element(
        self,
        list_id: str,
        element: m.NewElement | Mapping[str, Any],
        *,
        radius: int | None = None,
        idempotent: bool = False,
    ) -> m.ElementView:
        """Insert or update one element; answers its rank, ``radius`` neighbours each side and
        ``previous_rank`` (``None`` when it is new)."""
        return self._run(c.put_element(list_id, element, radius=radius, idempotent=idempotent))

    def get_element(
        self, list_id: str, element_id: int, *, radius: int | None = None
    ) -> m.ElementView:
        """One element's rank (``from_top``, 0 is best) and neighbours."""
        return self._run(c.get_element(list_id, element_id, radius=radius))

    def find_elements(self, list_id: str, element_ids: Iterable[int]) -> m.FoundElements:
        """Many elements by id, sorted by rank; ``not_found`` lists the absent ids."""
        return self._run(c.find_elements(list_id, element_ids))

    def get_range(
        self,
        list_id: str,
        *,
        from_top: int | None = None,
        from_bottom: int | None = None,
        limit: int | None = None,
    ) -> tuple[m.Element, ...]:
        """Elements by rank (``GET /lists/{id}/range``): ``limit`` from rank ``from_top``, or
        walking down from the element whose ``from_bottom`` is given (RankDB's reading)."""
        return self._run(
            c.get_range(list_id, from_top=from_top, from_bottom=from_bottom, limit=limit)
        )

    def percentile(
        self, list_id: str, from_top: float = 50.0, *, radius: int | None = None
    ) -> m.ElementView:
        """The element ``from_top`` percent from the top, with neighbours."""
        return self._run(c.percentile(list_id, from_top, radius=radius))

    def delete_elements(
        self, list_id: str, element_ids: Iterable[int], *, idempotent: bool = False
    ) -> None:
        """Delete elements by id (1..10,000 ids; absent ones are ignored)."""
        self._run(c.delete_elements(list_id, element_ids, idempotent=idempotent))

    def delete_element(self, list_id: str, element_id: int, *, idempotent: bool = False) -> None:
        """Delete one element (no error when it is absent; 404 when the list is)."""
        self._run(c.delete_element(list_id, element_id, idempotent=idempotent))

    ########################################################################################
    # Operations

    def take_snapshot(self, *, idempotent: bool = False) -> m.SnapshotRecord:
        """Write a snapshot now (``POST /api/admin/snapshot``; a 400 for an in-memory server)."""
        return self._run(c.take_snapshot(idempotent=idempotent))

    def snapshot_status(self) -> m.SnapshotStatus:
        """The last snapshot, recovery figures and the log (``GET /api/admin/snapshot``)."""
        return self._run(c.snapshot_status())

    def export_snapshot(
        self,
        dest: str | os.PathLike[str] | IO[bytes],
        *,
        timeout: float | httpx.Timeout | None = None,
    ) -> m.ExportResult:
        """Stream a snapshot of the live state (``GET /api/admin/snapshot/export``) to a file.

        A path is written as ``<path>.part`` and renamed into place when the whole answer
        arrived, so a cut download never leaves a file that looks like a snapshot; a file
        object is written as the bytes arrive. The server streams entity by entity while
        writes go on; ``pointspace snapshot import`` loads the file. Retried only until the
        answer starts.
        """
        call = c.export_call()
        response = self._send(call, stream=True, timeout=timeout)
        try:
            if isinstance(dest, (str, os.PathLike)):
                path = Path(dest)
                part = path.with_name(path.name + ".part")
                try:
                    with open(part, "wb") as out:
                        written = self._copy(response, out, call)
                    os.replace(part, path)
                except BaseException:
                    part.unlink(missing_ok=True)
                    raise
                return m.ExportResult(path=str(path), bytes=written)
            return m.ExportResult(path=None, bytes=self._copy(response, dest, call))
        finally:
            response.close()

    @staticmethod
    def _copy(response: httpx.Response, out: IO[bytes], call: Call[Any]) -> int:
        written = 0
        try:
            for chunk in response.iter_bytes(EXPORT_CHUNK_BYTES):
                out.write(chunk)
                written += len(chunk)
        except httpx.TransportError as exc:
            raise PointspaceTransportError(
                f"{call.method} {response.request.url} was cut after {written} bytes: "
                f"{type(exc).__name__}: {exc}",
                request_sent=True,
                attempts=1,
                method=call.method,
                url=str(response.request.url),
            ) from exc
        return written

    def stats(self) -> m.EngineStatistics:
        """Engine statistics: entities, live actors, mailbox depth, commands and events."""
        return self._run(c.stats())

    def health(self) -> m.Health:
        """Liveness (``GET /healthz``): raises when the server does not answer."""
        return self._run(c.health())

    def ready(self) -> m.Readiness:
        """Readiness (``GET /readyz``): ``.ready`` is false, with ``.error``, while the server
        cannot take writes (shutting down, log broken). Not retried: a probe answers now."""
        call = c.ready()
        try:
            return self._run(call)
        except ServiceUnavailable as exc:
            return _readiness_from(exc)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        idempotent: bool | None = None,
    ) -> Any:
        """Any route (PSD's, or one newer than this client): a JSON body; the decoded JSON
        answer, or the text of a non-JSON one (``None`` when empty); errors raised as everywhere. Retried for GET and HEAD,
        or as ``idempotent`` says."""
        return self._run(c.raw(method, path, json=json, params=params, idempotent=idempotent))


def _readiness_from(exc: PointspaceHTTPError) -> m.Readiness:
    body = exc.body if isinstance(exc.body, dict) else {}
    return m.Readiness(status=str(body.get("status", "not ready")), error=exc.message)
