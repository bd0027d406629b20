"""Leaderboards fed by counters: ad-hoc rankings of any past window, and live ranked lists.

Theory of operation
-------------------
*Ad-hoc* (``rank_users``): "rank these users (or every user with the metric) by their sum of
metric M over [t1, t2]" -- the leaderboard as it stood at any past moment is the same question
with an earlier t2 (PSD's way). One range-sum message per user, then a sort.

*Live* boards: a board is a ranked list (namespace ``"list"``, so every RankDB element endpoint
reads it) whose definition -- metric, activity-type filter, members (or every user), and a
window, fixed ``[t1, t2]`` or rolling (today / this week / this month in a time zone) -- is kept
on the list's state and in a registry on the router. After a user's actor applies a write it
consults the registry, and for every board of that metric it sums the user's window and
*forwards* the new score to the board's actor (``Router.forward``): the write returns once
the boards moved, top-N and rank-of-user stay O(log n) reads, and per user the scores arrive
in write order (forwards from one actor to another keep their order).

Element ids: a user id that is a u64 integer is the element id; other ids (strings, negative
numbers) map to the first 8 bytes of their BLAKE2b hash, and every element's payload carries
``{"user": <id>}``. Scores are sums clamped to RankDB's u64 range (negative sums rank as 0);
boards over every user hold only users with a positive sum, boards over a member set hold
every member. ``updated_at`` is the time of the write that set the score, so among equal
scores whoever got there first ranks higher.

Rolling windows move when the engine's clock task sees a new period begin: a logged
``RollBoard`` clears the board (members start again at 0) and new writes fill it. A forward
computed for the old window that arrives after the roll is dropped.

Replay: forwards are derived, not logged. A user actor forwards after every ingest record it
sees, even one its snapshotted state already holds, so a board restored from a snapshot item
taken at another moment than its users' items converges to the same scores.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from engine.board_definition import ROLLING_UNITS, BoardDefinition
from engine.commands import USER, Command, EntityKey, Operation, register
from engine.counters import UserCounters
from engine.errors import Conflict, InvalidInput, quote
from engine.events import check_int, check_name, check_ts, normalize_user
from engine.lists import LIST, U64, ListSettings, ListState, check_list_id
from engine.periods import load_zone
from engine.ranked import RankedList

log = logging.getLogger("pointspace.boards")

BOARD_SET = "leaderboards"


def element_id_of(user: Hashable) -> int:
    """The ranked-list element id of a user (see the module docstring)."""
    if type(user) is int and 0 <= user <= U64:
        return user
    return int.from_bytes(hashlib.blake2b(repr(user).encode(), digest_size=8).digest(), "big")


def rolling_window(unit: str, tz: str | None, now: int) -> tuple[int, int]:
    """The local day / ISO week / month containing ``now``, as inclusive UTC seconds."""
    zone = load_zone(tz)
    local = datetime.fromtimestamp(now, zone or UTC).replace(tzinfo=None)
    start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "day":
        end = start + timedelta(days=1)
    elif unit == "week":
        start -= timedelta(days=start.weekday())
        end = start + timedelta(days=7)
    else:
        start = start.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
    tzinfo = zone or UTC
    return int(start.replace(tzinfo=tzinfo).timestamp()), int(end.replace(tzinfo=tzinfo).timestamp()) - 1


class BoardRegistry:
    """Live boards by metric, consulted by user actors after each write (``router.hooks``)."""

    def __init__(self) -> None:
        self.boards: dict[str, BoardDefinition] = {}
        self.by_metric: dict[str, set[str]] = {}
        #: Users who wrote into a rolling board's *next* period before the clock rolled it;
        #: the roll refreshes them.
        self.ahead: dict[str, set[Hashable]] = {}

    def add(self, board_id: str, definition: BoardDefinition) -> None:
        old = self.boards.get(board_id)
        if old is not None:
            self.by_metric.get(old.metric, set()).discard(board_id)
        self.boards[board_id] = definition
        self.by_metric.setdefault(definition.metric, set()).add(board_id)

    def remove(self, board_id: str) -> None:
        old = self.boards.pop(board_id, None)
        self.ahead.pop(board_id, None)
        if old is not None:
            self.by_metric.get(old.metric, set()).discard(board_id)

    def after_write(self, router: Any, user: Hashable, state: UserCounters, events: Iterable[Any]) -> None:
        """(In the user's turn.) Forward this user's new scores to the boards of the metrics
        its events touched."""
        touched: dict[str, int] = {}
        for event in events:
            metric, ts = event[0], event[3]
            if metric in self.by_metric and ts > touched.get(metric, -1):
                touched[metric] = ts
        for metric, now in touched.items():
            for board_id in sorted(self.by_metric[metric]):
                board = self.boards[board_id]
                if now > board.t2 and board.window_kind != "fixed":
                    self.ahead.setdefault(board_id, set()).add(user)
                self.forward_score(router, board_id, user, state, now)

    def forward_score(self, router: Any, board_id: str, user: Hashable, state: UserCounters, now: int) -> None:
        board = self.boards.get(board_id)
        if board is not None:
            send_score(router, board_id, board, user, state, now)


def empty_board(board: BoardDefinition) -> RankedList:
    """A board at the start of its window: its members at 0, or nobody (every-user boards)."""
    ranked = RankedList()
    if board.members is not None:
        ranked.bulk_upsert([(element_id_of(m), 0, 0, {"user": m}) for m in board.members], 0)
    return ranked


def send_score(
    router: Any, board_id: str, board: BoardDefinition, user: Hashable, state: UserCounters, now: int
) -> None:
    """(In the user's turn.) Forward the user's score over ``board``'s window, if a member."""
    if board.members is None or user in board.members:
        score = state.range_sum(board.metric, board.t1, board.t2, board.atid)
        router.forward((LIST, board_id), _set_score(board, user, score, now))


def _set_score(board: BoardDefinition, user: Hashable, score: int, now: int) -> Operation:
    element = element_id_of(user)
    clamped = min(max(score, 0), U64)
    keep_zero = board.members is not None

    def operation(state: ListState) -> None:
        if state.board != board:
            return  # the board was deleted, replaced or rolled since this was computed
        ranked = state.ranked
        if clamped == 0 and not keep_zero:
            ranked.delete(element)
            return
        if element in ranked and ranked.get(element).score == clamped:
            return  # unchanged: keep its place among equal scores
        ranked.upsert(element, clamped, 0, {"user": user}, min(now, 2**32 - 1))

    return operation


def registry_of(router: Any) -> BoardRegistry:
    registry = router.hooks.get("boards")
    if registry is None:
        registry = router.hooks["boards"] = BoardRegistry()
    return registry


############################################################################################
# Commands
############################################################################################


_WINDOW_KINDS = ("fixed", *ROLLING_UNITS)


#: Where each position of a ``BoardDefinition.to_plain()`` comes from in a request body.
_REQUEST_FIELDS = ("metric", "atid", "members", "window.rolling", "window.tz", "window.t1", "window.t2")


def check_board_plain(
    plain: Any, field: str = "board", fields: tuple[str, ...] | None = None
) -> BoardDefinition:
    """A ``BoardDefinition.to_plain()`` from outside, checked field by field: the one
    validator of board definitions (a backup stream's header, and :func:`check_board`, which
    builds the plain form of a request and passes its own field names).

    The metric obeys :func:`engine.events.check_name` (no control characters), the atid
    :func:`engine.events.check_int`, the members :func:`engine.events.normalize_user`: a
    board can name nothing that a counter write could not.

    >>> check_board_plain(["steps", None, [1, "ann"], "day", "Europe/Oslo", 0, 86399]).members
    (1, 'ann')
    >>> check_board_plain(["steps", None, None, "hour", None, 0, 1])
    Traceback (most recent call last):
    ...
    engine.errors.InvalidInput: board[3] must be a window kind, one of ['fixed', 'day', 'week', 'month'], got 'hour'

    Args:
        plain: ``[metric, atid, members, window kind, tz, t1, t2]``.
        field: names the whole value, and its positions (``board[0]``...) unless ``fields``.
        fields: the seven names to give the positions in errors instead.

    Raises:
        InvalidInput: the value's shape or a field is wrong (naming the field).
    """
    if not isinstance(plain, list) or len(plain) != 7:
        raise InvalidInput(f"{field} must be an array of 7 (metric, atid, members, window kind, "
                           "tz, t1, t2)", field)
    names = fields or tuple(f"{field}[{i}]" for i in range(7))
    metric, atid, members, kind, tz, t1, t2 = plain
    metric = check_name(metric, names[0])
    if atid is not None:
        atid = check_int(atid, names[1])
    if members is not None:
        if not isinstance(members, list) or not members:
            raise InvalidInput(f"{names[2]} must be a non-empty list of user ids, or omitted (null) "
                               "for every user", names[2])
        members = tuple(dict.fromkeys(normalize_user(m, f"{names[2]}[{i}]") for i, m in enumerate(members)))
    if kind not in _WINDOW_KINDS:
        raise InvalidInput(f"{names[3]} must be a window kind, one of {list(_WINDOW_KINDS)}, "
                           f"got {quote(kind)}", names[3])
    if tz is not None:
        load_zone(tz, names[4])
    t1, t2 = check_ts(t1, names[5]), check_ts(t2, names[6])
    if t1 > t2:
        raise InvalidInput(f"{names[5]} must be <= {names[6]}, got {t1} > {t2}", names[5])
    return BoardDefinition(metric=metric, atid=atid, members=members, window_kind=kind, tz=tz,
                           t1=t1, t2=t2)


def check_board(body: Any, now: int) -> tuple[str, BoardDefinition]:
    """Validate a board definition ``{id, metric, atid?, members?, window}``: the window's
    shape here (a rolling one becomes the period holding ``now``), every field in
    :func:`check_board_plain`."""
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a leaderboard object", "body")
    board_id = check_list_id(body.get("id"), "id")
    window = body.get("window")
    if not isinstance(window, dict):
        raise InvalidInput('window must be {"t1": .., "t2": ..} or {"rolling": "day"|"week"|"month", "tz": ..}', "window")
    if "rolling" in window:
        kind, tz = window["rolling"], window.get("tz")
        if kind not in ROLLING_UNITS:
            raise InvalidInput(f"window.rolling must be one of {list(ROLLING_UNITS)}, got {quote(kind)}",
                               "window.rolling")
        load_zone(tz, "window.tz")
        t1, t2 = rolling_window(kind, tz, now)
    else:
        kind, tz, t1, t2 = "fixed", None, window.get("t1"), window.get("t2")
    plain = [body.get("metric"), body.get("atid"), body.get("members"), kind, tz, t1, t2]
    return board_id, check_board_plain(plain, "body", _REQUEST_FIELDS)


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class CreateBoard(Command):
    """Create a live board (a ranked list with a definition) and fill it from every user."""

    op: ClassVar[str] = "board.create"
    board_id: str
    definition: BoardDefinition

    def to_plain(self) -> Any:
        return [self.board_id, self.definition.to_plain()]

    @classmethod
    def from_plain(cls, plain: Any) -> CreateBoard:
        return cls(board_id=plain[0], definition=BoardDefinition.from_plain(plain[1]))

    def route(self, seq: int, router: Any = None) -> dict[EntityKey, Operation]:
        registry = registry_of(router)
        routes: dict[EntityKey, Operation] = {}

        previous = registry.boards.get(self.board_id)

        def create(state: ListState) -> None:
            if state.applied_seq >= seq:
                return
            if state.exists:
                # Undo a registration made at dispatch (below), if any.
                if registry.boards.get(self.board_id) == self.definition:
                    registry.remove(self.board_id)
                    if previous is not None and state.board == previous:
                        registry.add(self.board_id, previous)
                raise Conflict(f"list {self.board_id!r} already exists", "id")
            state.settings = ListSettings(set=BOARD_SET, metadata={"leaderboard": self.definition.metric})
            state.ranked = empty_board(self.definition)
            state.board = self.definition
            state.applied_seq = seq
            registry.add(self.board_id, self.definition)

        routes[(LIST, self.board_id)] = create
        # Registered now, at dispatch, so that every write sent from now on feeds it even if
        # its user's actor runs before the board's. Not when a list of that id exists right
        # now: the create is then likely refused, and registering would make concurrent
        # writes score the refused definition and starve the existing board. (If a delete of
        # that list is queued first, the create succeeds and registers in its own turn.)
        existing = router.directory[LIST].get(self.board_id)
        if existing is None or not existing.exists:
            registry.add(self.board_id, self.definition)
        users = self.definition.members if self.definition.members is not None else router.ids(USER)
        for user in users:
            if user in router.directory[USER]:
                routes[(USER, user)] = _refresh(router, self.board_id, self.definition, user)
        return routes


def _refresh(router: Any, board_id: str, board: BoardDefinition, user: Hashable) -> Operation:
    """(In a user's turn.) Send this user's score for ``board`` (as defined by the command,
    not the registry, which may not have it yet); the board drops it unless its definition
    is exactly this one. Ties rank by user id."""

    def operation(state: UserCounters) -> None:
        send_score(router, board_id, board, user, state, 0)

    return operation


def in_current_window(definition: BoardDefinition, now: int) -> BoardDefinition:
    """``definition`` with a rolling window moved to the period holding ``now`` (a board
    restored from an old backup ranks this period, as a new board would); fixed unchanged."""
    if definition.window_kind == "fixed":
        return definition
    t1, t2 = rolling_window(definition.window_kind, definition.tz, now)
    return replace(definition, t1=t1, t2=t2)


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class RestoreBoard(Command):
    """Bring back a live leaderboard from a backup (``POST /xlist/restore``).

    The board's entries are not taken from the backup: a live board is derived from counters,
    so it is rebuilt from this server's counters exactly as ``CreateBoard`` fills a new one,
    then fed by every later write. (A crafted backup therefore cannot forge standings; on a
    server without the counters the board starts empty.) With ``keep`` an existing list of
    that id is left alone (``"skipped"``); without it the list, board or not, is replaced.
    """

    op: ClassVar[str] = "board.restore"
    board_id: str
    definition: BoardDefinition
    keep: bool

    def to_plain(self) -> Any:
        return [self.board_id, self.definition.to_plain(), self.keep]

    @classmethod
    def from_plain(cls, plain: Any) -> RestoreBoard:
        return cls(board_id=plain[0], definition=BoardDefinition.from_plain(plain[1]), keep=plain[2])

    def route(self, seq: int, router: Any = None) -> dict[EntityKey, Operation]:
        registry = registry_of(router)
        definition = self.definition

        def settle(state: ListState) -> None:
            """Undo a registration made at dispatch (below) that this turn did not install."""
            if registry.boards.get(self.board_id) == definition and state.board != definition:
                if state.board is not None:
                    registry.add(self.board_id, state.board)
                else:
                    registry.remove(self.board_id)

        def restore(state: ListState) -> str | None:
            if state.applied_seq >= seq:
                settle(state)
                return None
            state.applied_seq = seq
            if state.exists and self.keep:
                settle(state)
                return "skipped"
            state.settings = ListSettings(set=BOARD_SET, metadata={"leaderboard": definition.metric})
            state.ranked = empty_board(definition)
            state.board = definition
            registry.add(self.board_id, definition)
            return "restored"

        routes: dict[EntityKey, Operation] = {(LIST, self.board_id): restore}
        # Registered at dispatch, as CreateBoard does (see there): every write sent from now
        # on feeds it. Not when ``keep`` will most likely leave an existing list alone.
        existing = router.directory[LIST].get(self.board_id)
        if not self.keep or existing is None or not existing.exists:
            registry.add(self.board_id, definition)
        users = definition.members if definition.members is not None else router.ids(USER)
        for user in users:
            if user in router.directory[USER]:
                routes[(USER, user)] = _refresh(router, self.board_id, definition, user)
        return routes


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class RollBoard(Command):
    """Move a rolling board to its next window: it starts again from zero."""

    op: ClassVar[str] = "board.roll"
    board_id: str
    t1: int
    t2: int

    def to_plain(self) -> Any:
        return [self.board_id, self.t1, self.t2]

    @classmethod
    def from_plain(cls, plain: Any) -> RollBoard:
        return cls(board_id=plain[0], t1=plain[1], t2=plain[2])

    def route(self, seq: int, router: Any = None) -> dict[EntityKey, Operation]:
        registry = registry_of(router)
        routes: dict[EntityKey, Operation] = {}
        current = registry.boards.get(self.board_id)
        if current is not None:
            # At dispatch, like CreateBoard: writes sent from now on score the new window.
            registry.add(self.board_id, replace(current, t1=self.t1, t2=self.t2))

        def roll(state: ListState) -> None:
            if state.applied_seq >= seq or state.board is None:
                return
            board = replace(state.board, t1=self.t1, t2=self.t2)
            state.board = board
            state.ranked = empty_board(board)
            state.applied_seq = seq
            registry.add(self.board_id, board)

        routes[(LIST, self.board_id)] = roll
        # Users who already wrote into the new period get their score recomputed.
        ahead = registry.ahead.pop(self.board_id, ())
        if current is not None:
            rolled = replace(current, t1=self.t1, t2=self.t2)
            for user in sorted(ahead, key=repr):
                if user in router.directory[USER]:
                    routes[(USER, user)] = _refresh(router, self.board_id, rolled, user)
        return routes


def due_rolls(registry: BoardRegistry, now: int) -> list[RollBoard]:
    """The rolls that the clock at ``now`` calls for (rolling boards whose period ended)."""
    out = []
    for board_id, board in sorted(registry.boards.items()):
        if board.window_kind != "fixed" and now > board.t2:
            try:
                t1, t2 = rolling_window(board.window_kind, board.tz, now)
            except InvalidInput as exc:
                # A zone stored before zone names were checked against the IANA list (or one
                # a tzdata update dropped): that board keeps its window; the clock, which
                # serves every other board, must not die of it.
                log.warning("board %r cannot roll: %s", board_id, exc.message)
                continue
            out.append(RollBoard(board_id=board_id, t1=t1, t2=t2))
    return out


@dataclass(frozen=True, slots=True)
class Standing:
    """One user's place on a leaderboard."""

    rank: int
    user: Hashable
    score: int


def rank_sums(sums: dict[Hashable, int]) -> list[Standing]:
    """Order users by sum, highest first; ties by user id (as text) for a stable order."""
    ordered = sorted(sums.items(), key=lambda kv: (-kv[1], type(kv[0]).__name__, str(kv[0])))
    return [Standing(rank, user, score) for rank, (user, score) in enumerate(ordered)]


__all__ = [
    "BoardDefinition",
    "BoardRegistry",
    "CreateBoard",
    "RestoreBoard",
    "RollBoard",
    "Standing",
    "check_board",
    "check_board_plain",
    "due_rolls",
    "in_current_window",
    "element_id_of",
    "rank_sums",
    "registry_of",
]
