"""``pointspace stats export``: statshub's archive table from a data directory."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner

from engine.engine import Engine
from snapshots.lock import DataDirectoryLock
from snapshots.transfer import recovered_engine
from web.serving.cli import main

BASE = 1_700_000_000 - 1_700_000_000 % 3600  # an hour start


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("export") / "data"

    async def fill() -> None:
        async with Engine.open(data, fsync="always") as engine:
            await engine.stats_update("a", {"dims": {"country": "es"}, "counters": {"bytes": 10},
                                            "gauges": {"online": 3}, "members": {"users": "u1"}}, now=BASE + 10)
            await engine.snapshot_now()
            await engine.stats_update("b", {"dims": {"country": "de"}, "counters": {"bytes": 5},
                                            "members": {"users": "u2"}}, now=BASE + 3600 + 10)
            await engine.stats_update("a", {"dims": {"country": "es"}, "counters": {"bytes": 30}},
                                      now=BASE + 3600 + 20)

    trio.run(fill)
    return data


def run(*args: str) -> tuple[int, str]:
    """``pointspace stats export ARGS`` through the command group (which prints failures)."""
    result = CliRunner().invoke(main, ["stats", "export", *args])
    return result.exit_code, result.output


def test_stats_export_csv(data_dir: Path) -> None:
    code, output = run("--dim", "Country", "--data-dir", str(data_dir), "--t1", str(BASE + 360),
                       "--t2", str(BASE + 2 * 3600), "--interval", "3600", "--out", "-")
    assert code == 0, output
    lines = [line for line in output.splitlines() if not line.startswith(("exporting", "exported"))]
    rows = list(csv.reader(io.StringIO("\n".join(lines))))
    assert rows[0] == ["_dim", "_ts", "counter.bytes", "gauge.online", "gauge.users"]
    by_key = {(r[0], r[1]): r[2:] for r in rows[1:]}
    first = "2023-11-14 22:06:00 UTC"  # BASE + 360: the gauge period after the write is complete
    assert by_key[("es", first)] == ["10", "3", "1"]
    assert by_key[("total", first)] == ["10", "3", "1"]
    second = "2023-11-14 23:00:00 UTC"
    assert by_key[("es", second)] == ["10", "", "1"]  # as of the instant: the later writes are after it
    third = "2023-11-15 00:00:00 UTC"
    assert by_key[("es", third)] == ["30", "", "1"] and by_key[("de", third)] == ["5", "", "1"]
    assert by_key[("total", third)] == ["35", "", "2"]


def test_stats_export_parquet_records(data_dir: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "country.parquet"
    code, output = run("--dim", "country", "--data-dir", str(data_dir), "--t1", str(BASE),
                       "--t2", str(BASE + 2 * 3600), "--interval", "hour", "--format", "parquet", "--out", str(out))
    assert code == 0, output
    table = pq.read_table(out)
    assert table.schema.names == ["_dim", "_ts", "counter", "gauge"]
    assert [f.name for f in table.schema.field("counter").type] == ["bytes"]
    last = [r for r in table.to_pylist() if r["_dim"] == "total"][-1]
    assert last["counter"] == {"bytes": 35} and last["gauge"]["users"] == 2


def test_stats_export_parquet_without_pyarrow(data_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as in a plain install
    code, output = run("--dim", "country", "--data-dir", str(data_dir), "--t1", str(BASE), "--t2", str(BASE),
                       "--format", "parquet", "--out", str(tmp_path / "x.parquet"))
    assert code == 1
    assert output.strip().splitlines() == [
        "Error: --format parquet needs pyarrow: pip install 'pointspace[parquet]' (or use --format csv)"
    ]


def test_stats_export_refuses_a_directory_in_use(data_dir: Path) -> None:
    with DataDirectoryLock(data_dir):
        code, output = run("--dim", "country", "--data-dir", str(data_dir), "--t1", str(BASE), "--t2", str(BASE),
                           "--out", "-")
    assert code == 1 and "Error:" in output and "in use" in output, output


def test_stats_export_failures_are_one_error_line(data_dir: Path, tmp_path: Path) -> None:
    code, output = run("--dim", "country", "--data-dir", str(data_dir), "--t1", str(BASE + 10), "--t2", str(BASE),
                       "--out", "-")
    assert code == 1 and output.startswith("Error: ") and len(output.strip().splitlines()) == 1, output
    code, output = run("--dim", "country", "--data-dir", str(tmp_path / "none"), "--t1", "0", "--t2", "0",
                       "--out", "-")
    assert code == 1 and output.strip() == f"Error: no data directory at {str(tmp_path / 'none')!r}", output


def test_recovered_engine_holds_snapshot_and_log_and_changes_nothing(data_dir: Path) -> None:
    """The offline reader both exports use: the snapshot, then the log after it, under the
    directory's lock; the directory's files are left as they were."""
    before = {p: p.read_bytes() for p in sorted(data_dir.rglob("*")) if p.is_file() and p.name != "LOCK"}

    async def read() -> tuple[dict, int]:
        async with recovered_engine(data_dir, stats_gauge_period_s=360) as (engine, next_seq):
            with pytest.raises(Exception, match="in use"):
                DataDirectoryLock(data_dir).__enter__()
            return (await engine.stats_query(["country"], now=BASE + 2 * 3600)), next_seq

    dims, next_seq = trio.run(read)
    assert dims["country"]["total"]["counters"] == {"bytes": 35}  # 10 in the snapshot, the rest logged
    assert next_seq == 4  # three records
    assert {p: p.read_bytes() for p in before} == before
