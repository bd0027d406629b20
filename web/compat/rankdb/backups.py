"""RankDB backup and restore: ``PUT /xlist/backup``, ``POST /xlist/restore``, ``/backup/{id}``.

Theory of operation
-------------------
A backup reads the selected lists **one at a time**, sorted by id: one ``engine.ask`` per list
copies its settings and ``to_records`` chunks inside the list's actor turn (so each list is a
consistent cut, and writes to it wait only for that copy), then the chunks are encoded and
compressed off the event loop (``snapshots/backup.py``) and sent on. Memory is one list's
records plus one compressed chunk, whatever the number of lists. Cancellation (``DELETE
/backup/{id}``) is checked between lists and between chunks; a cancelled stream simply stops
without its end marker, which every restore rejects as truncated.

Destinations: ``download`` streams the bytes in the response (``X-Backup-ID`` names the job);
``file`` writes a temporary file on this server in a background task and renames it into place
only when complete; ``server`` checks another server's ``/health``, then streams the backup
straight into its ``POST /xlist/restore``. Jobs live in process memory (as in RankDB).

What a request may make this server touch (RankDB let a caller name any path and any host):

* **Files** live in one directory, ``backup_dir`` (default ``<data_dir>/backups``, created
  mode 0700 on first use; a memory-only server has none until it is set). ``path`` and
  ``src_file`` are plain file *names* (``BACKUP_NAME``), never paths; the directory is opened
  once and every file is opened relative to it with ``O_NOFOLLOW`` (a symlink planted there
  is refused, never followed), only regular files are read, and the directory may not be the
  data directory or hold its log or snapshots. Errors about a file never quote its bytes and
  say nothing about paths outside the directory.
* **Hosts**: a ``server`` destination must be listed in ``backup_allowed_hosts`` (``host`` or
  ``host:port``; empty, the default, refuses them all). The caller's ``Authorization`` is
  never forwarded, proxies and ``.netrc`` from the environment are ignored, redirects are not
  followed, and the other server's answers are reported by status code and counts only.
* **Inflation**: a restore stream may inflate to ``max_inflated_bytes`` in all, one zstd block
  at a time (``snapshots/backup.py``): a small body that inflates to gigabytes is refused
  after its first block of nonsense (400) or at the limit (413), with memory flat.

A restore decodes and validates the **whole** stream before it changes anything: a damaged,
truncated or wrongly compressed stream is a 400 and no list changes. Then each list is one
``RestoreList`` command (one log record), so a crash mid-restore leaves whole lists. Per-list
failures (an id too long after the prefix, a log record over its size limit, a plain list
aimed at a live leaderboard) go into ``errors`` (RankDB meant to, but never initialised that
map).

Live leaderboards: a backup keeps a board's definition in its list header, and a restore
brings it back live (``RestoreBoard``, ``engine/boards.py``): recomputed from this server's
counters and fed by later writes. A rolling board comes back in the current period.

Errors on these routes use RankDB's goa body ``{"id", "code", "status", "detail", "meta"}``
(``web/compat/rankdb/common.py``, which also holds the cross-list selection).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import stat
import string
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import httpx
import orjson
import trio
from quart import Blueprint, Response, current_app, request
from quart.blueprints import BlueprintSetupState

from engine.boards import BoardDefinition, RestoreBoard, in_current_window
from engine.engine import Engine
from engine.errors import InvalidInput, NotFound, PayloadTooLarge, PointspaceError
from engine.lists import LIST, LIST_ID, ListSettings, ListState, RestoreList, refuse_live_board
from engine.ranked import RankedList
from snapshots.backup import BackupCorrupted, BackupDecoder, BackupEncoder, BackupList
from web.bodies import body_chunks, decode_body, read_body, respond
from web.compat.rankdb.common import Selection, register_goa_errors
from web.context import engine_of, settings_of
from web.serving.settings import Settings

log = logging.getLogger("pointspace.web.backup")

backup = Blueprint("backup", __name__)
#: The API family of these routes (``web/apis.py``): RankDB's, like ``routes.py``.
SEED = "rankdb"
SEED_DOC = "RankDB: ranked lists and their elements, backups and restores, at RankDB's paths."
register_goa_errors(backup, log)

RESTORE_PATH = "/xlist/restore"

#: Finished jobs kept for ``GET /backup/{id}``; the oldest finished ones go first. RankDB keeps
#: all of them until restart; a bound keeps a long-running server's memory flat.
MAX_FINISHED_JOBS = 1000

#: Bytes per read of a ``src_file`` (zstd's recommended input size is 128 KiB).
_FILE_READ_BYTES = 1 << 20

#: Lists at least this big are validated in a worker thread, off the event loop.
_THREAD_VALIDATE_ELEMENTS = 10_000

_AFFIX = re.compile(r"^[a-zA-Z0-9_.\-]{0,98}$")

#: A backup file name: letters, digits, ``.``, ``_`` and ``-``, not starting with a dot (no
#: hidden files, no ``.``/``..``; the job's temporary files start with one), at most 128
#: characters (well under the 255 bytes of ext4, XFS and APFS names). No separator can pass.
BACKUP_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")

#: Bytes of the other server's answer read at most: its restore result is a few counts.
_MAX_REMOTE_ANSWER = 64 * 1024


############################################################################################
# Setup: the job registry, and a bigger body limit for restore alone
############################################################################################


@backup.record_once
def _setup(state: BlueprintSetupState) -> None:
    app = state.app
    app.extensions.setdefault("pointspace.backups", BackupJobs())
    limit = settings_of(app).max_stream_bytes
    base = app.request_class

    class RestoreAwareRequest(base):  # type: ignore[valid-type, misc]
        """A restore body streams into the decoder, so it may be as long as a stream
        (``max_stream_bytes``) rather than one JSON body (``max_body_bytes``). Quart checks
        Content-Length against the limit when the request is built, before any view runs,
        hence a request class and not a check in the view."""

        def __init__(self, method: str, scheme: str, path: str, *args: Any, **kwargs: Any) -> None:
            if method == "POST" and path == RESTORE_PATH:
                kwargs["max_content_length"] = limit
            super().__init__(method, scheme, path, *args, **kwargs)

    app.request_class = RestoreAwareRequest


def jobs_of(app: Any) -> BackupJobs:
    return app.extensions["pointspace.backups"]


############################################################################################
# Jobs
############################################################################################


def _now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(slots=True, kw_only=True)
class BackupJob:
    """One backup's progress, as ``GET /backup/{id}`` shows it (RankDB's BackupStatus)."""

    id: str
    storage: str
    uri: str
    list_ids: list[str]
    started: str = field(default_factory=_now_rfc3339)
    finished: str | None = None
    lists_done: int = 0
    size: int = 0
    cancelled: bool = False
    done: bool = False
    #: The end marker was written: the stream is a complete backup.
    complete: bool = False
    errors: dict[str, str] = field(default_factory=dict)
    custom: dict[str, str] = field(default_factory=dict)
    success: list[str] = field(default_factory=list)
    #: The background job's cancel scope, where waiting on I/O can be abandoned at once.
    scope: trio.CancelScope | None = None

    def cancel(self) -> None:
        """Stop the job: at the next list or chunk boundary, and at once where it waits for
        the destination server or the disk (its ``scope``)."""
        self.cancelled = True
        if self.scope is not None:
            self.scope.cancel()

    def finish(self) -> None:
        if not self.done:
            self.done = True
            self.finished = _now_rfc3339()

    def status(self, full: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {
            "cancelled": self.cancelled,
            "done": self.done,
            "uri": self.uri,
            "lists": len(self.list_ids),
            "lists_done": self.lists_done,
            "storage": self.storage,
            "size": self.size,
            "started": self.started,
            "finished": self.finished,
            "errors": dict(self.errors),
            "custom": dict(self.custom),
        }
        if full:
            body["success"] = list(self.success)
        return body


class BackupJobs:
    """The process's backup jobs by id (RankDB keeps them in memory too)."""

    _ALPHABET = string.ascii_letters + string.digits

    def __init__(self) -> None:
        self._jobs: dict[str, BackupJob] = {}

    def new(self, storage: str, uri: str, list_ids: list[str]) -> BackupJob:
        """A registered job with a fresh 10-character id (RankDB's id length)."""
        while True:
            job_id = "".join(secrets.choice(self._ALPHABET) for _ in range(10))
            if job_id not in self._jobs:
                break
        job = BackupJob(id=job_id, storage=storage, uri=uri, list_ids=list_ids)
        self._jobs[job_id] = job
        self._prune()
        return job

    def get(self, job_id: str) -> BackupJob:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise NotFound(f"no backup job {job_id!r}; jobs live until the server restarts",
                           "backup_id") from None

    def _prune(self) -> None:
        finished = [j for j in self._jobs.values() if j.done]
        for job in finished[: max(0, len(finished) - MAX_FINISHED_JOBS)]:
            del self._jobs[job.id]


