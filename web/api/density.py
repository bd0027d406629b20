"""Density's native routes under ``/api/``: sensors and their placements, spaces, doorways,
exact counts at any instant and occupancy over time (``engine/density.py`` says how).

``PUT /api/sensors/{dpu}/placement`` places (or moves, or corrects) a sensor;
``GET /api/sensors/{dpu}`` lists its placements oldest first. ``GET /api/spaces/{space}/count``
answers the count at any instant, ``GET /api/spaces/{space}/occupancy`` the count at the end
of each period and the peak and lowest within it (the dashboard's per-space chart reads this).
The seed's own routes (``/send``, ``/count``) are in ``web/compat/density.py``.
"""

from __future__ import annotations

import time

from quart import Blueprint, Response, current_app, request

from engine.density import check_ident, iso_ms, parse_instant
from engine.engine import check_range
from engine.errors import NotFound, quote
from web.api import density_models as dm
from web.bodies import respond
from web.context import engine_of
from web.openapi import accepts, answers, query_args

#: Part of the native API (``web/apis.py``), in a blueprint of its own.
SEED = "pointspace"

density = Blueprint("density", __name__, url_prefix="/api")

def unknown_space(space: str) -> NotFound:
    """The 404 for a space nobody named, the same on every route that reads one (the native
    API here, the dashboard's ``/ui/api/occupancy``)."""
    return NotFound(
        f"no space {quote(space)}; a space comes into being when a sensor's placement names "
        "it (PUT /api/sensors/{dpu}/placement); GET /api/spaces lists them",
        "space",
    )


@density.put("/sensors/<dpu>/placement")
@accepts(dm.PlacementBody, raw=True)
@answers(dm.SensorView)
async def put_placement(dpu: str, body: object) -> Response:
    """Place sensor ``dpu`` at a doorway from ``installed`` on.

    Each crossing counts ``sign x direction`` for every space of the placement valid at its
    own time. A later ``installed`` moves the sensor (history stays); an earlier one corrects
    history: the events since then are re-counted from the raw events, and each space sees
    the correction in one step.

    From the seed's ``dpu_location`` table: one placement per sensor at its doorway, each
    space with the sum of its rows' signs, spaces whose signs cancel left out. The seed's
    283 (A, X, +1) is ``{"doorway": "X", "spaces": {"A": 1}}``; its 423 with both +1 and
    -1 for A counted nothing for A: ``{"doorway": "Z", "spaces": {}}``.
    """
    dpu = check_ident(dpu, "dpu")
    return respond(await engine_of(current_app).place_sensor(dpu, body), request)


@density.get("/sensors/<dpu>")
@answers(dm.SensorView)
async def get_sensor(dpu: str) -> Response:
    """A sensor's placements (oldest first), current placement and event statistics."""
    dpu = check_ident(dpu, "dpu")
    sensor = await engine_of(current_app).sensor(dpu)
    if sensor is None:
        raise NotFound(
            f"no sensor {quote(dpu)}; it appears with its first event or placement", "dpu"
        )
    return respond(sensor, request)


@density.get("/sensors")
@answers(dm.SensorList)
async def list_sensors() -> Response:
    """Every sensor with its current placement."""
    return respond({"sensors": engine_of(current_app).density_sensors()}, request)


@density.get("/doorways")
@answers(dm.DoorwayList)
async def list_doorways() -> Response:
    """Every doorway a sensor was placed at, with the sensors there now."""
    return respond({"doorways": engine_of(current_app).density_doorways()}, request)


@density.get("/spaces")
@answers(dm.SpaceList)
async def list_spaces() -> Response:
    """Every space a placement named (or that has options)."""
    return respond({"spaces": engine_of(current_app).density_spaces()}, request)


@density.put("/spaces/<space>")
@accepts(dm.SpaceOptionsBody, raw=True)
@answers(dm.SpaceView)
async def put_space(space: str, body: object) -> Response:
    """Set a space's options: ``nightly_reset`` returns its count to 0 at every local
    midnight in ``tz`` (people counters do this against drift); off by default."""
    space = check_ident(space, "space")
    return respond(await engine_of(current_app).set_space_options(space, body), request)


@density.get("/spaces/<space>")
@answers(dm.SpaceView)
async def get_space(space: str) -> Response:
    """A space's count now, its options and the sensors that counted for it."""
    space = check_ident(space, "space")
    view = await engine_of(current_app).space(space)
    if view is None:
        raise unknown_space(space)
    return respond(view, request)


@density.get("/spaces/<space>/count")
@query_args(dm.CountArgs)
@answers(dm.SpaceCount)
async def get_count(space: str, args: dm.CountArgs) -> Response:
    """The exact count at instant ``at`` (default now): every crossing at or before it.

    ``at`` is ISO-8601, or Unix seconds as 10 digits with an optional fraction; other digit
    strings are refused as ambiguous (``engine.density.parse_instant``, also ``/count``'s)."""
    space = check_ident(space, "space")
    at = int(time.time() * 1000) if args.at is None else parse_instant(args.at, "at")
    count = await engine_of(current_app).space_count(space, at)
    if count is None:
        raise unknown_space(space)
    return respond({"space": space, "at": iso_ms(at), "at_ms": at, "count": count}, request)


@density.get("/spaces/<space>/occupancy")
@query_args(dm.OccupancyArgs)
@answers(dm.OccupancyResult)
async def get_occupancy(space: str, args: dm.OccupancyArgs) -> Response:
    """Occupancy over [t1, t2] per period: the count at each period's end, and the peak and
    lowest count at any instant in it (exact: from the crossings, not sampled).

    ``step``: year, month, day, hour, minute, second, or a number of seconds; calendar
    periods follow the wall clock of ``tz`` (IANA name) or of UTC + ``offset`` seconds.
    """
    space = check_ident(space, "space")
    t1, t2 = check_range(args.t1, args.t2)
    found = await engine_of(current_app).occupancy(
        space, t1, t2, args.step, tz=args.tz, offset=args.offset
    )
    if found is None:
        raise unknown_space(space)
    breakdown, occupancy = found
    return respond(
        {
            "space": space,
            "step": args.step,
            "periods": breakdown.periods,
            "end": occupancy.end,
            "peak": occupancy.peak,
            "low": occupancy.low,
        },
        request,
    )
