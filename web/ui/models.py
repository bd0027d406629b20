"""Shapes of the dashboard's own data routes that are not the native API's (``web/ui/routes.py``).

Declared with the native API's building blocks (``web/api/models.py``: ``Timestamp``,
``TEXT_PATTERN``, ``MAX_WINDOW_S``), so that ``/ui/api/occupancy`` is documented in
``/openapi.json`` and its query string validated from one declaration, like
``/ui/api/series``. A chart's window follows the series' rules: the ``last`` seconds up to
``t2`` (default: the server's clock), in ``step`` periods aligned to multiples of the step.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct

from engine.events import MAX_NAME_LENGTH
from web.api.models import MAX_WINDOW_S, TEXT_PATTERN, Timestamp

__all__ = ["OccupancyChart", "OccupancyChartArgs", "SpaceName"]

#: A Density space, as placements name it (``PUT /api/sensors/{dpu}/placement``).
SpaceName = Annotated[
    str,
    Meta(min_length=1, max_length=MAX_NAME_LENGTH, pattern=TEXT_PATTERN,
         description="a space, as a sensor's placement names it, without control characters"),
]


class OccupancyChartArgs(Struct):
    """A chart of space ``space``: its occupancy per ``step`` seconds over the ``last``
    seconds up to ``t2`` (default: now, by the server's clock)."""

    space: SpaceName
    last: Annotated[int, Meta(ge=1, le=MAX_WINDOW_S)] = 120
    step: Annotated[int, Meta(ge=1, le=86400)] = 1
    t2: Timestamp | None = None


class OccupancyChart(Struct):
    """A space's occupancy per period: ``starts[i]`` is the first second of period i,
    ``end[i]`` the count at its last instant, ``peak[i]`` and ``low[i]`` the highest and
    lowest count at any instant in it; ``count`` is the count at the window's end, and
    ``highest`` / ``lowest`` the extremes over the whole window."""

    kind: Literal["occupancy"]
    space: str
    t1: int
    t2: int
    step: int
    now: int
    #: The count just before ``t1``: where the window begins.
    start: int
    starts: list[int]
    end: list[int]
    peak: list[int]
    low: list[int]
    count: int
    highest: int
    lowest: int