def _copy_list(list_id: str) -> Any:
    """The operation run inside a list's actor turn: its settings, a copy of its chunks and,
    for a live leaderboard, its definition (so that a restore brings it back live)."""

    def operation(state: ListState) -> tuple[ListSettings, list[dict[str, Any]], BoardDefinition | None]:
        ranked = state.require(list_id)
        assert state.settings is not None
        return state.settings, list(ranked.to_records()), state.board

    return operation


async def backup_stream(engine: Engine, job: BackupJob) -> AsyncIterator[bytes]:
    """The job's lists as backup bytes, reading one list at a time.

    A list that is gone by the time it is read, or cannot be read (``Overloaded``, ...), is
    recorded in ``job.errors`` and skipped, as RankDB does. The stream ends without its end
    marker when the job is cancelled; ``job.complete`` is set once the end marker is out. The
    caller marks the job done (a file job only after its rename). Use it with
    ``contextlib.aclosing`` so that an abandoned stream stops at once.
    """
    encoder = BackupEncoder()
    for list_id in job.list_ids:
        if job.cancelled:
            return
        try:
            settings, records, board = await engine.ask(LIST, list_id, _copy_list(list_id))
        except NotFound:
            job.errors[list_id] = "not found"  # deleted since the selection
            continue
        except PointspaceError as exc:
            job.errors[list_id] = exc.message
            continue
        elements = sum(r["count"] for r in records)
        piece = encoder.start_list(list_id, settings, elements=elements, chunks=len(records),
                                   board=board)
        if piece:  # never an empty piece: an empty chunk can read as the end of a chunked body
            job.size += len(piece)
            yield piece
        for record in records:
            if job.cancelled:
                return
            # Packing and compressing a chunk (~1.5 MB) takes milliseconds: off the event loop.
            piece = await trio.to_thread.run_sync(encoder.add_chunk, record)
            if piece:
                job.size += len(piece)
                yield piece
        del records
        job.lists_done += 1
        job.success.append(list_id)
    if job.cancelled:
        return
    piece = encoder.finish()
    job.size += len(piece)
    job.complete = True
    yield piece


