"""Tests for engine/lists.py: ranked lists as engine entities, driven through a real Engine.

Every write goes through ``Engine.submit`` (log record, dispatch, one actor turn), so these tests
also pin the promise of the module docstring that the same records fed to ``Engine.replay``
rebuild the same lists, and that snapshot items round-trip through the real codec. Each read
runs ``RankedList._check()`` in the list's actor turn (STYLE.md, point 8).
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterable, Sequence
from typing import Any

import pytest

from engine.commands import Command, decode_command, encode_command
from engine.engine import Engine
from engine.errors import Conflict, InvalidInput, NotFound, PointspaceError
from engine.lists import (
    LIST,
    CloneList,
    CreateList,
    DeleteElements,
    DeleteList,
    ElementResult,
    ListFailure,
    ListInfo,
    ListSettings,
    ListState,
    PutElements,
    RestoreList,
    check_elements,
    check_ids,
    check_list_id,
    list_info,
)
from engine.ranked import ElementIn, RankedElement
from snapshots.codec import SnapshotEncoder
from snapshots.codec import iter_snapshot_items as decode_snapshot

NOW = 1_700_000_000
PLAYERS = ListSettings(set="players", metadata={"game": "go"})
OTHER = ListSettings(set="others", metadata={}, split_size=100, merge_size=10)


############################################################################################
# Helpers


def el(id: int, score: int, tie: int = 0, payload: dict[str, Any] | None = None) -> ElementIn:
    return ElementIn(id, score, tie, payload)


async def create(
    engine: Engine,
    list_id: str,
    populate: Iterable[ElementIn] = (),
    *,
    replace: bool = False,
    now: int = NOW,
    settings: ListSettings = PLAYERS,
) -> ListInfo:
    cmd = CreateList(
        list_id=list_id, settings=settings, populate=list(populate), replace=replace, now=now
    )
    return (await engine.submit(cmd))[list_id]


async def put(
    engine: Engine,
    list_ids: Sequence[str],
    elements: Sequence[ElementIn],
    *,
    insert_only: bool = False,
    now: int = NOW,
    radius: int = 0,
) -> dict[Any, Any]:
    cmd = PutElements(
        list_ids=list(list_ids),
        elements=list(elements),
        insert_only=insert_only,
        now=now,
        radius=radius,
    )
    return await engine.submit(cmd)


async def rows(engine: Engine, list_id: str) -> list[RankedElement]:
    """Every element of a list in rank order, after checking the list's invariants."""

    def read(state: ListState) -> list[RankedElement]:
        ranked = state.require(list_id)
        ranked._check()
        return list(ranked)

    return await engine.ask(LIST, list_id, read)


async def settings_of(engine: Engine, list_id: str) -> ListSettings | None:
    return dict(engine.list_catalog()).get(list_id)


def ids_scores(elements: Iterable[RankedElement]) -> list[tuple[int, int]]:
    return [(e.id, e.score) for e in elements]


def snapshot_round_trip(engine: Engine) -> list[tuple[str, Any, int, Any]]:
    """The engine's snapshot items, encoded and decoded by the real snapshot codec."""
    encoder = SnapshotEncoder(start_seq=1, created=0.0)
    data = encoder.header_bytes()
    for item in engine.iter_snapshot_items():
        data += encoder.encode_item(item)
    data += encoder.finish()
    return [tuple(item) for item in decode_snapshot(io.BytesIO(data))]


async def submit_logged(engine: Engine, log: list[tuple[int, bytes]], cmd: Command) -> Any:
    """Submit ``cmd`` and append ``(seq, record)`` to ``log``, as the write-ahead log would.

    A command that fails is logged too: the engine appends before it applies.
    """
    record = encode_command(cmd)
    try:
        return await engine.submit(cmd)
    except PointspaceError as exc:
        return exc
    finally:
        log.append((engine.last_seq, record))


async def every_list(engine: Engine) -> dict[str, tuple[ListSettings, list[RankedElement]]]:
    return {
        list_id: (settings, await rows(engine, list_id))
        for list_id, settings in engine.list_catalog()
    }


