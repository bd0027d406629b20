"""Hypothesis fuzzing of every seed-compatible route (PSD, RankDB, RankDB backups), end to end.

One real ``pointspace serve`` process on loopback, seeded with PSD counters, global counters,
RankDB lists with elements and finished backup jobs, takes fuzzed requests from
``tests/fuzz/strategies_seed.py`` for every ``(rule, method)`` of the ``psd``, ``rankdb`` and
``backup`` blueprints. After every request:

* the status is below 500, the answer came (no hang: every request has a timeout) and the
  server process is still alive;
* a 4xx carries a JSON object (msgpack when the request's Accept asked for it) in the route's
  documented error shape: PSD routes answer ``{"error", "field"?}`` (their 406/422 included),
  RankDB and backup routes goa's ``{"id", "code", "status", "detail", "meta"?}``; a 404 or
  405 the app answers before any route matched (an encoded slash, a wrong method) has the
  app's ``{"error"}`` shape;
* a rejected request (4xx) with a method that can write changed nothing: the whole stored
  state (every entity of the live snapshot export, and the log position) is the same as
  right before it. Accepted writes change state, so the fingerprint is taken again after them.

``test_every_seed_route_is_fuzzed`` reads the app's ``url_map``, so a route added to one of
the three blueprints without a strategy fails the suite.

The ``test_issue_fuzz_*`` tests at the end pin, one request each, the bugs this fuzzing
found, so that each fix has its own test.

Budget: ``DEFAULT_EXAMPLES`` examples per route, derandomized (the same examples every run, no
example database), for a module well under a minute on two cores. For a longer hunt (the same
variables as ``test_native_openapi.py``): ``POINTSPACE_FUZZ_EXAMPLES=400`` examples per route,
and ``POINTSPACE_FUZZ_RANDOM=1`` for new examples every run (pin a run with pytest's
``--hypothesis-seed``).
"""

from __future__ import annotations

import http.client
import io
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import msgpack
import orjson
import pytest
from conftest import ServerProcess, free_port, start_server
from hypothesis import HealthCheck, Phase, given, settings
from strategies_seed import (
    BLUEPRINTS,
    COUNTERS,
    LISTS,
    ROUTES,
    T0,
    Context,
    FuzzRequest,
    seed_elements,
    wrong_method_requests,
)

from engine.engine import Engine
from engine.lists import ListSettings
from snapshots.backup import encode_backup
from snapshots.codec import SnapshotCorrupted, iter_snapshot_items, read_snapshot_header
from web.app import create_app

#: Examples per route in CI; ``POINTSPACE_FUZZ_EXAMPLES`` overrides.
DEFAULT_EXAMPLES = 60
EXAMPLES = int(os.environ.get("POINTSPACE_FUZZ_EXAMPLES") or DEFAULT_EXAMPLES)
RANDOM = bool(os.environ.get("POINTSPACE_FUZZ_RANDOM"))
#: Seconds one request may take before it counts as a hang.
REQUEST_TIMEOUT = 30.0
#: Methods whose rejection must leave the stored state as it was.
READ_METHODS = frozenset({"GET", "HEAD"})
GOA_KEYS = frozenset({"id", "code", "status", "detail"})


