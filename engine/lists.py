"""Ranked lists as engine entities: one actor per list, RankDB's list operations as commands.

Theory of operation
-------------------
Each RankDB list is a :class:`ListState` -- its settings (set, metadata, split/merge sizes) and a
:class:`engine.ranked.RankedList` -- owned by a *dedicated* actor (namespace ``"list"``): a list
is big and busy, and one task per list keeps a slow bulk load on one list from delaying others.

Mutations are commands (``engine/commands.py``) and so also log records: ``now`` travels inside
the command, so a replay stamps the same ``updated_at``. Inputs are validated whole when a
command is built; what depends on the list's state (it exists; an id is new) is checked by the
operation inside the actor before it changes anything, and fails the same way on replay, so a
logged command that failed is harmless. Writes answer with the views they produced (ranks after
the write), computed in the same actor turn.

Reads go through the list's actor too (``Router.ask``); a list that never existed answers from an
empty state, which raises ``NotFound``.

A list that is a live leaderboard (``ListState.board``, ``engine/boards.py``) is derived from
counters: every command that would change its entries some other way -- element writes and
deletes, one list or many, or replacing it with a plain list (create with ``replace``, restore)
-- is refused with :class:`LiveBoardConflict` inside the list's turn, so a replay refuses the
same records (a log written before this rule replays without the forged entries). Routes
read first and refuse before logging (``web/compat/rankdb/routes.py``), as for a missing list.
Deleting the list deletes the board.

A clone is a command routed to the *source* list: its turn copies the rows and installs the
copy as the new target entity, so the copy is exactly the source at that point of the log, live
and on replay alike. (The target has no owner yet -- it does not exist -- so no actor's state is
touched from outside.)
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from engine.board_definition import BoardDefinition
from engine.commands import Command, EntityKey, Operation, register
from engine.errors import Conflict, InvalidInput, NotFound
from engine.events import EXACT_FLOAT_INT
from engine.ranked import ElementIn, RankedElement, RankedList

LIST = "list"

LIST_ID = re.compile(r"^[a-zA-Z0-9_.\-]{2,100}$")
U64 = 2**64 - 1
U32 = 2**32 - 1
MAX_ELEMENTS_PER_WRITE = 1_000_000


############################################################################################
# Validation
############################################################################################


def check_list_id(value: Any, field_name: str = "list_id") -> str:
    if not isinstance(value, str) or not LIST_ID.fullmatch(value):  # match() allows "id\n"
        raise InvalidInput(
            f"{field_name} must be 2..100 characters of [a-zA-Z0-9-_.], got {value!r}", field_name
        )
    return value


def check_u(value: Any, field_name: str, high: int) -> int:
    if type(value) is not int:
        if isinstance(value, float) and value.is_integer() and abs(value) <= EXACT_FLOAT_INT:
            value = int(value)
        else:
            raise InvalidInput(f"{field_name} must be an integer, got {value!r}", field_name)
    if not 0 <= value <= high:
        raise InvalidInput(f"{field_name} must be between 0 and {high}, got {value!r}", field_name)
    return value


def check_payload(value: Any, field_name: str) -> None:
    """A payload holds JSON values only: objects with string keys, arrays, strings, numbers,
    booleans and null. msgpack can also carry binary strings, extension types and non-string
    keys, which JSON answers cannot write and snapshots cannot read back."""
    stack = [(value, field_name)]
    while stack:
        item, where = stack.pop()
        if item is None or isinstance(item, (bool, int, float, str)):
            continue
        if isinstance(item, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(item))
        elif isinstance(item, dict):
            for k, v in item.items():
                if not isinstance(k, str):
                    raise InvalidInput(f"{where} keys must be strings, got {k!r:.60}", field_name)
                stack.append((v, f"{where}.{k}"))
        else:
            raise InvalidInput(f"{where} must hold JSON values only, got {type(item).__name__} "
                               f"{item!r:.60}", field_name)


def check_element(raw: Any, field_name: str) -> ElementIn:
    """A RankDB element ``{id, score, tie_breaker?, payload?}``."""
    if not isinstance(raw, Mapping):
        raise InvalidInput(f"{field_name} must be an element object", field_name)
    for name in ("id", "score"):
        if name not in raw:
            raise InvalidInput(f"{field_name}.{name} is required", f"{field_name}.{name}")
    payload = raw.get("payload")
    if payload is not None and not isinstance(payload, dict):
        raise InvalidInput(f"{field_name}.payload must be an object or null", f"{field_name}.payload")
    if payload is not None:
        check_payload(payload, f"{field_name}.payload")
    return ElementIn(
        check_u(raw["id"], f"{field_name}.id", U64),
        check_u(raw["score"], f"{field_name}.score", U64),
        check_u(raw.get("tie_breaker", 0) or 0, f"{field_name}.tie_breaker", U32),
        payload,
    )


def check_elements(raw: Any, field_name: str = "elements") -> list[ElementIn]:
    if not isinstance(raw, list):
        raise InvalidInput(f"{field_name} must be a list of elements", field_name)
    if len(raw) > MAX_ELEMENTS_PER_WRITE:
        raise InvalidInput(f"{field_name} holds more than {MAX_ELEMENTS_PER_WRITE} elements", field_name)
    return [check_element(e, f"{field_name}[{i}]") for i, e in enumerate(raw)]


def check_ids(raw: Any, field_name: str = "element_ids") -> list[int]:
    if not isinstance(raw, list):
        raise InvalidInput(f"{field_name} must be a list of element ids", field_name)
    return [check_u(v, f"{field_name}[{i}]", U64) for i, v in enumerate(raw)]


@dataclass(frozen=True, slots=True, kw_only=True)
class ListSettings:
    """RankDB's list options. split/merge sizes are accepted and kept for compatibility; the
    ranked structure sizes its own blocks (``engine/ranked/blocks.py``)."""

    set: str
    metadata: dict[str, str] = field(default_factory=dict)
    split_size: int = 2000
    merge_size: int = 500
    load_index: bool = False

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ListSettings:
        raw_set = body.get("set")
        if not isinstance(raw_set, str) or not 2 <= len(raw_set) <= 100:
            raise InvalidInput(f"set must be a string of 2..100 characters, got {raw_set!r}", "set")
        metadata = body.get("metadata") or {}
        if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            raise InvalidInput("metadata must be an object of strings to strings", "metadata")
        split = body.get("split_size", 2000)
        merge = body.get("merge_size", 500)
        for name, value in (("split_size", split), ("merge_size", merge)):
            if type(value) is not int or not 10 <= value <= 100_000:
                raise InvalidInput(f"{name} must be an integer in 10..100000, got {value!r}", name)
        if merge >= split:
            raise InvalidInput(
                f"merge_size must be < split_size, got merge_size={merge} split_size={split}",
                "merge_size",
            )
        load_index = body.get("load_index", False)
        if not isinstance(load_index, bool):
            raise InvalidInput(f"load_index must be true or false, got {load_index!r}", "load_index")
        return cls(set=raw_set, metadata=dict(metadata), split_size=split, merge_size=merge,
                   load_index=load_index)

    def to_plain(self) -> list[Any]:
        return [self.set, self.metadata, self.split_size, self.merge_size, self.load_index]

    @classmethod
    def from_plain(cls, plain: list[Any]) -> ListSettings:
        return cls(set=plain[0], metadata=dict(plain[1]), split_size=plain[2],
                   merge_size=plain[3], load_index=plain[4])


############################################################################################
# State
############################################################################################


class ListState:
    """One list: settings and elements. ``settings is None`` means the list does not exist."""

    __slots__ = ("settings", "ranked", "applied_seq", "board")

    def __init__(self) -> None:
        self.settings: ListSettings | None = None
        self.ranked = RankedList()
        self.applied_seq = 0
        #: A live leaderboard's definition when this list is one (``engine/boards.py``).
        self.board: BoardDefinition | None = None

    @property
    def exists(self) -> bool:
        return self.settings is not None

    @property
    def vacant(self) -> bool:
        """Nothing worth keeping: the list does not exist (the router then forgets it)."""
        return self.settings is None

    def require(self, list_id: str) -> RankedList:
        if self.settings is None:
            raise NotFound(f"no list {list_id!r}; create it with POST /lists", "list_id")
        return self.ranked

    def to_plain(self) -> Any:
        if self.settings is None:
            return None  # a deleted list leaves nothing to snapshot
        return [self.settings.to_plain(), list(self.ranked.to_records()),
                None if self.board is None else self.board.to_plain()]

    @classmethod
    def from_plain(cls, plain: Any) -> ListState:
        state = cls()
        state.settings = ListSettings.from_plain(plain[0])
        state.ranked = RankedList.from_records(plain[1])
        if len(plain) > 2 and plain[2] is not None:
            state.board = BoardDefinition.from_plain(plain[2])
        return state


@dataclass(frozen=True, slots=True)
class ElementResult:
    """An element as a write or read produced it, with what RankDB's views need."""

    element: RankedElement
    above: list[RankedElement]
    below: list[RankedElement]
    previous: RankedElement | None = None