############################################################################################
# Validation helpers


@pytest.mark.parametrize("bad", ["a", "", "x" * 101, "has space", "slash/no", 12, None])
def test_check_list_id_rejects_bad_ids(bad: Any) -> None:
    with pytest.raises(
        InvalidInput, match=r"^list_id must be 2\.\.100 characters of \[a-zA-Z0-9-_\.\], got "
    ) as info:
        check_list_id(bad)
    assert info.value.field == "list_id"


def test_check_list_id_accepts_the_rankdb_alphabet() -> None:
    assert check_list_id("ab-c_d.9") == "ab-c_d.9"
    assert check_list_id("x" * 100) == "x" * 100


def test_check_elements_names_the_bad_field() -> None:
    good = {"id": 1, "score": 2, "tie_breaker": 3, "payload": {"a": 1}}
    assert check_elements([good]) == [ElementIn(1, 2, 3, {"a": 1})]
    assert check_elements([{"id": 1.0, "score": 2}]) == [ElementIn(1, 2, 0, None)]
    cases = [
        ("nope", "elements"),
        (["nope"], "elements[0]"),
        ([good, {"score": 1}], "elements[1].id"),
        ([{"id": 1}], "elements[0].score"),
        ([{"id": -1, "score": 1}], "elements[0].id"),
        ([{"id": 1, "score": 2**64}], "elements[0].score"),
        ([{"id": 1, "score": 1, "tie_breaker": 2**32}], "elements[0].tie_breaker"),
        ([{"id": 1, "score": 1, "payload": [1]}], "elements[0].payload"),
        ([{"id": "1", "score": 1}], "elements[0].id"),
    ]
    for raw, field in cases:
        with pytest.raises(InvalidInput) as info:
            check_elements(raw)
        assert info.value.field == field, raw


def test_check_ids_names_the_bad_index() -> None:
    assert check_ids([1, 2**64 - 1]) == [1, 2**64 - 1]
    with pytest.raises(
        InvalidInput, match=r"^element_ids\[1\] must be between 0 and 18446744073709551615, got -3$"
    ):
        check_ids([1, -3])
    with pytest.raises(InvalidInput, match=r"^element_ids must be a list of element ids$"):
        check_ids("1,2")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "set"),
        ({"set": "x"}, "set"),
        ({"set": "ok", "metadata": {"a": 1}}, "metadata"),
        ({"set": "ok", "split_size": 9}, "split_size"),
        ({"set": "ok", "merge_size": "5"}, "merge_size"),
        ({"set": "ok", "split_size": 100, "merge_size": 100}, "merge_size"),
        ({"set": "ok", "load_index": 1}, "load_index"),
    ],
)
def test_list_settings_from_body_names_the_bad_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        ListSettings.from_body(body)
    assert info.value.field == field


def test_list_settings_plain_round_trip() -> None:
    settings = ListSettings.from_body(
        {"set": "ok", "metadata": {"k": "v"}, "split_size": 30, "merge_size": 10}
    )
    assert ListSettings.from_plain(settings.to_plain()) == settings


def test_list_commands_encode_decode_round_trip() -> None:
    records = [
        {
            "v": 1,
            "count": 0,
            "ids": b"",
            "scores": b"",
            "tie_breakers": b"",
            "updated_at": b"",
            "payloads": {},
        }
    ]
    for cmd in [
        CreateList(
            list_id="aa", settings=PLAYERS, populate=[el(1, 2, 3, {"p": 1})], replace=True, now=NOW
        ),
        DeleteList(list_id="aa"),
        CloneList(source="aa", target="bb", settings=OTHER),
        PutElements(
            list_ids=["aa", "bb"], elements=[el(1, 2)], insert_only=True, now=NOW, radius=3
        ),
        DeleteElements(list_ids=["aa"], ids=[1, 2]),
        RestoreList(list_id="aa", settings=PLAYERS, records=records, keep=True),
    ]:
        assert decode_command(encode_command(cmd)) == cmd