def fuzz_settings(share: float = 1.0) -> settings:
    """``share`` of ``EXAMPLES`` examples; fixed ones and no example database unless
    ``POINTSPACE_FUZZ_RANDOM`` is set."""
    options: dict[str, Any] = {
        "max_examples": max(1, round(EXAMPLES * share)),
        "deadline": None,
        "suppress_health_check": list(HealthCheck),
        "print_blob": True,
        # No "explain" phase: it reruns a failure many times to annotate it, and the
        # assertion messages already name the request, the answer and the server's log.
        "phases": [Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    }
    if not RANDOM:
        options.update(derandomize=True, database=None)
    return settings(**options)


############################################################################################
# The servers and their seed data
############################################################################################


def ok(reply: httpx.Response, status: int = 200) -> httpx.Response:
    assert reply.status_code == status, (reply.status_code, reply.text)
    return reply


def seed_state(client: httpx.Client) -> None:
    """Write the seed data again and delete every other list, so that each route starts from
    the seeded entities and the state (and its fingerprint) stays small. Idempotent: PSD
    writes are diffs, and the lists are replaced whole."""
    seeded = {name for name, *_ in LISTS}
    after = ""
    while True:
        page = ok(client.get("/lists", params={"limit": 1000, "after_id": after})).json()
        for entry in page["lists"]:
            if entry["id"] not in seeded:  # "%2E": a list may be named ".."
                ok(client.delete(f"/lists/{entry['id'].replace('.', '%2E')}"), 204)
        if not page["lists"] or not page["lists_after"]:
            break
        after = page["lists"][-1]["id"]
    metric = [
        (1, "steps", 2, 3, 120, T0 - 100, T0), (1, "steps", 5, 4, 80, T0, T0 + 3600),
        (1, "points", 2, 3, 10, T0 - 100, T0), (2, "steps", 2, 7, 50, T0, T0 + 10),
        ("alice", "steps", 5, 9, 10, T0, T0 + 20), (2, "points", 2, 7, 0, T0, T0 + 10),
    ]
    messages: list[dict[str, Any]] = [
        {"command": "metric", "metric": {"uid": u, "thing": t, "atid": a, "aid": i, "value": v,
                                         "ts1": t1, "ts2": t2}}
        for u, t, a, i, v, t1, t2 in metric
    ]
    ok(client.post("/v1/batch", json=messages))
    for list_id, list_set, metadata, ids in LISTS:
        body = {"id": list_id, "set": list_set, "metadata": metadata,
                "populate": seed_elements(ids)}
        ok(client.post("/lists", params={"replace": "true"}, json=body))


def wait_done(client: httpx.Client, job_id: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = ok(client.get(f"/backup/{job_id}")).json()
        if status["done"]:
            return status
        time.sleep(0.05)
    raise AssertionError(f"backup job {job_id} not done after {timeout} s")


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


class Fuzzer:
    """Sends fuzzed requests to one server and checks every answer (see the module docstring).

    ``known`` is the state fingerprint as of the end of the last request when that request
    was a rejected write (whose fingerprint was just taken); otherwise ``None``, and a writing
    request takes a fresh one first. So a run of rejected writes costs one export each, and a
    failure is never blamed on a later request.
    """

    def __init__(self, server: ServerProcess, ctx: Context) -> None:
        self.server = server
        self.ctx = ctx
        self.client = httpx.Client(base_url=server.url, timeout=REQUEST_TIMEOUT)
        self.known: dict[str, str] | None = None
        #: The last accepted (2xx) request that may have written.
        self.last_accepted: FuzzRequest | None = None
        self.statuses: dict[str, Counter[int]] = {}

    def close(self) -> None:
        self.client.close()

    # ----- state ------------------------------------------------------------------------

    def fingerprint(self) -> dict[str, str]:
        """Every stored entity (kind and key -> applied seq and state) and the log position,
        read from the live snapshot export (``GET /api/admin/snapshot/export``)."""
        data = ok(self.client.get("/api/admin/snapshot/export")).content
        try:
            header = read_snapshot_header(io.BytesIO(data))
            items = {f"{kind} {key!r}": repr((seq, state))
                     for kind, key, seq, state in iter_snapshot_items(io.BytesIO(data))}
        except SnapshotCorrupted as exc:
            raise AssertionError(
                f"the live snapshot export does not decode ({exc}); the state changed last with "
                f"{self.last_accepted!r}, which stored something a snapshot cannot hold"
            ) from None
        items["(log position)"] = str(header.start_seq)
        return items

    # ----- requests ---------------------------------------------------------------------

    def _log_since(self, offset: int) -> str:
        """What the server logged since ``offset`` (at most the last 8000 characters)."""
        return self.server.log_path.read_bytes()[offset:][-8000:].decode(errors="replace")

    def send(self, req: FuzzRequest, log_offset: int) -> Reply:
        headers = dict(req.headers)
        try:
            if req.has_dot_segments:  # httpx would drop them: send the target as is
                conn = http.client.HTTPConnection("127.0.0.1", self.server.port,
                                                  timeout=REQUEST_TIMEOUT)
                try:
                    conn.request(req.method, req.target, body=req.body or None, headers=headers)
                    resp = conn.getresponse()
                    return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()},
                                 resp.read())
                finally:
                    conn.close()
            url = httpx.URL(scheme="http", host="127.0.0.1", port=self.server.port,
                            raw_path=req.target.encode("ascii"))
            content: Any = iter([req.body]) if req.chunked else req.body
            reply = self.client.request(req.method, url, content=content, headers=headers)
            return Reply(reply.status_code, dict(reply.headers), reply.content)
        except (httpx.TransportError, OSError, http.client.HTTPException) as exc:
            alive = "alive" if self.server.process.poll() is None else "DEAD"
            raise AssertionError(
                f"{req!r} got no answer ({exc!r}); the server is {alive}. Server log:\n"
                f"{self._log_since(log_offset)}"
            ) from None

    def run(self, req: FuzzRequest, blueprint: str | None) -> Reply:
        """Send ``req`` and check the answer and, for a rejected write, the stored state."""
        writes = req.method not in READ_METHODS
        before = self.known
        if writes and before is None:
            before = self.fingerprint()
        self.known = None  # until this request is known to have changed nothing
        log_offset = self.server.log_path.stat().st_size
        reply = self.send(req, log_offset)
        self.statuses.setdefault(req.route, Counter())[reply.status] += 1
        assert reply.status < 500, (
            f"{req!r} answered {reply.status}: {reply.body[:2000]!r}\nServer log:\n"
            f"{self._log_since(log_offset)}"
        )
        assert self.server.process.poll() is None, (
            f"server died after {req!r}:\n{self._log_since(log_offset)}"
        )
        if 400 <= reply.status < 500:
            check_error_body(req, reply, blueprint)
        if writes and 400 <= reply.status < 500:
            after = self.fingerprint()
            if after != before:
                raise AssertionError(
                    f"{req!r} was rejected with {reply.status} {reply.body[:500]!r} but changed "
                    f"the stored state:\n{state_diff(before, after)}"
                )
            self.known = after
        elif writes:
            self.last_accepted = req
        return reply


