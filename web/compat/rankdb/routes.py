"""RankDB-compatible routes: RankDB's HTTP API (``shared/compat/rankdb.md`` section 1) on the engine.

Theory of operation
-------------------
Each route checks its path, query and body whole (RankDB's generated goa layer does the same
before a controller runs), then either submits one list command (``engine/lists.py``: writes are
log records and carry ``now = int(time.time())``) or runs a read ``fn(state)`` in the list's actor
with ``engine.ask``, so a read sees a consistent list and queues behind earlier writes. Views are
built here from the engine's ``RankedElement`` / ``ListInfo`` values.

Errors on these routes use goa's error body, ``{"id", "code", "status", "detail", "meta"}``:
``invalid_request`` for a malformed path or query parameter, ``bad_request`` for a bad body,
``not_found``, ``conflict``, ``request_too_large``, ``server_restarting`` (engine closed) and
``internal`` (a bug: logged, 500). Bodies are JSON or msgpack by ``Content-Type``; answers are
msgpack when ``Accept`` asks for it (``web/bodies.py``).

Where we implement the documented contract instead of a reference quirk (section 8)
---------------------------------------------------------------------------------------
* ``neighbors.above`` (GET/PUT/POST element, percentile) is ordered top to bottom, ends with the
  element directly above, and every neighbour carries its true ``from_top``/``from_bottom``. The
  reference returns it nearest-first with mislabelled ranks (2.5, 8.1).
* Percentile on an empty list answers 404 ``not_found`` (the reference indexes element -1, 8.2).
* Cross-list selection (``/xlist/...``): ``lists``, ``match_metadata`` and ``all_in_sets`` are a
  union, each honoured on its own; the reference's body-based endpoints ignore ``all_in_sets``
  unless ``match_metadata`` is also given (8.7). An empty ``match_metadata`` matches nothing (as
  in the reference). ``PUT /xlist/verify`` and ``PUT /xlist/reindex`` with *no selection at all*
  (no ``lists``, no ``match_metadata``, no ``all_in_sets``) work on every list, as the reference
  does; given only ``all_in_sets`` they work on those sets (the reference would take all lists).
* ``GET /lists``: ``lists_before`` / ``lists_after`` are exact, also for ``limit=1`` (the
  reference approximates there).
* Duplicate ids in one write: the last occurrence wins (the reference's keeper is unspecified, 8.4).

Kept on purpose, for compatibility
----------------------------------
* ``range?from_bottom=k`` walks *downwards* from the element whose ``from_bottom`` is ``k``, so it
  returns at most ``k + 1`` elements (8.3); for "the last m" use ``from_bottom=m-1&limit=m``.
* Repair/verify report failures as 200 with ``{"error": ...}`` (ListOpResult, 8.8).
* A written element's payload is replaced whole; an omitted payload becomes ``null`` (8.5).

Other differences
-----------------
* There are no segments or caches: ``segments`` counts the ranked list's blocks, and
  ``cache_hits`` / ``cache_misses`` / ``cache_percent`` are always 0. ``/health`` reports the
  Python process (RSS, garbage collector) and the engine's actor/log statistics in RankDB's
  ``{memory, element_cache, lazy_saver}`` shape.
* ``reindex`` / ``repair`` / ``verify`` are reads (``Engine.ask``: one synchronous step on the
  list's state, in its actor or, when that is idle, in the request's task) and not log records:
  they rebuild indexes from the rows and do not change the list's contents (repair can only drop
  duplicate ids, which the engine never creates). ``clear`` (reset an unrepairable list to empty)
  *is* a logged command: a replacing ``CreateList`` with the list's own settings.
* ``DELETE /lists/{id}`` reads whether the list exists before submitting ``DeleteList``: a
  command routed to a list that does not exist leaves an empty state in the engine's directory.
  Cross-list writes likewise only route to lists in the catalogue (named lists that do not exist
  are answered ``"not found"`` without reaching the engine).
* A list that is a live leaderboard (``POST /api/leaderboards``) follows its counters: element
  writes and deletes (one list or xlist), ``POST /lists?replace=true`` over it and a
  ``clear`` that would reset it answer 409 ``conflict`` naming the board and the way to move
  or delete it (in xlist answers, an ``errors`` entry). The routes read first, so a refusal
  is never logged; the commands check again when they apply (``engine/lists.py``).
* ``PUT /xlist/verify?elements=`` is accepted and ignored: our verify always checks the id index.
* ``PUT /lists/{id}/elements?results=true`` and the xlist writes with ``results=true`` read the
  written elements back in the next turn of each list's actor, not in the writing turn.
* ResultList (xlist) follows goa's ``omitempty``: an empty ``success``/``errors`` map and an
  empty ``results`` array are left out (``{}`` for a list where the element is absent).
* An unknown path or a wrong method never reaches this blueprint: the app answers it with its
  own ``{"error": ...}`` body (``web/app.py``).
* Responses are ``application/json`` (or msgpack), not goa's ``application/vnd.rankdb.*+json``
  media types; there is no gzip and no ``MaxUpdates`` gate (each list's actor serialises writes).
"""