############################################################################################
# Create, replace, delete


async def test_create_list_returns_info_and_shows_in_catalog(engine: Engine) -> None:
    info = await create(engine, "aa", [el(1, 5), el(2, 7, payload={"n": "ada"}), el(3, 5, 1)])
    assert (info.list_id, info.settings, info.elements) == ("aa", PLAYERS, 3)
    assert info.top is not None and info.bottom is not None
    assert (info.top.id, info.top.payload, info.bottom.id) == (2, {"n": "ada"}, 1)
    assert info.blocks >= 1 and info.avg_block_elements == 3 / info.blocks
    assert engine.list_catalog() == [("aa", PLAYERS)]
    assert [(e.id, e.updated_at, e.from_top, e.from_bottom) for e in await rows(engine, "aa")] == [
        (2, NOW, 0, 2),
        (3, NOW, 1, 1),
        (1, NOW, 2, 0),
    ]


async def test_create_list_empty_has_no_top_or_bottom(engine: Engine) -> None:
    info = await create(engine, "empty")
    assert (info.elements, info.top, info.bottom) == (0, None, None)
    assert await rows(engine, "empty") == []


async def test_create_list_existing_conflicts_and_keeps_the_old_list(engine: Engine) -> None:
    await create(engine, "aa", [el(1, 5)])
    with pytest.raises(Conflict, match=r"^list 'aa' already exists$") as info:
        await create(engine, "aa", [el(9, 9)], settings=OTHER)
    assert info.value.field == "id"
    assert ids_scores(await rows(engine, "aa")) == [(1, 5)]
    assert await settings_of(engine, "aa") == PLAYERS


async def test_create_list_replace_swaps_settings_and_elements(engine: Engine) -> None:
    await create(engine, "aa", [el(1, 5), el(2, 6)])
    info = await create(engine, "aa", [el(9, 9)], replace=True, settings=OTHER, now=NOW + 5)
    assert (info.settings, info.elements) == (OTHER, 1)
    assert [(e.id, e.score, e.updated_at) for e in await rows(engine, "aa")] == [(9, 9, NOW + 5)]
    assert engine.list_catalog() == [("aa", OTHER)]


async def test_create_list_replace_of_a_missing_list_creates_it(engine: Engine) -> None:
    info = await create(engine, "new", [el(1, 1)], replace=True)
    assert info.elements == 1


async def test_create_list_populate_duplicate_ids_last_wins(engine: Engine) -> None:
    info = await create(
        engine, "dup", [el(1, 5, payload={"v": 1}), el(2, 7), el(1, 9, payload={"v": 3}), el(2, 1)]
    )
    assert info.elements == 2
    assert [(e.id, e.score, e.payload) for e in await rows(engine, "dup")] == [
        (1, 9, {"v": 3}),
        (2, 1, None),
    ]


async def test_delete_list_vanishes_from_catalog_reads_and_snapshots(engine: Engine) -> None:
    await create(engine, "keep", [el(1, 1)])
    await create(engine, "gone", [el(1, 1)])
    assert (await engine.submit(DeleteList(list_id="gone"))) == {"gone": None}
    assert [i for i, _ in engine.list_catalog()] == ["keep"]
    assert [(ns, ident) for ns, ident, _, _ in engine.iter_snapshot_items() if ns == LIST] == [
        (LIST, "keep")
    ]
    with pytest.raises(NotFound, match=r"^no list 'gone'; create it with POST /lists$") as info:
        await rows(engine, "gone")
    assert info.value.field == "list_id"
    with pytest.raises(NotFound):
        await put(engine, ["gone"], [el(1, 1)])
    # Deleting twice is harmless, and the id can be used again, starting empty.
    await engine.submit(DeleteList(list_id="gone"))
    await create(engine, "gone", [el(5, 5)])
    assert ids_scores(await rows(engine, "gone")) == [(5, 5)]


async def test_list_info_of_a_missing_list_is_not_found() -> None:
    with pytest.raises(NotFound, match=r"^no list 'nope'; create it with POST /lists$"):
        list_info("nope", ListState())


