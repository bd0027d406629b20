"""Unique-set series: distinct members per time bucket, exact while small, then a sketch.

Theory of operation
-------------------
A :class:`UniqueSeries` answers "how many distinct members were seen in [t1, t2]" for one
named series. Like a counter (``engine/counters.py``) it pays on write so reads are cheap: a
member seen at second ``ts`` is added to the one bucket of each *kept* resolution containing
``ts`` (minute, hour, day, month and year by default; which ones is a setting, fixed per
series when it is created, so a replay of the log builds the same buckets). Buckets live in
one dict ``cells: {bucket * 8 + level: cell}`` with the key scheme of ``engine/timebuckets.py``.

Members (:func:`member_of`) are integer ids in 0 .. 2**64 - 1 or strings (a canonical
decimal string such as ``"42"`` is that integer, as user ids are in ``engine/events.py``;
``"042"`` stays a string). The two kinds never share a slot: integer ids use the whole u64
range, so no bit of theirs is free to tag a string with, and a string hashed into that range
could be made to collide with a chosen integer (``"alice"`` and 9933345172075899469 did, when
one bitmap held both). An exact cell therefore keeps two sets, and its count is the sum of
their sizes:

* ``ints``: a ``pyroaring.BitMap64`` of the integer ids -- exact.
* ``strings``: either the first 8 bytes of each string's BLAKE2b digest in a second
  ``BitMap64`` (the default, as the issue asked: 22 bytes a member in a snapshot, ~123 in
  memory -- random keys put each in a roaring container of its own), or the strings
  themselves in a Python set (``UniqueConfig.text_strings``: ~94 bytes a member in memory
  and ~11 in a snapshot for 11-character ids, growing by one byte a character). Measured at
  300,000 ``"user-N"`` ids in one bucket, RSS before and after (not benchmarked further).
  BLAKE2b, not Python's ``hash()``, which is salted per process: hashes reach snapshots and
  must mean the same after a restart. Hashed strings are exact up to 64-bit birthday
  collisions: two of n distinct strings share a hash with probability about n^2 / 2^65
  (3e-8 at a million members, 3e-14 at a thousand), and one who picks ids can force a pair
  with a 2^32-step birthday search -- acceptable for analytics, not for the Narrative API, whose per-hour user sets keep the text (``NARRATIVE_CONFIG``) and so
  count distinct usernames exactly, as the seed's ``count(DISTINCT user_id)`` did.

The log records the member as given (integer or string), and each series hashes or keeps it
by its own config, so a replay rebuilds the same cells. (These record and snapshot formats
came with unique series and changed before any release, so no older form is read.)

A cell is one of two things:

* **exact**: an :class:`ExactCell` (``ints`` and ``strings``, with its size kept beside them:
  a bitmap's own ``len`` walks its containers, and random 64-bit hashes put each key in a
  container of its own: O(n)). Roaring because integer ids are often dense (a run of ids
  costs bits, not words) and unions of many buckets run in C.
* **sketch**: once a bucket holds more than ``exact_limit`` members it becomes an Apache
  DataSketches HyperLogLog (``hll_sketch(lg_k, HLL_4)``): fixed size, mergeable, relative
  standard error ~1.04 / sqrt(2**lg_k) (0.81% at lg_k 14). HLL_4 because it is the compact
  form: 8,272 bytes serialized at lg_k 14 where HLL_6 takes 12,329 and HLL_8 16,424 (over the
  16 KiB a saturated bucket may cost); a bucket never goes back to exact. Integer ids are
  fed as int64 (ids >= 2**63 as their signed twin: the library's integer overload takes
  int64 and would otherwise fall back to its float overload, where large ids collide);
  strings are fed as the 16 hex digits of their BLAKE2b key, through the library's string
  overload -- 16 bytes hashed, never the same input as an 8-byte integer, so the kinds stay
  apart in sketches too, and a hashed and a text series feed a string alike.

A count over [t1, t2] is the union of the fewest whole buckets that cover it. Its plan
(:meth:`plan`) is arithmetic, never a walk: the greedy cover -- at each step the coarsest
kept, unexpired bucket that starts at the cursor and ends within the range, optimal for
nested calendar buckets, whose greedy cover is the set of largest kept buckets inside the
range -- computed as *runs* of consecutive buckets of one level (at most two a level, in
closed form while nothing has expired), so its size is known before anything is read
whatever the range's length. The cells of each run are then found by bisecting a sorted
index of the level's non-empty bucket numbers (``_index``, derived from ``cells``), so the
empty buckets of a range are never visited: a series with one member in 1970 and one in
9999 answers the whole range from its two year buckets, and a whole-day query answers from
the day bucket however late in it the data starts.

A request pays for its counts from one budget (:class:`BucketBudget`, ``MAX_QUERY_BUCKETS``
buckets): the size of every count's plan, summed over a breakdown's periods or a query's
series, is checked by the engine before anything is sent and charged again where each count
runs. The size is that of the cover, data or not: the same request is accepted or refused
whatever was written, as Prometheus refuses a range query by its number of points. Long
requests are split into actor turns of ``TURN_BUCKETS`` (``engine/engine.py``).

An edge that falls inside a bucket of the finest resolution available there is rounded outwards to
that bucket, and every answer states the range it really covers (``t1``/``t2`` of
:class:`UniqueCount`), so a rounded answer is never silent. A union of exact cells is exact
(``BitMap64.union``); a union with any sketch is a sketch (``hll_union``, the exact cells fed
into it), answered with the estimate and its lower and upper bounds at ``STD_DEVS`` standard
deviations (the exact part's size also bounds it from below). The finest kept bucket is the
resolution limit: there are no second buckets. A union's estimate can move in its last digits
after a restart: a small sketch keeps its hashes in a table whose order depends on its
history (a live one was built by updates, a loaded one by deserialising), and the union's
HIP estimator follows the order it is fed; every register, and so the bounds' basis, is the
same (``tests/engine/test_uniques.py`` checks both answers lie within each other's bounds).

Retention (:meth:`expire`) drops buckets of a level that end before its cutoff, as counters
do; the coarsest kept level is never dropped, so every instant stays covered by something.

Invariants (``_check``): each exact cell's size is its two sets' lengths summed and at most
``exact_limit``; an exact cell holds every member of its exact children; each level's index
is the sorted bucket numbers of its cells.

Nothing here imports trio or reads the clock.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from datasketches import hll_sketch, hll_union, tgt_hll_type
from pyroaring import BitMap64

from engine.commands import COUNTER, Command, EntityKey, Operation, register
from engine.counters import GlobalCounter
from engine.errors import InvalidInput, PayloadTooLarge, quote
from engine.events import (
    MAX_BATCH_EVENTS,
    RESERVED_PREFIX,
    check_name,
    check_text,
    check_ts,
    check_writable_name,
)
from engine.timebuckets import (
    DAY,
    HOUR,
    LEVEL_BY_NAME,
    LEVEL_NAMES,
    MINUTE,
    MONTH,
    YEAR,
    _month_of_day_cache,
    bucket_of,
    bucket_start,
    month_of_day,
)

#: The namespace of unique-set series (``engine/actors.py``).
UNIQUE = "unique"

#: Resolutions a series may keep: no seconds (a second's distinct members are rarely asked
#: for, and each kept level costs a bitmap insert per member).
UNIQUE_LEVELS = (MINUTE, HOUR, DAY, MONTH, YEAR)
#: Keys past this are not 64-bit.
MAX_MEMBER = 2**64 - 1
#: Default switch from exact to sketch, per bucket. Precedent: Elasticsearch's cardinality
#: aggregation counts exactly below its ``precision_threshold``, default 3000 (max 40000).
#: At ~123 bytes per hashed key in memory (BitMap64, random keys; 22 in a snapshot) that is
#: ~370 KB per bucket before the switch.
DEFAULT_EXACT_LIMIT = 3000
#: HLL precision: 2**14 registers, RSE 0.81%, 8,272 bytes as HLL_4 (see the docstring).
DEFAULT_LG_K = 14
#: DataSketches' HLL accepts lg_k 4 .. 21.
MIN_LG_K, MAX_LG_K = 4, 21
SKETCH_TYPE = tgt_hll_type.HLL_4
#: Confidence of the stated bounds: 2 standard deviations (~95.4%).
STD_DEVS = 2
#: Most buckets one request may take, over every count it makes (a breakdown's periods, a
#: query's series, its union): the buckets of each count's fewest-bucket cover, known by
#: arithmetic before anything is walked (:meth:`UniqueSeries.plan`), so a request over budget
#: is refused before it costs anything and the answer does not depend on where the data is.
#: A range over the default levels needs at most a few hundred buckets plus one a year (8,280
#: for 1970 .. 9999); an hours-only series needs one an hour. Precedent: Prometheus refuses a
#: range query of more than 11,000 points per series up front ("exceeded maximum resolution"),
#: and Elasticsearch's ``search.max_buckets`` (65,536) bounds one aggregation request's
#: buckets; ``engine.periods.MAX_PERIODS`` bounds breakdowns the same way.
MAX_QUERY_BUCKETS = 100_000
#: ``RESERVED_PREFIX`` (from ``engine/events.py``, one rule for counters and series): series
#: names the native write API may not use; the Narrative API keeps its users in
#: ``narrative.users``, exact by construction.

_SIGN = 2**63
_WRAP = 2**64


############################################################################################
# Members and settings
############################################################################################


#: A member as validated and logged: an integer id, or a string that is not one.
Member = int | str


def member_of(value: Any, field: str = "member") -> Member:
    """A member: an integer in 0 .. 2**64 - 1 (a canonical decimal string is that integer),
    or any other non-empty string of at most 200 characters without control characters.

    >>> member_of(42), member_of("42"), member_of("042"), member_of("alice")
    (42, 42, '042', 'alice')
    >>> member_of(-1)
    Traceback (most recent call last):
    ...
    engine.errors.InvalidInput: member must be an integer in 0 .. 2**64-1 or a non-empty string of at most 200 characters, got -1
    """
    kind = type(value)
    if kind is int:
        if 0 <= value <= MAX_MEMBER:
            return value
    elif kind is float and value.is_integer() and 0 <= value <= 2**53:
        return int(value)
    elif kind is str and 0 < len(value) <= 200:
        if value.isdigit() and value.isascii() and (value == "0" or value[0] != "0"):
            number = int(value)
            if number <= MAX_MEMBER:
                return number
        if not value.isprintable():
            check_text(value, field)
        return value
    raise InvalidInput(
        f"{field} must be an integer in 0 .. 2**64-1 or a non-empty string of at most 200 "
        f"characters, got {quote(value)}",
        field,
    )


def string_key(value: str) -> int:
    """A string's 64-bit key: the first 8 bytes of its BLAKE2b digest, little-endian.

    >>> string_key("alice")
    9933345172075899469
    """
    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "little")


def member_key(value: Any, field: str = "member") -> int:
    """One 64-bit key for any member (:func:`member_of`, strings through :func:`string_key`).

    The key space is shared: a string can be built whose key equals a chosen integer id, so
    a set of these keys is not exact over mixed members -- :class:`UniqueSeries` keeps the
    kinds apart and takes :func:`member_of`'s values; this is for callers that need one
    integer per member.

    >>> member_key(42), member_key("42"), member_key("alice")
    (42, 42, 9933345172075899469)
    """
    member = member_of(value, field)
    return member if type(member) is int else string_key(member)  # type: ignore[arg-type]


def _sketch_int(key: int) -> int:
    """An integer id as the sketch's int64 datum."""
    return key - _WRAP if key >= _SIGN else key