from __future__ import annotations

import gc
import logging
import re
import resource
import time
from bisect import bisect_left, bisect_right
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import trio
from quart import Blueprint, Response, current_app, g, request

from engine.boards import BOARD_SET
from engine.engine import Engine
from engine.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    PointspaceError,
)
from engine.lists import (
    LIST,
    U64,
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
    check_element,
    check_elements,
    check_ids,
    check_list_id,
    check_percentile,
    list_info,
    refuse_live_board,
)
from engine.ranked import RankedElement
from web.bodies import decode_body, read_body, respond
from web.compat.rankdb.common import InvalidParam, Selection, register_goa_errors
from web.context import closing_on_error, engine_of, settings_of
from web.heap import TrimPacer, release_free_heap

log = logging.getLogger("pointspace.web.rankdb")

rankdb = Blueprint("rankdb", __name__)
#: The API family of these routes (``web/apis.py``: GET /api/apis, OpenAPI tags).
SEED = "rankdb"
SEED_DOC = "RankDB: ranked lists and their elements, backups and restores, at RankDB's paths."

#: Lists worked on at once by an xlist read, verify or reindex (the reference uses 8 to 64).
XLIST_CONCURRENCY = 32
#: Ids per bulk delete (``DELETE /lists/{id}/elements?element_ids=...``), as in the reference.
MAX_DELETE_IDS = 10_000
#: Give free heap pages back to the kernel once per this many elements written by bulk
#: writes (populate, bulk PUT, xlist writes), after the request: a bulk load's temporaries
#: (bodies, decoded elements, rebuilds) otherwise stay in RSS (``web/heap.py``; see
#: bench/bench_ranked_rss.py). A trim's cost grows with the heap's free chunks (``web/heap.py``);
#: the 50,000 writes it follows take about a second over HTTP.
TRIM_AFTER_ELEMENTS = 50_000

_trim_pacer = TrimPacer(TRIM_AFTER_ELEMENTS)


############################################################################################
# Errors (goa's body: web/compat/rankdb/common.py) and unread bodies
############################################################################################

register_goa_errors(rankdb, log)


async def _wrote_elements(list_ids: list[str], count: int) -> None:
    """After a bulk write of ``count`` elements per list: when the pacer says so, give the
    heap's free pages back (the server pinned glibc's mmap threshold at startup, and actors
    let go of their last message when idle, so the request's temporaries are free by now)."""
    if not _trim_pacer.note(count * len(list_ids)):
        return
    # In a worker thread: ctypes lets go of the GIL, so the event loop keeps serving while
    # glibc walks the free chunks (it still waits on the arena lock for a malloc meanwhile).
    await trio.to_thread.run_sync(release_free_heap)


@rankdb.after_request
async def _close_if_body_unread(response: Response) -> Response:
    """Close the connection when a request's body went unread (``PUT .../reindex`` with a
    body, say): a response sent before the body was consumed can hang the next request on a
    keep-alive connection (see ``closing_on_error`` in ``web/app.py``)."""
    if not g.get("rankdb_body_read"):
        return closing_on_error(response)
    return response


############################################################################################
# Parameters
############################################################################################

_ELEMENT_ID = re.compile(r"^[0-9]{1,20}$")
_INT = re.compile(r"^[+-]?[0-9]{1,20}$")
#: Go's strconv.ParseBool, which goa uses for boolean parameters.
_BOOLS = {
    "1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
    "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False,
}


def _path_list_id(raw: str) -> str:
    try:
        return check_list_id(raw, "list_id")
    except InvalidInput as exc:
        raise InvalidParam(exc.message, "list_id") from None


def _path_element_id(raw: str) -> int:
    """A path element id: ``^[0-9]+$``, 1..20 characters, and a u64."""
    if not _ELEMENT_ID.match(raw) or int(raw) > U64:
        raise InvalidParam(
            f"element_id must be 1..20 digits of a uint64 (0..{U64}), got {raw!r}", "element_id"
        )
    return int(raw)


def _arg_bool(name: str, default: bool = False) -> bool:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        return _BOOLS[raw]
    except KeyError:
        raise InvalidParam(f"{name} must be true or false, got {raw!r}", name) from None


def _arg_int(name: str, default: int | None, low: int, high: int | None = None) -> int | None:
    """An integer query parameter in ``low..high`` (``default`` when absent)."""
    raw = request.args.get(name)
    if raw is None:
        return default
    if not _INT.match(raw):
        raise InvalidParam(f"{name} must be an integer, got {raw!r}", name)
    value = int(raw)
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f">= {low}"
        raise InvalidParam(f"{name} must be {bounds}, got {value}", name)
    return value


def _radius() -> int:
    """``range``: neighbours above and below, 0..100 (default 5)."""
    value = _arg_int("range", 5, 0, 100)
    assert value is not None
    return value