def decode_error(reply: Reply) -> Any:
    ctype = reply.headers.get("content-type", "")
    if "msgpack" in ctype:
        return msgpack.unpackb(reply.body, raw=False)
    assert ctype.startswith("application/json"), f"error body is {ctype!r}: {reply.body[:300]!r}"
    return orjson.loads(reply.body)


def check_error_body(req: FuzzRequest, reply: Reply, blueprint: str | None) -> None:
    """A 4xx body is a JSON (or msgpack) object in the shape of the route's API."""
    if req.method == "HEAD":
        return
    body = decode_error(reply)
    assert isinstance(body, dict), f"{req!r}: {reply.status} body is not an object: {body!r}"
    goa = GOA_KEYS <= body.keys()
    if goa:
        assert body["status"] == reply.status, (req, body)
        assert isinstance(body["code"], str) and body["code"], (req, body)
        assert isinstance(body["id"], str) and body["id"], (req, body)
        assert isinstance(body["detail"], str) and body["detail"], (req, body)
        meta = body.get("meta")
        assert meta is None or isinstance(meta.get("field"), str), (req, body)
    else:
        assert isinstance(body.get("error"), str) and body["error"], (req, reply.status, body)
        field = body.get("field")
        assert field is None or isinstance(field, str), (req, body)
    if blueprint == "psd":
        assert not goa, f"{req!r}: a PSD route answered goa's error shape: {body!r}"
    elif blueprint in ("rankdb", "backup") and reply.status not in (404, 405):
        assert goa, f"{req!r}: a RankDB route answered {reply.status} without goa's shape: {body!r}"


