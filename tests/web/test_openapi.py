"""/openapi.json, /docs, and request validation from the same models (web/openapi.py).

The document's operations are fuzzed in tests/fuzz/test_native_openapi.py; here: what the
document says, that /docs needs nothing from outside the server, and the error answers the
models produce.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgpack
import pytest
from conftest import ServerProcess, start_server

from web.openapi import explain


def error_of(r: httpx.Response, status: int = 400) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    return r.json()


def test_the_document_is_openapi_3_1_with_models(client: httpx.Client) -> None:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    document = r.json()
    assert document["openapi"].startswith("3.1")
    assert document["info"]["title"] == "pointspace"
    events = document["paths"]["/api/events"]["post"]
    assert set(events["requestBody"]["content"]) == {
        "application/json",
        "application/msgpack",
        "application/x-ndjson",
    }
    assert events["responses"]["4XX"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"
    }
    event = document["components"]["schemas"]["CounterEvent"]
    assert event["required"] == ["metric", "user", "value", "ts"]
    assert event["additionalProperties"] is False
    assert event["properties"]["ts"]["maximum"] == 253402300799
    parameters = document["paths"]["/api/counters/{name}"]["get"]["parameters"]
    assert {(p["name"], p["in"], p.get("required", False)) for p in parameters} == {
        ("name", "path", True),
        ("t1", "query", True),
        ("t2", "query", True),
    }
    # Seed-compatible routes are listed (path, method, summary, the seed's tag) but not
    # modelled: their bodies and errors are the seeds' own.
    write = document["paths"]["/v1/write"]["post"]
    assert write["tags"] == ["psd"] and write["x-pointspace-seed"] == "psd"
    assert write["summary"] == "One MetricJob in diff-add mode; answers the text `ok`."
    assert "requestBody" not in write and set(write["responses"]) == {"default"}
    assert document["paths"]["/lists/{list_id}/range"]["get"]["tags"] == ["rankdb"]


def test_every_operation_has_a_summary_a_tag_and_no_rst_markup(client: httpx.Client) -> None:
    document = client.get("/openapi.json").json()
    tags = [tag["name"] for tag in document["tags"]]
    assert len(tags) == len(set(tags))
    assert {"events", "leaderboards", "admin", "psd", "rankdb", "operations"} <= set(tags)
    for path, item in document["paths"].items():
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            assert operation.get("summary"), where
            assert len(operation["tags"]) == 1 and operation["tags"][0] in tags, where
            for text in (operation["summary"], operation.get("description", "")):
                assert "``" not in text, (where, text)


def test_docs_page_loads_swagger_ui_from_this_server(client: httpx.Client) -> None:
    r = client.get("/docs")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    # A standards-mode HTML5 document (without the doctype a browser falls into quirks mode).
    assert r.text.startswith("<!DOCTYPE html>\n<html lang=")
    assert r.text.rstrip().endswith("</html>")
    sources = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert sources and all(s.startswith("/") for s in sources), sources
    for source in sources:
        asset = client.get(source)
        assert asset.status_code == 200, source
        assert len(asset.content) > 10_000
    assert client.get("/docs/swagger-ui-bundle.js").headers["content-type"].startswith(
        ("application/javascript", "text/javascript")
    )
    assert client.get("/docs/index.html").status_code == 404
    assert client.get("/docs/../pyproject.toml").status_code == 404


@pytest.mark.parametrize(
    ("path", "field", "fragment"),
    [
        ("/api/counters/c?t1=abc&t2=5", "t1", "expected `int`"),
        ("/api/counters/c?t1=1", "t2", "t2 is required"),
        ("/api/counters/c?t1=-1&t2=5", "t1", ">= 0"),
        ("/api/leaderboards/b1?top=1001", "top", "<= 1000"),
        ("/api/users/u/sums/m?t1=1&t2=2&atid=x", "atid", "expected `int | null`"),
    ],
)
def test_query_strings_are_checked_against_their_model(
    client: httpx.Client, path: str, field: str, fragment: str
) -> None:
    body = error_of(client.get(path))
    assert body["field"] == field
    assert fragment in body["error"]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/query", {"users": [], "metrics": ["m"], "t1": 0, "t2": 1}, "users"),
        ("/api/query", {"users": [1], "metrics": ["m"], "t1": 0}, "t2"),
        ("/api/query", {"users": [1], "metrics": [""], "t1": 0, "t2": 1}, "metrics[0]"),
        ("/api/query", {"users": [1], "metrics": "m", "t1": 0, "t2": 1, "with_atids": 1}, "with_atids"),
        ("/api/breakdown", {"users": [1], "metrics": "m", "t1": 0, "t2": 1, "step": "week"}, "step"),
        ("/api/leaderboards", {"id": "b", "metric": "m", "window": {"t1": 0, "t2": 1}}, "id"),
        ("/api/leaderboards", {"id": "bb", "metric": "m", "window": {"t1": 0, "to": 1}}, "window.to"),
        ("/api/leaderboards/rank", {"metric": "m", "t1": 0, "t2": 1, "top": -1}, "top"),
        ("/api/counters", [{"name": "c", "value": 1}], "counts[0].ts"),
        ("/api/events", {"events": [{"metric": "m", "user": True, "value": 1, "ts": 1}]}, "events[0].user"),
    ],
)
def test_bodies_are_checked_against_their_model(
    client: httpx.Client, path: str, body: object, field: str
) -> None:
    assert error_of(client.post(path, json=body))["field"] == field


def test_msgpack_bodies_are_checked_the_same_way(client: httpx.Client) -> None:
    body = msgpack.packb({"users": [1], "metrics": ["m"], "t1": "0", "t2": 1})
    r = client.post("/api/query", content=body, headers={"Content-Type": "application/msgpack"})
    assert error_of(r)["field"] == "t1"


def test_integral_floats_are_integers_but_only_exact_ones(client: httpx.Client) -> None:
    r = client.post("/api/query", json={"users": [1], "metrics": ["m"], "t1": 0.0, "t2": 10.0})
    assert r.status_code == 200, r.text
    r = client.post("/api/query", json={"users": [1], "metrics": ["m"], "t1": 0.5, "t2": 10})
    assert error_of(r)["field"] == "t1"


def test_ndjson_is_refused_where_the_document_does_not_offer_it(client: httpx.Client) -> None:
    r = client.post(
        "/api/query", content=b'{"users": [1]}\n', headers={"Content-Type": "application/x-ndjson"}
    )
    # Refused at the edge (web/edge.py) by the types the route takes, before the body is read.
    body = error_of(r, 415)
    assert body["field"] == "Content-Type" and "is not accepted here" in body["error"]


def test_explain_turns_msgspec_paths_into_fields() -> None:
    assert explain("Expected `int`, got `str` - at `$.events[3].ts`", "body") == (
        "events[3].ts: expected `int`, got `str`",
        "events[3].ts",
    )
    assert explain("Expected `object`, got `int`", "body") == (
        "body: expected `object`, got `int`",
        "body",
    )
    assert explain("Object missing required field `ts` - at `$[0]`", "counts") == (
        "counts[0].ts is required",
        "counts[0].ts",
    )


def test_explain_quotes_only_the_start_of_what_msgspec_echoes() -> None:
    # Security issue, finding 9: msgspec quotes an unknown key and an invalid enum value
    # whole; the error quotes their start, and the key's regex parse no longer takes 0.5 s.
    import time

    from engine.errors import InvalidInput
    from web.api import models as api_models
    from web.openapi import check

    key = "k" * 10_000_000
    start = time.perf_counter()
    message, field = explain(f"Object contains unknown field `{key}` - at `$[0]`", "body")
    assert time.perf_counter() - start < 0.1
    assert field == f"body[0].{'k' * 64}... (10000000 characters)"
    assert message == f"{field} is not a known field"
    step = "w" * 10_000_000
    with pytest.raises(InvalidInput) as info:
        body = {"users": [1], "metrics": ["m"], "t1": 0, "t2": 1, "step": step}
        check(body, api_models.BreakdownQuery, "body")
    assert str(info.value) == f"step: invalid enum value (was '{'w' * 80}'... (10000000 characters))"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    keys: Path = tmp_path_factory.mktemp("keys")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (keys / "k.pub").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    server = start_server(tmp_path_factory.mktemp("guarded"), extra=["--jwt-key-dir", str(keys)])
    yield server
    server.stop()


def test_with_jwt_the_document_and_docs_stay_open_and_declare_bearer(guarded: ServerProcess) -> None:
    with guarded.client() as client:
        document = client.get("/openapi.json").json()
        assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        assert document["security"] == [{"bearer": []}]
        assert client.get("/docs").status_code == 200
        assert client.get("/docs/swagger-ui.css").status_code == 200
        assert client.get("/api/stats").status_code == 401


def test_admin_answers_of_a_durable_server_fit_their_models(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The fuzzed server runs in memory; the snapshot answers of a durable one are checked
    here against the same models the document gives for them."""
    import msgspec

    from snapshots.store import SnapshotRecord
    from web.api import models as api_models

    work = tmp_path_factory.mktemp("durable")
    server = start_server(work, data_dir=work / "data")
    try:
        with server.client() as client:
            client.post("/api/events", json=[{"metric": "m", "user": 1, "value": 1, "ts": 5}])
            written = client.post("/api/admin/snapshot")
            assert written.status_code == 200, written.text
            msgspec.convert(written.json(), SnapshotRecord)
            status = msgspec.convert(
                client.get("/api/admin/snapshot").json(), api_models.SnapshotStatus
            )
            assert status.log is not None and status.last is not None
            export = client.get("/api/admin/snapshot/export")
            assert export.headers["content-type"] == "application/octet-stream"
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/events", [{"metric": "m", "user": 1, "value": 1, "ts": 5, "aid": 3.0, "ts1": 4.0}]),
        ("/api/query", {"users": [1], "metrics": ["m"], "t1": 0, "t2": 10, "atid": 0.0}),
        ("/api/breakdown", {"users": [1], "metrics": "m", "t1": 0, "t2": 119, "step": 60.0}),
    ],
)
def test_integral_floats_are_accepted_in_optional_and_union_fields(
    client: httpx.Client, path: str, body: object
) -> None:
    r = client.post(path, json=body)
    assert r.status_code == 200, r.text


def test_request_bodies_refuse_unknown_fields(client: httpx.Client) -> None:
    body = {"users": [1], "metrics": ["m"], "t1": 0, "t2": 1, "with_atid": True}
    assert error_of(client.post("/api/query", json=body))["field"] == "with_atid"


def test_an_oversized_batch_is_413_before_its_items_are_checked(client: httpx.Client) -> None:
    events = [{"metric": "m", "user": 1, "value": 1, "ts": 5}] * 100_000 + [{"bad": 1}]
    body = error_of(client.post("/api/events", json={"events": events}), 413)
    assert body["field"] == "events"


def test_errors_quote_the_value_at_fault(client: httpx.Client) -> None:
    r = client.post("/api/events", json=[{"metric": "m", "user": 1, "value": 1, "ts": -5}])
    assert error_of(r)["error"] == "body[0].ts: expected `int` >= 0 (was -5)"


def test_a_list_id_with_a_trailing_newline_is_refused(client: httpx.Client) -> None:
    body = {"id": "b1\n", "metric": "m", "window": {"t1": 0, "t2": 1}}
    assert error_of(client.post("/api/leaderboards", json=body))["field"] == "id"
