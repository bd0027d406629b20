"""Density over HTTP: the seed's ``/send`` and ``/count``, the batch route, the native sensor
and space routes, the CSV loader against a real server, and restarts that keep every count.

Every test talks to a real ``pointspace serve`` process on loopback.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio
from conftest import ROOT, ServerProcess, start_server
from density_sample import (
    SAMPLE,
    SAMPLE_END,
    SEED_COUNT_A,
    SEED_PLACEMENTS,
    TWO_SPACE_PLACEMENTS,
    sample_rows,
)

from engine.density import MAX_AHEAD_MS, DensityIngest, iso_ms, parse_instant
from engine.engine import Engine

#: Counts of the sample with TWO_SPACE_PLACEMENTS (tests/engine/test_density.py derives them).
FINAL = {"A": 11, "B": 8}


def place_seed(client: httpx.Client, prefix: str = "", placements: dict[str, Any] | None = None) -> None:
    for dpu, body in (TWO_SPACE_PLACEMENTS if placements is None else placements).items():
        spaces = {prefix + name: sign for name, sign in body["spaces"].items()}
        answer = client.put(f"/api/sensors/{prefix}{dpu}/placement", json={**body, "spaces": spaces})
        assert answer.status_code == 200, answer.text


def rows_for(prefix: str) -> list[dict[str, Any]]:
    return [{**row, "dpu_id": prefix + row["dpu_id"]} for row in sample_rows()]


def count(client: httpx.Client, space: str, timestamp: str | None = None) -> Any:
    params = {"space": space} | ({"timestamp": timestamp} if timestamp else {})
    answer = client.get("/count", params=params)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "OK"
    return body["count"]


############################################################################################
# The seed's routes


def test_send_and_count_as_the_seed(client: httpx.Client) -> None:
    place_seed(client, "s1-")
    for row in sample_rows()[:40]:
        answer = client.post("/send", json={**row, "dpu_id": "s1-" + row["dpu_id"]})
        assert answer.json() == {"status": "OK"}
    # The 13 first rows are 423's (5 in, 8 out of A, the reverse for B), then 27 of 283's
    # (25 in, 2 out of A).
    assert count(client, "s1-A") == (5 - 8) + (25 - 2)
    assert count(client, "s1-B") == 8 - 5
    assert count(client, "s1-A", "2018-02-24T17:24:25.493Z") == 1  # 423: +1 -1 +1
    assert count(client, "s1-A", "2018-02-24T17:24:25.492Z") == 0
    assert count(client, "s1-A", "2018-02-24 17:24:25.493z") == 1  # the seed README's form
    assert count(client, "s1-nowhere") is None


def test_direction_as_integer_or_string(client: httpx.Client) -> None:
    client.put("/api/sensors/s2/placement", json={"installed": 0, "doorway": "d", "spaces": {"s2-A": 1}})
    for direction in (1, "1", "+1", -1, "-1", 1):
        body = {"timestamp": "2020-01-01T00:00:00.000Z", "direction": direction, "dpu_id": "s2"}
        assert client.post("/send", json=body).status_code == 200
    assert count(client, "s2-A") == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"timestamp": "2018-02-24T08:45:21.893Z", "direction": "2", "dpu_id": "s3"}, "direction"),
        ({"timestamp": "2018-02-24T08:45:21.893Z", "direction": 0, "dpu_id": "s3"}, "direction"),
        ({"timestamp": "not a time", "direction": 1, "dpu_id": "s3"}, "timestamp"),
        ({"timestamp": 1e306, "direction": 1, "dpu_id": "s3"}, "timestamp"),  # was a 500
        ({"timestamp": "9999-12-31T23:59:59Z", "direction": 1, "dpu_id": "s3"}, "timestamp"),
        ({"direction": 1, "dpu_id": "s3"}, "timestamp"),
        ({"timestamp": "2018-02-24T08:45:21.893Z", "dpu_id": "s3"}, "direction"),
        ({"timestamp": "2018-02-24T08:45:21.893Z", "direction": 1}, "dpu_id"),
        ([1, 2], "body"),
        ("a string", "body"),
    ],
)
def test_send_refuses_bad_input_and_stores_nothing(client: httpx.Client, body: Any, field: str) -> None:
    client.put("/api/sensors/s3/placement", json={"installed": 0, "doorway": "d", "spaces": {"s3-A": 1}})
    before = client.get("/api/sensors/s3").json()
    answer = client.post("/send", json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["field"] == field
    assert field in answer.json()["error"]
    assert client.get("/api/sensors/s3").json() == before
    assert count(client, "s3-A") == 0


def test_send_refuses_a_body_that_is_not_json(client: httpx.Client) -> None:
    answer = client.post("/send", content=b"{nope", headers={"Content-Type": "application/json"})
    assert answer.status_code == 400 and answer.json()["field"] == "body"
    answer = client.post("/send", content=b"{}", headers={"Content-Type": "text/plain"})
    assert answer.status_code == 415


def test_count_refuses_bad_input(client: httpx.Client) -> None:
    answer = client.get("/count")
    assert answer.status_code == 400 and answer.json()["field"] == "space"
    answer = client.get("/count", params={"space": "A", "timestamp": "tomorrow"})
    assert answer.status_code == 400 and answer.json()["field"] == "timestamp"


def test_instants_are_read_by_one_rule_on_both_count_routes(client: httpx.Client) -> None:
    """``/count?timestamp=`` refused Unix seconds its own message offered, and "20180224" was
    2018-02-24 there but 1970-08-22 on ``/api/spaces/../count``."""
    place_seed(client, "i-")
    client.post("/send/batch", json=rows_for("i-")[:13]).raise_for_status()  # 423: +1 -1 +1 ...
    assert count(client, "i-A", "1519493065.493") == count(client, "i-A", "2018-02-24T17:24:25.493Z") == 1
    assert count(client, "i-A", "1519493065") == 0
    native = client.get("/api/spaces/i-A/count", params={"at": "1519493065.493"}).json()
    assert native["count"] == 1 and native["at_ms"] == 1519493065493
    for text in ("20180224", "1519493065493"):
        seed = client.get("/count", params={"space": "i-A", "timestamp": text})
        ours = client.get("/api/spaces/i-A/count", params={"at": text})
        assert seed.status_code == ours.status_code == 400, (seed.text, ours.text)
        assert seed.json()["field"] == "timestamp" and ours.json()["field"] == "at"
        assert seed.json()["error"].replace("timestamp", "at", 1) == ours.json()["error"]
        assert "takes 10 digits" in seed.json()["error"]


def test_direction_as_an_integral_float(client: httpx.Client) -> None:
    client.put("/api/sensors/f1/placement", json={"installed": 0, "doorway": "d", "spaces": {"f1-A": 1}})
    for direction in (1.0, 1.0, -1.0):
        body = {"timestamp": "2020-01-01T00:00:00.000Z", "direction": direction, "dpu_id": "f1"}
        answer = client.post("/send", json=body)
        assert answer.status_code == 200, answer.text
    for direction in ("1.0", 1.5):
        body = {"timestamp": "2020-01-01T00:00:00.000Z", "direction": direction, "dpu_id": "f1"}
        answer = client.post("/send", json=body)
        assert answer.status_code == 400 and answer.json()["field"] == "direction"
    assert count(client, "f1-A") == 1


def test_an_unknown_space_is_the_same_404_everywhere(client: httpx.Client) -> None:
    errors = [
        client.get("/api/spaces/u-nowhere"),
        client.get("/api/spaces/u-nowhere/count"),
        client.get("/api/spaces/u-nowhere/occupancy", params={"t1": 0, "t2": 3600}),
        client.get("/ui/api/occupancy", params={"space": "u-nowhere"}),
    ]
    assert [e.status_code for e in errors] == [404] * 4
    assert len({(e.json()["error"], e.json()["field"]) for e in errors}) == 1, [e.json() for e in errors]


def test_the_seed_table_through_the_placement_route(client: httpx.Client) -> None:
    """423 has +1 and -1 rows for A: they cancel, so its placement names no space."""
    place_seed(client, "t-", SEED_PLACEMENTS)
    assert client.get("/api/sensors/t-423").json()["current"]["spaces"] == {}
    client.post("/send/batch", json=rows_for("t-")).raise_for_status()
    assert count(client, "t-A", SAMPLE_END) == SEED_COUNT_A == count(client, "t-A")
    zero = client.put("/api/sensors/t-423/placement", json={**SEED_PLACEMENTS["423"], "spaces": {"t-A": 0}})
    assert zero.status_code == 400 and zero.json()["field"].startswith("spaces"), zero.text


def test_batch_route_takes_arrays_ndjson_and_refuses_whole(client: httpx.Client) -> None:
    place_seed(client, "b-")
    rows = rows_for("b-")
    bad = [*rows[:10], {**rows[10], "direction": "sideways"}]
    answer = client.post("/send/batch", json=bad)
    assert answer.status_code == 400
    assert answer.json()["field"] == "body[10].direction"
    assert count(client, "b-A") == 0  # nothing of the batch was stored
    answer = client.post("/send/batch", json=rows[:300])
    assert answer.json() == {"status": "OK", "received": 300, "new": 300, "duplicates": 0}
    ndjson = b"".join(orjson.dumps(row) + b"\n" for row in rows[300:])
    answer = client.post("/send/batch", content=ndjson, headers={"Content-Type": "application/x-ndjson"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["new"] == len(rows) - 300
    assert {s: count(client, "b-" + s) for s in FINAL} == FINAL
    with_ids = [{**row, "event_id": f"e{i}"} for i, row in enumerate(rows[:5])]
    assert client.post("/send/batch", json={"events": with_ids}).json()["new"] == 5
    assert client.post("/send/batch", json={"events": with_ids}).json()["duplicates"] == 5


############################################################################################
# Native routes


def test_placements_oldest_first_and_listings(client: httpx.Client) -> None:
    assert client.put("/api/sensors/n1/placement", json={
        "installed": "2021-06-01T00:00:00Z", "doorway": "n1-Y", "spaces": {"n1-B": 1}}).status_code == 200
    answer = client.put("/api/sensors/n1/placement", json={
        "installed": 1609459200, "doorway": "n1-X", "spaces": {"n1-A": 1, "n1-B": -1}})
    sensor = answer.json()
    assert [p["doorway"] for p in sensor["placements"]] == ["n1-X", "n1-Y"]
    assert sensor["current"]["doorway"] == "n1-Y"
    assert client.get("/api/sensors/n1").json() == sensor
    assert "n1" in [s["dpu"] for s in client.get("/api/sensors").json()["sensors"]]
    assert {"n1-A", "n1-B"} <= set(client.get("/api/spaces").json()["spaces"])
    doorways = {d["doorway"]: d for d in client.get("/api/doorways").json()["doorways"]}
    assert doorways["n1-Y"]["sensors"] == ["n1"] and doorways["n1-X"]["sensors"] == []
    assert client.get("/api/sensors/n-unknown").status_code == 404
    assert client.get("/api/spaces/n-unknown").status_code == 404
    bad = client.put("/api/sensors/n1/placement", json={"installed": 0, "doorway": "d", "spaces": {"A": 2}})
    assert bad.status_code == 400 and bad.json()["field"].startswith("spaces")
    assert client.get("/api/sensors/n1").json() == sensor


def test_correction_over_http_recounts_history(client: httpx.Client) -> None:
    place_seed(client, "c-")
    client.post("/send/batch", json=rows_for("c-")).raise_for_status()
    at = "2018-03-01T00:00:00Z"
    before = count(client, "c-A", at)
    # 283 was really over a doorway into C from the start: A loses it, C gains it.
    client.put("/api/sensors/c-283/placement", json={
        "installed": "2018-01-01T00:00:00Z", "doorway": "X", "spaces": {"c-C": 1}}).raise_for_status()
    assert count(client, "c-A", at) + count(client, "c-C", at) == before
    assert count(client, "c-A") == FINAL["A"] - 19 and count(client, "c-C") == 19


def test_count_and_occupancy_routes(client: httpx.Client) -> None:
    place_seed(client, "o-")
    client.post("/send/batch", json=rows_for("o-")).raise_for_status()
    answer = client.get("/api/spaces/o-A/count", params={"at": "2018-02-24T17:24:25.493Z"})
    assert answer.json()["count"] == 1 and answer.json()["at_ms"] == 1519493065493
    assert client.get("/api/spaces/o-A/count", params={"at": "1519493065.492"}).json()["count"] == 0
    assert client.get("/api/spaces/o-A/count", params={"at": "x"}).status_code == 400
    answer = client.get("/api/spaces/o-A/occupancy", params={
        "t1": 1519430400, "t2": 1520035199, "step": "day", "tz": "Europe/Oslo"})
    body = answer.json()
    assert answer.status_code == 200, body
    assert len(body["periods"]) == len(body["end"]) == len(body["peak"]) == len(body["low"]) == 8
    assert all(lo <= end <= hi for lo, end, hi in zip(body["low"], body["end"], body["peak"], strict=True))
    assert body["end"][-1] == FINAL["A"]
    answer = client.get("/api/spaces/o-A/occupancy", params={"t1": 5, "t2": 1, "step": "day"})
    assert answer.status_code == 400
    assert client.put("/api/spaces/o-A", json={"nightly_reset": True, "tz": "Mars/Base"}).status_code == 400
    view = client.put("/api/spaces/o-A", json={"nightly_reset": True, "tz": "Europe/Oslo"}).json()
    assert view["nightly_reset"] is True and view["count"] == 0  # years after the last crossing


############################################################################################
# The ends of time (red-team findings)


TOKYO = {"nightly_reset": True, "tz": "Asia/Tokyo"}


@pytest.mark.parametrize("options_first", [False, True])
def test_a_crossing_dated_9999_is_refused_and_the_space_stays_readable(server: ServerProcess,
                                                                       client: httpx.Client,
                                                                       options_first: bool) -> None:
    """HIGH: placing d9 for Q, ``POST /send`` dated 9999-12-31T23:59:59Z, then ``nightly_reset``
    in Asia/Tokyo answered 500 (stored anyway), and every read of Q answered 500 after."""
    space = f"Q9-{options_first}"
    client.put(f"/api/sensors/d9-{options_first}/placement",
               json={"installed": 0, "doorway": "D9", "spaces": {space: 1}}).raise_for_status()
    if options_first:
        assert client.put(f"/api/spaces/{space}", json=TOKYO).status_code == 200
    answer = client.post("/send", json={"timestamp": "9999-12-31T23:59:59Z", "direction": "1",
                                        "dpu_id": f"d9-{options_first}"})
    assert answer.status_code == 400, answer.text
    assert answer.json()["field"] == "timestamp"
    assert "must not lie more than 10 minutes ahead of this server's clock" in answer.json()["error"]
    now = iso_ms(int(time.time() * 1000))
    batch = client.post("/send/batch", json=[
        {"timestamp": now, "direction": 1, "dpu_id": f"d9-{options_first}"},
        {"timestamp": "9999-12-31T23:59:59Z", "direction": 1, "dpu_id": f"d9-{options_first}"}])
    assert batch.status_code == 400 and batch.json()["field"] == "body[1].timestamp"
    assert client.get(f"/api/sensors/d9-{options_first}").json()["events"] == 0
    for tz in ("Asia/Tokyo", "Pacific/Kiritimati", "America/New_York"):
        answer = client.put(f"/api/spaces/{space}", json={"nightly_reset": True, "tz": tz})
        assert answer.status_code == 200 and answer.json()["count"] == 0, answer.text
    assert client.get(f"/api/spaces/{space}").status_code == 200
    assert count(client, space) == 0
    assert "OverflowError" not in server.log()


def test_a_crossing_dated_9999_from_an_old_log_reads_after_every_restart(
    durable: tuple[Path, list[ServerProcess]], tmp_path: Path
) -> None:
    """A log written before the bound may hold such a crossing: replayed after a clean stop and
    after SIGKILL, every read of a space resetting at Tokyo's midnight answers 200."""
    data_dir, started = durable
    late = parse_instant("9999-12-31T10:00:00Z", "t")  # before Tokyo's last midnight of 9999

    async def an_older_server_wrote() -> None:
        async with Engine.open(data_dir) as engine:
            await engine.place_sensor("d9", {"installed": 0, "doorway": "D9", "spaces": {"Q": 1}})
            await engine.submit(DensityIngest(events=[
                ("d9", parse_instant("2018-02-24T08:45:21.893Z", "t"), 1, None),
                ("d9", late, 1, None), ("d9", parse_instant("9999-12-31T23:59:59Z", "t"), 1, None)]))

    trio.run(an_older_server_wrote)
    for stop in (signal.SIGTERM, signal.SIGKILL, signal.SIGKILL):
        served = start_server(tmp_path, data_dir=data_dir, extra=["--fsync", "always"])
        started.append(served)
        with served.client() as client:
            view = client.put("/api/spaces/Q", json=TOKYO)
            assert view.status_code == 200, view.text
            assert view.json()["count"] == 0 and view.json()["last_event"] == "9999-12-31T23:59:59.000Z"
            assert client.get("/api/spaces/Q").json()["count"] == 0
            assert count(client, "Q") == 0  # now is now, not 9999
            assert count(client, "Q", "9999-12-31T23:59:59Z") == 1  # the 10:00 one was reset
            assert count(client, "Q", "9999-12-31T14:59:59Z") == 1
            occupancy = client.get("/api/spaces/Q/occupancy", params={
                "t1": 253402041600, "t2": 253402300799, "step": "day", "tz": "Asia/Tokyo"})
            assert occupancy.status_code == 200, occupancy.text
            assert occupancy.json()["end"][-1] == 1
        assert "OverflowError" not in served.log()
        served.stop(stop)


