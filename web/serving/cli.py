"""The ``pointspace`` command: serve, and (with the durability layer) snapshot and log tools.

Failures are one line, ``Error: <what>`` naming the flag, environment variable or file the
fix goes to, with a non-zero exit status (1; 2 for a command line click cannot parse). A
traceback is printed only with ``pointspace --debug ...`` -- an operator reading a service's
log wants the rule that was broken, not 80 lines of trio's nurseries. An exception nobody
expected still says so (``unexpected ...: run with --debug``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
import trio

from engine.errors import PointspaceError
from web.serving.density_load import density
from web.serving.logs import configure_logging
from web.serving.progress import Progress
from web.serving.settings import DEFAULT_DATA_DIR, DEFAULT_HOST, DEFAULT_PORT, Settings
from web.serving.stats_export import stats
from web.version import VERSION

#: ``ctx.meta`` key: where each setting of ``serve`` came from (``config.load_settings``).
SOURCES_KEY = "pointspace.sources"
#: ``ctx.meta`` key: the options of the command that ran, by parameter name (``"data_dir"`` ->
#: ``"--data-dir"``), so that an error naming a field names the flag the fix goes to.
FLAGS_KEY = "pointspace.flags"


class UsageFailure(click.ClickException):
    """A command line that does not parse: exit status 2, as click's own usage errors."""

    exit_code = 2


class PointspaceCommand(click.Command):
    """A command that records its flags for :func:`explain_failure` (``FLAGS_KEY``)."""

    def invoke(self, ctx: click.Context) -> Any:
        ctx.meta[FLAGS_KEY] = {
            p.name: max(p.opts, key=len) for p in self.params if isinstance(p, click.Option) and p.name
        }
        return super().invoke(ctx)


class PointspaceGroup(click.Group):
    """The command group: turns every failure of a subcommand into one ``Error:`` line.

    This is the one place CLI failures are formatted: commands let errors propagate (a
    ``PointspaceError`` naming a ``field`` gets the flag or source of that setting added).
    Subgroups and commands made with ``@group.group()`` / ``@group.command()`` are of these
    classes too (an inner group's line passes the outer one unchanged).
    """

    command_class = PointspaceCommand
    group_class = type  # subgroups are PointspaceGroups

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort):
            raise
        except click.UsageError as exc:
            if ctx.meta.get("debug"):
                raise
            where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            raise UsageFailure(_usage_message(exc) + where) from None
        except click.ClickException:
            raise
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - the CLI's one edge
            if ctx.meta.get("debug"):
                raise
            message = explain_failure(exc, ctx.meta.get(SOURCES_KEY), ctx.meta.get(FLAGS_KEY))
            raise click.ClickException(message) from None


def _usage_message(exc: click.UsageError) -> str:
    message = exc.format_message()
    return message[:1].lower() + message[1:] if message[:8] in ("Invalid ", "Missing ", "No such ") else message


def explain_failure(
    exc: BaseException, sources: Mapping[str, str] | None = None, flags: Mapping[str, str] | None = None
) -> str:
    """One line for ``exc``: the message of the error at fault and, when a setting is at fault,
    where that setting's value came from (``--port``, ``$POINTSPACE_PORT``, a config file:
    ``sources``), or else the flag of the command that sets it (``flags``, ``"(--data-dir)"``)."""
    from snapshots.lock import DataDirectoryInUse
    from web.auth import JwtKeyError
    from web.serving.server import StartupError

    leaf = _leaf(exc)
    setting: str | None = None
    if isinstance(leaf, StartupError):
        setting = leaf.setting
    elif isinstance(leaf, JwtKeyError):
        setting = "jwt_key_dir"
    elif isinstance(leaf, DataDirectoryInUse):
        setting = "data_dir"
    elif isinstance(leaf, PointspaceError):
        setting = leaf.field
    else:
        message = _foreign_message(leaf)
        if message is None:
            return (f"unexpected {type(leaf).__name__}: {leaf} (a bug? run 'pointspace --debug "
                    f"...' for the traceback)")
        return message
    message = str(leaf)
    if setting is not None and sources is not None and setting in sources:
        message += f" (from {sources[setting]})"
    elif setting is not None and flags is not None and setting in flags:
        message += f" ({flags[setting]})"
    return message