async def _download(engine: Engine, job: BackupJob) -> AsyncIterator[bytes]:
    """The response body of a download backup; the job is done when the body ends."""
    try:
        async with aclosing(backup_stream(engine, job)) as stream:
            async for piece in stream:
                yield piece
    finally:
        if not job.complete and not job.cancelled:
            job.errors.setdefault("download", "the client went away before the end of the backup")
        job.finish()


############################################################################################
# PUT /xlist/backup
############################################################################################


@dataclass(frozen=True, slots=True)
class Destination:
    type: str
    path: str
    prefix: str
    suffix: str


def check_destination(raw: Any) -> Destination:
    if not isinstance(raw, Mapping):
        raise InvalidInput("destination is required: {type: download|file|server, path?}", "destination")
    kind = raw.get("type")
    if kind == "s3":
        raise InvalidInput("destination type 's3' is not supported by pointspace; use file, server "
                           "or download", "destination.type")
    if kind not in ("download", "file", "server"):
        raise InvalidInput(f"destination.type must be download, file or server, got {kind!r}",
                           "destination.type")
    path = raw.get("path") or ""
    if not isinstance(path, str):
        raise InvalidInput(f"destination.path must be a string, got {path!r}", "destination.path")
    if kind != "download" and not path:
        raise InvalidInput(f"destination.path is required for type {kind!r}", "destination.path")
    affixes = []
    for name in ("server_list_id_prefix", "server_list_id_suffix"):
        value = raw.get(name) or ""
        if not isinstance(value, str) or not _AFFIX.match(value):
            raise InvalidInput(f"destination.{name} must be up to 98 characters of "
                               f"[a-zA-Z0-9-_.], got {value!r}", f"destination.{name}")
        affixes.append(value)
    return Destination(kind, path, affixes[0], affixes[1])


