"""Optional JWT authorization (RankDB's scheme, rankdb.md section 4) for every route.

Theory of operation
-------------------
Off unless ``settings.jwt_key_dir`` is set. Then ``install`` loads every ``*.pub`` RSA public
key there (none, or a bad one, stops the server at start) and adds one ``before_request`` hook
that runs after routing and before any view (and a ``before_websocket`` hook, with the same
keys and rules, for every websocket handshake: steps 1 to 3, as a GET; a token with
allow-list claims is refused on a route that has an ACL, which no websocket route has):

1. Find the route's *rule*: the JWT scope it needs and where its list and element ids are
   (``RANKDB_RULES``, a table of method + path pattern from rankdb.md 1.1; patterns rather than
   view names, so the table does not depend on how ``web/compat/rankdb/routes.py`` names its views).
   Other routes get a scope by kind (``native_scope``): reads ``api:read``, writes
   ``api:update``, ``/api/admin`` ``api:manage``; health, readiness and metrics stay open.
   A request that matched no route passes, to get its 404 or 405.
2. Verify ``Authorization: Bearer <jwt>`` against each key, with an explicit allow-list of
   RS256/RS384/RS512 (``none`` and HMAC are refused, so a public key can never be used as an
   HMAC secret); ``exp`` and ``nbf`` are checked when present.
3. Check that the token holds the route's scope *literally*: scopes are not hierarchical, so a
   manage token cannot read an element (RankDB's own tests).
4. Where RankDB enforces them (its read, update and delete endpoints), check the
   ``only_lists`` and ``only_elements`` claims against every list and element id the request
   touches: path, query and body, and for xlist the *resolved* lists (explicit ids plus
   metadata and set matches), so one match outside the allow-list fails the whole request.

Failures are 401: RankDB's goa body ``{"code": "jwt_security_error", ...}`` on RankDB routes,
pointspace's ``{"error", "field": "Authorization"}`` elsewhere.

Deviations from RankDB (fail closed): an ``only_lists``/``only_elements`` claim that is an
array of strings is honoured (RankDB ignores non-string claims, granting everything), and any
other non-string value is refused. ACL checks run before the view, so a token without access
gets 401 even where RankDB would first answer 404 for a missing list.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key, load_ssh_public_key
from quart import Response, current_app, g, has_request_context, request, websocket
from quart_trio import QuartTrio

from engine.errors import InvalidInput
from engine.lists import check_element, check_elements, check_ids
from web.bodies import decode_body, respond
from web.compat.rankdb.common import Selection, goa_response
from web.context import closing_on_error, engine_of
from web.serving.settings import Settings

log = logging.getLogger("pointspace.web.auth")

__all__ = [
    "ALGORITHMS",
    "DELETE",
    "MANAGE",
    "READ",
    "RANKDB_RULES",
    "UPDATE",
    "AuthError",
    "Grant",
    "JwtKeyError",
    "KeyRing",
    "Rule",
    "install",
    "native_scope",
    "rankdb_rule",
    "route_rule",
]

READ = "api:read"
UPDATE = "api:update"
DELETE = "api:delete"
MANAGE = "api:manage"

#: RankDB's README: "only RSA (RSnnn) signatures are supported". Listing them explicitly is what
#: keeps ``alg: none`` and HS256-signed-with-the-public-key tokens out (the classic JWT attack).
ALGORITHMS = ("RS256", "RS384", "RS512")

#: Seconds of clock skew allowed on ``exp``/``nbf``. RankDB's library allows none.
LEEWAY_S = 0

#: Paths that never need a token: liveness, readiness and metrics (scraped by machines without
#: tokens), and RankDB's static API docs (endpoint 32: "none").
OPEN_PATHS = frozenset(
    {"/health/ping", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/ui", "/ui/"}
)
OPEN_PREFIXES = ("/doc/", "/api/swagger", "/docs/", "/ui/static/")


class JwtKeyError(RuntimeError):
    """The key directory is unusable: the server refuses to start rather than run unguarded."""


class AuthError(Exception):
    """A request without a valid token, scope or access: always a 401."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


############################################################################################
# Route rules (rankdb.md 1.1)
############################################################################################


@dataclass(frozen=True, slots=True)
class Rule:
    """What a route needs: a scope, and where its list and element ids are for the ACL.

    ``lists``: ``"path"`` (the ``{list_id}`` segment), ``"xlist_body"`` / ``"xlist_query"``
    (the resolved cross-list selection), or ``None`` (no list ACL: manage routes).
    ``elements``: sources of element ids: ``"path"``, ``"body_element"`` (an Element),
    ``"body_elements"`` (``[Element]``), ``"body_ids"`` (``{"element_ids": [...]}``),
    ``"query_ids"`` (``element_ids`` repeated), ``"body_payload"`` (xlist ``payload``).
    """

    scope: str
    lists: str | None = None
    elements: tuple[str, ...] = ()


