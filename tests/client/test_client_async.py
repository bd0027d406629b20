"""AsyncPointspaceClient (client/aio.py) against a real server, under trio AND asyncio.

Each test is a plain function that runs its coroutine with ``anyio.run(..., backend=...)``,
parametrized over both backends, so neither pytest-trio's trio mode (which takes every
``async def`` test) nor an asyncio plugin decides which loop runs it.
"""

from __future__ import annotations

import io
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio
import client_helpers
import pytest
from client_helpers import (
    ALL_SCOPES,
    AsyncRecordingTransport,
    LateServer,
    dead_url,
    unique,
)
from conftest import ServerProcess

from client import (
    Conflict,
    Count,
    Event,
    InvalidRequest,
    NewElement,
    NotFound,
    PointspaceTransportError,
    RetryPolicy,
    Unauthorized,
    Window,
)
from client.aio import AsyncPointspaceClient
from snapshots.codec import validate_snapshot

jwt_server = client_helpers.jwt_server  # module-scoped fixtures
durable_server = client_helpers.durable_server

T0 = 1_496_539_747
MSGPACK, JSON, NDJSON = "application/msgpack", "application/json", "application/x-ndjson"
FAST = RetryPolicy(attempts=5, base_delay=0.01, max_delay=0.05)

backends = pytest.mark.parametrize("backend", ["trio", "asyncio"])


def run(backend: str, main: Callable[[], Awaitable[None]]) -> None:
    anyio.run(main, backend=backend)


@backends
def test_every_method_under_both_loops(server: ServerProcess, backend: str):
    metric, name, board, list_id = unique("a-steps"), unique("a-count"), unique("a-board"), unique("a-list")
    wire = AsyncRecordingTransport()

    async def main() -> None:
        async with AsyncPointspaceClient(server.url, transport=wire) as ps:
            events = [Event(metric=metric, user=u, value=10 * u, ts=T0, atid=2, aid=u) for u in (1, 2, 3)]
            assert (await ps.ingest(events)).applied == 3
            assert wire.seen[-1][:3] == ("POST", "/api/events", MSGPACK)
            assert (await ps.ingest([{"metric": metric, "user": 1, "value": 5, "ts": T0 + 1}],
                                    format="json")).applied == 1
            assert wire.seen[-1][2] == JSON
            result = await ps.query([1, 2], metric, T0, T0 + 1, with_atids=True)
            assert result.sums() == {1: {metric: 15}, 2: {metric: 20}}
            assert result.results[0].atids == (2,)
            assert (await ps.user_sum(3, metric, T0, T0)).sum == 30
            daily = await ps.breakdown([1], [metric], 1_496_448_000, 1_496_707_199, tz="Europe/Oslo")
            assert daily.results[0].series[metric] == (0, 15, 0, 0)

            assert (await ps.add_counts([Count(name=name, value=4, ts=T0)])).applied == 1
            assert (await ps.counter_sum(name, T0, T0)).sum == 4
            assert (await ps.counter_breakdown(name, T0, T0, step="hour")).series == (4,)

            ranked = await ps.rank(metric, T0, T0 + 1, top=1, user=1, radius=1)
            assert [s.user for s in ranked.top] == [3] and ranked.user.rank == 2  # type: ignore[union-attr]
            made = await ps.create_leaderboard(board, metric, Window(t1=T0, t2=T0 + 10))
            assert made.window.kind in (None, "fixed")
            with pytest.raises(Conflict):
                await ps.create_leaderboard(board, metric, Window(t1=T0, t2=T0 + 10))
            view = await ps.leaderboard(board, top=3, user=2)
            assert [s.user for s in view.top] == [3, 2, 1] and view.user.rank == 1  # type: ignore[union-attr]
            assert board in {b.id for b in (await ps.list_leaderboards()).leaderboards}
            await ps.delete_leaderboard(board)
            with pytest.raises(NotFound):
                await ps.leaderboard(board)

            created = await ps.create_list(list_id, set="client-set",
                                           populate=[NewElement(id=i, score=i) for i in (1, 2, 3)])
            assert created.elements == 3
            assert [e.id for e in (await ps.put_elements(list_id, [NewElement(id=4, score=9)],
                                                         results=True)).found] == [4]
            assert (await ps.put_element(list_id, {"id": 1, "score": 8})).from_top == 1
            assert (await ps.get_element(list_id, 2, radius=1)).from_top == 3
            assert (await ps.find_elements(list_id, [3, 77])).not_found == (77,)
            assert [e.id for e in await ps.get_range(list_id, from_top=0, limit=2)] == [4, 1]
            assert (await ps.percentile(list_id, 100.0)).id == 2
            assert list_id in [lst.id for lst in (await ps.lists(limit=1000)).lists]
            assert (await ps.get_list(list_id, top_bottom=True)).top_element.id == 4  # type: ignore[union-attr]
            await ps.delete_elements(list_id, [4])
            await ps.delete_element(list_id, 3)
            assert (await ps.get_list(list_id)).elements == 2
            await ps.delete_list(list_id)
            with pytest.raises(NotFound) as caught:
                await ps.get_list(list_id)
            assert caught.value.code == "not_found"

            stats = await ps.stats()
            assert stats.events > 0
            assert (await ps.health()).status == "alive"
            assert (await ps.ready()).ready
            assert (await ps.snapshot_status()).data_dir is None
            assert await ps.request("GET", "/health/ping") == {"pong": "OK"}

    run(backend, main)


