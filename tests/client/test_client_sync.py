"""PointspaceClient (client/sync.py) against a real server: every method, errors from both error
shapes, msgpack batches on the wire, exact big integers, streaming ingest and export, retries
(bounded; reads only), JWT, and the README walk-through.

Every test uses its own names (``unique``): the module's server is shared.
"""

from __future__ import annotations

import doctest
import io
import time
from pathlib import Path

import client_helpers
import jwt
import pytest
from client_helpers import (
    ALL_SCOPES,
    LateServer,
    RecordingTransport,
    dead_url,
    unique,
)
from conftest import ROOT, ServerProcess

from client import (
    NO_RETRY,
    Conflict,
    Count,
    Event,
    InvalidRequest,
    NewElement,
    NotFound,
    PayloadTooLarge,
    PointspaceClient,
    PointspaceTransportError,
    RetryPolicy,
    Unauthorized,
    Window,
)
from snapshots.codec import validate_snapshot

jwt_server = client_helpers.jwt_server  # module-scoped fixtures
durable_server = client_helpers.durable_server

T0 = 1_496_539_747  # 2017-06-04 01:29:07 UTC
DAY_START, DAY_END = 1_496_448_000, 1_496_707_199  # the README's breakdown range
MSGPACK, JSON, NDJSON = "application/msgpack", "application/json", "application/x-ndjson"


@pytest.fixture
def wire() -> RecordingTransport:
    return RecordingTransport()


@pytest.fixture
def ps(server: ServerProcess, wire: RecordingTransport):
    with PointspaceClient(server.url, transport=wire) as client:
        yield client


############################################################################################
# Events and reads


def test_ingest_sends_msgpack_batches_and_queries_read_them(ps: PointspaceClient, wire):
    metric = unique("steps")
    applied = ps.ingest([
        Event(metric=metric, user=1, value=120, ts=T0, atid=2, aid=3),
        {"metric": metric, "user": 1, "value": 80, "ts": T0 + 3600, "atid": 5, "aid": 4},
        Event(metric=metric, user="alice", value=10, ts=T0 + 53),
    ])
    assert applied.applied == 3
    assert wire.seen[-1][:3] == ("POST", "/api/events", MSGPACK)

    assert ps.ingest([Event(metric=metric, user="bob", value=7, ts=T0)], format="json").applied == 1
    assert wire.seen[-1][2] == JSON

    result = ps.query([1, "alice", "bob"], metric, T0 - 1, T0 + 3600, with_atids=True)
    assert result.sums() == {1: {metric: 200}, "alice": {metric: 10}, "bob": {metric: 7}}
    assert result.results[0].atids == (2, 5)
    assert wire.seen[-1][:3] == ("POST", "/api/query", JSON)
    assert ps.query([1], [metric], T0 - 1, T0 + 3600, atid=2).sums() == {1: {metric: 120}}
    assert ps.query([1], metric, T0 - 1, T0 + 3600, aid=3).sums() == {1: {metric: 120}}
    assert ps.query([1], metric, T0 - 1, T0, offsets=[3600]).sums() == {1: {metric: 80}}
    assert ps.user_sum(1, metric, T0, T0 + 3600).sum == 200
    assert ps.user_sum("alice", metric, T0, T0 + 3600, atid=0).sum == 10

    daily = ps.breakdown([1], metric, DAY_START, DAY_END, tz="Europe/Oslo")
    assert daily.step == "day" and len(daily.periods) == 4
    assert daily.results[0].series[metric] == (0, 200, 0, 0)
    hourly = ps.breakdown([1, "alice"], [metric], T0, T0 + 7199, step=3600, atid=5)
    hour = T0 - T0 % 3600  # fixed steps are aligned to the epoch
    assert hourly.periods == ((T0, hour + 3599), (hour + 3600, hour + 7199),
                              (hour + 7200, T0 + 7199))
    assert hourly.results[0].series[metric] == (0, 80, 0)


def test_sums_beyond_64_bits_come_back_exact(ps: PointspaceClient):
    metric = unique("huge")
    big = 2**63 - 1
    ps.ingest([Event(metric=metric, user=9, value=big, ts=T0 + i) for i in range(3)])
    assert ps.query([9], metric, T0, T0 + 2).sums() == {9: {metric: 3 * big}}
    assert 3 * big > 2**64