_L = r"(?P<list>[^/]+)"
_E = r"(?P<element>[^/]+)"

#: (methods, path pattern, rule). First match wins; HEAD is looked up as GET.
RANKDB_RULES: tuple[tuple[frozenset[str], re.Pattern[str], Rule], ...] = tuple(
    (frozenset(methods.split()), re.compile(f"^{pattern}$"), rule)
    for methods, pattern, rule in (
        ("GET", r"/", Rule(MANAGE)),
        ("GET", r"/health", Rule(MANAGE)),
        ("POST", r"/jwt", Rule(MANAGE)),
        ("GET POST", r"/lists", Rule(MANAGE)),
        ("GET", rf"/lists/{_L}", Rule(READ, "path")),
        ("DELETE", rf"/lists/{_L}", Rule(MANAGE)),
        ("PUT", rf"/lists/{_L}/(?:clone|reindex|repair|verify)", Rule(MANAGE)),
        ("GET", rf"/lists/{_L}/(?:range|percentile)", Rule(READ, "path")),
        ("POST", rf"/lists/{_L}/elements", Rule(UPDATE, "path", ("body_element",))),
        ("PUT", rf"/lists/{_L}/elements", Rule(UPDATE, "path", ("body_elements",))),
        ("DELETE", rf"/lists/{_L}/elements", Rule(DELETE, "path", ("query_ids",))),
        ("POST", rf"/lists/{_L}/elements/find", Rule(READ, "path", ("body_ids",))),
        ("GET", rf"/lists/{_L}/elements/{_E}", Rule(READ, "path", ("path",))),
        ("PUT", rf"/lists/{_L}/elements/{_E}", Rule(UPDATE, "path", ("path", "body_element"))),
        ("DELETE", rf"/lists/{_L}/elements/{_E}", Rule(DELETE, "path", ("path",))),
        ("POST", rf"/lists/{_L}/elements/{_E}/around", Rule(READ, "path", ("path", "body_ids"))),
        ("POST PUT", r"/xlist/elements", Rule(UPDATE, "xlist_body", ("body_payload",))),
        ("GET", rf"/xlist/elements/{_E}", Rule(READ, "xlist_query", ("path",))),
        ("DELETE", rf"/xlist/elements/{_E}", Rule(DELETE, "xlist_query", ("path",))),
        ("PUT", r"/xlist/(?:verify|reindex|backup)", Rule(MANAGE)),
        ("POST", r"/xlist/restore", Rule(MANAGE)),
        ("GET DELETE", r"/backup/[^/]+", Rule(MANAGE)),
    )
)

#: Blueprints that speak RankDB's error body. A route of theirs missing from the table above
#: needs ``api:manage`` (fail closed) until someone adds its rule.
RANKDB_BLUEPRINTS = frozenset({"rankdb", "backup"})


def rankdb_rule(method: str, path: str) -> tuple[Rule, re.Match[str]] | None:
    """The RankDB rule for a request, with the path match (for ``list``/``element``)."""
    method = "GET" if method == "HEAD" else method
    for methods, pattern, rule in RANKDB_RULES:
        if method in methods:
            match = pattern.match(path)
            if match:
                return rule, match
    return None


#: Routes that read although they are POSTs: the name after ``/api/`` or ``/v1/`` ``/v2/``,
#: and whole paths. A new read-only POST route belongs here, or it needs ``api:update``.
#: Second path parts that make a POST a read. ``rank`` is a cluster node's forwarded share of
#: ``/api/leaderboards/rank`` (``/cluster/rank/<partition>``: forwarded shares are named after
#: the public routes, so they need the same scopes).
READ_ROUTE_NAMES = frozenset(
    {"query", "breakdown", "query_ids", "mu_query", "mumt_query", "readcount", "readcount_with_ids", "rank"}
)
READ_POST_PATHS = frozenset({"/api/leaderboards/rank", "/api/uniques/query"})


_BOARD_PATH = re.compile(r"^/api/leaderboards/(?P<list>[^/]+)$")


