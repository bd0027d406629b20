"""One process per data directory (snapshots/lock.py): a second server is refused, a killed one
leaves no stale lock."""

from __future__ import annotations

import os
import signal

import pytest
from conftest import free_port, run_cli, start_server

from engine.engine import Engine
from snapshots.lock import LOCK_NAME, DataDirectoryInUse, DataDirectoryLock


def test_second_lock_is_refused_naming_the_holder(tmp_path):
    with DataDirectoryLock(tmp_path) as first:
        assert first.held
        with pytest.raises(DataDirectoryInUse, match=rf"in use by PID {os.getpid()};"):
            DataDirectoryLock(tmp_path).acquire()
    # Released: the next one gets it.
    with DataDirectoryLock(tmp_path) as again:
        assert again.held
    assert (tmp_path / LOCK_NAME).read_text().strip() == str(os.getpid())


async def test_an_open_engine_holds_its_directory(tmp_path):
    async with Engine.open(tmp_path):
        with pytest.raises(DataDirectoryInUse):
            async with Engine.open(tmp_path):
                pass
    async with Engine.open(tmp_path):  # free again after a clean close
        pass


def test_second_server_on_one_directory_is_refused(tmp_path):
    data = tmp_path / "data"
    # fsync always: the write below is durable when acknowledged, whenever the kill comes.
    first = start_server(tmp_path, data_dir=data, extra=["--fsync", "always"])
    try:
        with first.client() as client:
            events = [{"metric": "m", "user": 1, "value": 50, "ts": 1700000000}]
            assert client.post("/api/events", json=events).status_code == 200
        second = run_cli("serve", "--host", "127.0.0.1", "--port", free_port(), "--data-dir", data,
                         timeout=60)
        assert second.returncode != 0
        assert f"in use by PID {first.process.pid}" in second.stderr + second.stdout
        with first.client() as client:  # the first one still serves, its data intact
            q = {"users": [1], "metrics": ["m"], "t1": 0, "t2": 1800000000}
            assert client.post("/api/query", json=q).json()["results"][0]["sums"] == {"m": 50}
    finally:
        first.stop(signal.SIGKILL)
    # The kernel dropped the dead server's lock: a new server starts and recovers the write.
    third = start_server(tmp_path, data_dir=data)
    try:
        with third.client() as client:
            q = {"users": [1], "metrics": ["m"], "t1": 0, "t2": 1800000000}
            assert client.post("/api/query", json=q).json()["results"][0]["sums"] == {"m": 50}
    finally:
        third.stop()


def test_offline_tools_refuse_a_directory_in_use(tmp_path):
    data = tmp_path / "data"
    server = start_server(tmp_path, data_dir=data)
    try:
        with server.client() as client:
            events = [{"metric": "m", "user": 1, "value": 7, "ts": 1700000000}]
            assert client.post("/api/events", json=events).status_code == 200
            assert client.post("/api/admin/snapshot").status_code == 200
        export = tmp_path / "state.pssnap"
        assert run_cli("snapshot", "export", str(tmp_path / "x.pssnap"), "--url", server.url).returncode == 0
        (tmp_path / "x.pssnap").rename(export)
        wal_before = sorted(p.name for p in (data / "wal").iterdir())
        for args in (
            ("snapshot", "import", str(export), "--data-dir", str(data), "--force"),
            ("snapshot", "export", str(tmp_path / "offline.pssnap"), "--data-dir", str(data)),
            ("log", "repair", "--data-dir", str(data)),
        ):
            result = run_cli(*args, input="y\n")  # log repair asks first
            assert result.returncode != 0, args
            assert f"in use by PID {server.process.pid}" in result.stderr, (args, result.stderr)
        # Nothing was deleted under the running server; it still takes writes.
        assert sorted(p.name for p in (data / "wal").iterdir()) == wal_before
        with server.client() as client:
            events = [{"metric": "m", "user": 1, "value": 1, "ts": 1700000001}]
            assert client.post("/api/events", json=events).status_code == 200
    finally:
        assert server.stop() == 0
    # Stopped: the same tools work.
    assert run_cli("snapshot", "export", str(tmp_path / "offline.pssnap"), "--data-dir", str(data)).returncode == 0
    assert run_cli("log", "repair", "--data-dir", str(data), input="y\n").returncode == 0


def test_log_tools_refuse_a_missing_directory(tmp_path):
    for args in (("log", "check"), ("log", "repair")):
        result = run_cli(*args, "--data-dir", str(tmp_path / "nope"), input="y\n")  # repair asks
        assert result.returncode != 0
        assert "no data directory" in result.stderr
