"""``pointspace density load FILE.csv``: load Density sensor events from a CSV file.

The file is the seed's loader input (``timestamp,direction,dpu_id``, quoted or not, a header
line first; an ``event_id`` column is used when present, other columns are ignored). It is
read twice: first every row is validated -- nothing is sent if any row is bad, and the first
bad rows are reported with their line numbers -- then sent in batches of ``--batch`` rows,
to a running server (``--url``: ``POST /send/batch``) or into a data directory (``--data-dir``:
an engine opened on it, which takes the directory's lock, so not while a server has it).

Rows are validated as ``POST /send/batch`` validates them, against this machine's clock when
the run starts (a crossing more than 10 minutes ahead of it is refused, as the server would).
A row the csv module cannot read (a field over ``csv.field_size_limit()`` characters -- often
an unclosed quote that swallowed the lines after it -- or a NUL byte) is reported like any
other bad line, and the lines after it are not read: the reader's place in the file is lost.

Every row is one crossing, as the seed's own loader (``app/load.py``, which "does no
de-duplication") posted every row: the seed's sample holds 33 identical rows, and its count
for space A (19 at the end of the data) counts them all.

Loading the same file twice changes nothing the second time: every row gets an event id, and
a repeated id is a duplicate the engine keeps once. A row without an ``event_id`` column gets
``<dpu_id>|<timestamp in ms>|<direction>``, and the n-th identical row of the file gets
``...|#n`` (``|#2`` for the second): the first occurrence keeps the bare id, so a file's ids
do not depend on the flag below for any row that occurs once.

``--merge-identical`` treats identical rows as one crossing sent again (all get the bare id)
-- for feeds known to resend. Runs with either choice are idempotent with each other where
ids allow it: a ``--merge-identical`` run after a default one sends only ids already stored
(nothing changes); a default run after a ``--merge-identical`` one adds the 2nd, 3rd... of
each identical group, which then count (stored events are never taken back).
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import httpx
import trio

from engine.density import DensityEvent, iso_ms, validate_dpu_event
from engine.errors import InvalidInput
from web.serving.progress import Progress

#: Rows per request or command: a few hundred kB of JSON, well inside the server's batch and
#: body limits (``MAX_BATCH_EVENTS``, ``max_body_bytes``), and big enough that per-request
#: costs vanish (bench/bench_density.py).
DEFAULT_BATCH = 5000
#: Bad rows listed before the rest are only counted.
MAX_REPORTED = 10
REQUIRED = ("timestamp", "direction", "dpu_id")


@click.group()
def density() -> None:
    """People counting from doorway sensors (the Density seed)."""


@density.command("load")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--url", default=None, help="Send to a running server, e.g. http://127.0.0.1:1155.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Load into this data directory (no server may have it open).")
@click.option("--batch", default=DEFAULT_BATCH, show_default=True, type=click.IntRange(1, 100_000),
              help="Rows per request.")
@click.option("--merge-identical", is_flag=True,
              help="Count identical rows (same dpu_id, timestamp, direction) as ONE crossing "
                   "sent again; by default every row counts, as the seed's loader did.")
def load(file: Path, url: str | None, data_dir: Path | None, batch: int, merge_identical: bool) -> None:
    """Load the sensor events of FILE (CSV: timestamp,direction,dpu_id[,event_id]).

    Every row counts; the n-th identical row gets the id DPU|MS|DIR|#n (the first: DPU|MS|DIR),
    so loading the file again adds nothing.
    """
    if (url is None) == (data_dir is None):
        raise click.UsageError("give exactly one of --url or --data-dir")
    total_bytes = file.stat().st_size
    now_ms = int(time.time() * 1000)  # one clock for both passes: the same rows pass both
    with Progress("validating", unit="bytes", total=total_bytes) as progress:
        rows, bad = 0, 0
        for item in read_rows(file, merge_identical, progress.update, now_ms=now_ms):
            rows += 1
            if isinstance(item, InvalidInput):
                bad += 1
                if bad <= MAX_REPORTED:
                    click.echo(f"{file}: {item.message}", err=True)
    if bad:
        more = f" ({bad - MAX_REPORTED} more not shown)" if bad > MAX_REPORTED else ""
        raise click.ClickException(f"{bad} of {rows} rows are invalid{more}; nothing was loaded")
    with Progress("loading", unit="bytes", total=total_bytes) as progress:
        batches = _batches(read_rows(file, merge_identical, progress.update, now_ms=now_ms), batch)
        if url is not None:
            new, duplicates = _load_over_http(url.rstrip("/"), batches)
        else:
            assert data_dir is not None
            new, duplicates = trio.run(_load_into, data_dir, batches)
    click.echo(f"loaded {rows:,} rows from {file}: {new:,} new events, {duplicates:,} already stored")


def read_rows(
    file: Path, merge_identical: bool = False, progress: Any = None, *, now_ms: int | None = None
) -> Iterator[DensityEvent | InvalidInput]:
    """Each data row as a validated event (with its event id: see the module docstring), or
    the ``InvalidInput`` that names its line (``line 17: direction must be 1 or -1 ...``).
    ``now_ms``: the clock crossings may not be ahead of (``validate_dpu_events``)."""
    with file.open("rb") as raw:
        lines = _decoded_lines(raw, progress)
        reader = csv.reader(lines)
        try:
            header = next(reader)
        except StopIteration:
            yield InvalidInput("line 1: the file is empty; expected a header line "
                               "timestamp,direction,dpu_id", "line 1")
            return
        except csv.Error as exc:
            yield _unreadable(1, reader.line_num, exc)
            return
        names = [name.strip().lower() for name in header]
        missing = [name for name in REQUIRED if name not in names]
        if missing:
            yield InvalidInput(f"line 1: the header lacks {', '.join(missing)} (it reads "
                               f"{','.join(header)[:200]!r})", "line 1")
            return
        seen: dict[str, int] = {}
        while True:
            start = reader.line_num + 1
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield _unreadable(start, reader.line_num, exc)
                return
            line = reader.line_num
            if not any(v.strip() for v in values):
                continue
            if len(values) != len(names):
                yield InvalidInput(f"line {line}: {len(values)} fields where the header has "
                                   f"{len(names)}", f"line {line}")
                continue
            row = dict(zip(names, values, strict=True))
            if not row.get("event_id"):
                row.pop("event_id", None)
            try:
                dpu, ts, direction, event_id = validate_dpu_event(row, f"line {line}", now_ms=now_ms)
            except InvalidInput as exc:
                yield InvalidInput(exc.message.replace(f"line {line}.", f"line {line}: ", 1), exc.field)
                continue
            if event_id is None:
                event_id = f"{dpu}|{ts}|{direction}"
                if not merge_identical:
                    occurrence = seen[event_id] = seen.get(event_id, 0) + 1
                    if occurrence > 1:
                        event_id = f"{event_id}|#{occurrence}"
            yield (dpu, ts, direction, event_id)


def _unreadable(start: int, end: int, exc: csv.Error) -> InvalidInput:
    """The row the csv module refused (``start``: its first line, ``end``: where it gave up)."""
    text = str(exc)
    if text.startswith("field larger than field limit"):
        reason = (f"a field holds more than {csv.field_size_limit():,} characters, the most the "
                  "CSV reader takes (csv.field_size_limit); a crossing's fields are short: is "
                  "this the right file, or is a quote left open?")
    else:
        reason = f"the CSV reader cannot read it ({text})"
    reach = f" (the row runs on to line {end})" if end > start else ""
    return InvalidInput(f"line {start}: {reason}{reach}; the lines after it were not read",
                        f"line {start}")


def _decoded_lines(raw: io.BufferedReader, progress: Any) -> Iterator[str]:
    for line in raw:
        if progress is not None:
            progress(len(line))
        try:
            yield line.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise click.ClickException(f"the file is not UTF-8 text ({exc})") from None


def _batches(items: Iterator[Any], size: int) -> Iterator[list[DensityEvent]]:
    chunk: list[DensityEvent] = []
    for item in items:
        if isinstance(item, InvalidInput):  # the file changed between the two passes
            raise click.ClickException(f"{item.message} (the file changed while loading)")
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _as_body(events: list[DensityEvent]) -> list[dict[str, Any]]:
    return [
        {"timestamp": iso_ms(ts), "direction": direction, "dpu_id": dpu, "event_id": event_id}
        for dpu, ts, direction, event_id in events
    ]


def _load_over_http(url: str, batches: Iterator[list[DensityEvent]]) -> tuple[int, int]:
    new = duplicates = 0
    with httpx.Client(base_url=url, timeout=120) as client:
        for chunk in batches:
            try:
                response = client.post("/send/batch", json=_as_body(chunk))
            except httpx.HTTPError as exc:
                raise click.ClickException(f"cannot reach {url}: {exc} (--url)") from None
            if response.status_code != 200:
                raise click.ClickException(
                    f"{url}/send/batch answered {response.status_code}: {response.text[:500]} "
                    f"({new + duplicates:,} rows were stored before; running the load again "
                    "sends only what is missing)"
                )
            answer = response.json()
            new += answer["new"]
            duplicates += answer["duplicates"]
    return new, duplicates


async def _load_into(data_dir: Path, batches: Iterator[list[DensityEvent]]) -> tuple[int, int]:
    from engine.engine import Engine

    new = duplicates = 0
    # A refusal (the directory in use, unreadable) is a PointspaceError: ``pointspace``'s
    # command group prints it as one ``Error:`` line and exits 1 (``cli.explain_failure``).
    async with Engine.open(data_dir) as engine:
        for chunk in batches:
            added, repeated = await engine.density_ingest_validated(chunk)
            new += added
            duplicates += repeated
    return new, duplicates


__all__ = ["density", "read_rows"]