async def test_read_of_a_never_written_list_is_not_found_and_creates_nothing(
    engine: Engine,
) -> None:
    with pytest.raises(NotFound):
        await rows(engine, "never")
    assert engine.list_catalog() == []


############################################################################################
# Clone


async def test_clone_list_is_an_exact_copy_with_updated_at_kept(engine: Engine) -> None:
    await create(engine, "src", [el(1, 5, 2, {"a": 1}), el(2, 5), el(3, 8)], now=NOW)
    await put(engine, ["src"], [el(2, 5)], now=NOW + 100)  # same score, later: ranks below 1
    info = (await engine.submit(CloneList(source="src", target="dst", settings=OTHER)))["src"]
    assert (info.list_id, info.settings, info.elements) == ("dst", OTHER, 3)
    source, copy = await rows(engine, "src"), await rows(engine, "dst")
    assert copy == source
    assert [(e.id, e.updated_at) for e in copy] == [(3, NOW), (1, NOW), (2, NOW + 100)]
    assert engine.list_catalog() == [("dst", OTHER), ("src", PLAYERS)]


async def test_clone_list_is_independent_of_its_source(engine: Engine) -> None:
    await create(engine, "src", [el(i, i * 10) for i in range(1, 6)])
    await engine.submit(CloneList(source="src", target="dst", settings=PLAYERS))
    await put(engine, ["dst"], [el(1, 1000), el(9, 1)], now=NOW + 1)
    await engine.submit(DeleteElements(list_ids=["src"], ids=[5]))
    assert ids_scores(await rows(engine, "src")) == [(4, 40), (3, 30), (2, 20), (1, 10)]
    assert ids_scores(await rows(engine, "dst")) == [
        (1, 1000),
        (5, 50),
        (4, 40),
        (3, 30),
        (2, 20),
        (9, 1),
    ]
    await engine.submit(DeleteList(list_id="src"))
    assert len(await rows(engine, "dst")) == 6


async def test_clone_list_of_a_missing_source_is_not_found(engine: Engine) -> None:
    with pytest.raises(NotFound, match=r"^no list 'nope'; create it with POST /lists$"):
        await engine.submit(CloneList(source="nope", target="dst", settings=PLAYERS))
    assert engine.list_catalog() == []
    with pytest.raises(NotFound):
        await rows(engine, "dst")


async def test_clone_list_onto_an_existing_list_conflicts(engine: Engine) -> None:
    await create(engine, "src", [el(1, 1)])
    await create(engine, "dst", [el(2, 2)], settings=OTHER)
    with pytest.raises(Conflict, match=r"^list 'dst' already exists$") as info:
        await engine.submit(CloneList(source="src", target="dst", settings=PLAYERS))
    assert info.value.field == "id"
    assert ids_scores(await rows(engine, "dst")) == [(2, 2)]
    assert await settings_of(engine, "dst") == OTHER


async def test_clone_list_onto_a_deleted_list_succeeds(engine: Engine) -> None:
    await create(engine, "src", [el(1, 1)])
    await create(engine, "dst", [el(2, 2)])
    await engine.submit(DeleteList(list_id="dst"))
    await engine.submit(CloneList(source="src", target="dst", settings=PLAYERS))
    assert ids_scores(await rows(engine, "dst")) == [(1, 1)]


############################################################################################
# Put and delete elements


async def test_put_elements_one_new_returns_element_neighbours_and_no_previous(
    engine: Engine,
) -> None:
    await create(engine, "aa", [el(1, 10), el(2, 20), el(3, 30), el(4, 40)])
    result = (await put(engine, ["aa"], [el(9, 25, 1, {"x": 1})], now=NOW + 7, radius=1))["aa"]
    assert isinstance(result, ElementResult)
    assert result.element == RankedElement(9, 25, 1, NOW + 7, {"x": 1}, 2, 2)
    assert (ids_scores(result.above), ids_scores(result.below)) == ([(3, 30)], [(2, 20)])
    assert result.previous is None


