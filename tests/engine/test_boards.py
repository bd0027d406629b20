"""Tests for engine/boards.py: ad-hoc rankings and live leaderboards, through a real Engine.

Ad-hoc rankings are compared with a brute-force model over seeded random events. Live boards
are compared with the ad-hoc ranking of the same window after every write (scores only where
ties may order differently), and checked to survive snapshots and replay. Rolling windows are
pure functions of ``now``; the board clock runs in virtual time with ``time.time`` replaced in
``engine.engine``.
"""

from __future__ import annotations

import io
import random
from collections.abc import Hashable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import trio

import engine.engine as engine_module
from engine.boards import (
    BOARD_SET,
    BoardDefinition,
    BoardRegistry,
    CreateBoard,
    RestoreBoard,
    RollBoard,
    Standing,
    _set_score,
    check_board,
    check_board_plain,
    due_rolls,
    element_id_of,
    in_current_window,
    rank_sums,
    registry_of,
    rolling_window,
)
from engine.commands import Command, IngestBatch, encode_command
from engine.engine import Engine
from engine.errors import Conflict, InvalidInput, NotFound, PointspaceError
from engine.events import validate_counter_events
from engine.lists import (
    LIST,
    U64,
    CreateList,
    DeleteElements,
    DeleteList,
    ListFailure,
    ListSettings,
    ListState,
    LiveBoardConflict,
    PutElements,
)
from engine.ranked import ElementIn, RankedElement
from snapshots.codec import SnapshotEncoder
from snapshots.codec import iter_snapshot_items as decode_snapshot

DAY = 86400
T0 = 1_700_000_000  # 2023-11-14 22:13:20 UTC
INT64_MAX = 2**63 - 1


def utc(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp())


def local(tz: str, *args: int) -> int:
    return int(datetime(*args, tzinfo=ZoneInfo(tz)).timestamp())


def ev(user: Any, value: int, ts: int, metric: str = "m", **extra: Any) -> dict[str, Any]:
    return {"metric": metric, "user": user, "value": value, "ts": ts, **extra}


def fixed(board_id: str, t1: int, t2: int, metric: str = "m", **extra: Any) -> dict[str, Any]:
    return {"id": board_id, "metric": metric, "window": {"t1": t1, "t2": t2}, **extra}


class FakeTime:
    """Stands in for the ``time`` module inside ``engine.engine`` (``time.time()`` only)."""

    def __init__(self, now: int) -> None:
        self.now = now

    def time(self) -> float:
        return float(self.now)


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    """The engine's wall clock, frozen at noon UTC on 2024-05-15 until a test moves it."""
    fake = FakeTime(utc(2024, 5, 15, 12))
    monkeypatch.setattr(engine_module, "time", fake)
    return fake


async def standings(engine: Engine, board_id: str) -> list[RankedElement]:
    """Every element of a board in rank order, after checking the list's invariants."""

    def read(state: ListState) -> list[RankedElement]:
        ranked = state.require(board_id)
        ranked._check()
        return list(ranked)

    return await engine.ask(LIST, board_id, read)


async def scores(engine: Engine, board_id: str) -> dict[Hashable, int]:
    """``{user: score}`` of a board; also checks element ids, payloads and score order."""
    elements = await standings(engine, board_id)
    out = {}
    for e in elements:
        user = e.payload["user"]
        assert e.id == element_id_of(user), e
        out[user] = e.score
    assert [e.score for e in elements] == sorted((e.score for e in elements), reverse=True)
    return out


async def adhoc(
    engine: Engine,
    metric: str,
    t1: int,
    t2: int,
    atid: int | None = None,
    members: Sequence[Any] | None = None,
) -> dict[Hashable, int]:
    """What a live board over the same definition must hold, from the ad-hoc ranking."""
    ranked = await engine.rank_users(metric, t1, t2, atid=atid, users=members)
    if members is None:
        return {s.user: min(s.score, U64) for s in ranked if s.score > 0}
    return {s.user: min(max(s.score, 0), U64) for s in ranked}


def snapshot_round_trip(
    items: Iterable[tuple[str, Any, int, Any]],
) -> list[tuple[str, Any, int, Any]]:
    """Items encoded and decoded by the real snapshot codec."""
    encoder = SnapshotEncoder(start_seq=1, created=0.0)
    data = encoder.header_bytes()
    for item in items:
        data += encoder.encode_item(item)
    data += encoder.finish()
    return [tuple(item) for item in decode_snapshot(io.BytesIO(data))]


def ingest_command(*events: dict[str, Any]) -> IngestBatch:
    return IngestBatch(events=validate_counter_events(list(events)))


async def dispatch_back_to_back(engine: Engine, *commands: Command) -> list[Any]:
    """Log and dispatch ``commands`` one after another before any actor runs, then wait for
    all of them: what ``Engine.submit`` does for racing requests that dispatch between two
    scheduler turns. Returns each command's results, or the domain error it raised."""
    completions = []
    for cmd in commands:
        seq = engine._journal.append(encode_command(cmd))
        completions.append(await engine._dispatch(cmd, seq))
    out: list[Any] = []
    for completion in completions:
        try:
            out.append(await completion.wait())
        except PointspaceError as exc:
            out.append(exc)
    return out


def due_rolls_of(engine: Engine, now: int) -> list[RollBoard]:
    """The rolls the engine's board clock would submit at ``now``."""
    return due_rolls(registry_of(engine._router), now)


async def logged(engine: Engine, log: list[tuple[int, bytes]], cmd: Command) -> None:
    record = encode_command(cmd)
    await engine.submit(cmd)
    log.append((engine.last_seq, record))


############################################################################################
# Pure helpers: element ids, rank_sums, definitions


def test_element_id_of_u64_user_ids_are_the_element_id() -> None:
    assert [element_id_of(u) for u in (0, 5, U64)] == [0, 5, U64]


def test_element_id_of_other_ids_hash_to_stable_distinct_u64s() -> None:
    users = ["alice", "bob", -1, -5, "", "5x"]
    ids = [element_id_of(u) for u in users]
    assert ids == [element_id_of(u) for u in users]
    assert len(set(ids)) == len(ids)
    assert all(0 <= i <= U64 for i in ids)
    assert element_id_of(-1) != 1 and element_id_of("-1") != element_id_of(-1)


def test_rank_sums_orders_by_sum_then_user_type_and_text() -> None:
    got = rank_sums({2: 5, 10: 5, "a": 5, "B": 7, 3: -1})
    assert got == [
        Standing(0, "B", 7),
        Standing(1, 10, 5),
        Standing(2, 2, 5),
        Standing(3, "a", 5),
        Standing(4, 3, -1),
    ]
    assert rank_sums({}) == []


def test_board_definition_plain_round_trip_and_public_view() -> None:
    d = BoardDefinition(
        metric="m", atid=3, members=(1, "x"), window_kind="week", tz="Europe/Oslo", t1=10, t2=20
    )
    assert BoardDefinition.from_plain(d.to_plain()) == d
    assert d.public() == {
        "metric": "m",
        "atid": 3,
        "members": [1, "x"],
        "window": {"kind": "week", "tz": "Europe/Oslo", "t1": 10, "t2": 20},
    }
    everyone = BoardDefinition(metric="m", t1=0, t2=5)
    assert BoardDefinition.from_plain(everyone.to_plain()) == everyone


