"""What a live leaderboard ranks: its definition, shared by the boards and the lists they live in.

A live board (``engine/boards.py``) is a ranked list (``engine/lists.py``) whose state carries
this definition: the lists need it to snapshot, restore and refuse writes to a board, the boards
to feed and roll it. It lives here, below both, so neither imports the other for it.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

ROLLING_UNITS = ("day", "week", "month")


@dataclass(frozen=True, slots=True, kw_only=True)
class BoardDefinition:
    """What a live board ranks, and the window it currently covers."""

    metric: str
    atid: int | None = None
    members: tuple[Hashable, ...] | None = None
    #: ``"fixed"`` or one of ``ROLLING_UNITS``.
    window_kind: str = "fixed"
    tz: str | None = None
    #: The current window, inclusive.
    t1: int = 0
    t2: int = 0

    def to_plain(self) -> list[Any]:
        return [self.metric, self.atid, None if self.members is None else list(self.members),
                self.window_kind, self.tz, self.t1, self.t2]

    @classmethod
    def from_plain(cls, plain: Sequence[Any]) -> BoardDefinition:
        members = None if plain[2] is None else tuple(plain[2])
        return cls(metric=plain[0], atid=plain[1], members=members, window_kind=plain[3],
                   tz=plain[4], t1=plain[5], t2=plain[6])

    def public(self) -> dict[str, Any]:
        return {"metric": self.metric, "atid": self.atid,
                "members": None if self.members is None else list(self.members),
                "window": {"kind": self.window_kind, "tz": self.tz, "t1": self.t1, "t2": self.t2}}