def test_a_value_too_wide_for_msgpack_is_sent_as_json_and_refused_with_its_field(ps, wire):
    metric = unique("wide")
    with pytest.raises(InvalidRequest) as caught:
        ps.ingest([Event(metric=metric, user=1, value=1, ts=T0),
                   Event(metric=metric, user=1, value=2**64, ts=T0)])
    assert caught.value.field == "body[1].value"
    assert wire.seen[-1][2] == JSON
    assert ps.query([1], metric, T0, T0).sums() == {1: {metric: 0}}  # the batch changed nothing


def test_ingest_stream_draws_a_generator_as_ndjson(ps: PointspaceClient, wire):
    metric = unique("stream")
    drawn = 0

    def events():
        nonlocal drawn
        for i in range(30_000):
            drawn += 1
            yield {"metric": metric, "user": i % 100, "value": 1, "ts": T0 + i % 60}

    result = ps.ingest_stream(events())
    assert (result.applied, result.lines, drawn) == (30_000, 30_000, 30_000)
    assert wire.seen[-1][:3] == ("POST", "/api/events/stream", NDJSON)
    assert ps.query([0, 99], metric, T0, T0 + 59).sums() == {0: {metric: 300}, 99: {metric: 300}}


def test_ingest_stream_bad_line_names_it_and_keeps_what_came_before(ps: PointspaceClient):
    metric = unique("badline")
    def lines():  # the server answers at line 6, long before the body ends
        yield from [Event(metric=metric, user=1, value=1, ts=T0)] * 5
        yield {"metric": metric}
        yield from [Event(metric=metric, user=1, value=1, ts=T0)] * 300_000

    with pytest.raises(InvalidRequest) as caught:
        ps.ingest_stream(lines())
    assert caught.value.field == "line 6"
    assert "the 5 events before line 6 were applied" in caught.value.message
    assert ps.user_sum(1, metric, T0, T0).sum == 5


############################################################################################
# Global counters and leaderboards


def test_global_counters_write_sum_and_break_down(ps: PointspaceClient, wire):
    name = unique("signup")
    assert ps.add_counts([Count(name=name, value=2, ts=T0), {"name": name, "value": 3,
                                                             "ts": T0 + 3600}]).applied == 2
    assert wire.seen[-1][:3] == ("POST", "/api/counters", MSGPACK)
    assert ps.add_counts([Count(name=name, value=1, ts=T0)], format="json").applied == 1
    assert ps.counter_sum(name, T0, T0 + 3600).sum == 6
    series = ps.counter_breakdown(name, T0, T0 + 7199, step="hour", tz="Europe/Paris")
    assert series.series == (3, 3, 0) and len(series.periods) == 3
    assert ps.counter_breakdown(name, T0, T0 + 7199, step=3600, offset=0).series == (3, 3, 0)


def test_leaderboards_rank_create_read_and_delete(ps: PointspaceClient):
    metric, board = unique("laps"), unique("board")
    ps.ingest([Event(metric=metric, user=u, value=10 * u, ts=T0) for u in (1, 2, 3, 4)])
    ranked = ps.rank(metric, T0, T0, top=2, user=2, radius=1)
    assert ranked.total == 4 and [s.user for s in ranked.top] == [4, 3]
    assert ranked.user is not None and ranked.user.rank == 2
    assert [s.user for s in ranked.user.above] == [3] and [s.user for s in ranked.user.below] == [1]
    assert [s.user for s in ps.rank(metric, T0, T0, users=[1, 2]).top] == [2, 1]

    created = ps.create_leaderboard(board, metric, Window(t1=T0 - 10, t2=T0 + 86400),
                                    members=[1, 2, 3])
    assert created.id == board and created.members == (1, 2, 3) and created.window.t1 == T0 - 10
    with pytest.raises(Conflict):
        ps.create_leaderboard(board, metric, Window(t1=T0, t2=T0 + 1))
    ps.ingest([Event(metric=metric, user=1, value=100, ts=T0 + 5)])
    view = ps.leaderboard(board, top=2, user=3, radius=1)
    assert view.size == 3 and [(s.user, s.score) for s in view.top] == [(1, 110), (3, 30)]
    assert view.user is not None and view.user.rank == 1

    rolling = ps.create_leaderboard(unique("today"), metric, {"rolling": "day", "tz": "Europe/Oslo"},
                                    atid=0)
    assert rolling.window.kind == "day" and rolling.atid == 0

    listed = {b.id: b for b in ps.list_leaderboards().leaderboards}
    assert (listed[board].metric, listed[board].members, listed[board].size) == (metric, 3, 3)
    assert listed[rolling.id].members is None

    ps.delete_leaderboard(board)
    with pytest.raises(NotFound):
        ps.leaderboard(board)
    assert board not in {b.id for b in ps.list_leaderboards().leaderboards}