def state_diff(before: dict[str, str], after: dict[str, str]) -> str:
    def short(text: str | None) -> str:
        return "(absent)" if text is None else text if len(text) < 400 else text[:400] + "..."

    lines = [f"  {key}: {short(before.get(key))} -> {short(after.get(key))}"
             for key in sorted(before.keys() | after.keys()) if before.get(key) != after.get(key)]
    return "\n".join(lines[:20])


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzer]:
    """A seeded server under test, a second one as a backup destination, and the context."""
    tmp = tmp_path_factory.mktemp("fuzz-seed")
    scratch = tmp / "scratch"
    scratch.mkdir()
    server = start_server(tmp, extra=["--log-format", "text", "--backup-dir", str(scratch),
                                      "--backup-allowed-host", "127.0.0.1"])
    dest = start_server(tmp_path_factory.mktemp("fuzz-dest"))
    try:
        with server.client() as client:
            seed_state(client)
            for name, value in zip(COUNTERS, (1, 2, 3, 4), strict=True):
                ok(client.post("/v1/batch", json=[{"command": "count", "count": {
                    "thing": name, "value": value, "ts": T0}}]))
            backup = ok(client.put("/xlist/backup", json={
                "destination": {"type": "download"}, "lists": {}})).content
            backup_file = scratch / "seed.bin"
            job = ok(client.put("/xlist/backup", json={
                "destination": {"type": "file", "path": backup_file.name}, "lists": {}}), 201)
            job_id = job.json()["id"]
            wait_done(client, job_id)
        garbage = scratch / "garbage.bin"
        garbage.write_bytes(b"\x28\xb5\x2f\xfd" + os.urandom(64))
        ctx = Context(tmp_dir=scratch, backup=backup, backup_file=backup_file,
                      garbage_file=garbage, job_ids=(job_id,), closed_port=free_port(),
                      dest=f"127.0.0.1:{dest.port}")
        fuzz = Fuzzer(server, ctx)
        yield fuzz
        fuzz.close()
    finally:
        server.stop()
        dest.stop()


############################################################################################
# Coverage: every route of the three blueprints has a strategy
############################################################################################


def seed_routes(app: Any) -> set[tuple[str, str, str]]:
    """``(blueprint, rule, method)`` for every route of the seed-compatible blueprints."""
    names = set(BLUEPRINTS.values())
    return {
        (rule.endpoint.partition(".")[0], rule.rule, method)
        for rule in app.url_map.iter_rules()
        if "." in rule.endpoint and rule.endpoint.partition(".")[0] in names
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }


async def test_every_seed_route_is_fuzzed(engine: Engine) -> None:
    """A route added to the psd, rankdb or backup blueprint without a strategy in
    ``strategies_seed.ROUTES`` (or a strategy for a route that is gone) fails here."""
    app = create_app(engine)
    served = seed_routes(app)
    fuzzed = {(BLUEPRINTS[key], *key) for key in ROUTES}
    assert served, "no psd/rankdb/backup routes found in the url_map"
    missing, stale = sorted(served - fuzzed), sorted(fuzzed - served)
    assert missing == [], f"routes without a strategy in strategies_seed.ROUTES: {missing}"
    assert stale == [], f"strategies for routes the app does not serve: {stale}"


############################################################################################
# The fuzzing
############################################################################################


def _key_id(key: tuple[str, str]) -> str:
    return f"{key[1]} {key[0]}"


@pytest.mark.parametrize("key", sorted(ROUTES), ids=_key_id)
def test_seed_route_fuzz(fuzzer: Fuzzer, key: tuple[str, str]) -> None:
    """Fuzzed requests to one route: no 5xx, JSON 4xx, rejected writes change nothing."""
    seed_state(fuzzer.client)
    fuzzer.known = None
    strategy = ROUTES[key](fuzzer.ctx)
    blueprint = BLUEPRINTS[key]

    @fuzz_settings()
    @given(req=strategy)
    def fuzz(req: FuzzRequest) -> None:
        fuzzer.run(req, blueprint)

    fuzz()


