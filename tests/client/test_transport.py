"""The client's pure core (client/_transport.py, client/_calls.py, client/errors.py), no sockets:
retry decisions, error mapping from both error shapes, body encodings, and that the package
stands alone (imports nothing of the server) with its doctests true.
"""

from __future__ import annotations

import ast
import doctest
import importlib
import inspect
from pathlib import Path

import httpx
import msgpack
import msgspec
import pytest

from client import _calls, _transport, errors, models
from client._transport import (
    JSON,
    MSGPACK,
    Call,
    Pause,
    RetryPolicy,
    encode_batch,
    error_from_answer,
    ndjson_chunks,
    next_step,
    parse_retry_after,
    request_was_sent,
    retry_delay,
    retryable_transport_error,
)
from client.aio import AsyncPointspaceClient
from client.models import Event, NewElement
from client.sync import PointspaceClient

ROOT = Path(__file__).resolve().parents[2]
CLIENT_MODULES = ["client", "client._transport", "client._calls", "client.errors", "client.models",
                  "client.sync", "client.aio"]


############################################################################################
# The package stands alone


def test_client_imports_nothing_of_the_server():
    """The client must install and run without engine/, web/ or snapshots/ (module docstring
    of client/models.py): every import in client/ is the standard library, httpx, anyio,
    msgspec, or client itself."""
    allowed = {"client", "httpx", "anyio", "msgspec"}
    for path in sorted((ROOT / "client").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in allowed or top in _stdlib(), f"{path.name} imports {name}"


def _stdlib() -> frozenset[str]:
    import sys

    return frozenset(sys.stdlib_module_names) | {"__future__"}


@pytest.mark.parametrize("name", CLIENT_MODULES)
def test_client_doctests(name):
    """The examples in the client's docstrings are true (pyproject's testpaths do not list
    client/, so they run here)."""
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0


def test_sync_and_async_clients_have_the_same_methods():
    """One API, two ways to wait: every public method exists on both, with one signature
    and one docstring (the async one may add that ``events`` can be an async iterable)."""

    def public(cls: type) -> dict[str, object]:
        return {n: f for n, f in vars(cls).items() if not n.startswith("_") and callable(f)}

    sync, aio = public(PointspaceClient), public(AsyncPointspaceClient)
    assert set(sync) - {"close"} == set(aio) - {"aclose"}
    for name, method in sync.items():
        if name == "close":
            continue
        other = aio[name]
        assert inspect.iscoroutinefunction(other), name
        sync_params = list(inspect.signature(method).parameters)
        assert sync_params == list(inspect.signature(other).parameters), name
        assert (method.__doc__ or "").split("\n")[0] == (other.__doc__ or "").split("\n")[0], name


############################################################################################
# Retry decisions


@pytest.mark.parametrize(
    ("safe", "status", "attempt", "retried"),
    [
        (True, None, 1, True),        # a read without an answer
        (True, 503, 1, True),         # overloaded or shutting down
        (True, 502, 3, True),         # a proxy's upstream down, last retry left
        (True, 504, 4, False),        # attempts used up (4 in all)
        (True, 400, 1, False),        # the same request gets the same 400
        (True, 404, 1, False),
        (True, 500, 1, False),        # a bug: repeating will not fix it
        (True, 507, 1, False),        # a full disk
        (False, None, 1, False),      # a write without an answer: maybe applied
        (False, 503, 1, False),
    ],
)
def test_retry_delay_decides_by_safety_status_and_attempts(safe, status, attempt, retried):
    pause = retry_delay(RetryPolicy(), attempt=attempt, safe=safe, status=status,
                        retry_after=None, rand=lambda: 0.5)
    assert (pause is not None) is retried


def test_retry_delay_is_full_jitter_exponential_and_capped():
    policy = RetryPolicy(attempts=10, base_delay=0.1, max_delay=1.0)
    top = [retry_delay(policy, attempt=n, safe=True, status=None, retry_after=None,
                       rand=lambda: 1.0) for n in range(1, 10)]
    assert top == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0, 1.0])
    assert retry_delay(policy, attempt=3, safe=True, status=None, retry_after=None,
                       rand=lambda: 0.0) == 0.0


def test_retry_delay_honours_a_short_retry_after_and_gives_up_on_a_long_one():
    policy = RetryPolicy(attempts=3, base_delay=0.1, max_delay=2.0)
    assert retry_delay(policy, attempt=1, safe=True, status=503, retry_after=1.5,
                       rand=lambda: 1.0) == 1.5
    assert retry_delay(policy, attempt=1, safe=True, status=503, retry_after=30.0,
                       rand=lambda: 1.0) is None