def _limit() -> int:
    """``limit``: 1..1000 (default 25)."""
    value = _arg_int("limit", 25, 1, 1000)
    assert value is not None
    return value


async def _body(*, empty: Any = None) -> Any:
    """The decoded body; ``empty`` (when not None) stands for an empty body."""
    data = await read_body(request, settings_of(current_app).max_body_bytes)
    g.rankdb_body_read = True
    if not data and empty is not None:
        return empty
    return decode_body(data, request.headers.get("Content-Type"))


def _object(body: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise InvalidInput(f"request body must be {what} object", "body")
    return body


def _element_ids(body: Any) -> list[int]:
    """``{"element_ids": [uint64...]}`` (required, may be empty)."""
    body = _object(body, "an {\"element_ids\": [...]}")
    if body.get("element_ids") is None:
        raise InvalidInput("element_ids is required (a list of element ids, may be empty)", "element_ids")
    return check_ids(body["element_ids"], "element_ids")


############################################################################################
# Views (rankdb.md 1.2)
############################################################################################


def rfc3339(seconds: int) -> str:
    """RFC3339 with second precision, UTC: ``2016-01-02T15:04:05Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def element_tiny(e: RankedElement) -> dict[str, Any]:
    return {"id": e.id, "from_top": e.from_top, "from_bottom": e.from_bottom, "score": e.score,
            "payload": e.payload}


def element_default(e: RankedElement, list_id: str) -> dict[str, Any]:
    view = element_tiny(e)
    view["list_id"] = list_id
    view["tie_breaker"] = e.tie_breaker
    view["updated_at"] = rfc3339(e.updated_at)
    return view


def element_full(
    result: ElementResult, list_id: str, local: tuple[int, int] | None = None
) -> dict[str, Any]:
    """Full view: ``neighbors`` always present, ``above``/``below`` only when non-empty."""
    view = element_default(result.element, list_id)
    neighbors: dict[str, Any] = {}
    if result.above:
        neighbors["above"] = [element_default(e, list_id) for e in result.above]
    if result.below:
        neighbors["below"] = [element_default(e, list_id) for e in result.below]
    view["neighbors"] = neighbors
    if local is not None:
        view["local_from_top"], view["local_from_bottom"] = local
    return view


def element_full_update(result: ElementResult, list_id: str) -> dict[str, Any]:
    """Full view plus ``previous_rank`` (the element before the write) iff it existed."""
    view = element_full(result, list_id)
    if result.previous is not None:
        view["previous_rank"] = element_default(result.previous, list_id)
    return view


def list_default(list_id: str, settings: ListSettings) -> dict[str, Any]:
    return {
        "id": list_id,
        "set": settings.set,
        "metadata": dict(settings.metadata),
        "split_size": settings.split_size,
        "merge_size": settings.merge_size,
        "load_index": settings.load_index,
    }


def list_full(info: ListInfo) -> dict[str, Any]:
    """Full view; ``top_element``/``bottom_element`` only when asked for and not empty."""
    view = list_default(info.list_id, info.settings)
    view["elements"] = info.elements
    view["segments"] = info.blocks
    view["avg_segment_elements"] = info.avg_block_elements
    view["cache_hits"] = 0
    view["cache_misses"] = 0
    view["cache_percent"] = 0.0
    if info.top is not None:
        view["top_element"] = element_default(info.top, info.list_id)
    if info.bottom is not None:
        view["bottom_element"] = element_default(info.bottom, info.list_id)
    return view


############################################################################################
# Engine helpers
############################################################################################


def _engine() -> Engine:
    return engine_of(current_app)


def _now() -> int:
    return int(time.time())


async def _ask(list_id: str, fn: Callable[[ListState], Any]) -> Any:
    """Run ``fn(state)`` in the list's actor (``NotFound`` if ``fn`` requires a missing list)."""
    return await _engine().ask(LIST, list_id, fn)


async def _refuse_missing_list(list_id: str) -> None:
    """``NotFound`` before a command that needs the list: a refused command stays out of the
    log (the command checks again when it applies)."""
    def require(state: ListState) -> None:
        state.require(list_id)

    await _ask(list_id, require)


async def _refuse_unwritable_list(list_id: str, what: str) -> None:
    """``NotFound`` (missing) or ``LiveBoardConflict`` (a live leaderboard) before a command
    that changes the list's elements: a refused command stays out of the log (the command
    checks again when it applies)."""
    def require(state: ListState) -> None:
        state.require(list_id)
        refuse_live_board(list_id, state, what)

    await _ask(list_id, require)


async def _refuse_live_board(list_id: str, what: str) -> None:
    """``LiveBoardConflict`` if the list is a live leaderboard (a missing list passes)."""
    await _ask(list_id, lambda state: refuse_live_board(list_id, state, what))


async def _without_boards(selected: list[str], what: str) -> tuple[list[str], dict[str, ListFailure]]:
    """Split an xlist selection into the lists a write may touch and the live leaderboards it
    may not (each with its failure). Only lists in the boards' set are asked: every board is."""
    catalog = dict(_engine().list_catalog())
    candidates = [i for i in selected if (s := catalog.get(i)) is not None and s.set == BOARD_SET]
    refused = {
        list_id: outcome
        for list_id, outcome in (await _ask_each(
            candidates, lambda list_id: lambda state: refuse_live_board(list_id, state, what)
        )).items()
        if isinstance(outcome, ListFailure)
    }
    return [i for i in selected if i not in refused], refused


async def _submit_one(command: Any, list_id: str) -> Any:
    """Submit a command that touches one list; its result for that list."""
    return (await _engine().submit(command))[list_id]


async def _ask_each(
    list_ids: list[str], make_fn: Callable[[str], Callable[[ListState], Any]]
) -> dict[str, Any]:
    """``fn(state)`` on every list, ``XLIST_CONCURRENCY`` at a time; a list's domain error
    becomes its ``ListFailure`` result (``"not found"`` for a missing list)."""
    engine = _engine()
    limiter = trio.CapacityLimiter(XLIST_CONCURRENCY)
    results: dict[str, Any] = {}

    async def one(list_id: str) -> None:
        async with limiter:
            try:
                results[list_id] = await engine.ask(LIST, list_id, make_fn(list_id))
            except PointspaceError as exc:
                results[list_id] = _failure(exc)

    async with trio.open_nursery() as nursery:
        for list_id in list_ids:
            nursery.start_soon(one, list_id)
    return results


def _failure(exc: PointspaceError) -> ListFailure:
    return ListFailure("not found" if isinstance(exc, NotFound) else exc.message)


############################################################################################
# Health
############################################################################################


@rankdb.get("/")
async def root() -> Response:
    """Ping: ``{"running": true}``."""
    return respond({"running": True}, request)


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return None


@rankdb.get("/health")
async def health() -> Response:
    """System info in RankDB's shape: ``memory`` (this process), ``element_cache`` (there is no
    cache: every list is resident), ``lazy_saver`` (the engine's log and actors)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    gc_stats = gc.get_stats()
    memory = {
        "rss_bytes": _rss_bytes(),
        "max_rss_bytes": usage.ru_maxrss * 1024,  # KiB on Linux
        "gc_counts": list(gc.get_count()),
        "gc_thresholds": list(gc.get_threshold()),
        "gc_collections": [s["collections"] for s in gc_stats],
        "gc_collected": sum(s["collected"] for s in gc_stats),
        "gc_uncollectable": sum(s["uncollectable"] for s in gc_stats),
        "gc_frozen": gc.get_freeze_count(),
        "NumGC": sum(s["collections"] for s in gc_stats),
        "user_cpu_seconds": usage.ru_utime,
        "system_cpu_seconds": usage.ru_stime,
    }
    engine = _engine()
    lists = len(engine.list_catalog())
    settings = settings_of(current_app)
    stats = engine.statistics()
    lazy_saver = {
        **asdict(stats.router),
        "commands": stats.commands,
        "events": stats.events,
        "last_seq": stats.last_seq,
        "data_dir": None if settings.data_dir is None else str(settings.data_dir),
        "fsync": settings.fsync if settings.data_dir is not None else None,
    }
    element_cache = {"current_entries": lists, "max_entries": lists, "cache_type": "resident"}
    return respond({"memory": memory, "element_cache": element_cache, "lazy_saver": lazy_saver},
                   request)


############################################################################################
# Lists
############################################################################################


@rankdb.get("/lists")
async def get_lists() -> Response:
    """Lists sorted by id: ``limit`` after ``after_id`` or, with ``before_id``, the ``limit``
    lists closest before it; ``lists_before``/``lists_after`` count the lists outside the page."""
    after_id = request.args.get("after_id", "")
    before_id = request.args.get("before_id", "")
    limit = _limit()
    catalog = _engine().list_catalog()
    ids = [list_id for list_id, _ in catalog]
    if before_id:
        end = bisect_left(ids, before_id)
        start = max(0, end - limit)
    else:
        start = bisect_right(ids, after_id) if after_id else 0
        end = min(len(ids), start + limit)
    return respond(
        {
            "lists_before": start,
            "lists_after": len(ids) - end,
            "lists": [list_default(i, s) for i, s in catalog[start:end]],
        },
        request,
    )


def _list_body(body: Any) -> tuple[str, ListSettings, Any]:
    """A RankList body: ``(id, settings, populate)``."""
    body = _object(body, "a RankList")
    list_id = check_list_id(body.get("id"), "id")
    return list_id, ListSettings.from_body(body), body.get("populate")


@rankdb.post("/lists")
async def create_list() -> Response:
    """Create a list, optionally populated; ``replace=true`` replaces an existing one (409
    without it). Answers the full view with top and bottom elements."""
    replace = _arg_bool("replace")
    list_id, settings, populate = _list_body(await _body())
    elements = [] if populate is None else check_elements(populate, "populate")
    del populate  # the decoded body: free it before the command applies
    if not replace:
        await _engine().refuse_existing_list(list_id)
    else:
        await _refuse_live_board(list_id, "replacements by a plain list")
    info = await _submit_one(
        CreateList(list_id=list_id, settings=settings, populate=elements, replace=replace,
                   now=_now()),
        list_id,
    )
    count = len(elements)
    del elements
    if count:
        await _wrote_elements([list_id], count)
    return respond(list_full(info), request)


@rankdb.get("/lists/<list_id>")
async def get_list(list_id: str) -> Response:
    """The list's full view; ``top_bottom=true`` adds the top and bottom elements."""
    list_id = _path_list_id(list_id)
    top_bottom = _arg_bool("top_bottom")
    info = await _ask(list_id, lambda state: list_info(list_id, state, top_bottom))
    return respond(list_full(info), request)


@rankdb.delete("/lists/<list_id>")
async def delete_list(list_id: str) -> Response:
    """Delete a list: 204 whether or not it existed."""
    list_id = _path_list_id(list_id)
    # A read of a list that never existed answers without creating it; a command would leave
    # an empty state behind for every id ever deleted (see the module docstring).
    if await _ask(list_id, lambda state: state.exists):
        await _engine().submit(DeleteList(list_id=list_id))
    return Response(b"", status=204)


@rankdb.put("/lists/<list_id>/clone")
async def clone_list(list_id: str) -> Response:
    """Copy the list to a new id with the body's settings (404 source, 409 target exists)."""
    source = _path_list_id(list_id)
    target, settings, populate = _list_body(await _body())
    if populate is not None:
        raise InvalidInput("cloned lists cannot contain populate elements", "populate")
    await _refuse_missing_list(source)
    await _engine().refuse_existing_list(target)
    info = await _submit_one(CloneList(source=source, target=target, settings=settings), source)
    return respond(list_full(info), request)


def _reindexed(list_id: str) -> Callable[[ListState], ListInfo]:
    def op(state: ListState) -> ListInfo:
        state.require(list_id).reindex()
        return list_info(list_id, state)

    return op


@rankdb.put("/lists/<list_id>/reindex")
async def reindex_list(list_id: str) -> Response:
    """Rebuild the list's indexes from its rows; answers the full view."""
    list_id = _path_list_id(list_id)
    return respond(list_full(await _ask(list_id, _reindexed(list_id))), request)


@dataclass(frozen=True, slots=True)
class _Checked:
    """What a verify/repair turn found: the problems left (empty: healthy), the settings and
    whether the list is a live leaderboard (which ``clear`` may not reset)."""

    problems: list[str]
    settings: ListSettings
    board: bool = False


def _checked(list_id: str, *, verify: bool, repair: bool) -> Callable[[ListState], _Checked]:
    """Verify and/or repair in one actor turn."""

    def op(state: ListState) -> _Checked:
        ranked = state.require(list_id)
        assert state.settings is not None
        board = state.board is not None
        problems = ranked.verify() if verify else ["repair requested"]
        if problems and repair:
            try:
                ranked.repair()
            except Exception as exc:  # a list too broken to rebuild is RankDB's {"error"} case
                log.exception("repair of list %r failed", list_id)
                return _Checked([f"repair failed: {type(exc).__name__}: {exc}"], state.settings, board)
            problems = ranked.verify()
        return _Checked(problems, state.settings, board)

    return op


async def _check_list(list_id: str, *, verify: bool, repair: bool, clear: bool) -> _Checked:
    """Verify/repair one list; with ``clear``, a list still broken afterwards is reset to empty
    by a logged ``CreateList(replace=True)`` with its own settings."""
    checked = await _ask(list_id, _checked(list_id, verify=verify, repair=repair))
    if checked.problems and clear:
        if checked.board:
            await _refuse_live_board(list_id, "resets by clear")
        await _submit_one(
            CreateList(list_id=list_id, settings=checked.settings, populate=[], replace=True,
                       now=_now()),
            list_id,
        )
        return _Checked([], checked.settings)
    return checked


def _list_op_result(list_id: str, checked: _Checked) -> dict[str, Any]:
    if checked.problems:
        return {"error": "; ".join(checked.problems)}
    return {"list": list_default(list_id, checked.settings)}


@rankdb.put("/lists/<list_id>/repair")
async def repair_list(list_id: str) -> Response:
    """Rebuild the list from its rows (``clear=true``: reset it if that fails). ListOpResult."""
    list_id = _path_list_id(list_id)
    clear = _arg_bool("clear")
    checked = await _check_list(list_id, verify=False, repair=True, clear=clear)
    return respond(_list_op_result(list_id, checked), request)


@rankdb.put("/lists/<list_id>/verify")
async def verify_list(list_id: str) -> Response:
    """Check the list's invariants; ``repair=true`` repairs a broken list (``clear=true``: reset
    it if repair fails). ListOpResult: ``{"list"}``, or ``{"error"}`` with status 200."""
    list_id = _path_list_id(list_id)
    repair, clear = _arg_bool("repair"), _arg_bool("clear")
    checked = await _check_list(list_id, verify=True, repair=repair, clear=clear and repair)
    return respond(_list_op_result(list_id, checked), request)


@rankdb.get("/lists/<list_id>/range")
async def get_range(list_id: str) -> Response:
    """Elements by rank: ``from_top=k`` (ranks k, k+1, ...) or ``from_bottom=k`` (from the
    element with that from_bottom, walking downwards, as RankDB does); ``limit`` 1..1000."""
    list_id = _path_list_id(list_id)
    from_top = _arg_int("from_top", None, 0)
    from_bottom = _arg_int("from_bottom", None, 0)
    limit = _limit()
    if (from_top is None) == (from_bottom is None):
        which = "neither" if from_top is None else "both"
        # The reference answers this one with goa's bad_request, not a parameter error.
        raise InvalidInput(f"give exactly one of from_top and from_bottom, got {which}", "from_top")

    def op(state: ListState) -> list[RankedElement]:
        ranked = state.require(list_id)
        if from_top is not None:
            return ranked.range_from_top(from_top, limit)
        assert from_bottom is not None
        return ranked.range_from_bottom(from_bottom, limit)

    elements = await _ask(list_id, op)
    return respond([element_default(e, list_id) for e in elements], request)


@rankdb.get("/lists/<list_id>/percentile")
async def get_percentile(list_id: str) -> Response:
    """The element at ``from_top`` percent from the top (a float string, default "50.0"): rank
    ``floor(n * pct / 100)`` clamped to n - 1; full view with ``range`` neighbours. 404 when
    the list is empty."""
    list_id = _path_list_id(list_id)
    raw = request.args.get("from_top", "50.0")
    try:
        pct = check_percentile(raw)
    except InvalidInput as exc:
        raise InvalidParam(exc.message, "from_top") from None
    radius = _radius()

    def op(state: ListState) -> ElementResult:
        ranked = state.require(list_id)
        element = ranked.percentile(pct)
        above, below = ranked.neighbours_of_rank(element.from_top, radius)
        return ElementResult(element, above, below)

    return respond(element_full(await _ask(list_id, op), list_id), request)


############################################################################################
# Elements of one list
############################################################################################


@rankdb.post("/lists/<list_id>/elements")
async def create_element(list_id: str) -> Response:
    """Create one element (409 if the id exists); full view with ``range`` neighbours."""
    list_id = _path_list_id(list_id)
    radius = _radius()
    element = check_element(_object(await _body(), "an Element"), "body")
    await _refuse_unwritable_list(list_id, "element writes")
    if await _ask(list_id, lambda state: element.id in state.require(list_id)):
        raise Conflict(f"element(s) already exist: {[element.id]!r}", "id")
    result = await _submit_one(
        PutElements(list_ids=[list_id], elements=[element], insert_only=True, now=_now(),
                    radius=radius),
        list_id,
    )
    return respond(element_full(result, list_id), request)


@rankdb.put("/lists/<list_id>/elements")
async def put_elements(list_id: str) -> Response:
    """Upsert many elements (``[Element]``); ``results=true`` answers them sorted by rank as
    ``{"found": [...]}``, otherwise ``{"found": []}``."""
    list_id = _path_list_id(list_id)
    results = _arg_bool("results")
    elements = check_elements(await _body(), "body")
    await _refuse_unwritable_list(list_id, "element writes")
    written = await _submit_one(
        PutElements(list_ids=[list_id], elements=elements, insert_only=False, now=_now()), list_id
    )
    count = len(elements)
    del elements
    found: list[dict[str, Any]] = []
    if results:
        found = [element_default(e, list_id) for e in await _read_back(list_id, written)]
    del written
    await _wrote_elements([list_id], count)
    return respond({"found": found}, request)


async def _read_back(list_id: str, written: Any) -> list[RankedElement]:
    """The elements a ``PutElements`` wrote to one list, sorted by rank."""
    if isinstance(written, ElementResult):
        return [written.element]
    ids = list(written)
    if not ids:
        return []
    found, _ = await _ask(list_id, lambda state: state.require(list_id).find(ids))
    return found


@rankdb.delete("/lists/<list_id>/elements")
async def delete_elements(list_id: str) -> Response:
    """Delete ``element_ids`` (repeated query parameter, 1..10000); missing ids are ignored."""
    list_id = _path_list_id(list_id)
    raw = request.args.getlist("element_ids")
    if not 1 <= len(raw) <= MAX_DELETE_IDS:
        raise InvalidParam(
            f"element_ids must be given 1..{MAX_DELETE_IDS} times, got {len(raw)}", "element_ids"
        )
    ids = []
    for value in raw:
        if not _ELEMENT_ID.match(value) or int(value) > U64:
            raise InvalidParam(f"element_ids must be uint64 values, got {value!r}", "element_ids")
        ids.append(int(value))
    await _refuse_unwritable_list(list_id, "element deletes")
    await _submit_one(DeleteElements(list_ids=[list_id], ids=ids), list_id)
    return Response(b"", status=204)


@rankdb.post("/lists/<list_id>/elements/find")
async def find_elements(list_id: str) -> Response:
    """Many elements by id: ``found`` sorted by rank, ``not_found`` ascending (omitted if none)."""
    list_id = _path_list_id(list_id)
    ids = _element_ids(await _body())
    found, missing = await _ask(list_id, lambda state: state.require(list_id).find(ids))
    body: dict[str, Any] = {"found": [element_default(e, list_id) for e in found]}
    if missing:
        body["not_found"] = missing
    return respond(body, request)


@rankdb.get("/lists/<list_id>/elements/<element_id>")
async def get_element(list_id: str, element_id: str) -> Response:
    """One element, full view with ``range`` neighbours (404 list or element missing)."""
    list_id = _path_list_id(list_id)
    eid = _path_element_id(element_id)
    radius = _radius()

    def op(state: ListState) -> ElementResult:
        ranked = state.require(list_id)
        element = ranked.get(eid)
        above, below = ranked.neighbours_of_rank(element.from_top, radius)
        return ElementResult(element, above, below)

    return respond(element_full(await _ask(list_id, op), list_id), request)


@rankdb.put("/lists/<list_id>/elements/<element_id>")
async def put_element(list_id: str, element_id: str) -> Response:
    """Upsert one element; the body's id must be the path's. Full-update view
    (``previous_rank`` iff the element existed)."""
    list_id = _path_list_id(list_id)
    eid = _path_element_id(element_id)
    radius = _radius()
    element = check_element(_object(await _body(), "an Element"), "body")
    if element.id != eid:
        raise InvalidInput(f"id mismatch: path has {eid}, body has {element.id}", "id")
    await _refuse_unwritable_list(list_id, "element writes")
    result = await _submit_one(
        PutElements(list_ids=[list_id], elements=[element], insert_only=False, now=_now(),
                    radius=radius),
        list_id,
    )
    return respond(element_full_update(result, list_id), request)


@rankdb.delete("/lists/<list_id>/elements/<element_id>")
async def delete_element(list_id: str, element_id: str) -> Response:
    """Delete one element: 204 also when it is absent; 404 when the list is missing."""
    list_id = _path_list_id(list_id)
    eid = _path_element_id(element_id)
    await _refuse_unwritable_list(list_id, "element deletes")
    await _submit_one(DeleteElements(list_ids=[list_id], ids=[eid]), list_id)
    return Response(b"", status=204)


@rankdb.post("/lists/<list_id>/elements/<element_id>/around")
async def around_element(list_id: str, element_id: str) -> Response:
    """The element ranked within a subset (``{"element_ids": [...]}``, missing ids ignored):
    global ``from_top``/``from_bottom``, ``local_from_top``/``local_from_bottom`` within the
    subset, and neighbours taken from the subset only (up to ``range`` each side)."""
    list_id = _path_list_id(list_id)
    eid = _path_element_id(element_id)
    radius = _radius()
    ids = _element_ids(await _body())

    def op(state: ListState) -> tuple[ElementResult, int, int]:
        ranked = state.require(list_id)
        centre = ranked.get(eid)
        found, _ = ranked.find([i for i in ids if i != eid])
        subset = sorted([centre, *found], key=lambda e: e.from_top)
        at = subset.index(centre)
        above = subset[max(0, at - radius) : at]
        below = subset[at + 1 : at + 1 + radius]
        return ElementResult(centre, above, below), at, len(subset) - 1 - at

    result, local_top, local_bottom = await _ask(list_id, op)
    return respond(element_full(result, list_id, (local_top, local_bottom)), request)


############################################################################################
# Cross-list (xlist)
############################################################################################


def _result_list(
    outcomes: Mapping[str, Any], missing: list[str], errors_only: bool,
    success: Callable[[str, Any], dict[str, Any]],
) -> dict[str, Any]:
    """RankDB's ResultList: ``{"success": {list: {...}}, "errors": {list: msg}}``; empty maps
    are omitted (goa's omitempty), and ``errors_only`` drops ``success``."""
    errors = {list_id: "not found" for list_id in missing}
    succeeded: dict[str, Any] = {}
    for list_id, outcome in sorted(outcomes.items()):
        if isinstance(outcome, ListFailure):
            errors[list_id] = str(outcome)
        else:
            succeeded[list_id] = success(list_id, outcome)
    body: dict[str, Any] = {}
    if succeeded and not errors_only:
        body["success"] = succeeded
    if errors:
        body["errors"] = dict(sorted(errors.items()))
    return body


def _tiny_results(elements: list[RankedElement]) -> dict[str, Any]:
    return {"results": [element_tiny(e) for e in elements]} if elements else {}


async def _xlist_write(insert_only: bool) -> Response:
    results, errors_only = _arg_bool("results"), _arg_bool("errors_only")
    body = _object(await _body(), "an {lists, match_metadata, all_in_sets, payload}")
    selection = Selection.from_body(body)
    if body.get("payload") is None:
        raise InvalidInput("payload is required (a list of elements)", "payload")
    elements = check_elements(body["payload"], "payload")
    selected, missing = selection.resolve(_engine().list_catalog(), all_if_empty=False)
    selected, refused = await _without_boards(selected, "element writes")
    outcomes: dict[str, Any] = dict(refused)
    if selected:
        command = PutElements(list_ids=selected, elements=elements, insert_only=insert_only,
                              now=_now())
        try:
            outcomes.update(await _engine().submit(command))
        except (NotFound, Conflict) as exc:
            # One list: the command raises its failure instead of returning it.
            outcomes[selected[0]] = _failure(exc)
    read: dict[str, list[RankedElement]] = {}
    if results:
        written = {k: v for k, v in outcomes.items() if not isinstance(v, ListFailure)}
        for list_id, outcome in written.items():
            read[list_id] = await _read_back(list_id, outcome)
    if selected:
        count = len(elements)
        del elements, command
        await _wrote_elements(selected, count)
    return respond(
        _result_list(outcomes, missing, errors_only,
                     lambda list_id, _: _tiny_results(read.get(list_id, []))),
        request,
    )


@rankdb.post("/xlist/elements")
async def xlist_create() -> Response:
    """Create elements in every selected list; a list holding any of the ids gets an error."""
    return await _xlist_write(insert_only=True)


@rankdb.put("/xlist/elements")
async def xlist_put() -> Response:
    """Upsert elements in every selected list."""
    return await _xlist_write(insert_only=False)


@rankdb.get("/xlist/elements/<element_id>")
async def xlist_get(element_id: str) -> Response:
    """One element from every selected list: tiny views (no ``results`` where it is absent)."""
    eid = _path_element_id(element_id)
    selected, missing = Selection.from_query(request.args).resolve(
        _engine().list_catalog(), all_if_empty=False
    )
    outcomes = await _ask_each(
        selected, lambda list_id: lambda state: state.require(list_id).find([eid])[0]
    )
    return respond(
        _result_list(outcomes, missing, False, lambda _, found: _tiny_results(found)), request
    )


@rankdb.delete("/xlist/elements/<element_id>")
async def xlist_delete(element_id: str) -> Response:
    """Delete one element from every selected list."""
    eid = _path_element_id(element_id)
    errors_only = _arg_bool("errors_only")
    selected, missing = Selection.from_query(request.args).resolve(
        _engine().list_catalog(), all_if_empty=False
    )
    selected, refused = await _without_boards(selected, "element deletes")
    outcomes: dict[str, Any] = dict(refused)
    if selected:
        try:
            outcomes.update(await _engine().submit(DeleteElements(list_ids=selected, ids=[eid])))
        except (NotFound, Conflict) as exc:
            outcomes[selected[0]] = _failure(exc)
    return respond(_result_list(outcomes, missing, errors_only, lambda _, __: {}), request)


async def _xlist_maintain(
    run: Callable[[str], Awaitable[Any]], errors_only: bool
) -> Response:
    body = _object(await _body(empty={}), "a {lists, match_metadata, all_in_sets}")
    selection = Selection.from_body(body)
    selected, missing = selection.resolve(_engine().list_catalog(), all_if_empty=True)
    limiter = trio.CapacityLimiter(XLIST_CONCURRENCY)
    outcomes: dict[str, Any] = {}

    async def one(list_id: str) -> None:
        async with limiter:
            try:
                outcomes[list_id] = await run(list_id)
            except PointspaceError as exc:
                outcomes[list_id] = _failure(exc)

    async with trio.open_nursery() as nursery:
        for list_id in selected:
            nursery.start_soon(one, list_id)
    return respond(_result_list(outcomes, missing, errors_only, lambda _, __: {}), request)


@rankdb.put("/xlist/verify")
async def xlist_verify() -> Response:
    """Verify every selected list (all lists when nothing is selected); ``repair``/``clear`` as
    for one list. A list still broken is reported in ``errors``."""
    _arg_bool("elements")  # accepted; our verify always checks the id index
    repair, clear = _arg_bool("repair"), _arg_bool("clear")
    errors_only = _arg_bool("errors_only")

    async def run(list_id: str) -> None:
        checked = await _check_list(list_id, verify=True, repair=repair, clear=clear and repair)
        if checked.problems:
            raise InvalidInput("; ".join(checked.problems))

    return await _xlist_maintain(run, errors_only)


@rankdb.put("/xlist/reindex")
async def xlist_reindex() -> Response:
    """Reindex every selected list (all lists when nothing is selected)."""
    errors_only = _arg_bool("errors_only")

    async def run(list_id: str) -> None:
        await _ask(list_id, _reindexed(list_id))

    return await _xlist_maintain(run, errors_only)


__all__ = ["rankdb"]