@pytest.mark.parametrize("rule", sorted({rule for rule, _ in ROUTES}))
def test_seed_route_wrong_method(fuzzer: Fuzzer, rule: str) -> None:
    """A method no route at a path takes is a 405 with a JSON body, and changes nothing."""
    fuzzer.known = None

    @fuzz_settings(share=0.2)
    @given(req=wrong_method_requests(rule))
    def fuzz(req: FuzzRequest) -> None:
        reply = fuzzer.run(req, None)
        assert reply.status == 405, (req, reply)

    fuzz()


def test_seed_route_fuzz_statistics(fuzzer: Fuzzer, capsys: pytest.CaptureFixture[str]) -> None:
    """Every fuzzed route's strategy got past validation at least once: one that only ever
    produced rejections would test nothing behind them. (Statuses per route are printed for
    a longer hunt, ``POINTSPACE_FUZZ_EXAMPLES`` or ``POINTSPACE_FUZZ_RANDOM`` set.)"""
    table = "\n".join(f"  {route}: {dict(sorted(counts.items()))}"
                      for route, counts in sorted(fuzzer.statuses.items()))
    if EXAMPLES != DEFAULT_EXAMPLES or RANDOM:
        with capsys.disabled():
            print(f"\nstatuses per route:\n{table}")
    never_accepted = sorted(
        route for route, counts in fuzzer.statuses.items()
        if not route.startswith("?") and not any(200 <= status < 300 for status in counts)
    )
    assert never_accepted == [], f"routes never answered 2xx:\n{table}"


def test_seed_route_fuzz_left_no_errors_in_the_log(fuzzer: Fuzzer) -> None:
    """No traceback and no error line anywhere in the server's log (background backup jobs
    report failures only there)."""
    assert fuzzer.server.process.poll() is None
    bad = [line for line in fuzzer.server.log().splitlines()
           if " ERROR " in line or "Traceback" in line]
    assert bad == [], "\n".join(bad[:20]) + "\n" + fuzzer.server.log()[-6000:]


############################################################################################
# The bugs this fuzzing found, one request each (conftest's own server: a failure here does
# not disturb the fuzzed one)
############################################################################################


def last_seq(client: httpx.Client) -> int:
    """The engine's log position, from RankDB's ``/health``."""
    return ok(client.get("/health")).json()["lazy_saver"]["last_seq"]


@pytest.mark.parametrize(("path", "shape"), [("/lists", "id"), ("/v1/batch", "error")])
def test_issue_fuzz_msgpack_map_with_an_array_key_is_a_400(
    client: httpx.Client, path: str, shape: str
) -> None:
    """A msgpack map whose key is an array cannot become a dict (``unhashable type: 'list'``):
    the body is malformed, a 400 in the route's error shape, not a 500. Every route that
    decodes a msgpack body goes through ``web/bodies.decode_body``."""
    body = msgpack.packb({(1, 2): 1}, use_bin_type=True)  # b"\x81\x92\x01\x02\x01"
    reply = client.post(path, content=body, headers={"Content-Type": "application/msgpack"})
    assert reply.status_code == 400, (reply.status_code, reply.text)
    assert shape in reply.json()


def _binary_key_by_put(client: httpx.Client, list_id: str) -> httpx.Response:
    ok(client.post("/lists", json={"id": list_id, "set": "s1"}))
    body = msgpack.packb({"id": 1, "score": 5, "payload": {b"k": 1}}, use_bin_type=True)
    return client.put(f"/lists/{list_id}/elements/1", content=body,
                      headers={"Content-Type": "application/msgpack"})


def _binary_key_by_restore(client: httpx.Client, list_id: str) -> httpx.Response:
    def row(value: int, width: int) -> bytes:
        return value.to_bytes(width, "little")

    record = {"v": 1, "count": 1, "ids": row(1, 8), "scores": row(5, 8),
              "tie_breakers": row(0, 4), "updated_at": row(T0, 4), "payloads": {1: {b"k": 1}}}
    return client.post("/xlist/restore", content=encode_backup(
        [(list_id, ListSettings(set="s1"), [record])]))


@pytest.mark.parametrize(("write", "list_id"), [(_binary_key_by_put, "fz-issue-bin-put"),
                                              (_binary_key_by_restore, "fz-issue-bin-restore")],
                         ids=["put", "restore"])