def _sketch_hash(key: int) -> str:
    """A string's BLAKE2b key as the sketch's datum: 16 hex digits through the string
    overload, never the 8 bytes an integer id is hashed as."""
    return f"{key:016x}"


@dataclass(frozen=True, slots=True)
class UniqueConfig:
    """How one series keeps its buckets; fixed when the series is created (and logged with
    every write, so a replay creates it the same way)."""

    #: Kept levels, finest first (``engine/timebuckets.py`` numbers).
    levels: tuple[int, ...] = UNIQUE_LEVELS
    #: Members a bucket holds exactly before it becomes a sketch; ``None``: always exact.
    exact_limit: int | None = DEFAULT_EXACT_LIMIT
    lg_k: int = DEFAULT_LG_K
    #: Keep string members as text (exact) rather than as 64-bit hashes (exact up to
    #: birthday collisions); for short ids text costs no more memory: see the module
    #: docstring for the figures.
    text_strings: bool = False

    def to_plain(self) -> list[Any]:
        return [list(self.levels), self.exact_limit, self.lg_k, self.text_strings]

    @classmethod
    def from_plain(cls, plain: Sequence[Any]) -> UniqueConfig:
        return cls(tuple(plain[0]), plain[1], plain[2], bool(plain[3]))


@dataclass(frozen=True, slots=True)
class UniqueSettings:
    """The engine's settings for unique series (``Engine.open(uniques=...)``).

    Args:
        levels: resolutions new series keep, by name (``"minute"`` .. ``"year"``).
        exact_limit: keys per bucket before it turns into a sketch (``None``: never).
        lg_k: HyperLogLog precision (4 .. 21; 14 gives 0.81% RSE in 8 KB).
        retention: seconds to keep each level (``{"minute": 7 * 86400}``); the coarsest
            kept level is kept forever, and a level may only expire if every finer kept
            level expires no later (as counters' retention).
    """

    levels: tuple[str, ...] = ("minute", "hour", "day", "month", "year")
    exact_limit: int | None = DEFAULT_EXACT_LIMIT
    lg_k: int = DEFAULT_LG_K
    retention: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        allowed = [LEVEL_NAMES[lv] for lv in UNIQUE_LEVELS]
        if not self.levels or any(name not in allowed for name in self.levels):
            raise InvalidInput(
                f"unique_levels must be a non-empty list of {allowed}, got {quote(list(self.levels))}",
                "unique_levels",
            )
        if self.exact_limit is not None and (type(self.exact_limit) is not int or self.exact_limit < 0):
            raise InvalidInput(
                f"unique_exact_limit must be a whole number >= 0 (or none: always exact), got "
                f"{quote(self.exact_limit)}",
                "unique_exact_limit",
            )
        if type(self.lg_k) is not int or not MIN_LG_K <= self.lg_k <= MAX_LG_K:
            raise InvalidInput(
                f"unique_lg_k must be an integer in {MIN_LG_K} .. {MAX_LG_K}, got {quote(self.lg_k)}",
                "unique_lg_k",
            )
        self.retention_ages()

    def config(self) -> UniqueConfig:
        return UniqueConfig(
            tuple(sorted(LEVEL_BY_NAME[name] for name in set(self.levels))), self.exact_limit, self.lg_k
        )

    def retention_ages(self) -> list[int]:
        """Seconds to keep each level, indexed by level number (0 = keep; [] = keep all)."""
        if not self.retention:
            return []
        levels = self.config().levels
        kept = {LEVEL_NAMES[lv] for lv in levels[:-1]}  # the coarsest is kept forever
        unknown = set(self.retention) - kept
        if unknown:
            raise InvalidInput(
                f"unique_retention levels must be among the kept levels but the coarsest "
                f"{sorted(kept)}, got {sorted(unknown)!r}",
                "unique_retention",
            )
        ages = [0] * 6
        for name, age in self.retention.items():
            if type(age) is not int or age < 0:
                raise InvalidInput(
                    f"unique_retention ages must be whole seconds >= 0, got {dict(self.retention)!r}",
                    "unique_retention",
                )
            ages[LEVEL_BY_NAME[name]] = age
        kept_ages = [ages[lv] for lv in levels]
        for finer, coarser in zip(kept_ages, kept_ages[1:], strict=False):
            if coarser and (not finer or finer > coarser):
                raise InvalidInput(
                    "a level may only expire if every finer kept level expires no later, got "
                    f"{dict(self.retention)!r}",
                    "unique_retention",
                )
        return ages if any(ages) else []


