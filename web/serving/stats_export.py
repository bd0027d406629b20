"""``pointspace stats export``: statshub's archive table of one dimension, from our own series.

statshub archived ``QueryDims([dim])`` to BigQuery every 10 minutes to 24 hours, one table per
dimension: ``_dim`` (the value, ``total`` included), ``_ts`` (the run time truncated to the
interval), and RECORDs ``counter`` and ``gauge`` with one INTEGER field per stat, sorted.
Every roll-up here is a series already, so the table can be written afterwards for any range
and any interval: a row per value and instant, as the figures stood then (counters as of the
instant, gauges of the gauge period complete then, member counts as of the instant).

Formats: CSV (``counter.<stat>`` and ``gauge.<stat>`` columns, empty where a value had no
figure), or Parquet with ``counter`` and ``gauge`` struct columns (BigQuery loads them as the
RECORDs statshub's tables had). Parquet needs pyarrow: the ``parquet`` extra
(``pip install 'pointspace[parquet]'``); a plain install serves and exports CSV.

Reads a data directory offline, under its lock (``snapshots/lock.py``): a directory a server
runs on is refused naming its PID (``snapshots.transfer.recovered_engine``, as ``pointspace
snapshot export --data-dir``). Offline, not ``--url``: the export walks every value's
series at every instant, which is a read of the whole dimension's history -- a job for a
copy of the state, not for a serving process (export one with ``pointspace snapshot export
--url`` and ``snapshot import`` it into a scratch directory).

Failures (a bad range, a directory in use) are raised as they are: ``web/serving/cli.py``'s
group prints one ``Error:`` line for any of them.
"""

from __future__ import annotations

import csv
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import trio

from engine.stats import DEFAULT_GAUGE_PERIOD_S
from web.serving.progress import Progress

#: statshub's archive intervals: 10 minutes by default, an hour for its busy dimensions.
DEFAULT_INTERVAL = 3600


@click.group()
def stats() -> None:
    """Dimensional stats (statshub): archive export."""


@stats.command("export")
@click.option("--dim", required=True, help="The dimension (one table per dimension, as statshub's).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="The data directory (read under its lock; stop the server first).")
@click.option("--t1", type=int, required=True, help="First instant, Unix seconds.")
@click.option("--t2", type=int, required=True, help="Last instant, Unix seconds.")
@click.option("--interval", default=str(DEFAULT_INTERVAL), show_default=True,
              help="Seconds between rows, or year/month/day/hour/minute (in --tz).")
@click.option("--tz", default=None, help="IANA time zone of calendar intervals [default: UTC].")
@click.option("--gauge-period", type=int, default=DEFAULT_GAUGE_PERIOD_S, show_default=True,
              help="The server's gauge period in seconds (stats_gauge_period_s).")
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet"]), default="csv", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output file ('-' for standard output, CSV only).")
def export(dim: str, data_dir: Path, t1: int, t2: int, interval: str, tz: str | None, gauge_period: int,
           fmt: str, out: Path, **_: Any) -> None:
    """Write statshub's archive table of DIM (_dim, _ts, counters, gauges) as CSV or Parquet."""
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise click.ClickException(
                "--format parquet needs pyarrow: pip install 'pointspace[parquet]' (or use --format csv)"
            ) from None
    step: str | int = int(interval) if interval.isdigit() else interval
    names, rows = trio.run(_read, data_dir, dim.lower(), t1, t2, step, tz, gauge_period)
    counters, gauges = names
    if fmt == "csv":
        _write_csv(out, counters, gauges, rows)
    else:
        _write_parquet(out, counters, gauges, rows)
    click.echo(f"exported {len(rows):,} rows of {dim!r} ({len(counters)} counters, {len(gauges)} gauges) "
               f"to {out}", err=str(out) == "-")


async def _read(data_dir: Path, dim: str, t1: int, t2: int, step: str | int, tz: str | None,
                gauge_period: int) -> tuple[tuple[list[str], list[str]], list[Any]]:
    from engine.engine import check_range
    from engine.periods import load_zone, period_bounds
    from snapshots.transfer import recovered_engine

    t1, t2 = check_range(t1, t2)
    bounds = period_bounds(t1, t2, step, zone=load_zone(tz))
    stamps = bounds[:-1]
    rows: list[Any] = []
    counters: set[str] = set()
    gauges: set[str] = set()
    async with recovered_engine(data_dir, stats_gauge_period_s=gauge_period) as (engine, _):
        chunk = 64  # instants per pass: the progress moves, memory stays one chunk of rows
        with Progress("exporting", unit="instants", total=len(stamps)) as progress:
            for i in range(0, len(stamps), chunk):
                c, g, part = await engine.stats_archive(dim, stamps[i:i + chunk])
                counters.update(c)
                gauges.update(g)
                rows.extend(part)
                progress.update(len(stamps[i:i + chunk]))
    return (sorted(counters), sorted(gauges)), rows


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _write_csv(out: Path, counters: list[str], gauges: list[str], rows: list[Any]) -> None:
    handle = sys.stdout if str(out) == "-" else open(out, "w", newline="")  # noqa: SIM115
    try:
        writer = csv.writer(handle)
        writer.writerow(["_dim", "_ts", *(f"counter.{c}" for c in counters), *(f"gauge.{g}" for g in gauges)])
        for value, ts, c, g in rows:
            writer.writerow([value, _iso(ts), *(c.get(n, "") for n in counters), *(g.get(n, "") for n in gauges)])
    finally:
        if handle is not sys.stdout:
            handle.close()


def _write_parquet(out: Path, counters: list[str], gauges: list[str], rows: list[Any]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if str(out) == "-":
        raise click.ClickException("--format parquet writes a file: give --out PATH")

    def record(names: list[str]) -> pa.DataType:
        return pa.struct([pa.field(n, pa.int64()) for n in names]) if names else pa.struct([])

    schema = pa.schema([("_dim", pa.string()), ("_ts", pa.timestamp("s", tz="UTC")),
                        ("counter", record(counters)), ("gauge", record(gauges))])
    table = pa.Table.from_pylist(
        [{"_dim": v, "_ts": datetime.fromtimestamp(ts, UTC), "counter": {n: c.get(n) for n in counters},
          "gauge": {n: g.get(n) for n in gauges}} for v, ts, c, g in rows],
        schema=schema,
    )
    pq.write_table(table, out)


__all__ = ["export", "stats"]
