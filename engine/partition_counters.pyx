# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""User counters of one partition, packed into shared arrays: the compiled write path.

Theory of operation
-------------------
``engine/counters.py`` keeps a user's counters as a tree of Python objects: per metric, a
:class:`~engine.prefix_series.PrefixSeries` per activity type (two ``array("q")`` each) and an
:class:`~engine.counters.Activity` per activity (an object and an array each). On a sparse feed
(10,000 users, bench/bench_ingest.py) a write touches about a dozen of those objects, cold, and
creates one or two; that, not arithmetic, is where its ~5 us went, and neither Cython on the
same objects (1.2-1.3x) nor the same layout as flat Python arrays (no gain) changed it
(issue 17's closing notes give the figures).

Here the tree stops one level higher. A :class:`PartitionCounters` holds every user of one
partition actor (its entity states are :class:`PackedUser` views of it). Series and
activities are *rows* of packed int64 arrays shared by the whole partition:

* a series row is ``(start, len, cap, first, last, horizon)``: a segment ``[start,
  start + cap)`` of two arenas, ``starts`` and ``sums``, holding the seconds with writes and
  the running total through each, exactly a ``PrefixSeries``' two columns. A write at or
  after the last second appends in place; a full segment moves to the arena's end at twice
  the size, and the arenas are packed once a quarter of them is such holes. A read is a
  binary search in C.
* an activity row is ``(type, total, first, last, indexed month, start, len, cap, aid)`` and a
  segment of the points arena: ``(second, delta)`` pairs interleaved, as ``Activity.points``.

Rows are row-major (one cache line per write, where a column per field cost a miss per
field), and a write finds them through a *key table* in C: open addressing over ``(user
number, metric number * 2 + kind, type or aid) -> row``, so the hot path touches one Python
dict (the user's record, once per user per batch) instead of four cold ones; perf put dict
lookups at a third of a sparse write's time before it. Its slots are 24 bytes (the user's and
the metric-kind numbers share one int64): the table is a large part of a sparse feed's bytes.
Per (user, metric) a small :class:`UserMetric` keeps what reads and snapshots enumerate
(types -> series, activity rows, and ``MetricCounters``' ``{month: {aid: atid}}`` index as
sorted ``(month, activity row)`` int64 pairs), written when something is created or an
activity first writes in a month. Records and ``UserMetric`` hold only ints, arrays and dicts
of ints, so they are kept out of the cyclic garbage collector, which otherwise walked every
user's state. (The index was dicts of Python ints: 28 of a sparse feed's 164 bytes per event
at 2M, and an allocation on each new activity; as pairs it is 8.)

A batch reaches a store already split by ``share_events`` (in C, from the batch's own tuples)
and is applied by ``apply_share_at`` in one call per partition; each user's ``applied_seq``
still skips what a snapshot already holds.

Anything uncommon is not rewritten here: a series or activity that needs it is *promoted* to
the Python object it would be in ``engine/counters.py`` (built from its segment) and from then
on that object answers for it. Promotion happens on a write more than ``LATE_IN_PLACE``
entries before the series' end (``PrefixSeries`` holds such late writes and merges them in
bulk; nearer ones, what concurrent clients' batches produce, are merged in place by
``merge_late``), a running total or delta leaving int64 (objects widen to Python ints), and
retention (``PrefixSeries.expire`` / ``Activity.expire``). :meth:`compact` moves promoted
objects that are plain again (no held late writes, int64 totals) back into the arenas. So the object classes stay the specification, and the property
tests (tests/engine/test_partition_counters.py) hold this store to ``UserCounters``.

Reads over every activity type sum the type series (there is no all-types series: a write is
one append, not two), answering as one series holding every type would (``_before``).