############################################################################################
# Ranked lists (RankDB's routes, goa errors)


def test_ranked_lists_through_rankdbs_routes(ps: PointspaceClient):
    list_id = unique("list")
    created = ps.create_list(list_id, set="client-set", metadata={"team": "red"},
                             populate=[NewElement(id=1, score=10), {"id": 2, "score": 20}])
    assert (created.elements, created.metadata) == (2, {"team": "red"})
    assert created.top_element is not None and created.top_element.id == 2
    with pytest.raises(Conflict):
        ps.create_list(list_id, set="client-set")
    assert ps.create_list(list_id, set="client-set", replace=True, split_size=100,
                          merge_size=20).elements == 0

    found = ps.put_elements(list_id, [NewElement(id=i, score=i * 10, payload={"n": i})
                                      for i in range(1, 6)], results=True)
    assert [e.id for e in found.found] == [5, 4, 3, 2, 1]
    assert ps.put_elements(list_id, [{"id": 6, "score": 1}]).found == ()

    moved = ps.put_element(list_id, NewElement(id=1, score=45, tie_breaker=1), radius=1)
    assert (moved.from_top, moved.previous_rank.from_top) == (1, 4)  # type: ignore[union-attr]
    assert [e.id for e in moved.neighbors.above] == [5] and [e.id for e in moved.neighbors.below] == [4]

    element = ps.get_element(list_id, 3, radius=2)
    assert (element.from_top, element.from_bottom, element.payload) == (3, 2, {"n": 3})
    assert [e.id for e in element.neighbors.above] == [1, 4]
    assert ps.find_elements(list_id, [2, 99, 3]).not_found == (99,)
    assert [e.id for e in ps.get_range(list_id, from_top=1, limit=2)] == [1, 4]
    assert [e.id for e in ps.get_range(list_id, from_bottom=1)] == [2, 6]
    assert ps.percentile(list_id, 0.0).id == 5 and ps.percentile(list_id, radius=0).id == 3
    assert ps.get_list(list_id, top_bottom=True).bottom_element.id == 6  # type: ignore[union-attr]
    page = ps.lists(after_id=list_id[:-1], limit=1000)
    assert list_id in [lst.id for lst in page.lists]

    ps.delete_elements(list_id, [5, 6])
    ps.delete_element(list_id, 4)
    ps.delete_element(list_id, 4)  # absent: no error
    assert ps.get_list(list_id).elements == 3
    ps.delete_list(list_id)
    with pytest.raises(NotFound) as caught:
        ps.get_element(list_id, 1)
    assert (caught.value.code, caught.value.field) == ("not_found", "list_id")
    assert caught.value.error_id


def test_goa_errors_carry_code_and_field(ps: PointspaceClient):
    list_id = unique("goa")
    ps.create_list(list_id, set="client-set", populate=[NewElement(id=1, score=1)])
    with pytest.raises(InvalidRequest) as caught:
        ps.get_element(list_id, 1, radius=101)
    assert (caught.value.code, caught.value.field) == ("invalid_request", "range")
    assert caught.value.message == "range must be between 0 and 100, got 101"
    with pytest.raises(InvalidRequest) as caught:
        ps.put_elements(list_id, [{"id": 1}])
    assert (caught.value.code, caught.value.field) == ("bad_request", "body[0].score")


def test_rankdb_views_hold_no_key_the_client_types_lack(server: ServerProcess, ps):
    """Drift check for the RankDB views, which have no model on the server: every key of a
    real answer is a field of the client's type."""
    import msgspec

    from client import models

    list_id = unique("views")
    ps.create_list(list_id, set="client-set", populate=[NewElement(id=i, score=i) for i in (1, 2, 3)])
    ps.put_element(list_id, NewElement(id=2, score=5))
    with server.client() as http:
        answers = {
            models.RankList: http.get(f"/lists/{list_id}", params={"top_bottom": "true"}).json(),
            models.ElementView: http.put(f"/lists/{list_id}/elements/2",
                                         json={"id": 2, "score": 6}).json(),
            models.ListsPage: http.get("/lists").json(),
            models.FoundElements: http.post(f"/lists/{list_id}/elements/find",
                                            json={"element_ids": [1, 9]}).json(),
        }
    for kind, answer in answers.items():
        fields = {f.name for f in msgspec.structs.fields(kind)}
        assert set(answer) <= fields, (kind.__name__, set(answer) - fields)
    element_fields = {f.name for f in msgspec.structs.fields(models.Element)}
    assert set(answers[models.ElementView]["previous_rank"]) <= element_fields
    assert set(answers[models.RankList]["top_element"]) <= element_fields