def test_retry_policy_refuses_nonsense():
    with pytest.raises(ValueError, match=r"^attempts must be >= 1"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError, match=r"^delays must be >= 0"):
        RetryPolicy(base_delay=-1)


def test_request_was_sent_only_when_a_connection_was_made():
    request = httpx.Request("POST", "http://127.0.0.1:1/api/events")
    assert not request_was_sent(httpx.ConnectError("refused", request=request))
    assert not request_was_sent(httpx.ConnectTimeout("slow", request=request))
    assert request_was_sent(httpx.ReadTimeout("slow", request=request))
    assert request_was_sent(httpx.RemoteProtocolError("cut", request=request))
    assert not retryable_transport_error(httpx.UnsupportedProtocol("ftp", request=request))
    assert retryable_transport_error(httpx.ReadError("reset", request=request))


def test_parse_retry_after_reads_seconds_and_dates():
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:00 GMT", now=0.0) == 60.0
    assert parse_retry_after("-1") is None


############################################################################################
# Error mapping


def test_error_from_native_body_carries_message_and_field():
    exc = error_from_answer(400, "application/json",
                            b'{"error":"body[0].ts: expected `int` >= 0 (was -5)","field":"body[0].ts"}',
                            method="POST", url="http://h/api/events")
    assert type(exc) is errors.InvalidRequest
    assert (exc.status, exc.field, exc.code, exc.method) == (400, "body[0].ts", None, "POST")
    assert exc.message == "body[0].ts: expected `int` >= 0 (was -5)"


def test_error_from_goa_body_carries_code_id_and_meta_field():
    body = b'{"id":"aB3x","code":"invalid_request","status":400,"detail":"range must be between 0 and 100, got 101","meta":{"field":"range"}}'
    exc = error_from_answer(400, "application/json", body, method="GET", url="u")
    assert type(exc) is errors.InvalidRequest
    assert (exc.field, exc.code, exc.error_id) == ("range", "invalid_request", "aB3x")
    assert exc.message == "range must be between 0 and 100, got 101"


@pytest.mark.parametrize(("status", "cls"), sorted(errors.ERRORS_BY_STATUS.items()))
def test_every_status_maps_to_its_class(status, cls):
    exc = error_from_answer(status, "application/json", b'{"error":"x"}', method="GET", url="u")
    assert type(exc) is cls and exc.status == status
    assert isinstance(exc, errors.PointspaceHTTPError)


def test_error_from_an_unknown_status_or_a_non_json_body():
    exc = error_from_answer(418, "text/html", b"<h1>" + b"x" * 500 + b"</h1>", method="GET", url="u",
                            retry_after="7")
    assert type(exc) is errors.PointspaceHTTPError
    assert exc.status == 418 and exc.retry_after == 7.0 and exc.body is None
    assert len(exc.message) == _transport.MAX_TEXT_MESSAGE + 3
    empty = error_from_answer(503, None, b"", method="GET", url="u")
    assert type(empty) is errors.ServiceUnavailable and empty.message == "Service Unavailable"


############################################################################################
# Bodies and calls


def test_batches_are_msgpack_by_default_and_decode_as_sent():
    events = [Event(metric="steps", user=1, value=5, ts=10), {"metric": "m", "user": "a",
                                                               "value": -3, "ts": 11, "mode": "add"}]
    body, kind = encode_batch(events)
    assert kind == MSGPACK
    assert msgpack.unpackb(body) == [{"metric": "steps", "user": 1, "value": 5, "ts": 10},
                                     {"metric": "m", "user": "a", "value": -3, "ts": 11,
                                      "mode": "add"}]
    body, kind = encode_batch(iter(events), "json")
    assert kind == JSON and msgspec.json.decode(body)[0]["metric"] == "steps"
    with pytest.raises(ValueError, match=r"^format must be"):
        encode_batch(events, "xml")


def test_a_batch_too_wide_for_msgpack_goes_as_json_for_the_server_to_judge():
    body, kind = encode_batch([{"metric": "m", "user": 1, "value": -(2**63) - 1, "ts": 1}])
    assert kind == JSON and b"-9223372036854775809" in body


def test_ndjson_chunks_stream_lazily_in_bounded_chunks():
    drawn = []

    def events():
        for i in range(10_000):
            drawn.append(i)
            yield {"metric": "m", "user": i, "value": 1, "ts": 1}

    chunks = ndjson_chunks(events(), chunk_bytes=4096)
    first = next(chunks)
    assert 4096 <= len(first) < 4096 + 100 and len(drawn) < 200
    rest = b"".join(chunks)
    lines = (first + rest).splitlines()
    assert len(lines) == 10_000 and msgspec.json.decode(lines[-1])["user"] == 9999


