"""Typed results and inputs: frozen msgspec structs mirroring the server's documented shapes.

The answers mirror the response models of ``web/api/models.py`` (and the engine's and the
store's dataclasses that ``/api/stats`` and ``/api/admin/snapshot`` answer with, and RankDB's
views in ``web/compat/rankdb/routes.py``). They are copies, not imports: the client is usable
without the server package. ``tests/client/test_models.py`` compares the field names with the
server's declarations, so a change on one side fails a test instead of drifting.

Decoding is msgspec's (``msgspec.json.decode(data, type=...)``), for two reasons: it checks
each answer's shape in C as it parses, and it reads integers of any size exactly. Sums may
pass 64 bits; the server writes them as plain JSON numbers, which Python's ``int`` holds
exactly, so this client never asks for ``Accept: application/json; IEEE754Compatible=true``
(that is for JavaScript). Fields the server adds later are ignored, so an older client keeps
working against a newer server.

Inputs (:class:`Event`, :class:`Count`, :class:`Window`, :class:`NewElement`) omit their
defaults when encoded; plain dicts are accepted everywhere they are.

>>> import msgspec
>>> msgspec.json.decode(b'{"user": 1, "sums": {"steps": 18446744073709551617}}', type=UserSums)
UserSums(user=1, sums={'steps': 18446744073709551617}, atids=None)
>>> msgspec.json.encode(Event(metric="steps", user="alice", value=5, ts=1700000000))
b'{"metric":"steps","user":"alice","value":5,"ts":1700000000}'
"""

from __future__ import annotations

from typing import Any, Literal

from msgspec import Struct

__all__ = [
    "Applied",
    "BoardEntry",
    "BreakdownResult",
    "Count",
    "CounterSeries",
    "CounterSum",
    "Element",
    "ElementView",
    "EngineStatistics",
    "Event",
    "ExportResult",
    "FoundElements",
    "Health",
    "Leaderboard",
    "LeaderboardCatalog",
    "LeaderboardSummary",
    "LeaderboardView",
    "ListsPage",
    "Neighbors",
    "NewElement",
    "RangeResult",
    "RankList",
    "RankResult",
    "Readiness",
    "RecoveryReport",
    "RouterStatistics",
    "SnapshotRecord",
    "SnapshotStatus",
    "Standing",
    "StreamApplied",
    "UserId",
    "UserSeries",
    "UserStanding",
    "UserSum",
    "UserSums",
    "WalStatistics",
    "Window",
    "WindowInfo",
]

#: A user id: an integer, or a string; the server treats ``"42"`` and ``42`` as one user.
UserId = int | str


class _Answer(Struct, frozen=True):
    """A decoded answer (frozen; unknown fields ignored)."""


