"""Request and response shapes of the unique-count routes (``web/api/uniques.py``), in msgspec.

Declared as ``web/api/models.py`` declares the rest of the native API (same building blocks:
``Name``, ``Timestamp``, ``Step``, ``TimeZone``), so the OpenAPI document and the validation
of every request come from one declaration. Rules that tie fields together (``t1 <= t2``,
reserved series names) stay in the engine's validators (``engine/uniques.py``).
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct

from engine.events import MAX_BATCH_EVENTS, MAX_NAME_LENGTH
from engine.uniques import MAX_MEMBER, MAX_QUERY_BUCKETS
from web.api.models import (
    MAX_WINDOW_S,
    TEXT_PATTERN,
    Name,
    Period,
    PeriodArgs,
    RangeArgs,
    Timestamp,
)

#: A member given as a number: a 64-bit unsigned id. (msgspec cannot state a bound past
#: int64, so the upper one is in the description and enforced by ``engine.uniques.member_key``.)
MemberNumber = Annotated[int, Meta(ge=0, description=f"at most {MAX_MEMBER} (2**64 - 1)")]
MemberText = Annotated[
    str,
    Meta(min_length=1, max_length=MAX_NAME_LENGTH, pattern=TEXT_PATTERN,
         description="a member id as text, without control characters"),
]
Member = Annotated[
    MemberNumber | MemberText,
    Meta(description='an unsigned 64-bit integer, or a string; "42" and 42 are the same member'),
]
#: Most series one query may name (each is one actor message and one answer); their counts
#: also share one request's bucket budget (``engine.uniques.MAX_QUERY_BUCKETS``).
MAX_QUERY_NAMES = 1000


############################################################################################
# Requests


class UniqueMember(Struct, forbid_unknown_fields=True):
    """``member`` seen in series ``name`` at second ``ts``."""

    name: Name
    member: Member
    ts: Timestamp


UniqueList = Annotated[
    list[UniqueMember], Meta(description=f"at most {MAX_BATCH_EVENTS} members; more is a 413")
]


class UniqueBatch(Struct, forbid_unknown_fields=True):
    """A batch of members, applied whole or not at all."""

    members: UniqueList


#: ``POST /api/uniques`` takes a bare list or ``{"members": [...]}`` (or NDJSON lines).
UniquesBody = UniqueList | UniqueBatch


class UniqueArgs(RangeArgs):
    """``GET /api/uniques/{name}``."""


class UniqueBreakdownArgs(PeriodArgs):
    """A breakdown of at most 10,000 periods whose covers take at most
    ``engine.uniques.MAX_QUERY_BUCKETS`` buckets together (more is a 400 naming ``step``)."""


class UniqueQuery(Struct, forbid_unknown_fields=True):
    """Distinct counts of several series over [t1, t2]; ``union`` also counts the members
    distinct across all of them."""

    names: Annotated[
        list[Name],
        Meta(min_length=1, max_length=MAX_QUERY_NAMES,
             description=f"at most {MAX_QUERY_NAMES} series, whose counts over [t1, t2] take at most "
                         f"{MAX_QUERY_BUCKETS} buckets together (twice with union); more is a 400"),
    ]
    t1: Timestamp
    t2: Timestamp
    union: bool = False


############################################################################################
# Responses


class UniqueCountResult(Struct):
    """A distinct count over the range it covers: ``t1``/``t2`` are the asked range rounded
    outwards to whole buckets of the finest kept resolution (``rounded`` says whether they
    moved). When ``exact`` is false, ``count`` is a HyperLogLog estimate and ``lower`` /
    ``upper`` bound it at ``std_devs`` standard deviations."""

    t1: int
    t2: int
    count: int
    exact: bool
    rounded: bool
    #: Whole buckets unioned for the answer: those of the range's cover that hold data.
    buckets: int
    lower: float | None = None
    upper: float | None = None
    std_devs: int | None = None


class UniqueSeriesCount(Struct):
    """One series' distinct count; ``asked`` is the range the request named."""

    name: str
    asked: Period
    t1: int
    t2: int
    count: int
    exact: bool
    rounded: bool
    buckets: int
    lower: float | None = None
    upper: float | None = None
    std_devs: int | None = None


class UniqueBreakdown(Struct):
    """Distinct members per period: ``periods`` as asked, ``counts[i]`` with the range it
    really covers."""

    name: str
    step: str | int
    periods: list[Period]
    counts: list[UniqueCountResult]


class UniqueQueryResult(Struct):
    t1: int
    t2: int
    results: list[UniqueSeriesCount]
    #: With ``union``: members distinct across every named series.
    union: UniqueCountResult | None = None


############################################################################################
# The dashboard's unique series (``GET /ui/api/uniques``, web/ui/routes.py)


class UniqueChartArgs(Struct):
    """A chart of series ``name``: distinct members per ``step`` seconds (rounded up to whole
    minutes, the finest resolution kept) over the ``last`` seconds up to ``t2`` (default:
    now, by the server's clock)."""

    name: Name
    last: Annotated[int, Meta(ge=1, le=MAX_WINDOW_S)] = 3600
    step: Annotated[int, Meta(ge=1, le=86400)] = 60
    t2: Timestamp | None = None


class UniqueChart(Struct):
    """``values[i]``: distinct members in the period starting at ``starts[i]``; ``total``:
    distinct members over the whole window (a union, not a sum); ``exact``: whether every
    figure is exact."""

    kind: str
    name: str
    t1: int
    t2: int
    step: int
    now: int
    starts: list[int]
    values: list[int]
    total: int
    exact: bool