Nothing here imports trio or reads the clock. Built by setup.py (Cython); a plain
``pip install .`` compiles it (gcc), and tests fail if the compiled module is not the one
imported.
"""

cimport cython
from cpython cimport array

ctypedef long long i64

from libc.string cimport memcpy, memmove, memset

import array as py_array
import sys
from operator import itemgetter

from engine.counters import DIFF, RECENT_PAIRS, Activity, CounterStatistics
from engine.prefix_series import PrefixSeries, _round_down, sums_between
from engine.timebuckets import SECOND, month_of_day, month_start_day
from engine.timebuckets import _month_of_day_cache as _MONTHS

cdef extern from *:
    bint add_overflow "__builtin_add_overflow" (i64 a, i64 b, i64* r) nogil

cdef i64 NONE = -(2 ** 63)  # "no horizon" / unset
cdef i64 INT64_MIN_ = -(2 ** 63)
cdef i64 INT64_MAX_ = 2 ** 63 - 1
cdef array.array _TEMPLATE = py_array.array("q")
cdef Py_ssize_t FIRST_CAP = 4
#: A late write (before a series' last second) lands among the last this many entries: merged
#: in place, O(entries after it) in C (a shift and an add per entry, ~1 ns each). Further
#: back, the series is promoted to a ``PrefixSeries``, which holds such writes and merges them
#: in bulk. Concurrent clients deliver batches slightly out of order, so most late writes are
#: a few entries back; promoted, a series stayed an object until retention or ``compact``.
LATE_IN_PLACE = 1024
cdef i64 MAX_NUMBERED = 2 ** 31  # users, and metric numbers * 2 + 1, per partition (owner_of)
DEF KW = 3  # int64 per key-table slot
DEF EMPTY = -1  # key-table slot never used
DEF GONE = -2   # key-table slot whose key was removed (probing goes on past it)
# row layouts
DEF SW = 6
DEF S_START = 0
DEF S_LEN = 1
DEF S_CAP = 2
DEF S_FIRST = 3
DEF S_LAST = 4
DEF S_HZ = 5
DEF AW = 9
DEF A_ATID = 0
DEF A_TOTAL = 1
DEF A_FIRST = 2
DEF A_LAST = 3
DEF A_MONTH = 4
DEF A_START = 5
DEF A_LEN = 6
DEF A_CAP = 7
DEF A_AID = 8
DEF REMOVED = -2  # A_LEN of an activity retention forgot  # entries a new series' segment holds (slots: 2 per point)


cdef inline i64 floordiv(i64 a, i64 b) noexcept nogil:
    cdef i64 q = a // b  # C truncates toward zero
    if (a % b != 0) and ((a < 0) != (b < 0)):
        q -= 1
    return q


cdef extern from *:
    """
    /* An array.array's allocated capacity: the head of CPython's arrayobject
       (Modules/arraymodule.c; Cython's arrayarray.h mirrors it). */
    typedef struct { PyObject_VAR_HEAD char *ob_item; Py_ssize_t allocated; } pc_arrayhead;
    static CYTHON_INLINE Py_ssize_t pc_allocated(PyObject *a) { return ((pc_arrayhead *)a)->allocated; }
    static CYTHON_INLINE void pc_set_size(PyObject *a, Py_ssize_t n) { Py_SET_SIZE(a, n); }
    """
    Py_ssize_t pc_allocated(object a)
    void pc_set_size(object a, Py_ssize_t n)


cdef inline int grow_to(array.array column, Py_ssize_t need) except -1:
    """Make ``column`` ``need`` items long, growing its buffer by an eighth when full (as
    CPython's own arrays do; Cython's ``resize_smart`` adds half, which the arenas, tens of
    MB each, would carry as RSS)."""
    if need > pc_allocated(column):
        array.resize(column, need + (need >> 3) + 16)  # sets the length to the capacity
    pc_set_size(column, need)
    return 0


cdef inline Py_ssize_t push(array.array column, i64 value) except -1:
    """Append ``value`` to an int64 array (amortised O(1))."""
    cdef Py_ssize_t n = len(column)
    grow_to(column, n + 1)
    column.data.as_longlongs[n] = value
    return n


cdef inline Py_ssize_t reserve(array.array column, Py_ssize_t size) except -1:
    """Append ``size`` zeros to an int64 array; returns where they start."""
    cdef Py_ssize_t n = len(column)
    grow_to(column, n + size)
    memset(&column.data.as_longlongs[n], 0, size * sizeof(i64))
    return n


cdef inline Py_ssize_t bisect_left(i64* a, Py_ssize_t lo, Py_ssize_t hi, i64 x) noexcept nogil:
    cdef Py_ssize_t mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef inline Py_ssize_t first_pair_from(i64* pairs, Py_ssize_t n, i64 month) noexcept nogil:
    """The first of ``n`` (month, activity) pairs, sorted by month, whose month is >= ``month``."""
    cdef Py_ssize_t lo = 0, hi = n, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if pairs[2 * mid] < month:
            lo = mid + 1
        else:
            hi = mid
    return lo


ctypedef unsigned long long u64


cdef inline i64 owner_of(i64 uid, i64 kind) noexcept nogil:
    """A key's user number and metric-kind number as one int64 (``record_of`` and
    ``metric_id`` keep both below 2^31)."""
    return (uid << 32) | kind


cdef inline u64 mix3(i64 a, i64 b, i64 c) noexcept nogil:
    """A 64-bit hash of three int64 (multiply-xorshift, as splitmix64's finaliser)."""
    cdef u64 h = (<u64>a) * 0x9E3779B97F4A7C15ULL
    h ^= (<u64>b) * 0xC2B2AE3D27D4EB4FULL
    h ^= (<u64>c) * 0x165667B19E3779F9ULL
    h ^= h >> 32
    h *= 0xD6E8FEB86659FD93ULL
    h ^= h >> 32
    return h


@cython.no_gc
cdef class UserRecord:
    """A user of a partition: its number in the store's key table, and its metrics."""

    cdef public i64 uid
    cdef public dict metrics  # metric -> UserMetric, in first-write order

    def __init__(self, i64 uid) -> None:
        self.uid = uid
        self.metrics = {}


@cython.no_gc
cdef class UserMetric:
    """One user's one metric: its series and activity ids, and the activities' month index.

    Not tracked by the cyclic garbage collector: it holds only dicts of ints (and of dicts of
    ints), which cannot form a cycle, and so do the dicts that hold it; a collection then
    walks none of a partition's per-user state (it walked 10,000 users' dicts and objects on
    every full collection, ~10% of a sparse feed's write time)."""

    cdef public dict by_atid      # atid -> series id (in first-write order)
    # activity ids in first-write order (the key table finds one by aid; its row holds the aid)
    cdef public array.array acts
    # The month index (MetricCounters' ``aid_months``): a (month, activity id) pair for each
    # month an activity has points in, sorted by month, activities in first-seen order within
    # a month. A live feed appends; see ``index_month``.
    cdef public array.array months
    cdef public i64 uid, mid      # the user's and the metric's numbers in key-table keys

    def __init__(self, i64 uid, i64 mid) -> None:
        self.uid = uid
        self.mid = mid
        self.by_atid = {}
        self.acts = array.clone(_TEMPLATE, 0, False)
        self.months = array.clone(_TEMPLATE, 0, False)


cdef class PartitionCounters:
    """The counters of every user of one partition (see the module docstring)."""

    # users: user -> UserRecord, in first-write order
    cdef public dict users_
    # metric name -> its number in key-table keys (names are few: this dict stays hot)
    cdef dict metric_ids
    # The key table: open addressing, 24-byte slots of (owner, atid or aid, row id), the owner
    # being (uid, metric number * 2 + kind) in one int64 (``owner_of``); kind 0 keys a series
    # by activity type, 1 an activity by aid. A write finds
    # its series and activity here in C (one or two cache lines), not through three cold
    # Python dicts, which took a third of a sparse feed's write time (perf).
    cdef array.array keys
    cdef Py_ssize_t key_mask, key_used
    # series rows
    # one row of SW int64 per series (start, len, cap, first, last, hz): a write reads one
    # row, so one cache line, where a column per field cost a miss per field
    cdef array.array srows
    cdef dict s_objects   # series id -> PrefixSeries (promoted)
    cdef dict s_horizons  # series id -> retention horizons (arena series)
    cdef array.array starts, sums  # the series arenas
    # activity rows
    # one row of AW int64 per activity (atid, total, first, last, month, start, len, cap, aid)
    cdef array.array arows
    cdef dict a_objects   # activity id -> Activity (promoted)
    cdef array.array points  # the activity arena: (second, delta) pairs
    cdef array.array free_acts  # rows of activities retention forgot, for new ones
    # slots of the arenas no segment uses any more (left by growth, promotion, retention)
    cdef Py_ssize_t dead_entries, dead_points
    # How far back (entries before a series' end) a late write is merged in place; one further
    # back promotes the series (tests set 0 to drive every late write through the objects).
    cdef public Py_ssize_t late_in_place
    # the month of the day last written (most writes of a live feed fall on one day)
    cdef i64 last_day, last_month

    def __init__(self) -> None:
        self.users_ = {}
        self.metric_ids = {}
        self.keys = array.clone(_TEMPLATE, KW * 64, False)
        self.key_mask = 63
        self.key_used = 0
        cdef Py_ssize_t i
        for i in range(64):
            self.keys.data.as_longlongs[KW * i + 2] = EMPTY
        self.srows = array.clone(_TEMPLATE, 0, False)
        self.s_objects = {}
        self.s_horizons = {}
        self.starts = array.clone(_TEMPLATE, 0, False)
        self.sums = array.clone(_TEMPLATE, 0, False)
        self.arows = array.clone(_TEMPLATE, 0, False)
        self.a_objects = {}
        self.points = array.clone(_TEMPLATE, 0, False)
        self.free_acts = array.clone(_TEMPLATE, 0, False)
        self.dead_entries = 0
        self.late_in_place = LATE_IN_PLACE
        self.dead_points = 0
        self.last_day = NONE
        self.last_month = NONE

    ########################################################################################
    # Rows

    cdef inline Py_ssize_t key_find(self, i64 uid, i64 kind, i64 ident) noexcept:
        """The row id keyed by (uid, kind, ident), or -1."""
        cdef i64* slots = self.keys.data.as_longlongs
        cdef Py_ssize_t i = <Py_ssize_t>(mix3(uid, kind, ident) & <u64>self.key_mask)
        cdef i64 owner = owner_of(uid, kind)
        cdef i64* slot
        while True:
            slot = &slots[KW * i]
            if slot[2] == EMPTY:
                return -1
            if slot[0] == owner and slot[1] == ident and slot[2] != GONE:
                return slot[2]
            i = (i + 1) & self.key_mask

    cdef int key_add(self, i64 uid, i64 kind, i64 ident, i64 row) except -1:
        """Key a new row (the key is not in the table)."""
        if 10 * (self.key_used + 1) > 7 * (self.key_mask + 1):  # 70% (removed keys count)
            self.key_grow()
        cdef i64* slots = self.keys.data.as_longlongs
        cdef Py_ssize_t i = <Py_ssize_t>(mix3(uid, kind, ident) & <u64>self.key_mask)
        while slots[KW * i + 2] >= 0:
            i = (i + 1) & self.key_mask
        if slots[KW * i + 2] == EMPTY:
            self.key_used += 1
        slots[KW * i] = owner_of(uid, kind)
        slots[KW * i + 1] = ident
        slots[KW * i + 2] = row
        return 0

    cdef int key_remove(self, i64 uid, i64 kind, i64 ident) except -1:
        cdef i64* slots = self.keys.data.as_longlongs
        cdef Py_ssize_t i = <Py_ssize_t>(mix3(uid, kind, ident) & <u64>self.key_mask)
        cdef i64 owner = owner_of(uid, kind)
        while slots[KW * i + 2] != EMPTY:
            if slots[KW * i] == owner and slots[KW * i + 1] == ident and slots[KW * i + 2] >= 0:
                slots[KW * i + 2] = GONE
                return 0
            i = (i + 1) & self.key_mask
        return 0

    cdef int key_grow(self) except -1:
        """Rehash the live keys into a table a third full (removed keys are dropped)."""
        cdef array.array old = self.keys
        cdef Py_ssize_t old_slots = self.key_mask + 1, i, j, live = 0
        cdef i64* counted = old.data.as_longlongs
        for j in range(old_slots):
            if counted[KW * j + 2] >= 0:
                live += 1
        # At most 35% full after a rehash (removed keys are not moved), so the table runs
        # between 35% and 70% full: linear probing stays short (a hit reads ~2 slots at 70%),
        # growth is amortised O(1) per key, and a table whose keys retention removed shrinks.
        # (Half-full growth into a quarter-full table cost a third more memory: the slots
        # are a large part of a sparse feed's bytes, bench/bench_counters_memory.py.)
        cdef Py_ssize_t slots_n = 64
        while 7 * slots_n < 20 * (live + 1):
            slots_n *= 2
        self.keys = array.clone(_TEMPLATE, KW * slots_n, False)
        self.key_mask = slots_n - 1
        self.key_used = 0
        cdef i64* slots = self.keys.data.as_longlongs
        for i in range(slots_n):
            slots[KW * i + 2] = EMPTY
        cdef i64* src = old.data.as_longlongs
        for j in range(old_slots):
            if src[KW * j + 2] >= 0:
                i = <Py_ssize_t>(mix3(src[KW * j] >> 32, src[KW * j] & 0xFFFFFFFF, src[KW * j + 1])
                                 & <u64>self.key_mask)
                while slots[KW * i + 2] >= 0:
                    i = (i + 1) & self.key_mask
                memcpy(&slots[KW * i], &src[KW * j], KW * sizeof(i64))
                self.key_used += 1
        return 0

    cpdef dict metrics_of(self, object user):
        """``{metric: UserMetric}`` of a user (empty for a user never written)."""
        record = self.users_.get(user)
        return {} if record is None else (<UserRecord>record).metrics

    cdef UserRecord record_of(self, object user):
        """The user's record, created on its first write."""
        cdef UserRecord record = self.users_.get(user)
        if record is None:
            if len(self.users_) >= MAX_NUMBERED:
                raise OverflowError(f"a partition holds at most {MAX_NUMBERED} users")
            record = self.users_[user] = UserRecord(len(self.users_))
        return record

    cdef i64 metric_id(self, object metric) except -1:
        found = self.metric_ids.get(metric)
        if found is None:
            if 2 * len(self.metric_ids) + 1 >= MAX_NUMBERED:
                raise OverflowError(f"a partition holds at most {MAX_NUMBERED // 2} metric names")
            found = self.metric_ids[metric] = len(self.metric_ids)
        return found

    cdef Py_ssize_t new_series(self, UserMetric state, i64 uid, i64 mid, object atid) except -1:
        cdef Py_ssize_t start = reserve(self.starts, FIRST_CAP)
        reserve(self.sums, FIRST_CAP)
        cdef Py_ssize_t sid = reserve(self.srows, SW) // SW
        cdef i64* row = &self.srows.data.as_longlongs[sid * SW]
        row[S_START] = start
        row[S_CAP] = FIRST_CAP
        row[S_FIRST] = -1
        row[S_LAST] = -1
        row[S_HZ] = NONE
        for sibling in state.by_atid.values():
            # After a retention sweep a new type series rounds as its siblings do (as
            # ``MetricCounters.new_series``), so filtered and unfiltered reads agree.
            obj = self.s_objects.get(sibling)
            horizons = self.s_horizons.get(sibling) if obj is None else obj.horizons
            if horizons is not None:
                self.s_horizons[sid] = list(horizons)
                self.srows.data.as_longlongs[sid * SW + S_HZ] = horizons[SECOND]
            break
        state.by_atid[atid] = sid
        self.key_add(uid, 2 * mid, atid, sid)
        return sid

    cdef Py_ssize_t new_activity(self, UserMetric state, i64 uid, i64 mid, object aid, i64 atid) except -1:
        cdef Py_ssize_t start = reserve(self.points, FIRST_CAP)
        cdef Py_ssize_t act, free = len(self.free_acts)
        if free:  # a forgotten activity's row (its key, object and index entries are gone)
            act = self.free_acts.data.as_longlongs[free - 1]
            pc_set_size(self.free_acts, free - 1)
        else:
            act = reserve(self.arows, AW) // AW
        cdef i64* row = &self.arows.data.as_longlongs[act * AW]
        row[A_TOTAL] = 0
        row[A_LEN] = 0
        row[A_START] = start
        row[A_CAP] = FIRST_CAP
        row[A_ATID] = atid
        row[A_FIRST] = -1
        row[A_LAST] = -1
        row[A_MONTH] = NONE
        row[A_AID] = aid
        push(state.acts, act)
        self.key_add(uid, 2 * mid + 1, aid, act)
        return act

    cdef int grow_series(self, Py_ssize_t sid) except -1:
        """Move a full segment to the arenas' end at twice its capacity."""
        cdef Py_ssize_t n = self.srows.data.as_longlongs[sid * SW + S_LEN]
        cdef Py_ssize_t old = self.srows.data.as_longlongs[sid * SW + S_START]
        cdef Py_ssize_t cap = 2 * self.srows.data.as_longlongs[sid * SW + S_CAP]
        cdef Py_ssize_t new = reserve(self.starts, cap)
        reserve(self.sums, cap)
        memcpy(&self.starts.data.as_longlongs[new], &self.starts.data.as_longlongs[old], n * sizeof(i64))
        memcpy(&self.sums.data.as_longlongs[new], &self.sums.data.as_longlongs[old], n * sizeof(i64))
        self.srows.data.as_longlongs[sid * SW + S_START] = new
        self.srows.data.as_longlongs[sid * SW + S_CAP] = cap
        self.dead_entries += cap // 2
        return 0

    cdef int grow_activity(self, Py_ssize_t act) except -1:
        cdef Py_ssize_t n = self.arows.data.as_longlongs[act * AW + A_LEN]
        cdef Py_ssize_t old = self.arows.data.as_longlongs[act * AW + A_START]
        cdef Py_ssize_t cap = 2 * self.arows.data.as_longlongs[act * AW + A_CAP]
        cdef Py_ssize_t new = reserve(self.points, cap)
        memcpy(&self.points.data.as_longlongs[new], &self.points.data.as_longlongs[old], n * sizeof(i64))
        self.arows.data.as_longlongs[act * AW + A_START] = new
        self.arows.data.as_longlongs[act * AW + A_CAP] = cap
        self.dead_points += cap // 2
        return 0

    ########################################################################################
    # Writing

    def apply_share(self, dict items) -> None:
        """Apply each user's events, in the share's order."""
        for user, events in items.items():
            self.apply(user, events)
        self.maybe_pack()

    def apply_share_rows(self, dict items) -> None:
        """``apply_share`` of ``{user: [UserEvent, ...]}`` (``share_events``'s shares)."""
        for user, events in items.items():
            self.apply_from(user, events, 1)
        self.maybe_pack()

    def apply_share_at(self, seq: int, dict items, dict states) -> None:
        """Apply the share of log record ``seq`` (``{user: [UserEvent, ...]}``, as
        ``share_events`` makes it): each user's events unless its state
        (``states[user]``, a :class:`PackedUser`) already applied ``seq`` (a replay after a
        snapshot taken during writes), then mark it applied."""
        cdef PackedUser state
        cdef u64 at = seq
        for user, events in items.items():
            state = states[user]
            if state.applied_seq < at:
                try:
                    self.apply_from(user, events, 1)
                finally:
                    # Marked even if it failed part way: the share's entity-by-entity redo
                    # (engine/actors.py) must not apply its first events twice.
                    state.applied_seq = at
        self.maybe_pack()

    cpdef maybe_pack(self):
        """Pack the arenas once a quarter of either is dead (growth alone leaves up to half of
        a series' capacity behind, so packing keeps them within ~1.5x of what is live);
        amortised O(1) per write."""
        if (self.dead_entries > 65536 and 4 * self.dead_entries > len(self.starts)) or (
                self.dead_points > 65536 and 4 * self.dead_points > len(self.points)):
            self.pack()

    cpdef apply(self, object user, object events):
        """Apply validated counter events (``engine.counters.CounterEvent``) of ``user`` in
        order, exactly as ``UserCounters.apply`` would."""
        self.apply_from(user, events, 0)

    cpdef apply_rows(self, object user, object events):
        """``apply`` for the batch's own event tuples, which lead with the user
        (``engine.events.UserEvent``; ``share_events`` groups them without copying)."""
        self.apply_from(user, events, 1)

    cdef int apply_from(self, object user, object events, Py_ssize_t skip) except -1:
        cdef UserRecord record = self.users_.get(user)
        cdef UserMetric state
        cdef object metric, atid_o, aid_o, ts_o, value_o, ts1_o, mode_o, found, delta_o, prior_o
        cdef object last_metric = None
        cdef i64 ts, delta, running, month, day, uid, mid = -1, atid, aid = 0
        cdef Py_ssize_t sid, act, n, i, start
        cdef bint narrow
        cdef tuple event
        uid = -1 if record is None else record.uid
        for event in events:
            if len(event) != skip + 7:  # (indexing below is unchecked: a short tuple would crash)
                raise ValueError(f"a counter event has {skip + 7} fields, got {len(event)}: {event!r}")
            metric = event[skip]
            atid_o = event[skip + 1]
            aid_o = event[skip + 2]
            ts_o = event[skip + 3]
            value_o = event[skip + 4]
            ts1_o = event[skip + 5]
            mode_o = event[skip + 6]
            ts = ts_o
            atid = atid_o
            if metric is not last_metric:
                found = self.metric_ids.get(metric)
                mid = -1 if found is None else found
                last_metric = metric
            act = -1
            if aid_o is not None:
                aid = aid_o
                if uid >= 0 and mid >= 0:
                    act = self.key_find(uid, 2 * mid + 1, aid)
            if mode_o == DIFF and aid_o is not None:
                if act < 0:
                    prior_o = 0
                elif (self.arows.data.as_longlongs[act * AW + A_LEN] >= 0
                      and <i64>ts1_o <= self.arows.data.as_longlongs[act * AW + A_FIRST]
                      and ts >= self.arows.data.as_longlongs[act * AW + A_LAST]):
                    prior_o = self.arows.data.as_longlongs[act * AW + A_TOTAL]
                else:
                    prior_o = self.activity_range_sum(act, ts1_o, ts_o)
                delta_o = value_o - prior_o
                if delta_o == 0:
                    continue  # a replayed report: nothing new (and nothing created)
            else:
                delta_o = value_o
            narrow = INT64_MIN_ <= delta_o <= INT64_MAX_
            delta = delta_o if narrow else 0
            sid = self.key_find(uid, 2 * mid, atid) if uid >= 0 and mid >= 0 else -1
            if sid < 0 or (aid_o is not None and act < 0):
                # Something new for this user: a series, an activity (or the user, a metric)
                if record is None:
                    record = self.record_of(user)
                    uid = record.uid
                if mid < 0:
                    mid = self.metric_id(metric)
                state = record.metrics.get(metric)
                if state is None:
                    state = record.metrics[metric] = UserMetric(uid, mid)
                if aid_o is not None and act < 0:
                    act = self.new_activity(state, uid, mid, aid_o, atid)
                if sid < 0:
                    sid = self.new_series(state, uid, mid, atid_o)
            n = self.srows.data.as_longlongs[sid * SW + S_LEN]
            if (narrow and n >= 0 and ts >= self.srows.data.as_longlongs[sid * SW + S_HZ]
                    and (n == 0 or ts >= self.srows.data.as_longlongs[sid * SW + S_LAST])):
                start = self.srows.data.as_longlongs[sid * SW + S_START]
                if n and ts == self.srows.data.as_longlongs[sid * SW + S_LAST]:
                    i = start + n - 1
                    if add_overflow(self.sums.data.as_longlongs[i], delta, &running):
                        self.series_object(sid).add(ts_o, delta_o)
                    else:
                        self.sums.data.as_longlongs[i] = running
                else:
                    if n == 0:
                        running = delta
                    elif add_overflow(self.sums.data.as_longlongs[start + n - 1], delta, &running):
                        self.series_object(sid).add(ts_o, delta_o)
                        n = -1
                    if n >= 0:
                        if n == self.srows.data.as_longlongs[sid * SW + S_CAP]:
                            self.grow_series(sid)
                            start = self.srows.data.as_longlongs[sid * SW + S_START]
                        self.starts.data.as_longlongs[start + n] = ts
                        self.sums.data.as_longlongs[start + n] = running
                        self.srows.data.as_longlongs[sid * SW + S_LEN] = n + 1
                        if n == 0:
                            self.srows.data.as_longlongs[sid * SW + S_FIRST] = ts
                        self.srows.data.as_longlongs[sid * SW + S_LAST] = ts
            elif not (narrow and n > 0 and ts >= self.srows.data.as_longlongs[sid * SW + S_HZ]
                      and self.merge_late(sid, ts, delta)):
                self.series_object(sid).add(ts_o, delta_o)
            if act < 0:
                continue
            # The activity (Activity.add)
            n = self.arows.data.as_longlongs[act * AW + A_LEN]
            if narrow and n >= 0 and self.activity_add(act, ts, delta):
                pass
            else:
                self.activity_object(act).add(ts_o, delta_o)
            # ``aid_months`` (MetricCounters'): most writes stay in the indexed month, and a
            # live feed's days arrive in order (the last day's month is kept)
            day = floordiv(ts, 86400)
            if day == self.last_day:
                month = self.last_month
            else:
                found = _MONTHS.get(day)
                month = month_of_day(day) if found is None else found
                self.last_day = day
                self.last_month = month
            if self.arows.data.as_longlongs[act * AW + A_MONTH] != month:
                self.index_month(record.metrics[metric], act, month)

    cdef int index_month(self, UserMetric state, Py_ssize_t act, i64 month) except -1:
        """Enter (``month``, ``act``) in the metric's month index unless it is there, and
        remember ``month`` in the activity's row (``Activity.indexed_month``: the next write
        in the same month skips this). A row's month is unset only while the activity has no
        entry (load and retention set it), so a new activity appends without a search, and a
        live feed's months arrive in order: the common cases are O(1)."""
        cdef i64 known = self.arows.data.as_longlongs[act * AW + A_MONTH]
        cdef array.array index = state.months
        cdef Py_ssize_t n = len(index) // 2, i
        cdef i64* p = index.data.as_longlongs
        self.arows.data.as_longlongs[act * AW + A_MONTH] = month
        if known == NONE:
            # No entry for it anywhere: the end of the month's run, found without a scan (a
            # scan here made new activities quadratic behind one later month; review finding).
            i = n if n == 0 or p[2 * n - 2] <= month else first_pair_from(p, n, month + 1)
        else:
            i = first_pair_from(p, n, month)
            while i < n and p[2 * i] == month:
                if p[2 * i + 1] == act:
                    return 0  # indexed there already
                i += 1
        reserve(index, 2)
        p = index.data.as_longlongs
        if i < n:
            memmove(&p[2 * i + 2], &p[2 * i], (n - i) * 2 * sizeof(i64))
        p[2 * i] = month
        p[2 * i + 1] = act
        return 0

    cdef bint merge_late(self, Py_ssize_t sid, i64 ts, i64 delta) except -1:
        """A write before an arena series' last second (and at or after its retention horizon),
        merged in place: the entry at ``ts`` (inserted if new) and every running total after it
        grow by ``delta``, which is what ``PrefixSeries`` does when it merges held late writes,
        so every read answers the same. False (nothing changed) when ``ts`` is more than
        ``late_in_place`` entries back or a running total would leave int64: the caller promotes
        the series."""
        cdef Py_ssize_t n = self.srows.data.as_longlongs[sid * SW + S_LEN]
        cdef Py_ssize_t start = self.srows.data.as_longlongs[sid * SW + S_START]
        cdef i64* starts = &self.starts.data.as_longlongs[start]
        cdef i64* sums = &self.sums.data.as_longlongs[start]
        cdef Py_ssize_t pos = bisect_left(starts, 0, n, ts), i
        cdef i64 value, inserted = 0
        cdef bint exists = starts[pos] == ts  # pos < n: ts is before the last second
        if n - pos > self.late_in_place:
            return False
        for i in range(pos, n):
            if add_overflow(sums[i], delta, &value):
                return False
        if not exists and add_overflow(sums[pos - 1] if pos else 0, delta, &inserted):
            return False
        if not exists:
            if n == self.srows.data.as_longlongs[sid * SW + S_CAP]:
                self.grow_series(sid)
                start = self.srows.data.as_longlongs[sid * SW + S_START]
                starts = &self.starts.data.as_longlongs[start]
                sums = &self.sums.data.as_longlongs[start]
            memmove(&starts[pos + 1], &starts[pos], (n - pos) * sizeof(i64))
            memmove(&sums[pos + 1], &sums[pos], (n - pos) * sizeof(i64))
            starts[pos] = ts
            sums[pos] = inserted
            pos += 1
            n += 1
            self.srows.data.as_longlongs[sid * SW + S_LEN] = n
        for i in range(pos, n):
            sums[i] += delta
        if ts < self.srows.data.as_longlongs[sid * SW + S_FIRST]:
            self.srows.data.as_longlongs[sid * SW + S_FIRST] = ts
        return True

    cdef bint activity_add(self, Py_ssize_t act, i64 ts, i64 delta) except -1:
        """``Activity.add`` on an arena activity; False (nothing changed) where a value would
        leave int64 (the caller promotes it)."""
        cdef Py_ssize_t n = self.arows.data.as_longlongs[act * AW + A_LEN]
        cdef Py_ssize_t start = self.arows.data.as_longlongs[act * AW + A_START]
        cdef i64* p = &self.points.data.as_longlongs[start]
        cdef i64 total, value
        cdef Py_ssize_t i, hit = -1, low
        if add_overflow(self.arows.data.as_longlongs[act * AW + A_TOTAL], delta, &total):
            return False
        if n and p[n - 2] == ts:
            hit = n - 1
        elif ts <= self.arows.data.as_longlongs[act * AW + A_LAST]:
            # a pair at ``ts`` among the RECENT_PAIRS latest (Activity.add_to_recent)
            low = n - 2 * RECENT_PAIRS
            if low < 0:
                low = 0
            i = n - 4
            while i >= low:
                if p[i] == ts:
                    hit = i + 1
                    break
                i -= 2
        if hit >= 0:
            if add_overflow(p[hit], delta, &value):
                return False
            p[hit] = value
        else:
            if n == self.arows.data.as_longlongs[act * AW + A_CAP]:
                self.grow_activity(act)
                start = self.arows.data.as_longlongs[act * AW + A_START]
                p = &self.points.data.as_longlongs[start]
            p[n] = ts
            p[n + 1] = delta
            self.arows.data.as_longlongs[act * AW + A_LEN] = n + 2
        self.arows.data.as_longlongs[act * AW + A_TOTAL] = total
        if ts > self.arows.data.as_longlongs[act * AW + A_LAST]:
            self.arows.data.as_longlongs[act * AW + A_LAST] = ts
            if self.arows.data.as_longlongs[act * AW + A_FIRST] < 0:
                self.arows.data.as_longlongs[act * AW + A_FIRST] = ts
        elif ts < self.arows.data.as_longlongs[act * AW + A_FIRST]:
            self.arows.data.as_longlongs[act * AW + A_FIRST] = ts
        return True

    ########################################################################################
    # Promotion (the objects of engine/counters.py answer for uncommon series)

    cpdef object series_object(self, Py_ssize_t sid):
        """The series as a ``PrefixSeries`` that answers for it from now on."""
        obj = self.s_objects.get(sid)
        if obj is None:
            obj = self.series_copy(sid)
            self.hand_series(sid, obj)
        return obj

    cdef int hand_series(self, Py_ssize_t sid, object obj) except -1:
        """Let ``obj`` answer for series row ``sid``; its segment becomes a hole."""
        self.s_objects[sid] = obj
        self.srows.data.as_longlongs[sid * SW + S_LEN] = -1
        self.dead_entries += self.srows.data.as_longlongs[sid * SW + S_CAP]
        self.srows.data.as_longlongs[sid * SW + S_CAP] = 0
        return 0

    cdef object series_copy(self, Py_ssize_t sid):
        """A ``PrefixSeries`` holding an arena series' entries."""
        cdef Py_ssize_t n = self.srows.data.as_longlongs[sid * SW + S_LEN]
        cdef Py_ssize_t start = self.srows.data.as_longlongs[sid * SW + S_START]
        obj = PrefixSeries()
        obj.starts = self.starts[start:start + n]
        obj.sums = self.sums[start:start + n]
        obj.total = self.sums[start + n - 1] if n else 0
        obj.first_ts = self.srows.data.as_longlongs[sid * SW + S_FIRST]
        obj.last_ts = self.srows.data.as_longlongs[sid * SW + S_LAST]
        horizons = self.s_horizons.get(sid)
        obj.horizons = None if horizons is None else list(horizons)
        return obj

    cpdef object activity_object(self, Py_ssize_t act):
        """The activity as an ``Activity`` that answers for it from now on."""
        obj = self.a_objects.get(act)
        if obj is None:
            obj = self.activity_copy(act)
            self.hand_activity(act, obj)
        return obj

    cdef int hand_activity(self, Py_ssize_t act, object obj) except -1:
        """Let ``obj`` answer for activity row ``act``; its segment becomes a hole."""
        self.a_objects[act] = obj
        self.arows.data.as_longlongs[act * AW + A_LEN] = -1
        self.dead_points += self.arows.data.as_longlongs[act * AW + A_CAP]
        self.arows.data.as_longlongs[act * AW + A_CAP] = 0
        return 0

    cdef object activity_copy(self, Py_ssize_t act):
        cdef Py_ssize_t n = self.arows.data.as_longlongs[act * AW + A_LEN]
        cdef Py_ssize_t start = self.arows.data.as_longlongs[act * AW + A_START]
        obj = Activity(self.arows.data.as_longlongs[act * AW + A_ATID])
        obj.points = self.points[start:start + n]
        obj.total = self.arows.data.as_longlongs[act * AW + A_TOTAL]
        obj.first = self.arows.data.as_longlongs[act * AW + A_FIRST]
        obj.last = self.arows.data.as_longlongs[act * AW + A_LAST]
        obj.indexed_month = self.arows.data.as_longlongs[act * AW + A_MONTH]
        return obj

    cdef int store_series(self, Py_ssize_t sid, object obj) except -1:
        """Put a plain ``PrefixSeries`` (no held late writes, int64 totals) into the arenas."""
        cdef array.array starts = obj.starts
        cdef array.array sums = obj.sums
        cdef Py_ssize_t n = len(starts), cap = FIRST_CAP
        while cap < n:
            cap *= 2
        cdef Py_ssize_t start = reserve(self.starts, cap)
        reserve(self.sums, cap)
        self.dead_entries += self.srows.data.as_longlongs[sid * SW + S_CAP]
        if n:
            memcpy(&self.starts.data.as_longlongs[start], starts.data.as_longlongs, n * sizeof(i64))
            memcpy(&self.sums.data.as_longlongs[start], sums.data.as_longlongs, n * sizeof(i64))
        self.srows.data.as_longlongs[sid * SW + S_START] = start
        self.srows.data.as_longlongs[sid * SW + S_CAP] = cap
        self.srows.data.as_longlongs[sid * SW + S_LEN] = n
        self.srows.data.as_longlongs[sid * SW + S_FIRST] = obj.first_ts
        self.srows.data.as_longlongs[sid * SW + S_LAST] = obj.last_ts
        if obj.horizons is None:
            self.s_horizons.pop(sid, None)
            self.srows.data.as_longlongs[sid * SW + S_HZ] = NONE
        else:
            self.s_horizons[sid] = list(obj.horizons)
            self.srows.data.as_longlongs[sid * SW + S_HZ] = obj.horizons[SECOND]
        self.s_objects.pop(sid, None)
        return 0

    cdef int store_activity(self, Py_ssize_t act, object obj) except -1:
        cdef array.array points = obj.points
        cdef Py_ssize_t n = len(points), cap = FIRST_CAP
        while cap < n:
            cap *= 2
        cdef Py_ssize_t start = reserve(self.points, cap)
        self.dead_points += self.arows.data.as_longlongs[act * AW + A_CAP]
        if n:
            memcpy(&self.points.data.as_longlongs[start], points.data.as_longlongs, n * sizeof(i64))
        self.arows.data.as_longlongs[act * AW + A_START] = start
        self.arows.data.as_longlongs[act * AW + A_CAP] = cap
        self.arows.data.as_longlongs[act * AW + A_LEN] = n
        self.arows.data.as_longlongs[act * AW + A_ATID] = obj.atid
        self.arows.data.as_longlongs[act * AW + A_TOTAL] = obj.total
        self.arows.data.as_longlongs[act * AW + A_FIRST] = obj.first
        self.arows.data.as_longlongs[act * AW + A_LAST] = obj.last
        self.a_objects.pop(act, None)
        return 0

    cdef Py_ssize_t settle_series(self, Py_ssize_t sid) except -1:
        """Move a promoted series back into the arenas if it is plain again; 1 if it moved."""
        obj = self.s_objects.get(sid)
        if obj is not None and _arena_ready(obj):
            self.store_series(sid, obj)
            return 1
        return 0

    cdef Py_ssize_t settle_activity(self, Py_ssize_t act) except -1:
        obj = self.a_objects.get(act)
        if (obj is not None and type(obj.points) is py_array.array
                and INT64_MIN_ <= obj.total <= INT64_MAX_):
            self.store_activity(act, obj)
            return 1
        return 0

    def compact(self) -> int:
        """Move promoted series and activities that are plain again (no held late writes,
        int64 totals) back into the arenas, and pack the arenas (segments left behind by
        growth are dropped). Returns how many objects moved back."""
        moved = 0
        for sid in list(self.s_objects):
            moved += self.settle_series(sid)
        for act in list(self.a_objects):
            moved += self.settle_activity(act)
        self.pack()
        return moved

    cdef int pack(self) except -1:
        """Rewrite the arenas with only live segments (in row order)."""
        cdef Py_ssize_t rows = len(self.srows) // SW, sid, n, cap, at = 0, start
        cdef Py_ssize_t live = 0
        for sid in range(rows):
            if self.srows.data.as_longlongs[sid * SW + S_LEN] >= 0:
                live += self.srows.data.as_longlongs[sid * SW + S_CAP]
        cdef array.array starts = array.clone(_TEMPLATE, live, False)
        cdef array.array sums = array.clone(_TEMPLATE, live, False)
        pc_set_size(starts, 0)
        pc_set_size(sums, 0)
        for sid in range(rows):
            n = self.srows.data.as_longlongs[sid * SW + S_LEN]
            if n < 0:
                self.srows.data.as_longlongs[sid * SW + S_CAP] = 0
                continue
            cap = self.srows.data.as_longlongs[sid * SW + S_CAP]
            start = self.srows.data.as_longlongs[sid * SW + S_START]
            at = reserve(starts, cap)
            reserve(sums, cap)
            memcpy(&starts.data.as_longlongs[at], &self.starts.data.as_longlongs[start], n * sizeof(i64))
            memcpy(&sums.data.as_longlongs[at], &self.sums.data.as_longlongs[start], n * sizeof(i64))
            self.srows.data.as_longlongs[sid * SW + S_START] = at
        self.starts, self.sums = starts, sums
        rows = len(self.arows) // AW
        live = 0
        for sid in range(rows):
            if self.arows.data.as_longlongs[sid * AW + A_LEN] >= 0:
                live += self.arows.data.as_longlongs[sid * AW + A_CAP]
        cdef array.array points = array.clone(_TEMPLATE, live, False)
        pc_set_size(points, 0)
        for sid in range(rows):
            n = self.arows.data.as_longlongs[sid * AW + A_LEN]
            if n < 0:  # promoted, or removed
                self.arows.data.as_longlongs[sid * AW + A_CAP] = 0
                continue
            cap = self.arows.data.as_longlongs[sid * AW + A_CAP]
            start = self.arows.data.as_longlongs[sid * AW + A_START]
            at = reserve(points, cap)
            memcpy(&points.data.as_longlongs[at], &self.points.data.as_longlongs[start], n * sizeof(i64))
            self.arows.data.as_longlongs[sid * AW + A_START] = at
        self.points = points
        self.dead_entries = self.dead_points = 0
        return 0

    ########################################################################################
    # Reading

    cpdef object series_before(self, Py_ssize_t sid, object t_o, bint whole=True):
        """``PrefixSeries.before`` for a series row. ``whole=False`` leaves out its shortcut
        for ``t`` after the series' last write (the series' total), so that ``t`` is rounded
        after retention even there, as a sum over every type rounds it (see ``_before``)."""
        cdef Py_ssize_t n = self.srows.data.as_longlongs[sid * SW + S_LEN]
        if n < 0:
            obj = self.s_objects[sid]
            if whole or obj.horizons is None or t_o <= obj.last_ts:
                return obj.before(t_o)
            return _rounded_before(obj, t_o)
        if n == 0 or t_o <= self.srows.data.as_longlongs[sid * SW + S_FIRST]:
            return 0
        cdef Py_ssize_t start = self.srows.data.as_longlongs[sid * SW + S_START]
        horizons = self.s_horizons.get(sid)
        if t_o > self.srows.data.as_longlongs[sid * SW + S_LAST] and (whole or horizons is None):
            return self.sums.data.as_longlongs[start + n - 1]
        if horizons is not None:
            t_o = _round_down(t_o, horizons)
        cdef i64 t = t_o
        cdef Py_ssize_t i = bisect_left(self.starts.data.as_longlongs, start, start + n, t)
        return self.sums.data.as_longlongs[i - 1] if i > start else 0

    cpdef object activity_range_sum(self, Py_ssize_t act, object t1_o, object t2_o):
        """``Activity.range_sum`` for an activity row."""
        cdef Py_ssize_t n = self.arows.data.as_longlongs[act * AW + A_LEN]
        if n < 0:
            return self.a_objects[act].range_sum(t1_o, t2_o)
        cdef i64 first = self.arows.data.as_longlongs[act * AW + A_FIRST]
        cdef i64 last = self.arows.data.as_longlongs[act * AW + A_LAST]
        if t1_o <= first and t2_o >= last:
            return self.arows.data.as_longlongs[act * AW + A_TOTAL]
        if t2_o < first or t1_o > last:
            return 0
        cdef i64 t1 = t1_o, t2 = t2_o
        cdef i64* p = &self.points.data.as_longlongs[self.arows.data.as_longlongs[act * AW + A_START]]
        cdef Py_ssize_t i
        acc = 0
        for i in range(0, n, 2):
            if t1 <= p[i] <= t2:
                acc += p[i + 1]
        return acc

    cdef bint activity_touches(self, Py_ssize_t act, i64 t1, i64 t2):
        cdef Py_ssize_t n = self.arows.data.as_longlongs[act * AW + A_LEN]
        if n < 0:
            return self.a_objects[act].touches(t1, t2)
        cdef i64 first = self.arows.data.as_longlongs[act * AW + A_FIRST]
        cdef i64 last = self.arows.data.as_longlongs[act * AW + A_LAST]
        if n == 0 or t2 < first or t1 > last:
            return False
        if t1 <= first or t2 >= last:
            return True
        cdef i64* p = &self.points.data.as_longlongs[self.arows.data.as_longlongs[act * AW + A_START]]
        cdef Py_ssize_t i
        for i in range(0, n, 2):
            if t1 <= p[i] <= t2:
                return True
        return False

    cdef UserMetric state_of(self, object user, object metric):
        record = self.users_.get(user)
        return None if record is None else (<UserRecord>record).metrics.get(metric)

    def _before(self, UserMetric state, object atid, object t) -> object:
        if atid is not None:
            sid = state.by_atid.get(atid)
            return 0 if sid is None else self.series_before(sid, t)
        # The sum over every type, answered as one series holding them all would answer it
        # (``MetricCounters.all_types``): its total after the latest write of any type, else
        # each type's entries before ``t`` rounded as retention left them, even after that
        # type's own last write.
        sids = list(state.by_atid.values())
        whole = len(sids) == 1
        if not whole:
            whole = True
            for sid in sids:
                if t <= self.series_last(sid):
                    whole = False
                    break
        acc = 0
        for sid in sids:
            acc += self.series_before(sid, t, whole)
        return acc

    cdef object series_last(self, Py_ssize_t sid):
        obj = self.s_objects.get(sid)
        return self.srows.data.as_longlongs[sid * SW + S_LAST] if obj is None else obj.last_ts

    def range_sum(self, user: object, metric: str, t1: int, t2: int, atid: int | None = None,
                  aid: int | None = None) -> int:
        """``UserCounters.range_sum``: ``metric`` over [t1, t2], optionally for one activity
        type and/or activity."""
        state = self.state_of(user, metric)
        if state is None:
            return 0
        if aid is not None:
            act = self.activity_of(state, aid)
            if act < 0 or (atid is not None and self.activity_atid(act) != atid):
                return 0
            return self.activity_range_sum(act, t1, t2)
        if t1 > t2:
            return 0
        return self._before(state, atid, t2 + 1) - self._before(state, atid, t1)

    cdef Py_ssize_t activity_of(self, UserMetric state, object aid):
        """The activity id of ``aid`` in ``state``'s metric, or -1."""
        return self.key_find(state.uid, 2 * state.mid + 1, aid)

    def activity_atid(self, act: int) -> int:
        obj = self.a_objects.get(act)
        return self.arows[act * AW + A_ATID] if obj is None else obj.atid

    def breakdown(self, user: object, metric: str, bounds: list[int], atid: int | None = None) -> list[int]:
        """``UserCounters.breakdown``: sums over the periods [bounds[i], bounds[i+1])."""
        state = self.state_of(user, metric)
        if state is None:
            return [0] * (len(bounds) - 1)
        return sums_between(lambda t: self._before(state, atid, t), bounds)

    def atids(self, user: object, metrics: list[str], t1: int, t2: int, atid: int | None = None) -> list[int]:
        """``UserCounters.atids`` (PSD's ``_atids``): one activity type per distinct activity
        with a write in [t1, t2], de-duplicated across ``metrics``."""
        found: dict = {}
        for metric in metrics:
            state = self.state_of(user, metric)
            if state is not None:
                self._contributing(state, t1, t2, atid, found)
        return list(found.values())

    def _contributing(self, UserMetric state, t1: int, t2: int, atid: object, dict into) -> None:
        """``MetricCounters.contributing`` over the month index: the months that meet [t1,
        t2] in order; a month the range covers whole contributes every activity in it without
        a look at their points."""
        cdef array.array index = state.months
        cdef Py_ssize_t n = len(index) // 2, i, act
        cdef i64 month, last_month
        if t1 > t2 or n == 0:
            return
        last_month = month_of_day(t2 // 86400)
        i = first_pair_from(index.data.as_longlongs, n, month_of_day(t1 // 86400))
        while i < n and index.data.as_longlongs[2 * i] <= last_month:
            month = index.data.as_longlongs[2 * i]
            whole = (month_start_day(month) * 86400 >= t1
                     and month_start_day(month + 1) * 86400 - 1 <= t2)
            while i < n and index.data.as_longlongs[2 * i] == month:
                act = index.data.as_longlongs[2 * i + 1]
                i += 1
                aid = self.arows.data.as_longlongs[act * AW + A_AID]
                aid_atid = self.arows.data.as_longlongs[act * AW + A_ATID]
                if aid in into or (atid is not None and aid_atid != atid):
                    continue
                if whole or self.activity_touches(act, t1, t2):
                    into[aid] = aid_atid

    def users(self) -> list:
        """The users with state, in first-write order."""
        return list(self.users_)

    ########################################################################################
    # Retention

    def expire(self, cutoffs: list[int]) -> int:
        """``UserCounters.expire`` for every user: retention rolls old seconds up
        (``PrefixSeries.expire``) and drops activity points older than the second-level
        cutoff; an activity with none left is forgotten. Returns items removed.

        Series and activities pass through their objects and come back to the arenas."""
        removed = 0
        for user in self.users_:
            removed += self.expire_user(user, cutoffs)
        self.pack()
        return removed

    def expire_user(self, user: object, cutoffs: list[int]) -> int:
        """``UserCounters.expire`` for one user (what a retention record does per user)."""
        removed = 0
        cutoff = cutoffs[SECOND]
        record = self.users_.get(user)
        if record is None:
            return 0
        for name, state in (<UserRecord>record).metrics.items():
            removed += self._expire_metric(state, cutoffs, cutoff)
            for sid in (<UserMetric>state).by_atid.values():
                self.settle_series(sid)
            for act in (<UserMetric>state).acts:
                self.settle_activity(act)
        self.maybe_pack()
        return removed

    def _expire_metric(self, UserMetric state, cutoffs: list[int], cutoff: int) -> int:
        removed = 0
        for sid in state.by_atid.values():
            obj = self.series_object(sid)
            removed += obj.expire(cutoffs)
        if cutoff > 0:
            kept = array.clone(_TEMPLATE, 0, False)
            for act in state.acts:
                self.arows.data.as_longlongs[act * AW + A_MONTH] = NONE  # the index below may lose it
                obj = self.activity_object(act)
                obj.indexed_month = NONE
                removed += obj.expire(cutoff)
                if obj.points:
                    push(kept, act)
                else:  # forgotten: its key and row go
                    self.key_remove(state.uid, 2 * state.mid + 1, self.arows[act * AW + A_AID])
                    del self.a_objects[act]
                    self.arows.data.as_longlongs[act * AW + A_LEN] = REMOVED
                    push(self.free_acts, act)
            state.acts = kept
            self.reindex_months(state)
        return removed

    cdef int reindex_months(self, UserMetric state) except -1:
        """Keep the month index's entries whose activity still has a point in the month (as
        ``MetricCounters.expire``), and set each activity's row month to one of its entries."""
        cdef array.array index = state.months
        cdef Py_ssize_t n = len(index) // 2, i, kept = 0, act
        cdef i64 month
        months_of: dict = {}
        for i in range(n):
            month = index.data.as_longlongs[2 * i]
            act = index.data.as_longlongs[2 * i + 1]
            if self.arows.data.as_longlongs[act * AW + A_LEN] == REMOVED:
                continue
            held = months_of.get(act)
            if held is None:
                held = months_of[act] = {month_of_day(ts // 86400) for ts in self.activity_object(act).seconds()}
            if month in held:
                index.data.as_longlongs[2 * kept] = month
                index.data.as_longlongs[2 * kept + 1] = act
                self.arows.data.as_longlongs[act * AW + A_MONTH] = month
                kept += 1
        pc_set_size(index, 2 * kept)
        return 0

    ########################################################################################
    # Snapshots

    def user_plain(self, user: object) -> list:
        """The user's state in ``UserCounters.to_plain``'s form (snapshots stay readable by
        either layout)."""
        out = []
        for name, state in self.metrics_of(user).items():
            series = []
            for atid, sid in (<UserMetric>state).by_atid.items():
                obj = self.s_objects.get(sid)
                series.append([atid, (self.series_copy(sid) if obj is None else obj).to_plain()])
            activities = []
            for act in (<UserMetric>state).acts:
                obj = self.a_objects.get(act)
                activity = self.activity_copy(act) if obj is None else obj
                activities.append([self.arows[act * AW + A_AID], activity.atid, activity.pairs()])
            out.append([name, series, activities, self.months_plain(state)])
        return out

    cdef list months_plain(self, UserMetric state):
        """The month index in ``UserCounters.to_plain``'s form: ``[[month, [[aid, atid],
        ...]], ...]`` (months in order)."""
        cdef array.array index = state.months
        cdef Py_ssize_t i, act
        cdef list out = [], entries = None
        cdef i64 month, last = NONE
        for i in range(len(index) // 2):
            month = index.data.as_longlongs[2 * i]
            act = index.data.as_longlongs[2 * i + 1]
            if entries is None or month != last:
                entries = []
                out.append([month, entries])
                last = month
            entries.append([self.arows[act * AW + A_AID], self.arows[act * AW + A_ATID]])
        return out

    def load_user(self, user: object, plain: list) -> None:
        """Load a user from ``UserCounters.to_plain``'s form (a user not held yet)."""
        if user in self.users_:
            raise ValueError(f"user {user!r} is already held")
        cdef UserRecord record = self.record_of(user)
        metrics = record.metrics
        cdef i64 uid = record.uid, mid
        cdef UserMetric state
        for name, series, activities, aid_months in plain:
            mid = self.metric_id(name)
            state = metrics[name] = UserMetric(uid, mid)
            for atid, s in series:
                # Loaded as the object, then into the arenas if it fits them (as compact)
                sid = self.new_series(state, uid, mid, atid)
                self.hand_series(sid, PrefixSeries.from_plain(s))
                self.settle_series(sid)
            for aid, atid, points in activities:
                act = self.new_activity(state, uid, mid, aid, atid)
                obj = Activity.from_pairs(atid, points)
                obj.indexed_month = NONE
                self.hand_activity(act, obj)
                self.settle_activity(act)
            # The index in month order (a plain form lists months in the order they were first
            # written), each month's activities in their order; an aid with no activity is
            # dropped (the index is derived from the activities).
            entries = []
            for month, index in aid_months:
                for aid, atid in index:
                    act = self.activity_of(state, aid)
                    if act >= 0:
                        entries.append((month, act))
            entries.sort(key=itemgetter(0))
            for month, act in entries:
                push(state.months, month)
                push(state.months, act)
                self.arows[act * AW + A_MONTH] = month

    ########################################################################################
    # Checks and statistics

    def user_statistics(self, user: object) -> CounterStatistics:
        """``UserCounters.statistics`` for one user."""
        metrics = self.metrics_of(user)
        series = cells = activities = 0
        for state in metrics.values():
            for sid in (<UserMetric>state).by_atid.values():
                series += 1
                n = self.srows[sid * SW + S_LEN]
                cells += self.s_objects[sid].entries() if n < 0 else n
            activities += len((<UserMetric>state).acts)
        return CounterStatistics(metrics=len(metrics), series=series, cells=cells,
                                 activities=activities)

    def memory_parts(self) -> dict:
        """Bytes of the packed parts (``sys.getsizeof`` of each array, so allocated capacity
        included) and counts of what they hold (bench/bench_counters_memory.py)."""
        size = sys.getsizeof
        return {
            "series rows (6 int64 each)": size(self.srows),
            "series arenas (starts, running totals)": size(self.starts) + size(self.sums),
            "activity rows (9 int64 each)": size(self.arows),
            "activity points arena": size(self.points),
            "key table": size(self.keys),
            "dead arena slots (count)": self.dead_entries + self.dead_points,
            "promoted objects (count)": len(self.s_objects) + len(self.a_objects),
        }

    def _check(self) -> None:
        """Invariants: every row as its object would check; activity points indexed by month."""
        for user in self.users_:
            self.check_user(user)

    def check_user(self, user: object) -> None:
        for metrics in [self.metrics_of(user)]:
            for state in metrics.values():
                for sid in (<UserMetric>state).by_atid.values():
                    obj = self.s_objects.get(sid)
                    series = self.series_copy(sid) if obj is None else obj
                    series._check()
                    if obj is None:
                        starts = list(series.starts)
                        assert starts == sorted(set(starts)), f"series {sid}: starts not increasing"
                months = list((<UserMetric>state).months)
                indexed = set(zip(months[::2], months[1::2]))
                assert len(indexed) == len(months) // 2, "month index: an entry twice"
                assert months[::2] == sorted(months[::2]), "month index: months out of order"
                for act in (<UserMetric>state).acts:
                    aid = self.arows[act * AW + A_AID]
                    obj = self.a_objects.get(act)
                    activity = self.activity_copy(act) if obj is None else obj
                    stamps = activity.seconds()
                    assert activity.total == sum(v for _, v in activity.pairs()), f"activity {aid}: total"
                    if stamps:
                        assert (activity.first, activity.last) == (min(stamps), max(stamps))
                    for ts in stamps:
                        assert (month_of_day(ts // 86400), act) in indexed, f"activity {aid}: point not indexed"
                    if self.arows[act * AW + A_MONTH] != NONE:
                        assert (self.arows[act * AW + A_MONTH], act) in indexed, f"activity {aid}: row month"


def share_events(list events, Py_ssize_t partitions) -> dict:
    """A validated batch (``engine.events.UserEvent`` tuples) as ``{partition: {user:
    [events]}}``, each user's events in batch order, users in order of first appearance, the
    partition ``hash(user) % partitions`` (engine/actors.py's placement). The tuples are
    the batch's own (``apply_rows`` reads past the user); in C, as this ran at ~470 ns per
    event in Python, a third of the engine's own time per write."""
    cdef dict users = {}, shares = {}
    cdef list group
    cdef tuple event
    cdef object user, found, share
    cdef Py_ssize_t partition
    for event in events:
        if len(event) != 8:  # (indexing is unchecked here: a short tuple would crash)
            raise ValueError(f"a UserEvent has 8 fields, got {len(event)}: {event!r}")
        user = event[0]
        found = users.get(user)
        if found is None:
            group = []
            users[user] = group
            partition = hash(user) % partitions
            share = shares.get(partition)
            if share is None:
                share = shares[partition] = {}
            share[user] = group
        else:
            group = found
        group.append(event)
    return shares


def _rounded_before(obj: PrefixSeries, t: int) -> int:
    """``obj.before(t)`` for ``t`` after its last write, rounding ``t`` as retention left the
    series instead of answering its total (``series_before(whole=False)``)."""
    from bisect import bisect_left as bisect
    t = _round_down(t, obj.horizons)
    i = bisect(obj.starts, t)
    acc = obj.sums[i - 1] if i else 0
    for ts, delta in (obj.late or {}).items():
        if ts < t:
            acc += delta
    return acc


def _arena_ready(obj: PrefixSeries) -> bool:
    """Whether a series fits the arenas: no held late writes, int64 running totals, and a
    total that is its last running total (what an arena row keeps of it)."""
    sums = obj.sums
    return (obj.late is None and type(sums) is py_array.array
            and obj.total == (sums[len(sums) - 1] if len(sums) else 0))


@cython.no_gc
cdef class PackedUser:
    """One user's counters in a :class:`PartitionCounters`: the state the user's entity holds
    (engine/actors.py keeps one per user), with ``UserCounters``' interface, so the engine,
    boards and retention use either alike. It holds no counters itself.

    A C type, so that ``apply_share_at`` reads and sets ``applied_seq`` as a field; kept out
    of the garbage collector as the records are (it refers only to its store and user id)."""

    cdef public object store  # a PartitionCounters
    cdef public object user
    #: The log sequence number of the last record applied here (see engine/engine.py); the
    #: log numbers records up to 2^64 - 1.
    cdef public u64 applied_seq

    def __init__(self, store: object, user: object) -> None:
        self.store = store
        self.user = user
        self.applied_seq = 0

    @property
    def metrics(self) -> dict:
        """``{metric: UserMetric}``: the metrics this user has written."""
        return self.store.metrics_of(self.user)

    def apply(self, events: object) -> None:
        self.store.apply(self.user, events)

    def apply_rows(self, events: object) -> None:
        """``apply`` of ``UserEvent`` tuples (the user first)."""
        self.store.apply_rows(self.user, events)

    def range_sum(self, metric: str, t1: int, t2: int, atid: int | None = None,
                  aid: int | None = None) -> int:
        return self.store.range_sum(self.user, metric, t1, t2, atid, aid)

    def breakdown(self, metric: str, bounds: list[int], atid: int | None = None) -> list[int]:
        return self.store.breakdown(self.user, metric, bounds, atid)

    def atids(self, metrics: list[str], t1: int, t2: int, atid: int | None = None) -> list[int]:
        return self.store.atids(self.user, metrics, t1, t2, atid)

    def expire(self, cutoffs: list[int]) -> int:
        return self.store.expire_user(self.user, cutoffs)

    def statistics(self) -> CounterStatistics:
        return self.store.user_statistics(self.user)

    def to_plain(self) -> list:
        return self.store.user_plain(self.user)

    def load(self, plain: list) -> None:
        """Take a snapshot's ``UserCounters.to_plain`` form (a user the store lacks)."""
        self.store.load_user(self.user, plain)

    def _check(self) -> None:
        self.store.check_user(self.user)


class PartitionStores:
    """One :class:`PartitionCounters` per partition actor of the user namespace, and the
    per-user states over them (the namespace's factory: ``user_state(ident)``)."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self.stores = [PartitionCounters() for _ in range(partitions)]

    def user_state(self, user: object) -> PackedUser:
        """A user's state (placement as engine/actors.py's: ``hash(user) % partitions``)."""
        return PackedUser(self.stores[hash(user) % self.partitions], user)