async def test_put_elements_one_existing_returns_its_previous_rank(engine: Engine) -> None:
    await create(engine, "aa", [el(1, 10), el(2, 20), el(3, 30)])
    result = (await put(engine, ["aa"], [el(1, 99)], now=NOW + 1))["aa"]
    assert result.previous is not None
    assert (result.previous.score, result.previous.from_top, result.previous.updated_at) == (
        10,
        2,
        NOW,
    )
    assert (result.element.score, result.element.from_top, result.element.updated_at) == (
        99,
        0,
        NOW + 1,
    )
    assert (result.above, result.below) == ([], [])  # radius 0: no neighbours


async def test_put_elements_many_upserts_with_duplicates_last_wins(engine: Engine) -> None:
    await create(engine, "aa", [el(1, 10), el(2, 20)])
    result = (await put(engine, ["aa"], [el(3, 5), el(1, 50), el(3, 7), el(4, 1)], now=NOW + 3))[
        "aa"
    ]
    assert sorted(result) == [1, 3, 4]
    got = await rows(engine, "aa")
    assert ids_scores(got) == [(1, 50), (2, 20), (3, 7), (4, 1)]
    assert {e.id: e.updated_at for e in got} == {1: NOW + 3, 2: NOW, 3: NOW + 3, 4: NOW + 3}


async def test_put_elements_replaces_the_whole_element_payload_included(engine: Engine) -> None:
    await create(engine, "aa", [el(1, 10, 3, {"keep": "me?"})])
    await put(engine, ["aa"], [el(1, 11)])
    [only] = await rows(engine, "aa")
    assert (only.id, only.score, only.tie_breaker, only.payload) == (1, 11, 0, None)


async def test_put_elements_insert_only_conflict_leaves_the_list_unchanged(engine: Engine) -> None:
    await create(engine, "aa", [el(1, 10), el(2, 20)])
    before = await rows(engine, "aa")
    with pytest.raises(Conflict, match=r"^element\(s\) already exist: \[2\]$") as info:
        await put(engine, ["aa"], [el(7, 70), el(2, 99), el(8, 80)], insert_only=True, now=NOW + 1)
    assert info.value.field == "id"
    assert await rows(engine, "aa") == before
    with pytest.raises(Conflict):
        await put(engine, ["aa"], [el(1, 5)], insert_only=True)
    assert await rows(engine, "aa") == before


async def test_put_elements_insert_only_new_ids_are_created(engine: Engine) -> None:
    await create(engine, "aa", [el(1, 10)])
    result = (await put(engine, ["aa"], [el(2, 20)], insert_only=True, radius=5))["aa"]
    assert result.previous is None and result.element.from_top == 0
    await put(engine, ["aa"], [el(3, 1), el(4, 2)], insert_only=True)
    assert ids_scores(await rows(engine, "aa")) == [(2, 20), (1, 10), (4, 2), (3, 1)]


async def test_put_elements_into_a_missing_list_is_not_found(engine: Engine) -> None:
    with pytest.raises(NotFound, match=r"^no list 'nope'; create it with POST /lists$"):
        await put(engine, ["nope"], [el(1, 1)])
    with pytest.raises(NotFound):
        await put(engine, ["nope"], [el(1, 1), el(2, 2)])
    assert engine.list_catalog() == []


async def test_delete_elements_removes_and_counts_ignoring_missing_ids(engine: Engine) -> None:
    await create(engine, "aa", [el(i, i) for i in range(1, 11)])
    assert (await engine.submit(DeleteElements(list_ids=["aa"], ids=[3, 5, 42, 3])))["aa"] == 2
    assert [e.id for e in await rows(engine, "aa")] == [10, 9, 8, 7, 6, 4, 2, 1]
    assert (await engine.submit(DeleteElements(list_ids=["aa"], ids=[])))["aa"] == 0
    with pytest.raises(NotFound):
        await engine.submit(DeleteElements(list_ids=["nope"], ids=[1]))


############################################################################################
# Several lists at once (RankDB xlist)