class _Input(Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    """A request value; defaults are left out of the encoded body (the server's apply)."""


############################################################################################
# Inputs


class Event(_Input):
    """One counter write: ``value`` added to ``user``'s ``metric`` at second ``ts``.

    ``mode="diff"`` (needs ``aid``): ``value`` is the activity's running total and the server
    adds what is new since its last report, so sending the same report twice changes nothing
    (the idempotency that lets a write be retried, see ``client._transport``).
    """

    metric: str
    user: UserId
    value: int
    ts: int
    atid: int = 0
    aid: int | None = None
    ts1: int | None = None
    mode: Literal["add", "diff"] = "add"


class Count(_Input):
    """A global counter increment."""

    name: str
    value: int
    ts: int


class Window(_Input):
    """A live leaderboard's window: fixed ``Window(t1=..., t2=...)``, or rolling
    ``Window(rolling="day" | "week" | "month", tz="Europe/Oslo")``."""

    t1: int | None = None
    t2: int | None = None
    rolling: Literal["day", "week", "month"] | None = None
    tz: str | None = None


class NewElement(_Input):
    """A ranked-list element to write: uint64 ``id`` and ``score``, uint32 ``tie_breaker``
    (higher ranks first among equal scores), and an optional JSON object ``payload``."""

    id: int
    score: int
    tie_breaker: int = 0
    payload: dict[str, Any] | None = None


############################################################################################
# Native answers (web/api/models.py)


class Applied(_Answer):
    applied: int


class StreamApplied(_Answer):
    applied: int
    lines: int


class UserSums(_Answer):
    user: UserId
    sums: dict[str, int]
    atids: tuple[int, ...] | None = None


class RangeResult(_Answer):
    t1: int
    t2: int
    results: tuple[UserSums, ...]

    def sums(self) -> dict[UserId, dict[str, int]]:
        """``{user: {metric: sum}}``, for lookups by user."""
        return {r.user: r.sums for r in self.results}


class UserSeries(_Answer):
    user: UserId
    series: dict[str, tuple[int, ...]]


class BreakdownResult(_Answer):
    """``periods[i]`` is the [first, last] second of the period summed in each series' ``[i]``."""

    step: str | int
    periods: tuple[tuple[int, int], ...]
    results: tuple[UserSeries, ...]


class UserSum(_Answer):
    user: UserId
    metric: str
    t1: int
    t2: int
    sum: int


class CounterSum(_Answer):
    name: str
    t1: int
    t2: int
    sum: int


class CounterSeries(_Answer):
    name: str
    step: str | int
    periods: tuple[tuple[int, int], ...]
    series: tuple[int, ...]


class BoardEntry(_Answer):
    id: str
    metric: str | None


class WindowInfo(_Answer):
    """The window a board ranks now: ``kind`` is ``None`` (fixed) or the rolling unit."""

    kind: str | None
    tz: str | None
    t1: int
    t2: int


class Leaderboard(_Answer):
    id: str
    metric: str
    atid: int | None
    members: tuple[UserId, ...] | None
    window: WindowInfo


class LeaderboardSummary(_Answer):
    """A live board in the catalogue: ``members`` counts a member set (``None``: every user
    writing the metric); ``size`` is how many users it ranks now."""

    id: str
    metric: str
    atid: int | None
    window: WindowInfo
    members: int | None
    size: int


class LeaderboardCatalog(_Answer):
    leaderboards: tuple[LeaderboardSummary, ...]


class Standing(_Answer):
    user: UserId
    score: int
    rank: int
    updated_at: int | None = None


class UserStanding(_Answer):
    user: UserId
    score: int
    rank: int
    above: tuple[Standing, ...]
    below: tuple[Standing, ...]
    updated_at: int | None = None


class LeaderboardView(_Answer):
    id: str
    metric: str
    atid: int | None
    members: tuple[UserId, ...] | None
    window: WindowInfo
    size: int
    top: tuple[Standing, ...]
    user: UserStanding | None = None


class RankResult(_Answer):
    metric: str
    t1: int
    t2: int
    total: int
    top: tuple[Standing, ...]
    user: UserStanding | None = None


############################################################################################
# Statistics, health and snapshots (engine/engine.py, engine/actors.py, snapshots/store.py,
# snapshots/wal.py, web/metrics.py)


class RouterStatistics(_Answer):
    entities: int
    live_actors: int
    mailbox_depth: int
    peak_mailbox_depth: int
    messages_applied: int
    activations: int
    retirements: int
    failures: int
    direct_reads: int = 0


class EngineStatistics(_Answer):
    router: RouterStatistics
    commands: int
    events: int
    last_seq: int


class SnapshotRecord(_Answer):
    """A snapshot written (``POST /api/admin/snapshot``) or the last one the server knows."""

    path: str
    start_seq: int
    items: int
    bytes: int
    seconds: float
    created: float


class RecoveryReport(_Answer):
    snapshot: str | None = None
    snapshot_items: int = 0
    replayed_records: int = 0
    first_replayed: int = 0
    last_replayed: int = 0
    seconds: float = 0.0
    log_actions: tuple[str, ...] = ()


class WalStatistics(_Answer):
    policy: str
    last_seq: int
    written_seq: int
    durable_seq: int
    buffered_records: int
    buffered_bytes: int
    bytes_written: int
    fsync_count: int
    last_fsync_latency_s: float | None
    segments: int
    broken: bool


class SnapshotStatus(_Answer):
    """The last snapshot, how the server recovered, and its log (all ``None`` in memory)."""

    data_dir: str | None
    last: SnapshotRecord | None
    recovery: RecoveryReport | None
    log: WalStatistics | None = None


class ExportResult(_Answer):
    """A snapshot export: where it went (``None`` for a file object) and its size."""

    path: str | None
    bytes: int


class Health(_Answer):
    """``GET /healthz``: the process answers HTTP."""

    status: str


class Readiness(_Answer):
    """``GET /readyz``: ``ready`` once recovery finished, until the engine closes or the log
    breaks (then ``ready`` is false and ``error`` says why)."""

    status: str
    last_seq: int | None = None
    durable: bool | None = None
    recovery: RecoveryReport | None = None
    error: str | None = None

    @property
    def ready(self) -> bool:
        return self.status == "ready"


############################################################################################
# Ranked lists (RankDB's views, web/compat/rankdb/routes.py)


class Element(_Answer):
    """An element with its rank: ``from_top`` 0 is the best, ``from_bottom`` 0 the worst;
    ``updated_at`` is RFC 3339 (RankDB's view)."""

    id: int
    from_top: int
    from_bottom: int
    score: int
    payload: dict[str, Any] | None = None
    list_id: str | None = None
    tie_breaker: int = 0
    updated_at: str | None = None


class Neighbors(_Answer):
    """Elements ranked just above (top to bottom, ending with the one directly above) and
    just below."""

    above: tuple[Element, ...] = ()
    below: tuple[Element, ...] = ()


class ElementView(_Answer):
    """One element and its neighbours; ``previous_rank`` is the element before a write
    (``None`` when it is new); ``local_*`` ranks within a subset (``around``)."""

    id: int
    from_top: int
    from_bottom: int
    score: int
    list_id: str
    tie_breaker: int
    updated_at: str
    neighbors: Neighbors
    payload: dict[str, Any] | None = None
    previous_rank: Element | None = None
    local_from_top: int | None = None
    local_from_bottom: int | None = None


class RankList(_Answer):
    """A ranked list's settings, and (from ``get_list``/``create_list``) its size and ends."""

    id: str
    set: str
    metadata: dict[str, str]
    split_size: int
    merge_size: int
    load_index: bool
    elements: int | None = None
    segments: int | None = None
    avg_segment_elements: float | None = None
    #: RankDB's cache figures; always 0 here (every list is resident).
    cache_hits: int | None = None
    cache_misses: int | None = None
    cache_percent: float | None = None
    top_element: Element | None = None
    bottom_element: Element | None = None


class ListsPage(_Answer):
    """A page of lists sorted by id, with how many lie before and after it."""

    lists_before: int
    lists_after: int
    lists: tuple[RankList, ...]


class FoundElements(_Answer):
    """Elements found by id, sorted by rank; ``not_found`` ascending."""

    found: tuple[Element, ...]
    not_found: tuple[int, ...] = ()
