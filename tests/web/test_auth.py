"""JWT authorization (web/auth.py) against a real server started with ``--jwt-key-dir``.

Keys are generated per module with cryptography; tokens are signed with PyJWT, except the
forged ones (``alg: none``, HS256 keyed with the public key), which are built by hand.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from conftest import ServerProcess, start_server
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from engine.lists import ListSettings
from engine.ranked import ElementIn, RankedList
from snapshots.backup import encode_backup
from web.app import create_app
from web.auth import Grant, JwtKeyError, KeyRing, native_scope, rankdb_rule
from web.serving.settings import Settings

READ, UPDATE, DELETE, MANAGE = "api:read", "api:update", "api:delete", "api:manage"


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


class Keys:
    def __init__(self, directory: Path) -> None:
        self.first, self.second, self.stranger = new_key(), new_key(), new_key()
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "first.pub").write_bytes(public_pem(self.first))
        (directory / "second.pub").write_bytes(public_pem(self.second))
        (directory / "README.txt").write_text("not a key; ignored")
        self.directory = directory

    def token(self, scope: str | list[str] | None = None, *, key: rsa.RSAPrivateKey | None = None,
              alg: str = "RS512", claim: str = "scope", expire_s: int = 600, **claims: object) -> str:
        now = int(time.time())
        body: dict[str, object] = {"iss": "RankDB", "iat": now, "exp": now + expire_s, **claims}
        if scope is not None:
            body[claim] = scope
        return jwt.encode(body, key or self.first, algorithm=alg)


def auth(token: str, prefix: str = "Bearer") -> dict[str, str]:
    return {"Authorization": f"{prefix} {token}"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict, claims: dict, secret: bytes | None) -> str:
    signing = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = b64(hmac.new(secret, signing.encode(), hashlib.sha256).digest()) if secret else ""
    return f"{signing}.{signature}"


def restore_body() -> bytes:
    lists = []
    for name, team in (("a1", "red"), ("b1", "red"), ("c1", "blue")):
        ranked = RankedList()
        ranked.bulk_load([ElementIn(i, 10 * i) for i in range(1, 6)], 1_700_000_000)
        lists.append((name, ListSettings(set="acl-set", metadata={"team": team}), list(ranked.to_records())))
    return encode_backup(lists)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return Keys(tmp_path_factory.mktemp("jwt") / "keys")


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[ServerProcess]:
    server = start_server(tmp_path_factory.mktemp("guarded"), extra=[
        "--jwt-key-dir", str(keys.directory), "--allowed-origin", "https://dash.example.com"])
    with server.client() as c:
        reply = c.post("/xlist/restore", content=restore_body(), headers=auth(keys.token(MANAGE)))
        assert reply.json() == {"restored": 3, "skipped": 0, "errors": {}}, reply.text
    yield server
    server.stop()


@pytest.fixture
def c(guarded: ServerProcess) -> Iterator[httpx.Client]:
    with guarded.client() as client:
        yield client


def denied(reply: httpx.Response, detail: str, *, goa: bool = True) -> None:
    assert reply.status_code == 401, reply.text
    body = reply.json()
    if goa:
        assert (body["code"], body["status"], body["detail"]) == ("jwt_security_error", 401, detail)
        assert body["id"]
    else:
        assert body == {"error": detail, "field": "Authorization"}
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")


def allowed(reply: httpx.Response) -> None:
    assert reply.status_code != 401, reply.text


############################################################################################
# Tokens


def test_auth_cors_preflight_needs_no_token_and_the_request_still_does(c, keys):
    # Browsers never send credentials on a preflight (Fetch standard): it is answered before
    # auth, and the real request is checked as any other.
    origin = "https://dash.example.com"
    preflight = c.options("/api/events", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == origin
    refused = c.post("/api/events", json=[], headers={"Origin": origin})
    assert refused.status_code == 401
    assert refused.headers["Access-Control-Allow-Origin"] == origin  # the page reads why


def test_auth_missing_and_malformed_headers(c, keys):
    denied(c.get("/lists/a1"), "missing Authorization header; send 'Authorization: Bearer <jwt>'")
    denied(c.get("/lists/a1", headers={"Authorization": keys.token(READ)}),
           "Authorization header must be 'Bearer <jwt>'")
    denied(c.get("/lists/a1", headers=auth("not.a.jwt")), "malformed token: Invalid header padding")
    allowed(c.get("/lists/a1", headers=auth(keys.token(READ), "bEaReR")))


def test_auth_every_key_in_the_directory_is_accepted_and_no_other(c, keys):
    allowed(c.get("/lists/a1", headers=auth(keys.token(READ, key=keys.second))))
    denied(c.get("/lists/a1", headers=auth(keys.token(READ, key=keys.stranger))),
           "token signature does not match any configured key")
    for alg in ("RS256", "RS384", "RS512"):
        allowed(c.get("/lists/a1", headers=auth(keys.token(READ, alg=alg))))


def test_auth_expired_and_not_yet_valid_tokens(c, keys):
    denied(c.get("/lists/a1", headers=auth(keys.token(READ, expire_s=-5))), "token has expired")
    denied(c.get("/lists/a1", headers=auth(keys.token(READ, nbf=int(time.time()) + 600))),
           "token is not valid yet (nbf is in the future)")


def test_auth_hs256_keyed_with_the_public_key_is_refused(c, keys):
    claims = {"scope": READ, "exp": int(time.time()) + 600}
    token = forged({"alg": "HS256", "typ": "JWT"}, claims, public_pem(keys.first))
    denied(c.get("/lists/a1", headers=auth(token)),
           "token algorithm 'HS256' is not allowed; tokens must be signed with RS256, RS384, RS512")


def test_auth_alg_none_is_refused(c):
    token = forged({"alg": "none", "typ": "JWT"}, {"scope": MANAGE}, None)
    denied(c.get("/lists", headers=auth(token)),
           "token algorithm 'none' is not allowed; tokens must be signed with RS256, RS384, RS512")


def test_auth_es256_token_is_refused(c):
    token = jwt.encode({"scope": READ}, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256")
    denied(c.get("/lists/a1", headers=auth(token)), "token algorithm 'ES256' is not allowed; tokens "
                                                    "must be signed with RS256, RS384, RS512")


############################################################################################
# Scopes: exactly one per route, no hierarchy


def test_auth_scopes_are_not_hierarchical(c, keys):
    manage = auth(keys.token(MANAGE))
    for path in ("/lists/a1", "/lists/a1/range?from_top=0", "/lists/a1/percentile", "/lists/a1/elements/1"):
        denied(c.get(path, headers=manage),
               "token lacks the api:read scope this route needs (it has: api:manage); scopes are not hierarchical")
    for scope in (READ, UPDATE, DELETE):
        denied(c.get("/lists", headers=auth(keys.token(scope))),
               f"token lacks the api:manage scope this route needs (it has: {scope}); scopes are not hierarchical")
    allowed(c.get("/lists", headers=manage))


@pytest.mark.parametrize(
    ("method", "path", "body", "scope"),
    [
        ("GET", "/lists/a1", None, READ),
        ("GET", "/lists/a1/range?from_top=0", None, READ),
        ("POST", "/lists/a1/elements/find", {"element_ids": [1]}, READ),
        ("POST", "/lists/a1/elements/1/around", {"element_ids": [2]}, READ),
        ("PUT", "/lists/a1/elements/3", {"id": 3, "score": 31}, UPDATE),
        ("PUT", "/lists/a1/elements", [{"id": 4, "score": 41}], UPDATE),
        ("DELETE", "/lists/b1/elements/5", None, DELETE),
        ("DELETE", "/lists/b1/elements?element_ids=4", None, DELETE),
        ("GET", "/xlist/elements/1?lists=a1", None, READ),
        ("PUT", "/xlist/elements", {"lists": ["a1"], "payload": [{"id": 2, "score": 5}]}, UPDATE),
        ("GET", "/lists", None, MANAGE),
        ("PUT", "/xlist/verify", {"lists": ["a1"]}, MANAGE),
        ("GET", "/backup/nosuchjob1", None, MANAGE),
        ("GET", "/", None, MANAGE),
    ],
)
def test_auth_each_rankdb_route_needs_its_one_scope(c, keys, method, path, body, scope):
    for other in (READ, UPDATE, DELETE, MANAGE):
        reply = c.request(method, path, json=body, headers=auth(keys.token(other)))
        if other == scope:
            allowed(reply)
        else:
            assert reply.status_code == 401 and reply.json()["code"] == "jwt_security_error", (other, reply.text)


def test_auth_scopes_claim_as_array_or_string_in_scope_or_scopes(c, keys):
    allowed(c.get("/lists/a1", headers=auth(keys.token([UPDATE, READ], claim="scopes"))))
    allowed(c.get("/lists/a1", headers=auth(keys.token(f"{UPDATE} {READ}", claim="scopes"))))
    allowed(c.get("/lists/a1", headers=auth(keys.token([READ]))))
    denied(c.get("/lists/a1", headers=auth(keys.token(None))),
           "token lacks the api:read scope this route needs (it has: none); scopes are not hierarchical")


def test_auth_jwt_endpoint_is_disabled_as_in_production(c, keys):
    denied(c.post("/jwt?scope=api:read", headers=auth(keys.token(MANAGE))), "jwt signing not enabled")
    denied(c.post("/jwt?scope=api:read", headers=auth(keys.token(READ))),
           "token lacks the api:manage scope this route needs (it has: api:read); scopes are not hierarchical")


############################################################################################
# only_lists / only_elements


def test_auth_only_lists_on_path_routes(c, keys):
    token = auth(keys.token(READ, only_lists="a1, b1"))
    assert c.get("/lists/a1", headers=token).status_code == 200
    denied(c.get("/lists/c1", headers=token), "Access not granted to list c1")
    denied(c.get("/lists/no-such-list", headers=token), "Access not granted to list no-such-list")  # before 404
    manage = auth(keys.token(MANAGE, only_lists="a1"))
    assert c.get("/lists", headers=manage).status_code == 200  # manage ignores the claims


def test_auth_only_lists_on_native_leaderboard_reads(c, keys):
    token = auth(keys.token(READ, only_lists="a1"))
    refused = c.get("/api/leaderboards/b1", headers=token)
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"] == "Access not granted to list b1"
    # Allowed through to the view, which finds a ranked list rather than a leaderboard.
    allowed = c.get("/api/leaderboards/a1", headers=token)
    assert allowed.status_code == 400 and "not a leaderboard" in allowed.json()["error"]


def test_auth_only_lists_on_xlist_uses_the_resolved_lists(c, keys):
    token = auth(keys.token(UPDATE, only_lists="a1"))
    ok = c.put("/xlist/elements", json={"lists": ["a1"], "payload": [{"id": 2, "score": 7}]}, headers=token)
    assert ok.status_code == 200, ok.text
    # team=red matches a1 and b1: one match outside the allow-list fails the whole request.
    denied(c.put("/xlist/elements", json={"match_metadata": {"team": "red"}, "payload": [{"id": 2, "score": 7}]},
                 headers=token), "Access not granted to list b1")
    denied(c.put("/xlist/elements", json={"all_in_sets": ["acl-set"], "payload": []}, headers=token),
           "Access not granted to list b1")
    read = auth(keys.token(READ, only_lists="a1"))
    denied(c.get("/xlist/elements/1", params={"match_metadata": json.dumps({"team": "blue"})}, headers=read),
           "Access not granted to list c1")
    assert c.get("/xlist/elements/1", params={"lists": "a1"}, headers=read).status_code == 200


def test_auth_only_elements_on_path_query_and_body(c, keys):
    read = auth(keys.token(READ, only_elements="1,2"))
    assert c.get("/lists/a1/elements/1", headers=read).status_code == 200
    denied(c.get("/lists/a1/elements/3", headers=read), "Access not granted to element 3")
    assert c.post("/lists/a1/elements/find", json={"element_ids": [1, 2]}, headers=read).status_code == 200
    denied(c.post("/lists/a1/elements/find", json={"element_ids": [1, 4]}, headers=read),
           "Access not granted to element 4")
    denied(c.post("/lists/a1/elements/1/around", json={"element_ids": [2, 5]}, headers=read),
           "Access not granted to element 5")
    update = auth(keys.token(UPDATE, only_elements=["2"]))
    assert c.put("/lists/a1/elements", json=[{"id": 2, "score": 3}], headers=update).status_code == 200
    denied(c.put("/lists/a1/elements", json=[{"id": 2, "score": 3}, {"id": 9, "score": 1}], headers=update),
           "Access not granted to element 9")
    denied(c.post("/lists/a1/elements", json={"id": 8, "score": 1}, headers=update), "Access not granted to element 8")
    denied(c.put("/xlist/elements", json={"lists": ["a1"], "payload": [{"id": 7, "score": 1}]}, headers=update),
           "Access not granted to element 7")
    delete = auth(keys.token(DELETE, only_elements="5"))
    denied(c.delete("/lists/c1/elements?element_ids=5&element_ids=4", headers=delete),
           "Access not granted to element 4")
    assert c.delete("/lists/c1/elements?element_ids=5", headers=delete).status_code == 204
    denied(c.delete("/xlist/elements/4?lists=c1", headers=delete), "Access not granted to element 4")


def test_auth_unreadable_body_is_refused_before_the_allow_list(c, keys):
    update = auth(keys.token(UPDATE, only_elements="2"))
    reply = c.put("/lists/a1/elements", content=b"{not json", headers={**update, "Content-Type": "application/json"})
    assert reply.status_code == 400 and reply.json()["code"] == "bad_request"


def test_auth_claims_of_the_wrong_type_are_refused(c, keys):
    denied(c.get("/lists/a1", headers=auth(keys.token(READ, only_lists=5))),
           "token claim only_lists must be a string or an array of strings")


############################################################################################
# Every other route


def test_auth_health_routes_stay_open(c):
    assert c.get("/health/ping").json() == {"pong": "OK"}
    for path in ("/healthz", "/readyz", "/metrics"):
        assert c.get(path).status_code != 401, path


def test_auth_native_routes_need_read_update_or_manage(c, keys):
    read, update, manage = (auth(keys.token(s)) for s in (READ, UPDATE, MANAGE))
    denied(c.get("/api/stats"), "missing Authorization header; send 'Authorization: Bearer <jwt>'", goa=False)
    assert c.get("/api/stats", headers=read).status_code == 200
    events = {"events": [{"user": 1, "metric": "steps", "ts": 1_700_000_000, "value": 1}]}
    denied(c.post("/api/events", json=events, headers=read),
           "token lacks the api:update scope this route needs (it has: api:read); scopes are not hierarchical",
           goa=False)
    allowed(c.post("/api/events", json=events, headers=update))
    query = {"users": [1], "metrics": ["steps"], "t1": 1_700_000_000, "t2": 1_700_000_001}
    allowed(c.post("/api/query", json=query, headers=read))
    denied(c.post("/api/query", json=query, headers=update),
           "token lacks the api:read scope this route needs (it has: api:update); scopes are not hierarchical",
           goa=False)
    denied(c.get("/api/admin/snapshot", headers=read),
           "token lacks the api:manage scope this route needs (it has: api:read); scopes are not hierarchical",
           goa=False)
    assert c.get("/api/admin/snapshot", headers=manage).status_code == 200


def test_auth_psd_routes_are_guarded(c, keys):
    read, update = auth(keys.token(READ)), auth(keys.token(UPDATE))
    job = {"thing": "steps", "uid": 1, "atid": 2, "aid": 3, "value": 10, "ts1": 1496539746, "ts2": 1496539747}
    denied(c.post("/v1/write", json=job), "missing Authorization header; send 'Authorization: Bearer <jwt>'", goa=False)
    denied(c.post("/v1/write", json=job, headers=read),
           "token lacks the api:update scope this route needs (it has: api:read); scopes are not hierarchical",
           goa=False)
    assert c.post("/v1/write", json=job, headers=update).text == "ok"
    got = c.post("/v1/mumt_query/all/1496539746/1496539747", data={"things": "steps", "ids": "1"}, headers=read)
    assert got.json() == {"data": {"1": {"_atids": [2], "steps": 10}}}
    assert c.get("/v1/readcount/steps/1/2", headers=read).status_code != 401


def test_auth_unknown_routes_answer_404_not_401(c):
    assert c.get("/no/such/route").status_code == 404


############################################################################################
# Server-to-server backup does not carry the caller's token (web/compat/rankdb/backups.py)


def test_auth_server_backup_does_not_forward_the_token(tmp_path, keys):
    other = start_server(tmp_path, extra=["--jwt-key-dir", str(keys.directory)])
    source = start_server(tmp_path, extra=["--jwt-key-dir", str(keys.directory),
                                           "--backup-allowed-host", f"127.0.0.1:{other.port}"])
    try:
        manage = auth(keys.token(MANAGE))
        with source.client() as sc:
            assert sc.post("/xlist/restore", content=restore_body(), headers=manage).status_code == 200
            reply = sc.put("/xlist/backup", headers=manage, json={
                "destination": {"type": "server", "path": f"127.0.0.1:{other.port}"},
                "lists": {"lists": ["a1"]}})
        # Without the caller's token the guarded destination's health check answers 401, so
        # the backup is refused before anything is sent.
        assert reply.status_code == 400 and "answered 401" in reply.json()["detail"], reply.text
        assert reply.json()["meta"] == {"field": "destination.path"}
        with other.client() as oc:
            assert oc.get("/lists", headers=manage).json()["lists"] == []
    finally:
        source.stop()
        other.stop()


############################################################################################
# The edge answers before auth (web/edge.py)


def test_auth_foreign_host_origin_and_content_type_are_refused_before_auth(c, keys):
    # No token, or a valid one: what the edge refuses gets the edge's answer, never a 401.
    for headers in ({}, auth(keys.token(UPDATE))):
        host = c.get("/lists/a1", headers={**headers, "Host": "evil.example"})
        assert host.status_code == 421 and host.json()["meta"] == {"field": "Host"}, host.text
        origin = c.post("/api/events", json=[], headers={**headers, "Origin": "http://evil.example"})
        assert origin.status_code == 403 and origin.json()["field"] == "Origin", origin.text
        typed = c.post("/api/events", content=b"[]", headers={**headers, "Content-Type": "text/plain"})
        assert typed.status_code == 415 and typed.json()["field"] == "Content-Type", typed.text
    assert c.get("/health/ping", headers={"Host": "evil.example"}).status_code == 421


############################################################################################
# Start-up and pure parts


def test_auth_empty_key_directory_stops_the_server(tmp_path):
    empty = tmp_path / "none"
    empty.mkdir()
    with pytest.raises(RuntimeError, match=r"no \*\.pub RSA public keys in"):
        start_server(tmp_path, extra=["--jwt-key-dir", str(empty)])


def test_KeyRing_load_refuses_non_rsa_and_junk(tmp_path):
    ec_pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "ec.pub").write_bytes(ec_pem)
    with pytest.raises(JwtKeyError, match=r"holds a non-RSA key \(ECPublicKey\); only RSA keys are supported"):
        KeyRing.load(tmp_path)
    (tmp_path / "ec.pub").write_bytes(b"junk")
    with pytest.raises(JwtKeyError, match=r"is not a PEM or OpenSSH public key"):
        KeyRing.load(tmp_path)


def test_KeyRing_load_accepts_openssh_rsa_keys(tmp_path):
    key = new_key()
    (tmp_path / "id_rsa.pub").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    ring = KeyRing.load(tmp_path)
    assert ring.verify(jwt.encode({"scope": READ}, key, algorithm="RS256")) == {"scope": READ}


def test_Grant_from_claims():
    grant = Grant.from_claims({"scopes": "api:read api:update", "only_lists": " a1 ,b1,", "only_elements": "1, 2"})
    assert grant == Grant(frozenset({READ, UPDATE}), frozenset({"a1", "b1"}), frozenset({1, 2}))
    assert Grant.from_claims({"scope": [MANAGE], "scopes": READ}).scopes == {MANAGE}  # scope wins


def test_rankdb_rule_and_native_scope_tables():
    assert rankdb_rule("GET", "/lists/a1/elements/7")[0].scope == READ
    assert rankdb_rule("HEAD", "/lists/a1")[0].scope == READ
    assert rankdb_rule("POST", "/lists/a1/elements/find")[0].elements == ("body_ids",)
    assert rankdb_rule("PUT", "/xlist/backup")[0].scope == MANAGE
    assert rankdb_rule("GET", "/api/stats") is None
    assert native_scope("POST", "/v1/readcount_with_ids/p/1/2") == READ
    assert native_scope("POST", "/v1/batch") == UPDATE
    assert native_scope("POST", "/api/leaderboards/rank") == READ
    assert native_scope("POST", "/api/leaderboards") == UPDATE
    assert native_scope("DELETE", "/api/leaderboards/b1") == UPDATE
    assert native_scope("GET", "/health/ping") is None


async def test_auth_jwt_endpoint_answers_401_with_jwt_off(engine):
    """RankDB's production builds never sign tokens, whether or not JWT is on."""
    app = create_app(engine, Settings(data_dir=None))
    async with app.test_app() as test_app:
        reply = await test_app.test_client().post("/jwt?scope=api:read")
        body = await reply.get_json()
    assert reply.status_code == 401
    assert (body["code"], body["detail"]) == ("jwt_security_error", "jwt signing not enabled")


