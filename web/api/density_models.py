"""Request and response shapes of the Density routes (``web/api/density.py``), in msgspec.

Declared as ``web/api/models.py`` declares the rest of the native API (one declaration for
the OpenAPI document and for validation); kept in a module of their own so that the
people-counting feature is one unit. Rules that tie fields together, and the parsing of
ISO-8601 instants, stay in ``engine/density.py``, which also guards in-process embedders.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct

from engine.density import MAX_PLACEMENT_SPACES, MAX_TIMESTAMP_CHARS
from engine.timebuckets import MAX_TS
from web.api.models import Name, Period, PeriodArgs, Step, TimeZone

#: An instant (``engine.density.parse_instant``, one rule for every route): ISO-8601 text
#: (UTC when it names no offset), or Unix seconds -- a number (a fraction keeps milliseconds),
#: or text of 10 digits with an optional fraction; other digit strings are refused as
#: ambiguous ('20180224': a date or 1970-08-22?).
_INSTANT_DOC = (
    "ISO-8601 (2018-02-24T08:45:21.893Z; UTC when no offset is given), or Unix seconds: a "
    "number, or 10 digits with an optional fraction (1519461921.893)"
)
Instant = Annotated[
    Annotated[str, Meta(min_length=1, max_length=MAX_TIMESTAMP_CHARS)]
    | Annotated[float, Meta(ge=0, lt=MAX_TS + 1)],
    Meta(description=_INSTANT_DOC, examples=["2018-02-24T08:45:21.893Z"]),
]
Sign = Annotated[
    Literal[1, -1],
    Meta(
        description="1: a +1 crossing enters the space; -1: it leaves. A space the sensor counts "
        "nothing for is left out (the seed's +1 and -1 rows for one space cancel)"
    ),
]


############################################################################################
# Requests


class PlacementBody(Struct, forbid_unknown_fields=True):
    """Where a sensor is from ``installed`` on: a doorway and a sign per space. A past
    ``installed`` re-counts the events since then; the same ``installed`` replaces."""

    installed: Instant
    doorway: Name
    spaces: Annotated[
        dict[Name, Sign],
        Meta(
            max_length=MAX_PLACEMENT_SPACES,
            description="{}: the sensor counts for no space (taken down; or the seed's +1 and "
            "-1 rows for one space, which cancel)",
        ),
    ]


class SpaceOptionsBody(Struct, forbid_unknown_fields=True):
    """A space's options: counts return to 0 at local midnight in ``tz`` (UTC if null)."""

    nightly_reset: bool = False
    tz: TimeZone | None = None


class CountArgs(Struct):
    #: The instant; default: now.
    at: Annotated[
        str, Meta(min_length=1, max_length=MAX_TIMESTAMP_CHARS, description=_INSTANT_DOC)
    ] | None = None


class OccupancyArgs(PeriodArgs):
    """Occupancy per period: hourly unless ``step`` says otherwise."""

    step: Step = "hour"


############################################################################################
# Responses


class PlacementView(Struct):
    installed: str
    installed_ms: int
    doorway: str
    spaces: dict[str, int]


class SensorView(Struct):
    """A sensor: its placements, oldest first, and what it has sent."""

    dpu: str
    placements: list[PlacementView]
    current: PlacementView | None
    events: int
    duplicates: int
    late: int
    last_event: str | None


class SensorEntry(Struct):
    dpu: str
    current: PlacementView | None
    events: int


class SensorList(Struct):
    sensors: list[SensorEntry]


class SpaceList(Struct):
    spaces: list[str]


class DoorwayEntry(Struct):
    doorway: str
    #: Sensors placed at this doorway now.
    sensors: list[str]
    #: Each of those sensors' spaces and signs.
    spaces: dict[str, dict[str, int]]


class DoorwayList(Struct):
    doorways: list[DoorwayEntry]


class SpaceView(Struct):
    """A space now: its count, options and the sensors that ever counted for it."""

    space: str
    count: int
    nightly_reset: bool
    tz: str | None
    sensors: list[str]
    first_event: str | None
    last_event: str | None


class SpaceCount(Struct):
    """The exact count at an instant: every crossing at or before it."""

    space: str
    at: str
    at_ms: int
    count: int


class OccupancyResult(Struct):
    """Per period ([first, last] second): the count at its end, and the highest and lowest
    count at any instant within it."""

    space: str
    step: str | int
    periods: list[Period]
    end: list[int]
    peak: list[int]
    low: list[int]