def native_board(method: str, path: str) -> re.Match[str] | None:
    """The board id of a native route that names one in its path (for ``only_lists``).

    >>> native_board("GET", "/api/leaderboards/b1")["list"]
    'b1'
    >>> native_board("POST", "/api/leaderboards/rank") is None
    True
    """
    return _BOARD_PATH.match(path) if method in ("GET", "HEAD", "DELETE") else None


def native_scope(method: str, path: str) -> str | None:
    """The scope a non-RankDB route needs, or ``None`` for an open one.

    >>> native_scope("POST", "/v1/mumt_query/all/1/2"), native_scope("POST", "/api/events")
    ('api:read', 'api:update')
    >>> native_scope("GET", "/api/admin/snapshot"), native_scope("GET", "/metrics")
    ('api:manage', None)
    >>> native_scope("POST", "/stats/query"), native_scope("GET", "/stats/country")
    ('api:update', 'api:read')
    """
    if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
        return None
    parts = path.split("/")
    if len(parts) > 2 and parts[1] == "api" and parts[2] == "admin":
        return MANAGE
    if method in ("GET", "HEAD", "OPTIONS"):
        return READ
    if parts[1] == "stats":  # statshub: every POST /stats/<id> writes, whatever the id
        return UPDATE
    if (len(parts) > 2 and parts[2] in READ_ROUTE_NAMES) or path in READ_POST_PATHS:
        return READ
    return UPDATE


############################################################################################
# Keys and tokens
############################################################################################


class KeyRing:
    """The RSA public keys tokens may be signed with, and the one place tokens are verified."""

    def __init__(self, keys: Mapping[str, RSAPublicKey]) -> None:
        if not keys:
            raise JwtKeyError("a KeyRing needs at least one key")
        self.keys = dict(keys)

    @classmethod
    def load(cls, directory: Path) -> KeyRing:
        """Every ``*.pub`` file in ``directory`` as an RSA public key (PEM, or OpenSSH).

        Raises:
            JwtKeyError: no ``*.pub`` file, or one that is not an RSA public key.
        """
        directory = Path(directory)
        files = sorted(directory.glob("*.pub")) if directory.is_dir() else []
        if not files:
            raise JwtKeyError(
                f"no *.pub RSA public keys in {str(directory)!r}; add at least one PEM public "
                "key, or start without --jwt-key-dir to turn JWT off"
            )
        keys: dict[str, RSAPublicKey] = {}
        for path in files:
            data = path.read_bytes()
            try:
                key = (load_ssh_public_key(data) if data.lstrip().startswith(b"ssh-")
                       else load_pem_public_key(data))
            except (ValueError, TypeError) as exc:
                raise JwtKeyError(f"{str(path)!r} is not a PEM or OpenSSH public key: {exc}") from None
            if not isinstance(key, RSAPublicKey):
                raise JwtKeyError(
                    f"{str(path)!r} holds a non-RSA key ({type(key).__name__}); only RSA keys are supported "
                    "(tokens are RS256, RS384 or RS512)"
                )
            keys[path.name] = key
        log.info("jwt: loaded %d key(s) from %s", len(keys), directory)
        return cls(keys)

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, once its signature matches a key and its times are valid.

        Raises:
            AuthError: a malformed token, a refused algorithm, a bad signature, expired or
                not yet valid.
        """
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AuthError(f"malformed token: {exc}") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise AuthError(
                f"token algorithm {alg!r} is not allowed; tokens must be signed with "
                f"{', '.join(ALGORITHMS)}"
            )
        options = {"verify_aud": False, "verify_iss": False}
        for key in self.keys.values():
            try:
                return jwt.decode(token, key, algorithms=list(ALGORITHMS), options=options,
                                  leeway=LEEWAY_S)
            except jwt.InvalidSignatureError:
                continue
            except jwt.ExpiredSignatureError:
                raise AuthError("token has expired") from None
            except jwt.ImmatureSignatureError:
                raise AuthError("token is not valid yet (nbf is in the future)") from None
            except jwt.PyJWTError as exc:
                raise AuthError(f"invalid token: {exc}") from None
        raise AuthError("token signature does not match any configured key")

    def grant(self, authorization: str | None, scope: str) -> Grant:
        """The grant of an ``Authorization: Bearer <jwt>`` header holding ``scope``.

        Raises:
            AuthError: no or a malformed header, a token :meth:`verify` refuses, or one
                without ``scope``.
        """
        grant = Grant.from_claims(self.verify(bearer_token(authorization)))
        grant.require_scope(scope)
        return grant


def bearer_token(header: str | None) -> str:
    """The token of ``Authorization: Bearer <jwt>`` (the prefix in any case, as RankDB)."""
    if not header:
        raise AuthError("missing Authorization header; send 'Authorization: Bearer <jwt>'")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise AuthError("Authorization header must be 'Bearer <jwt>'")
    return token


############################################################################################
# Claims
############################################################################################


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token allows: scopes, and the optional list and element allow-lists."""

    scopes: frozenset[str]
    only_lists: frozenset[str] | None = None
    only_elements: frozenset[int] | None = None

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> Grant:
        """Read ``scope`` (or else ``scopes``), ``only_lists`` and ``only_elements``.

        >>> g = Grant.from_claims({"scope": "api:read api:update", "only_lists": "a, b"})
        >>> sorted(g.scopes), sorted(g.only_lists), g.only_elements
        (['api:read', 'api:update'], ['a', 'b'], None)

        Raises:
            AuthError: a claim of a type that cannot be read (refused rather than ignored).
        """
        raw = claims.get("scope")
        if raw is None:
            raw = claims.get("scopes")
        return cls(
            frozenset(_names(raw, "scope", " ")),
            _allow(claims.get("only_lists"), "only_lists"),
            _element_allow(claims.get("only_elements")),
        )

    def require_scope(self, scope: str) -> None:
        if scope not in self.scopes:
            have = " ".join(sorted(self.scopes)) or "none"
            raise AuthError(
                f"token lacks the {scope} scope this route needs (it has: {have}); scopes are "
                "not hierarchical"
            )

    def check_lists(self, list_ids: Iterable[str]) -> None:
        if self.only_lists is None:
            return
        for list_id in list_ids:
            if list_id not in self.only_lists:
                raise AuthError(f"Access not granted to list {list_id}")

    def check_elements(self, element_ids: Iterable[int | str]) -> None:
        if self.only_elements is None:
            return
        for element_id in element_ids:
            if element_id not in self.only_elements:
                raise AuthError(f"Access not granted to element {element_id}")