async def test_auth_install_refuses_a_directory_without_keys(engine, tmp_path):
    with pytest.raises(JwtKeyError, match=r"^no \*\.pub RSA public keys in '.*'; add at least one PEM "
                                          r"public key, or start without --jwt-key-dir to turn JWT off$"):
        create_app(engine, Settings(data_dir=None, jwt_key_dir=tmp_path))


async def test_auth_every_websocket_needs_a_read_token(engine, keys):
    """Quart runs ``before_request`` hooks for HTTP only: auth's own ``before_websocket``
    hook guards every websocket route with the same keys (a handshake is a GET: api:read)."""
    from test_security_http import handshake, probe_app

    app = probe_app(engine, Settings(data_dir=None, jwt_key_dir=keys.directory))
    host = {"Host": "localhost:1155"}
    assert await handshake(app, {**host, **auth(keys.token(READ))}) == (101, "open")
    missing = "missing Authorization header; send 'Authorization: Bearer <jwt>'"
    assert await handshake(app, host) == (401, {"error": missing, "field": "Authorization"})
    status, body = await handshake(app, {**host, **auth(keys.token(UPDATE))})
    assert status == 401 and isinstance(body, dict) and "lacks the api:read scope" in str(body["error"])
    status, _ = await handshake(app, {**host, **auth(keys.token(READ, key=keys.stranger))})
    assert status == 401