async def test_put_elements_many_lists_failures_are_per_list(engine: Engine) -> None:
    await create(engine, "a1", [el(1, 10)])
    await create(engine, "a2", [el(2, 20)])
    got = await put(engine, ["a1", "missing", "a2"], [el(3, 30)], now=NOW + 1)
    assert set(got) == {"a1", "missing", "a2"}
    assert isinstance(got["missing"], ListFailure) and str(got["missing"]) == "not found"
    assert isinstance(got["a1"], ElementResult) and got["a1"].element.from_top == 0
    assert ids_scores(await rows(engine, "a1")) == [(3, 30), (1, 10)]
    assert ids_scores(await rows(engine, "a2")) == [(3, 30), (2, 20)]
    # insert_only: the list that already holds the id fails alone.
    got = await put(engine, ["a1", "a2"], [el(1, 5), el(4, 4)], insert_only=True)
    assert isinstance(got["a1"], ListFailure) and str(got["a1"]) == "element(s) already exist: [1]"
    assert sorted(got["a2"]) == [1, 4]
    assert ids_scores(await rows(engine, "a1")) == [(3, 30), (1, 10)]
    assert ids_scores(await rows(engine, "a2")) == [(3, 30), (2, 20), (1, 5), (4, 4)]
    assert [i for i, _ in engine.list_catalog()] == ["a1", "a2"]


async def test_delete_elements_many_lists_failures_are_per_list(engine: Engine) -> None:
    await create(engine, "a1", [el(1, 10), el(2, 20)])
    await create(engine, "a2", [el(2, 20)])
    got = await engine.submit(DeleteElements(list_ids=["missing", "a1", "a2"], ids=[1, 2]))
    assert (got["a1"], got["a2"]) == (2, 1)
    assert isinstance(got["missing"], ListFailure) and str(got["missing"]) == "not found"
    assert await rows(engine, "a1") == [] and await rows(engine, "a2") == []


############################################################################################
# Restore


async def records_of(engine: Engine, list_id: str) -> list[dict[str, Any]]:
    return await engine.ask(LIST, list_id, lambda state: list(state.require(list_id).to_records()))


async def test_restore_list_installs_records_keeping_updated_at(engine: Engine) -> None:
    await create(engine, "src", [el(1, 5, 1, {"p": 1}), el(2, 9)], now=NOW)
    await put(engine, ["src"], [el(3, 5, 1)], now=NOW + 50)
    records = await records_of(engine, "src")
    got = await engine.submit(
        RestoreList(list_id="copy", settings=OTHER, records=records, keep=False)
    )
    assert got == {"copy": "restored"}
    assert await rows(engine, "copy") == await rows(engine, "src")
    assert await settings_of(engine, "copy") == OTHER


async def test_restore_list_keep_skips_an_existing_list_and_otherwise_replaces(
    engine: Engine,
) -> None:
    await create(engine, "src", [el(1, 1), el(2, 2)])
    await create(engine, "dst", [el(9, 9)], settings=OTHER)
    records = await records_of(engine, "src")
    got = await engine.submit(
        RestoreList(list_id="dst", settings=PLAYERS, records=records, keep=True)
    )
    assert got == {"dst": "skipped"}
    assert ids_scores(await rows(engine, "dst")) == [(9, 9)]
    assert await settings_of(engine, "dst") == OTHER
    got = await engine.submit(
        RestoreList(list_id="dst", settings=PLAYERS, records=records, keep=False)
    )
    assert got == {"dst": "restored"}
    assert ids_scores(await rows(engine, "dst")) == [(2, 2), (1, 1)]
    assert await settings_of(engine, "dst") == PLAYERS
    # keep=True onto a missing (or deleted) list restores it.
    await engine.submit(DeleteList(list_id="dst"))
    assert (
        await engine.submit(
            RestoreList(list_id="dst", settings=PLAYERS, records=records, keep=True)
        )
    ) == {"dst": "restored"}