@dataclass(frozen=True, slots=True)
class ListInfo:
    """What RankDB's list views show, computed inside the list's actor turn."""

    list_id: str
    settings: ListSettings
    elements: int
    blocks: int
    avg_block_elements: float
    bytes_estimate: int
    top: RankedElement | None
    bottom: RankedElement | None


def list_info(list_id: str, state: ListState, top_bottom: bool = True) -> ListInfo:
    """A list's info view (``top``/``bottom`` only when asked for and the list is not empty)."""
    ranked = state.require(list_id)
    assert state.settings is not None
    stats = ranked.statistics()
    n = len(ranked)
    return ListInfo(
        list_id,
        state.settings,
        n,
        stats.blocks,
        n / stats.blocks if stats.blocks else 0.0,
        stats.bytes_estimate,
        ranked.at_rank(0) if top_bottom and n else None,
        ranked.at_rank(n - 1) if top_bottom and n else None,
    )


def element_result(ranked: RankedList, element_id: int, radius: int) -> ElementResult:
    element = ranked.get(element_id)
    above, below = ranked.neighbours(element_id, radius) if radius else ([], [])
    return ElementResult(element, above, below)


############################################################################################
# Commands
############################################################################################


class LiveBoardConflict(Conflict):
    """A write aimed at a live leaderboard's entries: they follow counters, not writes."""