#: The Narrative API's users per hour: exact always, hours only, usernames kept as text so
#: that "exact" means distinct usernames, not distinct hashes (``web/compat/narrative.py``).
NARRATIVE_CONFIG = UniqueConfig(levels=(HOUR,), exact_limit=None, lg_k=DEFAULT_LG_K, text_strings=True)


############################################################################################
# Answers
############################################################################################


@dataclass(frozen=True, slots=True)
class UniqueCount:
    """A distinct count over the range it really covers.

    ``t1``/``t2`` are the covered range (the asked one, or rounded outwards to whole buckets
    of the finest resolution available at an edge); ``rounded`` says whether they differ.
    When ``exact`` is false, ``count`` is the sketch's rounded estimate and ``lower`` /
    ``upper`` bound it at ``std_devs`` standard deviations.
    """

    t1: int
    t2: int
    count: int
    exact: bool
    rounded: bool
    buckets: int
    lower: float | None = None
    upper: float | None = None
    std_devs: int | None = None

    def public(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "t1": self.t1, "t2": self.t2, "count": self.count, "exact": self.exact,
            "rounded": self.rounded, "buckets": self.buckets,
        }
        if not self.exact:
            out.update(lower=self.lower, upper=self.upper, std_devs=self.std_devs)
        return out


class ExactCell:
    """An exact bucket: integer ids and strings in separate sets (see the module docstring),
    and their total ``size``.

    ``strings`` is a ``BitMap64`` of :func:`string_key` hashes, or a ``set`` of the strings
    themselves when the series keeps text (``UniqueConfig.text_strings``).
    """

    __slots__ = ("ints", "strings", "size")

    def __init__(self, ints: BitMap64, strings: BitMap64 | set[str], size: int = 0) -> None:
        self.ints = ints
        self.strings = strings
        self.size = size

    def copy(self) -> ExactCell:
        return ExactCell(self.ints.copy(), self.strings.copy(), self.size)

    def sketch_data(self) -> Iterable[int | str]:
        """Every member as a sketch datum (:func:`_sketch_int`, :func:`_sketch_hash`)."""
        yield from map(_sketch_int, self.ints)
        strings = self.strings
        keys = strings if isinstance(strings, BitMap64) else map(string_key, strings)
        yield from map(_sketch_hash, keys)


