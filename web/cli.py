"""The ``pointspace`` command: serve, and (with the durability layer) snapshot and log tools."""

from __future__ import annotations

import logging
from pathlib import Path

import click
import trio

from web.settings import DEFAULT_DATA_DIR, DEFAULT_HOST, DEFAULT_PORT, Settings


@click.group()
def main() -> None:
    """pointspace: a real-time counting and ranking server."""


@main.command()
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Address to bind.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int, help="Port to bind.")
@click.option(
    "--data-dir",
    default=str(DEFAULT_DATA_DIR),
    show_default=True,
    help="Where the log and snapshots live; '' keeps everything in memory.",
)
@click.option(
    "--fsync",
    type=click.Choice(["always", "everysec", "no"]),
    default="everysec",
    show_default=True,
    help="Log fsync policy, as Redis's appendfsync.",
)
@click.option("--access-log/--no-access-log", default=False, show_default=True)
def serve(host: str, port: int, data_dir: str, fsync: str, access_log: bool) -> None:
    """Start the HTTP server."""
    from web.server import run_server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings(
        host=host,
        port=port,
        data_dir=Path(data_dir) if data_dir else None,
        fsync=fsync,
        access_log=access_log,
    )
    trio.run(run_server, settings)


if __name__ == "__main__":
    main()