def test_issue_fuzz_payload_with_a_binary_key_is_refused_or_served(
    client: httpx.Client, write: Callable[[httpx.Client, str], httpx.Response], list_id: str
) -> None:
    """msgpack (a body, or a backup's chunk) can carry a payload map with a binary key, which
    JSON cannot write: refuse it (400), or store it and answer it. Today it is stored, and
    every JSON read of the element (GET, range, percentile, neighbours...) is a 500
    (``TypeError: keys must be str, int, float, bool or None, not bytes``)."""
    reply = write(client, list_id)
    assert reply.status_code in (200, 400), (reply.status_code, reply.text)
    read = client.get(f"/lists/{list_id}/elements/1")
    assert read.status_code == (200 if reply.status_code == 200 else 404), (read.status_code,
                                                                           read.text)


def test_issue_fuzz_payload_with_an_extension_type_is_refused_or_snapshotted(
    client: httpx.Client,
) -> None:
    """A payload holding a msgpack extension value (code 127) is stored, but no snapshot that
    holds it can be read back (``unknown msgpack extension type 127``): the live export does
    not decode, recovery skips every such snapshot, and a backup of the list cannot be
    restored. Refuse such payloads (400), or store something that survives a snapshot."""
    ok(client.post("/lists", json={"id": "fz-issue-ext", "set": "s1"}))
    body = msgpack.packb({"id": 1, "score": 5, "payload": {"x": msgpack.ExtType(127, b"zz")}},
                         use_bin_type=True)
    put = client.post("/lists/fz-issue-ext/elements", content=body,
                      headers={"Content-Type": "application/msgpack"})
    assert put.status_code in (200, 400), (put.status_code, put.text)
    export = ok(client.get("/api/admin/snapshot/export")).content
    list(iter_snapshot_items(io.BytesIO(export)))  # raises SnapshotCorrupted today


@pytest.mark.parametrize(("method", "path", "body", "status"), [
    ("DELETE", "/lists/fz-issue-none/elements/1", None, 404),
    ("DELETE", "/lists/fz-issue-none/elements?element_ids=1", None, 404),
    ("PUT", "/lists/fz-issue-none/elements/1", {"id": 1, "score": 1}, 404),
    ("PUT", "/lists/fz-issue-none/elements", [{"id": 1, "score": 1}], 404),
    ("POST", "/lists/fz-issue-none/elements", {"id": 1, "score": 1}, 404),
    ("POST", "/lists/fz-issue-log/elements", {"id": 1, "score": 1}, 409),
    ("PUT", "/lists/fz-issue-none/clone", {"id": "fz-issue-clone", "set": "s1"}, 404),
    ("POST", "/lists", {"id": "fz-issue-log", "set": "s1"}, 409),  # fixed in bb9fe86
])
def test_issue_fuzz_rejected_list_command_appends_nothing_to_the_log(
    client: httpx.Client, method: str, path: str, body: Any, status: int
) -> None:
    """A list command refused because of the stored state (missing list: 404; existing list:
    409) is appended to the write-ahead log before the list's actor refuses it: every such
    request grows the log (and costs an fsync with ``--fsync always``). Check against the
    state first, then log (STYLE.md, point 4)."""
    client.post("/lists", params={"replace": "true"},
                json={"id": "fz-issue-log", "set": "s1", "populate": [{"id": 1, "score": 1}]})
    before = last_seq(client)
    reply = client.request(method, path, json=body)
    assert reply.status_code == status, (reply.status_code, reply.text)
    assert last_seq(client) == before


def test_issue_fuzz_backup_to_a_malformed_ipv6_host_is_a_400(client: httpx.Client) -> None:
    """``urlsplit`` raises ``ValueError("Invalid IPv6 URL")`` on ``[::1``; the destination is
    malformed, a 400 naming ``destination.path``, not a 500."""
    reply = client.put("/xlist/backup", json={
        "destination": {"type": "server", "path": "[::1"}, "lists": {}})
    assert reply.status_code == 400, (reply.status_code, reply.text)
    assert reply.json()["meta"]["field"] == "destination.path"