def test_calls_name_the_right_paths_types_and_safety():
    assert _calls.query([1], "m", 1, 2).safe
    assert _calls.rank("m", 1, 2).safe and _calls.find_elements("l1", [1]).safe
    assert not _calls.ingest([]).safe and _calls.ingest([], idempotent=True).safe
    assert not _calls.delete_list("l1").safe and not _calls.take_snapshot().safe
    assert _calls.user_sum("a/b", "m?x", 1, 2).path == "/api/users/a%2Fb/sums/m%3Fx"
    put = _calls.put_element("l.1", NewElement(id=7, score=3))
    assert (put.method, put.path, put.content_type) == ("PUT", "/lists/l.1/elements/7", JSON)
    assert msgspec.json.decode(put.content) == {"id": 7, "score": 3}
    delete = _calls.delete_elements("l1", [1, 2])
    assert delete.params == (("element_ids", "1"), ("element_ids", "2"))
    assert _calls.raw("get", "/x").safe and not _calls.raw("POST", "/x").safe


def test_models_decode_integers_of_any_size_exactly():
    data = b'{"t1":1,"t2":2,"results":[{"user":"u","sums":{"m":340282366920938463463374607431768211457}}]}'
    result = msgspec.json.decode(data, type=models.RangeResult)
    assert result.sums() == {"u": {"m": 2**128 + 1}}


############################################################################################
# next_step: the retry loop both clients run, without I/O


def _step(outcome, *, safe=True, attempt=1, policy=None, rand=lambda: 1.0):
    call = Call(method="POST" if not safe else "GET", path="/x", safe=safe)
    return next_step(call, policy or RetryPolicy(attempts=3, base_delay=0.5, max_delay=2.0),
                     attempt=attempt, url="http://h/x", outcome=outcome, rand=rand)


def test_next_step_returns_an_answer_under_400_whatever_the_attempt():
    answer = httpx.Response(204)
    assert _step(answer, attempt=3) is answer
    redirect = httpx.Response(304)
    assert _step(redirect, safe=False) is redirect


def test_next_step_pauses_for_a_retryable_status_then_raises_when_attempts_run_out():
    assert _step(httpx.Response(503), attempt=1) == Pause(0.5)
    assert _step(httpx.Response(502), attempt=2, rand=lambda: 0.5) == Pause(0.5)
    error = _step(httpx.Response(504, json={"error": "upstream down"}), attempt=3)
    assert isinstance(error, errors.PointspaceHTTPError) and error.status == 504
    assert error.message == "upstream down"


def test_next_step_raises_a_4xx_or_500_at_once_with_the_body_s_message_and_field():
    error = _step(httpx.Response(400, json={"error": "metric must be a string", "field": "metric"}))
    assert isinstance(error, errors.InvalidRequest)
    assert (error.message, error.field, error.method, error.url) == (
        "metric must be a string", "metric", "GET", "http://h/x")
    assert isinstance(_step(httpx.Response(500, text="boom")), errors.PointspaceHTTPError)


def test_next_step_honours_retry_after_up_to_max_delay():
    assert _step(httpx.Response(503, headers={"Retry-After": "1"}), rand=lambda: 0.0) == Pause(1.0)
    long = _step(httpx.Response(503, headers={"Retry-After": "30"}))
    assert isinstance(long, errors.ServiceUnavailable) and long.retry_after == 30.0


def test_next_step_never_repeats_an_unsafe_call():
    assert isinstance(_step(httpx.Response(503), safe=False), errors.ServiceUnavailable)
    cut = httpx.ReadError("connection reset")
    error = _step(cut, safe=False)
    assert isinstance(error, errors.PointspaceTransportError)
    assert error.request_sent is True and error.attempts == 1 and error.__cause__ is cut


def test_next_step_transport_errors_pause_while_attempts_last_and_name_them_after():
    refused = httpx.ConnectError("refused")
    assert _step(refused, attempt=2) == Pause(1.0)
    error = _step(refused, attempt=3)
    assert isinstance(error, errors.PointspaceTransportError)
    assert str(error) == "GET http://h/x got no answer after 3 attempt(s): ConnectError: refused"
    assert error.request_sent is False and error.attempts == 3 and error.__cause__ is refused


def test_next_step_never_retries_the_caller_s_own_mistake():
    bad = httpx.UnsupportedProtocol("no ftp")
    error = _step(bad, attempt=1)
    assert isinstance(error, errors.PointspaceTransportError) and error.__cause__ is bad
