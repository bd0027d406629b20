"""Dimensional stats in the native API: ``/api/dims`` (engine: ``engine/stats.py``).

* ``GET /api/dims`` -- every dimension and its values;
* ``GET /api/dims/{dim}?union=`` -- statshub's figures per value and the total (``union``:
  member totals as the true distinct count, not statshub's sum of counts);
* ``GET /api/dims/{dim}/stats/{stat}?kind=&t1=&t2=&step=&tz=&value=`` -- the roll-up per
  period for one value or every value, and their total: what statshub needed BigQuery for.

Updates come in through statshub's own ``POST /stats/<id>`` (``web/compat/statshub.py``).
The routes are added to the native blueprint, so they share its ``/api`` prefix and its
OpenAPI document.
"""

from __future__ import annotations

from typing import Any

from quart import Response, current_app, request

from engine.engine import check_range
from engine.events import check_name
from engine.stats import stat_name
from web.api import stats_models as sm
from web.api.routes import native
from web.bodies import respond
from web.context import engine_of
from web.openapi import answers, query_args


@native.get("/dims")
@answers(sm.DimensionsList)
async def list_dimensions() -> Response:
    """Every dimension name with its known values (lower-cased, as stored), sorted."""
    return respond({"dims": engine_of(current_app).stat_dimensions()}, request)


@native.get("/dims/<dim>")
@query_args(sm.FiguresArgs)
@answers(sm.DimensionFigures)
async def dimension_figures(dim: str, args: sm.FiguresArgs) -> Response:
    """statshub's figures of every value of ``dim`` now: counters, the last complete gauge
    period (``gauges``, with member counts), the period in progress (``gaugesCurrent``),
    and the total across values."""
    dim = check_name(dim, "dim").lower()
    answer = (await engine_of(current_app).stats_query([dim], union=args.union))[dim]
    total = answer.pop("total")
    return respond({"dimension": dim, "values": answer, "total": total}, request)


@native.get("/dims/<dim>/stats/<stat>")
@query_args(sm.HistoryArgs)
@answers(sm.StatHistory)
async def stat_history(dim: str, stat: str, args: sm.HistoryArgs) -> Response:
    """The roll-up of ``stat`` per period of [t1, t2] (a calendar ``step`` in ``tz`` or at
    UTC + ``offset``, or a number of seconds) for ``value`` or every value of ``dim``, and
    their total. A gauge per gauge period (``step`` = the period, 360 s by default) is
    exactly statshub's ``gauges``."""
    dim = check_name(dim, "dim").lower()
    stat = stat_name(check_name(stat, "stat"))
    t1, t2 = check_range(args.t1, args.t2)
    values = None if args.value is None else [args.value.lower()]
    bounds, series, total = await engine_of(current_app).stats_history(
        dim, stat, args.kind, t1, t2, args.step, tz=args.tz, offset=args.offset, values=values,
        union=args.union,
    )
    body: dict[str, Any] = {
        "dimension": dim, "stat": stat, "kind": args.kind, "step": args.step,
        "periods": [[bounds[i], bounds[i + 1] - 1] for i in range(len(bounds) - 1)],
        "values": series, "total": total,
    }
    return respond(body, request)


#: The routes this module adds to ``native`` (``web/app.py`` imports this module first).
STATS_ROUTES = (list_dimensions, dimension_figures, stat_history)

__all__ = ["STATS_ROUTES", "dimension_figures", "list_dimensions", "stat_history"]
