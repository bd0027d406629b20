"""End-to-end tests of /metrics, /healthz and /readyz (web/metrics.py) against a real server.

Metrics are parsed with prometheus-client's own text parser. The module's in-memory server is
shared, so tests compare values before and after their own requests rather than absolutes.
"""

from __future__ import annotations

import itertools
import re

import httpx
from conftest import start_server
from prometheus_client.parser import text_string_to_metric_families

_ids = itertools.count(900_000)


def samples(client: httpx.Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape: (sample name, labels) -> value."""
    r = client.get("/metrics")
    assert r.status_code == 200, r.text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(scrape: dict, name: str, **labels: str) -> float:
    """One sample's value, 0.0 when it is absent (a label child not created yet)."""
    return scrape.get((name, frozenset(labels.items())), 0.0)


def label_values(scrape: dict, name: str, label: str) -> set[str]:
    return {dict(key[1])[label] for key in scrape if key[0] == name and label in dict(key[1])}


def test_healthz_answers_alive(client):
    r = client.get("/healthz")
    from web.version import VERSION

    assert (r.status_code, r.json()) == (200, {"status": "alive", "version": VERSION})
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", VERSION)  # pyproject's, as installed


def test_metrics_has_build_info_with_the_version(client):
    from web.version import VERSION

    text = client.get("/metrics").text
    assert re.search(
        rf'^pointspace_build_info\{{python="[0-9.]+",version="{re.escape(VERSION)}"\}} 1\.0$', text, re.M
    ), text[:2000]


def test_readyz_in_memory_is_ready_without_recovery(client):
    r = client.get("/readyz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ready"
    assert body["durable"] is False
    assert body["recovery"] is None


def test_metrics_content_type_and_engine_gauges(client):
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    scrape = samples(client)
    for name in (
        "pointspace_events_ingested_total",
        "pointspace_commands_applied_total",
        "pointspace_entities",
        "pointspace_live_actors",
        "pointspace_mailbox_depth",
        "pointspace_mailbox_depth_peak",
        "pointspace_actor_failures_total",
        "pointspace_actor_direct_reads_total",
        "pointspace_log_last_seq",
    ):
        assert (name, frozenset()) in scrape, name
    assert value(scrape, "pointspace_ready") == 1.0
    # An in-memory server has no log files and no snapshots.
    assert not any(key[0].startswith(("pointspace_log_fsyncs", "pointspace_snapshot_")) for key in scrape)


def test_metrics_request_counter_and_histogram_move(client):
    before = samples(client)
    for _ in range(3):
        assert client.get("/healthz").status_code == 200
    after = samples(client)
    labels = {"route": "/healthz", "method": "GET", "status": "200"}
    assert value(after, "pointspace_http_requests_total", **labels) - value(
        before, "pointspace_http_requests_total", **labels
    ) == 3
    count = "pointspace_http_request_duration_seconds_count"
    assert value(after, count, route="/healthz") - value(before, count, route="/healthz") == 3
    inf = value(after, "pointspace_http_request_duration_seconds_bucket", route="/healthz", le="+Inf")
    assert inf == value(after, count, route="/healthz")


def test_metrics_route_label_is_the_rule_not_the_path(client):
    for path in ("/lists/abc/elements/5", "/lists/abc/elements/5", "/lists/xyz/elements/77"):
        client.get(path)
    client.get("/no/such/route/123")
    client.get("/no/such/route/456")
    scrape = samples(client)
    routes = label_values(scrape, "pointspace_http_requests_total", "route")
    assert "/lists/<list_id>/elements/<element_id>" in routes
    assert "unmatched" in routes
    assert not [r for r in routes if "abc" in r or "xyz" in r or "/no/such" in r]
    statuses = {
        dict(key[1])["status"]
        for key in scrape
        if key[0] == "pointspace_http_requests_total"
        and dict(key[1])["route"] == "/lists/<list_id>/elements/<element_id>"
    }
    assert statuses  # one status or more, all under the one rule
    assert value(scrape, "pointspace_http_requests_total", route="unmatched", method="GET", status="404") >= 2


def test_metrics_events_ingested_increases_by_the_batch_size(client):
    user = next(_ids)
    before = samples(client)
    events = [{"metric": "steps", "user": user, "value": i + 1, "ts": 1_000 + i} for i in range(7)]
    r = client.post("/api/events", json=events)
    assert r.json() == {"applied": 7}
    after = samples(client)
    name = "pointspace_events_ingested_total"
    assert value(after, name) - value(before, name) == 7
    commands = "pointspace_commands_applied_total"
    assert value(after, commands) - value(before, commands) == 1
    assert value(after, "pointspace_log_last_seq") > value(before, "pointspace_log_last_seq")
    assert value(after, "pointspace_entities") >= 1


def test_metrics_durable_server_exposes_log_and_snapshot_figures(tmp_path):
    proc = start_server(tmp_path, data_dir=tmp_path / "d")
    try:
        with proc.client() as c:
            ready = c.get("/readyz")
            assert ready.status_code == 200
            assert ready.json()["status"] == "ready"
            assert ready.json()["durable"] is True
            assert set(ready.json()["recovery"]) >= {"replayed_records", "seconds"}

            events = [{"metric": "steps", "user": 1, "value": 1, "ts": 1_000 + i} for i in range(5)]
            assert c.post("/api/events", json=events).json() == {"applied": 5}
            before = samples(c)
            assert not any(key[0].startswith("pointspace_snapshot_") for key in before)
            assert value(before, "pointspace_log_segments") >= 1
            assert value(before, "pointspace_log_broken") == 0

            snap = c.post("/api/admin/snapshot")
            assert snap.status_code == 200, snap.text
            after = samples(c)
            assert value(after, "pointspace_snapshot_size_bytes") == snap.json()["bytes"] > 0
            assert value(after, "pointspace_snapshot_items") == snap.json()["items"] >= 1
            assert 0 <= value(after, "pointspace_snapshot_age_seconds") < 60
            assert value(after, "pointspace_snapshot_duration_seconds") >= 0
            # Writing a snapshot syncs the log first, so everything logged is durable.
            assert value(after, "pointspace_log_durable_seq") == value(after, "pointspace_log_last_seq") >= 1
            assert value(after, "pointspace_log_fsyncs_total") >= 1
            assert value(after, "pointspace_log_written_bytes_total") > 0
            assert ("pointspace_log_last_fsync_seconds", frozenset()) in after
            assert label_values(after, "pointspace_log_info", "policy")
    finally:
        proc.stop()
