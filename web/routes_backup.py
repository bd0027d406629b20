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

A restore decodes and validates the **whole** stream before it changes anything: a damaged,
truncated or wrongly compressed stream is a 400 and no list changes. Then each list is one
``RestoreList`` command (one log record), so a crash mid-restore leaves whole lists. Per-list
failures (an id too long after the prefix, a log record over its size limit) go into
``errors`` (RankDB meant to, but never initialised that map).

Errors on these routes use RankDB's goa body ``{"id", "code", "status", "detail", "meta"}``
(``web/rankdb_common.py``, which also holds the cross-list selection).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import string
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import trio
from quart import Blueprint, Response, current_app, request
from quart.blueprints import BlueprintSetupState

from engine.engine import Engine
from engine.errors import InvalidInput, NotFound, PayloadTooLarge, PointspaceError
from engine.lists import LIST, LIST_ID, ListSettings, ListState, RestoreList
from engine.ranked import RankedList
from snapshots.backup import BackupCorrupted, BackupDecoder, BackupEncoder, BackupList
from web.app import engine_of, settings_of
from web.bodies import decode_body, mark_body_read, read_body, respond
from web.rankdb_common import Selection, register_goa_errors

log = logging.getLogger("pointspace.web.backup")

backup = Blueprint("backup", __name__)
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
    """The operation run inside a list's actor turn: its settings and a copy of its chunks."""

    def operation(state: ListState) -> tuple[ListSettings, list[dict[str, Any]]]:
        ranked = state.require(list_id)
        assert state.settings is not None
        return state.settings, list(ranked.to_records())

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
            settings, records = await engine.ask(LIST, list_id, _copy_list(list_id))
        except NotFound:
            job.errors[list_id] = "not found"  # deleted since the selection
            continue
        except PointspaceError as exc:
            job.errors[list_id] = exc.message
            continue
        elements = sum(r["count"] for r in records)
        piece = encoder.start_list(list_id, settings, elements=elements, chunks=len(records))
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

    if destination.type == "file":
        target = _check_file_target(destination.path)
        job = jobs_of(app).new("file", str(target), selected)
        _missing_errors(job, missing)
        app.add_background_task(_write_file, engine, job, target)
    else:
        base = _server_base(destination.path)
        headers = _forwarded_auth()
        await _check_server(base, headers)
        query = {"list_id_prefix": destination.prefix, "list_id_suffix": destination.suffix}
        query = {k: v for k, v in query.items() if v}
        uri = str(httpx.URL(base + RESTORE_PATH, params=query))
        job = jobs_of(app).new("server", uri, selected)
        _missing_errors(job, missing)
        app.add_background_task(_send_to_server, engine, job, uri, headers)
    return respond({"id": job.id, "callback_url": f"/backup/{job.id}"}, request, 201)


def _missing_errors(job: BackupJob, missing: list[str]) -> None:
    for list_id in missing:
        job.errors[list_id] = "not found"


def _check_file_target(raw: str) -> Path:
    target = Path(raw).expanduser().absolute()
    if target.is_dir():
        raise InvalidInput(f"destination.path {raw!r} is a directory; name a file", "destination.path")
    if not target.parent.is_dir():
        raise InvalidInput(f"destination.path {raw!r}: directory {str(target.parent)!r} does not "
                           "exist on the server", "destination.path")
    return target


async def _write_file(engine: Engine, job: BackupJob, target: Path) -> None:
    """Background job: write the backup next to ``target``, then rename it into place."""
    tmp = target.with_name(f".{target.name}.{job.id}.tmp")
    try:
        with trio.CancelScope() as job.scope:
            out = await trio.to_thread.run_sync(open, tmp, "wb")
            try:
                async with aclosing(backup_stream(engine, job)) as stream:
                    async for piece in stream:
                        await trio.to_thread.run_sync(out.write, piece)
                if job.complete:
                    await trio.to_thread.run_sync(out.flush)
                    await trio.to_thread.run_sync(os.fsync, out.fileno())
            finally:
                out.close()
            if job.complete:
                await trio.to_thread.run_sync(os.replace, tmp, target)
    except OSError as exc:
        job.errors["file"] = f"could not write {str(target)!r}: {exc.strerror or exc}"
    except Exception:
        log.exception("backup job %s failed", job.id)
        job.errors["internal"] = "internal error; the server log has the details"
    finally:
        job.scope = None
        if not job.complete or job.cancelled or "file" in job.errors or "internal" in job.errors:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(lambda: tmp.unlink(missing_ok=True))
        job.finish()