@backup.put("/xlist/backup")
async def start_backup() -> Response:
    """Start a backup: stream it back (download), or a job that writes a file or feeds a server."""
    app = current_app
    engine = engine_of(app)
    body = decode_body(await read_body(request, settings_of(app).max_body_bytes),
                       request.headers.get("Content-Type"))
    if not isinstance(body, Mapping):
        raise InvalidInput("request body must be an object {destination, lists}", "body")
    destination = check_destination(body.get("destination"))
    if "lists" not in body:
        raise InvalidInput("lists is required; send {} to back up every list", "lists")
    selection = Selection.from_body(body.get("lists"), "lists")
    selected, missing = selection.resolve(engine.list_catalog(), all_if_empty=True)

    if destination.type == "download":
        job = jobs_of(app).new("download", "download", selected)
        _missing_errors(job, missing)
        response = Response(_download(engine, job), status=200,
                            content_type="application/octet-stream")
        response.headers["Content-Disposition"] = f'attachment; filename="{job.id}.bin"'
        response.headers["X-Backup-ID"] = job.id
        response.timeout = None  # as long as the backup takes
        return response

    settings = settings_of(app)
    if destination.type == "file":
        name = check_backup_name(destination.path, "destination.path")
        directory = backup_dir(settings, "destination.path")
        job = jobs_of(app).new("file", name, selected)
        _missing_errors(job, missing)
        app.add_background_task(_write_file, engine, job, directory, name)
    else:
        base = check_server_destination(destination.path, settings.backup_allowed_hosts)
        await _check_server(base)
        query = {"list_id_prefix": destination.prefix, "list_id_suffix": destination.suffix}
        query = {k: v for k, v in query.items() if v}
        uri = str(httpx.URL(base + RESTORE_PATH, params=query))
        job = jobs_of(app).new("server", uri, selected)
        _missing_errors(job, missing)
        app.add_background_task(_send_to_server, engine, job, uri)
    return respond({"id": job.id, "callback_url": f"/backup/{job.id}"}, request, 201)


def _missing_errors(job: BackupJob, missing: list[str]) -> None:
    for list_id in missing:
        job.errors[list_id] = "not found"


############################################################################################
# The backup directory: file names, never paths
############################################################################################


def check_backup_name(raw: Any, field_name: str) -> str:
    """A file name inside the backup directory (``BACKUP_NAME``), or ``InvalidInput``.

    >>> check_backup_name("nightly-2024.bin", "src_file")
    'nightly-2024.bin'
    >>> check_backup_name("../wal/000001.log", "src_file")
    Traceback (most recent call last):
    ...
    engine.errors.InvalidInput: src_file must be a file name in the server's backup directory (1..128 of [A-Za-z0-9._-], not starting with '.'), not a path: got '../wal/000001.log'
    """
    if not isinstance(raw, str) or not BACKUP_NAME.fullmatch(raw):
        shown = f"{raw!r:.80}" if isinstance(raw, str) else type(raw).__name__
        raise InvalidInput(
            f"{field_name} must be a file name in the server's backup directory (1..128 of "
            f"[A-Za-z0-9._-], not starting with '.'), not a path: got {shown}", field_name
        )
    return raw