def _leaf(exc: BaseException) -> BaseException:
    """The error inside trio's exception groups: the first leaf that is not a cancellation."""
    while isinstance(exc, BaseExceptionGroup):
        inner = [e for e in exc.exceptions if not isinstance(e, trio.Cancelled)] or list(exc.exceptions)
        exc = inner[0]
    return exc


def _foreign_message(exc: BaseException) -> str | None:
    """Operator-level failures from outside pointspace (the OS, the network), in one line."""
    import httpx

    if isinstance(exc, httpx.ConnectError):
        url = exc.request.url if exc._request is not None else "the server"
        return f"cannot connect to {url}: {_reason(exc)} (is the server running? check --url)"
    if isinstance(exc, httpx.TransportError):
        return f"the connection to the server failed: {type(exc).__name__}: {_reason(exc)} (--url)"
    if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol):
        return f"--url: {exc}"
    if isinstance(exc, OSError):
        where = f" {str(exc.filename)!r}" if exc.filename is not None else ""
        return f"cannot use{where}: {exc.strerror or exc}"
    return None


def _reason(exc: BaseException) -> str:
    text = str(exc)
    cause = exc.__cause__ or exc.__context__
    while not text and cause is not None:
        text, cause = str(cause), cause.__cause__ or cause.__context__
    return text.removeprefix("[Errno 111] ") or type(exc).__name__


@click.group(cls=PointspaceGroup)
@click.version_option(VERSION, "--version", prog_name="pointspace", message="%(prog)s %(version)s")
@click.option("--debug", is_flag=True, help="Print a traceback on errors (for bug reports).")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """pointspace: a real-time counting and ranking server."""
    ctx.meta["debug"] = debug


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
@click.option("--stats-gauge-period-s", default=None, type=int,
              help="statshub gauges keep each id's last value per period of this many seconds [default: 360].")
@click.option("--stats-stream-interval-s", default=None, type=float,
              help="Seconds between updates on statshub's /stream websockets [default: 30].")
@click.option("--cluster", "cluster", multiple=True, metavar="NATS_URL",
              help="Serve as one node of a cluster on this JetStream cluster (nats://host:4222); "
                   "repeatable. Needs the [cluster] extra.")
@click.option("--node-id", default=None, help="This node's id in the cluster [default: HOST-PORT].")
@click.option("--advertise-url", default=None,
              help="The URL other nodes reach this node at [default: http://HOST:PORT].")
@click.option("--cluster-partitions", default=None, type=int,
              help="Partitions of the data set, the same on every node [default: 64].")
@click.option("--cluster-replicas", default=None, type=int,
              help="JetStream copies of each partition's log [default: 3].")
@click.option("--cluster-ttl-s", default=None, type=float,
              help="Seconds without a heartbeat before a node counts as dead [default: 3].")
@click.option("--cluster-snapshot-interval-s", default=None, type=float,
              help="Seconds between snapshots of each partition to the object store [default: 30].")
@click.pass_context
def serve(ctx: click.Context, config_file: Path | None, retention: tuple[str, ...], **flags: object) -> None:
    """Start the HTTP server (settings: defaults < TOML file < $POINTSPACE_* < flags)."""
    from web.serving.server import run_server

    for name in ("backup_allowed_hosts", "allowed_hosts", "allowed_origins", "cluster"):
        if not flags[name]:
            flags[name] = None  # not given: the file, the environment or the default decides
    settings, sources = _settings(config_file, flags, retention)
    ctx.meta[SOURCES_KEY] = sources
    _preflight(settings, sources)
    runner = cluster_runner(sources["cluster"]) if settings.cluster else run_server
    configure_logging(settings.log_format)
    trio.run(runner, settings)


