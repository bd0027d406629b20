"""Request and response shapes of the dimensional-stats routes (``web/api/stats.py``), in msgspec.

Declared with the native API's building blocks (``web/api/models.py``), so the OpenAPI
document and the validation of every query string come from one declaration.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct

from web.api.models import Name, Period, PeriodArgs

Kind = Annotated[
    Literal["counter", "gauge", "member"],
    Meta(description="counter (and increments), gauge, or member (a unique set)"),
]


class DimensionsList(Struct):
    """Every dimension name with its known values, sorted."""

    dims: dict[str, list[str]]


class FiguresArgs(Struct):
    #: Member totals as the true distinct count across the values, instead of statshub's
    #: sum of each value's count.
    union: bool = False


class Figures(Struct, omit_defaults=True):
    """statshub's figures of one value (or the total): empty maps are left out."""

    counters: dict[str, int] | None = None
    #: The last complete gauge period, and member counts.
    gauges: dict[str, int] | None = None
    #: The gauge period in progress.
    gaugesCurrent: dict[str, int] | None = None  # noqa: N815 - statshub's field name


class DimensionFigures(Struct):
    """One dimension's values and their query-time total."""

    dimension: str
    values: dict[str, Figures]
    total: Figures


class HistoryArgs(PeriodArgs):
    kind: Kind = "counter"
    #: One value of the dimension; every value when absent.
    value: Name | None = None
    #: For members: the total as the true distinct count across values.
    union: bool = False


class StatSeries(Struct, omit_defaults=True):
    """One roll-up per period. ``values``: a counter's value at the period's last second, a
    gauge's mean over the gauge periods starting in it (``null`` where none does), distinct
    members seen in it. ``changes`` (counters): what the period added. ``sums`` and
    ``periods`` (gauges): the sum of those gauge periods' values, and how many there are."""

    values: list[int | float | None]
    changes: list[int] | None = None
    sums: list[int] | None = None
    periods: list[int] | None = None


class StatHistory(Struct):
    dimension: str
    stat: str
    kind: str
    step: str | int
    periods: list[Period]
    values: dict[str, StatSeries]
    total: StatSeries


__all__ = ["DimensionFigures", "DimensionsList", "Figures", "FiguresArgs", "HistoryArgs", "StatHistory",
           "StatSeries"]
