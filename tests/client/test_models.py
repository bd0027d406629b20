"""The client's result types against the server's declarations (client/models.py copies them;
this is where a change on either side is caught).

The native answers are compared with ``web/api/models.py``, the statistics and snapshot
records with the engine's and the store's dataclasses, field by field: same names, and the
same required ones. RankDB's views have no declaration on the server; tests/client/
test_client_sync.py checks every key of real answers against these types instead.
"""

from __future__ import annotations

import dataclasses

import msgspec
import pytest

from client import models as c
from engine.actors import RouterStatistics
from engine.engine import EngineStatistics
from snapshots.store import RecoveryReport, SnapshotRecord
from snapshots.wal import WalStatistics
from web.api import models as s

MIRRORED_STRUCTS = [
    (c.Applied, s.Applied),
    (c.StreamApplied, s.StreamApplied),
    (c.UserSums, s.UserSums),
    (c.RangeResult, s.RangeResult),
    (c.UserSeries, s.UserSeries),
    (c.BreakdownResult, s.BreakdownResult),
    (c.UserSum, s.UserSum),
    (c.CounterSum, s.CounterSum),
    (c.CounterSeries, s.CounterSeries),
    (c.BoardEntry, s.BoardEntry),
    (c.WindowInfo, s.WindowInfo),
    (c.Leaderboard, s.Leaderboard),
    (c.Standing, s.Standing),
    (c.UserStanding, s.UserStanding),
    (c.LeaderboardView, s.LeaderboardView),
    (c.LeaderboardSummary, s.LeaderboardSummary),
    (c.LeaderboardCatalog, s.LeaderboardCatalog),
    (c.RankResult, s.RankResult),
    (c.SnapshotStatus, s.SnapshotStatus),
    # Inputs: the client's encodings must be bodies the server's models accept.
    (c.Event, s.CounterEvent),
    (c.Count, s.CountEvent),
    (c.Window, s.Window),
]

MIRRORED_DATACLASSES = [
    (c.EngineStatistics, EngineStatistics),
    (c.RouterStatistics, RouterStatistics),
    (c.SnapshotRecord, SnapshotRecord),
    (c.RecoveryReport, RecoveryReport),
    (c.WalStatistics, WalStatistics),
]


def _struct_fields(cls: type[msgspec.Struct]) -> tuple[list[str], set[str]]:
    info = msgspec.structs.fields(cls)
    return [f.name for f in info], {f.name for f in info if f.required}


@pytest.mark.parametrize(("mine", "theirs"), MIRRORED_STRUCTS, ids=lambda t: t.__name__)
def test_client_struct_mirrors_server_model(mine, theirs):
    mine_names, mine_required = _struct_fields(mine)
    their_names, their_required = _struct_fields(theirs)
    assert mine_names == their_names
    assert mine_required == their_required


@pytest.mark.parametrize(("mine", "theirs"), MIRRORED_DATACLASSES, ids=lambda t: t.__name__)
def test_client_struct_mirrors_server_dataclass(mine, theirs):
    names, required = _struct_fields(mine)
    fields = dataclasses.fields(theirs)
    assert names == [f.name for f in fields]
    assert required == {f.name for f in fields if f.default is dataclasses.MISSING
                        and f.default_factory is dataclasses.MISSING}


def test_client_inputs_encode_to_bodies_the_server_models_accept():
    event = c.Event(metric="steps", user="alice", value=-5, ts=100, atid=2, aid=3, ts1=90,
                    mode="diff")
    assert msgspec.json.decode(msgspec.json.encode([event]), type=s.EventsBody)
    window = c.Window(rolling="week", tz="Europe/Oslo")
    assert msgspec.json.decode(msgspec.json.encode(window), type=s.Window) == s.Window(
        rolling="week", tz="Europe/Oslo")


def test_client_answers_decode_server_shaped_values():
    """A value built with the server's own model decodes as the client's type."""
    view = s.LeaderboardView(
        id="b1", metric="steps", atid=None, members=[1, "a"],
        window=s.WindowInfo(kind="day", tz="UTC", t1=0, t2=86399), size=2,
        top=[s.Standing(user=1, score=5, rank=0, updated_at=3)],
        user=s.UserStanding(user=1, score=5, rank=0, above=[], below=[], updated_at=3),
    )
    mine = msgspec.json.decode(msgspec.json.encode(view), type=c.LeaderboardView)
    assert mine.members == (1, "a") and mine.user is not None and mine.user.rank == 0