def backup_dir(settings: Settings, field_name: str) -> Path:
    """The backup directory, resolved (symlinks in the configured path are the operator's)
    and created mode 0700 if missing.

    Raises:
        InvalidInput: no directory (a memory-only server without ``backup_dir``), or one that
            is the data directory or inside its log or snapshots.
    """
    configured = settings.backup_dir
    if configured is None:
        if settings.data_dir is None:
            raise InvalidInput(
                "file backups need a backup directory: this server keeps its data in memory "
                "and has no backup_dir; start it with --backup-dir DIR (or set backup_dir)",
                field_name,
            )
        configured = settings.data_dir / "backups"
    directory = Path(os.path.realpath(configured))
    if settings.data_dir is not None:
        data = Path(os.path.realpath(settings.data_dir))
        if directory == data or any(directory.is_relative_to(data / d) for d in ("wal", "snapshots")):
            raise InvalidInput(
                "file backups are disabled: backup_dir is the data directory or inside its "
                "log or snapshots; set backup_dir to a directory of its own", field_name
            )
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        log.error("cannot create the backup directory %s: %s", directory, exc)
        raise InvalidInput(
            "file backups are unavailable: the server cannot create its backup directory "
            "(the server log has the details)", field_name
        ) from None
    return directory


def _open_dir(directory: Path) -> int:
    return os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


async def _write_file(engine: Engine, job: BackupJob, directory: Path, name: str) -> None:
    """Background job: write the backup to a temporary file in ``directory``, then rename it
    to ``name``. Both are opened relative to the directory's descriptor, the temporary one
    with ``O_EXCL | O_NOFOLLOW`` (never through a symlink), and ``rename`` replaces a symlink
    at ``name`` rather than following it."""
    tmp = f".{name}.{job.id}.tmp"
    dir_fd: int | None = None
    out: BinaryIO | None = None
    try:
        with trio.CancelScope() as job.scope:
            dir_fd = await trio.to_thread.run_sync(_open_dir, directory)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = await trio.to_thread.run_sync(lambda: os.open(tmp, flags, 0o600, dir_fd=dir_fd))
            out = os.fdopen(fd, "wb")
            async with aclosing(backup_stream(engine, job)) as stream:
                async for piece in stream:
                    await trio.to_thread.run_sync(out.write, piece)
            if job.complete:
                await trio.to_thread.run_sync(out.flush)
                await trio.to_thread.run_sync(os.fsync, out.fileno())
            out.close()
            out = None
            if job.complete:
                await trio.to_thread.run_sync(
                    lambda: os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                )
                await trio.to_thread.run_sync(os.fsync, dir_fd)
    except OSError as exc:
        job.errors["file"] = f"could not write backup {name!r}: {exc.strerror or type(exc).__name__}"
    except Exception:
        log.exception("backup job %s failed", job.id)
        job.errors["internal"] = "internal error; the server log has the details"
    finally:
        job.scope = None
        if out is not None:
            out.close()
        if dir_fd is not None:
            if not job.complete or job.cancelled or "file" in job.errors or "internal" in job.errors:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(_unlink_quietly, tmp, dir_fd)
            os.close(dir_fd)
        job.finish()


