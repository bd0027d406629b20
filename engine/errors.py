"""Domain errors: one base class that carries the HTTP status the server should send.

Like h11's ``ProtocolError(error_status_hint=...)``, every error raised by the engine knows whose
fault it was and which status fits, so ``web/`` turns any ``PointspaceError`` into a response in one
place. Anything that is not a ``PointspaceError`` is a bug and becomes a logged 500.

Messages are lowercase, state the broken rule and the offending value, and where there is one,
the fix. The value is quoted with :func:`quote`, never a bare ``!r``: a request may carry a
10 MB string, and an error that echoes it whole is a 10 MB answer (and a 10 MB log line). As a
last line of defence every ``PointspaceError`` cuts its message and field to a bounded length
(``MAX_MESSAGE_CHARS``, ``MAX_FIELD_CHARS``), so a site that forgets :func:`quote` still cannot
echo megabytes.
"""

from __future__ import annotations

#: Most characters of a value's repr that :func:`quote` keeps: enough to recognise the value
#: (a name, a time zone, the start of a line), far too few to echo a payload. (Precedent:
#: PostgreSQL's ``log_parameter_max_length_on_error`` and pytest's ``saferepr`` both cut
#: values to a few dozen characters; saferepr's default is 240.)
QUOTE_LIMIT = 80
#: Longest message an error keeps; longer ones are cut with a note. The longest message the
#: engine writes is a few hundred characters (a rule, its bounds and a quoted value), so 1 KiB
#: only ever cuts a message that echoes input. (Precedent: nginx cuts each error log line at
#: ``NGX_MAX_ERROR_STR``, 2 KiB.)
MAX_MESSAGE_CHARS = 1024
#: Longest field name an error keeps: fields are paths such as ``events[3].ts``, but msgspec
#: and the event validator name an unknown key, which the client chose.
MAX_FIELD_CHARS = 200
#: Integers longer than this many bits are described, not written out (Python refuses to
#: print integers of more than 4300 digits, ``sys.get_int_max_str_digits``).
_MAX_INT_BITS = 1024
#: Deepest nesting :func:`quote` writes out.
_MAX_DEPTH = 8


class PointspaceError(Exception):
    """Base class of every error the engine raises on purpose.

    Attributes:
        http_status: the status an HTTP front end should answer with.
        field: the request field at fault, where one is (``None`` otherwise).
    """

    http_status: int = 400

    def __init__(self, message: str, field: str | None = None) -> None:
        message = _cut(message, MAX_MESSAGE_CHARS, "message")
        if field is not None:
            field = _cut(field, MAX_FIELD_CHARS, "field")
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


############################################################################################
# Quoting values in messages


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` for an error message, cut to about ``limit`` characters.

    A short value reads exactly as ``!r`` would write it; a long one keeps its start and says
    how long it was, and the work done is bounded by ``limit`` too (a 10 MB string is sliced
    before it is repr'd, a long list is walked only as far as the cut). Use it wherever a
    message quotes a value the client sent.

    >>> quote("Europe/Oslo"), quote(-5), quote([1, "a"])
    ("'Europe/Oslo'", '-5', "[1, 'a']")
    >>> quote("x" * 10_000_000, limit=10)
    "'xxxxxxxxxx'... (10000000 characters)"
    >>> quote(list(range(1000)), limit=20)
    '[0, 1, 2, 3, 4, 5, 6... (1000 items)'
    >>> quote(2**5000)
    '<an integer of 5001 bits>'

    Runtime complexity: O(limit), whatever the size of ``value``.
    """
    if isinstance(value, str | bytes | bytearray):
        if len(value) <= limit:
            return repr(value)
        unit = "characters" if isinstance(value, str) else "bytes"
        return f"{value[:limit]!r}... ({len(value)} {unit})"
    text, whole = _bounded_repr(value, limit)
    if whole and len(text) <= limit:
        return text
    size = f" ({len(value)} items)" if isinstance(value, list | tuple | dict | set | frozenset) else ""
    return f"{text[:limit]}...{size}"


def _bounded_repr(value: object, budget: int, depth: int = 0) -> tuple[str, bool]:
    """``(repr(value), True)`` when that is at most ``budget`` characters; else ``(start,
    False)`` where ``start`` begins as ``repr(value)`` would, for the caller to cut.

    Containers are walked only until the budget is spent, and strings sliced before they are
    repr'd. Containers nested deeper than ``_MAX_DEPTH`` show as ``[...]`` (a JSON body may
    nest 1024 deep, past Python's recursion limit).
    """
    kind = type(value)
    if isinstance(value, str | bytes | bytearray):
        if len(value) <= budget:
            return repr(value), True
        return repr(value[: budget + 1]), False
    if kind is int or kind is bool:
        bits = value.bit_length()  # type: ignore[attr-defined]
        return (repr(value), True) if bits <= _MAX_INT_BITS else (f"<an integer of {bits} bits>", True)
    if kind in _BRACKETS and value:
        opening, closing = _BRACKETS[kind]
        if depth >= _MAX_DEPTH:
            return f"{opening}...{closing}", True
        depth += 1
        parts: list[str] = []
        used = len(opening) + len(closing)
        pairs = value.items() if kind is dict else ((item, None) for item in value)  # type: ignore[attr-defined]
        for key, item in pairs:
            part, whole = _bounded_repr(key, budget, depth)
            if whole and kind is dict:
                rest, whole = _bounded_repr(item, budget, depth)
                part = f"{part}: {rest}"
            parts.append(part)
            used += len(part) + 2 * (len(parts) > 1)
            if not whole or used > budget:
                return opening + ", ".join(parts), False
        if kind is tuple and len(parts) == 1:
            closing = ",)"
        return opening + ", ".join(parts) + closing, True
    try:
        return repr(value), True
    except Exception:  # a repr that fails must not turn a 400 into a 500
        return f"<{kind.__name__} object>", True


#: How the containers :func:`_bounded_repr` walks open and close (empty ones use ``repr``).
_BRACKETS: dict[type, tuple[str, str]] = {
    list: ("[", "]"),
    tuple: ("(", ")"),
    dict: ("{", "}"),
    set: ("{", "}"),
    frozenset: ("frozenset({", "})"),
}


def _cut(text: str, limit: int, what: str) -> str:
    """``text`` if at most ``limit`` characters, else its start and a note of the cut."""
    if len(text) <= limit:
        return text
    note = f"... ({what} cut at {limit} of {len(text)} characters)"
    return text[: limit - len(note)] + note


def first_domain_error(exc: BaseException) -> PointspaceError | None:
    """The ``PointspaceError`` inside ``exc`` when it is one, or a (nested) exception group
    holding exactly one leaf that is one; else None.

    Trio wraps errors raised inside nurseries in exception groups; at the edges (``Engine.open``,
    the CLI) a single domain error is more useful unwrapped.
    """
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc if isinstance(exc, PointspaceError) else None