def refuse_live_board(list_id: str, state: ListState, what: str) -> None:
    """Raise :class:`LiveBoardConflict` if the list is a live leaderboard.

    Args:
        what: the refused operation, for the message ("element writes", ...).
    """
    board = state.board
    if board is not None:
        raise LiveBoardConflict(
            f"list {list_id!r} is a live leaderboard of metric {board.metric!r}: its entries "
            f"follow the counters, so {what} are refused; write events (POST /api/events) to "
            f"move it, or delete the board first with DELETE /api/leaderboards/{list_id}",
            "list_id",
        )


def _forget_board(router: Any, list_id: str, state: ListState) -> None:
    """A list that was a live leaderboard stops being fed when deleted or replaced."""
    if state.board is not None and router is not None and "boards" in router.hooks:
        router.hooks["boards"].remove(list_id)


def _guard(seq: int, fn: Any) -> Operation:
    """Apply ``fn(state)`` unless the list already applied record ``seq`` (replay)."""

    def operation(state: ListState) -> Any:
        if state.applied_seq >= seq:
            return None
        result = fn(state)
        state.applied_seq = seq
        return result

    return operation


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class CreateList(Command):
    op: ClassVar[str] = "list.create"
    list_id: str
    settings: ListSettings
    populate: list[ElementIn]
    replace: bool
    now: int

    def to_plain(self) -> Any:
        return [self.list_id, self.settings.to_plain(), [list(e) for e in self.populate],
                self.replace, self.now]

    @classmethod
    def from_plain(cls, plain: Any) -> CreateList:
        return cls(list_id=plain[0], settings=ListSettings.from_plain(plain[1]),
                   populate=[ElementIn(*e) for e in plain[2]], replace=plain[3], now=plain[4])

    def route(self, seq: int, router: Any = None) -> dict[EntityKey, Operation]:
        def apply(state: ListState) -> ListInfo:
            if state.exists and not self.replace:
                raise Conflict(f"list {self.list_id!r} already exists", "id")
            refuse_live_board(self.list_id, state, "replacements by a plain list")
            ranked = RankedList()
            ranked.bulk_load(_dedupe(self.populate), self.now)
            state.settings, state.ranked, state.board = self.settings, ranked, None
            return list_info(self.list_id, state)

        return {(LIST, self.list_id): _guard(seq, apply)}

    def size(self) -> int:
        return len(self.populate)


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteList(Command):
    op: ClassVar[str] = "list.delete"
    list_id: str

    def to_plain(self) -> Any:
        return self.list_id

    @classmethod
    def from_plain(cls, plain: Any) -> DeleteList:
        return cls(list_id=plain)

    def route(self, seq: int, router: Any = None) -> dict[EntityKey, Operation]:
        def apply(state: ListState) -> None:
            _forget_board(router, self.list_id, state)
            state.settings, state.ranked, state.board = None, RankedList(), None

        return {(LIST, self.list_id): _guard(seq, apply)}


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class CloneList(Command):
    op: ClassVar[str] = "list.clone"
    source: str
    target: str
    settings: ListSettings

    def to_plain(self) -> Any:
        return [self.source, self.target, self.settings.to_plain()]

    @classmethod
    def from_plain(cls, plain: Any) -> CloneList:
        return cls(source=plain[0], target=plain[1], settings=ListSettings.from_plain(plain[2]))

    def route(self, seq: int, router: Any = None) -> dict[EntityKey, Operation]:
        def apply(state: ListState) -> ListInfo:
            ranked = state.require(self.source)
            existing = router.directory[LIST].get(self.target)
            if existing is not None and existing.exists:
                raise Conflict(f"list {self.target!r} already exists", "id")
            copy = ListState()
            copy.settings, copy.ranked, copy.applied_seq = self.settings, ranked.clone(), seq
            router.install((LIST, self.target), copy)
            return list_info(self.target, copy)

        return {(LIST, self.source): _guard(seq, apply)}


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class PutElements(Command):
    """Upsert (or, with ``insert_only``, create) elements in one or many lists.

    With several lists, each list's failure (missing, id exists) is its own result, not an error
    of the whole command (RankDB's xlist ``errors`` map).
    """

    op: ClassVar[str] = "list.put"
    list_ids: list[str]
    elements: list[ElementIn]
    insert_only: bool
    now: int
    #: Neighbours to return around a single written element (0: none).
    radius: int = 0

    def to_plain(self) -> Any:
        return [self.list_ids, [list(e) for e in self.elements], self.insert_only, self.now, self.radius]

    @classmethod
    def from_plain(cls, plain: Any) -> PutElements:
        return cls(list_ids=plain[0], elements=[ElementIn(*e) for e in plain[1]],
                   insert_only=plain[2], now=plain[3], radius=plain[4])

    def route(self, seq: int, router: Any = None) -> dict[EntityKey, Operation]:
        elements = _dedupe(self.elements)
        single = len(self.list_ids) == 1

        def apply(list_id: str) -> Any:
            def fn(state: ListState) -> Any:
                ranked = state.require(list_id)
                refuse_live_board(list_id, state, "element writes")
                if self.insert_only:
                    clash = [e.id for e in elements if e.id in ranked]
                    if clash:
                        raise Conflict(f"element(s) already exist: {clash[:10]!r}", "id")
                if len(elements) == 1:
                    e = elements[0]
                    previous = ranked.upsert(e.id, e.score, e.tie_breaker, e.payload, self.now)
                    result = element_result(ranked, e.id, self.radius)
                    return ElementResult(result.element, result.above, result.below, previous)
                ranked.bulk_upsert(elements, self.now)
                return [e.id for e in elements]

            return fn if single else _per_list(fn)

        return {(LIST, list_id): _guard(seq, apply(list_id)) for list_id in self.list_ids}

    def size(self) -> int:
        return len(self.elements) * len(self.list_ids)


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteElements(Command):
    op: ClassVar[str] = "list.delete_elements"
    list_ids: list[str]
    ids: list[int]

    def to_plain(self) -> Any:
        return [self.list_ids, self.ids]

    @classmethod
    def from_plain(cls, plain: Any) -> DeleteElements:
        return cls(list_ids=plain[0], ids=plain[1])

    def route(self, seq: int, router: Any = None) -> dict[EntityKey, Operation]:
        single = len(self.list_ids) == 1

        def apply(list_id: str) -> Any:
            def fn(state: ListState) -> int:
                ranked = state.require(list_id)
                refuse_live_board(list_id, state, "element deletes")
                return ranked.bulk_delete(self.ids)

            return fn if single else _per_list(fn)

        return {(LIST, list_id): _guard(seq, apply(list_id)) for list_id in self.list_ids}