@backends
def test_errors_carry_status_field_and_message(server: ServerProcess, backend: str):
    async def main() -> None:
        async with AsyncPointspaceClient(server.url) as ps:
            with pytest.raises(InvalidRequest) as caught:
                await ps.ingest([Event(metric="steps", user=1, value=1, ts=-5)])
            assert (caught.value.status, caught.value.field) == (400, "body[0].ts")
            with pytest.raises(InvalidRequest) as caught:
                await ps.get_range(unique("nolist"), from_top=0, limit=0)
            assert (caught.value.code, caught.value.field) == ("invalid_request", "limit")

    run(backend, main)


@backends
def test_ingest_stream_from_an_async_iterable(server: ServerProcess, backend: str):
    metric = unique("a-stream")
    wire = AsyncRecordingTransport()

    async def events() -> AsyncIterator[Event]:
        for i in range(5_000):
            if i % 1000 == 0:
                await anyio.sleep(0)
            yield Event(metric=metric, user=i % 10, value=2, ts=T0)

    async def main() -> None:
        async with AsyncPointspaceClient(server.url, transport=wire) as ps:
            result = await ps.ingest_stream(events())
            assert (result.applied, result.lines) == (5_000, 5_000)
            assert wire.seen[-1][:3] == ("POST", "/api/events/stream", NDJSON)
            more = await ps.ingest_stream([Event(metric=metric, user=0, value=1, ts=T0)] * 3)
            assert more.applied == 3
            assert (await ps.user_sum(0, metric, T0, T0)).sum == 1003

    run(backend, main)


@backends
def test_snapshot_and_streaming_export(durable_server: ServerProcess, tmp_path: Path, backend: str):
    dest = tmp_path / "async.pssnap"

    async def main() -> None:
        async with AsyncPointspaceClient(durable_server.url) as ps:
            await ps.ingest([Event(metric=unique("a-snap"), user=1, value=1, ts=T0)])
            record = await ps.take_snapshot()
            assert (await ps.snapshot_status()).last == record
            exported = await ps.export_snapshot(dest)
            assert exported.bytes == dest.stat().st_size
            buffer = io.BytesIO()
            assert (await ps.export_snapshot(buffer)).bytes == buffer.tell() > 0

    run(backend, main)
    assert [p.name for p in tmp_path.iterdir()] == [dest.name]
    with open(dest, "rb") as stream:
        assert validate_snapshot(stream).items > 0


@backends
def test_reads_retry_until_a_briefly_down_server_answers(tmp_path: Path, backend: str):
    wire = AsyncRecordingTransport()
    patient = RetryPolicy(attempts=80, base_delay=0.05, max_delay=0.5)

    with LateServer(tmp_path, delay=0.5) as late:
        async def main() -> None:
            async with AsyncPointspaceClient(late.url, retry=patient, transport=wire) as ps:
                assert (await ps.counter_sum("late", T0, T0)).sum == 0

        run(backend, main)
    assert len(wire.seen) > 1


@backends
def test_retries_are_bounded_and_writes_sent_once(backend: str):
    wire = AsyncRecordingTransport()

    async def main() -> None:
        async with AsyncPointspaceClient(dead_url(), retry=FAST, transport=wire) as ps:
            started = time.monotonic()
            with pytest.raises(PointspaceTransportError) as caught:
                await ps.query([1], "m", T0, T0)
            assert caught.value.attempts == FAST.attempts == len(wire.seen)
            assert time.monotonic() - started < 5
            with pytest.raises(PointspaceTransportError) as caught:
                await ps.add_counts([Count(name="c", value=1, ts=T0)])
            assert caught.value.attempts == 1 and not caught.value.request_sent
            with pytest.raises(PointspaceTransportError) as caught:
                await ps.delete_element("l1", 1, idempotent=True)
            assert caught.value.attempts == FAST.attempts

    run(backend, main)


@backends
def test_jwt_token_passing(jwt_server, backend: str):
    server, keys = jwt_server

    async def main() -> None:
        async with AsyncPointspaceClient(server.url) as anonymous:
            with pytest.raises(Unauthorized) as caught:
                await anonymous.query([1], "m", T0, T0)
            assert caught.value.field == "Authorization"
        async with AsyncPointspaceClient(server.url, token=lambda: keys.token(ALL_SCOPES)) as ps:
            await ps.ingest([Event(metric="a-jwt", user=1, value=2, ts=T0)])
            assert (await ps.user_sum(1, "a-jwt", T0, T0)).sum >= 2
            assert (await ps.snapshot_status()).data_dir is None

    run(backend, main)
