"""The live dashboard at ``/ui``: a static page that polls the server and draws live charts.

Theory of operation
-------------------
``GET /ui`` serves ``web/ui/index.html``; the page (``web/ui/app.js``) reads what to show from
its URL query (``?board=b1&counter=c&user=42&metric=m&unique=visitors&space=lobby&window=120``;
``board``, ``counter``, ``unique`` and ``space`` repeat, a panel each) or its form, then polls once a second and updates in place, never reloading: live leaderboards through
the native ``GET /api/leaderboards/<id>``, and time series through ``GET /ui/api/series``: a
counter's or a user's metric over the last N seconds by the *server's* clock, in periods aligned
to the step, capped at ``MAX_POINTS`` -- one shape for every chart, whatever the browser's clock
says; unique-set series through ``GET /ui/api/uniques`` (distinct members per period, in
whole minutes); Density spaces through ``GET /ui/api/occupancy`` (the count at each period's
end, and the peak and lowest count within it, over the same window). The space and board
pickers read the native ``GET /api/spaces`` and ``GET /ui/api/boards``. ``/`` is not ours:
RankDB clients use ``GET /`` as their ping.

Static files are read once (they are small: ~60 KB with uPlot), so a request is a dict lookup
and never touches the file system -- which also means no path from a URL can reach a file
outside ``web/ui``. Caching: the page itself is ``no-cache`` with an ETag (a reload revalidates
and sees a new deploy at once), and it links every asset as ``/ui/static/<name>?v=<hash of the
content>``; a request carrying the current hash is answered ``immutable`` for a year, anything
else is ``no-cache`` with an ETag. The page gets a Content-Security-Policy that allows only this
server (``'self'``), so the browser itself refuses any CDN or other outside URL.

Authorization: ``web/auth.py`` leaves the page and ``/ui/static/`` open, so that they load
without a token; the data routes under ``/ui/api/`` need ``api:read`` like every native read,
and ``/ui/api/boards`` lists only the boards a token's ``only_lists`` claim allows. The page
keeps a token in ``sessionStorage`` and sends it as ``Authorization: Bearer`` on every call.

The data routes are part of the native API document (``web/openapi.py``): their query strings
are checked against ``web/api/models.SeriesArgs``, ``web/api/unique_models.UniqueChartArgs``
and ``web/ui/models.OccupancyChartArgs``.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from quart import Blueprint, Response, current_app, g, request

from engine.boards import BOARD_SET
from engine.density import check_ident
from engine.errors import InvalidInput, NotFound, quote
from engine.events import check_name, normalize_user
from web.api import models as m
from web.api import unique_models as um
from web.api.density import unknown_space
from web.bodies import respond
from web.context import engine_of
from web.openapi import answers, query_args
from web.ui import models as ui_models

__all__ = [
    "MAX_POINTS",
    "UI_DIR",
    "Asset",
    "load_assets",
    "occupancy_chart",
    "series_window",
    "ui",
    "unique_chart",
]

ui = Blueprint("ui", __name__)

UI_DIR = Path(__file__).resolve().parent

#: Most periods one series answer may hold. A chart is at most a couple of thousand pixels wide,
#: so more points than that cannot be seen; the cap also bounds the work of one poll (one
#: ``before()`` per point in the counter's actor). Precedent: Grafana's default ``maxDataPoints``
#: is the panel's width in pixels.
MAX_POINTS = 2000


#: A file suffix -> its Content-Type. Files of other kinds in web/ui are not served.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".LICENSE": "text/plain; charset=utf-8",
}

#: Only this server: no CDN, no inline script. uPlot sets element styles through the CSSOM,
#: which ``style-src 'self'`` allows; ``data:`` images are the browser's own favicon fallback.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)

#: Cache-Control of an asset requested with its current content hash: it can never change.
IMMUTABLE = "public, max-age=31536000, immutable"


############################################################################################
# Static files
############################################################################################


@dataclass(frozen=True, slots=True)
class Asset:
    """One file of the page, held in memory with what its responses need."""

    body: bytes
    content_type: str
    #: The first 16 hex digits of the body's sha256: the ETag and the ``?v=`` of its URL.
    version: str


def load_assets(directory: Path) -> dict[str, Asset]:
    """Every servable file under ``directory``, by its ``/``-separated relative name.

    ``index.html`` is rendered here: each ``{{asset:NAME}}`` in it becomes the versioned URL
    of that asset, so the page and its files always match.

    Raises:
        FileNotFoundError: the page links an asset that is not there (a packaging mistake
            that should stop the first request loudly, not send a broken page).
    """
    assets: dict[str, Asset] = {}
    for path in sorted(directory.rglob("*")):
        suffix = ".LICENSE" if path.name.endswith(".LICENSE") else path.suffix
        if path.is_file() and suffix in CONTENT_TYPES and path.name != "index.html":
            body = path.read_bytes()
            name = path.relative_to(directory).as_posix()
            assets[name] = Asset(body, CONTENT_TYPES[suffix], _version(body))
    page = (directory / "index.html").read_text(encoding="utf-8")
    for name, asset in assets.items():
        page = page.replace("{{asset:" + name + "}}", f"/ui/static/{name}?v={asset.version}")
    if "{{asset:" in page:
        missing = page.split("{{asset:", 1)[1].split("}}", 1)[0]
        raise FileNotFoundError(f"web/ui/index.html links {missing!r}, which is not in {directory}")
    body = page.encode()
    assets["index.html"] = Asset(body, CONTENT_TYPES[".html"], _version(body))
    return assets


def _version(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:16]


@cache
def _assets() -> dict[str, Asset]:
    return load_assets(UI_DIR)


def _serve(asset: Asset, cache_control: str) -> Response:
    etag = f'"{asset.version}"'
    headers = {
        "Cache-Control": cache_control,
        "ETag": etag,
        "X-Content-Type-Options": "nosniff",
    }
    if etag in _etags(request.headers.get("If-None-Match", "")):
        return Response(b"", status=304, headers=headers)
    return Response(asset.body, status=200, content_type=asset.content_type, headers=headers)


def _etags(header: str) -> set[str]:
    # A weak validator (W/"...") matches for GET (RFC 9110 13.1.2): compare the opaque tags.
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}


@ui.get("/ui")
@ui.get("/ui/")
async def page() -> Response:
    """The dashboard page. ``no-cache``: it names the current asset versions."""
    response = _serve(_assets()["index.html"], "no-cache")
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@ui.get("/ui/static/<path:name>")
async def static_file(name: str) -> Response:
    """A file of the page: immutable under its current ``?v=``, revalidated otherwise."""
    asset = _assets().get(name) if name != "index.html" else None
    if asset is None:
        raise NotFound(f"no dashboard file {quote(name)}", "name")
    current = request.args.get("v") == asset.version
    return _serve(asset, IMMUTABLE if current else "no-cache")


############################################################################################
# Data for the page
############################################################################################


@ui.get("/ui/api/boards")
@answers(m.BoardList)
async def boards() -> Response:
    """The live leaderboards, for the page's picker: ``{"boards": [{"id", "metric"}]}``.

    Runtime complexity: O(lists), read from the directory without messages to actors.
    """
    grant = g.get("grant")
    allowed = None if grant is None else grant.only_lists
    out = [
        {"id": list_id, "metric": settings.metadata.get("leaderboard")}
        for list_id, settings in engine_of(current_app).list_catalog()
        if settings.set == BOARD_SET and (allowed is None or list_id in allowed)
    ]
    return respond({"boards": out}, request)


@ui.get("/ui/api/series")
@query_args(m.SeriesArgs)
@answers(m.Series)
async def series(args: m.SeriesArgs) -> Response:
    """One time series for a chart: a global counter's, or one user's metric's, per period.

    Query: ``counter=NAME``, or ``user=ID&metric=NAME`` (optional ``atid=``); the window is the
    ``last=`` seconds (default 120) ending at ``t2=`` (default: now, by the server's clock, so
    the page never depends on the browser's), in periods of ``step=`` seconds (default 1)
    aligned to multiples of the step; the last period is the one in progress.

    Answers ``{"kind", "counter" | "user" and "metric", "t1", "t2", "step", "now", "starts",
    "values", "total"}`` where ``starts[i]`` is the first second of the period summed in
    ``values[i]``.

    Runtime complexity: one message to the entity's actor, O(points) lookups there.
    """
    now = int(time.time())
    t1, t2, step = series_window(args, now)
    engine = engine_of(current_app)
    counter = args.counter
    has_user = args.user is not None or args.metric is not None
    if counter is not None and has_user:
        raise InvalidInput("give either counter=, or user= and metric=, not both", "counter")
    body: dict[str, Any]
    if counter is not None:
        name = check_name(counter, "counter")
        result = await engine.counter_breakdown(name, t1, t2, step)
        bounds, values = result.bounds, result.series[name]
        body = {"kind": "counter", "counter": name}
    elif has_user:
        user = normalize_user(args.user, "user")
        metric = check_name(args.metric, "metric")
        atid = args.atid
        breakdown = (await engine.breakdown([user], [metric], t1, t2, step, atid=atid))[user]
        bounds, values = breakdown.bounds, breakdown.series[metric]
        body = {"kind": "user", "user": user, "metric": metric}
        if atid is not None:
            body["atid"] = atid
    else:
        raise InvalidInput("give counter=NAME, or user=ID and metric=NAME", "counter")
    body.update(t1=t1, t2=t2, step=step, now=now, starts=bounds[:-1], values=values,
                total=sum(values))
    return respond(body, request)


@ui.get("/ui/api/uniques")
@query_args(um.UniqueChartArgs)
@answers(um.UniqueChart)
async def unique_chart(args: um.UniqueChartArgs) -> Response:
    """A unique series for a chart: distinct members per period, and over the whole window.

    The step is rounded up to whole minutes (a unique series keeps no seconds, so a finer
    period could only be answered rounded); the window is aligned to it as for
    ``/ui/api/series``. ``total`` is the union over the window, not the sum of the periods
    (a member seen in two periods counts once).

    Runtime complexity: two messages to the series' actor; a bucket union per period.
    """
    now = int(time.time())
    name = check_name(args.name, "name")
    step = -(-args.step // 60) * 60
    t1, t2, step = series_window(m.SeriesArgs(last=args.last, step=step, t2=args.t2), now)
    engine = engine_of(current_app)
    bounds, counts = await engine.unique_breakdown(name, t1, t2, step)
    total = await engine.unique_count(name, t1, t2)
    body = {
        "kind": "unique", "name": name, "t1": t1, "t2": t2, "step": step, "now": now,
        "starts": bounds[:-1], "values": [c.count for c in counts], "total": total.count,
        "exact": total.exact and all(c.exact for c in counts),
    }
    return respond(body, request)


@ui.get("/ui/api/occupancy")
@query_args(ui_models.OccupancyChartArgs)
@answers(ui_models.OccupancyChart)
async def occupancy_chart(args: ui_models.OccupancyChartArgs) -> Response:
    """A Density space's occupancy for a chart: per period, the count at its end and the
    peak and lowest count at any instant in it (exact, from the crossings).

    The window is ``/ui/api/series``'s: the ``last=`` seconds up to ``t2=`` (default: now,
    by the server's clock), in ``step=`` periods aligned to multiples of the step, at most
    ``MAX_POINTS``; the last period is the one in progress, so ``count`` (its ``end``) is
    the count now, and ``start`` is the count just before ``t1`` (where the chart's line
    begins). (``GET /api/spaces/{space}/occupancy`` answers any range, in calendar
    periods of a time zone too; this route is shaped for a chart that polls.)

    Runtime complexity: one message to the space's actor (``SpaceState.occupancy``).
    """
    now = int(time.time())
    space = check_ident(args.space, "space")
    t1, t2, step = series_window(m.SeriesArgs(last=args.last, step=args.step, t2=args.t2), now)
    # One period more, before the window: its end is the count as the window starts, so the
    # chart's line has a first point, read in the same actor turn as the rest.
    before = t1 >= step
    found = await engine_of(current_app).occupancy(space, t1 - step if before else t1, t2, step)
    if found is None:
        raise unknown_space(space)
    breakdown, occupancy = found
    skip = 1 if before else 0
    end, peak, low = occupancy.end[skip:], occupancy.peak[skip:], occupancy.low[skip:]
    body = {
        "kind": "occupancy", "space": space, "t1": t1, "t2": t2, "step": step, "now": now,
        "start": occupancy.end[0] if before else 0, "starts": breakdown.bounds[skip:-1],
        "end": end, "peak": peak, "low": low, "count": end[-1], "highest": max(peak),
        "lowest": min(low),
    }
    return respond(body, request)


def series_window(args: m.SeriesArgs, now: int) -> tuple[int, int, int]:
    """``(t1, t2, step)`` from ``last``, ``t2`` and ``step``, with t1 aligned to the step.

    >>> series_window(m.SeriesArgs(last=60, t2=1000, step=10), now=5000)
    (940, 1000, 10)
    >>> series_window(m.SeriesArgs(), now=5000)
    (4881, 5000, 1)

    Raises:
        InvalidInput: more than ``MAX_POINTS`` periods (naming ``step``, the one to make
            coarser).
    """
    t2 = now if args.t2 is None else args.t2
    last, step = args.last, args.step
    start = max(0, t2 - last + 1)
    t1 = start - start % step
    points = (t2 - t1) // step + 1
    if points > MAX_POINTS:
        raise InvalidInput(
            f"a series may have at most {MAX_POINTS} points; last={last} with step={step} gives "
            f"{points} -- use a larger step or a shorter window",
            "step",
        )
    return t1, t2, step