async def test_restore_list_bad_records_are_rejected_before_anything_changes(
    engine: Engine,
) -> None:
    await create(engine, "dst", [el(9, 9)])
    bad = [{"v": 99, "count": 0, "ids": b"", "scores": b"", "tie_breakers": b"", "updated_at": b""}]
    with pytest.raises(InvalidInput, match=r"^records\[0\] has version 99") as info:
        await engine.submit(RestoreList(list_id="dst", settings=PLAYERS, records=bad, keep=False))
    assert info.value.field == "records"
    assert ids_scores(await rows(engine, "dst")) == [(9, 9)]


async def test_restored_list_is_independent_of_later_writes_to_its_source(engine: Engine) -> None:
    await create(engine, "src", [el(1, 1)])
    cmd = RestoreList(
        list_id="r1", settings=PLAYERS, records=await records_of(engine, "src"), keep=False
    )
    await engine.submit(cmd)
    await put(engine, ["r1"], [el(2, 2)])
    # The command object's records are not shared with the live list (a replay reuses them).
    await engine.submit(
        RestoreList(list_id="r2", settings=PLAYERS, records=cmd.records, keep=False)
    )
    assert ids_scores(await rows(engine, "r2")) == [(1, 1)]


############################################################################################
# Snapshots and replay


async def test_list_snapshot_items_round_trip_reproduces_ranks() -> None:
    rng = random.Random(11)
    async with Engine.open() as first:
        await create(
            first,
            "big",
            [el(rng.randrange(2**64), rng.randrange(50), rng.randrange(3)) for _ in range(3000)],
        )
        await create(
            first,
            "small",
            [el(1, 5, 0, {"name": "ada", "n": [1, 2]}), el(2**64 - 1, 5)],
            settings=OTHER,
        )
        await put(first, ["small"], [el(3, 5)], now=NOW + 9)
        await create(first, "empty")
        await create(first, "gone", [el(1, 1)])
        await first.submit(DeleteList(list_id="gone"))
        items = snapshot_round_trip(first)
        expected = await every_list(first)
    assert {ident for ns, ident, _, _ in items if ns == LIST} == {"big", "small", "empty"}
    async with Engine.open() as second:
        for item in items:
            second.load_snapshot_item(*item)
        assert await every_list(second) == expected
        # The loaded lists take new writes.
        result = (await put(second, ["small"], [el(4, 6)], now=NOW + 10))["small"]
        assert result.element.from_top == 0
        assert ids_scores(await rows(second, "small")) == [(4, 6), (1, 5), (2**64 - 1, 5), (3, 5)]


def random_commands(
    rng: random.Random, existing: set[str], now: int, records: dict[str, Any]
) -> Command:
    """One random command that succeeds against a model of which lists exist."""
    names = ["l0", "l1", "l2", "l3", "l4"]
    alive = sorted(existing)
    free = [n for n in names if n not in existing]

    def elements(k: int) -> list[ElementIn]:
        return [
            el(
                rng.randrange(40),
                rng.randrange(30),
                rng.randrange(2),
                {"r": rng.randrange(5)} if rng.random() < 0.3 else None,
            )
            for _ in range(k)
        ]

    choice = rng.random()
    if not alive or choice < 0.1:
        name = rng.choice(names)
        existing.add(name)
        return CreateList(
            list_id=name,
            settings=rng.choice([PLAYERS, OTHER]),
            populate=elements(rng.randrange(0, 20)),
            replace=True,
            now=now,
        )
    if choice < 0.45:
        return PutElements(
            list_ids=[rng.choice(alive)],
            elements=elements(rng.choice([1, 1, 3, 8])),
            insert_only=False,
            now=now,
            radius=rng.randrange(3),
        )
    if choice < 0.55:
        return PutElements(
            list_ids=rng.sample(alive, min(len(alive), 2)),
            elements=elements(2),
            insert_only=False,
            now=now,
        )
    if choice < 0.7:
        return DeleteElements(
            list_ids=[rng.choice(alive)], ids=[rng.randrange(40) for _ in range(3)]
        )
    if choice < 0.8 and free:
        target = rng.choice(free)
        existing.add(target)
        return CloneList(source=rng.choice(alive), target=target, settings=OTHER)
    if choice < 0.9 and records:
        name = rng.choice(names)
        keep = rng.random() < 0.5
        existing.add(name)
        return RestoreList(
            list_id=name, settings=PLAYERS, records=rng.choice(list(records.values())), keep=keep
        )
    name = rng.choice(alive)
    existing.discard(name)
    return DeleteList(list_id=name)