############################################################################################
# Errors


def test_a_400_naming_the_field_raises_invalid_request_with_it(ps: PointspaceClient):
    with pytest.raises(InvalidRequest) as caught:
        ps.ingest([Event(metric="steps", user=1, value=1, ts=-5)])
    exc = caught.value
    assert (exc.status, exc.field) == (400, "body[0].ts")
    assert exc.message == "body[0].ts: expected `int` >= 0 (was -5)"
    assert exc.method == "POST" and exc.url.endswith("/api/events")
    with pytest.raises(InvalidRequest) as caught:
        ps.query([1], "m", 10, 5)
    assert caught.value.field == "t1"


def test_too_large_a_batch_is_payload_too_large(ps: PointspaceClient):
    metric = unique("big")
    with pytest.raises(PayloadTooLarge):
        ps.ingest([{"metric": metric, "user": 1, "value": 1, "ts": T0}] * 100_001)
    assert ps.user_sum(1, metric, T0, T0).sum == 0


def test_request_reaches_any_route_with_the_same_error_mapping(ps: PointspaceClient):
    assert ps.request("GET", "/health/ping") == {"pong": "OK"}
    with pytest.raises(NotFound) as caught:
        ps.request("GET", "/api/no-such-route")
    assert caught.value.status == 404
    psd = ps.request("POST", "/v1/write", json={"thing": unique("psd"), "uid": 1, "atid": 2,
                                                "aid": 3, "value": 10, "ts1": T0, "ts2": T0})
    assert psd == "ok"  # PSD answers text


############################################################################################
# Operations


def test_stats_health_and_readiness(ps: PointspaceClient):
    stats = ps.stats()
    assert stats.events > 0 and stats.router.entities > 0 and stats.last_seq >= stats.commands - 1
    assert ps.health().status == "alive"
    ready = ps.ready()
    assert ready.ready and ready.durable is False and ready.error is None


def test_snapshot_trigger_status_and_streaming_export(durable_server: ServerProcess,
                                                     tmp_path: Path):
    with PointspaceClient(durable_server.url) as ps:
        ps.ingest([Event(metric="snap", user=u, value=u, ts=T0) for u in range(1, 50)])
        ps.create_list(unique("snaplist"), set="client-set", populate=[NewElement(id=1, score=1)])
        record = ps.take_snapshot()
        assert record.items > 0 and record.path.endswith(".pssnap")
        status = ps.snapshot_status()
        assert status.last == record and status.data_dir is not None
        assert status.log is not None and status.log.policy in ("always", "everysec", "no")
        assert status.recovery is not None

        dest = tmp_path / "live.pssnap"
        exported = ps.export_snapshot(dest)
        assert exported.path == str(dest) and exported.bytes == dest.stat().st_size > 0
        assert list(tmp_path.iterdir()) == [dest]  # the .part file was renamed
        with open(dest, "rb") as stream:
            info = validate_snapshot(stream)
        assert info.items >= record.items

        buffer = io.BytesIO()
        assert ps.export_snapshot(buffer).path is None
        buffer.seek(0)
        assert validate_snapshot(buffer).items == info.items


def test_a_failed_export_leaves_no_file(tmp_path: Path):
    dest = tmp_path / "never.pssnap"
    with PointspaceClient(dead_url(), retry=NO_RETRY) as ps, pytest.raises(PointspaceTransportError):
        ps.export_snapshot(dest)
    assert list(tmp_path.iterdir()) == []


############################################################################################
# Retries


FAST = RetryPolicy(attempts=5, base_delay=0.01, max_delay=0.05)


def test_reads_retry_until_a_briefly_down_server_answers(tmp_path: Path):
    wire = RecordingTransport()
    patient = RetryPolicy(attempts=80, base_delay=0.05, max_delay=0.5)
    with LateServer(tmp_path, delay=0.5) as late, \
            PointspaceClient(late.url, retry=patient, transport=wire) as ps:
        result = ps.query([1], "steps", T0, T0)
    assert result.sums() == {1: {"steps": 0}}
    assert len(wire.seen) > 1  # refused at first, then answered


def test_read_retries_are_bounded():
    wire = RecordingTransport()
    started = time.monotonic()
    with PointspaceClient(dead_url(), retry=FAST, transport=wire) as ps, \
            pytest.raises(PointspaceTransportError) as caught:
        ps.counter_sum("x", T0, T0)
    assert caught.value.attempts == FAST.attempts == len(wire.seen)
    assert caught.value.request_sent is False
    assert time.monotonic() - started < 5


