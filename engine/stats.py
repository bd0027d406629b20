"""Dimensional stats (the statshub seed): per-id detail and per-dimension-value roll-ups.

Theory of operation
-------------------
A client -- a *stat id*, one reporting process -- posts an update: a set of dimensions
(``country=es``, ``user=bob``) and stats of five kinds (``../shared/compat/statshub.md``):

* ``counters`` set the id's absolute value of a stat; ``increments`` add to the same value
  (one namespace). Each dimension value's roll-up gains the *change* of the id's value, so
  a roll-up is the sum of what its ids' values moved while they reported that value.
* ``gauges`` set the id's value of a stat for the current *gauge period* (6 minutes by
  default: statshub's 5-minute reporting period plus 1 minute of slack), and the roll-up of
  that period gains the change; so a roll-up per period is the sum over ids of each id's
  last value reported in that period. ``gauges`` reads the last complete period,
  ``gaugesCurrent`` the one in progress.
* ``members`` / ``multiMembers`` add to a unique set per dimension value; its cardinality is
  reported under ``gauges`` (statshub did so).

Who owns what. Two namespaces, each hashed onto partition actors (``engine/actors.py``):

* ``statid``: a :class:`StatIdState` holds one id's *detail*: its absolute counter values
  and, per gauge, ``(period, last value)``. Only this decides a roll-up's change.
* ``statdim``: a :class:`DimValueStats` holds one ``(dimension, value)``'s roll-ups, each
  also a series in the engine's counter store (:class:`~engine.counters.CounterSeries`):
  counter changes at the second they were posted (the roll-up's value at instant T is one
  prefix walk, ``before(T + 1)``), gauge period sums at their period's first second (a
  period's value is one cell, ``cells[start * 8]``), and members as a
  :class:`~engine.uniques.UniqueSeries` (exact sets, then a sketch, per minute .. year).

The path of a write. A change is a fact about the id, and replay must find the same change
for the same record: so the change is decided *before* the record is logged and is part of
it. ``Engine.stats_update`` holds the id's lock, asks the id's actor for a plan
(:meth:`StatIdState.plan`: new absolute values and the changes, a pure read), builds one
:class:`StatsUpdate` holding both, and submits it. Routed, the id gets the new absolute
values (an assignment) and every dimension value its changes and members (additions, each
skipped by an entity that already applied the record: ``applied_seq``). No entity derives
anything from another at apply time, so entities snapshotted at different moments replay to
exactly the live state. The lock is per id: updates of one id are planned and logged in
one order; different ids never wait for each other.

Reads: ``GET /stats/<dim>`` asks every value's actor for its figures (one message each) and
adds ``total`` per dimension at query time, as statshub did (members: the sum of
cardinalities; the true union is an option). Neither ``total`` nor any combination of
dimensions is stored.

Limits. statshub bounded nothing, and one update fans out to dimensions x stats roll-ups.
An update is refused whole (``StatsLimit``, a 400 naming the field) past the per-update
bounds (:data:`MAX_UPDATE_DIMS`, :data:`MAX_UPDATE_STATS`, :data:`MAX_UPDATE_ROLLUPS`,
:data:`MAX_UPDATE_MEMBERS`: checked by :func:`validate_update` from sizes alone, so at most
~35 ms of roll-up work is ever accepted in one update), and past the bounds on what is
stored (:data:`MAX_STATS_PER_VALUE`, :data:`MAX_VALUES_PER_DIM`, :data:`MAX_DIMENSIONS`)
or when a roll-up or an id's counter would leave int64, statshub's own type (Go's int64
wrapped silently; the 64-bit JSON encoders then refused the totals). The stored bounds and
int64 are checked by the :class:`StatsLedger` against the states plus the updates still in
flight, before logging; replay never checks them (a logged record always applies). Sums
*across* values (``total``) are not stored and may pass 64 bits: they are answered exactly.

Deliberate differences from statshub, all of them fail-closed or additions: the reserved
value ``total`` is a 400 (statshub: 500); a body that is not an object (``null`` included),
a value that is not a 64-bit integer, a stat or dimension name that is not a printable
non-empty string of at most 200 characters are 400s that change nothing (statshub's Go
decoder read ``null`` as an empty update). Otherwise an update is read as Go read it: keys
match fields case-insensitively, unknown keys are ignored, repeated fields merge
(:func:`statshub_fields`). The per-id member sets statshub wrote and never
read are not kept; member stat names are known per dimension (statshub kept one global list,
so a member stat seen only under ``user`` showed 0 under every ``country``).

Nothing here imports trio or reads the clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from engine.commands import Command, EntityKey, Operation, register
from engine.counters import CounterSeries
from engine.errors import InvalidInput, quote
from engine.events import INT64_MAX, INT64_MIN, check_name
from engine.timebuckets import DAY, HOUR, MINUTE, MONTH, YEAR, bucket_of, bucket_start
from engine.uniques import Member, Partial, UniqueConfig, UniqueSeries, member_of

#: Namespaces (``engine/actors.py``).
STAT_ID = "statid"
STAT_DIM = "statdim"

#: statshub's ``statsPeriod``: its ``reportingPeriod`` (5 minutes, how often clients report)
#: plus one minute for timing differences.
DEFAULT_GAUGE_PERIOD_S = 360
#: The value statshub reserves for its query-time totals.
TOTAL = "total"
# Limits. statshub's real clients (Lantern's proxies and servers) reported a handful of
# dimensions (country, flserver, destport, operatingsystem, user: the archive intervals of
# ../shared/compat/statshub.md name eight) and tens of stats per update. statshub itself set
# no limits, and one update fans out to dimensions x stats roll-ups: a 120 KB body of 64
# dimensions and 10,000 counters made 640,000 series (~450 MB, seconds of one event loop).
# Each limit below is a refusal of the whole update (400, nothing applied), never a cut.
# Measured here (2-core dev machine): a new roll-up series costs ~6.5 us and ~700 bytes, a
# member added to one value's set ~8 us (five levels).

#: Dimensions one update may carry (the precedent: ``engine.density.MAX_PLACEMENT_SPACES``).
MAX_UPDATE_DIMS = 64
#: Distinct stats one update may carry, all kinds together: as many as one dimension value
#: may hold at all (:data:`MAX_STATS_PER_VALUE`).
MAX_UPDATE_STATS = 1_000
#: Roll-up series one update may touch, dimensions x stats: ~27 ms and at most ~3 MB of new
#: series per update, whatever its shape (a real update touches ~5 x 30 = 150).
MAX_UPDATE_ROLLUPS = 4_096
#: Member additions one update may make, members x dimensions (each member joins every
#: value's set): ~35 ms at most. statshub's ``multiMembers`` carried "several" members.
MAX_UPDATE_MEMBERS = 4_096
#: Distinct stats (series of all kinds) one dimension value may hold: two orders of magnitude
#: above the tens statshub's clients used; one value's answer stays under ~40 KB of JSON.
MAX_STATS_PER_VALUE = 1_000
#: Values one dimension may hold. ``GET /stats/<dim>`` answers every value in one body, as
#: statshub's ``QueryDims`` did: 10,000 values of tens of stats is a few MB. statshub's
#: dimensions were countries (~250), servers and ports.
MAX_VALUES_PER_DIM = 10_000
#: Dimension names in all (statshub's deployment archived eight).
MAX_DIMENSIONS = 256
#: What member sets keep: minutes to years (as ``engine.uniques``' default), so a count "as
#: of" an instant (the stream's history, the archive export) is rounded out by less than a
#: minute; the all-time count unions year cells only.
MEMBER_LEVELS = (MINUTE, HOUR, DAY, MONTH, YEAR)
#: The kinds of a stat as the stream and history name them.
KINDS = ("counter", "gauge", "member")

_INT_KINDS = ("counters", "increments", "gauges")
_MEMBER_KINDS = ("members", "multiMembers")
#: The fields of statshub's update struct (its JSON tags).
FIELDS = ("dims", "counters", "increments", "gauges", "members", "multiMembers")


############################################################################################
# Validation
############################################################################################


class StatsLimit(InvalidInput):
    """An update refused by a limit of this module (sizes, stored stats and values, int64):
    statshub's ``Unable to post stats`` rather than a decoding error."""