def _server_base(raw: str) -> str:
    """``host:port`` (RankDB) or an http(s) URL, as the base URL of the other server."""
    text = raw.strip().rstrip("/")
    url = text if "://" in text else f"http://{text}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # "[::1": an unclosed IPv6 bracket; a port out of range
        raise InvalidInput(f"destination.path must be host:port of another server, got {raw!r}",
                           "destination.path") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None or parts.path:
        raise InvalidInput(f"destination.path must be host:port of another server, got {raw!r}",
                           "destination.path")
    return f"{parts.scheme}://{parts.netloc}"


def _forwarded_auth() -> dict[str, str]:
    """The caller's token, passed on to the destination (a manage token there too)."""
    token = request.headers.get("Authorization")
    return {"Authorization": token} if token else {}


async def _check_server(base: str, headers: dict[str, str]) -> None:
    """RankDB checks the destination's ``/health`` before starting; pointspace servers without
    the RankDB routes answer ``/health/ping``."""
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            reply = await client.get(base + "/health", headers=headers)
            if reply.status_code == 404:
                reply = await client.get(base + "/health/ping", headers=headers)
    except httpx.HTTPError as exc:
        raise InvalidInput(f"destination server {base} is not reachable: {exc!s:.200}",
                           "destination.path") from None
    if reply.status_code != 200:
        raise InvalidInput(f"destination server {base} answered {reply.status_code} to its health "
                           f"check: {reply.text[:200]!r}", "destination.path")


async def _send_to_server(engine: Engine, job: BackupJob, uri: str, headers: dict[str, str]) -> None:
    """Background job: stream the backup into the other server's restore, record its answer."""
    stream = backup_stream(engine, job)
    try:
        with trio.CancelScope() as job.scope:
            timeout = httpx.Timeout(30, read=None)  # the answer comes after the whole restore
            async with aclosing(stream), httpx.AsyncClient(timeout=timeout) as client:
                reply = await client.post(
                    uri, content=stream,
                    headers={**headers, "Content-Type": "application/octet-stream"},
                )
            if reply.status_code == 200:
                result = reply.json()
                job.custom["restored"] = str(result.get("restored", 0))
                job.custom["skipped"] = str(result.get("skipped", 0))
                for list_id, message in (result.get("errors") or {}).items():
                    job.errors[f"server:{list_id}"] = str(message)
            elif not job.cancelled:
                job.errors["server"] = f"destination answered {reply.status_code}: {reply.text[:300]}"
    except httpx.HTTPError as exc:
        job.errors["server"] = f"could not send to {uri}: {exc!s:.300}"
    except Exception:
        log.exception("backup job %s failed", job.id)
        job.errors["internal"] = "internal error; the server log has the details"
    finally:
        job.scope = None
        job.finish()


############################################################################################
# GET / DELETE /backup/{id}
############################################################################################


@backup.get("/backup/<backup_id>")
async def backup_status(backup_id: str) -> Response:
    job = jobs_of(current_app).get(backup_id)
    view = request.args.get("view", "default")
    return respond(job.status(full=view == "full"), request)


@backup.delete("/backup/<backup_id>")
async def cancel_backup(backup_id: str) -> Response:
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


async def _decode_body(limit: int) -> list[BackupList]:
    mark_body_read()
    decoder = BackupDecoder()
    lists: list[BackupList] = []
    received = 0
    async for chunk in request.body:
        received += len(chunk)
        if received > limit:
            raise PayloadTooLarge(f"restore body exceeds the limit of {limit} bytes; restore from "
                                  "src_file instead", "body")
        lists += await trio.to_thread.run_sync(decoder.feed, chunk)
    await trio.to_thread.run_sync(decoder.close)
    return lists


def _decode_file(path: str) -> list[BackupList]:
    """Decode a server-local file (runs in a worker thread)."""
    decoder = BackupDecoder()
    lists: list[BackupList] = []
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_FILE_READ_BYTES):
                lists += decoder.feed(chunk)
    except OSError as exc:
        raise InvalidInput(f"src_file {path!r} cannot be read on the server: {exc.strerror or exc}",
                           "src_file") from None
    decoder.close()
    return lists


def _validate_records(item: BackupList) -> None:
    """Everything ``RestoreList`` will check, now: once a command is logged it must apply."""
    try:
        RankedList.from_records(item.records)
    except InvalidInput as exc:
        raise BackupCorrupted(f"list {item.list_id!r} in the backup is damaged: {exc.message}",
                              "body") from None


@backup.post(RESTORE_PATH)
async def restore() -> Response:
    """Restore lists from a backup stream (the body, or ``src_file`` on the server)."""
    app = current_app
    engine = engine_of(app)
    keep = _bool_arg("keep")
    prefix = _affix_arg("list_id_prefix")
    suffix = _affix_arg("list_id_suffix")
    src_file = request.args.get("src_file", "")
    src = request.args.get("src", "")
    if src_file:
        mark_body_read()
        async for _ in request.body:  # RankDB drains and ignores the body
            pass
        lists = await trio.to_thread.run_sync(_decode_file, src_file)
    elif src:
        raise InvalidInput(
            f"src {src!r} is not supported by pointspace (no URL or s3:// sources); send the "
            "backup as the request body, or name a file on the server with src_file", "src")
    else:
        lists = await _decode_body(settings_of(app).max_stream_bytes)

    # Validate every list before the first one changes (h11: validate, then mutate).
    errors: dict[str, str] = {}
    commands: list[RestoreList] = []
    for item in lists:
        target = prefix + item.list_id + suffix
        if not LIST_ID.match(target):
            errors[target] = (f"list id {target!r} (from {item.list_id!r}) is longer than 100 "
                              "characters with the prefix and suffix")
            continue
        if item.elements >= _THREAD_VALIDATE_ELEMENTS:
            await trio.to_thread.run_sync(_validate_records, item)
        else:
            _validate_records(item)
        commands.append(RestoreList(list_id=target, settings=item.settings,
                                    records=item.records, keep=keep))
    del lists

    restored = skipped = 0
    for command in commands:
        try:
            results = await engine.submit(command)
        except PointspaceError as exc:
            errors[command.list_id] = exc.message
            continue
        outcome = next(iter(results.values()), None)
        if outcome == "skipped":
            skipped += 1
        else:
            restored += 1
    return respond({"restored": restored, "skipped": skipped, "errors": errors}, request)
