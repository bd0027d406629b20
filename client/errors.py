"""What the client raises: the server's refusal, carried whole, or no answer at all.

Every answer of 400 and up becomes a :class:`PointspaceHTTPError` subclass chosen by status
(:data:`ERRORS_BY_STATUS`), carrying what the server said: ``message`` and ``field`` from the
native body ``{"error", "field"}``, or from goa's ``{"id", "code", "status", "detail",
"meta": {"field"}}`` on the RankDB routes (then ``code`` and ``error_id`` too). Catch the
subclass for the case you handle, and let the rest propagate:

>>> from client.errors import InvalidRequest, error_for_status
>>> exc = error_for_status(400, "body[0].ts: expected `int` >= 0 (was -5)", field="body[0].ts")
>>> isinstance(exc, InvalidRequest), exc.status, exc.field
(True, 400, 'body[0].ts')
>>> str(exc)
'400 body[0].ts: expected `int` >= 0 (was -5) [field body[0].ts]'

A request that got no answer (nothing listening, a timeout, a connection cut mid-answer)
raises :class:`PointspaceTransportError`; its ``request_sent`` says whether the request may
have reached the server, which is what decides whether a write is safe to send again.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ERRORS_BY_STATUS",
    "Conflict",
    "Forbidden",
    "InsufficientStorage",
    "InternalServerError",
    "InvalidRequest",
    "MethodNotAllowed",
    "MisdirectedRequest",
    "NotFound",
    "PayloadTooLarge",
    "PointspaceClientError",
    "PointspaceHTTPError",
    "PointspaceTransportError",
    "RequestTimeout",
    "ServiceUnavailable",
    "UnexpectedResponse",
    "Unauthorized",
    "UnsupportedMediaType",
    "error_for_status",
]


class PointspaceClientError(Exception):
    """Base class of everything this client raises on purpose."""


class PointspaceHTTPError(PointspaceClientError):
    """The server answered with an error status.

    Attributes:
        status: the HTTP status.
        message: the server's message (``error`` in native bodies, ``detail`` in goa's).
        field: the request field at fault, where the server named one (``None`` otherwise).
        code: goa's error code on RankDB routes (``not_found``, ``invalid_request``, ...).
        error_id: goa's random error id on RankDB routes (quote it when reporting a bug).
        method, url: the request that was refused.
        body: the decoded error body (``None`` when it was not JSON).
        retry_after: the ``Retry-After`` seconds the server sent, if any.
    """

    status: int = 0

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        field: str | None = None,
        code: str | None = None,
        error_id: str | None = None,
        method: str = "",
        url: str = "",
        body: Any = None,
        retry_after: float | None = None,
    ) -> None:
        if status is not None:
            self.status = status
        self.message = message
        self.field = field
        self.code = code
        self.error_id = error_id
        self.method = method
        self.url = url
        self.body = body
        self.retry_after = retry_after
        where = f" [field {field}]" if field else ""
        super().__init__(f"{self.status} {message}{where}")


class InvalidRequest(PointspaceHTTPError):
    """400: the request is malformed; ``field`` names the part at fault. Sending it again
    gets the same answer, and nothing was stored (the server validates a batch whole)."""

    status = 400


class Unauthorized(PointspaceHTTPError):
    """401: JWT is on and the token is missing, expired, badly signed or lacks the scope."""

    status = 401


class Forbidden(PointspaceHTTPError):
    """403: refused at the edge (a foreign ``Origin``) or by a token's allow-lists."""

    status = 403


class NotFound(PointspaceHTTPError):
    """404: no such list, element, leaderboard or route."""

    status = 404


class MethodNotAllowed(PointspaceHTTPError):
    """405: the path exists but not with this method (a client older or newer than the server)."""

    status = 405


class RequestTimeout(PointspaceHTTPError):
    """408: the body arrived too slowly (the server's ``body_timeout_s`` or minimum rate)."""

    status = 408


class Conflict(PointspaceHTTPError):
    """409: the request contradicts stored state (a list that exists, a write to a live
    leaderboard)."""

    status = 409


class PayloadTooLarge(PointspaceHTTPError):
    """413: the body or batch is past the server's limit; split it, or stream NDJSON."""

    status = 413


class UnsupportedMediaType(PointspaceHTTPError):
    """415: the route does not take this ``Content-Type`` (a bug in the caller of
    :meth:`~client.sync.PointspaceClient.request`: the typed methods send the right one)."""

    status = 415


class MisdirectedRequest(PointspaceHTTPError):
    """421: the ``Host`` is not one the server answers (DNS rebinding protection); use the
    name the server serves, or start it with ``--allowed-host``."""

    status = 421


class InternalServerError(PointspaceHTTPError):
    """500: a bug in the server; its log has the traceback."""

    status = 500


class ServiceUnavailable(PointspaceHTTPError):
    """503: overloaded or shutting down; reads are retried (see ``client._transport``)."""

    status = 503


class InsufficientStorage(PointspaceHTTPError):
    """507: the server's disk refused the write; nothing was stored."""

    status = 507


#: The exception class for each status the server sends; any other status raises
#: :class:`PointspaceHTTPError` itself.
ERRORS_BY_STATUS: dict[int, type[PointspaceHTTPError]] = {
    cls.status: cls
    for cls in (
        InvalidRequest, Unauthorized, Forbidden, NotFound, MethodNotAllowed, RequestTimeout,
        Conflict, PayloadTooLarge, UnsupportedMediaType, MisdirectedRequest,
        InternalServerError, ServiceUnavailable, InsufficientStorage,
    )
}


def error_for_status(status: int, message: str, **details: Any) -> PointspaceHTTPError:
    """The exception for ``status`` (its subclass when there is one), with ``details``."""
    cls = ERRORS_BY_STATUS.get(status, PointspaceHTTPError)
    return cls(message, status=status, **details)


class PointspaceTransportError(PointspaceClientError):
    """No answer: nothing listening, a timeout, or the connection cut before the answer.

    Attributes:
        request_sent: ``False`` when the request provably never left (the connection could
            not be made), so even a write may be sent again; ``True`` when it may have
            reached the server, so a write's outcome is unknown (read it back, or resend it
            only if it is idempotent -- diff-mode events, an element ``PUT``).
        attempts: how many times the request was tried.
        method, url: the request.

    The underlying ``httpx`` exception is the ``__cause__``.
    """

    def __init__(self, message: str, *, request_sent: bool, attempts: int, method: str,
                 url: str) -> None:
        super().__init__(message)
        self.request_sent = request_sent
        self.attempts = attempts
        self.method = method
        self.url = url


class UnexpectedResponse(PointspaceClientError):
    """The server answered 2xx with a body this client cannot read as the documented type (a
    server much newer or older than the client, or something else listening on the port)."""
