"""What the edge refuses before any route runs: foreign Hosts, foreign Origins, and bodies of
a type the route does not take.

Theory of operation
-------------------
A server on 127.0.0.1 is reachable from every web page its user opens. Browsers send some
requests cross-site without asking (no CORS preflight): GET, and POST with a
``Content-Type`` of ``text/plain``, ``application/x-www-form-urlencoded`` or
``multipart/form-data`` (the Fetch standard's "CORS-safelisted request headers"). And a page
whose own name is made to resolve to 127.0.0.1 (DNS rebinding) is same-origin with the
server, so it can read the answers too. One ``before_request`` hook (:func:`install`), which
runs before JWT auth (``web/auth.py``) and before any body is read, checks in order (a
``before_websocket`` hook checks 1 to 3 on every websocket handshake, with the same
:func:`header_refusal`):

1. **Host** (421, naming ``Host``). Accepted: any, when the server is bound to a
   non-loopback address and ``allowed_hosts`` is empty; otherwise the loopback names
   (``localhost``, ``127.0.0.0/8``, ``[::1]``; any port) and the ``allowed_hosts`` entries (a
   name matches with any port, ``name:port`` only that port). A rebinding page's requests
   carry *its* name as Host, so they are refused. Loopback names are always safe: a browser
   sends them only to a page served from that loopback address and port, i.e. this server.
   ``*.localhost`` is not accepted (RFC 6761 lets resolvers answer it from DNS); add names with
   ``--allowed-host``. (Precedent: Django's ``ALLOWED_HOSTS``, which defaults to the loopback
   names in debug mode; the Jupyter server's ``allow_remote_access`` check for the same attack.)
2. **Origin** (403, naming ``Origin``). A request that carries ``Origin`` must come from this
   server's own origin (the Origin's host and port are the Host header's; the scheme is not
   compared, so a TLS proxy in front does not break it) or from one of ``allowed_origins``.
   ``Origin: null`` (sandboxed frames, ``file:`` pages) is foreign. Browsers send ``Origin``
   on every cross-origin request but a top-level GET navigation, and on every same-origin
   request but GET and HEAD; non-browser clients send none, and are not affected. All methods
   are checked, reads included: a foreign page cannot read the answer anyway (no CORS headers
   are sent), so refusing costs a real client nothing, and it keeps visitors' browsers from
   being used to make the server work (expensive queries), and keeps answers unreadable if a
   proxy in front ever adds CORS headers.
3. **Sec-Fetch-Site** (403, naming it). Without ``Origin``, a browser's
   ``Sec-Fetch-Site: cross-site`` marks a request another site started; refused except a
   top-level GET/HEAD navigation (a link to ``/ui`` or ``/docs`` from another site).
4. **Content-Type** (415, naming ``Content-Type``, with the accepted types in the message and
   an ``Accept`` header, RFC 9110 15.5.16). On POST, PUT, PATCH and DELETE to a route, a
   ``Content-Type`` must be one the route takes (:data:`ROUTE_BODIES`, by endpoint; JSON and
   msgpack elsewhere). No ``Content-Type`` is read as the route's own format (curl
   ``--data-binary`` and httpx ``content=`` send none; a browser always sends one with a body).
   So ``text/plain`` is refused everywhere, and form types everywhere but PSD's form routes
   (which are reads).

**CORS for the listed origins.** An origin given with ``--allowed-origin`` is a web app the
operator trusts, so a browser must be let to read the answers it gets, and to send what a
preflight guards (JSON bodies, an ``Authorization`` header): every answer to a request whose
``Origin`` is listed carries ``Access-Control-Allow-Origin`` with that origin (and ``Vary:
Origin``), and a preflight (``OPTIONS`` with ``Access-Control-Request-Method``) from a listed
origin is answered here, 204, before auth (a preflight never carries credentials, Fetch
standard 4.8), allowing the methods our routes use and the headers asked for, cached for
``CORS_MAX_AGE_S``. The server's own origin needs none of it, and other origins get none: their
requests are refused by check 2 anyway. No ``Access-Control-Allow-Credentials``: tokens travel
in ``Authorization``, which a page sets itself, never in cookies. (Precedent: Prometheus's
``--web.cors.origin``, Elasticsearch's ``http.cors.allow-origin``.)

Refusals use the route's error shape: goa's on RankDB routes (``web/compat/rankdb/common.py``),
``{"error", "field"}`` elsewhere (PSD's too); the connection is closed after a refused
request that carried a body (``closing_on_error``). Health, metrics and the docs are
checked like every route: a probe must send a Host the server accepts.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from quart import Response, has_request_context, request, websocket
from quart_trio import QuartTrio
from werkzeug.datastructures import Headers

from engine.errors import quote
from web.bodies import MSGPACK_TYPES, NDJSON_TYPES, media_type, respond
from web.compat.rankdb.common import goa_response
from web.context import closing_on_error
from web.serving.settings import Settings

__all__ = [
    "BINARY",
    "FORM",
    "JSON",
    "MSGPACK",
    "NDJSON",
    "ROUTE_BODIES",
    "EdgePolicy",
    "header_refusal",
    "install",
    "is_loopback_name",
    "split_host",
]

############################################################################################
# Body media types by route


@dataclass(frozen=True, slots=True)
class BodyKind:
    """A family of media types a route may take."""

    name: str
    types: tuple[str, ...]
    #: Structured-syntax suffix (RFC 6838 4.2.8) also in the family: ``+json``.
    suffix: str | None = None

    def matches(self, kind: str) -> bool:
        return kind in self.types or (self.suffix is not None and kind.endswith(self.suffix))


JSON = BodyKind("JSON", ("application/json",), "+json")
MSGPACK = BodyKind("msgpack", MSGPACK_TYPES)
NDJSON = BodyKind("NDJSON", NDJSON_TYPES)
#: PSD read its POST bodies with gin's ``c.PostForm``, which takes both form encodings.
FORM = BodyKind("form", ("application/x-www-form-urlencoded", "multipart/form-data"))
#: A RankDB backup stream: zstd (RFC 8878 registers ``application/zstd``) of msgpack.
BINARY = BodyKind("binary", ("application/octet-stream", "application/zstd"))

DEFAULT_BODIES = (JSON, MSGPACK)

#: What each route that differs from ``DEFAULT_BODIES`` takes, by endpoint (blueprint.view).
#: ``tests/web/test_security_http.py`` checks that every endpoint named here exists.
ROUTE_BODIES: dict[str, tuple[BodyKind, ...]] = {
    "native.ingest_events": (JSON, MSGPACK, NDJSON),
    "native.ingest_stream": (NDJSON,),
    "uniques.add_uniques": (JSON, MSGPACK, NDJSON),
    "psd.write": (JSON,),  # decoded as JSON whatever the type (PSD's MetricJob)
    "psd.batch": (JSON, MSGPACK, NDJSON),
    "psd.query_ids": (FORM,),
    "psd.mu_query": (FORM,),
    "psd.mumt_query": (FORM,),
    "psd.mumt_query_v2": (FORM,),
    "psd.readcount_with_ids": (FORM,),
    "backup.restore": (BINARY,),
    "density_compat.send_batch": (JSON, MSGPACK, NDJSON),  # Density datapoints, many
    # statshub decoded JSON whatever the type, and its README's client (curl --data-binary)
    # labels it a form; a browser's cross-site POST is still refused by Origin.
    "statshub.stats": (JSON, FORM),
}

#: Methods whose requests may carry a body that changes state.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Blueprints answering in goa's error shape (as ``web/auth.py``'s ``RANKDB_BLUEPRINTS``).
GOA_BLUEPRINTS = frozenset({"rankdb", "backup"})
GOA_ENDPOINTS = frozenset({"rankdb_create_jwt"})


def accepted_bodies(endpoint: str | None) -> tuple[BodyKind, ...]:
    return ROUTE_BODIES.get(endpoint or "", DEFAULT_BODIES)


############################################################################################
# Host names


def split_host(value: str) -> tuple[str, int | None] | None:
    """A Host header (or allow-list entry) as (lower-case name, port or ``None``); ``None``
    when it is not ``name[:port]`` or ``[v6]:port``.

    >>> split_host("LocalHost:1155"), split_host("[::1]"), split_host("example.com.")
    (('localhost', 1155), ('[::1]', None), ('example.com', None))
    >>> split_host("a:b"), split_host("a b"), split_host("")
    (None, None, None)
    """
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        name, rest = value[: end + 1], value[end + 1 :]
        if end < 0 or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:] if rest else None
    else:
        name, colon, port_text_or_empty = value.partition(":")
        port_text = port_text_or_empty if colon else None
        name = name.rstrip(".") if name != "." else name
    if not name or any(c.isspace() or c in "/\\@?#" for c in name):
        return None
    if port_text is None:
        return name, None
    if not port_text.isascii() or not port_text.isdigit() or int(port_text) > 65535:
        return None
    return name, int(port_text)


def is_loopback_name(name: str) -> bool:
    """``localhost``, an address in 127.0.0.0/8, or ``[::1]`` / ``::1``.

    >>> [is_loopback_name(n) for n in ("localhost", "127.3.2.1", "[::1]", "::1", "10.0.0.1",
    ...                                "a.localhost", "localhost.example.com")]
    [True, True, True, True, False, False, False]
    """
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def _origin_authority(origin: str) -> tuple[str, str, int | None] | None:
    """An ``Origin`` as (scheme, name, port or ``None`` for the scheme's default)."""
    scheme, sep, authority = origin.strip().lower().partition("://")
    if not sep or scheme not in _DEFAULT_PORTS or "/" in authority:
        return None
    split = split_host(authority)
    if split is None:
        return None
    name, port = split
    return scheme, name, None if port == _DEFAULT_PORTS[scheme] else port


_DEFAULT_PORTS = {"http": 80, "https": 443}


############################################################################################
# The policy


@dataclass(frozen=True, slots=True)
class EdgePolicy:
    """The Host and Origin rules for one server's settings (the module's theory)."""

    #: ``None``: any Host. Otherwise (name, port or ``None`` for any port) pairs.
    hosts: frozenset[tuple[str, int | None]] | None
    origins: frozenset[tuple[str, str, int | None]]

    @classmethod
    def from_settings(cls, settings: Settings) -> EdgePolicy:
        bound = split_host(settings.host) or (settings.host.lower(), None)
        listed = {_must_split(entry, "allowed_hosts") for entry in settings.allowed_hosts}
        loopback_bound = is_loopback_name(bound[0]) or is_loopback_name(settings.host.lower())
        hosts = frozenset(listed) if listed or loopback_bound else None
        origins = frozenset(_must_origin(entry) for entry in settings.allowed_origins)
        return cls(hosts=hosts, origins=origins)

    def host_refusal(self, host: str | None) -> str | None:
        """Why ``host`` (the Host header) is refused, or ``None``."""
        if self.hosts is None:
            return None
        split = split_host(host) if host else None
        if split is None:
            return (f"a Host header naming this server is required, got {quote(host)}" if host
                    else "a Host header is required")
        name, port = split
        if is_loopback_name(name) or (name, None) in self.hosts or (name, port) in self.hosts:
            return None
        return (f"Host {quote(host)} is not served here (DNS rebinding protection); the server "
                "answers loopback names and those given with --allowed-host")

    def listed_origin(self, origin: str | None) -> bool:
        """Whether ``origin`` (an ``Origin`` header) is one of ``allowed_origins``: a
        cross-origin web app that gets CORS headers (module docstring)."""
        if origin is None:
            return False
        parsed = _origin_authority(origin)
        return parsed is not None and parsed in self.origins

    def origin_refusal(self, origin: str, host: str | None) -> str | None:
        """Why a request carrying ``Origin: origin`` is refused, or ``None``."""
        parsed = _origin_authority(origin)
        if parsed is not None:
            if parsed in self.origins:
                return None
            own = split_host(host) if host else None
            if own is not None:
                default = _DEFAULT_PORTS[parsed[0]]
                if (own[0], None if own[1] == default else own[1]) == parsed[1:]:
                    return None
        return (f"Origin {quote(origin)} may not use this server: cross-origin requests are "
                "refused unless the origin is given with --allowed-origin")


def _must_split(entry: str, setting: str) -> tuple[str, int | None]:
    split = split_host(entry)
    if split is None:
        raise ValueError(f"{setting} entry {entry!r} is not a host name with an optional :port")
    return split


def _must_origin(entry: str) -> tuple[str, str, int | None]:
    parsed = _origin_authority(entry)
    if parsed is None:
        raise ValueError(f"allowed_origins entry {entry!r} is not an origin such as "
                         "https://dash.example.com or http://10.0.0.5:8080")
    return parsed


############################################################################################
# The hook


def header_refusal(policy: EdgePolicy, headers: Headers, method: str) -> tuple[int, str, str] | None:
    """Checks 1 to 3 of the module docstring (Host, Origin, Sec-Fetch-Site) on a request's or
    a websocket handshake's headers: ``(status, message, field)`` of the refusal, or ``None``.
    One function for both, so HTTP and websockets can never drift apart."""
    host = headers.get("Host") or headers.get(":authority")  # HTTP/2
    why = policy.host_refusal(host)
    if why is not None:
        return 421, why, "Host"
    origin = headers.get("Origin")
    if origin is not None:
        why = policy.origin_refusal(origin, host)
        if why is not None:
            return 403, why, "Origin"
    elif headers.get("Sec-Fetch-Site", "").strip().lower() == "cross-site" and not (
        method in ("GET", "HEAD") and headers.get("Sec-Fetch-Mode", "").strip().lower() == "navigate"
    ):
        return 403, ("a request another site's page started (Sec-Fetch-Site: cross-site) may not "
                     "use this server"), "Sec-Fetch-Site"
    return None


def install(app: QuartTrio, settings: Settings) -> None:
    """Refuse what the edge refuses (module docstring) before every other ``before_request``
    hook of the app, and checks 1 to 3 before every other ``before_websocket`` hook (a
    websocket handshake is a GET a foreign page can start: browsers apply no CORS to
    websockets, so the Origin check is the only thing between a page and a stream); call it
    after ``web/auth.py``'s ``install`` and before ``web/metrics.py``'s (which puts its timer
    first)."""
    policy = EdgePolicy.from_settings(settings)

    async def edge_guard() -> Response | None:
        refusal = header_refusal(policy, request.headers, request.method)
        if refusal is not None:
            return _refuse(*refusal)
        if (request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers
                and policy.listed_origin(request.headers.get("Origin"))):
            return _preflight()
        content_type = request.headers.get("Content-Type")
        if request.method in BODY_METHODS and request.url_rule is not None and content_type:
            kinds = accepted_bodies(request.endpoint)
            kind = media_type(content_type)
            if not any(k.matches(kind) for k in kinds):
                return _unsupported(content_type, kinds)
        return None

    async def edge_guard_websocket() -> Response | None:
        refusal = header_refusal(policy, websocket.headers, "GET")
        return None if refusal is None else _refuse(*refusal)

    async def cors_headers(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if policy.listed_origin(origin):
            response.headers["Access-Control-Allow-Origin"] = origin  # type: ignore[assignment]
            response.vary.add("Origin")
        return response

    app.before_request_funcs.setdefault(None, []).insert(0, edge_guard)
    app.after_request_funcs.setdefault(None, []).append(cors_headers)
    app.before_websocket_funcs.setdefault(None, []).insert(0, edge_guard_websocket)


#: How long a browser may cache a preflight's answer (seconds). Chromium caps it at 7,200,
#: Firefox at 86,400; 600 keeps a changed allow-list from lingering in browsers.
CORS_MAX_AGE_S = 600
#: The methods our routes use, allowed to listed origins.
CORS_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE"


def _preflight() -> Response:
    """The answer to a listed origin's CORS preflight (module docstring); the
    ``Access-Control-Allow-Origin`` header is added by the after-request hook, as on every
    answer to that origin."""
    response = Response(b"", status=204)
    response.headers["Access-Control-Allow-Methods"] = CORS_METHODS
    asked = request.headers.get("Access-Control-Request-Headers")
    if asked:
        response.headers["Access-Control-Allow-Headers"] = asked
    response.headers["Access-Control-Max-Age"] = str(CORS_MAX_AGE_S)
    response.vary.update(("Access-Control-Request-Method", "Access-Control-Request-Headers"))
    return response


def _goa() -> bool:
    return request.blueprint in GOA_BLUEPRINTS or request.endpoint in GOA_ENDPOINTS


def _refuse(status: int, message: str, field: str, code: str | None = None) -> Response:
    """The refusal in the route's error shape; a websocket handshake (no HTTP request, no
    goa route) gets ``{"error", "field"}`` as its HTTP answer."""
    if not has_request_context():
        return respond({"error": message, "field": field}, None, status)
    if _goa():
        return goa_response(status, message, field=field, code=code or _GOA_CODES.get(status))
    return closing_on_error(respond({"error": message, "field": field}, request, status))


#: goa codes for the statuses goa v1 has no error of its own for.
_GOA_CODES = {415: "unsupported_media_type", 421: "misdirected_request"}


def _unsupported(content_type: str, kinds: Iterable[BodyKind]) -> Response:
    kinds = tuple(kinds)
    names = " or ".join(k.name for k in kinds)
    types = [t for k in kinds for t in k.types]
    if any(k.suffix for k in kinds):
        types.append("application/*+json")
    message = (f"Content-Type {quote(content_type)} is not accepted here; this route takes "
               f"{names} ({', '.join(types)}), or no Content-Type for "
               f"{kinds[0].name}")
    response = _refuse(415, message, "Content-Type")
    response.headers["Accept"] = ", ".join(types)
    return response