class Partial:
    """A mergeable union in progress: exact members (integer ids; strings as hashes or as
    text), and a sketch once any part is one.

    Series on different actors are unioned by sending each one's partial (copies, never a
    live cell) to the caller and merging there. Text and hashed strings meet only in a union
    across series of both kinds: the text is hashed then (exact up to 64-bit collisions, as
    the hashed series already is).
    """

    __slots__ = ("ints", "hashes", "texts", "sketch", "lg_k", "buckets")

    def __init__(self, lg_k: int = DEFAULT_LG_K) -> None:
        self.ints: BitMap64 | None = None
        self.hashes: BitMap64 | None = None
        self.texts: set[str] | None = None
        self.sketch: hll_union | None = None
        self.lg_k = lg_k
        self.buckets = 0

    def add_exact(self, cell: ExactCell) -> None:
        """Union ``cell``'s members in (never mutating the cell's sets)."""
        self.ints = cell.ints.copy() if self.ints is None else self.ints | cell.ints
        strings = cell.strings
        if isinstance(strings, BitMap64):
            self.hashes = strings.copy() if self.hashes is None else self.hashes | strings
        else:
            self.texts = set(strings) if self.texts is None else self.texts | strings

    def add_sketch(self, sketch: hll_sketch, lg_k: int) -> None:
        if self.sketch is None:
            self.sketch = hll_union(max(self.lg_k, lg_k))
        self.sketch.update(sketch)

    def merge(self, other: Partial) -> None:
        if other.ints is not None:
            self.ints = other.ints.copy() if self.ints is None else self.ints | other.ints
        if other.hashes is not None:
            self.hashes = other.hashes.copy() if self.hashes is None else self.hashes | other.hashes
        if other.texts is not None:
            self.texts = set(other.texts) if self.texts is None else self.texts | other.texts
        if other.sketch is not None:
            self.add_sketch(other.sketch.get_result(SKETCH_TYPE), other.sketch.lg_config_k)
        self.buckets += other.buckets

    def _strings(self) -> BitMap64 | set[str] | None:
        """The exact strings: text if only text was merged, else hashes (text hashed in)."""
        if self.texts is None:
            return self.hashes
        if self.hashes is None:
            return self.texts
        return self.hashes | BitMap64(map(string_key, self.texts))

    def exact_size(self) -> int:
        """Distinct members of the exact part. Runtime complexity: O(members) at worst."""
        strings = self._strings()
        return (len(self.ints) if self.ints is not None else 0) + (len(strings) if strings is not None else 0)

    def result(self, t1: int, t2: int, rounded: bool, exact_count: int | None = None) -> UniqueCount:
        """The count; ``exact_count`` is the exact part's size when the caller knows it."""
        known = exact_count if exact_count is not None else self.exact_size()
        if self.sketch is None:
            return UniqueCount(t1, t2, known, True, rounded, self.buckets)
        union = self.sketch
        if known:
            strings = self._strings()
            feed = hll_sketch(union.lg_config_k, tgt_hll_type.HLL_8)
            cell = ExactCell(self.ints if self.ints is not None else BitMap64(),
                             strings if strings is not None else BitMap64())
            update = feed.update
            for datum in cell.sketch_data():
                update(datum)
            union.update(feed)
        lower = max(float(known), union.get_lower_bound(STD_DEVS))
        upper = max(lower, union.get_upper_bound(STD_DEVS))
        estimate = min(max(union.get_estimate(), lower), upper)
        return UniqueCount(t1, t2, round(estimate), False, rounded, self.buckets, lower, upper, STD_DEVS)


class BucketBudget:
    """Buckets a request may still take, shared by every count it makes (``MAX_QUERY_BUCKETS``).

    The engine checks a request's whole cost up front (``engine/engine.py``); each count
    charges its cover's size again where it runs, so a request whose cost moved meanwhile (a
    series created by a write still in flight, with levels of its own) is refused there,
    before its walk, and never takes more than its budget.
    """

    __slots__ = ("limit", "left", "field", "advice")

    def __init__(self, limit: int = MAX_QUERY_BUCKETS, field: str = "t1",
                 advice: str = "ask for a shorter range") -> None:
        self.limit = limit
        self.left = limit
        #: The request parameter a refusal names (``t1``, ``step``, ``names``).
        self.field = field
        self.advice = advice

    def charge(self, buckets: int, t1: int, t2: int, levels: Sequence[int]) -> None:
        """Take ``buckets`` for a count over [t1, t2]; refuse when the request runs past its limit."""
        self.left -= buckets
        if self.left < 0:
            raise InvalidInput(
                f"counting [{t1}, {t2}] at the kept resolutions {[LEVEL_NAMES[lv] for lv in levels]} "
                f"takes {buckets} buckets, past the {self.limit} one request may take; {self.advice}",
                self.field,
            )


#: Buckets one actor turn may take when the engine splits a request (a breakdown's periods,
#: a query's series): each turn is a stretch the event loop does nothing else, so a request
#: within ``MAX_QUERY_BUCKETS`` still answers ``/healthz`` and other requests between its
#: turns. A union takes ~3 us a bucket of small exact cells and ~0.6 us a bucket of sketches
#: (95,000 exact hours of 5 members: 0.27 s; 20,000 sketched hours: 12 ms), and planning up
#: to ~25 us a period, so a turn of 10,000 buckets or 500 periods is a few tens of
#: milliseconds. One count is one turn: at most ``MAX_QUERY_BUCKETS`` buckets, which only a
#: series keeping no coarse level can need (the default levels take at most ~8,300).
TURN_BUCKETS = 10_000
TURN_PERIODS = 500


def breakdown_refused(name: str, periods: int, counted: int, total: int) -> InvalidInput:
    """The refusal of a breakdown whose first ``counted`` periods already take ``total``
    buckets, past ``MAX_QUERY_BUCKETS``."""
    return InvalidInput(
        f"a breakdown of {quote(name)} into {periods} periods takes more than {MAX_QUERY_BUCKETS} "
        f"buckets, the most one request may take (its first {counted} periods already take "
        f"{total}, at the series' kept resolutions); use a coarser step or a shorter range",
        "step",
    )


def query_refused(names: Sequence[str], t1: int, t2: int, total: int, largest: int, union: bool) -> InvalidInput:
    """The refusal of a count of ``names`` over [t1, t2] taking ``total`` buckets or more,
    past ``MAX_QUERY_BUCKETS``; ``largest`` is the most one series takes. Names the range
    when one series alone is over budget, else the list of names."""
    twice = " (twice with union: each series' count and its part of the union)" if union else ""
    if largest > MAX_QUERY_BUCKETS or len(names) == 1:
        return InvalidInput(
            f"counting [{t1}, {t2}] takes {largest} buckets at the kept resolutions{twice}, more than "
            f"the {MAX_QUERY_BUCKETS} one request may take; ask for a shorter range",
            "t1",
        )
    return InvalidInput(
        f"counting {len(names)} series over [{t1}, {t2}] takes {total} buckets or more{twice}, "
        f"more than the {MAX_QUERY_BUCKETS} one request may take (up to {largest} a series); "
        "name fewer series or ask for a shorter range",
        "names",
    )


############################################################################################
# One series
############################################################################################


@dataclass(frozen=True, slots=True)
class UniqueStatistics:
    cells: int
    exact_cells: int
    sketch_cells: int
    exact_keys: int


#: Counts a series remembers between writes (``UniqueSeries._counts``): a dashboard's periods.
COUNT_MEMO = 32


