"""What both clients share and neither does I/O for: request values, bodies, error mapping, retries.

Theory of operation
-------------------
A call is a :class:`Call`: method, path, query, body bytes with their ``Content-Type``, whether
it is *safe to repeat*, and how to decode a 2xx answer. ``client/_calls.py`` builds one per API
operation; :class:`~client.sync.PointspaceClient` and :class:`~client.aio.AsyncPointspaceClient`
only send it, so the two cannot differ in what they send or how they judge the answer.

**Bodies.** Batches go as msgpack by default (``application/msgpack``: smaller than JSON and
decoded by the server without a text pass); everything else, and batches on request, as JSON.
Both are encoded by msgspec, which writes integers of any size exactly. msgpack has no integer
wider than 64 bits, so a batch holding one is sent as JSON instead: the server then answers the
400 naming the field, as it would for any other bad value, rather than the client failing
locally with a different error. Every body carries its ``Content-Type``: the server's edge
refuses types a route does not declare (``web/edge.py``, 415), and ``text/plain`` everywhere.
Answers are asked for as plain JSON (``Accept: application/json``): Python's ``int`` holds any
JSON number exactly, so OData's ``IEEE754Compatible=true`` (strings for integers past 2**53)
is for JavaScript and never sent.

**Errors.** Any answer of 400 and up raises the :mod:`client.errors` class for its status, with
the server's message and field read from the native body ``{"error", "field"}`` or goa's
``{"id", "code", "status", "detail", "meta": {"field"}}`` (RankDB routes), whichever it is;
a body that is neither (a proxy's HTML page) becomes the message, cut to 200 characters.

**Retries** (:class:`RetryPolicy`, :func:`retry_delay`). A request is repeated only when all
of these hold:

1. It is *safe to repeat*: a read -- ``GET``, and the ``POST`` s that only read
   (``/api/query``, ``/api/breakdown``, ``/api/leaderboards/rank``, ``.../elements/find``) --
   or a write whose caller passed ``idempotent=True``. Writes are never repeated otherwise:
   a write whose answer was lost may have been applied, and adding the same events twice
   counts them twice. ``idempotent=True`` is the caller's statement that applying the write
   twice equals applying it once, which holds for diff-mode events (``mode="diff"``: the
   server adds only what is new since the activity's last report), for a ``PUT`` of an
   element's absolute score, and for deletes.
2. The failure says nothing about the request itself: no answer at all (nothing listening, a
   timeout, a connection cut), or ``502``/``503``/``504`` (a proxy's upstream is down; the
   server is overloaded or shutting down). A 4xx would be answered the same again; a 500 is
   a bug that repeating will not fix; a 507 is a full disk.
3. Attempts are left (``attempts`` counts the first), and the server's ``Retry-After``, if it
   sent one, is no longer than ``max_delay``: a server asking for a longer pause gets the
   error back, with ``retry_after`` set, so the caller decides.

The pause before retry ``n`` (1-based) is "full jitter" exponential backoff, uniform in
``[0, min(max_delay, base_delay * 2**(n-1))]`` (Brooker, "Exponential Backoff And Jitter",
AWS Architecture Blog 2015: spreads the retries of many clients that failed together), and at
least ``Retry-After``. So the worst case is bounded: ``attempts`` times the request timeout,
plus at most ``sum(min(max_delay, base_delay * 2**i) for i in range(attempts - 1))`` of
pauses -- 1.75 s with the defaults.

Both clients run the same loop: build the request, send it, and hand the outcome -- the
answer, or the transport error -- to :func:`next_step`, which does no I/O (as h11's
``Connection`` does none) and says what comes next: return this answer, raise this error, or
sleep this long and send again. Only the sending and the sleeping differ (``time.sleep`` in
:mod:`client.sync`, ``anyio.sleep`` in :mod:`client.aio`).

A write that fails without an answer raises
:class:`~client.errors.PointspaceTransportError` with ``request_sent`` false only when the
connection was never made (then nothing reached the server and it may be sent again).

>>> policy = RetryPolicy(attempts=3, base_delay=0.5, max_delay=0.75)
>>> [policy.backoff_cap(n) for n in (1, 2, 3)]
[0.5, 0.75, 0.75]
>>> retry_delay(policy, attempt=1, safe=True, status=503, retry_after=None, rand=lambda: 1.0)
0.5
>>> retry_delay(policy, attempt=1, safe=False, status=503, retry_after=None, rand=lambda: 1.0)
>>> retry_delay(policy, attempt=3, safe=True, status=None, retry_after=None, rand=lambda: 1.0)
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from client.errors import (
    PointspaceClientError,
    PointspaceHTTPError,
    PointspaceTransportError,
    UnexpectedResponse,
    error_for_status,
)

__all__ = [
    "DEFAULT_RETRY",
    "JSON",
    "MSGPACK",
    "NDJSON",
    "NO_RETRY",
    "Call",
    "Pause",
    "RetryPolicy",
    "base_headers",
    "encode_batch",
    "encode_json",
    "error_from_answer",
    "ndjson_chunks",
    "next_step",
    "parse_retry_after",
    "path_segment",
    "request_was_sent",
    "retry_delay",
]

T = TypeVar("T")

JSON = "application/json"
MSGPACK = "application/msgpack"
NDJSON = "application/x-ndjson"
#: Statuses that say the server (or a proxy before it) could not take the request now.
RETRY_STATUSES = frozenset({502, 503, 504})
#: Most characters of a non-JSON error body kept as the message.
MAX_TEXT_MESSAGE = 200
#: Bytes per chunk of an NDJSON stream (lines are gathered up to this): large enough that the
#: per-chunk cost disappears, small enough to keep the body flowing at the server's minimum
#: rate check (``web/bodies.py``). (Precedent: httpx and aiohttp read in 64 KiB chunks.)
NDJSON_CHUNK_BYTES = 64 * 1024


############################################################################################
# Calls


@dataclass(frozen=True, slots=True, kw_only=True)
class Call(Generic[T]):
    """One API request, ready to send, and how to read its answer.

    Attributes:
        method, path: the request line (``path`` already percent-encoded).
        params: query parameters, in order (a name may repeat).
        content: the body, or ``None``; ``content_type`` says what it is.
        safe: whether a failed attempt may be repeated (the module's theory, rule 1).
        decode: turns a 2xx answer's bytes into the result (``None`` for no-content calls).
    """

    method: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    content: bytes | None = None
    content_type: str | None = None
    safe: bool = False
    decode: Callable[[bytes], T] = field(default=lambda data: None)  # type: ignore[assignment]
    #: An untyped call (:func:`client._calls.raw`): a non-JSON answer comes back as text.
    untyped: bool = False

    def answer(self, content_type: str | None, content: bytes) -> T:
        """The result of a 2xx answer."""
        if self.untyped and "json" not in (content_type or "").lower():
            return content.decode("utf-8", "replace") if content else None  # type: ignore[return-value]
        return self.decode(content)


def params_of(**values: Any) -> tuple[tuple[str, str], ...]:
    """Query parameters without the ``None`` ones; booleans as ``true``/``false``.

    >>> params_of(t1=1, tz=None, top_bottom=True)
    (('t1', '1'), ('top_bottom', 'true'))
    """
    out = []
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        out.append((name, str(value)))
    return tuple(out)


def path_segment(value: object) -> str:
    """``value`` as one path segment: every reserved character percent-encoded, so a metric
    named ``a/b`` or a user ``"x?y"`` cannot change the route.

    >>> path_segment("a/b c"), path_segment(42)
    ('a%2Fb%20c', '42')
    """
    return quote(str(value), safe="")


def decoder(kind: type[T]) -> Callable[[bytes], T]:
    """A decoder of JSON answers into ``kind`` (msgspec: exact integers, shape checked)."""
    json_decoder = msgspec.json.Decoder(kind)

    def decode(data: bytes) -> T:
        try:
            return json_decoder.decode(data)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise UnexpectedResponse(
                f"the answer is not a {getattr(kind, '__name__', kind)}: {exc}"
            ) from None

    return decode


############################################################################################
# Bodies


def _plain(value: Any) -> Any:
    """Mappings and iterables as dicts and lists, so msgspec can encode what callers pass."""
    if isinstance(value, (msgspec.Struct, str, bytes, int, float, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Iterable):
        return [_plain(v) for v in value]
    return value


def encode_json(value: Any) -> bytes:
    """``value`` as JSON; integers of any size are written exactly.

    >>> encode_json({"sum": 2**70, "users": (1, "a")})
    b'{"sum":1180591620717411303424,"users":[1,"a"]}'
    """
    try:
        return msgspec.json.encode(value)
    except TypeError:  # a Mapping or Iterable msgspec does not know: as dicts and lists
        return msgspec.json.encode(_plain(value))


def encode_batch(items: Iterable[Any], fmt: str = "msgpack") -> tuple[bytes, str]:
    """A batch's body and ``Content-Type``: msgpack (default), or JSON when asked for or when
    an integer is too wide for msgpack (the module's theory: the server names the field).

    >>> body, kind = encode_batch([{"metric": "m", "user": 1, "value": 2**64, "ts": 1}])
    >>> kind, body
    ('application/json', b'[{"metric":"m","user":1,"value":18446744073709551616,"ts":1}]')
    >>> encode_batch([{"value": 1}])[1]
    'application/msgpack'
    """
    if fmt not in ("msgpack", "json"):
        raise ValueError(f"format must be 'msgpack' or 'json', got {fmt!r}")
    if not isinstance(items, (list, tuple)):
        items = list(items)
    if fmt == "msgpack":
        try:
            try:
                return msgspec.msgpack.encode(items), MSGPACK
            except TypeError:
                return msgspec.msgpack.encode(_plain(items)), MSGPACK
        except OverflowError:
            pass
    return encode_json(items), JSON


def ndjson_chunks(items: Iterable[Any], chunk_bytes: int = NDJSON_CHUNK_BYTES) -> Iterator[bytes]:
    """NDJSON, one item per line, gathered into chunks of about ``chunk_bytes``; items are
    encoded as they are drawn, so an endless iterable streams in bounded memory.

    >>> b"".join(ndjson_chunks([{"a": 1}, {"a": 2}]))
    b'{"a":1}\\n{"a":2}\\n'
    """
    encoder = msgspec.json.Encoder()
    buffer = bytearray()
    for item in items:
        start = len(buffer)
        try:
            encoder.encode_into(item, buffer, start)
        except TypeError:
            del buffer[start:]
            encoder.encode_into(_plain(item), buffer, start)
        buffer += b"\n"
        if len(buffer) >= chunk_bytes:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


############################################################################################
# Headers and errors


def base_headers(user_agent: str) -> dict[str, str]:
    """Headers every request carries: plain JSON answers, and who is asking."""
    return {"Accept": JSON, "User-Agent": user_agent}


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` in seconds (RFC 9110 10.2.3: delay-seconds or an HTTP date).

    >>> parse_retry_after("3"), parse_retry_after(None), parse_retry_after("soon")
    (3.0, None, None)
    >>> parse_retry_after("Thu, 01 Jan 1970 00:00:10 GMT", now=4.0)
    6.0
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def error_from_answer(status: int, content_type: str | None, content: bytes, *, method: str,
                      url: str, retry_after: str | None = None) -> PointspaceHTTPError:
    """The exception for an error answer, from either error shape the server sends.

    >>> e = error_from_answer(404, "application/json",
    ...     b'{"id":"x1","code":"not_found","status":404,"detail":"no list \\'a\\'","meta":{"field":"list_id"}}',
    ...     method="GET", url="/lists/a")
    >>> type(e).__name__, e.message, e.field, e.code, e.error_id
    ('NotFound', "no list 'a'", 'list_id', 'not_found', 'x1')
    >>> e = error_from_answer(502, "text/html", b"<html>bad gateway</html>", method="GET", url="/")
    >>> type(e).__name__, e.message
    ('PointspaceHTTPError', '<html>bad gateway</html>')
    """
    body: Any = None
    if content and "json" in (content_type or "").lower():
        try:
            body = msgspec.json.decode(content)
        except msgspec.DecodeError:
            body = None
    details: dict[str, Any] = {
        "method": method, "url": url, "body": body, "retry_after": parse_retry_after(retry_after)
    }
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        field = body.get("field")
        return error_for_status(status, body["error"],
                                field=field if isinstance(field, str) else None, **details)
    if isinstance(body, dict) and isinstance(body.get("detail"), str):  # goa
        meta = body.get("meta")
        field = meta.get("field") if isinstance(meta, dict) else None
        code, error_id = body.get("code"), body.get("id")
        return error_for_status(
            status, body["detail"], field=field if isinstance(field, str) else None,
            code=code if isinstance(code, str) else None,
            error_id=error_id if isinstance(error_id, str) else None, **details,
        )
    text = content.decode("utf-8", "replace").strip()
    if len(text) > MAX_TEXT_MESSAGE:
        text = text[:MAX_TEXT_MESSAGE] + "..."
    return error_for_status(status, text or httpx.codes.get_reason_phrase(status) or "error",
                            **details)


############################################################################################
# Retries


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How failed *safe* requests are repeated (the module's theory of operation).

    Args:
        attempts: tries in all, the first included (1: never repeat). The default, 4, is
            urllib3's ``Retry.DEFAULT`` (3 retries after the first try).
        base_delay: the backoff cap before the first retry, doubled for each next one.
        max_delay: the most any pause may be; also the longest ``Retry-After`` honoured.

    >>> RetryPolicy(attempts=0)
    Traceback (most recent call last):
    ...
    ValueError: attempts must be >= 1 (1 never repeats a request), got 0
    """

    attempts: int = 4
    base_delay: float = 0.25
    max_delay: float = 4.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be >= 1 (1 never repeats a request), got {self.attempts}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError(f"delays must be >= 0, got base_delay={self.base_delay} "
                             f"max_delay={self.max_delay}")

    def backoff_cap(self, retry: int) -> float:
        """The longest pause before retry number ``retry`` (1-based)."""
        return min(self.max_delay, self.base_delay * 2 ** (retry - 1))


DEFAULT_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(attempts=1)


def retry_delay(policy: RetryPolicy, *, attempt: int, safe: bool, status: int | None,
                retry_after: float | None, rand: Callable[[], float]) -> float | None:
    """The pause before trying again after failed attempt number ``attempt`` (1-based), or
    ``None`` when the failure must be raised.

    Args:
        safe: the call may be repeated (:attr:`Call.safe`).
        status: the error status, or ``None`` when no answer came (a transport failure the
            caller already judged worth retrying, see :func:`retryable_transport_error`).
        retry_after: the server's ``Retry-After`` in seconds, if it sent one.
        rand: a uniform random number in [0, 1) (``random.random``; fixed in tests).
    """
    if not safe or attempt >= policy.attempts:
        return None
    if status is not None and status not in RETRY_STATUSES:
        return None
    if retry_after is not None and retry_after > policy.max_delay:
        return None
    pause = rand() * policy.backoff_cap(attempt)
    return max(pause, retry_after or 0.0)


#: Failures where the request provably did not leave: no connection was made.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def request_was_sent(exc: httpx.TransportError) -> bool:
    """Whether the request may have reached the server before ``exc`` (see
    :class:`~client.errors.PointspaceTransportError`)."""
    return not isinstance(exc, _NOT_SENT)


def retryable_transport_error(exc: httpx.TransportError) -> bool:
    """Whether a failure without an answer may be retried (for a safe call): everything but
    the caller's own mistakes (a URL scheme httpx does not speak, a malformed request)."""
    return not isinstance(exc, (httpx.UnsupportedProtocol, httpx.LocalProtocolError))


@dataclass(frozen=True, slots=True)
class Pause:
    """:func:`next_step`'s "sleep ``seconds``, then send the call again"."""

    seconds: float


def next_step(
    call: Call[Any],
    policy: RetryPolicy,
    *,
    attempt: int,
    url: str,
    outcome: httpx.Response | httpx.TransportError,
    rand: Callable[[], float],
) -> httpx.Response | Pause | PointspaceClientError:
    """What a client does after attempt number ``attempt`` (1-based) of ``call`` ended in
    ``outcome``: return the answer (a ``Response`` under 400), raise the error returned, or
    sleep and retry (:class:`Pause`). No I/O: the module's theory, "Retries".

    Args:
        url: the request's full URL, for the error message.
        outcome: the answer -- one of 400 and up already read, as its body is the error's
            message -- or the ``httpx.TransportError`` the send raised (then the error
            returned has it as ``__cause__``).
        rand: a uniform random number in [0, 1) (``random.random``; fixed in tests).

    >>> call = Call(method="GET", path="/health/ping", safe=True)
    >>> next_step(call, DEFAULT_RETRY, attempt=1, url="http://h/health/ping",
    ...           outcome=httpx.Response(503), rand=lambda: 1.0)
    Pause(seconds=0.25)
    >>> next_step(call, DEFAULT_RETRY, attempt=4, url="http://h/health/ping",
    ...           outcome=httpx.Response(503), rand=lambda: 1.0)
    ServiceUnavailable('503 Service Unavailable')
    """
    if isinstance(outcome, httpx.TransportError):
        pause = (
            retry_delay(policy, attempt=attempt, safe=call.safe, status=None, retry_after=None, rand=rand)
            if retryable_transport_error(outcome)
            else None
        )
        if pause is not None:
            return Pause(pause)
        error: PointspaceClientError = PointspaceTransportError(
            f"{call.method} {url} got no answer after {attempt} attempt(s): "
            f"{type(outcome).__name__}: {outcome}",
            request_sent=request_was_sent(outcome),
            attempts=attempt,
            method=call.method,
            url=url,
        )
        error.__cause__ = outcome
        return error
    if outcome.status_code < 400:
        return outcome
    http_error = error_from_answer(
        outcome.status_code,
        outcome.headers.get("Content-Type"),
        outcome.content,
        method=call.method,
        url=url,
        retry_after=outcome.headers.get("Retry-After"),
    )
    pause = retry_delay(policy, attempt=attempt, safe=call.safe, status=outcome.status_code,
                        retry_after=http_error.retry_after, rand=rand)
    return http_error if pause is None else Pause(pause)