def _names(raw: Any, claim: str, sep: str) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, str):
        return [part.strip() for part in raw.split(sep) if part.strip()]
    if isinstance(raw, list) and all(isinstance(v, str) for v in raw):
        return [v.strip() for v in raw if v.strip()]
    raise AuthError(f"token claim {claim} must be a string or an array of strings")


def _allow(raw: Any, claim: str) -> frozenset[str] | None:
    return None if raw is None else frozenset(_names(raw, claim, ","))


def _element_allow(raw: Any) -> frozenset[int] | None:
    names = _allow(raw, "only_elements")
    if names is None:
        return None
    ids = set()
    for name in names:
        if not _DIGITS.match(name) or int(name) >= 2**64:
            raise AuthError(f"token claim only_elements must hold uint64 ids, got {name!r}")
        ids.add(int(name))
    return frozenset(ids)


############################################################################################
# The hook
############################################################################################


def install(app: QuartTrio, settings: Settings) -> None:
    """Guard the app's routes with JWT when ``settings.jwt_key_dir`` is set; always add
    RankDB's ``POST /jwt``, which answers 401 as in RankDB's production builds.

    Raises:
        JwtKeyError: the key directory holds no usable key (the server must not start).
    """
    app.add_url_rule("/jwt", "rankdb_create_jwt", _create_jwt, methods=["POST"])
    if settings.jwt_key_dir is None:
        return
    keyring = KeyRing.load(settings.jwt_key_dir)

    async def guard() -> Response | None:
        if request.url_rule is None:
            return None  # no route: the 404 or 405 answers
        found = route_rule(request.method, request.path, request.blueprint)
        if found is None:
            return None
        rule, match, goa = found
        try:
            grant = keyring.grant(request.headers.get("Authorization"), rule.scope)
            if grant.only_lists is not None or grant.only_elements is not None:
                await _check_access(grant, rule, match)
        except AuthError as exc:
            return _denied(exc.message, goa)
        except InvalidInput as exc:
            # The view would refuse the same input with the same validators; answering here
            # keeps an unreadable body from slipping past the allow-lists.
            return _bad_input(exc, goa)
        g.grant = grant  # for views that filter what they list (``/ui/api/boards``)
        return None

    async def guard_websocket() -> Response | None:
        # Quart runs ``before_request`` hooks for HTTP only: every websocket handshake is
        # checked here, with the same keys and the same rules (a handshake is a GET).
        if websocket.url_rule is None:
            return None  # no route: the 404 answers
        found = route_rule("GET", websocket.path, websocket.blueprint)
        if found is None:
            return None
        rule, match, _ = found
        try:
            grant = keyring.grant(websocket.headers.get("Authorization"), rule.scope)
            if rule.lists is not None and match is not None and (
                grant.only_lists is not None or grant.only_elements is not None
            ):
                raise AuthError("only_lists / only_elements cannot be checked on a websocket; "
                                "use a token without them")
        except AuthError as exc:
            return _denied(exc.message, goa=False)
        g.grant = grant
        return None

    app.before_request(guard)
    app.before_websocket(guard_websocket)


