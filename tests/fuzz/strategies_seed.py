"""Hypothesis strategies for fuzzing the seed-compatible routes: PSD, RankDB and RankDB backups.

Theory of operation
-------------------
Every route of the ``psd``, ``rankdb`` and ``backup`` blueprints has one entry in ``ROUTES``,
keyed by its URL rule and method exactly as ``app.url_map`` spells them, so that
``tests/fuzz/test_seed_routes.py`` can fail when a route is added without a strategy here. An
entry builds a strategy of :class:`FuzzRequest` (raw method, target, headers and body bytes)
from a :class:`Context` that names what the test server was seeded with.

Each example is drawn *valid* (one in three: every part valid, so that it reaches the engine
and the seeded entities, not only validation and 404s) or *hostile* (``HOSTILE``, one shared
draw per example), and a hostile example mixes three kinds of faults, because each finds a
different kind of bug:

* structurally valid requests whose fields are sometimes replaced by hostile values (edge and
  out-of-range integers, floats, NaN, overlong and odd unicode strings, wrong types, nested
  junk) or left out, so that validation is reached field by field;
* bodies that do not decode: random bytes, truncated JSON, duplicate keys, NaN literals, wrong
  or missing content types, msgpack with binary or array map keys and extension types, NDJSON,
  broken multipart forms;
* odd path parameters and query strings: percent-encoded unicode, ``.``/``..``, encoded
  slashes, very long segments, repeated and malformed query parameters.

Values are kept small (a few elements per write, short strings except the deliberately long
ones) so that a CI run of the whole module fits in well under a minute of server time.
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import msgpack
import zstandard
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

__all__ = [
    "BLUEPRINTS",
    "COUNTERS",
    "LISTS",
    "PSD_USERS",
    "ROUTES",
    "T0",
    "Context",
    "FuzzRequest",
    "seed_elements",
    "wrong_method_requests",
]

############################################################################################
# What the test server is seeded with (tests/fuzz/test_seed_routes.py writes it)
############################################################################################

#: A PSD timestamp (the README's), around which seeded writes and fuzzed windows lie.
T0 = 1_496_539_747
U64 = 2**64 - 1
U32 = 2**32 - 1
#: PSD users with counters (``test_seed_routes.seed_state`` writes them), and global counters.
PSD_USERS: tuple[int | str, ...] = (1, 2, "alice")
PSD_THINGS = ("steps", "points")
COUNTERS = ("newsignup", "pre_1", "pre_2", "pre_alice")
#: RankDB lists: (id, set, metadata, element ids).
LISTS: tuple[tuple[str, str, dict[str, str], range], ...] = (
    ("fz-a", "fz-games", {"region": "eu", "mode": "solo"}, range(1, 41)),
    ("fz-b", "fz-games", {"region": "us"}, range(101, 111)),
    ("fz-empty", "fz-other", {}, range(0)),
)
LIST_IDS = tuple(name for name, *_ in LISTS)
SETS = ("fz-games", "fz-other")
ELEMENT_IDS = tuple(i for *_, ids in LISTS for i in ids)


def seed_elements(ids: range) -> list[dict[str, Any]]:
    """The seeded elements of one list: distinct scores, a few ties, some payloads."""
    return [
        {"id": i, "score": 1000 - (i % 30) * 7, "tie_breaker": i % 3,
         "payload": {"name": f"p{i}", "n": i} if i % 2 else None}
        for i in ids
    ]


@dataclass(frozen=True)
class Context:
    """What the strategies need to know about the running test servers."""

    #: A scratch directory on the server's machine (file backups go here, and only here).
    tmp_dir: Path
    #: A complete download backup of the seeded lists.
    backup: bytes
    #: The same backup, written on the server by a ``file`` job.
    backup_file: Path
    #: A file of garbage, for ``src_file``.
    garbage_file: Path
    #: Ids of finished backup jobs.
    job_ids: tuple[str, ...]
    #: A loopback port nothing listens on (an unreachable ``server`` destination).
    closed_port: int
    #: ``host:port`` of a second server: a reachable ``server`` destination (not this one, so
    #: that a background restore never changes the state under test).
    dest: str


@dataclass(frozen=True)
class FuzzRequest:
    """One raw request: ``target`` is the path plus query, ASCII and already percent-encoded."""

    route: str
    method: str
    target: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    #: Send the body with ``Transfer-Encoding: chunked`` instead of a Content-Length.
    chunked: bool = False

    @property
    def has_dot_segments(self) -> bool:
        """``.`` or ``..`` path segments, which httpx would remove: send these raw."""
        path = self.target.split("?", 1)[0]
        return any(part in (".", "..") for part in path.split("/"))

    def __repr__(self) -> str:
        body = self.body if len(self.body) <= 2000 else self.body[:2000] + b"...(truncated)"
        chunked = ", chunked" if self.chunked else ""
        return (f"FuzzRequest({self.method} {self.target}, headers={dict(self.headers)!r}, "
                f"body={body!r}{chunked})")


############################################################################################
# Hostile values
############################################################################################

EDGE_INTS = (
    0, 1, -1, 2**31 - 1, 2**31, -(2**31) - 1, U32, 2**32, 2**53 + 1, 2**63 - 1, 2**63,
    -(2**63), -(2**63) - 1, U64, U64 + 1, 10**30, -(10**30), 253_402_300_799, 253_402_300_800,
)
EDGE_FLOATS = (0.5, -0.0, 1.0, 1e19, 1e300, 2.0**64, float("nan"), float("inf"), float("-inf"))
EDGE_STRINGS = (
    "", " ", "0", "-1", "007", "1e3", "0x10", "1_000", "\uff11\uff12", "\u0663", "all", "ALL",
    "null", "true", "NaN", "Infinity", "\x00", "\ud800", "a,b", ",", "steps", "../..", "%2F",
    "x" * 300, "\u00e9" * 70, "\U0001f389", "\u202e", " 1 ", "fz-a", "fz a", "\n", "y" * 70_000,
)

ints = st.one_of(st.sampled_from(EDGE_INTS), st.integers(-10, 10), st.integers())
floats = st.one_of(st.sampled_from(EDGE_FLOATS), st.floats())
strings = st.one_of(
    st.sampled_from(EDGE_STRINGS),
    st.text(max_size=12),
    st.integers(190, 260).map(lambda n: "s" * n),
)
#: Strings (and integers) for a query string or form field, where the request head must stay
#: under hypercorn's 16 KiB limit (past it: a 431 with an empty body, before the app).
short_strings = st.one_of(strings, ints.map(str)).filter(lambda v: len(v) <= 4000)
#: Values only msgpack can carry: bytes, extension types and timestamps (extension -1).
msgpack_only = st.one_of(
    st.binary(max_size=8),
    st.builds(msgpack.ExtType, st.sampled_from((0, 1, 5, 127)), st.binary(max_size=12)),
    st.builds(msgpack.Timestamp, st.integers(0, 2**34 - 1), st.integers(0, 999_999_999)),
)
scalars = st.one_of(st.none(), st.booleans(), ints, floats, strings, msgpack_only)
#: Map keys of every kind msgpack allows: JSON encoding stringifies or drops the odd ones.
keys = st.one_of(
    st.text(max_size=6), st.sampled_from(("id", "score", "payload", "", "0")), ints,
    st.binary(max_size=4), st.tuples(st.integers(0, 3), st.integers(0, 3)),
)
junk = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=3)),
    max_leaves=8,
)


#: Whether this example is hostile: drawn once per example (a shared strategy gives every
#: draw in one example the same value). A valid example has every part valid, so that about
#: a third of the requests get past validation to the engine; a hostile one mixes valid and
#: hostile parts, field by field.
HOSTILE = st.shared(st.sampled_from((True, True, False)), key="pointspace-fuzz-hostile")


def pick(valid: SearchStrategy[Any], hostile: SearchStrategy[Any]) -> SearchStrategy[Any]:
    """``valid`` in a valid example; ``hostile`` or ``valid`` in a hostile one."""
    return HOSTILE.flatmap(lambda h: st.one_of(valid, hostile) if h else valid)


@st.composite
def objects(draw: st.DrawFn, fields: Mapping[str, SearchStrategy[Any]], extra: bool = True
            ) -> dict[Any, Any]:
    """An object whose fields are each valid, hostile or absent, plus maybe unknown keys
    (every field valid and present in a valid example)."""
    out: dict[Any, Any] = {}
    hostile = draw(HOSTILE)
    for name, valid in fields.items():
        mode = draw(st.sampled_from(("valid", "valid", "valid", "hostile", "absent"))
                    if hostile else st.just("valid"))
        if mode == "valid":
            out[name] = draw(valid)
        elif mode == "hostile":
            out[name] = draw(junk)
    if hostile and extra and draw(st.integers(0, 4)) == 0:
        out.update(draw(st.dictionaries(keys, junk, max_size=2)))
    return out


def some(inner: SearchStrategy[Any], max_size: int = 4) -> SearchStrategy[Any]:
    """A list of ``inner``, or in a hostile example now and then something that is not one."""
    return pick(st.lists(inner, max_size=max_size), junk)


############################################################################################
# Body encodings
############################################################################################

JSON_TYPES = (None, "application/json", "application/json; charset=utf-8", "text/plain",
              "application/x-www-form-urlencoded", "APPLICATION/JSON")
MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack",
                 "Application/MsgPack; q=1")
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonlines")
JUNK_TYPES = (None, "application/octet-stream", "text/html", "a/b; c=d", "multipart/form-data",
              "application/json; charset=utf-16", "*/*", "application/msgpack")


def to_json(value: Any) -> bytes:
    """JSON as Python writes it: big integers exact, NaN/Infinity as bare literals (invalid
    JSON), non-string keys stringified or dropped, bytes and extension types as text."""
    return json.dumps(value, skipkeys=True, allow_nan=True, default=repr).encode()


def _clip_big_ints(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return value if -(2**63) <= value <= U64 else str(value)
    if isinstance(value, list):
        return [_clip_big_ints(v) for v in value]
    if isinstance(value, tuple) and not isinstance(value, msgpack.ExtType):
        return tuple(_clip_big_ints(v) for v in value)
    if isinstance(value, dict):
        return {_clip_big_ints(k): _clip_big_ints(v) for k, v in value.items()}
    return value


def to_msgpack(value: Any) -> bytes:
    """msgpack with binary types; lone surrogates pass through (invalid UTF-8 on the wire)."""
    try:
        return msgpack.packb(value, use_bin_type=True, unicode_errors="surrogatepass")
    except OverflowError:
        return msgpack.packb(_clip_big_ints(value), use_bin_type=True,
                             unicode_errors="surrogatepass")


def _duplicate_key_json(value: dict[Any, Any], key: str, other: Any, first: bool) -> bytes:
    pairs = [(str(k), v) for k, v in value.items() if isinstance(k, str)]
    extra = (key, other)
    pairs = [extra, *pairs] if first else [*pairs, extra]
    inner = ",".join(f"{json.dumps(k)}:{to_json(v).decode()}" for k, v in pairs)
    return ("{" + inner + "}").encode()


Body = tuple[bytes, str | None]


@st.composite
def encoded(draw: st.DrawFn, values: SearchStrategy[Any], *, ndjson: bool = False) -> Body:
    """``values`` drawn and encoded in one of many ways, well-formed or not: (bytes, type).
    A valid example is JSON or msgpack (or NDJSON where the route reads it), correctly typed."""
    if not draw(HOSTILE):
        how = draw(st.sampled_from(("json", "msgpack", "ndjson") if ndjson else ("json", "msgpack")))
        value = draw(values)
        if how == "msgpack":
            return to_msgpack(value), draw(st.sampled_from(MSGPACK_TYPES))
        if how == "ndjson":
            items = value if isinstance(value, list) else [value]
            return b"\n".join(to_json(v) for v in items), draw(st.sampled_from(NDJSON_TYPES))
        return to_json(value), draw(st.sampled_from((None, "application/json")))
    how = draw(st.sampled_from((
        "json", "json", "json", "msgpack", "msgpack", "duplicate-key", "truncated", "bytes",
        "empty", "ndjson", "array-key", "utf-16", "bom", "nested",
    )))
    if how == "bytes":
        return draw(st.binary(max_size=64)), draw(st.sampled_from(JUNK_TYPES))
    if how == "empty":
        return b"", draw(st.sampled_from(JSON_TYPES + MSGPACK_TYPES))
    if how == "nested":  # arrays in arrays, deeper than a parser's recursion limit
        depth = draw(st.sampled_from((600, 5000)))
        if draw(st.booleans()):
            return b"\x91" * depth + b"\x90", draw(st.sampled_from(MSGPACK_TYPES))
        return b"[" * depth + b"]" * depth, draw(st.sampled_from(JSON_TYPES[:2]))
    value = draw(values)
    if how == "msgpack":
        return to_msgpack(value), draw(st.sampled_from(MSGPACK_TYPES))
    if how == "array-key":  # msgpack maps with array or map keys, which dicts cannot hold
        wrapped = {(1, 2): 1, **value} if isinstance(value, dict) else [{(0,): value}]
        return to_msgpack(wrapped), "application/msgpack"
    if how == "ndjson":
        items = value if isinstance(value, list) else [value]
        lines = b"\n".join(to_json(v) for v in items) + draw(st.sampled_from((b"", b"\n", b"\n{")))
        return lines, draw(st.sampled_from(NDJSON_TYPES if ndjson else NDJSON_TYPES + JSON_TYPES))
    data = to_json(value)
    if how == "duplicate-key" and isinstance(value, dict) and value:
        key = draw(st.sampled_from([k for k in value if isinstance(k, str)] or ["id"]))
        data = _duplicate_key_json(value, key, draw(junk), draw(st.booleans()))
    elif how == "truncated" and len(data) > 1:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif how == "utf-16":
        data = data.decode().encode("utf-16")
    elif how == "bom":
        data = b"\xef\xbb\xbf" + data
    return data, draw(st.sampled_from(JSON_TYPES))


def no_body() -> SearchStrategy[Body]:
    """For routes without a body: none, or in a hostile example one they must drain or
    refuse."""
    return pick(st.just((b"", None)), st.one_of(
        st.just((b"", None)),
        st.tuples(st.binary(min_size=1, max_size=64), st.sampled_from(JUNK_TYPES)),
        encoded(junk),
    ))


############################################################################################
# Forms (PSD's POST bodies: ids, things, offsets as comma-separated lists)
############################################################################################

FORM = "application/x-www-form-urlencoded"


def csv(tokens: SearchStrategy[str], max_size: int = 5) -> SearchStrategy[str]:
    """A comma-separated list, with PSD-style spaces, and empty items or an empty list in a
    hostile example."""

    def join(items: list[tuple[str, str]]) -> str:
        return "".join(t + s for t, s in items[:-1]) + items[-1][0] if items else ""

    valid = st.lists(st.tuples(tokens, st.sampled_from((",", ", "))), min_size=1,
                     max_size=max_size).map(join)
    hostile = st.lists(st.tuples(tokens, st.sampled_from((",", ", ", ",,", " , "))),
                       max_size=max_size).map(join)
    return pick(valid, hostile)


def _multipart(pairs: list[tuple[str, str]], boundary: str, broken: bool) -> bytes:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in pairs
    ]
    end = "" if broken else f"--{boundary}--\r\n"
    return ("".join(parts) + end).encode("utf-8", "surrogatepass")


@st.composite
def form(draw: st.DrawFn, fields: Mapping[str, SearchStrategy[str]]) -> tuple[Body, str]:
    """A form with ``fields``: ((body, content type), extra query string). The fields go in
    the body (urlencoded or multipart), in the query string (PSD reads both), or nowhere."""
    pairs: list[tuple[str, str]] = []
    hostile = draw(HOSTILE)
    for name, valid in fields.items():
        mode = draw(st.sampled_from(("valid", "valid", "valid", "hostile", "absent", "twice"))
                    if hostile else st.just("valid"))
        if mode == "absent":
            continue
        value = draw(valid if mode != "hostile" else short_strings)  # may go in the query
        pairs.append((name, value))
        if mode == "twice":
            pairs.append((name, draw(valid)))
    where = draw(st.sampled_from(
        ("body", "body", "body", "query", "multipart", "broken-multipart", "raw", "json", "untyped")
        if hostile else ("body", "query", "multipart")))
    if where == "query":
        return (b"", None), urlencode(pairs, quote_via=quote, encoding="utf-8", errors="surrogatepass")
    if where in ("multipart", "broken-multipart"):
        boundary = draw(st.sampled_from(("fzboundary", "a", "x" * 70)))
        body = _multipart(pairs, boundary, where == "broken-multipart")
        good = f"multipart/form-data; boundary={boundary}"
        ctype = draw(st.sampled_from((good, "multipart/form-data", "multipart/form-data; boundary=")
                                     if hostile else (good,)))
        return (body, ctype), ""
    if where == "raw":
        raw = draw(st.sampled_from((b"ids=%FF%FE", b"ids=%", b"ids", b"=&&", b"ids=1&ids",
                                    b"things=%00&ids=1", b"ids=1%2C2&things=steps%2",
                                    b"\xff\xfe=1", b"ids=" + b"9" * 400)))
        return (raw, draw(st.sampled_from((FORM, FORM + "; charset=latin-1",
                                           FORM + "; charset=bogus")))), ""
    if where == "json":
        return (to_json(dict(pairs)), "application/json"), ""
    body = urlencode(pairs, quote_via=quote, encoding="utf-8", errors="surrogatepass").encode()
    return (body, None if where == "untyped" else FORM), ""


############################################################################################
# Paths and query strings
############################################################################################

_PCHAR = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@"
HOSTILE_SEGMENTS = st.one_of(
    st.sampled_from((
        ".", "..", "%2e%2e", "%2F", "a%2Fb", "%00", "%", "%zz", "%FF", "+", "%20", "-1", "1e3",
        "0x1f", "%EF%BC%91%EF%BC%92", "1_000", "9" * 30, "NaN", "all", "ALL", "x" * 5000, "~",
        "%25", "%0A", "%C0%AF", "@", ";", "a;b=c",
    )),
    st.text(max_size=16).map(lambda s: quote(s, safe="", errors="surrogatepass")),
    st.integers().map(str),
    st.text(alphabet=_PCHAR, min_size=1, max_size=12),
)


def seg(valid: SearchStrategy[Any]) -> SearchStrategy[str]:
    """A path segment: a valid value (percent-encoded), or in a hostile example now and then
    a hostile one."""
    encoded_valid = valid.map(lambda v: quote(str(v), safe="", errors="surrogatepass"))
    return pick(encoded_valid, st.one_of(encoded_valid, HOSTILE_SEGMENTS))


_RAW_QUERY_JUNK = ("&", "&&", "=", "%", "%zz=1", "a=%FF", "a", ";x=1", "=1", "a=1=2", "%00=%00",
                   "a[]=1", "x=" + "y" * 3000)


@st.composite
def query(draw: st.DrawFn, params: Mapping[str, SearchStrategy[Any]]) -> str:
    """A query string over ``params`` (each absent, valid, hostile or repeated) plus junk."""
    pairs: list[tuple[str, str]] = []
    hostile = draw(HOSTILE)
    for name, valid in params.items():
        mode = draw(st.sampled_from(("absent", "absent", "valid", "valid", "hostile", "repeat"))
                    if hostile else st.sampled_from(("absent", "valid")))
        if mode == "absent":
            continue
        value = draw(valid) if mode != "hostile" else draw(short_strings)
        pairs.append((name, str(value)))
        if mode == "repeat":
            pairs.append((name, str(draw(valid))))
    if hostile and draw(st.integers(0, 5)) == 0:
        pairs.append((draw(st.text(max_size=6)), draw(short_strings)))
    text = urlencode(pairs, quote_via=quote, encoding="utf-8", errors="surrogatepass")
    if hostile and draw(st.integers(0, 7)) == 0:
        text = "&".join(filter(None, (text, draw(st.sampled_from(_RAW_QUERY_JUNK)))))
    return text


@st.composite
def request(draw: st.DrawFn, rule: str, method: str, *,
            path: Mapping[str, SearchStrategy[Any]] | None = None,
            params: Mapping[str, SearchStrategy[Any]] | None = None,
            body: SearchStrategy[Body] | None = None,
            methods: tuple[str, ...] | None = None,
            extra_query: SearchStrategy[str] | None = None,
            ) -> FuzzRequest:
    """A request to ``rule`` (Werkzeug syntax, ``<name>`` placeholders) with fuzzed parts:
    path parameters through ``seg`` (valid, or hostile now and then), ``params`` in the query
    string (and ``extra_query``, already encoded), a body, and ``methods`` to pick from
    instead of ``method``."""
    target = rule
    for name, valid in (path or {}).items():
        target = target.replace(f"<{name}>", draw(seg(valid)), 1)
    assert "<" not in target, f"{rule}: a path parameter has no strategy"
    q = draw(query(params or {}))
    if extra_query is not None:
        q = "&".join(filter(None, (q, draw(extra_query))))
    data, ctype = draw(body if body is not None else no_body())
    headers: list[tuple[str, str]] = []
    if ctype is not None:
        headers.append(("Content-Type", ctype))
    if draw(st.integers(0, 4)) == 0:
        headers.append(("Accept", draw(st.sampled_from(MSGPACK_TYPES[:2] + ("*/*", "text/html")))))
    if methods:
        verb = draw(st.sampled_from(methods))
    elif method == "GET":  # Quart answers HEAD for every GET route
        verb = draw(st.sampled_from(("GET",) * 7 + ("HEAD",)))
    else:
        verb = method
    return FuzzRequest(
        route=f"{method} {rule}", method=verb, target=f"{target}?{q}" if q else target,
        headers=tuple(headers), body=data, chunked=bool(data) and draw(st.integers(0, 9)) == 0,
    )


############################################################################################
# Domain values, mostly valid
############################################################################################

#: Names that stay one path segment (an encoded slash is decoded before routing).
names = st.text(st.characters(blacklist_characters="/", blacklist_categories=("Cs",)),
                min_size=1, max_size=8)
users = st.one_of(st.sampled_from(PSD_USERS), st.sampled_from(PSD_USERS), st.integers(-5, 10**6),
                  names)
things = st.one_of(st.sampled_from(PSD_THINGS), st.sampled_from(("calories", "cb")), names)
timestamps = st.one_of(st.integers(T0 - 5000, T0 + 5000), st.sampled_from((T0, 1, 0, 253_402_300_799)))
atids = st.one_of(st.just("all"), st.integers(0, 6), st.sampled_from(("2", "5")))
counter_names = st.one_of(st.sampled_from(COUNTERS), names.filter(lambda n: len(n) >= 2))

new_list_ids = st.from_regex(r"\Afz-n[a-z0-9]{1,4}\Z")
list_ids = st.one_of(st.sampled_from(LIST_IDS), st.sampled_from(LIST_IDS), new_list_ids,
                     st.from_regex(r"\A[a-zA-Z0-9_.\-]{2,100}\Z"))
element_ids = st.one_of(st.sampled_from(ELEMENT_IDS), st.integers(0, 200), st.integers(0, U64))
sets = st.one_of(st.sampled_from(SETS), st.text(min_size=2, max_size=8))
metadata = st.dictionaries(st.sampled_from(("region", "mode", "k")),
                           st.sampled_from(("eu", "us", "solo", "v")), max_size=2)
bool_params = pick(st.sampled_from(("true", "false", "1", "0", "t", "F", "TRUE")),
                   st.sampled_from(("yes", "", "2", "tRuE", "true ")))
payloads = pick(st.one_of(st.none(), st.dictionaries(keys, junk, max_size=3)), junk)

elements = objects({
    "id": element_ids,
    "score": st.one_of(st.integers(0, 2000), st.integers(0, U64)),
    "tie_breaker": st.one_of(st.integers(0, 3), st.integers(0, U32)),
    "payload": payloads,
})
selection_fields: dict[str, SearchStrategy[Any]] = {
    "lists": some(st.one_of(list_ids, st.sampled_from((" fz-a", "", "fz-missing")))),
    "match_metadata": pick(metadata, junk),
    "all_in_sets": some(sets),
}
selections = objects(selection_fields)
ranges = st.integers(0, 100)
#: ``range``'s start: exactly one of from_top and from_bottom (both or neither: a 400).
range_starts = pick(
    st.tuples(st.sampled_from(("from_top", "from_bottom")), st.integers(0, 60)).map(
        lambda pair: f"{pair[0]}={pair[1]}"),
    st.sampled_from(("", "from_top=1&from_bottom=1", "from_top=", "from_bottom=-1",
                     "from_top=99999999999999999999", "from_top=1&from_top=2")),
)
limits = pick(st.integers(1, 1000), st.sampled_from((0, 1001, -1)))


############################################################################################
# PSD routes (web/compat/psd.py)
############################################################################################


@st.composite
def valid_metric_jobs(draw: st.DrawFn) -> dict[str, Any]:
    """A MetricJob PSD accepts: ts1 <= ts2, ts2 > 0."""
    ts1, ts2 = sorted(draw(st.lists(st.integers(T0 - 5000, T0 + 5000), min_size=2, max_size=2)))
    return {"thing": draw(things), "uid": draw(users), "atid": draw(st.integers(0, 6)),
            "aid": draw(st.integers(0, 8)), "value": draw(st.integers(-100, 1000)),
            "ts1": ts1, "ts2": ts2}


metric_jobs = pick(valid_metric_jobs(), objects({
    "thing": things, "uid": users, "atid": st.integers(0, 6), "aid": st.integers(0, 8),
    "value": st.one_of(st.integers(-100, 1000), ints), "ts1": timestamps, "ts2": timestamps,
}))
count_jobs = objects({"thing": counter_names, "value": st.integers(-5, 100),
                      "ts": st.integers(T0 - 5000, T0 + 5000)})
queue_messages = st.one_of(
    objects({"command": st.just("metric"), "metric": metric_jobs}),
    objects({"command": st.just("count"), "count": count_jobs}),
    pick(st.nothing(), objects({"command": st.sampled_from(("metric", "count", "bogus", ""))})),
)
ts_path = {"start_ts": timestamps, "end_ts": timestamps}
id_tokens = st.one_of(st.sampled_from([str(u) for u in PSD_USERS]), st.integers(-3, 50).map(str),
                      st.sampled_from(("007", "-0", "alice", "1" * 25, "\u00e9")))


@st.composite
def v2_forms(draw: st.DrawFn) -> tuple[Body, str]:
    """A v2 mumt form PSD accepts: one offset per id."""
    ids = draw(st.lists(id_tokens, min_size=1, max_size=4))
    offsets = draw(st.lists(st.integers(-86400, 86400), min_size=len(ids), max_size=len(ids)))
    chosen = draw(st.lists(things.filter(lambda t: "," not in t and t.strip()), min_size=1,
                           max_size=3))
    fields = {"things": ",".join(chosen), "ids": ",".join(ids),
              "offsets": ",".join(map(str, offsets))}
    return (urlencode(fields, quote_via=quote, errors="surrogatepass").encode(), FORM), ""


def _psd_routes() -> dict[tuple[str, str], Callable[[Context], SearchStrategy[FuzzRequest]]]:
    ids_form = form({"ids": csv(id_tokens)})

    def with_form(rule: str, path: dict[str, SearchStrategy[Any]], fields: SearchStrategy[Any]
                  ) -> SearchStrategy[FuzzRequest]:
        @st.composite
        def build(draw: st.DrawFn) -> FuzzRequest:
            (data, ctype), extra = draw(fields)
            req = draw(request(rule, "POST", path=path, body=st.just((data, ctype))))
            if extra:
                sep = "&" if "?" in req.target else "?"
                req = FuzzRequest(req.route, req.method, req.target + sep + extra, req.headers,
                                  req.body, req.chunked)
            return req

        return build()

    return {
        ("/health/ping", "GET"): lambda ctx: request("/health/ping", "GET"),
        ("/v1/write", "POST"): lambda ctx: request(
            "/v1/write", "POST", body=encoded(metric_jobs)),
        ("/v1/batch", "POST"): lambda ctx: request(
            "/v1/batch", "POST",
            body=encoded(st.one_of(some(queue_messages), queue_messages), ndjson=True)),
        ("/v1/query/<uid>/<thing>/<atid>/<start_ts>/<end_ts>", "GET"): lambda ctx: request(
            "/v1/query/<uid>/<thing>/<atid>/<start_ts>/<end_ts>", "GET",
            path={"uid": users, "thing": things, "atid": atids, **ts_path}),
        ("/v1/query_ids/<thing>/<atid>/<start_ts>/<end_ts>", "POST"): lambda ctx: with_form(
            "/v1/query_ids/<thing>/<atid>/<start_ts>/<end_ts>",
            {"thing": things, "atid": atids, **ts_path}, ids_form),
        ("/v1/mu_query/<thing>/<atid>/<start_ts>/<end_ts>", "POST"): lambda ctx: with_form(
            "/v1/mu_query/<thing>/<atid>/<start_ts>/<end_ts>",
            {"thing": things, "atid": atids, **ts_path}, ids_form),
        ("/v1/mumt_query/<atid>/<start_ts>/<end_ts>", "POST"): lambda ctx: with_form(
            "/v1/mumt_query/<atid>/<start_ts>/<end_ts>", {"atid": atids, **ts_path},
            form({"things": csv(things.filter(lambda t: "," not in t)), "ids": csv(id_tokens)})),
        ("/v2/mumt_query/<atid>/<start_ts>/<end_ts>", "POST"): lambda ctx: with_form(
            "/v2/mumt_query/<atid>/<start_ts>/<end_ts>", {"atid": atids, **ts_path},
            pick(v2_forms(), form({
                "things": csv(things.filter(lambda t: "," not in t)), "ids": csv(id_tokens),
                "offsets": csv(st.one_of(st.integers(-86400, 86400), ints).map(str))}))),
        ("/v1/readcount/<thing>/<start_ts>/<end_ts>", "GET"): lambda ctx: request(
            "/v1/readcount/<thing>/<start_ts>/<end_ts>", "GET",
            path={"thing": counter_names, **ts_path}),
        ("/v1/readcount_with_ids/<prefix>/<start_ts>/<end_ts>", "POST"): lambda ctx: with_form(
            "/v1/readcount_with_ids/<prefix>/<start_ts>/<end_ts>",
            {"prefix": st.one_of(st.just("pre"), counter_names), **ts_path},
            form({"ids": csv(st.one_of(id_tokens, st.sampled_from(("alice", "1", "2")),
                                       st.text(max_size=250)))})),
    }


############################################################################################
# RankDB routes (web/compat/rankdb/routes.py)
############################################################################################

#: (split_size, merge_size): merge below split in a valid example.
sizes = pick(st.sampled_from(((2000, 500), (20, 10), (100_000, 99_999))),
             st.tuples(st.one_of(st.integers(10, 4000), st.sampled_from((9, 100_001))),
                       st.one_of(st.integers(10, 1000), st.sampled_from((9, 100_001)))))


def _with_sizes(fields: dict[str, SearchStrategy[Any]]) -> SearchStrategy[dict[Any, Any]]:
    @st.composite
    def build(draw: st.DrawFn) -> dict[Any, Any]:
        body = draw(objects(fields))
        if draw(st.booleans()):
            body["split_size"], body["merge_size"] = draw(sizes)
        return body

    return build()


list_bodies = _with_sizes({
    "id": list_ids, "set": sets, "metadata": metadata, "load_index": st.booleans(),
    "populate": some(elements, max_size=5),
})
clone_bodies = _with_sizes({
    "id": st.one_of(new_list_ids, list_ids), "set": sets, "metadata": metadata,
    "load_index": st.booleans(), "populate": pick(st.none(), some(elements, max_size=2)),
})
id_lists = objects({"element_ids": some(element_ids, max_size=6)})
xlist_bodies = objects({**selection_fields, "payload": some(elements, max_size=4)})
one_list = {"list_id": list_ids}
one_element = {"list_id": list_ids, "element_id": element_ids}
percentiles = pick(
    st.one_of(st.floats(0, 100).map(str), st.integers(0, 100).map(str)),
    st.sampled_from(("nan", "inf", "-inf", "-1", "100.0001", "1e400", "1_0", "0x10", " 50", "")),
)
xlist_query = {
    "lists": list_ids, "all_in_sets": sets, "errors_only": bool_params,
    "match_metadata": pick(metadata.map(json.dumps),
                           st.sampled_from(("{", "[]", '{"a": 1}', "null", '"x"'))),
}


def _rankdb_routes() -> dict[tuple[str, str], Callable[[Context], SearchStrategy[FuzzRequest]]]:
    e = "/lists/<list_id>/elements"
    return {
        ("/", "GET"): lambda ctx: request("/", "GET"),
        ("/health", "GET"): lambda ctx: request("/health", "GET"),
        ("/lists", "GET"): lambda ctx: request(
            "/lists", "GET",
            params={"after_id": list_ids, "before_id": list_ids, "limit": limits}),
        ("/lists", "POST"): lambda ctx: request(
            "/lists", "POST", params={"replace": bool_params}, body=encoded(list_bodies)),
        ("/lists/<list_id>", "GET"): lambda ctx: request(
            "/lists/<list_id>", "GET", path=one_list, params={"top_bottom": bool_params}),
        ("/lists/<list_id>", "DELETE"): lambda ctx: request(
            "/lists/<list_id>", "DELETE", path=one_list),
        ("/lists/<list_id>/clone", "PUT"): lambda ctx: request(
            "/lists/<list_id>/clone", "PUT", path=one_list, body=encoded(clone_bodies)),
        ("/lists/<list_id>/reindex", "PUT"): lambda ctx: request(
            "/lists/<list_id>/reindex", "PUT", path=one_list),
        ("/lists/<list_id>/repair", "PUT"): lambda ctx: request(
            "/lists/<list_id>/repair", "PUT", path=one_list, params={"clear": bool_params}),
        ("/lists/<list_id>/verify", "PUT"): lambda ctx: request(
            "/lists/<list_id>/verify", "PUT", path=one_list,
            params={"repair": bool_params, "clear": bool_params}),
        ("/lists/<list_id>/range", "GET"): lambda ctx: request(
            "/lists/<list_id>/range", "GET", path=one_list,
            params={"limit": limits}, extra_query=range_starts),
        ("/lists/<list_id>/percentile", "GET"): lambda ctx: request(
            "/lists/<list_id>/percentile", "GET", path=one_list,
            params={"from_top": percentiles, "range": ranges}),
        (e, "POST"): lambda ctx: request(
            e, "POST", path=one_list, params={"range": ranges}, body=encoded(elements)),
        (e, "PUT"): lambda ctx: request(
            e, "PUT", path=one_list, params={"results": bool_params},
            body=encoded(some(elements, max_size=5))),
        (e, "DELETE"): lambda ctx: request(
            e, "DELETE", path=one_list, params={"element_ids": element_ids}),
        (e + "/find", "POST"): lambda ctx: request(
            e + "/find", "POST", path=one_list, body=encoded(id_lists)),
        (e + "/<element_id>", "GET"): lambda ctx: request(
            e + "/<element_id>", "GET", path=one_element, params={"range": ranges}),
        (e + "/<element_id>", "PUT"): lambda ctx: request(
            e + "/<element_id>", "PUT", path=one_element, params={"range": ranges},
            body=encoded(elements)),
        (e + "/<element_id>", "DELETE"): lambda ctx: request(
            e + "/<element_id>", "DELETE", path=one_element),
        (e + "/<element_id>/around", "POST"): lambda ctx: request(
            e + "/<element_id>/around", "POST", path=one_element, params={"range": ranges},
            body=encoded(id_lists)),
        ("/xlist/elements", "POST"): lambda ctx: request(
            "/xlist/elements", "POST",
            params={"results": bool_params, "errors_only": bool_params},
            body=encoded(xlist_bodies)),
        ("/xlist/elements", "PUT"): lambda ctx: request(
            "/xlist/elements", "PUT",
            params={"results": bool_params, "errors_only": bool_params},
            body=encoded(xlist_bodies)),
        ("/xlist/elements/<element_id>", "GET"): lambda ctx: request(
            "/xlist/elements/<element_id>", "GET", path={"element_id": element_ids},
            params=xlist_query),
        ("/xlist/elements/<element_id>", "DELETE"): lambda ctx: request(
            "/xlist/elements/<element_id>", "DELETE", path={"element_id": element_ids},
            params=xlist_query),
        ("/xlist/verify", "PUT"): lambda ctx: request(
            "/xlist/verify", "PUT",
            params={"elements": bool_params, "repair": bool_params, "clear": bool_params,
                    "errors_only": bool_params},
            body=st.one_of(no_body(), encoded(selections))),
        ("/xlist/reindex", "PUT"): lambda ctx: request(
            "/xlist/reindex", "PUT", params={"errors_only": bool_params},
            body=st.one_of(no_body(), encoded(selections))),
    }


############################################################################################
# RankDB backup routes (web/compat/rankdb/backups.py)
############################################################################################

affixes = pick(st.one_of(st.just(""), st.from_regex(r"\Afz[a-z0-9_.\-]{0,6}\Z")),
               st.sampled_from(("x" * 98, "x" * 99, "a/b", "\u00e9", " ")))


def destinations(ctx: Context) -> SearchStrategy[Any]:
    """Backup destinations. File destinations are names in the server's backup directory
    (the scratch directory, ``--backup-dir``), with paths, dot names and overlong names among
    them, which the server must refuse; server destinations stay on loopback: a fuzzed host
    name must never wait for DNS."""
    file_paths = st.one_of(
        st.from_regex(r"\A[a-z0-9]{1,8}\.bin\Z"),
        st.sampled_from((str(ctx.tmp_dir), str(ctx.tmp_dir / "missing" / "x.bin"), "",
                         str(ctx.tmp_dir / "  "), str(ctx.tmp_dir / "a" / ".."), "../x.bin",
                         ".hidden", "a/b.bin", "x" * 129)),
    )
    server_paths = st.sampled_from((
        ctx.dest, f"http://{ctx.dest}", f"127.0.0.1:{ctx.closed_port}", "127.0.0.1",
        f"http://{ctx.dest}/x", "ftp://127.0.0.1:1", "[::1", "127.0.0.1:99999", "", ":80",
        "127.0.0.1:abc", f"https://127.0.0.1:{ctx.closed_port}",
    ))

    @st.composite
    def build(draw: st.DrawFn) -> Any:
        kind = draw(pick(st.sampled_from(("download", "download", "file", "server")),
                         st.sampled_from(("s3", "", None, "DOWNLOAD"))))
        paths = {"file": file_paths, "server": server_paths}.get(str(kind), file_paths)
        fields: dict[str, SearchStrategy[Any]] = {
            "type": st.just(kind), "path": paths,
            "server_list_id_prefix": affixes, "server_list_id_suffix": affixes,
        }
        value = draw(objects(fields, extra=False))
        if kind in ("file", "server") and not isinstance(value.get("path"), (str, type(None))):
            value["path"] = draw(paths)  # a hostile non-string path is refused; keep it sane
        return value

    return pick(build(), junk)


def _chunk(ids: list[int], scores: list[int], ties: list[int], updated: list[int],
           payloads: Any, version: Any, count: Any) -> dict[str, Any]:
    def pack(values: list[int], width: int) -> bytes:
        return b"".join(v.to_bytes(width, "little") for v in values)

    return {"v": version, "count": count, "ids": pack(ids, 8), "scores": pack(scores, 8),
            "tie_breakers": pack(ties, 4), "updated_at": pack(updated, 4), "payloads": payloads}


@st.composite
def crafted_backups(draw: st.DrawFn) -> bytes:
    """A zstd stream of backup-shaped msgpack values with fuzzed list ids, settings, element
    rows and payloads (well-formed in a valid example), and in a hostile example now and then
    a broken count, version, array length, header or end marker: these get past the zstd layer
    into the decoder and the restore."""
    hostile = draw(HOSTILE)

    def choose(valid: tuple[Any, ...], bad: tuple[Any, ...]) -> Any:
        return draw(st.sampled_from(valid + bad if hostile else valid))

    out: list[bytes] = []
    for _ in range(draw(st.integers(0, 2))):
        n = draw(st.integers(0, 4))
        ids = draw(st.lists(st.one_of(st.integers(0, 50), st.integers(0, U64)), min_size=n, max_size=n))
        rows = [draw(st.lists(st.integers(0, hi), min_size=n, max_size=n))
                for hi in (U64, U32, U32)]
        valid_payloads = st.dictionaries(st.sampled_from(ids or [0]),
                                         st.one_of(st.none(), st.dictionaries(keys, junk, max_size=3)),
                                         max_size=3)
        payload_map = draw(pick(valid_payloads, st.one_of(
            st.dictionaries(st.one_of(ints, keys), payloads, max_size=3), st.none(), junk)))
        chunk = _chunk(ids, *rows, payloads=payload_map, version=choose((1,), (2, "1", None)),
                       count=choose((n,), (n + 1, -1, "n")))
        settings = draw(objects({"set": sets, "metadata": metadata, "split_size": st.just(2000),
                                 "merge_size": st.just(500), "load_index": st.booleans()},
                                extra=False))
        header: Any = {"settings": settings, "elements": choose((n,), (n + 1, -1)),
                       "chunks": choose((1,), (0, 2))}
        if hostile and draw(st.integers(0, 3)) == 0:
            header = draw(junk)
        list_id = draw(pick(st.one_of(st.from_regex(r"\Afz-c[a-z0-9]{1,4}\Z"),
                                      st.sampled_from(LIST_IDS)),
                            st.one_of(st.sampled_from(("x" * 100, "a", "a/b")), junk)))
        out += [to_msgpack(choose((True,), (1, None))), to_msgpack(choose((2,), (1, 3))),
                to_msgpack(list_id), to_msgpack(header)]
        out += [to_msgpack(chunk) for _ in range(choose((1,), (0, 2)))]
    out.append(choose((to_msgpack(False),), (b"", b"\xc3")))
    data = zstandard.ZstdCompressor(write_checksum=True).compress(b"".join(out))
    return data + choose((b"",), (b"\x00", data[:5]))


@st.composite
def damaged(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` truncated, with a byte changed, with junk appended, or in the wrong layer."""
    how = draw(st.sampled_from(("truncate", "flip", "append", "twice", "raw", "gzip")))
    if how == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == "flip":
        at = draw(st.integers(0, len(data) - 1))
        return data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
    if how == "append":
        return data + draw(st.binary(min_size=1, max_size=16))
    if how == "twice":
        return zstandard.ZstdCompressor().compress(data)
    if how == "raw":
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    import gzip

    return gzip.compress(data)