class UniqueSeries:
    """Distinct members of one named series, per bucket of each kept resolution.

    >>> s = UniqueSeries(UniqueConfig())
    >>> s.apply([(1458061005, 1), (1458061008, "alice"), (1458064800, 1)])
    >>> s.count(1458061000, 1458064900).public()
    {'t1': 1458060960, 't2': 1458064919, 'count': 2, 'exact': True, 'rounded': True, 'buckets': 2}
    """

    __slots__ = ("config", "cells", "first_ts", "last_ts", "horizons", "applied_seq", "_index", "_late",
                 "_counts")

    def __init__(self, config: UniqueConfig | None = None) -> None:
        #: ``None`` until the first write configures the series (the router's factory makes
        #: empty states; reads of an unconfigured series answer 0 at the default levels).
        self.config = config
        #: Exact cells (:class:`ExactCell`) and sketches (``hll_sketch``) by cell key.
        self.cells: dict[int, ExactCell | hll_sketch] = {}
        self.first_ts = -1
        self.last_ts = -1
        #: Per level, the first second whose bucket is still kept (retention).
        self.horizons: dict[int, int] = {}
        self.applied_seq = 0
        #: Per level, the bucket numbers holding a cell, ascending (derived from ``cells``,
        #: never stored): what a count bisects instead of trying every bucket of its range.
        #: A bucket created after the last one is appended; an earlier one (a backfill) waits
        #: in ``_late`` until the next read merges it in (one sort of a sorted list and a
        #: short tail), so an out-of-order batch costs one merge, not one shift per bucket.
        self._index: dict[int, list[int]] = {}
        self._late: dict[int, list[int]] = {}
        #: Counts answered since the last change, by (t1, t2): a sketch's estimate and bounds
        #: walk all its 2**lg_k registers (~140 us at lg_k 14), and dashboards re-read the
        #: same past periods. Cleared by every write and expiry, so it never answers stale;
        #: at most ``COUNT_MEMO`` entries. (Redis caches PFCOUNT's result in the key the same
        #: way, until a PFADD changes a register.)
        self._counts: dict[tuple[int, int], UniqueCount] = {}

    ########################################################################################
    # Writing

    def configure(self, config: UniqueConfig) -> None:
        """Fix the series' levels and limits at its first write (later configs are ignored)."""
        if self.config is None:
            self.config = config

    def apply(self, items: Iterable[tuple[int, Member]]) -> None:
        """Add ``(ts, member)`` pairs (members as :func:`member_of` gives them).

        Runtime complexity: O(kept levels) per member, a set test-and-insert or a sketch
        update each (a string hashed once first, unless kept as text); a bucket crossing
        ``exact_limit`` is converted once, O(limit).
        """
        self._counts.clear()
        config = self.config
        if config is None:
            config = self.config = UniqueConfig()
        levels = config.levels
        limit = config.exact_limit
        text = config.text_strings
        cells = self.cells
        months = _month_of_day_cache
        for ts, member in items:
            is_int = type(member) is int
            if is_int:
                value: int | str = member
                datum: int | str = member - _WRAP if member >= _SIGN else member  # type: ignore[operator]
            else:
                key = string_key(member)  # type: ignore[arg-type]
                value = member if text else key
                datum = _sketch_hash(key)
            day = ts // 86400
            month = months.get(day)
            if month is None:
                month = month_of_day(day)
            for level in levels:
                if level == HOUR:
                    k = (ts // 3600) * 8 + 2
                elif level == MINUTE:
                    k = (ts // 60) * 8 + 1
                elif level == DAY:
                    k = day * 8 + 3
                elif level == MONTH:
                    k = month * 8 + 4
                else:
                    k = (month // 12) * 8 + 5
                cell = cells.get(k)
                if cell is None:
                    self._note(k)
                    if limit == 0:
                        sketch = cells[k] = hll_sketch(config.lg_k, SKETCH_TYPE)
                        sketch.update(datum)
                        continue
                    cell = cells[k] = ExactCell(BitMap64(), set() if text else BitMap64())
                if type(cell) is ExactCell:
                    target = cell.ints if is_int else cell.strings
                    if value not in target:
                        target.add(value)  # type: ignore[arg-type]
                        n = cell.size = cell.size + 1
                        if limit is not None and n > limit:
                            self._to_sketch(k)
                else:
                    cell.update(datum)
            if ts > self.last_ts:
                self.last_ts = ts
                if self.first_ts < 0:
                    self.first_ts = ts
            elif ts < self.first_ts:
                self.first_ts = ts

    def _to_sketch(self, k: int) -> None:
        assert self.config is not None
        sketch = hll_sketch(self.config.lg_k, SKETCH_TYPE)
        cell = self.cells[k]
        assert type(cell) is ExactCell
        update = sketch.update
        for datum in cell.sketch_data():
            update(datum)
        self.cells[k] = sketch

    def _note(self, k: int) -> None:
        """Index a new cell (see ``_index``)."""
        level, bucket = k % 8, k // 8
        index = self._index.get(level)
        if index is None:
            self._index[level] = [bucket]
        elif bucket > index[-1]:
            index.append(bucket)
        else:
            self._late.setdefault(level, []).append(bucket)

    def _sorted(self, level: int) -> list[int]:
        """The level's non-empty bucket numbers, ascending (late ones merged in first)."""
        index = self._index.get(level)
        if index is None:
            return []
        late = self._late.pop(level, None)
        if late:
            index.extend(late)
            index.sort()  # Timsort: one sorted run and a tail, O(n + m log m)
        return index

    def _reindex(self) -> None:
        """Rebuild the index from ``cells`` (after a load)."""
        self._index, self._late = {}, {}
        for k in sorted(self.cells):
            self._index.setdefault(k % 8, []).append(k // 8)

    def expire(self, cutoffs: Sequence[int]) -> int:
        """Drop buckets of each level that end at or before ``cutoffs[level]`` (0 keeps the
        level; the coarsest kept level is always kept). Returns the cells removed.

        Runtime complexity: O(cells).
        """
        if self.config is None:
            return 0
        self._counts.clear()
        limits: dict[int, int] = {}
        for level in self.config.levels[:-1]:
            cutoff = cutoffs[level] if level < len(cutoffs) else 0
            if cutoff > 0:
                limit = bucket_of(level, cutoff)
                limits[level] = limit
                self.horizons[level] = max(self.horizons.get(level, 0), bucket_start(level, limit))
        if not limits:
            return 0
        doomed = [k for k in self.cells if k % 8 in limits and k // 8 < limits[k % 8]]
        for k in doomed:
            del self.cells[k]
        for level, limit in limits.items():
            index = self._sorted(level)
            del index[:bisect_left(index, limit)]
        return len(doomed)

    ########################################################################################
    # Reading

    def plan(self, t1: int, t2: int) -> tuple[int, int, list[tuple[int, int, int]]]:
        """The fewest whole kept buckets covering [t1, t2], by arithmetic: ``(first second,
        last second, runs)``, each run ``(level, first bucket, end bucket exclusive)``; the
        seconds are the range really covered (rounded outwards where an edge falls inside a
        bucket of the finest resolution available there).

        The cover is the greedy one: at each step the coarsest kept, unexpired bucket that
        starts at the cursor and ends within the range -- for nested calendar buckets, the
        largest kept buckets inside the range. Where none ends within it (a finer level
        expired there), the finest available bucket at the cursor is taken and the end
        rounded out to it. A run stops where a coarser level's next available boundary
        fits, or where its own buckets no longer fit, so the steps are runs, not buckets.

        Runtime complexity: O(levels**2) -- at most two runs a level, plus one per horizon;
        never depends on the range's length or on the data.
        """
        if t1 > t2:
            raise InvalidInput(f"t1 must be <= t2, got t1={t1!r} t2={t2!r}", "t1")
        levels = (self.config or _DEFAULT_CONFIG).levels
        horizons = self.horizons
        if not horizons:
            return _nested_plan(levels, t1, t2)
        start, end = self._edges(t1, t2)
        runs: list[tuple[int, int, int]] = []
        cursor = start
        top = len(levels) - 1
        while cursor < end:
            chosen = -1
            fallback: tuple[int, int, int] | None = None
            for i in range(top, -1, -1):
                level = levels[i]
                bucket = bucket_of(level, cursor)
                if bucket_start(level, bucket) != cursor or (horizons and cursor < horizons.get(level, 0)):
                    continue
                after = bucket_start(level, bucket + 1)
                if after <= end:
                    chosen = i
                    break
                fallback = (level, bucket, after)
            if chosen < 0:
                assert fallback is not None, "the cursor is aligned to an available level"
                level, bucket, end = fallback  # round the end outwards to this bucket
                runs.append((level, bucket, bucket + 1))
                break
            stop = bucket_of(level, end)  # buckets before the one holding ``end`` fit
            for coarser in levels[chosen + 1:]:
                # The coarser level takes over at its first available boundary past the
                # cursor, if that bucket fits (later ones fit no better).
                boundary = bucket_start(coarser, bucket_of(coarser, cursor) + 1)
                if horizons:
                    boundary = max(boundary, horizons.get(coarser, 0))
                if boundary < end and bucket_start(coarser, bucket_of(coarser, boundary) + 1) <= end:
                    stop = min(stop, bucket_of(level, boundary))
            runs.append((level, bucket, stop))
            cursor = bucket_start(level, stop)
        return start, end - 1, runs

    def cover_size(self, t1: int, t2: int) -> int:
        """Buckets in the fewest-bucket cover of [t1, t2] (:meth:`plan`): what a count costs
        a request's budget, known before anything is walked. O(levels**2)."""
        return sum(stop - first for _, first, stop in self.plan(t1, t2)[2])

    def cover(self, t1: int, t2: int, budget: BucketBudget | None = None) -> tuple[int, int, list[int]]:
        """The cells of the fewest-bucket cover of [t1, t2] that hold data: ``(first second,
        last second, cell keys)`` in time order (:meth:`plan` for the seconds).

        The cover's size is charged to ``budget`` first (a fresh ``MAX_QUERY_BUCKETS`` one
        when none is given), so a refused count has walked nothing. Each run then takes its
        cells by bisecting the level's sorted index, so the empty buckets of a long range
        are never visited: a sparse series over centuries costs what its data costs.

        Runtime complexity: O(levels**2 + runs * log(cells) + cells taken).

        Raises:
            InvalidInput: the cover takes more buckets than the budget has left (naming the
                budget's field).
        """
        start, end, runs = self.plan(t1, t2)
        (budget or BucketBudget()).charge(
            sum(stop - first for _, first, stop in runs), t1, t2, (self.config or _DEFAULT_CONFIG).levels
        )
        keys: list[int] = []
        for level, first, stop in runs:
            index = self._sorted(level)
            lo = bisect_left(index, first)
            hi = bisect_left(index, stop, lo)
            keys.extend(bucket * 8 + level for bucket in index[lo:hi])
        return start, end, keys

    def _available(self, level: int, bucket: int) -> bool:
        horizons = self.horizons
        return not horizons or bucket_start(level, bucket) >= horizons.get(level, 0)

    def _edges(self, t1: int, t2: int) -> tuple[int, int]:
        """[t1, t2] rounded outwards to the finest bucket available at each edge, as
        (first second, end exclusive)."""
        levels = (self.config or _DEFAULT_CONFIG).levels
        out = []
        for ts, side in ((t1, 0), (t2, 1)):
            for level in levels:
                bucket = bucket_of(level, ts)
                if self._available(level, bucket):
                    out.append(bucket_start(level, bucket + side))
                    break
            else:  # pragma: no cover
                raise AssertionError("the coarsest kept level never expires")
        return out[0], out[1]

    def partial(self, keys: Sequence[int], *, detach: bool = False) -> tuple[Partial, int | None]:
        """The union of the cells at ``keys``, and the exact count when it is known without
        a union (one exact cell: its kept size, O(1) -- the current-hour fast path).

        ``detach=True`` copies what the union would otherwise share with a live cell (for a
        union sent out of the owning actor).
        """
        cells = self.cells
        lg_k = (self.config or _DEFAULT_CONFIG).lg_k
        out = Partial(lg_k)
        out.buckets = len(keys)
        exact: list[ExactCell] = []
        for k in keys:
            cell = cells.get(k)
            if cell is None:
                continue
            if type(cell) is ExactCell:
                exact.append(cell)
            else:
                out.add_sketch(cell, lg_k)
        if len(exact) == 1:
            only = exact[0].copy() if detach else exact[0]
            out.ints = only.ints
            if isinstance(only.strings, BitMap64):
                out.hashes = only.strings
            else:
                out.texts = only.strings
            return out, only.size
        if exact:
            out.ints = BitMap64.union(*(c.ints for c in exact))
            if (self.config or _DEFAULT_CONFIG).text_strings:
                out.texts = set().union(*(c.strings for c in exact))
            else:
                out.hashes = BitMap64.union(*(c.strings for c in exact))  # type: ignore[arg-type]
        return out, None

    def count(self, t1: int, t2: int, budget: BucketBudget | None = None) -> UniqueCount:
        """Distinct members over [t1, t2] (see :class:`UniqueCount` for the answer), charged
        to ``budget`` (a request's; default: this count alone gets ``MAX_QUERY_BUCKETS``).

        Runtime complexity: :meth:`cover`, then a union of the cells (O(1) for one exact
        bucket, such as the current hour; O(keys) for a union of exact buckets; O(2**lg_k)
        per sketch).
        """
        if t1 > t2:
            raise InvalidInput(f"t1 must be <= t2, got t1={t1!r} t2={t2!r}", "t1")
        start, end, keys = self.cover(t1, t2, budget)  # charged to the budget either way
        memo = self._counts
        known_count = memo.get((t1, t2))
        if known_count is not None:
            return known_count
        rounded = (start, end) != (t1, t2)
        if not keys:
            return UniqueCount(start, end, 0, True, rounded, 0)
        union, known = self.partial(keys)
        answer = union.result(start, end, rounded, known)
        if len(memo) >= COUNT_MEMO:
            memo.clear()
        memo[(t1, t2)] = answer
        return answer

    def union_part(self, t1: int, t2: int, budget: BucketBudget | None = None) -> tuple[int, int, Partial]:
        """As :meth:`count`, but the union itself, detached (for a union across series)."""
        start, end, keys = self.cover(t1, t2, budget)
        union, _ = self.partial(keys, detach=True)
        return start, end, union

    def breakdown(self, bounds: Sequence[int], budget: BucketBudget | None = None) -> list[UniqueCount]:
        """Counts over the periods [bounds[i], bounds[i+1]) (``engine/periods.py``), all
        charged to ``budget`` when one is given (else each period gets its own)."""
        return [self.count(a, b - 1, budget) for a, b in zip(bounds, bounds[1:], strict=False)]

    def statistics(self) -> UniqueStatistics:
        sizes = [cell.size for cell in self.cells.values() if type(cell) is ExactCell]
        return UniqueStatistics(
            cells=len(self.cells),
            exact_cells=len(sizes),
            sketch_cells=len(self.cells) - len(sizes),
            exact_keys=sum(sizes),
        )

    ########################################################################################
    # Snapshots

    def to_plain(self) -> list[Any] | None:
        """``[config, first_ts, last_ts, horizons, cells]``, each cell ``[key, -1, sketch]``
        (DataSketches' compact form) or ``[key, size, ints, strings]``: portable roaring
        bytes, and the strings as roaring bytes of hashes or as a list of text.

        This format is new with unique series (never released before the integer/string
        split), so it carries no version of its own; the snapshot's does."""
        if self.config is None:
            return None
        cells: list[list[Any]] = []
        for k, cell in self.cells.items():
            if type(cell) is ExactCell:
                strings = cell.strings
                plain = strings.serialize() if isinstance(strings, BitMap64) else list(strings)
                cells.append([k, cell.size, cell.ints.serialize(), plain])
            else:
                cells.append([k, -1, cell.serialize_compact()])
        return [self.config.to_plain(), self.first_ts, self.last_ts, list(self.horizons.items()), cells]

    @classmethod
    def from_plain(cls, plain: Sequence[Any]) -> UniqueSeries:
        series = cls(UniqueConfig.from_plain(plain[0]))
        series.first_ts, series.last_ts = plain[1], plain[2]
        series.horizons = {level: ts for level, ts in plain[3]}
        for k, size, data, *rest in plain[4]:
            if size < 0:
                series.cells[k] = hll_sketch.deserialize(bytes(data))
            else:
                strings = rest[0]
                series.cells[k] = ExactCell(
                    BitMap64.deserialize(bytes(data)),
                    set(strings) if isinstance(strings, list) else BitMap64.deserialize(bytes(strings)),
                    size,
                )
        series._reindex()
        return series

    def _check(self) -> None:
        """Assert the invariants of the module docstring; print the cells on failure."""
        try:
            config = self.config or _DEFAULT_CONFIG
            limit = config.exact_limit
            exact = {k: c for k, c in self.cells.items() if type(c) is ExactCell}
            for k, cell in exact.items():
                size = len(cell.ints) + len(cell.strings)
                assert cell.size == size, f"cell {k}: size {cell.size} != {size} members"
                assert limit is None or size <= limit, f"cell {k}: {size} members > limit {limit}"
                text = not isinstance(cell.strings, BitMap64)
                assert text == config.text_strings, f"cell {k}: strings kept as text={text}"
            for level in {k % 8 for k in self.cells} | set(self._index):
                want = sorted(k // 8 for k in self.cells if k % 8 == level)
                assert self._sorted(level) == want, f"level {level}: index is not the cells' buckets"
            for k, cell in exact.items():
                level = k % 8
                coarser = [lv for lv in config.levels if lv > level]
                if not coarser:
                    continue
                parent = exact.get(bucket_of(coarser[0], bucket_start(level, k // 8)) * 8 + coarser[0])
                if parent is not None:
                    assert cell.ints.issubset(parent.ints), f"cell {k}: ids not within its parent"
                    assert cell.strings <= parent.strings, f"cell {k}: strings not within its parent"
        except AssertionError:
            print("cells", sorted((k, getattr(c, "size", -1)) for k, c in self.cells.items()))
            raise


_DEFAULT_CONFIG = UniqueConfig()


def _nested_plan(levels: Sequence[int], t1: int, t2: int) -> tuple[int, int, list[tuple[int, int, int]]]:
    """:meth:`UniqueSeries.plan` where every kept level is available (no retention yet): the
    largest kept buckets inside [t1, t2] rounded out to the finest level, in closed form.

    Per level, the whole buckets inside the range are ``[lo, hi)`` (bucket numbers); the
    coarsest level with any takes them all, and each finer level takes what lies between
    its own edges and the next coarser level's -- as ``engine.timebuckets.decompose`` does
    for counters. Fixed-length levels are integer division; months and years go through the
    calendar. O(levels), about 15 us for five levels.
    """
    finest = levels[0]
    if finest <= DAY:
        size = _FIXED[finest]
        start, end = t1 // size * size, (t2 // size + 1) * size
    else:
        start = bucket_start(finest, bucket_of(finest, t1))
        end = bucket_start(finest, bucket_of(finest, t2) + 1)
    los: list[int] = []
    his: list[int] = []
    lo_starts: list[int] = []
    hi_starts: list[int] = []
    top = 0
    for i, level in enumerate(levels):
        if level <= DAY:
            size = _FIXED[level]
            lo = -(-start // size)
            hi = end // size
            lo_starts.append(lo * size)
            hi_starts.append(hi * size)
        else:
            lo = bucket_of(level, start)
            lo_start = bucket_start(level, lo)
            if lo_start < start:
                lo += 1
                lo_start = bucket_start(level, lo)
            hi = bucket_of(level, end)
            lo_starts.append(lo_start)
            hi_starts.append(bucket_start(level, hi))
        if lo >= hi:
            break
        los.append(lo)
        his.append(hi)
        top = i
    left: list[tuple[int, int, int]] = []
    right: list[tuple[int, int, int]] = []
    for i in range(top):
        level = levels[i]
        if level <= DAY:
            size = _FIXED[level]
            inner_lo, inner_hi = lo_starts[i + 1] // size, hi_starts[i + 1] // size
        else:
            inner_lo, inner_hi = bucket_of(level, lo_starts[i + 1]), bucket_of(level, hi_starts[i + 1])
        if los[i] < inner_lo:
            left.append((level, los[i], inner_lo))
        if inner_hi < his[i]:
            right.append((level, inner_hi, his[i]))
    runs = [*left, (levels[top], los[top], his[top]), *right[::-1]]
    return start, end - 1, runs


_FIXED = {MINUTE: 60, HOUR: 3600, DAY: 86400}


############################################################################################
# Validation and commands
############################################################################################

#: A validated member write: (series name, second, member).
UniqueItem = tuple[str, int, Member]

_ITEM_FIELDS = frozenset({"name", "member", "ts"})


def validate_unique_items(items: Any, field: str = "body", *, reserved_ok: bool = False) -> list[UniqueItem]:
    """Check a whole batch of ``{"name", "member", "ts"}``; nothing is applied unless all pass.

    >>> validate_unique_items([{"name": "visitors", "member": "alice", "ts": 60}])
    [('visitors', 60, 'alice')]

    Names under ``RESERVED_PREFIX`` are refused unless ``reserved_ok`` (their owner's
    writes): ``engine.events.check_writable_name``, the rule global counters share.

    Raises:
        InvalidInput: naming the first bad field (``body[3].member``).
        PayloadTooLarge: more than ``MAX_BATCH_EVENTS`` items.
    """
    if not isinstance(items, list):
        raise InvalidInput(f"{field} must be a list of {{name, member, ts}} objects", field)
    if len(items) > MAX_BATCH_EVENTS:
        raise PayloadTooLarge(f"{field} holds {len(items)} items; at most {MAX_BATCH_EVENTS} per batch", field)
    out: list[UniqueItem] = []
    names: set[str] = set()
    for i, item in enumerate(items):
        at = f"{field}[{i}]"
        if not isinstance(item, Mapping):
            raise InvalidInput(f"{at} must be an object, got {quote(item)}", at)
        for key in ("name", "member", "ts"):
            if key not in item:
                raise InvalidInput(f"{at}.{key} is required", f"{at}.{key}")
        if len(item) > 3:
            unknown = sorted(str(k) for k in item if k not in _ITEM_FIELDS)
            raise InvalidInput(f"{at} has unknown fields {quote(unknown)}; allowed: name, member, ts",
                               f"{at}.{unknown[0]}")
        name = item["name"]
        if type(name) is not str or name not in names:  # each distinct name checked once
            check = check_name if reserved_ok else check_writable_name
            names.add(check(name, f"{at}.name"))
        out.append((name, check_ts(item["ts"], f"{at}.ts"), member_of(item["member"], f"{at}.member")))
    return out


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class AddUniques(Command):
    """Members added to unique series, and (optionally, in the same record) global counter
    increments: a Narrative event is one of each, applied and logged as one."""

    op: ClassVar[str] = "uniques"
    items: list[UniqueItem]
    #: The config a series gets if this command creates it.
    config: UniqueConfig
    counts: list[tuple[str, int, int]] = field(default_factory=list)

    def to_plain(self) -> Any:
        return [self.items, self.config.to_plain(), self.counts]

    @classmethod
    def from_plain(cls, plain: Any) -> AddUniques:
        return cls(
            items=[tuple(i) for i in plain[0]],  # type: ignore[misc]
            config=UniqueConfig.from_plain(plain[1]),
            counts=[tuple(c) for c in plain[2]],  # type: ignore[misc]
        )

    def route(self, seq: int, router: Any = None) -> dict[EntityKey, Operation]:
        groups: dict[str, list[tuple[int, Member]]] = {}
        for name, ts, key in self.items:
            group = groups.get(name)
            if group is None:
                group = groups[name] = []
            group.append((ts, key))
        routes: dict[EntityKey, Operation] = {
            (UNIQUE, name): _add_at(seq, self.config, members) for name, members in groups.items()
        }
        counts: dict[str, list[tuple[int, int]]] = {}
        for name, ts, value in self.counts:
            counts.setdefault(name, []).append((ts, value))
        for name, increments in counts.items():
            routes[(COUNTER, name)] = _count_at(seq, increments)
        return routes

    def size(self) -> int:
        return len(self.items)


def _add_at(seq: int, config: UniqueConfig, members: list[tuple[int, Member]]) -> Operation:
    def operation(state: UniqueSeries) -> None:
        if state.applied_seq < seq:
            state.configure(config)
            state.apply(members)
            state.applied_seq = seq

    return operation


def _count_at(seq: int, increments: list[tuple[int, int]]) -> Operation:
    def operation(state: GlobalCounter) -> None:
        if state.applied_seq < seq:
            state.apply(increments)
            state.applied_seq = seq

    return operation


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class ExpireUniques(Command):
    """Retention for unique series: one cutoff second per level (0 keeps it), computed from
    the clock when the timer fires and logged, so a replay drops what the live run dropped."""

    op: ClassVar[str] = "expire_uniques"
    cutoffs: list[int]

    def to_plain(self) -> Any:
        return self.cutoffs

    @classmethod
    def from_plain(cls, plain: Any) -> ExpireUniques:
        return cls(cutoffs=list(plain))

    def route(self, seq: int, router: Any = None) -> dict[EntityKey, Operation]:
        def expire(state: UniqueSeries) -> int:
            if state.applied_seq >= seq:
                return 0
            removed = state.expire(self.cutoffs)
            state.applied_seq = seq
            return removed

        return {(UNIQUE, ident): expire for ident in router.ids(UNIQUE)}


__all__ = [
    "DEFAULT_EXACT_LIMIT",
    "DEFAULT_LG_K",
    "ExactCell",
    "Member",
    "NARRATIVE_CONFIG",
    "RESERVED_PREFIX",
    "UNIQUE",
    "MAX_QUERY_BUCKETS",
    "TURN_BUCKETS",
    "TURN_PERIODS",
    "AddUniques",
    "BucketBudget",
    "ExpireUniques",
    "Partial",
    "UniqueConfig",
    "UniqueCount",
    "UniqueSeries",
    "UniqueSettings",
    "breakdown_refused",
    "member_key",
    "member_of",
    "query_refused",
    "string_key",
    "validate_unique_items",
]