############################################################################################
# check_board


def test_check_board_fixed_window() -> None:
    board_id, d = check_board(fixed("b1", 10, 20, atid=-2, members=[1, "42", 42, "bob", 1]), T0)
    assert board_id == "b1"
    assert d == BoardDefinition(
        metric="m", atid=-2, members=(1, 42, "bob"), window_kind="fixed", t1=10, t2=20
    )
    _, d = check_board({"id": "b2", "metric": "m", "window": {"t1": 5.0, "t2": 5}}, T0)
    assert (d.atid, d.members, d.t1, d.t2) == (None, None, 5, 5)


def test_check_board_rolling_window_is_the_current_period() -> None:
    now = utc(2024, 5, 15, 12)
    _, d = check_board(
        {"id": "b1", "metric": "m", "window": {"rolling": "week", "tz": "Asia/Tokyo"}}, now
    )
    assert (d.window_kind, d.tz, (d.t1, d.t2)) == (
        "week",
        "Asia/Tokyo",
        rolling_window("week", "Asia/Tokyo", now),
    )
    _, d = check_board({"id": "b1", "metric": "m", "window": {"rolling": "day"}}, now)
    assert (d.window_kind, d.tz, d.t1, d.t2) == (
        "day",
        None,
        utc(2024, 5, 15),
        utc(2024, 5, 16) - 1,
    )