def restore_bodies(ctx: Context) -> SearchStrategy[Body]:
    octet = st.sampled_from(("application/octet-stream", None, "application/zstd"))
    return pick(st.tuples(st.one_of(st.just(ctx.backup), crafted_backups()), octet), st.one_of(
        st.tuples(st.just(ctx.backup), octet),
        st.tuples(damaged(ctx.backup), octet),
        st.tuples(crafted_backups(), octet),
        st.tuples(crafted_backups(), octet),
        st.tuples(st.binary(max_size=64), octet),
        st.tuples(st.binary(max_size=64).map(zstandard.ZstdCompressor().compress), octet),
        encoded(junk),
    ))


def _backup_routes() -> dict[tuple[str, str], Callable[[Context], SearchStrategy[FuzzRequest]]]:
    def restore(ctx: Context) -> SearchStrategy[FuzzRequest]:
        src_files = pick(st.sampled_from((ctx.backup_file.name, "")), st.one_of(
            st.sampled_from((ctx.garbage_file.name, "missing.bin", str(ctx.backup_file),
                             str(ctx.tmp_dir), "../seed.bin", ".seed.bin")),
            st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=6),
        ))
        return request(
            "/xlist/restore", "POST",
            params={"keep": bool_params, "list_id_prefix": affixes, "list_id_suffix": affixes,
                    "src_file": src_files,
                    "src": pick(st.just(""), st.sampled_from(("s3://b/k", "http://x/y")))},
            body=restore_bodies(ctx))

    def job_ids(ctx: Context) -> SearchStrategy[str]:
        return st.one_of(st.sampled_from(ctx.job_ids), st.from_regex(r"\A[a-zA-Z0-9]{10}\Z"))

    return {
        ("/xlist/backup", "PUT"): lambda ctx: request(
            "/xlist/backup", "PUT",
            body=encoded(st.one_of(
                objects({"destination": destinations(ctx), "lists": pick(selections, junk)}),
                pick(st.nothing(), junk)))),
        ("/xlist/restore", "POST"): restore,
        ("/backup/<backup_id>", "GET"): lambda ctx: request(
            "/backup/<backup_id>", "GET", path={"backup_id": job_ids(ctx)},
            params={"view": st.sampled_from(("full", "default", "tiny", ""))}),
        ("/backup/<backup_id>", "DELETE"): lambda ctx: request(
            "/backup/<backup_id>", "DELETE", path={"backup_id": job_ids(ctx)}),
    }


