"""The ``pointspace`` command: serve, and (with the durability layer) snapshot and log tools."""

from __future__ import annotations

from pathlib import Path

import click
import trio

from engine.errors import PointspaceError
from web.serving.logs import configure_logging
from web.serving.settings import DEFAULT_DATA_DIR, DEFAULT_HOST, DEFAULT_PORT, Settings


@click.group()
def main() -> None:
    """pointspace: a real-time counting and ranking server."""


@main.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, help="A TOML settings file (else $POINTSPACE_CONFIG, else ./pointspace.toml).")
@click.option("--host", default=None, help=f"Address to bind [default: {DEFAULT_HOST}].")
@click.option("--port", default=None, type=int, help=f"Port to bind [default: {DEFAULT_PORT}].")
@click.option("--data-dir", default=None,
              help=f"Where the log and snapshots live; '' keeps everything in memory [default: {DEFAULT_DATA_DIR}].")
@click.option("--fsync", type=click.Choice(["always", "everysec", "no"]), default=None,
              help="Log fsync policy, as Redis's appendfsync [default: everysec].")
@click.option("--access-log/--no-access-log", default=None, help="Log every request [default: off].")
@click.option("--log-format", type=click.Choice(["json", "text"]), default=None, help="[default: json]")
@click.option("--jwt-key-dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="Require JWTs signed by the *.pub RSA keys in this directory (off by default).")
@click.option("--retention", multiple=True, metavar="LEVEL=SECONDS",
              help="Keep a resolution this long, e.g. second=7776000 (PSD's 90 days); repeatable.")
@click.option("--backup-dir", default=None,
              help="Where RankDB file backups go and restores come from [default: DATA_DIR/backups].")
@click.option("--backup-allowed-host", "backup_allowed_hosts", multiple=True, metavar="HOST[:PORT]",
              help="A host that server-to-server backups may be sent to; repeatable [default: none].")
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="An accepted Host header name; repeatable [default: loopback names on loopback, any otherwise].")
@click.option("--allowed-origin", "allowed_origins", multiple=True, metavar="ORIGIN",
              help="A browser origin allowed besides the server's own, e.g. https://dash.example.com; repeatable.")
@click.option("--max-connections", default=None, type=int, help="Open client connections at once [default: 1000].")
def serve(config_file: Path | None, retention: tuple[str, ...], **flags: object) -> None:
    """Start the HTTP server (settings: defaults < TOML file < $POINTSPACE_* < flags)."""
    from web.serving.server import run_server

    for name in ("backup_allowed_hosts", "allowed_hosts", "allowed_origins"):
        if not flags[name]:
            flags[name] = None  # not given: the file, the environment or the default decides
    settings = _settings(config_file, flags, retention)
    configure_logging(settings.log_format)
    trio.run(run_server, settings)


@main.group()
def config() -> None:
    """Inspect the effective configuration."""


@config.command("show")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None)
def config_show(config_file: Path | None) -> None:
    """Print the settings `serve` would use, each with where its value came from."""
    from web.serving.config import describe, load_settings

    try:
        settings, sources = load_settings(config_file)
    except PointspaceError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(describe(settings, sources))


def _settings(config_file: Path | None, flags: dict[str, object], retention: tuple[str, ...]) -> Settings:
    from web.serving.config import load_settings

    if retention:
        flags["retention"] = _parse_retention(retention)
    try:
        return load_settings(config_file, flags)[0]
    except PointspaceError as exc:
        raise click.ClickException(str(exc)) from None


def _parse_retention(items: tuple[str, ...]) -> dict[str, int]:
    out = {}
    for item in items:
        level, _, seconds = item.partition("=")
        if not seconds.isdigit():
            raise click.BadParameter(f"expected LEVEL=SECONDS, got {item!r}", param_hint="--retention")
        out[level.strip()] = int(seconds)
    return out


@main.group()
def snapshot() -> None:
    """Export a server's state to one file, or import one into a data directory."""


