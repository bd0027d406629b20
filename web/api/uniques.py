"""Unique counts in the native API: ``/api/uniques`` (engine: ``engine/uniques.py``).

* ``POST /api/uniques`` -- a batch of ``{name, member, ts}`` (JSON, msgpack or NDJSON),
  validated whole;
* ``GET /api/uniques/{name}?t1=&t2=`` -- distinct members over [t1, t2];
* ``GET /api/uniques/{name}/breakdown?t1=&t2=&step=&tz=`` -- per period;
* ``POST /api/uniques/query`` -- several series at once, optionally their union.

Every count says the range it really covers (whole buckets), whether it is exact, and when it
is not, the sketch's bounds.

Reads are budgeted per request: every count a request makes (one per breakdown period, one
per named series, twice with ``union``) costs the buckets of its fewest-bucket cover, and a
request whose counts together take more than ``MAX_QUERY_BUCKETS`` (100,000) is refused
before anything is counted, with a 400 naming the parameter to change (``t1`` for a range too
long on its own, ``step`` for a breakdown, ``names`` for a query). The cost is arithmetic on
the range and the series' kept levels, never on the data, so the same request is accepted or
refused whatever was written; within it, only buckets holding data are visited. The routes are a blueprint of their own under ``/api``, part of
the native API's OpenAPI document because this module declares ``SEED = "pointspace"``
(``web/apis.py``), as ``web/api/density.py`` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from quart import Blueprint, Response, current_app, request

from engine.engine import check_range
from engine.events import check_name, check_names
from web.api import models as m
from web.api import unique_models as um
from web.bodies import respond
from web.context import engine_of
from web.openapi import accepts, answers, query_args

#: Part of the native API (``web/apis.py``), in a blueprint of its own.
SEED = "pointspace"

uniques = Blueprint("uniques", __name__, url_prefix="/api")


@uniques.post("/uniques")
@accepts(um.UniquesBody, ndjson=True, raw=True, batch="members")
@answers(m.Applied)
async def add_uniques(body: Any) -> Response:
    """Add members to unique series: a list, ``{"members": [...]}``, or NDJSON lines.

    The batch is applied whole or not at all. A bucket holds its members exactly up to the
    server's ``unique_exact_limit``, then becomes a HyperLogLog sketch.
    """
    members = body.get("members") if isinstance(body, Mapping) else body
    field = "members" if isinstance(body, Mapping) else "body"
    applied = await engine_of(current_app).add_uniques(members, field)
    return respond({"applied": applied}, request)


@uniques.get("/uniques/<name>")
@query_args(um.UniqueArgs)
@answers(um.UniqueSeriesCount)
async def read_uniques(name: str, args: um.UniqueArgs) -> Response:
    """Distinct members of series ``name`` over [t1, t2] (Unix seconds, inclusive).

    A range whose fewest-bucket cover takes more than 100,000 buckets (only a series keeping
    no coarse level, such as the Narrative API's hourly ``narrative.users`` over 11 years)
    is refused: 400 naming ``t1``.
    """
    name = check_name(name, "name")
    t1, t2 = check_range(args.t1, args.t2)
    result = await engine_of(current_app).unique_count(name, t1, t2)
    return respond({"name": name, "asked": [t1, t2], **result.public()}, request)


@uniques.get("/uniques/<name>/breakdown")
@query_args(um.UniqueBreakdownArgs)
@answers(um.UniqueBreakdown)
async def unique_breakdown(name: str, args: um.UniqueBreakdownArgs) -> Response:
    """Distinct members per period over [t1, t2] (periods as in ``/api/breakdown``: a
    calendar ``step`` in ``tz`` or at UTC + ``offset``, or a number of seconds).

    At most 10,000 periods, whose covers take at most 100,000 buckets together (a period on
    whole minutes, hours, days, months or years is one bucket; an unaligned one up to a few
    hundred); more is a 400 naming ``step``. Long breakdowns are counted in turns, so other
    requests are served meanwhile.
    """
    name = check_name(name, "name")
    t1, t2 = check_range(args.t1, args.t2)
    bounds, counts = await engine_of(current_app).unique_breakdown(
        name, t1, t2, args.step, tz=args.tz, offset=args.offset
    )
    periods = [[bounds[i], bounds[i + 1] - 1] for i in range(len(bounds) - 1)]
    body = {"name": name, "step": args.step, "periods": periods,
            "counts": [c.public() for c in counts]}
    return respond(body, request)


@uniques.post("/uniques/query")
@accepts(um.UniqueQuery)
@answers(um.UniqueQueryResult)
async def query_uniques(body: um.UniqueQuery) -> Response:
    """Distinct counts of several series over [t1, t2]; ``union: true`` also answers the
    members distinct across all of them (exact only if every part is).

    At most 1,000 names. Each costs its cover's buckets (twice with ``union``), and together
    at most 100,000: over that, a 400 naming ``names`` (or ``t1`` if one series alone is
    over). The series are asked in turns of at most 10,000 buckets.
    """
    names = check_names(body.names, "names")
    t1, t2 = check_range(body.t1, body.t2)
    counts, union = await engine_of(current_app).unique_counts(names, t1, t2, union=body.union)
    out: dict[str, Any] = {
        "t1": t1,
        "t2": t2,
        "results": [{"name": n, "asked": [t1, t2], **c.public()} for n, c in counts.items()],
    }
    if union is not None:
        out["union"] = union.public()
    return respond(out, request)


__all__ = ["add_uniques", "query_uniques", "read_uniques", "unique_breakdown", "uniques"]
