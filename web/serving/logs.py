"""Logging: one structured JSON object per line by default, or plain text; every line.

What goes through here (``configure_logging`` installs one handler on the root logger):

* our own loggers (``pointspace.*``: the server, recovery progress, snapshots, the log);
* Hypercorn's error logger (``hypercorn.error``), given to it as a ``Logger`` so that it adds
  no handler of its own (``web/serving/server.py: hypercorn_config``);
* Quart's app logger (it adds its own handler only when no ancestor has one);
* the access log, :class:`AccessLog`: one line per request with its fields.

A JSON line is ``{"ts", "level", "logger", "message", ...fields, "exc"?}``. A record's
``extra={"fields": {...}}`` adds keys (the access log's ``method``, ``path``, ``status``...),
so a log shipper reads values without parsing the message. One event is one line: a
traceback travels inside ``exc``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

access_log = logging.getLogger("pointspace.access")

#: Longest user agent written into an access-log line (clients choose it; Apache and nginx
#: log it whole, but one line per request should stay a line).
MAX_AGENT_CHARS = 200


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", ...fields, "exc"?}`` per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                entry.setdefault(key, value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """``2026-12-07T03:49:17.062Z INFO pointspace: message`` (UTC, as the JSON lines)."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(fmt: str, *, level: int = logging.INFO) -> None:
    """Send ``level`` and above to stderr as JSON lines (``fmt="json"``) or text."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class AccessLog:
    """ASGI middleware: one ``pointspace.access`` line per HTTP request, once it ended.

    Fields: ``remote``, ``method``, ``path`` (with the query string), ``http``, ``status``
    (``null`` when the client left before an answer), ``bytes`` (of the response body),
    ``duration_ms`` and ``user_agent``. Installed by ``serve --access-log`` around the app
    (``app.asgi_app``), so it sees every request the app sees -- not hypercorn's own refusals
    of malformed requests, which never reach the app.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: int | None = None
        size = 0

        async def counting_send(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            log_request(scope, status, size, time.perf_counter() - started)


def log_request(scope: Scope, status: int | None, size: int, seconds: float) -> None:
    """Write the access-log line of one request."""
    client = scope.get("client")
    remote = f"{client[0]}:{client[1]}" if client and len(client) == 2 else None
    query = scope.get("query_string", b"").decode("latin-1")
    path = scope.get("path", "") + (f"?{query}" if query else "")
    agent = None
    for name, value in scope.get("headers", ()):
        if name == b"user-agent":
            agent = value.decode("latin-1")[:MAX_AGENT_CHARS]
            break
    method = scope.get("method", "")
    http = scope.get("http_version", "1.1")
    fields = {
        "remote": remote, "method": method, "path": path, "http": http, "status": status,
        "bytes": size, "duration_ms": round(seconds * 1000, 3), "user_agent": agent,
    }
    access_log.info(
        '%s "%s %s HTTP/%s" %s %d %.1fms %s', remote or "-", method, path, http,
        status if status is not None else "-", size, seconds * 1000, json.dumps(agent),
        extra={"fields": fields},
    )