@register
@dataclass(frozen=True, slots=True, kw_only=True)
class RestoreList(Command):
    """Install a list from backup records (``keep``: leave an existing list alone)."""

    op: ClassVar[str] = "list.restore"
    list_id: str
    settings: ListSettings
    records: list[dict[str, Any]]
    keep: bool

    def to_plain(self) -> Any:
        return [self.list_id, self.settings.to_plain(), self.records, self.keep]

    @classmethod
    def from_plain(cls, plain: Any) -> RestoreList:
        return cls(list_id=plain[0], settings=ListSettings.from_plain(plain[1]),
                   records=plain[2], keep=plain[3])

    def route(self, seq: int, router: Any = None) -> dict[EntityKey, Operation]:
        ranked = RankedList.from_records(self.records)  # validates before anything changes

        def apply(state: ListState) -> str:
            if state.exists and self.keep:
                return "skipped"
            refuse_live_board(self.list_id, state, "replacements by a plain list")
            state.settings, state.ranked, state.board = self.settings, ranked.clone(), None
            return "restored"

        return {(LIST, self.list_id): _guard(seq, apply)}


class ListFailure(Exception):
    """A per-list failure inside a multi-list command, returned (not raised) as its result."""


def _per_list(fn: Any) -> Any:
    def wrapped(state: ListState) -> Any:
        try:
            return fn(state)
        except (NotFound, Conflict) as exc:
            return ListFailure("not found" if isinstance(exc, NotFound) else exc.message)

    return wrapped


def _dedupe(elements: Iterable[ElementIn]) -> list[ElementIn]:
    """Duplicate ids within one request: the last one wins (documented; RankDB's own keeper
    rule is unspecified)."""
    return list({e.id: e for e in elements}.values())


def check_percentile(raw: Any) -> float:
    try:
        pct = float(raw)
    except (TypeError, ValueError):
        raise InvalidInput(f"from_top must be a number in 0..100, got {raw!r}", "from_top") from None
    if math.isnan(pct) or not 0 <= pct <= 100:
        raise InvalidInput(f"from_top must be a number in 0..100, got {raw!r}", "from_top")
    return pct


__all__ = [
    "LIST",
    "CloneList",
    "CreateList",
    "DeleteElements",
    "DeleteList",
    "ElementResult",
    "ListFailure",
    "ListInfo",
    "LiveBoardConflict",
    "list_info",
    "ListSettings",
    "ListState",
    "PutElements",
    "RestoreList",
    "check_elements",
    "check_ids",
    "check_list_id",
    "refuse_live_board",
]
