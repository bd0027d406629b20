"""Schemathesis against the server's own ``/openapi.json``: every documented operation, with
bodies and parameters generated from the document, valid and invalid.

Each case goes to a real server process on loopback. The checks:

* no 5xx, ever;
* the status code, content type and response body match what the document says;
* a request the document calls invalid is refused (``negative_data_rejection``);
* a refused request (4xx) changes nothing: the log sequence number, the event count and a
  set of reads of seeded data are the same after it as before.

``POINTSPACE_FUZZ_EXAMPLES`` raises the number of examples per operation for a longer run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import msgpack
import orjson
import pytest
import schemathesis
from conftest import ServerProcess, start_server
from hypothesis import HealthCheck, reject, settings
from schemathesis.specs.openapi import checks as openapi_checks

EXAMPLES = int(os.environ.get("POINTSPACE_FUZZ_EXAMPLES", "40"))

SEED_USER = 424242
SEED_BOARD = "fuzz-seed-board"


@schemathesis.serializer("application/msgpack")
def _msgpack(ctx: schemathesis.SerializationContext, value: Any) -> bytes:
    try:
        return msgpack.packb(value, use_bin_type=True)
    except OverflowError:  # msgpack has no integers past 64 bits: no such msgpack request
        reject()


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx: schemathesis.SerializationContext, value: Any) -> bytes:
    lines = value if isinstance(value, list) else [value]
    # The json module, not orjson: it writes integers of any size, as clients may send them.
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server of its own, seeded with a user, a counter and a leaderboard to read back."""
    server = start_server(tmp_path_factory.mktemp("openapi-fuzz"))
    with server.client() as client:
        events = [
            {"metric": "steps", "user": SEED_USER, "value": i + 1, "ts": 1_000 + i}
            for i in range(50)
        ]
        assert client.post("/api/events", json=events).status_code == 200
        counts = [{"name": "signups", "value": 3, "ts": 1_000}]
        assert client.post("/api/counters", json=counts).status_code == 200
        board = {"id": SEED_BOARD, "metric": "steps", "window": {"t1": 0, "t2": 10_000}}
        assert client.post("/api/leaderboards", json=board).status_code == 201
    yield server
    server.stop()


@pytest.fixture(scope="module")
def reader(fuzz_server: ServerProcess) -> Iterator[httpx.Client]:
    with fuzz_server.client() as client:
        yield client


def fingerprint(client: httpx.Client) -> tuple[Any, ...]:
    """What a refused request must not change: the log position, the event count, and reads
    of the seeded user, counter and leaderboard."""
    stats = client.get("/api/stats").json()
    query = {"users": [SEED_USER], "metrics": ["steps"], "t1": 0, "t2": 10_000}
    sums = client.post("/api/query", json=query).json()
    counter = client.get("/api/counters/signups", params={"t1": 0, "t2": 10_000}).json()
    board = client.get(f"/api/leaderboards/{SEED_BOARD}", params={"top": 5}).json()
    return stats["last_seq"], stats["events"], sums, counter, board


CHECKS = [
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.negative_data_rejection,
]

def native_document() -> dict[str, Any]:
    """The document as the server builds it: it needs the routes, not a running engine.

    (Built here rather than fetched at collection time, before any server runs; a test below
    checks that the server serves exactly this document.)
    """
    from web.app import create_app

    app = create_app(None)  # type: ignore[arg-type]
    return orjson.loads(orjson.dumps(app.extensions["QUART_SCHEMA"].openapi_provider.schema()))


# Seed-compatible operations are listed in the document without models (their bodies are
# the seeds'); tests/fuzz/test_seed_routes.py fuzzes them with the seeds' own shapes.
schema = schemathesis.openapi.from_dict(native_document()).exclude(
    func=lambda ctx: "x-pointspace-seed" in ctx.operation.definition.raw
)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=os.environ.get("POINTSPACE_FUZZ_RANDOM") is None,
)
def test_documented_operations(
    case: schemathesis.Case, fuzz_server: ServerProcess, reader: httpx.Client
) -> None:
    before = fingerprint(reader)
    response = case.call(base_url=fuzz_server.url, timeout=30)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} answered {response.status_code}: "
        f"{response.text[:500]}"
    )
    case.validate_response(response, checks=CHECKS)
    if 400 <= response.status_code < 500:
        after = fingerprint(reader)
        assert after == before, (
            f"refused {case.method} {case.formatted_path} ({response.status_code}) changed "
            f"stored data:\nbefore {before}\nafter  {after}"
        )


def test_the_server_serves_the_fuzzed_document(fuzz_server: ServerProcess) -> None:
    assert httpx.get(f"{fuzz_server.url}/openapi.json").json() == native_document()


def test_the_document_lists_the_native_operations() -> None:
    document = native_document()
    assert document["openapi"].startswith("3.1")
    assert documented_operations(document) == {
        ("/api/events", "POST"),
        ("/api/events/stream", "POST"),
        ("/api/query", "POST"),
        ("/api/breakdown", "POST"),
        ("/api/users/{user}/sums/{metric}", "GET"),
        ("/api/counters", "POST"),
        ("/api/counters/{name}", "GET"),
        ("/api/counters/{name}/breakdown", "GET"),
        ("/api/stats", "GET"),
        ("/api/leaderboards", "POST"),
        ("/api/leaderboards", "GET"),
        ("/api/apis", "GET"),
        ("/api/leaderboards/{board_id}", "GET"),
        ("/api/leaderboards/{board_id}", "DELETE"),
        ("/api/leaderboards/rank", "POST"),
        ("/api/uniques", "POST"),
        ("/api/uniques/{name}", "GET"),
        ("/api/uniques/{name}/breakdown", "GET"),
        ("/api/uniques/query", "POST"),
        ("/api/sensors/{dpu}/placement", "PUT"),
        ("/api/sensors/{dpu}", "GET"),
        ("/api/sensors", "GET"),
        ("/api/doorways", "GET"),
        ("/api/spaces", "GET"),
        ("/api/spaces/{space}", "PUT"),
        ("/api/spaces/{space}", "GET"),
        ("/api/spaces/{space}/count", "GET"),
        ("/api/spaces/{space}/occupancy", "GET"),
        ("/api/dims", "GET"),
        ("/api/dims/{dim}", "GET"),
        ("/api/dims/{dim}/stats/{stat}", "GET"),
        ("/api/admin/snapshot", "POST"),
        ("/api/admin/snapshot", "GET"),
        ("/api/admin/snapshot/export", "GET"),
        ("/healthz", "GET"),
        ("/readyz", "GET"),
        ("/metrics", "GET"),
        ("/ui/api/series", "GET"),
        ("/ui/api/boards", "GET"),
        ("/ui/api/uniques", "GET"),
        ("/ui/api/occupancy", "GET"),
    }


async def test_every_api_route_is_documented(engine: Any) -> None:
    """A route added under /api/ without a place in the document would escape the fuzzing."""
    import re

    from web.app import create_app

    app = create_app(engine)
    documented = documented_operations(await (await app.test_client().get("/openapi.json")).get_json())
    routes = {
        (re.sub(r"<(?:[^:>]*:)?([^>]+)>", r"{\1}", rule.rule), method)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/")
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    assert routes - documented == set()


def documented_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    """The modelled (native) operations; seed-compatible ones carry ``x-pointspace-seed``."""
    return {(path, method.upper()) for path, item in document["paths"].items()
            for method, operation in item.items() if "x-pointspace-seed" not in operation}
