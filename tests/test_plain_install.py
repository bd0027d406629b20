"""A plain install serves: ``pip install .`` without extras, in a fresh venv, starts and answers.

Deployments run exactly that, so a run-time import that only an extra (or the dev install)
brings in breaks every one of them: it happened with ``typing_extensions``, which quart-schema
imports but declares only for Python < 3.11. The test copies the tracked tree (so no build
output lands in the checkout), installs it with no extras into a new virtual environment, starts
the installed ``pointspace`` script on loopback from an empty directory (the embedded default
data directory) and checks a route of each family.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import venv
from pathlib import Path

import pytest
from conftest import NO_DATA_DIR_FLAG, ROOT, start_server


def tracked_tree(dest: Path) -> Path:
    """The repository's tracked files (and new files git does not ignore), copied to ``dest``."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout.decode().split("\0")
    for name in filter(None, listing):
        source = ROOT / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return dest


@pytest.fixture(scope="module")
def plain_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("plain")
    source = tracked_tree(base / "src")
    env_dir = base / "venv"
    venv.create(env_dir, with_pip=True)
    pip = subprocess.run(
        [str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         str(source)],
        capture_output=True, text=True, timeout=900,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr
    return env_dir


def test_plain_install_has_no_dev_packages(plain_install: Path):
    python = str(plain_install / "bin" / "python")
    for extra_only in ("pytest", "hypothesis", "selenium", "schemathesis", "redis"):
        found = subprocess.run([python, "-c", f"import {extra_only}"], capture_output=True)
        assert found.returncode != 0, f"{extra_only} is installed by a plain install"


def test_plain_install_runs_the_compiled_write_path(plain_install: Path, tmp_path: Path):
    # `pip install .` builds the Cython extensions (setup.py); a deployment must run them.
    code = ("import engine.partition_counters as p, engine.events as e, engine.record_encoding as r; "
            "print(p.__file__); print(e.__file__); print(r.__file__)")
    found = subprocess.run([str(plain_install / "bin" / "python"), "-c", code], capture_output=True,
                           text=True, cwd=tmp_path, timeout=60)
    assert found.returncode == 0, found.stderr
    assert len(found.stdout.split()) == 3
    for path in found.stdout.split():
        assert path.endswith(".so") and str(plain_install) in path, path


def test_plain_install_serves_every_family(plain_install: Path, tmp_path: Path):
    work = tmp_path / "cwd"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POINTSPACE_", "PYTHON"))}
    server = start_server(tmp_path, data_dir=NO_DATA_DIR_FLAG, command=[str(plain_install / "bin" / "pointspace")],
                          cwd=work, env=env, timeout=60)
    try:
        with server.client() as client:
            events = [{"metric": "steps", "user": 1, "value": 5, "ts": 1700000000}]
            assert client.post("/api/events", json=events).json() == {"applied": 1}
            query = {"users": [1], "metrics": ["steps"], "t1": 1699990000, "t2": 1700000000}
            assert client.post("/api/query", json=query).json()["results"][0]["sums"] == {"steps": 5}
            assert client.post("/v1/write", json={"thing": "steps", "uid": 2, "atid": 1, "aid": 1,
                                                  "value": 3, "ts1": 1, "ts2": 2}).status_code == 200
            created = client.post("/lists", json={"id": "plain", "set": "plain-set"})
            assert created.status_code == 200, created.text
            for path in ("/openapi.json", "/docs", "/metrics", "/healthz", "/ui", "/lists"):
                assert client.get(path).status_code == 200, path
        # The embedded default data directory, under the working directory.
        assert (work / "pointspace-data").is_dir()
    finally:
        assert server.stop() == 0, server.log()