_BY_BLUEPRINT = {"psd": _psd_routes(), "rankdb": _rankdb_routes(), "backup": _backup_routes()}
#: Every fuzzed route: ``(URL rule, method)`` -> a strategy of requests for a running server.
ROUTES: dict[tuple[str, str], Callable[[Context], SearchStrategy[FuzzRequest]]] = {
    key: make for routes in _BY_BLUEPRINT.values() for key, make in routes.items()
}
#: The blueprint that serves each route (``web/compat/psd.py``: ``psd``, and so on).
BLUEPRINTS: dict[tuple[str, str], str] = {
    key: name for name, routes in _BY_BLUEPRINT.items() for key in routes
}

ALL_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")


def wrong_method_requests(rule: str) -> SearchStrategy[FuzzRequest]:
    """Requests to ``rule``'s path with a method that no route matching it takes (the app
    answers 405 itself). ``/lists/fz-a/elements/find`` also matches
    ``/lists/<list_id>/elements/<element_id>``, so only PATCH is wrong there."""
    names = [part[1:-1] for part in rule.split("/") if part.startswith("<") and part.endswith(">")]
    target = rule
    for name in names:
        target = target.replace(f"<{name}>", "fz-a" if name == "list_id" else "1", 1)
    allowed = {method for (other, method) in ROUTES if _matches(other, target)}
    wrong = tuple(m for m in ALL_METHODS if m not in allowed)
    return request(target, "?", body=st.one_of(no_body(), encoded(junk)), methods=wrong)


def _matches(rule: str, path: str) -> bool:
    rule_parts, path_parts = rule.split("/"), path.split("/")
    return len(rule_parts) == len(path_parts) and all(
        r == p or (r.startswith("<") and r.endswith(">")) for r, p in zip(rule_parts, path_parts, strict=True)
    )