@snapshot.command("export")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Export from this data directory (read only; the server may be stopped).")
@click.option("--url", default=None, help="Export from a running server, e.g. http://127.0.0.1:1155.")
def snapshot_export(file: Path, data_dir: Path | None, url: str | None) -> None:
    """Write a snapshot of all state to FILE (from --data-dir, or a running server's --url)."""
    if (data_dir is None) == (url is None):
        raise click.UsageError("give exactly one of --data-dir or --url")
    if url is not None:
        _export_over_http(url, file)
        return
    from engine.errors import first_domain_error
    from snapshots.transfer import export_data_dir

    try:
        with click.progressbar(length=0, label="exporting", show_pos=True) as bar:
            info = trio.run(export_data_dir, data_dir, file, bar.update)
    except (PointspaceError, BaseExceptionGroup) as exc:
        error = first_domain_error(exc)
        if error is None:
            raise
        raise click.ClickException(str(error)) from None
    click.echo(f"exported {info.items:,} entities (log position {info.start_seq:,}) to {file}")


def _max_inflated() -> int:
    """``max_inflated_bytes`` as ``serve`` would read it (file, environment, default): the
    snapshot tools bound what a file from elsewhere may inflate to, as the server does."""
    from web.serving.config import load_settings

    try:
        return load_settings(None)[0].max_inflated_bytes
    except PointspaceError as exc:
        raise click.ClickException(str(exc)) from None


def _export_over_http(url: str, file: Path) -> None:
    import httpx

    tmp = file.with_name(file.name + ".tmp")
    with httpx.stream("GET", url.rstrip("/") + "/api/admin/snapshot/export", timeout=None) as response:
        if response.status_code != 200:
            raise click.ClickException(f"server answered {response.status_code}: {response.read()[:500]!r}")
        with open(tmp, "wb") as out, click.progressbar(length=0, label="downloading", show_pos=True) as bar:
            for chunk in response.iter_bytes():
                out.write(chunk)
                bar.update(len(chunk))
    from snapshots.codec import validate_snapshot

    try:
        with open(tmp, "rb") as f:
            info = validate_snapshot(f, max_inflated=_max_inflated())
    except PointspaceError as exc:
        tmp.unlink(missing_ok=True)
        raise click.ClickException(f"the downloaded snapshot is not valid: {exc}") from None
    tmp.replace(file)
    click.echo(f"exported {info.items:,} entities (log position {info.start_seq:,}) to {file}")


@snapshot.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_DATA_DIR,
              show_default=True, help="The (stopped) server's data directory.")
@click.option("--force", is_flag=True, help="Replace a data directory that already holds data.")
def snapshot_import(file: Path, data_dir: Path, force: bool) -> None:
    """Validate FILE whole, then make it the state of --data-dir."""
    from snapshots.transfer import import_snapshot

    max_inflated = _max_inflated()
    with click.progressbar(length=1, label="validating and importing") as bar:
        try:
            info = import_snapshot(file, data_dir, replace=force, max_inflated=max_inflated)
        except PointspaceError as exc:
            raise click.ClickException(str(exc)) from None
        bar.update(1)
    click.echo(f"imported {info.items:,} entities (log position {info.start_seq:,}) into {data_dir}")


@main.group("log")
def log_group() -> None:
    """Check or repair a data directory's write-ahead log (with the server stopped)."""


@log_group.command("check")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_DATA_DIR, show_default=True)
def log_check(data_dir: Path) -> None:
    """Read every record; exit 1 if the log is damaged (naming file and offset)."""
    from snapshots.logscan import check_log

    if not data_dir.is_dir():
        raise click.ClickException(f"no data directory at {str(data_dir)!r} (--data-dir)")
    report = check_log(data_dir)
    click.echo(report.describe())
    if not report.ok:
        raise SystemExit(1)


@log_group.command("repair")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_DATA_DIR, show_default=True)
@click.confirmation_option(prompt="Cut the log at its first damage, dropping every record after it?")
def log_repair(data_dir: Path) -> None:
    """Cut the log at its first damage (records after it are lost) so the server can start."""
    from snapshots.logscan import repair_log

    try:
        click.echo(repair_log(data_dir).describe())
    except PointspaceError as exc:
        raise click.ClickException(str(exc)) from None


if __name__ == "__main__":
    main()
