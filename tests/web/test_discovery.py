"""Discovery (issue 16): the version, the live boards, and which APIs are served where."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from web.version import VERSION

ROOT = Path(__file__).resolve().parents[2]


def test_version_flag_prints_the_installed_version() -> None:
    out = subprocess.run([sys.executable, "-m", "web.serving.cli", "--version"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout) == (0, f"pointspace {VERSION}\n")


def test_leaderboards_lists_live_boards_only(client: httpx.Client) -> None:
    fixed = {"id": "disc-fixed", "metric": "disc-steps", "atid": 2,
             "window": {"t1": 1_000, "t2": 2_000}}
    rolling = {"id": "disc-rolling", "metric": "disc-steps", "members": [1, "b"],
               "window": {"rolling": "day", "tz": "Europe/Oslo"}}
    for board in (fixed, rolling):
        assert client.post("/api/leaderboards", json=board).status_code == 201
    assert client.post("/lists", json={"id": "disc-plain-list", "set": "disc-set"}).status_code == 200
    events = [{"metric": "disc-steps", "user": u, "value": 5, "ts": 1_500, "atid": 2} for u in (1, 2)]
    assert client.post("/api/events", json=events).status_code == 200
    r = client.get("/api/leaderboards")
    assert r.status_code == 200
    boards = {b["id"]: b for b in r.json()["leaderboards"] if b["id"].startswith("disc-")}
    assert set(boards) == {"disc-fixed", "disc-rolling"}  # the plain ranked list is not a board
    assert boards["disc-fixed"] == {
        "id": "disc-fixed", "metric": "disc-steps", "atid": 2,
        "window": {"kind": "fixed", "tz": None, "t1": 1_000, "t2": 2_000}, "members": None, "size": 2,
    }
    assert boards["disc-rolling"]["members"] == 2
    assert boards["disc-rolling"]["window"]["kind"] == "day"
    assert boards["disc-rolling"]["window"]["tz"] == "Europe/Oslo"


def test_apis_lists_each_family_with_its_paths(client: httpx.Client) -> None:
    r = client.get("/api/apis")
    assert r.status_code == 200
    apis = {api["name"]: api for api in r.json()["apis"]}
    assert r.json()["apis"][0]["name"] == "pointspace"
    assert {"pointspace", "psd", "rankdb", "operations"} <= set(apis)
    paths = {name: {p["path"]: p["methods"] for p in api["paths"]} for name, api in apis.items()}
    assert paths["psd"]["/v1/write"] == ["POST"]
    assert paths["psd"]["/v1/query/{uid}/{thing}/{atid}/{start_ts}/{end_ts}"] == ["GET"]
    # RankDB's two modules (lists, backups) are one family.
    assert paths["rankdb"]["/lists/{list_id}"] == ["DELETE", "GET"]
    assert paths["rankdb"]["/xlist/backup"] == ["PUT"]
    assert paths["pointspace"]["/api/leaderboards"] == ["GET", "POST"]
    assert "/healthz" in paths["operations"]
    assert apis["psd"]["doc"].startswith("PSD")
    # Every route of the app is in exactly one family.
    every = [(p["path"], m) for api in apis.values() for p in api["paths"] for m in p["methods"]]
    assert len(every) == len(set(every))


def test_apis_follows_the_registered_blueprints() -> None:
    """A new seed module declaring SEED shows up without any list being edited."""
    import types

    from quart import Blueprint

    from web.apis import served_apis
    from web.app import create_app

    module = types.ModuleType("fake_seed")
    module.SEED = "fakeseed"
    module.SEED_DOC = "A seed made up for this test: ``x``."
    sys.modules["fake_seed"] = module
    try:
        blueprint = Blueprint("fakeseed_bp", "fake_seed")

        @blueprint.get("/fake/<int:n>")
        async def fake(n: int) -> str:
            return "ok"

        app = create_app(None)  # type: ignore[arg-type]
        app.register_blueprint(blueprint)
        apis = {api["name"]: api for api in served_apis(app)}
        assert apis["fakeseed"] == {"name": "fakeseed", "doc": "A seed made up for this test: `x`.",
                                    "paths": [{"path": "/fake/{n}", "methods": ["GET"]}]}
    finally:
        del sys.modules["fake_seed"]