def _unlink_quietly(name: str, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


############################################################################################
# Server destinations: allowed hosts only, no credentials, no quoted answers
############################################################################################


def _host_port(text: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` (an entry of
    ``backup_allowed_hosts``), as a lowercase host and an optional port."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, None  # a name, or a bare IPv6 address
    return host.lower(), int(port) if port and port.isdigit() else None


def check_server_destination(raw: str, allowed: tuple[str, ...]) -> str:
    """``host:port`` (RankDB) or an http(s) URL of another server, if ``allowed`` lists it;
    its base URL.

    >>> check_server_destination("Backup.example:1155", ("backup.example",))
    'http://backup.example:1155'
    >>> check_server_destination("10.0.0.9:1155", ("backup.example:1155",))
    Traceback (most recent call last):
    ...
    engine.errors.InvalidInput: destination.path: host 10.0.0.9:1155 is not in backup_allowed_hosts (--backup-allowed-host HOST[:PORT]); server backups go only to hosts the operator listed
    """
    text = raw.strip().rstrip("/")
    url = text if "://" in text else f"http://{text}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # "[::1": an unclosed IPv6 bracket; a port out of range
        raise InvalidInput(f"destination.path must be host:port of another server, got {raw!r:.120}",
                           "destination.path") from None
    host = parts.hostname
    if (parts.scheme not in ("http", "https") or not host or port is None or parts.path
            or parts.username is not None or parts.query or parts.fragment):
        raise InvalidInput(f"destination.path must be host:port of another server, got {raw!r:.120}",
                           "destination.path")
    if not allowed:
        raise InvalidInput(
            "destination.path: server backups are disabled on this server: backup_allowed_hosts "
            "is empty (list the hosts that may receive backups with --backup-allowed-host)",
            "destination.path",
        )
    shown = f"[{host}]" if ":" in host else host
    if not any(h == host and p in (None, port) for h, p in map(_host_port, allowed)):
        raise InvalidInput(
            f"destination.path: host {shown}:{port} is not in backup_allowed_hosts "
            "(--backup-allowed-host HOST[:PORT]); server backups go only to hosts the operator "
            "listed", "destination.path",
        )
    return f"{parts.scheme}://{shown}:{port}"


def _client(timeout: httpx.Timeout | float) -> httpx.AsyncClient:
    """An HTTP client that sends nothing of ours: no proxy or ``.netrc`` credentials from the
    environment (``trust_env=False``), and no redirects followed to hosts not allowed."""
    return httpx.AsyncClient(timeout=timeout, trust_env=False, follow_redirects=False)


async def _check_server(base: str) -> None:
    """RankDB checks the destination's ``/health`` before starting; pointspace servers without
    the RankDB routes answer ``/health/ping``. Only the status is read, never the body."""
    try:
        async with _client(10) as client:
            async with client.stream("GET", base + "/health") as reply:
                status = reply.status_code
            if status == 404:
                async with client.stream("GET", base + "/health/ping") as reply:
                    status = reply.status_code
    except httpx.HTTPError as exc:
        raise InvalidInput(f"destination server {base} is not reachable ({type(exc).__name__})",
                           "destination.path") from None
    if status != 200:
        raise InvalidInput(f"destination server {base} answered {status} to its health check",
                           "destination.path")


def _count(value: Any) -> int | None:
    return value if type(value) is int and value >= 0 else None


async def _send_to_server(engine: Engine, job: BackupJob, uri: str) -> None:
    """Background job: stream the backup into the other server's restore and record its
    answer as counts (``custom``: restored, skipped, remote_errors); its text is never kept."""
    stream = backup_stream(engine, job)
    try:
        with trio.CancelScope() as job.scope:
            timeout = httpx.Timeout(30, read=None)  # the answer comes after the whole restore
            async with aclosing(stream), _client(timeout) as client:
                async with client.stream(
                    "POST", uri, content=stream, headers={"Content-Type": "application/octet-stream"}
                ) as reply:
                    status = reply.status_code
                    answer = bytearray()
                    async for part in reply.aiter_bytes():
                        answer += part
                        if len(answer) > _MAX_REMOTE_ANSWER:
                            break
            if status == 200:
                _record_remote_result(job, bytes(answer))
            elif not job.cancelled:
                job.errors["server"] = f"destination answered {status}"
    except httpx.HTTPError as exc:
        job.errors["server"] = f"could not send to the destination ({type(exc).__name__})"
    except Exception:
        log.exception("backup job %s failed", job.id)
        job.errors["internal"] = "internal error; the server log has the details"
    finally:
        job.scope = None
        job.finish()


def _record_remote_result(job: BackupJob, answer: bytes) -> None:
    try:
        result = orjson.loads(answer)
    except orjson.JSONDecodeError:
        result = None
    if not isinstance(result, dict) or _count(result.get("restored")) is None:
        job.errors["server"] = "destination answered 200 without a restore result"
        return
    errors = result.get("errors")
    failed = len(errors) if isinstance(errors, dict) else 0
    job.custom["restored"] = str(result["restored"])
    job.custom["skipped"] = str(_count(result.get("skipped")) or 0)
    job.custom["remote_errors"] = str(failed)
    if failed:
        job.errors["server"] = f"destination could not restore {failed} list(s); its log has why"


############################################################################################
# GET / DELETE /backup/{id}
############################################################################################


@backup.get("/backup/<backup_id>")
async def backup_status(backup_id: str) -> Response:
    """A backup job's status (`view=default|full`); 404 for an unknown job."""
    job = jobs_of(current_app).get(backup_id)
    view = request.args.get("view", "default")
    return respond(job.status(full=view == "full"), request)


@backup.delete("/backup/<backup_id>")
async def cancel_backup(backup_id: str) -> Response:
    """Cancel a backup job if it still runs: 204 either way."""
    job = jobs_of(current_app).get(backup_id)
    if not job.done:
        job.cancel()
    return Response(b"", status=204)


############################################################################################
# POST /xlist/restore
############################################################################################


_TRUE = {"1", "t", "true"}
_FALSE = {"", "0", "f", "false"}


def _bool_arg(name: str) -> bool:
    """A query bool as Go's strconv.ParseBool reads it (goa's parser)."""
    raw = request.args.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise InvalidInput(f"{name} must be true or false, got {raw!r}", name)


def _affix_arg(name: str) -> str:
    value = request.args.get(name, "")
    if not _AFFIX.match(value):
        raise InvalidInput(f"{name} must be up to 98 characters of [a-zA-Z0-9-_.], got {value!r}", name)
    return value


async def _decode_body(limit: int, max_inflated: int) -> list[BackupList]:
    decoder = BackupDecoder(max_inflated=max_inflated)
    lists: list[BackupList] = []
    received = 0
    # A stream: no whole-body deadline, the minimum rate alone (web/bodies.py).
    async for chunk in body_chunks(request, None, stream=True):
        received += len(chunk)
        if received > limit:
            raise PayloadTooLarge(f"restore body exceeds the limit of {limit} bytes; restore from "
                                  "src_file instead", "body")
        lists += await trio.to_thread.run_sync(decoder.feed, chunk)
    await trio.to_thread.run_sync(decoder.close)
    return lists


def _decode_file(directory: Path, name: str, max_inflated: int) -> list[BackupList]:
    """Decode the backup file ``name`` in ``directory`` (runs in a worker thread).

    Opened relative to the directory with ``O_NOFOLLOW`` (a symlink is refused, not followed)
    and ``O_NONBLOCK`` (a FIFO cannot stall the thread), then only a regular file is read.
    Messages never quote the file's bytes (``reveal=False``).
    """
    dir_fd = _open_dir(directory)
    try:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(name, flags, dir_fd=dir_fd)
        except FileNotFoundError:
            raise InvalidInput(f"src_file: no backup named {name!r} in the server's backup "
                               "directory", "src_file") from None
        except OSError as exc:
            what = "is a symbolic link" if exc.errno == errno.ELOOP else "cannot be opened"
            raise InvalidInput(f"src_file: backup {name!r} {what}; restore reads regular files "
                               "in the backup directory only", "src_file") from None
    finally:
        os.close(dir_fd)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise InvalidInput(f"src_file: backup {name!r} is not a regular file", "src_file")
        os.set_blocking(f.fileno(), True)
        decoder = BackupDecoder(max_inflated=max_inflated, reveal=False, source="src_file")
        lists: list[BackupList] = []
        try:
            while chunk := f.read(_FILE_READ_BYTES):
                lists += decoder.feed(chunk)
        except OSError as exc:
            raise InvalidInput(f"src_file: backup {name!r} cannot be read: "
                               f"{exc.strerror or type(exc).__name__}", "src_file") from None
        decoder.close()
    return lists


def _validate_records(item: BackupList, reveal: bool) -> None:
    """Everything ``RestoreList`` will check, now: once a command is logged it must apply."""
    try:
        RankedList.from_records(item.records)
    except InvalidInput as exc:
        why = exc.message if reveal else "its element records are inconsistent"
        raise BackupCorrupted(f"list {item.list_id!r} in the backup is damaged: {why}",
                              "body") from None


def _refuse_board(list_id: str) -> Any:
    def operation(state: ListState) -> None:
        refuse_live_board(list_id, state, "replacements by a plain list")

    return operation


@backup.post(RESTORE_PATH)
async def restore() -> Response:
    """Restore lists from a backup stream (the body, or ``src_file`` in the backup directory)."""
    app = current_app
    engine = engine_of(app)
    settings = settings_of(app)
    keep = _bool_arg("keep")
    prefix = _affix_arg("list_id_prefix")
    suffix = _affix_arg("list_id_suffix")
    src_file = request.args.get("src_file", "")
    src = request.args.get("src", "")
    if src_file:
        name = check_backup_name(src_file, "src_file")
        directory = backup_dir(settings, "src_file")
        async for _ in body_chunks(request, None, stream=True):  # RankDB drains and ignores it
            pass
        lists = await trio.to_thread.run_sync(_decode_file, directory, name,
                                              settings.max_inflated_bytes)
    elif src:
        raise InvalidInput(
            f"src {src!r} is not supported by pointspace (no URL or s3:// sources); send the "
            "backup as the request body, or name a file in the backup directory with src_file",
            "src")
    else:
        lists = await _decode_body(settings.max_stream_bytes, settings.max_inflated_bytes)

    # Validate every list before the first one changes (h11: validate, then mutate).
    errors: dict[str, str] = {}
    commands: list[RestoreList | RestoreBoard] = []
    now = int(time.time())
    for item in lists:
        target = prefix + item.list_id + suffix
        if not LIST_ID.match(target):
            errors[target] = (f"list id {target!r} (from {item.list_id!r}) is longer than 100 "
                              "characters with the prefix and suffix")
            continue
        if item.elements >= _THREAD_VALIDATE_ELEMENTS:
            await trio.to_thread.run_sync(_validate_records, item, not src_file)
        else:
            _validate_records(item, not src_file)
        if item.board is not None:
            # A live board comes back live, recomputed from counters (its records unused).
            commands.append(RestoreBoard(board_id=target, keep=keep,
                                         definition=in_current_window(item.board, now)))
        else:
            commands.append(RestoreList(list_id=target, settings=item.settings,
                                        records=item.records, keep=keep))
    del lists

    restored = skipped = 0
    for command in commands:
        list_id = command.board_id if isinstance(command, RestoreBoard) else command.list_id
        try:
            # Read first so that a skip or a refusal stays out of the log; the command checks
            # again when it applies (a list created or deleted in between).
            if keep and await engine.ask(LIST, list_id, lambda state: state.exists):
                skipped += 1
                continue
            if isinstance(command, RestoreList):
                await engine.ask(LIST, list_id, _refuse_board(list_id))
            results = await engine.submit(command)
        except PointspaceError as exc:
            errors[list_id] = exc.message
            continue
        # A board's own answer can be overwritten by the refresh forwards that joined its
        # batch (Completion keeps one result per id), hence the read above for ``keep``.
        if results.get(list_id) == "skipped":
            skipped += 1
        else:
            restored += 1
    return respond({"restored": restored, "skipped": skipped, "errors": errors}, request)
