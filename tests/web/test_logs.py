"""Logs (issue 16): every line a JSON object in JSON mode (ours, Hypercorn's, the access log,
recovery), one line per event, and recovery progress with totals and rates."""

from __future__ import annotations

import json
import logging
import re

import httpx
from conftest import start_server

from engine.engine import Engine


def test_logs_every_line_is_json_with_one_access_line_per_request(tmp_path):
    server = start_server(tmp_path, data_dir=tmp_path / "d", extra=["--access-log"])
    try:
        with server.client() as client:
            bad = [{"metric": "steps", "user": 1, "value": 1, "ts": -5}]
            assert client.post("/api/events", json=bad, headers={"User-Agent": "t/1"}).status_code == 400
            assert client.get("/healthz?probe=1").status_code == 200
    finally:
        assert server.stop() == 0
    lines = server.log().splitlines()
    entries = [json.loads(line) for line in lines]  # every line parses
    assert all({"ts", "level", "logger", "message"} <= set(e) for e in entries)
    access = [e for e in entries if e["logger"] == "pointspace.access"]
    ours = [e for e in access if e["path"] in ("/api/events", "/healthz?probe=1")]
    assert [(e["method"], e["path"], e["status"]) for e in ours] == [
        ("POST", "/api/events", 400), ("GET", "/healthz?probe=1", 200)]
    assert ours[0]["bytes"] > 0 and ours[0]["user_agent"] == "t/1" and ours[0]["duration_ms"] >= 0
    assert any(e["logger"] == "pointspace.recovery" and e["message"] == f"recovery: opening {tmp_path / 'd'}"
               for e in entries)
    listening = [e for e in entries if "listening on" in e["message"]]
    assert len(listening) == 1 and listening[0]["message"].startswith(f"pointspace {_version()} listening on http://127.0.0.1:")


def test_logs_text_mode_logs_a_refused_request_once(tmp_path):
    server = start_server(tmp_path, extra=["--access-log", "--log-format", "text"])
    try:
        bad = [{"metric": "steps", "user": 1, "value": 1, "ts": -5}]
        assert httpx.post(f"{server.url}/api/events", json=bad).status_code == 400
    finally:
        server.stop()
    log = server.log()
    assert len(re.findall(r'"POST /api/events HTTP/1\.1" 400 ', log)) == 1, log
    assert not any(line.startswith("{") for line in log.splitlines())


async def test_logs_recovery_reports_replay_progress_with_totals(tmp_path, monkeypatch, caplog):
    import snapshots.store

    data_dir = tmp_path / "d"
    async with Engine.open(data_dir, fsync="no") as engine:
        for i in range(600):
            await engine.ingest([{"metric": "m", "user": i % 7, "value": 1, "ts": 1_000 + i}])
        # No final snapshot: recovery must replay the whole log.
        engine.store.close_engine = _no_final_snapshot  # type: ignore[method-assign]
    monkeypatch.setattr(snapshots.store, "PROGRESS_INTERVAL_S", 0.0)
    with caplog.at_level(logging.INFO, logger="pointspace.recovery"):
        async with Engine.open(data_dir) as engine:
            assert engine.store.recovery.replayed_records == 600
    messages = [r.getMessage() for r in caplog.records if r.name == "pointspace.recovery"]
    assert "recovery: replaying 600 log records (seq 1..600)" in messages
    progress = [m for m in messages if re.fullmatch(
        r"recovery: replayed [\d,]+ of 600 log records \(\d+%\), [\d,]+ records/s", m)]
    assert progress and progress[-1].startswith("recovery: replayed 512 of 600 log records (85%)")
    assert re.fullmatch(r"recovery: replayed 600 log records \(seq 1\.\.600\) in [\d.]+ s", messages[-1])


async def _no_final_snapshot(engine: object) -> None:
    return None


def _version() -> str:
    from web.version import VERSION

    return VERSION