def test_writes_are_sent_once_unless_idempotent():
    wire = RecordingTransport()
    event = Event(metric="w", user=1, value=1, ts=T0, aid=1, mode="diff")
    with PointspaceClient(dead_url(), retry=FAST, transport=wire) as ps:
        with pytest.raises(PointspaceTransportError) as caught:
            ps.ingest([event])
        assert (caught.value.attempts, len(wire.seen)) == (1, 1)
        assert caught.value.request_sent is False  # never connected: safe to send again
        with pytest.raises(PointspaceTransportError) as caught:
            ps.ingest([event], idempotent=True)
        assert caught.value.attempts == FAST.attempts
        with pytest.raises(PointspaceTransportError) as caught:
            ps.put_elements("l1", [NewElement(id=1, score=1)])
        assert caught.value.attempts == 1


def test_errors_with_answers_are_not_retried(ps: PointspaceClient, wire):
    before = len(wire.seen)
    with pytest.raises(InvalidRequest):
        ps.query([1], "m", 10, 5)
    assert len(wire.seen) == before + 1


############################################################################################
# JWT


def test_jwt_token_is_sent_as_bearer(jwt_server):
    server, keys = jwt_server
    with PointspaceClient(server.url) as anonymous:
        with pytest.raises(Unauthorized) as caught:
            anonymous.stats()
        assert caught.value.field == "Authorization"
        with pytest.raises(Unauthorized) as caught:
            anonymous.get_list("nolist")
        assert caught.value.code == "jwt_security_error"
        assert anonymous.health().status == "alive"  # open without a token

    wire = RecordingTransport()
    with PointspaceClient(server.url, token=keys.token(ALL_SCOPES), transport=wire) as ps:
        assert ps.ingest([Event(metric="jwt", user=1, value=3, ts=T0)]).applied == 1
        assert ps.user_sum(1, "jwt", T0, T0).sum == 3
        assert ps.snapshot_status().data_dir is None
        sent = wire.seen[-1][3]
        assert sent is not None and sent.startswith("Bearer ")
        claims = jwt.decode(sent.removeprefix("Bearer "), keys.key.public_key(), algorithms=["RS256"])
        assert claims["scope"] == ALL_SCOPES

    calls = []

    def provider() -> str:
        calls.append(1)
        return keys.token("api:read")

    with PointspaceClient(server.url, token=provider) as reader:
        assert reader.user_sum(1, "jwt", T0, T0).sum == 3
        assert reader.query([1], "jwt", T0, T0).sums() == {1: {"jwt": 3}}
        with pytest.raises(Unauthorized) as caught:
            reader.ingest([Event(metric="jwt", user=1, value=3, ts=T0)])
        assert "api:update" in caught.value.message
    assert len(calls) == 3  # asked for every request


############################################################################################
# The README walk-through


README_EXAMPLE = """\
    >>> from client import PointspaceClient, Event, InvalidRequest
    >>> ps = PointspaceClient("http://127.0.0.1:1155")
    >>> ps.ingest([Event(metric="laps", user=1, value=12, ts=1496539747, atid=2, aid=3),
    ...            Event(metric="laps", user="alice", value=5, ts=1496539800)])
    Applied(applied=2)
    >>> ps.query([1, "alice"], "laps", 1496539746, 1496543347).sums()
    {1: {'laps': 12}, 'alice': {'laps': 5}}
    >>> ps.rank("laps", 1496448000, 1496707199).top[0]
    Standing(user=1, score=12, rank=0, updated_at=None)
    >>> try:
    ...     ps.ingest([Event(metric="laps", user=1, value=1, ts=-5)])
    ... except InvalidRequest as exc:
    ...     print(exc.status, exc.field)
    400 body[0].ts
    >>> ps.close()
"""


def test_readme_client_example_runs_as_written(tmp_path: Path):
    """The README's client example, against a fresh server (its own, so the sums are the
    README's)."""
    from conftest import start_server

    fresh = start_server(tmp_path)
    try:
        text = README_EXAMPLE.replace("http://127.0.0.1:1155", fresh.url)
        test = doctest.DocTestParser().get_doctest(text, {}, "README", "README.md", 0)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        runner.run(test)
        assert runner.summarize(verbose=False).failed == 0
    finally:
        fresh.stop()


def test_readme_shows_the_client_example():
    readme = (ROOT / "README.md").read_text()
    assert README_EXAMPLE in readme, (
        "README.md lacks the client example: paste README_EXAMPLE (tests/client/"
        "test_client_sync.py) into the walk-through, as it is here"
    )