W = {"t1": 0, "t2": 10}


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ("nope", "body", r"^request body must be a leaderboard object$"),
        ({"metric": "m", "window": W}, "id", r"^id must be 2\.\.100 characters of .*, got None$"),
        (
            {"id": "a", "metric": "m", "window": W},
            "id",
            r"^id must be 2\.\.100 characters of .*, got 'a'$",
        ),
        ({"id": "a b", "metric": "m", "window": W}, "id", r"^id must be 2\.\.100"),
        ({"id": "b1", "window": W}, "metric", r"^metric must be a non-empty string of at most 200 characters, got None$"),
        (
            {"id": "b1", "metric": "", "window": W},
            "metric",
            r"^metric must be a non-empty string of at most 200 characters, got ''$",
        ),
        (
            {"id": "b1", "metric": 5, "window": W},
            "metric",
            r"^metric must be a non-empty string of at most 200 characters, got 5$",
        ),
        (
            {"id": "b1", "metric": "x" * 201, "window": W},
            "metric",
            r"^metric must be a non-empty string",
        ),
        (
            {"id": "b1", "metric": "m", "atid": "1", "window": W},
            "atid",
            r"^atid must be an integer, got '1'$",
        ),
        (
            {"id": "b1", "metric": "m", "atid": True, "window": W},
            "atid",
            r"^atid must be an integer, got True$",
        ),
        (
            {"id": "b1", "metric": "m", "atid": 2**63, "window": W},
            "atid",
            r"^atid must be between -9223372036854775808 and 9223372036854775807, got ",
        ),
        (
            {"id": "b1", "metric": "a\x07b", "window": W},
            "metric",
            r"^metric must not contain control characters or surrogates, got 'a\\x07b' \(U\+0007 at index 1\)$",
        ),
        (
            {"id": "b1", "metric": "st\x00eps", "window": {"rolling": "day"}},
            "metric",
            r"^metric must not contain control characters",
        ),
        (
            {"id": "b1", "metric": "m", "atid": 1.5, "window": W},
            "atid",
            r"^atid must be an integer, got 1\.5$",
        ),
        (
            {"id": "b1", "metric": "m", "members": ["a\nb"], "window": W},
            "members[0]",
            r"^members\[0\] must not contain control characters",
        ),
        (
            {"id": "b1", "metric": "m", "members": [], "window": W},
            "members",
            r"^members must be a non-empty list of user ids, or omitted \(null\) for every user$",
        ),
        (
            {"id": "b1", "metric": "m", "members": "1,2", "window": W},
            "members",
            r"^members must be a non-empty list",
        ),
        (
            {"id": "b1", "metric": "m", "members": [1, None], "window": W},
            "members[1]",
            r"^members\[1\] must be an integer or a non-empty string",
        ),
        (
            {"id": "b1", "metric": "m", "members": [True], "window": W},
            "members[0]",
            r"^members\[0\] must be",
        ),
        (
            {"id": "b1", "metric": "m"},
            "window",
            r'^window must be \{"t1": \.\., "t2": \.\.\} or \{"rolling"',
        ),
        ({"id": "b1", "metric": "m", "window": [0, 10]}, "window", r"^window must be"),
        (
            {"id": "b1", "metric": "m", "window": {"rolling": "year"}},
            "window.rolling",
            r"^window\.rolling must be one of \['day', 'week', 'month'\], got 'year'$",
        ),
        (
            {"id": "b1", "metric": "m", "window": {"rolling": None}},
            "window.rolling",
            r"^window\.rolling must be one of",
        ),
        (
            {"id": "b1", "metric": "m", "window": {"rolling": "day", "tz": "Mars/Olympus"}},
            "window.tz",
            r"^window\.tz must be an IANA time zone name such as 'Europe/Oslo', got 'Mars/Olympus'$",
        ),
        (
            {"id": "b1", "metric": "m", "window": {"rolling": "day", "tz": 5}},
            "window.tz",
            r"^window\.tz must be an IANA time zone name",
        ),
        (
            {"id": "b1", "metric": "m", "window": {"t2": 10}},
            "window.t1",
            r"^window\.t1 must be an integer, got None$",
        ),
        (
            {"id": "b1", "metric": "m", "window": {"t1": "0", "t2": 10}},
            "window.t1",
            r"^window\.t1 must be an integer, got '0'$",
        ),
        (
            {"id": "b1", "metric": "m", "window": {"t1": -1, "t2": 10}},
            "window.t1",
            r"^window\.t1 must be between 0 and 253402300799, got -1$",
        ),
        (
            {"id": "b1", "metric": "m", "window": {"t1": 10, "t2": 5}},
            "window.t1",
            r"^window\.t1 must be <= window\.t2, got 10 > 5$",
        ),
        (
            {"id": "b1", "metric": "m", "window": {"t1": 0}},
            "window.t2",
            r"^window\.t2 must be an integer, got None$",
        ),
        (
            {"id": "b1", "metric": "m", "window": {"t1": 0, "t2": 2**40}},
            "window.t2",
            r"^window\.t2 must be between",
        ),
    ],
)
def test_check_board_names_the_bad_field(body: Any, field: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as info:
        check_board(body, T0)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("plain", "field", "message"),
    [
        (["st\x00eps", None, None, "fixed", None, 0, 1], "board[0]",
         r"^board\[0\] must not contain control characters or surrogates, got 'st\\x00eps'"),
        (["m\ud800", None, None, "fixed", None, 0, 1], "board[0]", r"^board\[0\] must not contain"),
        (["m", True, None, "fixed", None, 0, 1], "board[1]", r"^board\[1\] must be an integer, got True$"),
        (["m", 2**63, None, "fixed", None, 0, 1], "board[1]", r"^board\[1\] must be between"),
        (["m", None, ["\x1b[31m"], "fixed", None, 0, 1], "board[2][0]", r"^board\[2\]\[0\] must not contain"),
        (["m", None, None, "hour", None, 0, 1], "board[3]",
         r"^board\[3\] must be a window kind, one of \['fixed', 'day', 'week', 'month'\], got 'hour'$"),
        (["m", None, None, "fixed", None, 5, 1], "board[5]", r"^board\[5\] must be <= board\[6\], got 5 > 1$"),
    ],
)
def test_check_board_plain_refuses_what_a_request_would(plain: list[Any], field: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as info:
        check_board_plain(plain)
    assert info.value.field == field


def test_check_board_and_check_board_plain_agree_on_a_valid_board() -> None:
    _, d = check_board(fixed("b1", 10, 20, atid=3, members=["7", "ann"]), T0)
    assert check_board_plain(d.to_plain()) == d


############################################################################################
# Ad-hoc rankings


def model_ranking(
    events: list[dict[str, Any]],
    metric: str,
    t1: int,
    t2: int,
    atid: int | None,
    users: Iterable[Any] | None,
) -> list[Standing]:
    """rank_users by brute force: a sum per user over the raw events."""
    if users is None:
        users = {e["user"] for e in events if e["metric"] == metric}
    sums = dict.fromkeys(users, 0)
    for e in events:
        if e["metric"] == metric and e["user"] in sums and t1 <= e["ts"] <= t2:
            if atid is None or e.get("atid", 0) == atid:
                sums[e["user"]] += e["value"]
    ordered = sorted(sums.items(), key=lambda kv: (-kv[1], type(kv[0]).__name__, str(kv[0])))
    return [Standing(rank, user, score) for rank, (user, score) in enumerate(ordered)]


def random_events(
    rng: random.Random, n: int, users: Sequence[Any], metrics: Sequence[str]
) -> list[dict[str, Any]]:
    return [
        ev(
            rng.choice(users),
            rng.randrange(-5, 30),
            T0 + rng.randrange(0, 40 * DAY),
            rng.choice(metrics),
            atid=rng.randrange(3),
        )
        for _ in range(n)
    ]


async def test_rank_users_matches_a_brute_force_model(engine: Engine) -> None:
    rng = random.Random(5)
    users: list[Any] = [*range(1, 16), "ann", "bob", "cy", -7]
    events: list[dict[str, Any]] = []
    for _ in range(6):
        batch = random_events(rng, 120, users, ["steps", "points"])
        events += batch
        await engine.ingest(batch)
    for _ in range(40):
        metric = rng.choice(["steps", "points", "never"])
        t1 = T0 + rng.randrange(-DAY, 40 * DAY)
        t2 = t1 + rng.choice([0, 3600, DAY, 7 * DAY, 50 * DAY])
        atid = rng.choice([None, 0, 1, 2, 9])
        subset = rng.choice([None, rng.sample(users, 5) + ["nobody"]])
        got = await engine.rank_users(metric, t1, t2, atid=atid, users=subset)
        assert got == model_ranking(events, metric, t1, t2, atid, subset), (
            metric,
            t1,
            t2,
            atid,
            subset,
        )


async def test_rank_users_past_windows_are_the_board_as_it_stood(engine: Engine) -> None:
    await engine.ingest([ev(1, 10, T0), ev(2, 5, T0 + 10), ev(2, 10, T0 + 20), ev(3, 30, T0 + 30)])
    as_of = {
        t: [(s.user, s.score) for s in await engine.rank_users("m", T0, t)]
        for t in (T0, T0 + 15, T0 + 25, T0 + 35)
    }
    assert as_of == {
        T0: [(1, 10), (2, 0), (3, 0)],
        T0 + 15: [(1, 10), (2, 5), (3, 0)],
        T0 + 25: [(2, 15), (1, 10), (3, 0)],
        T0 + 35: [(3, 30), (2, 15), (1, 10)],
    }


async def test_rank_users_of_every_user_only_counts_users_with_the_metric(engine: Engine) -> None:
    await engine.ingest([ev(1, 3, T0), ev(2, 0, T0), ev(3, 9, T0, metric="other"), ev(4, -2, T0)])
    got = await engine.rank_users("m", T0, T0)
    assert got == [Standing(0, 1, 3), Standing(1, 2, 0), Standing(2, 4, -2)]
    assert await engine.rank_users("unknown", 0, T0) == []


async def test_rank_users_given_users_normalizes_deduplicates_and_ranks_the_unwritten(
    engine: Engine,
) -> None:
    await engine.ingest([ev(7, 4, T0), ev("ann", 6, T0)])
    got = await engine.rank_users("m", T0, T0, users=["7", 7, "ann", "zed", 8])
    assert got == [
        Standing(0, "ann", 6),
        Standing(1, 7, 4),
        Standing(2, 8, 0),
        Standing(3, "zed", 0),
    ]


############################################################################################
# Live boards: fixed windows


async def test_board_over_every_user_holds_positive_sums_only(engine: Engine) -> None:
    created = await engine.create_board(fixed("all", T0, T0 + 100))
    assert created == {
        "id": "all",
        "metric": "m",
        "atid": None,
        "members": None,
        "window": {"kind": "fixed", "tz": None, "t1": T0, "t2": T0 + 100},
    }
    await engine.ingest(
        [
            ev(1, 5, T0),
            ev(2, 0, T0),
            ev(3, -4, T0),
            ev(4, 9, T0 + 100),
            ev(5, 7, T0 + 101),
            ev(6, 7, T0 - 1),
            ev(7, 8, T0, metric="other"),
        ]
    )
    assert await scores(engine, "all") == {4: 9, 1: 5}
    board = await engine.board("all", top=10, user=1, radius=1)
    assert board["size"] == 2 and [e.id for e in board["top"]] == [4, 1]
    assert board["user"]["element"].from_top == 1
    assert [e.id for e in board["user"]["above"]] == [4] and board["user"]["below"] == []
    assert (await engine.board("all", user=3))["user"] is None
    assert engine.list_catalog() == [
        ("all", ListSettings(set=BOARD_SET, metadata={"leaderboard": "m"}))
    ]


async def test_board_over_members_holds_every_member_and_ignores_others(engine: Engine) -> None:
    await engine.create_board(fixed("team", T0, T0 + 100, members=[1, "ann", 3, 4]))
    assert await scores(engine, "team") == {1: 0, "ann": 0, 3: 0, 4: 0}
    await engine.ingest(
        [ev(1, 5, T0), ev("ann", 2, T0), ev(3, -4, T0), ev(99, 50, T0), ev("bob", 60, T0)]
    )
    assert await scores(engine, "team") == {1: 5, "ann": 2, 3: 0, 4: 0}
    assert (await engine.board("team", user=99))["user"] is None
    assert (await engine.board("team", user=4))["user"]["element"].score == 0


async def test_board_with_atid_filter_counts_only_that_activity_type(engine: Engine) -> None:
    await engine.create_board(fixed("runs", T0, T0 + 100, atid=2))
    await engine.ingest(
        [ev(1, 5, T0, atid=2), ev(1, 50, T0, atid=1), ev(2, 7, T0), ev(3, 1, T0, atid=2)]
    )
    assert await scores(engine, "runs") == {1: 5, 3: 1}


async def test_board_follows_random_writes_like_rank_users(engine: Engine) -> None:
    """After every batch, each board equals the ad-hoc ranking of its window: same users,
    same scores, in non-increasing score order (ties may order differently)."""
    rng = random.Random(17)
    users: list[Any] = [*range(1, 25), "ann", "bob", -3]
    members = [1, 2, 3, "ann", "nobody", -3]
    t1, t2 = T0 + 5 * DAY, T0 + 25 * DAY
    await engine.create_board(fixed("every", t1, t2))
    await engine.create_board(fixed("typed", t1, t2, atid=1))
    await engine.create_board(fixed("team", t1, t2, members=members))
    await engine.create_board(fixed("other", t1, t2, metric="points"))
    for _ in range(12):
        batch = random_events(rng, 60, users, ["m", "m", "points"])
        if rng.random() < 0.5:  # a correction that may take a sum to or below zero
            batch.append(ev(rng.choice(users), -rng.randrange(10, 60), rng.randrange(t1, t2)))
        await engine.ingest(batch)
        assert await scores(engine, "every") == await adhoc(engine, "m", t1, t2)
        assert await scores(engine, "typed") == await adhoc(engine, "m", t1, t2, atid=1)
        assert await scores(engine, "team") == await adhoc(engine, "m", t1, t2, members=members)
        assert await scores(engine, "other") == await adhoc(engine, "points", t1, t2)
    assert len(await scores(engine, "every")) > 10


async def test_board_diff_mode_and_negative_corrections_move_scores_down(engine: Engine) -> None:
    await engine.create_board(fixed("all", T0, T0 + 100))
    await engine.create_board(fixed("team", T0, T0 + 100, members=[1, 2]))
    await engine.ingest([ev(1, 10, T0 + 1, aid=7, mode="diff"), ev(2, 8, T0 + 1)])
    assert await scores(engine, "all") == {1: 10, 2: 8}
    # Diff mode: the activity's running total drops from 10 to 6.
    await engine.ingest([ev(1, 6, T0 + 2, aid=7, ts1=T0, mode="diff")])
    assert await scores(engine, "all") == {2: 8, 1: 6}
    assert [e.id for e in await standings(engine, "all")] == [2, 1]
    # A negative correction to zero drops the user from the every-user board only.
    await engine.ingest([ev(1, -6, T0 + 3)])
    assert await scores(engine, "all") == {2: 8}
    assert await scores(engine, "team") == {2: 8, 1: 0}
    await engine.ingest([ev(1, -5, T0 + 3)])
    assert await scores(engine, "team") == {2: 8, 1: 0}
    await engine.ingest([ev(1, 7, T0 + 4)])
    assert await scores(engine, "all") == {2: 8, 1: 2}


async def test_board_string_and_int_user_ids(engine: Engine) -> None:
    await engine.create_board(fixed("ids", T0, T0 + 100))
    await engine.ingest(
        [
            ev(42, 1, T0),
            ev("42", 2, T0),
            ev("alice", 5, T0),
            ev(-5, 4, T0),
            ev(INT64_MAX, 6, T0),
            ev("042", 7, T0),
        ]
    )
    elements = {e.payload["user"]: e for e in await standings(engine, "ids")}
    assert {u: e.score for u, e in elements.items()} == {
        "042": 7,
        INT64_MAX: 6,
        "alice": 5,
        -5: 4,
        42: 3,
    }
    assert elements[42].id == 42 and elements[INT64_MAX].id == INT64_MAX
    assert elements["alice"].id == element_id_of("alice") and elements[-5].id == element_id_of(-5)
    assert elements["042"].id == element_id_of("042")
    assert (await engine.board("ids", user="42"))["user"]["element"].id == 42
    assert (await engine.board("ids", user="alice"))["user"]["element"].payload == {"user": "alice"}


async def test_board_created_after_writes_is_filled_from_existing_users(engine: Engine) -> None:
    await engine.ingest(
        [
            ev(1, 5, T0),
            ev(2, 9, T0 + 50),
            ev(3, 2, T0 + 500),
            ev(4, 3, T0, metric="other"),
            ev("ann", 4, T0, atid=1),
        ]
    )
    await engine.create_board(fixed("late", T0, T0 + 100))
    assert await scores(engine, "late") == {2: 9, 1: 5, "ann": 4}
    await engine.create_board(fixed("late-team", T0, T0 + 100, members=[1, 3, "zed"]))
    assert await scores(engine, "late-team") == {1: 5, 3: 0, "zed": 0}
    await engine.create_board(fixed("late-typed", T0, T0 + 100, atid=1))
    assert await scores(engine, "late-typed") == {"ann": 4}
    await engine.ingest([ev(3, 20, T0 + 1)])
    assert await scores(engine, "late") == {3: 20, 2: 9, 1: 5, "ann": 4}


async def test_board_ties_rank_who_reached_the_score_first_higher(engine: Engine) -> None:
    await engine.create_board(fixed("ties", T0, T0 + 100))
    await engine.ingest([ev(9, 10, T0 + 5)])
    await engine.ingest([ev(2, 10, T0 + 50)])
    assert [e.id for e in await standings(engine, "ties")] == [9, 2]
    # A write outside the window leaves the score, and so the place, unchanged.
    await engine.ingest([ev(9, 1, T0 + 500)])
    assert [e.id for e in await standings(engine, "ties")] == [9, 2]


async def test_board_scores_clamp_to_u64(engine: Engine) -> None:
    await engine.create_board(fixed("huge", T0, T0 + 100))
    await engine.ingest(
        [ev(1, INT64_MAX, T0), ev(1, INT64_MAX, T0 + 1), ev(1, INT64_MAX, T0 + 2), ev(2, 1, T0)]
    )
    assert await scores(engine, "huge") == {1: U64, 2: 1}


async def test_board_create_conflicts_with_an_existing_list_or_board(engine: Engine) -> None:
    await engine.create_board(fixed("b1", T0, T0 + 100))
    with pytest.raises(Conflict, match=r"^list 'b1' already exists$") as info:
        await engine.create_board(fixed("b1", 0, 10, metric="other"))
    assert info.value.field == "id"
    assert (await engine.board("b1"))["metric"] == "m"
    await engine.submit(
        CreateList(
            list_id="plain", settings=ListSettings(set="s1"), populate=[], replace=False, now=T0
        )
    )
    with pytest.raises(Conflict):
        await engine.create_board(fixed("plain", T0, T0 + 100))
    await engine.ingest([ev(1, 5, T0)])
    assert await standings(engine, "plain") == []
    with pytest.raises(
        InvalidInput, match=r"^list 'plain' is a ranked list, not a leaderboard$"
    ) as info:
        await engine.board("plain")
    assert info.value.field == "id"


async def test_board_read_of_a_missing_board_is_not_found(engine: Engine) -> None:
    with pytest.raises(NotFound):
        await engine.board("nope")


async def test_board_read_with_top_zero_returns_no_top(engine: Engine) -> None:
    await engine.create_board(fixed("b1", T0, T0 + 100))
    await engine.ingest([ev(1, 5, T0)])
    board = await engine.board("b1", top=0, user=1)
    assert board["top"] == [] and board["user"]["element"].score == 5


async def test_board_delete_stops_feeding_and_ingest_still_works(engine: Engine) -> None:
    await engine.create_board(fixed("gone", T0, T0 + 100))
    await engine.create_board(fixed("kept", T0, T0 + 100))
    await engine.ingest([ev(1, 5, T0)])
    await engine.submit(DeleteList(list_id="gone"))
    assert [i for i, _ in engine.list_catalog()] == ["kept"]
    await engine.ingest([ev(1, 5, T0 + 1), ev(2, 3, T0 + 1)])
    assert (await engine.query([1], ["m"], T0, T0 + 100))[1].sums == {"m": 10}
    assert await scores(engine, "kept") == {1: 10, 2: 3}
    with pytest.raises(NotFound):
        await engine.board("gone")
    assert [ident for ns, ident, _, _ in engine.iter_snapshot_items() if ns == LIST] == ["kept"]
    # The id can hold a new board, filled from the users as they are now.
    await engine.create_board(fixed("gone", T0 + 1, T0 + 1))
    assert await scores(engine, "gone") == {1: 5, 2: 3}


async def test_board_replace_by_a_plain_list_is_refused_and_the_board_stays_live(
    engine: Engine,
) -> None:
    await engine.create_board(fixed("b1", T0, T0 + 100))
    replace = CreateList(list_id="b1", settings=ListSettings(set="s1"), populate=[], replace=True, now=T0)
    with pytest.raises(LiveBoardConflict, match=r"^list 'b1' is a live leaderboard of metric 'm': "
                       r"its entries follow the counters, so replacements by a plain list are "
                       r"refused; .* DELETE /api/leaderboards/b1$"):
        await engine.submit(replace)
    await engine.ingest([ev(1, 5, T0)])
    assert await scores(engine, "b1") == {1: 5}


async def test_board_deleted_then_recreated_as_a_plain_list_stops_being_fed(engine: Engine) -> None:
    await engine.create_board(fixed("b1", T0, T0 + 100))
    await engine.delete_board("b1")
    await engine.submit(
        CreateList(list_id="b1", settings=ListSettings(set="s1"), populate=[], replace=True, now=T0)
    )
    await engine.ingest([ev(1, 5, T0)])
    assert await standings(engine, "b1") == []


async def test_board_refused_duplicate_create_does_not_drop_concurrent_writes(
    engine: Engine,
) -> None:
    existing = BoardDefinition(metric="m", t1=T0, t2=T0 + 100)
    refused = BoardDefinition(metric="m", t1=T0, t2=T0 + 1)
    await engine.submit(CreateBoard(board_id="taken", definition=existing))
    stale = []
    for k in range(1, 21):  # trio picks either actor first; the bug shows about half the time
        results = await dispatch_back_to_back(
            engine,
            CreateBoard(board_id="taken", definition=refused),
            ingest_command(ev(1, 1, T0 + 50)),
        )
        assert isinstance(results[0], Conflict)
        if await scores(engine, "taken") != {1: k}:
            stale.append(k)
    assert (await engine.board("taken"))["window"]["t2"] == T0 + 100
    assert stale == []


async def test_board_recreated_right_after_its_delete_is_filled_from_existing_users(
    engine: Engine,
) -> None:
    await engine.ingest([ev(1, 5, T0)])
    definition = BoardDefinition(metric="m", t1=T0, t2=T0 + 100)
    await engine.submit(CreateBoard(board_id="again", definition=definition))
    await dispatch_back_to_back(  # both succeed
        engine, DeleteList(list_id="again"), CreateBoard(board_id="again", definition=definition)
    )
    assert await scores(engine, "again") == {1: 5}


async def test_board_with_only_deleted_boards_of_a_metric_still_ingests(engine: Engine) -> None:
    await engine.create_board(fixed("b1", T0, T0 + 100))
    await engine.submit(DeleteList(list_id="b1"))
    assert await engine.ingest([ev(1, 5, T0)]) == 1
    assert (await engine.query([1], ["m"], T0, T0))[1].sums == {"m": 5}


############################################################################################
# Snapshots and replay


async def test_board_survives_a_snapshot_round_trip_and_keeps_being_fed() -> None:
    async with Engine.open() as first:
        await first.create_board(fixed("all", T0, T0 + 100))
        await first.create_board(fixed("team", T0, T0 + 100, members=[1, "ann", "zed"], atid=0))
        await first.ingest([ev(1, 5, T0), ev("ann", 7, T0), ev(3, 2, T0), ev(3, 9, T0, atid=1)])
        items = snapshot_round_trip(first.iter_snapshot_items())
        expected = {b: await standings(first, b) for b in ("all", "team")}
        definitions = {
            b: {k: v for k, v in (await first.board(b)).items() if k not in ("top", "size")}
            for b in ("all", "team")
        }
    async with Engine.open() as second:
        for item in items:
            second.load_snapshot_item(*item)
        for b in ("all", "team"):
            assert await standings(second, b) == expected[b]
            assert {
                k: v for k, v in (await second.board(b)).items() if k not in ("top", "size")
            } == definitions[b]
        await second.ingest([ev("zed", 4, T0 + 1), ev(3, 20, T0 + 1), ev(9, 1, T0 + 1)])
        assert await scores(second, "all") == {3: 31, "ann": 7, 1: 5, "zed": 4, 9: 1}
        assert await scores(second, "team") == {"ann": 7, 1: 5, "zed": 4}


async def test_board_converges_when_users_were_snapshotted_after_the_board() -> None:
    """A board item taken early plus user items taken later (some before, some after the board
    item) and the log from the snapshot's start: user actors forward even for records their
    state already holds, so the board ends with the same scores as the live one."""
    log: list[tuple[int, bytes]] = []
    async with Engine.open() as live:
        await logged(
            live,
            log,
            CreateBoard(board_id="all", definition=BoardDefinition(metric="m", t1=T0, t2=T0 + 100)),
        )
        await logged(live, log, ingest_command(ev(1, 5, T0), ev(2, 3, T0)))
        early = snapshot_round_trip(live.iter_snapshot_items())
        start = live.stable_seq()
        await logged(live, log, ingest_command(ev(1, 10, T0 + 1)))
        await logged(live, log, ingest_command(ev(3, 7, T0 + 1)))
        await logged(live, log, ingest_command(ev(2, 4, T0 + 2), ev(1, 1, T0 + 900)))
        late = snapshot_round_trip(live.iter_snapshot_items())
        expected = await scores(live, "all")
    assert expected == {1: 15, 2: 7, 3: 7}
    board_item = [i for i in early if i[0] == LIST]
    user_items = [i for i in early if i[1] == 2] + [i for i in late if i[1] in (1, 3)]
    assert [i[2] for i in board_item] == [1] and sorted(i[2] for i in user_items) == [2, 4, 5]
    async with Engine.open() as recovered:
        for item in board_item + user_items:
            recovered.load_snapshot_item(*item)
        for seq, record in log:
            if seq >= start:
                await recovered.replay(seq, record)
        assert await scores(recovered, "all") == expected
        sums = await recovered.query([1, 2, 3], ["m"], T0, T0 + 1000)
        assert {u: r.sums["m"] for u, r in sums.items()} == {1: 16, 2: 7, 3: 7}


async def test_board_log_replay_from_scratch_rebuilds_boards() -> None:
    log: list[tuple[int, bytes]] = []
    async with Engine.open() as live:
        await logged(live, log, ingest_command(ev(1, 5, T0), ev(2, 3, T0)))
        await logged(
            live,
            log,
            CreateBoard(board_id="all", definition=BoardDefinition(metric="m", t1=T0, t2=T0 + 100)),
        )
        await logged(
            live,
            log,
            CreateBoard(
                board_id="team",
                definition=BoardDefinition(metric="m", members=(2, 4), t1=T0, t2=T0 + 100),
            ),
        )
        await logged(live, log, ingest_command(ev(4, 8, T0 + 1), ev(1, -5, T0 + 1)))
        await logged(live, log, DeleteList(list_id="all"))
        await logged(
            live,
            log,
            CreateBoard(
                board_id="all", definition=BoardDefinition(metric="m", t1=T0 + 1, t2=T0 + 1)
            ),
        )
        expected = {b: await scores(live, b) for b in ("all", "team")}
    assert expected == {"all": {4: 8}, "team": {4: 8, 2: 3}}
    async with Engine.open() as replayed:
        for seq, record in log:
            await replayed.replay(seq, record)
        assert {b: await scores(replayed, b) for b in ("all", "team")} == expected
        await replayed.ingest([ev(2, 1, T0 + 1)])
        assert await scores(replayed, "all") == {4: 8, 2: 1}


############################################################################################
# Rolling windows


async def test_board_log_replay_rebuilds_a_rolled_board(fake_time: FakeTime) -> None:
    log: list[tuple[int, bytes]] = []
    _, definition = check_board(
        {"id": "today", "metric": "m", "members": [1], "window": {"rolling": "day"}}, fake_time.now
    )
    day1 = (definition.t2 + 1, definition.t2 + DAY)
    async with Engine.open() as live:
        await logged(live, log, CreateBoard(board_id="today", definition=definition))
        await logged(live, log, ingest_command(ev(1, 5, definition.t1), ev(2, 9, definition.t1)))
        await logged(live, log, RollBoard(board_id="today", t1=day1[0], t2=day1[1]))
        await logged(live, log, ingest_command(ev(1, 3, day1[0]), ev(2, 4, day1[0])))
        expected = await live.board("today")
    assert [(e.id, e.score) for e in expected["top"]] == [(1, 3)]
    async with Engine.open() as replayed:
        for seq, record in log:
            await replayed.replay(seq, record)
        assert await replayed.board("today") == expected


def hours(window: tuple[int, int]) -> float:
    return (window[1] - window[0] + 1) / 3600


def test_rolling_window_day_in_utc() -> None:
    day = (utc(2024, 5, 15), utc(2024, 5, 16) - 1)
    for now in (utc(2024, 5, 15), utc(2024, 5, 15, 13, 45), utc(2024, 5, 16) - 1):
        assert rolling_window("day", None, now) == day
        assert rolling_window("day", "UTC", now) == day
    assert rolling_window("day", None, utc(2024, 5, 16)) == (utc(2024, 5, 16), utc(2024, 5, 17) - 1)


def test_rolling_window_week_starts_on_monday() -> None:
    week = (utc(2024, 5, 13), utc(2024, 5, 20) - 1)  # Monday 13th .. Sunday 19th
    for now in (utc(2024, 5, 13), utc(2024, 5, 15, 9), utc(2024, 5, 19, 23, 59, 59)):
        assert rolling_window("week", None, now) == week
    assert rolling_window("week", None, utc(2024, 5, 20)) == (
        utc(2024, 5, 20),
        utc(2024, 5, 27) - 1,
    )
    # Across a year boundary: 2025-01-01 is a Wednesday.
    assert rolling_window("week", None, utc(2025, 1, 1, 8)) == (
        utc(2024, 12, 30),
        utc(2025, 1, 6) - 1,
    )


def test_rolling_window_month_boundaries() -> None:
    assert rolling_window("month", None, utc(2024, 2, 10)) == (
        utc(2024, 2, 1),
        utc(2024, 3, 1) - 1,
    )  # leap
    assert rolling_window("month", None, utc(2023, 2, 28, 23, 59, 59)) == (
        utc(2023, 2, 1),
        utc(2023, 3, 1) - 1,
    )
    assert rolling_window("month", None, utc(2024, 12, 31, 12)) == (
        utc(2024, 12, 1),
        utc(2025, 1, 1) - 1,
    )
    assert rolling_window("month", None, utc(2024, 1, 31, 23, 59, 59)) == (
        utc(2024, 1, 1),
        utc(2024, 2, 1) - 1,
    )
    assert rolling_window("month", None, utc(2024, 3, 1)) == (utc(2024, 3, 1), utc(2024, 4, 1) - 1)


def test_rolling_window_in_a_time_zone() -> None:
    tz = "Asia/Tokyo"
    # 20:00 UTC on May 15th is 05:00 on May 16th in Tokyo.
    now = utc(2024, 5, 15, 20)
    assert rolling_window("day", tz, now) == (local(tz, 2024, 5, 16), local(tz, 2024, 5, 17) - 1)
    assert rolling_window("day", tz, now) == (utc(2024, 5, 15, 15), utc(2024, 5, 16, 15) - 1)
    assert rolling_window("week", tz, now) == (local(tz, 2024, 5, 13), local(tz, 2024, 5, 20) - 1)
    assert rolling_window("month", tz, utc(2024, 5, 31, 16)) == (
        local(tz, 2024, 6, 1),
        local(tz, 2024, 7, 1) - 1,
    )
    ny = "America/New_York"
    assert rolling_window("month", ny, utc(2024, 6, 1, 2)) == (
        local(ny, 2024, 5, 1),
        local(ny, 2024, 6, 1) - 1,
    )


def test_rolling_window_dst_days_have_23_and_25_hours() -> None:
    oslo, ny = "Europe/Oslo", "America/New_York"
    spring = rolling_window("day", oslo, local(oslo, 2024, 3, 31, 12))
    assert spring == (local(oslo, 2024, 3, 31), local(oslo, 2024, 4, 1) - 1) and hours(spring) == 23
    autumn = rolling_window("day", oslo, local(oslo, 2024, 10, 27, 12))
    assert (
        autumn == (local(oslo, 2024, 10, 27), local(oslo, 2024, 10, 28) - 1) and hours(autumn) == 25
    )
    assert hours(rolling_window("day", ny, local(ny, 2024, 3, 10, 1))) == 23
    assert hours(rolling_window("day", ny, local(ny, 2024, 11, 3, 23))) == 25
    # Weeks and months containing a change are an hour short or long.
    assert hours(rolling_window("week", oslo, local(oslo, 2024, 3, 27))) == 7 * 24 - 1
    assert hours(rolling_window("month", oslo, local(oslo, 2024, 10, 2))) == 31 * 24 + 1
    # The instants right around local midnight of the short day.
    assert (
        rolling_window("day", oslo, local(oslo, 2024, 3, 31) - 1)[1] == local(oslo, 2024, 3, 31) - 1
    )
    assert rolling_window("day", oslo, local(oslo, 2024, 4, 1))[0] == local(oslo, 2024, 4, 1)


@pytest.mark.parametrize(
    "tz", [None, "Europe/Oslo", "America/Santiago", "Asia/Kolkata", "Australia/Lord_Howe"]
)
def test_rolling_window_periods_tile_the_timeline(tz: str | None) -> None:
    """Consecutive windows touch, every instant lies in its own window, and a window's first
    and last second give the same window (also where local midnight is skipped or repeated)."""
    rng = random.Random(3)
    for unit in ("day", "week", "month"):
        now = rolling_window(unit, tz, utc(2022, 1, 1))[0]
        while now < utc(2025, 1, 1):
            t1, t2 = rolling_window(unit, tz, now)
            assert t1 == now < t2
            assert rolling_window(unit, tz, t2) == (t1, t2)
            inside = rng.randrange(t1, t2 + 1)
            assert rolling_window(unit, tz, inside) == (t1, t2)
            now = t2 + 1


def test_due_rolls_only_for_rolling_boards_whose_period_ended() -> None:
    registry = BoardRegistry()
    day = rolling_window("day", None, utc(2024, 5, 15, 12))
    week = rolling_window("week", "Europe/Oslo", utc(2024, 5, 15, 12))
    registry.add("b-day", BoardDefinition(metric="m", window_kind="day", t1=day[0], t2=day[1]))
    registry.add(
        "a-week",
        BoardDefinition(metric="m", window_kind="week", tz="Europe/Oslo", t1=week[0], t2=week[1]),
    )
    registry.add("fixed", BoardDefinition(metric="m", t1=0, t2=10))
    assert due_rolls(registry, day[1]) == []
    assert due_rolls(registry, day[1] + 1) == [
        RollBoard(board_id="b-day", t1=day[1] + 1, t2=day[1] + DAY)
    ]
    later = week[1] + 3 * DAY
    assert due_rolls(registry, later) == [
        RollBoard(board_id="a-week", t1=week[1] + 1, t2=week[1] + 7 * DAY),
        RollBoard(board_id="b-day", t1=utc(2024, 5, 22), t2=utc(2024, 5, 23) - 1),
    ]
    registry.remove("b-day")
    assert [r.board_id for r in due_rolls(registry, later)] == ["a-week"]


async def test_roll_board_clears_the_board_and_new_writes_fill_it(
    engine: Engine, fake_time: FakeTime
) -> None:
    day0 = rolling_window("day", None, fake_time.now)
    day1 = (day0[1] + 1, day0[1] + DAY)
    await engine.create_board({"id": "today", "metric": "m", "window": {"rolling": "day"}})
    await engine.create_board(
        {"id": "team", "metric": "m", "members": [1, 2, "c"], "window": {"rolling": "day"}}
    )
    await engine.ingest([ev(1, 5, day0[0] + 100), ev(2, 3, day0[0] + 200), ev(9, 4, day0[0])])
    assert await scores(engine, "today") == {1: 5, 9: 4, 2: 3}
    await engine.submit(RollBoard(board_id="today", t1=day1[0], t2=day1[1]))
    await engine.submit(RollBoard(board_id="team", t1=day1[0], t2=day1[1]))
    assert await scores(engine, "today") == {}
    assert await scores(engine, "team") == {1: 0, 2: 0, "c": 0}
    assert (await engine.board("today"))["window"] == {
        "kind": "day",
        "tz": None,
        "t1": day1[0],
        "t2": day1[1],
    }
    await engine.ingest([ev(2, 6, day1[0] + 10), ev(1, 1, day0[0] + 300)])  # the second is late
    assert await scores(engine, "today") == {2: 6}
    assert await scores(engine, "team") == {2: 6, 1: 0, "c": 0}


async def test_roll_board_drops_a_stale_forward_for_the_old_window(
    engine: Engine, fake_time: FakeTime
) -> None:
    _, old = check_board(
        {"id": "today", "metric": "m", "window": {"rolling": "day"}}, fake_time.now
    )
    await engine.submit(CreateBoard(board_id="today", definition=old))
    await engine.submit(RollBoard(board_id="today", t1=old.t2 + 1, t2=old.t2 + DAY))
    # A score computed for the old window that reaches the board after the roll.
    await engine.ask(LIST, "today", _set_score(old, 1, 50, old.t1 + 5))
    assert await scores(engine, "today") == {}
    new = BoardDefinition(metric="m", window_kind="day", t1=old.t2 + 1, t2=old.t2 + DAY)
    await engine.ask(LIST, "today", _set_score(new, 1, 50, new.t1 + 5))
    assert await scores(engine, "today") == {1: 50}


async def test_roll_board_of_a_deleted_board_is_harmless(
    engine: Engine, fake_time: FakeTime
) -> None:
    await engine.create_board({"id": "today", "metric": "m", "window": {"rolling": "day"}})
    await engine.submit(DeleteList(list_id="today"))
    await engine.submit(RollBoard(board_id="today", t1=0, t2=10))
    assert engine.list_catalog() == []
    await engine.ingest([ev(1, 1, fake_time.now)])


async def test_roll_board_then_write_dispatched_back_to_back_is_not_lost(
    engine: Engine, fake_time: FakeTime
) -> None:
    """What the board clock and an HTTP write do when both dispatch before either actor runs:
    the write is logged after the roll, so it belongs on the new window's board."""
    await engine.ingest([ev(1, 1, 10)])
    await engine.submit(
        CreateBoard(
            board_id="rb",
            definition=BoardDefinition(metric="m", window_kind="day", t1=0, t2=DAY - 1),
        )
    )
    lost = []
    for k in range(1, 21):  # trio picks either actor first; the bug shows about half the time
        t1, t2 = k * DAY, (k + 1) * DAY - 1
        roll = RollBoard(board_id="rb", t1=t1, t2=t2)
        await dispatch_back_to_back(engine, roll, ingest_command(ev(1, k, t1 + 5)))
        if await scores(engine, "rb") != {1: k}:
            lost.append(k)
    assert lost == []


async def test_roll_board_keeps_writes_already_in_the_new_window(
    engine: Engine, fake_time: FakeTime
) -> None:
    day0 = rolling_window("day", None, fake_time.now)
    await engine.create_board({"id": "today", "metric": "m", "window": {"rolling": "day"}})
    fake_time.now = day0[1] + 1  # midnight: the new day began, the clock has not ticked yet
    await engine.ingest([ev(1, 5, fake_time.now)])
    for roll in due_rolls_of(engine, fake_time.now):
        await engine.submit(roll)  # what _run_board_clock does on its next tick
    day1 = (day0[1] + 1, day0[1] + DAY)
    assert (await engine.board("today"))["window"]["t1"] == day1[0]
    assert await adhoc(engine, "m", *day1) == {1: 5}
    assert await scores(engine, "today") == {1: 5}


async def test_run_board_clock_rolls_a_rolling_board(
    autojump_clock: trio.abc.Clock, fake_time: FakeTime
) -> None:
    tz = "Europe/Oslo"
    fake_time.now = local(tz, 2024, 3, 30, 22)
    async with Engine.open() as engine:
        await engine.create_board(
            {
                "id": "today",
                "metric": "m",
                "members": [1, 2],
                "window": {"rolling": "day", "tz": tz},
            }
        )
        await engine.create_board(
            {"id": "month", "metric": "m", "window": {"rolling": "month", "tz": tz}}
        )
        await engine.ingest([ev(1, 5, fake_time.now), ev(2, 1, fake_time.now)])
        await trio.sleep(5)  # the clock ticks; nothing is due yet
        assert (await engine.board("today"))["window"]["t1"] == local(tz, 2024, 3, 30)
        assert await scores(engine, "today") == {1: 5, 2: 1}
        fake_time.now = local(tz, 2024, 3, 31, 0, 0, 30)
        await trio.sleep(2)
        board = await engine.board("today")
        assert board["window"] == {
            "kind": "day",
            "tz": tz,
            "t1": local(tz, 2024, 3, 31),
            "t2": local(tz, 2024, 4, 1) - 1,
        }
        assert hours((board["window"]["t1"], board["window"]["t2"])) == 23
        assert await scores(engine, "today") == {1: 0, 2: 0}
        assert await scores(engine, "month") == {1: 5, 2: 1}  # March has not ended in Oslo
        await engine.ingest([ev(2, 4, fake_time.now)])
        assert await scores(engine, "today") == {2: 4, 1: 0}
        fake_time.now = local(tz, 2024, 4, 1, 0, 0, 1)
        await trio.sleep(2)
        assert await scores(engine, "month") == {}
        assert (await engine.board("month"))["window"]["t1"] == local(tz, 2024, 4, 1)
        assert (await engine.board("today"))["window"]["t1"] == local(tz, 2024, 4, 1)


############################################################################################
# Live boards refuse element writes; a restored board is live (security finding 7)


async def test_board_refuses_element_writes_and_deletes_live_and_on_replay() -> None:
    log: list[tuple[int, bytes]] = []
    async with Engine.open() as live:
        await logged(live, log, ingest_command(ev(1, 5, T0), ev(2, 3, T0)))
        await logged(live, log, CreateBoard(board_id="b", definition=BoardDefinition(metric="m", t1=T0, t2=T0 + 100)))
        await live.submit(CreateList(list_id="plain", settings=ListSettings(set="s1"), populate=[], replace=False, now=T0))
        forged = [
            PutElements(list_ids=["b"], elements=[ElementIn(1, 10**9, 0, None)], insert_only=False, now=T0),
            DeleteElements(list_ids=["b"], ids=[2]),
        ]
        for command in forged:
            with pytest.raises(LiveBoardConflict, match=r"^list 'b' is a live leaderboard of metric 'm'"):
                await live.submit(command)
            log.append((live.last_seq, encode_command(command)))  # as in a log from before the rule
        many = await live.submit(PutElements(list_ids=["b", "plain"], elements=[ElementIn(1, 7, 0, None)],
                                             insert_only=False, now=T0))
        assert isinstance(many["b"], ListFailure) and "live leaderboard" in str(many["b"])
        assert many["plain"].element.score == 7
        assert await scores(live, "b") == {1: 5, 2: 3}
    async with Engine.open() as replayed:
        for seq, record in log:
            await replayed.replay(seq, record)
        assert await scores(replayed, "b") == {1: 5, 2: 3}


async def test_restore_board_is_live_and_recomputed_from_counters(engine: Engine) -> None:
    definition = BoardDefinition(metric="m", t1=T0, t2=T0 + 100)
    await engine.ingest([ev(1, 5, T0), ev(2, 3, T0)])
    await engine.submit(RestoreBoard(board_id="rb", definition=definition, keep=False))
    assert await scores(engine, "rb") == {1: 5, 2: 3}
    await engine.ingest([ev(3, 9, T0 + 1)])
    assert await scores(engine, "rb") == {3: 9, 1: 5, 2: 3}
    assert (await engine.board("rb"))["window"] == {"kind": "fixed", "tz": None, "t1": T0, "t2": T0 + 100}
    # keep: an existing list stays as it is; without keep, a plain list is replaced by the board.
    other = BoardDefinition(metric="m", t1=T0, t2=T0)
    await engine.submit(RestoreBoard(board_id="rb", definition=other, keep=True))
    assert registry_of(engine._router).boards["rb"] == definition
    assert (await engine.board("rb"))["window"]["t2"] == T0 + 100
    await engine.submit(CreateList(list_id="pl", settings=ListSettings(set="s1"), populate=[], replace=False, now=T0))
    await engine.submit(RestoreBoard(board_id="pl", definition=other, keep=False))
    assert await scores(engine, "pl") == {1: 5, 2: 3}
    assert (await engine.board("pl"))["window"]["t2"] == T0


async def test_restore_board_replays_from_the_log() -> None:
    log: list[tuple[int, bytes]] = []
    definition = BoardDefinition(metric="m", members=(1, 2, 4), t1=T0, t2=T0 + 100)
    async with Engine.open() as live:
        await logged(live, log, ingest_command(ev(1, 5, T0), ev(2, 3, T0)))
        await logged(live, log, RestoreBoard(board_id="rb", definition=definition, keep=False))
        await logged(live, log, ingest_command(ev(4, 8, T0 + 1)))
        expected = await scores(live, "rb")
    assert expected == {4: 8, 1: 5, 2: 3}
    async with Engine.open() as replayed:
        for seq, record in log:
            await replayed.replay(seq, record)
        assert await scores(replayed, "rb") == expected
        await replayed.ingest([ev(2, 10, T0 + 2)])
        assert await scores(replayed, "rb") == {2: 13, 4: 8, 1: 5}


def test_in_current_window_moves_rolling_boards_only() -> None:
    fixed_board = BoardDefinition(metric="m", t1=0, t2=10)
    assert in_current_window(fixed_board, T0) is fixed_board
    rolling = BoardDefinition(metric="m", window_kind="day", t1=0, t2=DAY - 1)
    moved = in_current_window(rolling, T0)
    assert (moved.t1, moved.t2) == rolling_window("day", None, T0)


def test_a_stored_zone_that_no_longer_loads_does_not_stop_the_clock():
    from dataclasses import replace as _replace

    from engine.boards import BoardDefinition, BoardRegistry, due_rolls

    registry = BoardRegistry()
    good = BoardDefinition(metric="m", window_kind="day", tz="Europe/Oslo", t1=0, t2=86399)
    registry.add("good", good)
    registry.add("stale", _replace(good, tz="posix/Europe/Oslo"))  # accepted before the IANA check
    rolls = due_rolls(registry, 10 * 86400)
    assert [r.board_id for r in rolls] == ["good"]