async def test_list_log_replay_is_deterministic() -> None:
    """The recorded commands of a random run, replayed into a fresh engine, rebuild every list
    element for element and rank for rank (updated_at included)."""
    rng = random.Random(2024)
    log: list[tuple[int, bytes]] = []
    existing: set[str] = set()
    records: dict[str, Any] = {}
    async with Engine.open() as live:
        for step in range(150):
            cmd = random_commands(rng, existing, NOW + step, records)
            result = await submit_logged(live, log, cmd)
            assert not isinstance(result, PointspaceError), (cmd, result)
            if step % 25 == 0 and existing:
                name = sorted(existing)[0]
                records[name] = await records_of(live, name)
        expected = await every_list(live)
    assert len(expected) >= 2
    async with Engine.open() as replayed:
        for seq, record in log:
            await replayed.replay(seq, record)
        assert await every_list(replayed) == expected
        assert replayed.last_seq == log[-1][0]


async def test_list_snapshot_then_replay_of_the_rest_converges() -> None:
    """A snapshot taken mid-run plus the records after it gives the same lists as the run."""
    rng = random.Random(99)
    log: list[tuple[int, bytes]] = []
    existing: set[str] = set()
    async with Engine.open() as live:
        for step in range(120):
            await submit_logged(live, log, random_commands(rng, existing, NOW + step, {}))
            if step == 60:
                items = snapshot_round_trip(live)
                start = live.stable_seq()
        expected = await every_list(live)
    async with Engine.open() as recovered:
        for item in items:
            recovered.load_snapshot_item(*item)
        for seq, record in log:
            if seq >= start:
                await recovered.replay(seq, record)
        assert await every_list(recovered) == expected


async def test_list_replay_of_records_an_entity_already_applied_is_skipped() -> None:
    log: list[tuple[int, bytes]] = []
    async with Engine.open() as live:
        await submit_logged(
            live,
            log,
            CreateList(list_id="aa", settings=PLAYERS, populate=[el(1, 1)], replace=False, now=NOW),
        )
        await submit_logged(
            live,
            log,
            PutElements(list_ids=["aa"], elements=[el(1, 5)], insert_only=False, now=NOW + 1),
        )
        items = snapshot_round_trip(live)
        expected = await every_list(live)
    async with Engine.open() as recovered:
        for item in items:
            recovered.load_snapshot_item(*item)
        for seq, record in log:  # all of it again: each list skips what it already holds
            await recovered.replay(seq, record)
        assert await every_list(recovered) == expected


async def test_list_replay_of_a_logged_command_that_failed_is_harmless() -> None:
    log: list[tuple[int, bytes]] = []
    async with Engine.open() as live:
        await submit_logged(
            live,
            log,
            CreateList(list_id="aa", settings=PLAYERS, populate=[el(1, 1)], replace=False, now=NOW),
        )
        failed = await submit_logged(
            live, log, CreateList(list_id="aa", settings=OTHER, populate=[], replace=False, now=NOW)
        )
        assert isinstance(failed, Conflict)
        failed = await submit_logged(
            live, log, PutElements(list_ids=["aa"], elements=[el(1, 9)], insert_only=True, now=NOW)
        )
        assert isinstance(failed, Conflict)
        await submit_logged(
            live, log, PutElements(list_ids=["aa"], elements=[el(2, 2)], insert_only=False, now=NOW)
        )
        expected = await every_list(live)
    async with Engine.open() as replayed:
        for seq, record in log:
            await replayed.replay(seq, record)  # the refused records fail again, harmlessly
        assert await every_list(replayed) == expected