def stat_name(raw: str) -> str:
    """A stat name as statshub stored it: ``-`` becomes ``_`` (case is kept).

    >>> stat_name("bytes-given")
    'bytes_given'
    """
    return raw.replace("-", "_")


def period_start(ts: int, period_s: int) -> int:
    """The start of the gauge period holding ``ts``: periods are aligned to the epoch (Go's
    ``time.Truncate``, which statshub used).

    >>> period_start(1000, 360)
    720
    """
    return ts - ts % period_s


@dataclass(frozen=True, slots=True)
class UpdateInput:
    """One validated statshub update: names normalised, in statshub's order of writing
    (counters, increments, gauges, members), each kind's stats in sorted raw-name order."""

    dims: tuple[tuple[str, str], ...]
    counters: tuple[tuple[str, int], ...]
    increments: tuple[tuple[str, int], ...]
    gauges: tuple[tuple[str, int], ...]
    members: tuple[tuple[str, tuple[Member, ...]], ...]

    def size(self) -> int:
        return len(self.counters) + len(self.increments) + len(self.gauges) + len(self.members)


def _object(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{field} must be an object, got {quote(value)}", field)
    return value


def _int64(value: Any, field: str) -> int:
    # Strict as Go's decoder into int64: 1.0, true and "1" are refused, so is 2**63.
    if type(value) is not int:
        raise InvalidInput(f"{field} must be an integer, got {quote(value)}", field)
    if not INT64_MIN <= value <= INT64_MAX:
        raise InvalidInput(f"{field} must be a 64-bit integer ({INT64_MIN} .. {INT64_MAX}), got {quote(value)}", field)
    return value


def go_fold(name: str) -> str:
    """``name`` folded as Go's ``encoding/json`` folds object keys to match struct fields
    (``bytes.EqualFold``: Unicode simple case folding), for matching against ASCII field
    names: ASCII letters upper-cased, and the two non-ASCII letters whose simple fold orbit
    holds an ASCII one, U+017F LONG S (s) and U+212A KELVIN SIGN (k). Any other character
    is kept, and so matches no field (``"ı".upper()`` is ``"I"`` in Python, but U+0131 does
    not fold to ``i`` in Go).

    >>> go_fold("multiMembers"), go_fold("counter\u017f"), go_fold("\u0131")
    ('MULTIMEMBERS', 'COUNTERS', 'ı')
    """
    out = []
    for ch in name:
        if "a" <= ch <= "z":
            ch = chr(ord(ch) - 32)
        elif ch == "\u017f":
            ch = "S"
        elif ch == "\u212a":
            ch = "K"
        out.append(ch)
    return "".join(out)


_FOLDED_FIELDS = {go_fold(name): name for name in FIELDS}


def statshub_fields(pairs: Iterable[tuple[Any, Any]]) -> dict[str, Any]:
    """An update object's members, in document order (duplicates included), mapped onto
    statshub's fields as its Go decoder (``encoding/json`` into the update struct) did:

    * A key names a field by its JSON tag, exactly or else case-insensitively
      (``Unmarshal``: "preferring an exact match but also accepting a case-insensitive
      match"; :func:`go_fold`), so ``"Counters"`` is ``counters``.
    * A key that names no field is ignored ("Unmarshal ignores ... keys that don't match
      any struct field", unless ``DisallowUnknownFields``, which statshub did not call).
    * All the fields are maps, and a map is filled, not replaced: "Unmarshal reuses the
      existing map, keeping existing entries", so two keys naming one field (``counters``
      and ``Counters``, or a repeated key) merge, the later entry of a stat winning;
      ``null`` sets the map to nil.
    * A value of the wrong type is an error of the whole update (Go reports the first such
      error and statshub answered 400): it is kept, for :func:`validate_update` to refuse.

    >>> statshub_fields([("Counters", {"a": 1}), ("counters", {"b": 2}), ("bogus", 3)])
    {'counters': {'a': 1, 'b': 2}}
    """
    out: dict[str, Any] = {}
    for key, value in pairs:
        name = _FOLDED_FIELDS.get(go_fold(str(key)))  # no two fields fold alike: exact = folded
        if name is None:
            continue
        current = out.get(name)
        if name in out and current is not None and not isinstance(current, dict):
            continue  # an earlier value of the wrong type already fails the update
        if isinstance(value, dict) and isinstance(current, dict):
            current.update(value)
        else:
            out[name] = dict(value) if isinstance(value, dict) else value
    return out


def validate_update(body: Any, field: str = "body") -> UpdateInput:
    """Check a whole statshub update body; ``InvalidInput`` naming the field, else the input.
    Keys are matched to fields as statshub's Go decoder matched them (:func:`statshub_fields`).

    >>> u = validate_update({"dims": {"Country": "ES"}, "counters": {"a-b": 5}, "members": {"m": "x"}})
    >>> u.dims, u.counters, len(u.members[0][1])
    ((('country', 'es'),), (('a_b', 5),), 1)
    >>> validate_update({"dims": {"country": "Total"}})
    Traceback (most recent call last):
    ...
    engine.errors.InvalidInput: body.dims.country: the value 'total' is reserved for statshub's query-time totals
    """
    if not isinstance(body, dict):
        raise InvalidInput(f"{field} must be a JSON object of dims and stats, got {quote(body)}", field)
    body = statshub_fields(body.items())
    raw_dims = _object(body.get("dims"), f"{field}.dims")
    if len(raw_dims) > MAX_UPDATE_DIMS:
        raise StatsLimit(f"{field}.dims: an update may carry at most {MAX_UPDATE_DIMS} dimensions, "
                         f"got {len(raw_dims)}", f"{field}.dims")
    raw = {kind: _object(body.get(kind), f"{field}.{kind}") for kind in (*_INT_KINDS, *_MEMBER_KINDS)}
    # Sizes first, before any name is read: a refused update costs O(its keys), not more.
    count = 0
    for kind, stats in raw.items():
        count += len(stats)
        if count > MAX_UPDATE_STATS:
            raise StatsLimit(f"{field}.{kind}: an update may carry at most {MAX_UPDATE_STATS} stats of all "
                             f"kinds together, got {sum(len(x) for x in raw.values())}", f"{field}.{kind}")
    if len(raw_dims) * count > MAX_UPDATE_ROLLUPS:
        raise StatsLimit(f"{field}.dims: an update may touch at most {MAX_UPDATE_ROLLUPS} roll-ups "
                         f"(dimensions x stats), got {len(raw_dims)} x {count}; send fewer dimensions "
                         "or stats per update", f"{field}.dims")
    dims: dict[str, str] = {}
    for name in sorted(raw_dims):
        where = f"{field}.dims.{name}"
        check_name(name, f"{field}.dims")
        value = raw_dims[name]
        check_name(value, where)
        value = value.lower()
        if value == TOTAL:
            raise InvalidInput(f"{where}: the value 'total' is reserved for statshub's query-time totals", where)
        dims[name.lower()] = value
    kinds = {
        kind: [(stat_name(check_name(name, f"{field}.{kind}")), _int64(raw[kind][name], f"{field}.{kind}.{name}"))
               for name in sorted(raw[kind])]
        for kind in _INT_KINDS
    }
    members: dict[str, list[Member]] = {}
    single, multi = raw["members"], raw["multiMembers"]
    total_members = len(single)
    fan_out = max(1, len(raw_dims))
    for name in sorted(multi):
        where = f"{field}.multiMembers.{name}"
        items = multi[name]
        if not isinstance(items, list):
            raise InvalidInput(f"{where} must be an array of strings, got {quote(items)}", where)
        total_members += len(items)
        if total_members * fan_out > MAX_UPDATE_MEMBERS:
            raise StatsLimit(f"{where}: an update may make at most {MAX_UPDATE_MEMBERS} member additions "
                             f"(members x dimensions), got at least {total_members} x {fan_out}", where)
    for name in sorted(single):
        stat = stat_name(check_name(name, f"{field}.members"))
        members.setdefault(stat, []).append(_member(single[name], f"{field}.members.{name}"))
    for name in sorted(multi):
        stat = stat_name(check_name(name, f"{field}.multiMembers"))
        where = f"{field}.multiMembers.{name}"
        members.setdefault(stat, []).extend(_member(m, f"{where}[{i}]") for i, m in enumerate(multi[name]))
    return UpdateInput(
        dims=tuple(dims.items()),
        counters=tuple(kinds["counters"]),
        increments=tuple(kinds["increments"]),
        gauges=tuple(kinds["gauges"]),
        members=tuple((stat, tuple(keys)) for stat, keys in members.items()),
    )


def _member(value: Any, field: str) -> Member:
    # statshub's members were strings. A canonical decimal string is kept as its integer and
    # any other string as itself (engine.uniques.member_of): the two kinds never share a key,
    # so "alice" cannot count as the member whose id equals alice's hash.
    if type(value) is not str:
        raise InvalidInput(f"{field} must be a string, got {quote(value)}", field)
    return member_of(value, field)


############################################################################################
# Per id: the detail
############################################################################################


@dataclass(frozen=True, slots=True)
class Plan:
    """What one update does: the id's new detail and the roll-ups' changes."""

    counters: list[tuple[str, int]]        # new absolute values
    gauges: list[tuple[str, int]]          # new values in the update's period
    counter_deltas: list[tuple[str, int]]  # per stat, in first-written order
    gauge_deltas: list[tuple[str, int]]


class StatIdState:
    """One stat id's detail: absolute counter values, and each gauge's last (period, value).

    >>> s = StatIdState()
    >>> p = s.plan(validate_update({"counters": {"a": 50}, "increments": {"b": 5}}), 720)
    >>> s.apply(p.counters, p.gauges, 720); p.counter_deltas
    [('a', 50), ('b', 5)]
    >>> s.plan(validate_update({"counters": {"a": 60}}), 720).counter_deltas
    [('a', 10)]
    """

    __slots__ = ("counters", "gauges", "applied_seq")

    def __init__(self) -> None:
        self.counters: dict[str, int] = {}
        self.gauges: dict[str, tuple[int, int]] = {}
        self.applied_seq = 0

    def plan(self, update: UpdateInput, period: int) -> Plan:
        """The new detail and the changes ``update`` makes in gauge period ``period``, as
        statshub's GETSET / INCRBY sequence made them (a pure read: nothing changes here).

        Raises:
            StatsLimit: an increment would take the id's counter outside int64.

        Runtime complexity: O(stats in the update).
        """
        values: dict[str, int] = {}
        deltas: dict[str, int] = {}
        for stat, value in update.counters:
            old = values.get(stat, self.counters.get(stat, 0))
            values[stat] = value
            deltas[stat] = deltas.get(stat, 0) + value - old
        for stat, delta in update.increments:
            value = values.get(stat, self.counters.get(stat, 0)) + delta
            if not INT64_MIN <= value <= INT64_MAX:
                where = f"body.increments.{stat}"
                raise StatsLimit(f"{where}: the id's counter {quote(stat)} would become {value}, outside statshub's "
                                 f"int64 ({INT64_MIN} .. {INT64_MAX}); nothing was applied", where)
            values[stat] = value
            deltas[stat] = deltas.get(stat, 0) + delta
        gauges: dict[str, int] = {}
        gauge_deltas: dict[str, int] = {}
        for stat, value in update.gauges:
            if stat in gauges:
                old = gauges[stat]
            else:
                last = self.gauges.get(stat)
                old = last[1] if last is not None and last[0] == period else 0
            gauges[stat] = value
            gauge_deltas[stat] = gauge_deltas.get(stat, 0) + value - old
        return Plan(list(values.items()), list(gauges.items()), list(deltas.items()), list(gauge_deltas.items()))

    def apply(self, counters: Iterable[tuple[str, int]], gauges: Iterable[tuple[str, int]], period: int) -> None:
        """Assign a plan's new values (idempotent: a replayed record assigns the same)."""
        self.counters.update(counters)
        for stat, value in gauges:
            self.gauges[stat] = (period, value)

    def to_plain(self) -> list[Any]:
        return [list(self.counters.items()), [[s, p, v] for s, (p, v) in self.gauges.items()]]

    @classmethod
    def from_plain(cls, plain: Sequence[Any]) -> StatIdState:
        state = cls()
        state.counters = {s: v for s, v in plain[0]}
        state.gauges = {s: (p, v) for s, p, v in plain[1]}
        return state


############################################################################################
# Per dimension value: the roll-ups and their series
############################################################################################


@dataclass(frozen=True, slots=True)
class ValueFigures:
    """One dimension value's statshub figures at one instant."""

    counters: dict[str, int]
    gauges: dict[str, int]          # the last complete period
    gauges_current: dict[str, int]  # the period in progress
    members: dict[str, int]         # cardinalities (statshub reports them under gauges)


def year_span(first_ts: int, last_ts: int) -> tuple[int, int]:
    """Whole UTC years around [first_ts, last_ts]: an all-time member count then unions one
    year cell per year (O(1) for a series within one year: its kept count)."""
    return (bucket_start(YEAR, bucket_of(YEAR, first_ts)),
            bucket_start(YEAR, bucket_of(YEAR, last_ts) + 1) - 1)


class DimValueStats:
    """The roll-ups of one (dimension, value): counter and gauge series, member sets.

    >>> d = DimValueStats()
    >>> d.apply(100, 0, [("a", 50)], [("g", 7)], [("m", [1, 2])], UniqueConfig(MEMBER_LEVELS))
    >>> d.figures(360, 0)  # period 0 is in progress at second 0, complete at 360
    ValueFigures(counters={'a': 50}, gauges={}, gauges_current={'g': 7}, members={'m': 2})
    >>> d.figures(360, 360).gauges
    {'g': 7}
    """

    __slots__ = ("counters", "gauges", "members", "applied_seq")

    def __init__(self) -> None:
        #: Counter roll-ups: changes at the second they were posted (value = ``total``).
        self.counters: dict[str, CounterSeries] = {}
        #: Gauge roll-ups: each period's sum at the period's first second.
        self.gauges: dict[str, CounterSeries] = {}
        self.members: dict[str, UniqueSeries] = {}
        self.applied_seq = 0

    def apply(
        self,
        ts: int,
        period: int,
        counter_deltas: Iterable[tuple[str, int]],
        gauge_deltas: Iterable[tuple[str, int]],
        members: Iterable[tuple[str, Sequence[Member]]],
        member_config: UniqueConfig,
    ) -> None:
        """Add one update's changes (a zero change still makes the stat known, as statshub's
        ``INCRBY 0`` created the key).

        Runtime complexity: O(1) per counter and gauge (six cell increments); O(kept levels)
        per member.
        """
        for stat, delta in counter_deltas:
            series = self.counters.get(stat)
            if series is None:
                series = self.counters[stat] = CounterSeries()
            series.add(ts, delta)
        for stat, delta in gauge_deltas:
            series = self.gauges.get(stat)
            if series is None:
                series = self.gauges[stat] = CounterSeries()
            series.add(period, delta)
        for stat, keys in members:
            unique = self.members.get(stat)
            if unique is None:
                unique = self.members[stat] = UniqueSeries(member_config)
            unique.apply([(ts, key) for key in keys])

    ########################################################################################
    # Reads

    def member_count(self, stat: str) -> int:
        """All-time distinct members of ``stat`` (statshub's SCARD)."""
        unique = self.members.get(stat)
        if unique is None or unique.first_ts < 0:
            return 0
        return unique.count(*year_span(unique.first_ts, unique.last_ts)).count

    def member_part(self, stat: str) -> Partial | None:
        """The all-time member set of ``stat`` as a detached union part (for a true union
        across values), or ``None``."""
        unique = self.members.get(stat)
        if unique is None or unique.first_ts < 0:
            return None
        return unique.union_part(*year_span(unique.first_ts, unique.last_ts))[2]

    def figures(self, period_s: int, now: int) -> ValueFigures:
        """statshub's figures at ``now``: counters, the last complete gauge period, the one in
        progress, and member cardinalities.

        Runtime complexity: O(stats); a member count is O(1) within one year of writes.
        """
        current = period_start(now, period_s)
        prior = current - period_s
        gauges: dict[str, int] = {}
        gauges_current: dict[str, int] = {}
        for stat, series in self.gauges.items():
            cells = series.cells
            value = cells.get(prior * 8)
            if value is not None:
                gauges[stat] = value
            value = cells.get(current * 8)
            if value is not None:
                gauges_current[stat] = value
        return ValueFigures(
            counters={stat: series.total for stat, series in self.counters.items()},
            gauges=gauges,
            gauges_current=gauges_current,
            members={stat: self.member_count(stat) for stat in self.members},
        )

    def counter_levels(self, stat: str, bounds: Sequence[int]) -> list[int] | None:
        """The counter's roll-up at the end of each period [bounds[i], bounds[i+1]): its value
        as of the last second of the period; ``None`` if the stat is unknown here."""
        series = self.counters.get(stat)
        if series is None:
            return None
        return [series.before(b) for b in bounds[1:]]

    def counter_changes(self, stat: str, bounds: Sequence[int]) -> list[int] | None:
        series = self.counters.get(stat)
        return None if series is None else series.period_sums(bounds)

    def gauge_sums(self, stat: str, bounds: Sequence[int]) -> list[int] | None:
        """Per period, the sum of the gauge periods that start in it."""
        series = self.gauges.get(stat)
        return None if series is None else series.period_sums(bounds)

    def member_breakdown(self, stat: str, bounds: Sequence[int]) -> list[int] | None:
        """Distinct members seen in each period (edges rounded out to whole minutes)."""
        unique = self.members.get(stat)
        if unique is None:
            return None
        return [c.count for c in unique.breakdown(bounds)]

    def member_parts(self, stat: str, bounds: Sequence[int]) -> list[Partial] | None:
        unique = self.members.get(stat)
        if unique is None:
            return None
        return [unique.union_part(a, b - 1)[2] for a, b in zip(bounds, bounds[1:], strict=False)]

    ########################################################################################
    # Snapshots

    def to_plain(self) -> list[Any]:
        return [
            [[s, series.to_plain()] for s, series in self.counters.items()],
            [[s, series.to_plain()] for s, series in self.gauges.items()],
            [[s, unique.to_plain()] for s, unique in self.members.items() if unique.config is not None],
        ]

    @classmethod
    def from_plain(cls, plain: Sequence[Any]) -> DimValueStats:
        state = cls()
        state.counters = {s: CounterSeries.from_plain(p) for s, p in plain[0]}
        state.gauges = {s: CounterSeries.from_plain(p) for s, p in plain[1]}
        state.members = {s: UniqueSeries.from_plain(p) for s, p in plain[2]}
        return state

    def _check(self) -> None:
        for series in (*self.counters.values(), *self.gauges.values()):
            series._check()
        for unique in self.members.values():
            unique._check()


############################################################################################
# Limits on what is stored, and int64 roll-ups: the ledger of updates in flight
############################################################################################


class _Pending:
    """What the updates in flight to one (dimension, value) add once applied."""

    __slots__ = ("refs", "series", "counters", "gauges")

    def __init__(self) -> None:
        self.refs = 0
        self.series: set[tuple[str, str]] = set()        # (kind, stat) not yet in the state
        self.counters: dict[str, int] = {}               # stat -> sum of pending changes
        self.gauges: dict[tuple[str, int], int] = {}     # (stat, period) -> sum of pending changes


class Reservation:
    """One update's share of a :class:`StatsLedger`, released per value as each value's
    roll-up applies it (``StatsUpdate``'s operation), or whole if it never reached the log."""

    __slots__ = ("ledger", "shares", "new_values", "routed")

    def __init__(self, ledger: StatsLedger) -> None:
        self.ledger = ledger
        #: (dim, value) -> (new series, counter changes, gauge changes keyed by (stat, period))
        self.shares: dict[tuple[str, str], tuple[set[tuple[str, str]], dict[str, int], dict[tuple[str, int], int]]] = {}
        self.new_values: list[tuple[str, str]] = []
        #: Set when the command was routed under a real sequence number (it is in the log).
        self.routed = False

    def release_value(self, key: tuple[str, str]) -> None:
        """The value ``key`` applied this update: its share is in the state now."""
        share = self.shares.pop(key, None)
        if share is not None:
            self.ledger._release(key, share)

    def release_unrouted(self) -> None:
        """The update never reached the log: give back everything it held (values it was
        the first to name are forgotten unless an update since created them)."""
        if self.routed:
            return
        for key in list(self.shares):
            self.release_value(key)
        self.ledger._forget(self.new_values)
        self.new_values = []


class StatsLedger:
    """Checks an update against the limits on stored stats (:data:`MAX_STATS_PER_VALUE`,
    :data:`MAX_VALUES_PER_DIM`, :data:`MAX_DIMENSIONS`) and statshub's int64 roll-ups before
    it is logged, exactly, although earlier updates may still be in flight.

    A roll-up's state shows only the updates its actor has applied. Updates logged but not
    yet applied are held here, per value: the series they will create and the changes they
    will add. A check reads the state (between actor turns, so it is consistent) plus these;
    a passed check adds its update's share at once, in the same synchronous step, so two
    updates in flight can never both take the last free slot or both push a roll-up past
    int64. Each value's share is released by the operation that applies it.

    Runtime complexity: :meth:`reserve` is O(dimensions x stats) of the update (bounded by
    :data:`MAX_UPDATE_ROLLUPS`); building the ledger is O(values) once per engine.
    """

    def __init__(self, states: Mapping[Any, Any]) -> None:
        #: The router's live ``statdim`` directory: (dim, value) -> DimValueStats.
        self.states = states
        #: Known and reserved values per dimension.
        self.values: dict[str, set[str]] = {}
        for dim, value in list(states):
            self.values.setdefault(dim, set()).add(value)
        self.pending: dict[tuple[str, str], _Pending] = {}

    def reserve(self, update: UpdateInput, plan: Plan, period: int) -> Reservation:
        """Check ``update`` (planned as ``plan`` in gauge period ``period``) and hold its
        share; ``StatsLimit`` naming the field, with nothing held, when it does not fit."""
        reservation = Reservation(self)
        if not update.dims or not (plan.counter_deltas or plan.gauge_deltas or update.members):
            return reservation
        names = [("counter", s) for s, _ in plan.counter_deltas] + [("gauge", s) for s, _ in plan.gauge_deltas]
        names += [("member", s) for s, _ in update.members]
        increments = {s for s, _ in update.increments}
        new_dims = [dim for dim, _ in update.dims if dim not in self.values]
        if new_dims and len(self.values) + len(new_dims) > MAX_DIMENSIONS:
            raise StatsLimit(f"body.dims.{new_dims[0]}: at most {MAX_DIMENSIONS} dimensions are kept, and "
                             f"{len(self.values)} exist; report under an existing dimension", f"body.dims.{new_dims[0]}")
        shares = {}
        for dim, value in update.dims:
            where = f"body.dims.{dim}"
            known = self.values.get(dim, ())
            if value not in known and len(known) >= MAX_VALUES_PER_DIM:
                raise StatsLimit(f"{where}: dimension {quote(dim)} already holds {len(known)} values, the most "
                                 f"kept per dimension ({MAX_VALUES_PER_DIM}); {quote(value)} is refused", where)
            key = (dim, value)
            state = self.states.get(key)
            pending = self.pending.get(key)
            new = {n for n in names if not _holds(state, n) and (pending is None or n not in pending.series)}
            held = len(state.counters) + len(state.gauges) + len(state.members) if state is not None else 0
            held += len(pending.series) if pending is not None else 0
            if new and held + len(new) > MAX_STATS_PER_VALUE:
                raise StatsLimit(f"{where}: {dim}={quote(value)} holds {held} stats and this update adds "
                                 f"{len(new)}: at most {MAX_STATS_PER_VALUE} distinct stats are kept per "
                                 "dimension value", where)
            for stat, delta in plan.counter_deltas:
                roll = state.counters.get(stat) if state is not None else None
                now = (roll.total if roll is not None else 0) + (pending.counters.get(stat, 0) if pending else 0)
                if not INT64_MIN <= now + delta <= INT64_MAX:
                    kind = "increments" if stat in increments else "counters"
                    raise StatsLimit(_int64_refusal(f"body.{kind}.{stat}", stat, dim, value, now + delta),
                                     f"body.{kind}.{stat}")
            for stat, delta in plan.gauge_deltas:
                roll = state.gauges.get(stat) if state is not None else None
                now = (roll.cells.get(period * 8, 0) if roll is not None else 0)
                now += pending.gauges.get((stat, period), 0) if pending else 0
                if not INT64_MIN <= now + delta <= INT64_MAX:
                    raise StatsLimit(_int64_refusal(f"body.gauges.{stat}", stat, dim, value, now + delta),
                                     f"body.gauges.{stat}")
            shares[key] = (new, dict(plan.counter_deltas), {(s, period): d for s, d in plan.gauge_deltas})
        # Every check passed: hold the shares (nothing above changed the ledger).
        for key, share in shares.items():
            dim, value = key
            known_values = self.values.setdefault(dim, set())
            if value not in known_values:
                known_values.add(value)
                reservation.new_values.append(key)
            pending = self.pending.get(key)
            if pending is None:
                pending = self.pending[key] = _Pending()
            pending.refs += 1
            pending.series |= share[0]
            for stat, delta in share[1].items():
                pending.counters[stat] = pending.counters.get(stat, 0) + delta
            for slot, delta in share[2].items():
                pending.gauges[slot] = pending.gauges.get(slot, 0) + delta
        reservation.shares = shares
        return reservation

    def _release(self, key: tuple[str, str], share: tuple[set[tuple[str, str]], dict[str, int],
                                                          dict[tuple[str, int], int]]) -> None:
        pending = self.pending.get(key)
        if pending is None:
            return
        pending.series -= share[0]
        for stat, delta in share[1].items():
            left = pending.counters.get(stat, 0) - delta
            if left:
                pending.counters[stat] = left
            else:
                pending.counters.pop(stat, None)
        for slot, delta in share[2].items():
            left = pending.gauges.get(slot, 0) - delta
            if left:
                pending.gauges[slot] = left
            else:
                pending.gauges.pop(slot, None)
        pending.refs -= 1
        if pending.refs <= 0:
            del self.pending[key]

    def _forget(self, keys: Iterable[tuple[str, str]]) -> None:
        for key in keys:
            if key in self.states or key in self.pending:
                continue  # created meanwhile, or held by another update
            values = self.values.get(key[0])
            if values is not None:
                values.discard(key[1])
                if not values:
                    del self.values[key[0]]



def _holds(state: DimValueStats | None, name: tuple[str, str]) -> bool:
    """Whether ``state`` has the series ``(kind, stat)``."""
    if state is None:
        return False
    kind, stat = name
    table = state.counters if kind == "counter" else state.gauges if kind == "gauge" else state.members
    return stat in table


def _int64_refusal(where: str, stat: str, dim: str, value: str, result: int) -> str:
    return (f"{where}: the roll-up of {quote(stat)} under {dim}={quote(value)} would become {result}, outside "
            f"statshub's int64 ({INT64_MIN} .. {INT64_MAX}); nothing was applied")


def stream_series(
    state: DimValueStats, kind: str, stat: str, slots: Sequence[tuple[int, int, int]],
    now: int, current: int, period_s: int,
) -> list[dict[int, int]]:
    """One value's stream history: per ``(asOf, start, end)`` slot the samples statshub's
    ``MAX(stat)`` per period is taken over, as ``{instant: value}`` (empty where the value
    had no data): for a counter, or a member stat read as a gauge, one sample, the figure at
    the slot's end (or ``now``); for a gauge, every complete gauge period starting in the
    slot that has a roll-up, keyed by its start (so a total can be summed per period before
    its maximum is taken, as statshub's ``total`` row was).

    Runtime complexity: one prefix walk per slot (counters), one union per slot (members);
    gauges: one lookup per day of the slots, per hour of a day with data, and per period of
    an hour with data (:func:`gauge_periods`).
    """
    out: list[dict[int, int]] = [{} for _ in slots]
    if kind == "gauge" and stat in state.members:
        unique = state.members[stat]
        if unique.first_ts < 0:
            return out
        origin = year_span(unique.first_ts, unique.first_ts)[0]
        for i, (_, _, end) in enumerate(slots):
            end = min(end, now + 1)
            if end > unique.first_ts:
                out[i][end] = unique.count(origin, end - 1).count
        return out
    if kind == "counter":
        series = state.counters.get(stat)
        if series is None or series.first_ts < 0:
            return out
        for i, (_, _, end) in enumerate(slots):
            end = min(end, now + 1)
            if end > series.first_ts:
                out[i][end] = series.before(end)
        return out
    series = state.gauges.get(stat)
    if series is None or series.first_ts < 0:
        return out
    for i, (_, start, end) in enumerate(slots):
        out[i] = gauge_periods(series, start, min(end, current), period_s)  # complete periods only
    return out


def stream_figure(state: DimValueStats, kind: str, stat: str, period_s: int, now: int) -> int | None:
    """One value's live stream figure of ``stat`` at ``now``, as statshub's query gave it: a
    counter's roll-up; for ``gauge``, a member stat's cardinality (statshub reported members
    under gauges), else the last complete gauge period's roll-up. ``None`` where the value
    has no such figure (the stream shows 0)."""
    if kind == "counter":
        series = state.counters.get(stat)
        return None if series is None else series.total
    if stat in state.members:
        return state.member_count(stat)
    series = state.gauges.get(stat)
    if series is None:
        return None
    return series.cells.get((period_start(now, period_s) - period_s) * 8)


def gauge_periods(series: CounterSeries, start: int, stop: int, period_s: int) -> dict[int, int]:
    """The roll-up of every gauge period starting in [start, stop) that has one, by start.

    A period's roll-up is the second-level cell at its start; the day and hour cells above
    it exist only where some period has one, so empty days and hours cost one lookup each
    instead of one per period (a year of 6-minute periods is 87,600 of them).

    >>> s = CounterSeries(); s.add(720, 5); s.add(86400 + 360, 7)
    >>> gauge_periods(s, 0, 2 * 86400, 360)
    {720: 5, 86760: 7}
    """
    lo, hi = max(start, series.first_ts), min(stop - 1, series.last_ts)
    found: dict[int, int] = {}
    if lo > hi:
        return found
    get = series.cells.get
    for day in range(lo // 86400, hi // 86400 + 1):
        if get(day * 8 + 3) is None:
            continue
        for hour in range(max(lo, day * 86400) // 3600, min(hi, day * 86400 + 86399) // 3600 + 1):
            if get(hour * 8 + 2) is None:
                continue
            first = max(lo, hour * 3600)
            for period in range(-(-first // period_s) * period_s, min(hi, hour * 3600 + 3599) + 1, period_s):
                value = get(period * 8)
                if value is not None:
                    found[period] = value
    return found


def archive_rows(state: DimValueStats, stamps: Sequence[int], period_s: int) -> list[tuple[dict[str, int], dict[str, int]]]:
    """statshub's archive rows of one value at each instant of ``stamps``: counters as of the
    instant, gauges of the last gauge period complete then, member counts as of the instant
    (reported with the gauges, overriding a gauge of the same name, as statshub's query did).

    Runtime complexity: one prefix walk per counter and stamp, one cell per gauge and stamp,
    one union per member stat and stamp.
    """
    rows = []
    for ts in stamps:
        counters = {s: series.before(ts + 1) for s, series in state.counters.items() if series.first_ts <= ts}
        prior = period_start(ts, period_s) - period_s
        gauges = {}
        for s, series in state.gauges.items():
            value = series.cells.get(prior * 8)
            if value is not None:
                gauges[s] = value
        for s, unique in state.members.items():
            if 0 <= unique.first_ts <= ts:
                gauges[s] = unique.count(year_span(unique.first_ts, unique.first_ts)[0], ts).count
        rows.append((counters, gauges))
    return rows


############################################################################################
# Query-time totals (statshub's synthetic "total" value)
############################################################################################


def statshub_maps(figures: ValueFigures, member_names: Iterable[str]) -> dict[str, dict[str, int]]:
    """One value's answer in statshub's shape: ``counters``, ``gauges`` (member counts
    override gauges of the same name, and every member stat known in the dimension shows,
    0 where this value has none: statshub SCARDed each known name), ``gaugesCurrent``;
    empty maps omitted (Go's ``omitempty``)."""
    gauges = dict(figures.gauges)
    for stat in member_names:
        gauges[stat] = figures.members.get(stat, 0)
    out: dict[str, dict[str, int]] = {}
    if figures.counters:
        out["counters"] = figures.counters
    if gauges:
        out["gauges"] = gauges
    if figures.gauges_current:
        out["gaugesCurrent"] = figures.gauges_current
    return out


def totals(values: Mapping[str, Mapping[str, Mapping[str, int]]]) -> dict[str, dict[str, int]]:
    """statshub's ``total``: per map and stat, the sum over the values that have it.

    >>> totals({"es": {"counters": {"a": 1}}, "de": {"counters": {"a": 2}, "gauges": {"g": 3}}})
    {'counters': {'a': 3}, 'gauges': {'g': 3}}
    """
    out: dict[str, dict[str, int]] = {}
    for maps in values.values():
        for name, stats in maps.items():
            target = out.setdefault(name, {})
            for stat, value in stats.items():
                target[stat] = target.get(stat, 0) + value
    return {name: out[name] for name in ("counters", "gauges", "gaugesCurrent") if out.get(name)}


############################################################################################
# The command
############################################################################################


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class StatsUpdate(Command):
    """One statshub POST: the id's new detail and every dimension value's changes, decided
    when it was planned (module docstring) so that replay applies exactly the same."""

    op: ClassVar[str] = "statshub"
    stat_id: str
    ts: int
    period: int
    dims: list[tuple[str, str]]
    counters: list[tuple[str, int]]
    gauges: list[tuple[str, int]]
    counter_deltas: list[tuple[str, int]]
    gauge_deltas: list[tuple[str, int]]
    members: list[tuple[str, list[Member]]]
    member_config: UniqueConfig
    #: The engine's hold on the limits for this update while it is in flight (never logged:
    #: a replayed record has none). See :class:`StatsLedger`.
    reservation: Reservation | None = field(default=None, compare=False)

    def to_plain(self) -> Any:
        return [self.stat_id, self.ts, self.period, self.dims, self.counters, self.gauges,
                self.counter_deltas, self.gauge_deltas, self.members, self.member_config.to_plain()]

    @classmethod
    def from_plain(cls, plain: Any) -> StatsUpdate:
        (stat_id, ts, period, dims, counters, gauges, counter_deltas, gauge_deltas, members,
         config) = plain
        return cls(
            stat_id=stat_id, ts=ts, period=period,
            dims=[(n, v) for n, v in dims],
            counters=[(s, v) for s, v in counters],
            gauges=[(s, v) for s, v in gauges],
            counter_deltas=[(s, v) for s, v in counter_deltas],
            gauge_deltas=[(s, v) for s, v in gauge_deltas],
            members=[(s, list(keys)) for s, keys in members],
            member_config=UniqueConfig.from_plain(config),
        )

    def has_effect(self) -> bool:
        """Whether routing would touch any entity (an update with neither detail nor
        dimensions changes nothing and is not logged)."""
        return bool(self.counters or self.gauges
                    or (self.dims and (self.counter_deltas or self.gauge_deltas or self.members)))

    def route(self, seq: int, router: Any = None) -> dict[EntityKey, Operation]:
        if self.reservation is not None and seq > 0:
            self.reservation.routed = True
        routes: dict[EntityKey, Operation] = {}
        if self.counters or self.gauges:
            counters, gauges, period = self.counters, self.gauges, self.period

            def detail(state: StatIdState) -> None:
                if state.applied_seq < seq:
                    state.apply(counters, gauges, period)
                    state.applied_seq = seq

            routes[(STAT_ID, self.stat_id)] = detail
        if self.counter_deltas or self.gauge_deltas or self.members:
            for dim in self.dims:
                routes[(STAT_DIM, dim)] = self._rollup(seq, dim)
        return routes

    def _rollup(self, seq: int, key: tuple[str, str]) -> Operation:
        ts, period, config = self.ts, self.period, self.member_config
        counter_deltas, gauge_deltas, members = self.counter_deltas, self.gauge_deltas, self.members
        reservation = self.reservation

        def rollup(state: DimValueStats) -> None:
            if state.applied_seq < seq:
                state.apply(ts, period, counter_deltas, gauge_deltas, members, config)
                state.applied_seq = seq
            if reservation is not None:  # the value's state now holds what was reserved
                reservation.release_value(key)

        return rollup

    def size(self) -> int:
        return len(self.counter_deltas) + len(self.gauge_deltas) + len(self.members)


def build_update(stat_id: str, ts: int, period: int, update: UpdateInput, plan: Plan,
                 member_config: UniqueConfig, reservation: Reservation | None = None) -> StatsUpdate:
    """The logged command for a planned update."""
    return StatsUpdate(
        reservation=reservation,
        stat_id=stat_id, ts=ts, period=period, dims=list(update.dims),
        counters=plan.counters, gauges=plan.gauges,
        counter_deltas=plan.counter_deltas, gauge_deltas=plan.gauge_deltas,
        members=[(stat, list(keys)) for stat, keys in update.members],
        member_config=member_config,
    )


def member_config_from(levels_config: UniqueConfig) -> UniqueConfig:
    """Member sets keep :data:`MEMBER_LEVELS` with the engine's exact limit and precision."""
    return UniqueConfig(MEMBER_LEVELS, levels_config.exact_limit, levels_config.lg_k)


def check_stat_id(raw: Any) -> str:
    """A stat id: statshub took the path's last segment as it was; we refuse what no
    client sends (control characters, over 200 characters, empty)."""
    return check_name(raw, "id")


__all__ = [
    "DEFAULT_GAUGE_PERIOD_S",
    "FIELDS",
    "archive_rows",
    "KINDS",
    "STAT_DIM",
    "STAT_ID",
    "TOTAL",
    "DimValueStats",
    "MAX_DIMENSIONS",
    "MAX_STATS_PER_VALUE",
    "MAX_UPDATE_DIMS",
    "MAX_UPDATE_MEMBERS",
    "MAX_UPDATE_ROLLUPS",
    "MAX_UPDATE_STATS",
    "MAX_VALUES_PER_DIM",
    "Reservation",
    "StatsLedger",
    "StatsLimit",
    "gauge_periods",
    "Plan",
    "StatIdState",
    "StatsUpdate",
    "UpdateInput",
    "ValueFigures",
    "build_update",
    "check_stat_id",
    "go_fold",
    "member_config_from",
    "period_start",
    "stat_name",
    "statshub_fields",
    "statshub_maps",
    "stream_figure",
    "stream_series",
    "totals",
    "validate_update",
    "year_span",
]