#: The entry point group through which ``cluster/`` plugs its server in (pyproject.toml):
#: ``web/`` never imports ``cluster/`` (which needs nats-py); the cluster depends on the web
#: layer, not the other way round, and a plain install has the entry point but not nats-py.
SERVING_ENTRY_POINTS = "pointspace.serving"


def cluster_runner(source: str) -> Any:
    """The cluster node's ``run(settings)`` (``cluster/serving/serve.py``), found as a plugin.

    Raises:
        click.ClickException: the [cluster] extra is not installed.
    """
    from importlib.metadata import entry_points

    hint = "install the cluster extra: pip install 'pointspace[cluster]'"
    found = entry_points(group=SERVING_ENTRY_POINTS, name="cluster")
    if not found:
        raise click.ClickException(f"cluster (from {source}) needs the cluster node, which is not "
                                   f"installed: {hint}")
    try:
        return next(iter(found)).load()
    except ImportError as exc:
        raise click.ClickException(f"cluster (from {source}) needs {exc.name or exc}: {hint}") from None


def _preflight(settings: Settings, sources: Mapping[str, str]) -> None:
    """What can be checked before anything starts, each naming its setting's source."""
    from engine.engine import check_retention

    check_retention(settings.retention)  # InvalidInput naming "retention"
    data_dir = settings.data_dir
    if data_dir is not None and data_dir.exists() and not data_dir.is_dir():
        raise click.ClickException(
            f"data directory {str(data_dir)!r} is not a directory; give a directory "
            f"(from {sources['data_dir']})"
        )


@main.group()
def config() -> None:
    """Inspect the effective configuration."""


@config.command("show")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None)
def config_show(config_file: Path | None) -> None:
    """Print the settings `serve` would use, each with where its value came from."""
    from web.serving.config import describe, load_settings

    settings, sources = load_settings(config_file)
    click.echo(describe(settings, sources))


def _settings(
    config_file: Path | None, flags: dict[str, object], retention: tuple[str, ...]
) -> tuple[Settings, dict[str, str]]:
    from web.serving.config import load_settings

    if retention:
        flags["retention"] = _parse_retention(retention)
    return load_settings(config_file, flags)


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
    from snapshots.transfer import export_data_dir

    with Progress("exporting", unit="entities") as progress:
        info = trio.run(export_data_dir, data_dir, file, progress.update, progress.set_total)
    click.echo(f"exported {info.items:,} entities (log position {info.start_seq:,}) to {file}")


def _max_inflated() -> int:
    """``max_inflated_bytes`` as ``serve`` would read it (file, environment, default): the
    snapshot tools bound what a file from elsewhere may inflate to, as the server does."""
    from web.serving.config import load_settings

    return load_settings(None)[0].max_inflated_bytes


def _export_over_http(url: str, file: Path) -> None:
    import httpx

    from web.api.admin import ESTIMATE_HEADER

    tmp = file.with_name(file.name + ".tmp")
    export_url = url.rstrip("/") + "/api/admin/snapshot/export"
    with httpx.stream("GET", export_url, timeout=httpx.Timeout(30.0, read=None)) as response:
        if response.status_code != 200:
            raise click.ClickException(
                f"{export_url} answered {response.status_code}: {response.read()[:500]!r} (--url)"
            )
        length = response.headers.get("Content-Length") or response.headers.get(ESTIMATE_HEADER)
        total = int(length) if length is not None and length.isdigit() else None
        estimated = "Content-Length" not in response.headers
        with open(tmp, "wb") as out, Progress(
            "downloading", unit="bytes", total=total, estimated=estimated
        ) as progress:
            for chunk in response.iter_bytes():
                out.write(chunk)
                progress.update(len(chunk))
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
        info = import_snapshot(file, data_dir, replace=force, max_inflated=max_inflated)
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

    click.echo(repair_log(data_dir).describe())


# Commands that belong to one API family live in their own modules and register here.
main.add_command(density)
main.add_command(stats)


if __name__ == "__main__":
    main(prog_name="pointspace")
