"""What every RankDB-compatible route shares: goa's error body and the cross-list selection.

Theory of operation
-------------------
The RankDB routes live in two blueprints (``web/compat/rankdb/routes.py``, ``web/compat/rankdb/backups.py``)
and are guarded by ``web/auth.py``; all three answer errors with goa v1's body and read
RankDB's cross-list selection (ListQL), so both live here, once.

* **Errors.** ``register_goa_errors`` gives a blueprint the three handlers: a
  ``PointspaceError`` answers its own ``http_status`` (``server_restarting`` when the engine is
  closed, an error's ``code`` attribute where it has one, as ``InvalidParam``), an
  ``HTTPException`` its status, and anything else is a bug: logged, 500.
* **Selection.** ``Selection.from_body`` / ``Selection.from_query`` validate the three fields
  whole, then ``Selection.resolve`` picks lists from ``engine.list_catalog()``: the union of
  ``lists``, the lists whose metadata holds every ``match_metadata`` pair (an empty map matches
  nothing) and the lists whose set is in ``all_in_sets``. ``all_in_sets`` counts on its own (the
  reference ignores it without ``match_metadata`` on body endpoints, rankdb.md 8.7). What *no
  selection at all* means differs by endpoint, so every caller says it: ``all_if_empty=True``
  for verify, reindex and backup (every list, as the reference), ``False`` for the element
  endpoints and the JWT allow-list check (no list).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from quart import Blueprint, Response, request
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException

from engine.errors import EngineClosed, InvalidInput, PointspaceError
from engine.lists import ListSettings
from web.bodies import respond
from web.context import closing_on_error

__all__ = [
    "GOA_CODES",
    "InvalidParam",
    "Selection",
    "goa_body",
    "goa_response",
    "register_goa_errors",
]


############################################################################################
# goa error bodies
############################################################################################

#: goa v1's error codes by status (goa/error.go: ErrBadRequest, ErrNotFound, ...); a status
#: not listed here answers the code ``"error"``.
GOA_CODES: dict[int, str] = {
    400: "bad_request",
    401: "jwt_security_error",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "request_too_large",
    499: "request_cancelled",
    500: "internal",
    503: "service_unavailable",
    507: "insufficient_storage",
}


class InvalidParam(InvalidInput):
    """A malformed path or query parameter (goa's ``invalid_request``; a bad body is
    ``bad_request``)."""

    code = "invalid_request"


def goa_body(status: int, detail: str, *, field: str | None = None,
             code: str | None = None) -> dict[str, Any]:
    """goa v1's ``application/vnd.goa.error``: ``{"id", "code", "status", "detail", "meta"}``.

    The id is random, as goa's; ``meta`` is there only with a ``field`` (goa's ``omitempty``).
    """
    body: dict[str, Any] = {
        "id": secrets.token_urlsafe(6),
        "code": code or GOA_CODES.get(status, "error"),
        "status": status,
        "detail": detail,
    }
    if field is not None:
        body["meta"] = {"field": field}
    return body


def goa_response(status: int, detail: str, *, field: str | None = None,
                 code: str | None = None) -> Response:
    """A goa error body as JSON (or msgpack when asked for), closing after a request body."""
    return closing_on_error(respond(goa_body(status, detail, field=field, code=code), request, status))


def register_goa_errors(blueprint: Blueprint, log: logging.Logger) -> None:
    """Answer every error raised by ``blueprint``'s views with a goa body.

    Domain errors of 500 and up and unexpected exceptions are logged to ``log``.
    """

    async def domain_error(exc: PointspaceError) -> Response:
        code = "server_restarting" if isinstance(exc, EngineClosed) else getattr(exc, "code", None)
        if exc.http_status >= 500:
            log.error("%s %s answered %d: %s", request.method, request.path, exc.http_status, exc)
        return goa_response(exc.http_status, exc.message, field=exc.field, code=code)

    async def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        message = (exc.description or exc.name or "error").rstrip(".")
        return goa_response(status, message[:1].lower() + message[1:],
                            field="body" if status == 413 else None)

    async def unexpected_error(exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return goa_response(500, "internal error; the server log has the details")

    blueprint.register_error_handler(PointspaceError, domain_error)
    blueprint.register_error_handler(HTTPException, http_error)
    blueprint.register_error_handler(Exception, unexpected_error)


############################################################################################
# Cross-list selection (rankdb.md 1.2, "Cross-list (xlist) list selection")
############################################################################################


@dataclass(frozen=True, slots=True)
class Selection:
    """Which lists a cross-list request names: ``lists``, ``match_metadata``, ``all_in_sets``.

    ``lists`` are trimmed, empty ones dropped, de-duplicated and sorted (RankDB's APIListIDs);
    ``all_in_sets`` are matched exactly.

    >>> s = Selection.from_body({"lists": [" b", "a", "", "a"], "all_in_sets": ["games"]})
    >>> s.lists, s.match_metadata, s.all_in_sets, s.empty
    (['a', 'b'], {}, ['games'], False)
    """

    lists: list[str]
    match_metadata: dict[str, str]
    all_in_sets: list[str]

    @classmethod
    def from_body(cls, raw: Any, where: str | None = None) -> Selection:
        """The selection in a decoded body: the body itself (``where=None``: RankDB's xlist
        routes), or the object at key ``where`` (``"lists"`` in a backup request). ``None``
        is no selection.

        Raises:
            InvalidInput: not an object, or a field of the wrong type (``field`` names it,
                prefixed with ``where``).
        """
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            field = where or "body"
            raise InvalidInput(f"{field} must be an object {{lists?, match_metadata?, all_in_sets?}}", field)
        prefix = f"{where}." if where else ""
        return cls(
            _list_ids(raw.get("lists"), f"{prefix}lists"),
            _metadata(raw.get("match_metadata"), f"{prefix}match_metadata"),
            _sets(raw.get("all_in_sets"), f"{prefix}all_in_sets"),
        )

    @classmethod
    def from_query(cls, args: MultiDict[str, str]) -> Selection:
        """The selection in a query string: ``lists`` and ``all_in_sets`` repeated,
        ``match_metadata`` a JSON-encoded object (RankDB's GET/DELETE ``/xlist/elements``).

        Raises:
            InvalidParam: ``match_metadata`` is not a JSON object of strings to strings.
        """
        raw = args.get("match_metadata", "")
        match: dict[str, str] = {}
        if raw:
            try:
                decoded = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise InvalidParam(f"match_metadata must be a JSON object: {exc}", "match_metadata") from None
            try:
                match = _metadata(decoded, "match_metadata")
            except InvalidInput as exc:
                raise InvalidParam(exc.message, "match_metadata") from None
        return cls(
            _list_ids(args.getlist("lists"), "lists"),
            match,
            _sets(args.getlist("all_in_sets"), "all_in_sets"),
        )

    @property
    def empty(self) -> bool:
        """No ``lists``, no ``match_metadata`` and no ``all_in_sets``."""
        return not (self.lists or self.match_metadata or self.all_in_sets)

    def resolve(self, catalog: Iterable[tuple[str, ListSettings]], *, all_if_empty: bool
                ) -> tuple[list[str], list[str]]:
        """The lists selected from ``catalog`` (``engine.list_catalog()``).

        Args:
            all_if_empty: what an ``empty`` selection means: every list (RankDB's verify,
                reindex and backup) or none (its element endpoints).

        Returns:
            ``(existing, missing)``: the selected lists that exist, sorted by id, and the named
            ones that do not (RankDB reports those as ``"not found"``).

        Runtime complexity: ``O(lists in the catalog)``.
        """
        everything = all_if_empty and self.empty
        wanted = set(self.lists)
        sets = set(self.all_in_sets)
        match = self.match_metadata.items()
        selected: set[str] = set()
        known: set[str] = set()
        for list_id, settings in catalog:
            known.add(list_id)
            if (
                everything
                or list_id in wanted
                or (match and all(settings.metadata.get(k) == v for k, v in match))
                or settings.set in sets
            ):
                selected.add(list_id)
        return sorted(selected), sorted(wanted - known)


def _strings(raw: Any, field: str) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        raise InvalidInput(f"{field} must be an array of strings, got {raw!r:.80}", field)
    return raw


def _list_ids(raw: Any, field: str) -> list[str]:
    return sorted({i.strip() for i in _strings(raw, field) if i.strip()})


def _sets(raw: Any, field: str) -> list[str]:
    return sorted(set(_strings(raw, field)))


def _metadata(raw: Any, field: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
    ):
        raise InvalidInput(f"{field} must be an object of strings to strings", field)
    return dict(raw)