def test_a_crossing_ahead_of_now_counts_from_its_own_time(client: httpx.Client) -> None:
    """LOW: ``/count?space=`` counted at ``max(now, latest crossing)``; now is now."""
    client.put("/api/sensors/fut/placement", json={"installed": 0, "doorway": "F", "spaces": {"fut-A": 1}})
    now = int(time.time() * 1000)
    ahead = iso_ms(now + MAX_AHEAD_MS // 2)
    for timestamp in (iso_ms(now - 60_000), ahead):
        client.post("/send", json={"timestamp": timestamp, "direction": 1, "dpu_id": "fut"}).raise_for_status()
    assert count(client, "fut-A") == 1
    assert client.get("/api/spaces/fut-A").json()["count"] == 1
    assert count(client, "fut-A", ahead) == 2


############################################################################################
# The loader, as a process, against this server


def run_loader(*args: str) -> subprocess.CompletedProcess[str]:
    """``pointspace density load ...`` as a user runs it (through the command group)."""
    return subprocess.run(
        [sys.executable, "-m", "web.serving.cli", "density", "load", *args], cwd=ROOT,
        capture_output=True, text=True, timeout=120,
    )


def prefixed_sample(tmp_path: Path, prefix: str) -> Path:
    data = tmp_path / f"{prefix}sample.csv"
    data.write_text(SAMPLE.read_text().replace(',"283"', f',"{prefix}283"').replace(',"423"', f',"{prefix}423"'))
    return data


def test_loader_counts_every_row_and_gives_the_seeds_count(server: ServerProcess, client: httpx.Client,
                                                           tmp_path: Path) -> None:
    """The seed's loader posted all 563 rows (it "does no de-duplication"); with the seed's
    own placement table (423 counts nothing for A) space A ends at the seed's 19."""
    place_seed(client, "ls-", SEED_PLACEMENTS)
    data = prefixed_sample(tmp_path, "ls-")
    first = run_loader(str(data), "--url", server.url)
    assert first.returncode == 0, first.stderr
    assert "563 rows" in first.stdout and "563 new events, 0 already stored" in first.stdout
    assert count(client, "ls-A") == count(client, "ls-A", SAMPLE_END) == SEED_COUNT_A
    again = run_loader(str(data), "--url", server.url, "--batch", "100")
    assert again.returncode == 0 and "0 new events, 563 already stored" in again.stdout
    # The first of each identical group keeps the bare id, so a merging run adds nothing.
    merged = run_loader(str(data), "--url", server.url, "--merge-identical")
    assert merged.returncode == 0 and "0 new events, 563 already stored" in merged.stdout
    assert count(client, "ls-A") == SEED_COUNT_A


def test_loader_merge_identical_then_default_adds_only_the_repeats(server: ServerProcess, client: httpx.Client,
                                                                   tmp_path: Path) -> None:
    place_seed(client, "lm-", SEED_PLACEMENTS)
    data = prefixed_sample(tmp_path, "lm-")
    merged = run_loader(str(data), "--url", server.url, "--merge-identical")
    assert merged.returncode == 0, merged.stderr
    assert "530 new events, 33 already stored" in merged.stdout
    assert count(client, "lm-A") == SEED_COUNT_A - 13  # the 33 repeats: 13 more +1 than -1
    default = run_loader(str(data), "--url", server.url)
    assert default.returncode == 0 and "33 new events, 530 already stored" in default.stdout
    assert count(client, "lm-A") == SEED_COUNT_A
    help_text = run_loader("--help").stdout
    assert "--merge-identical" in help_text and "--keep-identical" not in help_text


def test_loader_into_a_data_dir_then_served(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    loaded = run_loader(str(SAMPLE), "--data-dir", str(data_dir))
    assert loaded.returncode == 0, loaded.stderr
    assert "563 new events" in loaded.stdout
    served = start_server(tmp_path, data_dir=data_dir)
    try:
        with served.client() as client:
            place_seed(client, "", SEED_PLACEMENTS)  # placed after: the past is re-counted
            assert count(client, "A", SAMPLE_END) == SEED_COUNT_A
            # A data directory a server holds: one Error: line naming it, exit 1.
            busy = run_loader(str(SAMPLE), "--data-dir", str(data_dir))
            assert busy.returncode == 1, busy.stderr
            errors = [line for line in busy.stderr.splitlines() if line.startswith("Error:")]
            assert len(errors) == 1 and busy.stderr.rstrip().endswith(errors[0]), busy.stderr
            assert errors[0].startswith("Error: data directory ") and "in use by" in errors[0]
    finally:
        served.stop(signal.SIGTERM)


def test_loader_reports_the_bad_line_and_loads_nothing(server: ServerProcess, tmp_path: Path) -> None:
    data = tmp_path / "bad.csv"
    data.write_text('"timestamp","direction","dpu_id"\n"2018-02-24T08:45:21.893Z","1","lb"\n'
                    '"2018-02-24T08:45:22.000Z","up","lb"\n')
    result = run_loader(str(data), "--url", server.url)
    assert result.returncode == 1
    assert "line 3: direction must be 1 or -1" in result.stderr
    assert "nothing was loaded" in result.stderr
    assert httpx.get(f"{server.url}/api/sensors/lb").status_code == 404
    usage = run_loader(str(data))
    assert usage.returncode == 2 and "exactly one of --url or --data-dir" in usage.stderr


def test_loader_reports_a_field_too_long_for_the_csv_reader(server: ServerProcess, tmp_path: Path) -> None:
    """LOW: a field over 131,072 characters (``csv.field_size_limit``) printed "unexpected
    Error ... (a bug?)"; it is a bad line like any other."""
    data = tmp_path / "long.csv"
    data.write_text('"timestamp","direction","dpu_id"\n"2018-02-24T08:45:21.893Z","1","ll"\n'
                    f'"2018-02-24T08:45:22.000Z","1","{"x" * 131_073}"\n')
    result = run_loader(str(data), "--url", server.url)
    assert result.returncode == 1, result.stderr
    assert "line 3: a field holds more than 131,072 characters" in result.stderr
    assert "a bug" not in result.stderr and "nothing was loaded" in result.stderr
    assert httpx.get(f"{server.url}/api/sensors/ll").status_code == 404


############################################################################################
# Restarts: log replay after SIGKILL, snapshot + log, clean stop


@pytest.fixture
def durable(tmp_path: Path) -> Iterator[tuple[Path, list[ServerProcess]]]:
    started: list[ServerProcess] = []
    yield tmp_path / "data", started
    for proc in started:
        proc.stop(signal.SIGKILL)


def everything(client: httpx.Client) -> dict[str, Any]:
    instants = ["2018-02-25T12:00:00Z", "2018-02-27T08:00:00.500Z", "2018-03-02T16:39:37.240Z"]
    return {
        "counts": {s: [count(client, s, t) for t in instants] for s in ("A", "B", "C")},
        "sensors": [client.get(f"/api/sensors/{d}").json() for d in TWO_SPACE_PLACEMENTS],
        "spaces": {s: client.get(f"/api/spaces/{s}").json() for s in ("A", "B", "C")},
        "occupancy": client.get("/api/spaces/A/occupancy", params={
            "t1": 1519430400, "t2": 1520035199, "step": "hour"}).json(),
    }


def write_history(client: httpx.Client, rows: list[dict[str, Any]]) -> None:
    client.post("/send/batch", json=rows).raise_for_status()
    client.put("/api/sensors/283/placement", json={
        "installed": "2018-02-27T00:00:00Z", "doorway": "Y", "spaces": {"C": 1}}).raise_for_status()
    client.put("/api/spaces/B", json={"nightly_reset": True, "tz": "Europe/Oslo"}).raise_for_status()


@pytest.mark.parametrize("stop", ["sigkill", "snapshot-then-sigkill", "clean"])
def test_restart_keeps_every_count(durable: tuple[Path, list[ServerProcess]], tmp_path: Path, stop: str) -> None:
    data_dir, started = durable
    first = start_server(tmp_path, data_dir=data_dir, extra=["--fsync", "always"])
    started.append(first)
    rows = [{**row, "event_id": f"r{i}"} for i, row in enumerate(sample_rows())]
    with first.client() as client:
        place_seed(client)
        write_history(client, rows[:300])
        if stop == "snapshot-then-sigkill":
            assert client.post("/api/admin/snapshot").status_code == 200
        client.post("/send/batch", json=rows[250:]).raise_for_status()  # 50 resent
        client.put("/api/sensors/423/placement", json={
            "installed": "2018-02-26T00:00:00Z", "doorway": "Z", "spaces": {"A": 1, "C": -1}}).raise_for_status()
        before = everything(client)
    first.stop(signal.SIGKILL if stop != "clean" else signal.SIGTERM)
    second = start_server(tmp_path, data_dir=data_dir, extra=["--fsync", "always"])
    started.append(second)
    with second.client() as client:
        assert everything(client) == before
        # Still idempotent after the restart: the event ids survived.
        assert client.post("/send/batch", json=rows).json()["new"] == 0


def test_routes_are_in_the_openapi_document(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/sensors/{dpu}/placement", "/api/sensors/{dpu}", "/api/sensors", "/api/spaces",
                 "/api/doorways", "/api/spaces/{space}", "/api/spaces/{space}/count",
                 "/api/spaces/{space}/occupancy"):
        assert path in paths, f"{path} missing from /openapi.json"
