"""Domain errors: one base class that carries the HTTP status the server should send.

Like h11's ``ProtocolError(error_status_hint=...)``, every error raised by the engine knows whose
fault it was and which status fits, so ``web/`` turns any ``PointspaceError`` into a response in one
place. Anything that is not a ``PointspaceError`` is a bug and becomes a logged 500.

Messages are lowercase, state the broken rule and the offending value (``!r``), and where there
is one, the fix.
"""

from __future__ import annotations


class PointspaceError(Exception):
    """Base class of every error the engine raises on purpose.

    Attributes:
        http_status: the status an HTTP front end should answer with.
        field: the request field at fault, where one is (``None`` otherwise).
    """

    http_status: int = 400

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_json(self) -> dict[str, object]:
        """The JSON error body the native API sends: ``{"error": ..., "field": ...}``."""
        body: dict[str, object] = {"error": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body


class InvalidInput(PointspaceError):
    """The caller sent something malformed: a missing field, a wrong type, a value out of range."""

    http_status = 400


class NotFound(PointspaceError):
    """The named entity (a list, an element, a leaderboard) does not exist."""

    http_status = 404


class Conflict(PointspaceError):
    """The request contradicts stored state, e.g. creating a list that already exists."""

    http_status = 409


class PayloadTooLarge(PointspaceError):
    """A body or batch is larger than the configured limit."""

    http_status = 413


class Overloaded(PointspaceError):
    """The server is shedding load (mailboxes full past the wait limit); retry later."""

    http_status = 503


class EngineClosed(PointspaceError):
    """*Your* code closed the engine and then used it (cf. trio's ClosedResourceError)."""

    http_status = 503


class InternalError(PointspaceError):
    """A bug: an operation raised something that is not a ``PointspaceError``.

    The actor that ran it logs the traceback and answers this instead of dying, so one bad
    request cannot take every user's state down with the process.
    """

    http_status = 500


class StorageFailure(PointspaceError):
    """The disk refused a write (full, read-only, permissions): the mutation was not accepted.

    Unlike ``EngineClosed`` this is the world's fault (cf. trio's BrokenResourceError).
    """

    http_status = 507


def first_domain_error(exc: BaseException) -> PointspaceError | None:
    """The ``PointspaceError`` inside ``exc`` when it is one, or a (nested) exception group
    holding exactly one leaf that is one; else None.

    Trio wraps errors raised inside nurseries in exception groups; at the edges (``Engine.open``,
    the CLI) a single domain error is more useful unwrapped.
    """
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc if isinstance(exc, PointspaceError) else None