def route_rule(method: str, path: str, blueprint: str | None) -> tuple[Rule, re.Match[str] | None, bool] | None:
    """What a routed request needs (module docstring, step 1): its rule, the path match
    for the ACL, and whether it answers in goa's shape; ``None`` for an open route."""
    found = rankdb_rule(method, path)
    goa = found is not None or blueprint in RANKDB_BLUEPRINTS
    if found is not None:
        return found[0], found[1], goa
    scope = MANAGE if goa else native_scope(method, path)
    if scope is None:
        return None
    board = None if goa else native_board(method, path)
    return (Rule(scope, lists="path"), board, goa) if board else (Rule(scope), None, goa)


async def _create_jwt() -> Response:
    """RankDB endpoint 3. Its shipped binary never signs tokens; neither do we."""
    return _denied("jwt signing not enabled", goa=True)


def _denied(message: str, goa: bool) -> Response:
    if goa:
        response = goa_response(401, message, code="jwt_security_error")
    elif not has_request_context():  # a websocket handshake: refused with an HTTP answer
        response = respond({"error": message, "field": "Authorization"}, None, 401)
    else:
        response = closing_on_error(
            respond({"error": message, "field": "Authorization"}, request, 401)
        )
    response.headers["WWW-Authenticate"] = 'Bearer realm="pointspace"'
    return response


def _bad_input(exc: InvalidInput, goa: bool) -> Response:
    if goa:
        return goa_response(400, exc.message, field=exc.field or None)
    return closing_on_error(respond(exc.to_json(), request, 400))


async def _check_access(grant: Grant, rule: Rule, match: re.Match[str] | None) -> None:
    """Apply ``only_lists`` / ``only_elements`` to every id the request touches."""
    if rule.lists is None or match is None:
        return  # manage routes ignore the claims (RankDB's README)
    needs_body = any(s.startswith("body") for s in rule.elements) and grant.only_elements is not None
    needs_body |= rule.lists == "xlist_body" and grant.only_lists is not None
    body = await _request_body() if needs_body else None

    if grant.only_lists is not None:
        if rule.lists == "path":
            grant.check_lists([match.group("list")])
        else:
            grant.check_lists(_xlist_lists(rule.lists, body))

    if grant.only_elements is not None:
        ids: list[int | str] = []
        for source in rule.elements:
            ids += _element_ids(source, match, body)
        grant.check_elements(ids)


async def _request_body() -> Any:
    data = await request.get_data()  # cached: the view reads the same bytes again
    return decode_body(data, request.headers.get("Content-Type"))


def _element_ids(source: str, match: re.Match[str], body: Any) -> list[int | str]:
    """Element ids from one source, validated as the view validates them."""
    if source == "path":
        return [_as_id(match.group("element"))]
    if source == "query_ids":
        return [_as_id(v) for v in request.args.getlist("element_ids")]
    if source == "body_element":
        return [check_element(body, "body").id]
    if source == "body_elements":
        return [e.id for e in check_elements(body, "body")]
    if not isinstance(body, Mapping):
        raise InvalidInput("request body must be an object", "body")
    if source == "body_ids":
        return list(check_ids(body.get("element_ids") or [], "element_ids"))
    assert source == "body_payload", source
    return [e.id for e in check_elements(body.get("payload") or [], "payload")]


_DIGITS = re.compile(r"^[0-9]{1,20}$")


def _as_id(raw: str) -> int | str:
    """A path or query element id; anything but a decimal number stays a string, which is in
    no allow-list (the view answers 400 for it without a token question)."""
    return int(raw) if _DIGITS.match(raw) else raw


def _xlist_lists(kind: str, body: Any) -> list[str]:
    """The lists an xlist request resolves to: named ones (existing or not) plus matches."""
    if kind == "xlist_body":
        if not isinstance(body, Mapping):
            raise InvalidInput("request body must be an object {lists, match_metadata, all_in_sets, "
                               "payload}", "body")
        selection = Selection.from_body(body)
    else:
        selection = Selection.from_query(request.args)
    existing, missing = selection.resolve(engine_of(current_app).list_catalog(), all_if_empty=False)
    return existing + missing
