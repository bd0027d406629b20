"""End-to-end tests of the PSD-compatible routes (web/compat/psd.py) against a real server process.

The reference is ../shared/compat/psd.md: response shapes and content types, inclusive ranges
at second resolution, diff-add writes, the atid filter, ``_atids``, the mumt drop rules, v2
offsets, global counters, and the queue-message batch endpoint ``POST /v1/batch``.

Every test uses its own user ids and counter names (the module's server is shared).
"""

from __future__ import annotations

import calendar
import itertools
import json
import signal

import httpx
import pytest
from conftest import ServerProcess, start_server

MAX_TS = 253402300799  # 9999-12-31 23:59:59 UTC

_ids = itertools.count(700_000)


def new_uid() -> int:
    """A user id no other test in this module uses."""
    return next(_ids)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))


def write(client: httpx.Client, **job: object) -> None:
    """POST one MetricJob to /v1/write and insist on PSD's ``200 ok``."""
    r = client.post("/v1/write", json=job)
    assert (r.status_code, r.text) == (200, "ok"), r.text
    assert r.headers["content-type"].startswith("text/plain")


def query(
    client: httpx.Client, uid: object, thing: str, t1: int, t2: int, atid: object = "all"
) -> int:
    r = client.get(f"/v1/query/{uid}/{thing}/{atid}/{t1}/{t2}")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return int(r.text)


def mumt(client: httpx.Client, atid: object, t1: int, t2: int, things: str, ids: str) -> dict:
    r = client.post(f"/v1/mumt_query/{atid}/{t1}/{t2}", data={"things": things, "ids": ids})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    return r.json()


def readcount(client: httpx.Client, thing: str, t1: int, t2: int) -> int:
    r = client.get(f"/v1/readcount/{thing}/{t1}/{t2}")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return int(r.text)


def assert_json_error(r: httpx.Response, status: int, field: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert isinstance(body.get("error"), str) and body["error"]
    if field is not None:
        assert body.get("field") == field, body
    return body


@pytest.fixture(autouse=True)
def _server_survives(server: ServerProcess):
    """Fail the test that killed the shared server, not every test after it."""
    yield
    assert server.process.poll() is None, f"the server process died:\n{server.log()[-3000:]}"


@pytest.fixture(scope="module")
def client(server: ServerProcess):
    """One keep-alive client for the module (building an httpx.Client costs ~0.1 s)."""
    with server.client() as c:
        yield c


@pytest.fixture(scope="module")
def closing(server: ServerProcess):
    """A client that closes the connection after each response.

    Bad-input tests use it: a keep-alive connection whose request body the server did not
    read can hang (see test_psd_keepalive_* below), and one such hang must not stall the suite.
    """
    with httpx.Client(base_url=server.url, timeout=30, headers={"Connection": "close"}) as c:
        yield c


############################################################################################
# /health/ping and the README example


def test_ping_answers_pong_json(client):
    r = client.get("/health/ping")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {"pong": "OK"}


def test_write_readme_curl_example(client):
    uid = new_uid()
    write(client, thing="steps", uid=uid, atid=2, aid=3, value=10, ts1=1496539746, ts2=1496539747)
    r = client.post(
        "/v1/mumt_query/all/1496539746/1496539747", data={"things": "steps", "ids": str(uid)}
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {"data": {str(uid): {"_atids": [2], "steps": 10}}}


############################################################################################
# /v1/query: plain text, inclusive ranges at second resolution, calendar boundaries


def test_query_answers_plain_text_integer(client):
    uid = new_uid()
    write(
        client,
        thing="points",
        uid=uid,
        atid=10,
        aid=1001,
        value=105,
        ts1=1458061005,
        ts2=1458061005,
    )
    r = client.get(f"/v1/query/{uid}/points/all/1458061005/1458061010")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert r.text == "105"


def test_query_unknown_user_is_zero(client):
    assert query(client, new_uid(), "steps", 0, MAX_TS) == 0


def test_query_any_thing_name_is_accepted(client):
    uid = new_uid()
    write(client, thing="floors_climbed", uid=uid, aid=1, value=4, ts1=100, ts2=100)
    assert query(client, uid, "floors_climbed", 0, 200) == 4
    assert query(client, uid, "steps", 0, 200) == 0


def test_query_end_before_start_is_zero(client):
    # PSD's cursor loop never runs when start > end: the sum is 0, not an error.
    uid = new_uid()
    write(client, thing="steps", uid=uid, aid=1, value=4, ts1=100, ts2=100)
    assert query(client, uid, "steps", 101, 99) == 0


def test_query_range_is_inclusive_at_second_resolution(client):
    uid = new_uid()
    t = 1458061005
    write(client, thing="steps", uid=uid, aid=1, value=7, ts1=t, ts2=t)
    assert query(client, uid, "steps", t, t) == 7
    assert query(client, uid, "steps", t - 1, t - 1) == 0
    assert query(client, uid, "steps", t + 1, t + 1) == 0
    assert query(client, uid, "steps", t - 10, t) == 7
    assert query(client, uid, "steps", t, t + 10) == 7
    assert query(client, uid, "steps", t + 1, t + 10) == 0
    assert query(client, uid, "steps", t - 10, t - 1) == 0


# One write per instant, value 2**i, so a sum names exactly which writes a range included.
CALENDAR_WRITES = [
    utc(2015, 12, 31, 23, 59, 59),
    utc(2016, 1, 1),
    1451635199,  # 2016-01-01 07:59:59
    1451635200,  # 2016-01-01 08:00:00
    utc(2016, 2, 15, 12),
    utc(2016, 2, 28, 23, 59, 59),
    utc(2016, 2, 29),
    utc(2016, 2, 29, 12, 30, 30),
    utc(2016, 2, 29, 23, 59, 59),
    utc(2016, 3, 1),
    1458061004,
    1458061005,  # 2016-03-15 16:56:45
    1458061010,
    1458061011,
    1458061012,
    utc(2016, 5, 10, 12, 59, 59),
    utc(2016, 5, 10, 13),
    utc(2016, 5, 10, 13, 0, 59),
    utc(2016, 5, 10, 13, 1),
    utc(2016, 6, 30, 23, 59, 59),
    utc(2016, 7, 1),
    1471391999,
    1471392000,  # 2016-08-17 00:00:00
    1471478399,  # 2016-08-17 23:59:59
    1471478400,
    utc(2016, 12, 31, 23, 59, 59),
    utc(2017, 1, 1),
    utc(2017, 1, 1, 0, 0, 1),
]
assert len(set(CALENDAR_WRITES)) == len(CALENDAR_WRITES)


def expected_sum(t1: int, t2: int) -> int:
    return sum(2**i for i, t in enumerate(CALENDAR_WRITES) if t1 <= t <= t2)


@pytest.fixture(scope="module")
def calendar_uid(server) -> int:
    uid = new_uid()
    with server.client() as client:
        for i, t in enumerate(CALENDAR_WRITES):
            write(client, thing="points", uid=uid, atid=10, aid=i + 1, value=2**i, ts1=t, ts2=t)
    return uid


CALENDAR_RANGES = {
    "psd_example_seconds": (1458061005, 1458061010),
    "psd_example_whole_day": (1471392000, 1471478399),
    "psd_example_seven_requests": (1451635200, 1458061011),
    "psd_example_year_plus_one_second": (utc(2016, 1, 1), utc(2017, 1, 1)),
    "year_2016_exactly": (utc(2016, 1, 1), utc(2016, 12, 31, 23, 59, 59)),
    "year_2016_minus_last_second": (utc(2016, 1, 1), utc(2016, 12, 31, 23, 59, 58)),
    "year_2016_minus_first_second": (utc(2016, 1, 1, 0, 0, 1), utc(2016, 12, 31, 23, 59, 59)),
    "new_year_crossing": (utc(2016, 12, 31, 23, 59, 59), utc(2017, 1, 1)),
    "new_year_second": (utc(2017, 1, 1), utc(2017, 1, 1)),
    "leap_day_exactly": (utc(2016, 2, 29), utc(2016, 2, 29, 23, 59, 59)),
    "leap_day_minus_first_second": (utc(2016, 2, 29, 0, 0, 1), utc(2016, 2, 29, 23, 59, 59)),
    "leap_day_minus_last_second": (utc(2016, 2, 29), utc(2016, 2, 29, 23, 59, 58)),
    "leap_day_plus_one_second_each_side": (utc(2016, 2, 28, 23, 59, 59), utc(2016, 3, 1)),
    "february_2016": (utc(2016, 2, 1), utc(2016, 2, 29, 23, 59, 59)),
    "february_2016_to_march_first": (utc(2016, 2, 1), utc(2016, 3, 1)),
    "february_28": (utc(2016, 2, 28), utc(2016, 2, 28, 23, 59, 59)),
    "hour_crossing": (utc(2016, 5, 10, 12, 59, 59), utc(2016, 5, 10, 13)),
    "first_minute_of_hour": (utc(2016, 5, 10, 13), utc(2016, 5, 10, 13, 0, 59)),
    "first_minute_minus_first_second": (utc(2016, 5, 10, 13, 0, 1), utc(2016, 5, 10, 13, 0, 59)),
    "minute_crossing": (utc(2016, 5, 10, 13, 0, 59), utc(2016, 5, 10, 13, 1)),
    "month_crossing": (utc(2016, 6, 30, 23, 59, 59), utc(2016, 7, 1)),
    "july_first_day": (utc(2016, 7, 1), utc(2016, 7, 1, 23, 59, 59)),
    "everything": (0, MAX_TS),
    "nothing_before": (0, utc(2015, 12, 31, 23, 59, 58)),
    "nothing_after": (utc(2017, 1, 1, 0, 0, 2), MAX_TS),
    "two_years_and_a_bit": (utc(2015, 12, 31, 23, 59, 59), utc(2017, 1, 1, 0, 0, 1)),
}


@pytest.mark.parametrize("name", list(CALENDAR_RANGES))
def test_query_calendar_range_boundaries(client, calendar_uid, name):
    t1, t2 = CALENDAR_RANGES[name]
    assert query(client, calendar_uid, "points", t1, t2) == expected_sum(t1, t2)


def test_query_each_write_included_or_excluded_by_one_second(client, calendar_uid):
    wrong = []
    for t in CALENDAR_WRITES:
        for t1, t2 in [(t, t), (t, MAX_TS), (t + 1, MAX_TS), (0, t), (0, t - 1), (t - 1, t + 1)]:
            got = query(client, calendar_uid, "points", t1, t2)
            if got != expected_sum(t1, t2):
                wrong.append((t1, t2, got, expected_sum(t1, t2)))
    assert wrong == []


def test_query_multi_user_endpoints_agree_with_query(client, calendar_uid):
    t1, t2 = CALENDAR_RANGES["psd_example_seven_requests"]
    want = expected_sum(t1, t2)
    r = client.post(f"/v1/query_ids/points/all/{t1}/{t2}", data={"ids": str(calendar_uid)})
    assert json.loads(r.text) == {str(calendar_uid): want}
    r = client.post(f"/v1/mu_query/points/all/{t1}/{t2}", data={"ids": str(calendar_uid)})
    assert r.json()["values"] == {str(calendar_uid): want}
    n_writes = sum(1 for t in CALENDAR_WRITES if t1 <= t <= t2)
    assert r.json()["atids"] == {str(calendar_uid): [10] * n_writes}
    data = mumt(client, "all", t1, t2, "points", str(calendar_uid))
    assert data == {"data": {str(calendar_uid): {"points": want, "_atids": [10] * n_writes}}}


############################################################################################
# /v1/write: diff-add semantics


def test_write_replay_of_the_same_report_changes_nothing(client):
    uid = new_uid()
    for _ in range(3):
        write(client, thing="steps", uid=uid, atid=2, aid=3, value=10, ts1=1000, ts2=1060)
    assert query(client, uid, "steps", 0, MAX_TS) == 10


def test_write_later_report_adds_only_the_increment_at_ts2(client):
    uid = new_uid()
    write(client, thing="steps", uid=uid, atid=2, aid=3, value=10, ts1=1000, ts2=1060)
    write(client, thing="steps", uid=uid, atid=2, aid=3, value=25, ts1=1000, ts2=1120)
    assert query(client, uid, "steps", 0, MAX_TS) == 25
    assert query(client, uid, "steps", 1060, 1060) == 10
    assert query(client, uid, "steps", 1061, 1120) == 15
    assert query(client, uid, "steps", 1000, 1059) == 0  # not spread between ts1 and ts2


def test_write_negative_correction(client):
    uid = new_uid()
    write(client, thing="steps", uid=uid, atid=2, aid=3, value=25, ts1=1000, ts2=1060)
    write(client, thing="steps", uid=uid, atid=2, aid=3, value=20, ts1=1000, ts2=1120)
    assert query(client, uid, "steps", 0, MAX_TS) == 20
    assert query(client, uid, "steps", 1120, 1120) == -5


def test_write_negative_value_is_allowed(client):
    uid = new_uid()
    write(client, thing="points", uid=uid, atid=1, aid=1, value=-7, ts1=500, ts2=500)
    assert query(client, uid, "points", 0, 1000) == -7


def test_write_report_not_covering_earlier_writes_adds_full_value_again(client):
    # psd.md derived case D7: [ts1, ts2] of the second report misses the first write.
    uid = new_uid()
    write(client, thing="steps", uid=uid, atid=2, aid=3, value=10, ts1=1000, ts2=1000)
    write(client, thing="steps", uid=uid, atid=2, aid=3, value=10, ts1=1001, ts2=1005)
    assert query(client, uid, "steps", 0, MAX_TS) == 20
    assert query(client, uid, "steps", 1005, 1005) == 10


def test_write_delta_zero_is_a_noop_that_answers_ok(client):
    uid = new_uid()
    write(client, thing="steps", uid=uid, atid=2, aid=3, value=10, ts1=1000, ts2=1060)
    # Same total, later ts2 whose range covers the first write: delta 0.
    write(client, thing="steps", uid=uid, atid=2, aid=3, value=10, ts1=1000, ts2=1200)
    assert query(client, uid, "steps", 0, MAX_TS) == 10
    assert query(client, uid, "steps", 1200, 1200) == 0
    # Nothing was written at 1200, so the activity does not "contribute" to [1100, 1300].
    assert mumt(client, "all", 1100, 1300, "steps", str(uid)) == {"data": {}}


def test_write_first_report_of_zero_is_a_noop(tmp_path):
    # On a server of its own: this bug (an empty MetricCounters after a no-op first report;
    # the next unfiltered read raised StopIteration in the actor) used to kill the process.
    own = start_server(tmp_path)
    try:
        with own.client() as client:
            uid = new_uid()
            write(client, thing="steps", uid=uid, atid=2, aid=3, value=0, ts1=1000, ts2=1000)
            assert query(client, uid, "steps", 0, MAX_TS) == 0
            assert query(client, uid, "steps", 0, MAX_TS, atid=2) == 0
            assert mumt(client, "all", 0, MAX_TS, "steps", str(uid)) == {"data": {}}
            assert client.get("/health/ping").status_code == 200
    finally:
        own.stop()


def test_write_diff_is_per_activity(client):
    uid = new_uid()
    write(client, thing="steps", uid=uid, atid=2, aid=1, value=10, ts1=1000, ts2=1000)
    write(client, thing="steps", uid=uid, atid=2, aid=2, value=10, ts1=1000, ts2=1000)
    assert query(client, uid, "steps", 0, MAX_TS) == 20


def test_write_diff_is_per_thing(client):
    uid = new_uid()
    write(client, thing="steps", uid=uid, atid=2, aid=1, value=10, ts1=1000, ts2=1000)
    write(client, thing="points", uid=uid, atid=2, aid=1, value=10, ts1=1000, ts2=1000)
    assert query(client, uid, "steps", 0, MAX_TS) == 10
    assert query(client, uid, "points", 0, MAX_TS) == 10


def test_write_diff_is_per_user(client):
    a, b = new_uid(), new_uid()
    write(client, thing="steps", uid=a, atid=2, aid=1, value=10, ts1=1000, ts2=1000)
    write(client, thing="steps", uid=b, atid=2, aid=1, value=10, ts1=1000, ts2=1000)
    assert query(client, a, "steps", 0, MAX_TS) == 10
    assert query(client, b, "steps", 0, MAX_TS) == 10


def test_write_diff_matches_aid_across_atids(client):
    # ``already`` is filtered to the aid only (all atids).
    uid = new_uid()
    write(client, thing="steps", uid=uid, atid=2, aid=9, value=10, ts1=1000, ts2=1000)
    write(client, thing="steps", uid=uid, atid=5, aid=9, value=10, ts1=1000, ts2=1010)
    assert query(client, uid, "steps", 0, MAX_TS) == 10


def test_write_missing_ts1_defaults_to_zero(client):
    uid = new_uid()
    write(client, thing="steps", uid=uid, aid=4, value=10, ts2=5000)
    write(client, thing="steps", uid=uid, aid=4, value=12, ts2=9000)  # [0, 9000] covers 5000
    assert query(client, uid, "steps", 0, MAX_TS) == 12


def test_write_missing_atid_and_aid_default_to_zero(client):
    uid = new_uid()
    write(client, thing="steps", uid=uid, value=10, ts2=5000)
    write(client, thing="steps", uid=uid, value=10, ts2=6000)  # same aid 0: a replay
    assert query(client, uid, "steps", 0, MAX_TS) == 10
    assert query(client, uid, "steps", 0, MAX_TS, atid=0) == 10


def test_write_uid_as_decimal_string_is_the_same_user(client):
    uid = new_uid()
    write(client, thing="steps", uid=str(uid), aid=1, value=10, ts1=100, ts2=100)
    write(client, thing="steps", uid=uid, aid=2, value=5, ts1=100, ts2=100)
    assert query(client, uid, "steps", 0, 1000) == 15


def test_write_at_leap_day_and_year_end(client):
    uid = new_uid()
    leap = utc(2016, 2, 29, 23, 59, 59)
    write(client, thing="steps", uid=uid, aid=1, value=3, ts1=leap, ts2=leap)
    write(
        client,
        thing="steps",
        uid=uid,
        aid=2,
        value=5,
        ts1=utc(2016, 12, 31, 23, 59, 59),
        ts2=utc(2017, 1, 1),
    )
    assert query(client, uid, "steps", utc(2016, 2, 29), utc(2016, 2, 29, 23, 59, 59)) == 3
    assert query(client, uid, "steps", utc(2016, 3, 1), utc(2016, 12, 31, 23, 59, 59)) == 0
    assert query(client, uid, "steps", utc(2017, 1, 1), utc(2017, 1, 1)) == 5


def test_write_at_max_timestamp_is_accepted(client):
    uid = new_uid()
    write(client, thing="steps", uid=uid, aid=1, value=3, ts1=MAX_TS, ts2=MAX_TS)
    assert query(client, uid, "steps", MAX_TS, MAX_TS) == 3
    assert query(client, uid, "steps", utc(9999, 12, 31), MAX_TS) == 3


############################################################################################
# atid path filter


def test_query_atid_filter_all_versus_number(client):
    uid = new_uid()
    write(client, thing="steps", uid=uid, atid=2, aid=1, value=10, ts1=100, ts2=100)
    write(client, thing="steps", uid=uid, atid=5, aid=2, value=7, ts1=100, ts2=110)
    assert query(client, uid, "steps", 0, 1000, atid="all") == 17
    assert query(client, uid, "steps", 0, 1000, atid=2) == 10
    assert query(client, uid, "steps", 0, 1000, atid=5) == 7
    assert query(client, uid, "steps", 0, 1000, atid=9) == 0


def test_query_atid_zero_is_not_all(client):
    # Hashzilla gives atid 0 no special meaning: /0/ filters to activity type 0.
    uid = new_uid()
    write(client, thing="steps", uid=uid, atid=2, aid=1, value=10, ts1=100, ts2=100)
    assert query(client, uid, "steps", 0, 1000, atid=0) == 0
    assert query(client, uid, "steps", 0, 1000, atid="all") == 10


############################################################################################
# /v1/query_ids


def test_query_ids_text_wrapped_json_every_id_present(client):
    a, b, c = new_uid(), new_uid(), new_uid()
    write(client, thing="points", uid=a, atid=10, aid=1, value=105, ts1=1458061005, ts2=1458061005)
    write(client, thing="points", uid=b, atid=11, aid=1, value=3, ts1=1458061006, ts2=1458061006)
    r = client.post("/v1/query_ids/points/all/1458061005/1458061010", data={"ids": f"{a},{b},{c}"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert json.loads(r.text) == {str(a): 105, str(b): 3, str(c): 0}


def test_query_ids_atid_filter(client):
    a, b = new_uid(), new_uid()
    write(client, thing="points", uid=a, atid=10, aid=1, value=5, ts1=100, ts2=100)
    write(client, thing="points", uid=b, atid=11, aid=1, value=3, ts1=100, ts2=100)
    r = client.post("/v1/query_ids/points/10/0/1000", data={"ids": f"{a},{b}"})
    assert json.loads(r.text) == {str(a): 5, str(b): 0}


def test_query_ids_trims_spaces_in_the_id_list(client):
    a, b = new_uid(), new_uid()
    write(client, thing="points", uid=a, aid=1, value=5, ts1=100, ts2=100)
    r = client.post("/v1/query_ids/points/all/0/1000", data={"ids": f" {a} , {b} "})
    assert json.loads(r.text) == {str(a): 5, str(b): 0}


def test_query_ids_from_query_string(client):
    a = new_uid()
    write(client, thing="points", uid=a, aid=1, value=5, ts1=100, ts2=100)
    r = client.post(f"/v1/query_ids/points/all/0/1000?ids={a}")
    assert r.status_code == 200
    assert json.loads(r.text) == {str(a): 5}


############################################################################################
# /v1/mu_query


def test_mu_query_values_and_atids_one_per_activity(client):
    a, b = new_uid(), new_uid()
    # Two activities of type 2 and one of type 5 give [2, 2, 5].
    write(client, thing="steps", uid=a, atid=2, aid=1, value=10, ts1=100, ts2=100)
    write(client, thing="steps", uid=a, atid=2, aid=2, value=20, ts1=100, ts2=110)
    write(client, thing="steps", uid=a, atid=5, aid=3, value=5, ts1=100, ts2=120)
    # More reports of the same activity add no entry.
    write(client, thing="steps", uid=a, atid=2, aid=1, value=15, ts1=100, ts2=130)
    r = client.post("/v1/mu_query/steps/all/0/1000", data={"ids": f"{a},{b}"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"values", "atids"}
    assert body["values"] == {str(a): 40, str(b): 0}
    assert sorted(body["atids"][str(a)]) == [2, 2, 5]
    assert body["atids"][str(b)] == []


def test_mu_query_keeps_zero_users(client):
    a = new_uid()
    r = client.post("/v1/mu_query/steps/all/0/1000", data={"ids": str(a)})
    assert r.json() == {"values": {str(a): 0}, "atids": {str(a): []}}


def test_mu_query_atid_filter_applies_to_values_and_atids(client):
    a = new_uid()
    write(client, thing="steps", uid=a, atid=2, aid=1, value=10, ts1=100, ts2=100)
    write(client, thing="steps", uid=a, atid=2, aid=2, value=20, ts1=100, ts2=110)
    write(client, thing="steps", uid=a, atid=5, aid=3, value=5, ts1=100, ts2=120)
    r = client.post("/v1/mu_query/steps/2/0/1000", data={"ids": str(a)})
    assert r.json() == {"values": {str(a): 30}, "atids": {str(a): [2, 2]}}


def test_mu_query_atids_only_for_activities_in_range(client):
    a = new_uid()
    write(client, thing="steps", uid=a, atid=2, aid=1, value=10, ts1=100, ts2=100)
    write(client, thing="steps", uid=a, atid=5, aid=2, value=20, ts1=200, ts2=200)
    r = client.post("/v1/mu_query/steps/all/150/250", data={"ids": str(a)})
    assert r.json() == {"values": {str(a): 20}, "atids": {str(a): [5]}}


############################################################################################
# /v1/mumt_query and /v2/mumt_query


def test_mumt_query_sums_every_thing_and_dedupes_aids_across_things(client):
    a = new_uid()
    write(client, thing="steps", uid=a, atid=2, aid=1, value=100, ts1=100, ts2=100)
    write(client, thing="points", uid=a, atid=2, aid=1, value=10, ts1=100, ts2=100)
    write(client, thing="calories", uid=a, atid=2, aid=1, value=7, ts1=100, ts2=100)
    write(client, thing="steps", uid=a, atid=5, aid=2, value=50, ts1=100, ts2=100)
    data = mumt(client, "all", 0, 1000, "steps,points,calories", str(a))
    entry = data["data"][str(a)]
    assert {k: v for k, v in entry.items() if k != "_atids"} == {
        "steps": 150,
        "points": 10,
        "calories": 7,
    }
    assert sorted(entry["_atids"]) == [2, 5]


def test_mumt_query_drops_user_without_activity(client):
    a, b = new_uid(), new_uid()
    write(client, thing="steps", uid=a, atid=2, aid=1, value=10, ts1=100, ts2=100)
    data = mumt(client, "all", 0, 1000, "steps", f"{a},{b}")
    assert data == {"data": {str(a): {"steps": 10, "_atids": [2]}}}


def test_mumt_query_atids_only_from_requested_things(client):
    a = new_uid()
    write(client, thing="points", uid=a, atid=2, aid=1, value=10, ts1=100, ts2=100)
    write(client, thing="steps", uid=a, atid=5, aid=2, value=10, ts1=100, ts2=100)
    assert mumt(client, "all", 0, 1000, "calories", str(a)) == {"data": {}}
    assert mumt(client, "all", 0, 1000, "steps", str(a)) == {
        "data": {str(a): {"steps": 10, "_atids": [5]}}
    }


def test_mumt_query_drops_user_with_activity_outside_range(client):
    a = new_uid()
    write(client, thing="steps", uid=a, atid=2, aid=1, value=10, ts1=100, ts2=100)
    assert mumt(client, "all", 101, 1000, "steps", str(a)) == {"data": {}}


def test_mumt_query_drops_user_with_zero_points_when_points_requested(client):
    a = new_uid()
    write(client, thing="steps", uid=a, atid=2, aid=1, value=10, ts1=100, ts2=100)
    # steps only: kept.
    assert mumt(client, "all", 0, 1000, "steps", str(a)) == {
        "data": {str(a): {"steps": 10, "_atids": [2]}}
    }
    # steps,points for a user with steps but no points: dropped.
    assert mumt(client, "all", 0, 1000, "steps,points", str(a)) == {"data": {}}


def test_mumt_query_drops_user_whose_points_net_to_zero(client):
    a = new_uid()
    write(client, thing="points", uid=a, atid=2, aid=1, value=5, ts1=100, ts2=100)
    write(client, thing="points", uid=a, atid=2, aid=1, value=0, ts1=100, ts2=200)
    assert query(client, a, "points", 0, 1000) == 0
    assert mumt(client, "all", 0, 1000, "points", str(a)) == {"data": {}}


def test_mumt_query_keeps_user_with_activity_and_zero_steps(client):
    # _atids non-empty but the sum is 0: "zero" is not "no activity" (points not requested).
    a = new_uid()
    write(client, thing="steps", uid=a, atid=4, aid=1, value=5, ts1=100, ts2=100)
    write(client, thing="steps", uid=a, atid=4, aid=1, value=0, ts1=100, ts2=200)
    assert mumt(client, "all", 0, 1000, "steps", str(a)) == {
        "data": {str(a): {"steps": 0, "_atids": [4]}}
    }


def test_mumt_query_keeps_user_with_nonzero_points(client):
    a, b = new_uid(), new_uid()
    write(client, thing="steps", uid=a, atid=2, aid=1, value=10, ts1=100, ts2=100)
    write(client, thing="points", uid=a, atid=2, aid=1, value=3, ts1=100, ts2=100)
    write(client, thing="steps", uid=b, atid=2, aid=1, value=10, ts1=100, ts2=100)
    data = mumt(client, "all", 0, 1000, "steps,points", f"{a},{b}")
    assert data == {"data": {str(a): {"steps": 10, "points": 3, "_atids": [2]}}}


def test_mumt_query_atid_filter(client):
    a = new_uid()
    write(client, thing="steps", uid=a, atid=2, aid=1, value=10, ts1=100, ts2=100)
    write(client, thing="steps", uid=a, atid=5, aid=2, value=7, ts1=100, ts2=100)
    assert mumt(client, "all", 0, 1000, "steps", str(a))["data"][str(a)]["steps"] == 17
    assert mumt(client, "5", 0, 1000, "steps", str(a)) == {
        "data": {str(a): {"steps": 7, "_atids": [5]}}
    }
    assert mumt(client, "9", 0, 1000, "steps", str(a)) == {"data": {}}


def test_mumt_query_atids_duplicate_per_activity(client):
    a = new_uid()
    write(client, thing="steps", uid=a, atid=2, aid=1, value=1, ts1=100, ts2=100)
    write(client, thing="steps", uid=a, atid=2, aid=2, value=1, ts1=100, ts2=100)
    write(client, thing="points", uid=a, atid=5, aid=3, value=1, ts1=100, ts2=100)
    write(client, thing="points", uid=a, atid=2, aid=1, value=1, ts1=100, ts2=100)  # same aid 1
    entry = mumt(client, "all", 0, 1000, "steps,points", str(a))["data"][str(a)]
    assert sorted(entry["_atids"]) == [2, 2, 5]


def test_mumt_query_v2_offsets_shift_window_per_user(client):
    a, b, c = new_uid(), new_uid(), new_uid()
    day1, day_end = 1471392000, 1471478399  # 2016-08-17 00:00:00 .. 23:59:59 UTC
    for uid in (a, b, c):
        for aid, (t, v) in enumerate(
            [
                (day1 - 1, 1),  # 2016-08-16 23:59:59
                (day1, 2),  # 2016-08-17 00:00:00
                (day1 + 28800 - 1, 4),  # 07:59:59
                (day1 + 28800, 8),  # 08:00:00
                (day_end, 16),  # 23:59:59
                (day_end + 28800, 32),  # 2016-08-18 07:59:59
                (day_end + 28801, 64),  # 2016-08-18 08:00:00
                (day1 - 3600, 128),  # 2016-08-16 23:00:00
                (day_end - 3600, 256),  # 2016-08-17 22:59:59
            ],
            start=1,
        ):
            write(client, thing="steps", uid=uid, atid=1, aid=aid, value=v, ts1=t, ts2=t)
    r = client.post(
        f"/v2/mumt_query/all/{day1}/{day_end}",
        data={"things": "steps", "ids": f"{a},{b},{c}", "offsets": "28800,0,-3600"},
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    data = r.json()["data"]
    # +28800: 2016-08-17 08:00:00 .. 2016-08-18 07:59:59.
    assert data[str(a)]["steps"] == 8 + 16 + 32 + 256
    # 0: the UTC day.
    assert data[str(b)]["steps"] == 2 + 4 + 8 + 16 + 256
    # -3600: 2016-08-16 23:00:00 .. 2016-08-17 22:59:59.
    assert data[str(c)]["steps"] == 1 + 2 + 4 + 8 + 128 + 256
    assert data[str(a)]["_atids"] == [1] * 4
    assert data[str(b)]["_atids"] == [1] * 5


def test_mumt_query_v2_same_shape_and_drop_rules_as_v1(client):
    a, b = new_uid(), new_uid()
    write(client, thing="steps", uid=a, atid=2, aid=1, value=10, ts1=1496539747, ts2=1496539747)
    write(client, thing="steps", uid=b, atid=2, aid=1, value=10, ts1=1496539747, ts2=1496539747)
    r = client.post(
        "/v2/mumt_query/all/1496539746/1496539747",
        data={"things": "steps", "ids": f"{a},{b}", "offsets": "0,10"},
    )
    assert r.json() == {"data": {str(a): {"steps": 10, "_atids": [2]}}}
    r = client.post(
        "/v2/mumt_query/all/1496539746/1496539747",
        data={"things": "steps,points", "ids": f"{a},{b}", "offsets": "0,0"},
    )
    assert r.json() == {"data": {}}


@pytest.mark.parametrize("offsets", ["0", "0,0,0", "1,2,3,4"])
def test_mumt_query_v2_offsets_length_mismatch_is_422(client, offsets):
    a, b = new_uid(), new_uid()
    r = client.post(
        "/v2/mumt_query/all/0/1000", data={"things": "steps", "ids": f"{a},{b}", "offsets": offsets}
    )
    body = assert_json_error(r, 422)
    assert body["error"] == "len(uids) != len(offsets)"


def test_mumt_query_v2_missing_offsets_is_422(client):
    r = client.post("/v2/mumt_query/all/0/1000", data={"things": "steps", "ids": "1,2"})
    assert_json_error(r, 422, "offsets")


def test_mumt_query_v2_non_numeric_offset_is_422(client):
    r = client.post(
        "/v2/mumt_query/all/0/1000", data={"things": "steps", "ids": "1", "offsets": "x"}
    )
    assert_json_error(r, 422, "offsets")


############################################################################################
# Global counters: /v1/batch "count", /v1/readcount, /v1/readcount_with_ids


def count_message(thing: str, value: int, ts: int) -> dict:
    return {"command": "count", "count": {"thing": thing, "value": value, "ts": ts}}


def metric_message(**job: object) -> dict:
    return {"command": "metric", "metric": job}


def test_readcount_sums_global_counter_in_range(client):
    thing = "newsignup_rc1"
    t = 1458061005
    r = client.post(
        "/v1/batch",
        json=[
            count_message(thing, 1, t - 1),
            count_message(thing, 2, t),
            count_message(thing, 4, t + 5),
        ],
    )
    assert r.status_code == 200, r.text
    assert readcount(client, thing, t, t + 5) == 6
    assert readcount(client, thing, t - 1, t) == 3
    assert readcount(client, thing, t + 1, t + 4) == 0
    assert readcount(client, thing, 0, MAX_TS) == 7


def test_readcount_is_plain_additive(client):
    thing = "new_hifive_rc2"
    for _ in range(3):
        assert client.post("/v1/batch", json=[count_message(thing, 5, 1000)]).status_code == 200
    assert readcount(client, thing, 1000, 1000) == 15


def test_readcount_unknown_counter_is_zero(client):
    assert readcount(client, "never_counted_rc3", 0, MAX_TS) == 0


def test_readcount_across_leap_day_and_year_end(client):
    thing = "calendar_rc4"
    instants = [
        utc(2016, 2, 29, 23, 59, 59),
        utc(2016, 3, 1),
        utc(2016, 12, 31, 23, 59, 59),
        utc(2017, 1, 1),
    ]
    client.post("/v1/batch", json=[count_message(thing, 2**i, t) for i, t in enumerate(instants)])
    assert readcount(client, thing, utc(2016, 2, 29), utc(2016, 2, 29, 23, 59, 59)) == 1
    assert readcount(client, thing, utc(2016, 2, 29), utc(2016, 3, 1)) == 3
    assert readcount(client, thing, utc(2016, 1, 1), utc(2016, 12, 31, 23, 59, 59)) == 7
    assert readcount(client, thing, utc(2016, 1, 1), utc(2017, 1, 1)) == 15
    assert readcount(client, thing, utc(2016, 12, 31, 23, 59, 59), utc(2017, 1, 1)) == 12


def test_readcount_is_separate_from_user_metrics(client):
    uid = new_uid()
    write(client, thing="counted_rc5", uid=uid, aid=1, value=10, ts1=100, ts2=100)
    assert readcount(client, "counted_rc5", 0, 1000) == 0


def test_readcount_with_ids_reads_prefix_underscore_id(client):
    client.post(
        "/v1/batch",
        json=[
            count_message("hifive_rw_1", 3, 500),
            count_message("hifive_rw_2", 4, 500),
            count_message("hifive_rw_2", 5, 2000),
            count_message("hifive_rw", 100, 500),
        ],
    )
    r = client.post("/v1/readcount_with_ids/hifive_rw/0/1000", data={"ids": "1,2,3"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert json.loads(r.text) == {"1": 3, "2": 4, "3": 0}
    r = client.post("/v1/readcount_with_ids/hifive_rw/0/3000", data={"ids": "2"})
    assert json.loads(r.text) == {"2": 9}


def test_readcount_with_ids_missing_ids_is_400(client):
    r = client.post("/v1/readcount_with_ids/hifive/0/1000")
    assert_json_error(r, 400, "ids")


############################################################################################
# /v1/batch: PSD queue messages


def test_batch_applies_metric_and_count_messages(client):
    uid = new_uid()
    r = client.post(
        "/v1/batch",
        json=[
            metric_message(
                thing="steps", uid=uid, atid=2, aid=3, value=10, ts1=1496539746, ts2=1496539747
            ),
            count_message("newsignup_b1", 1, 1496539747),
            metric_message(
                thing="steps", uid=uid, atid=2, aid=3, value=14, ts1=1496539746, ts2=1496539750
            ),
        ],
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {"metrics": 2, "counts": 1}
    assert query(client, uid, "steps", 0, MAX_TS) == 14
    assert query(client, uid, "steps", 1496539750, 1496539750) == 4
    assert readcount(client, "newsignup_b1", 0, MAX_TS) == 1


def test_batch_metric_messages_are_diff_add(client):
    uid = new_uid()
    batch = [metric_message(thing="points", uid=uid, atid=2, aid=3, value=10, ts1=100, ts2=200)]
    for _ in range(2):
        assert client.post("/v1/batch", json=batch).status_code == 200
    write(client, thing="points", uid=uid, atid=2, aid=3, value=10, ts1=100, ts2=300)
    assert query(client, uid, "points", 0, MAX_TS) == 10


def test_batch_accepts_a_single_message_object(client):
    uid = new_uid()
    r = client.post(
        "/v1/batch", json=metric_message(thing="steps", uid=uid, aid=1, value=5, ts2=100)
    )
    assert r.status_code == 200, r.text
    assert query(client, uid, "steps", 0, 1000) == 5


def test_batch_accepts_ndjson(client):
    uid = new_uid()
    lines = [
        metric_message(thing="steps", uid=uid, aid=1, value=5, ts2=100),
        count_message("ndjson_b2", 7, 100),
    ]
    body = "\n".join(json.dumps(m) for m in lines) + "\n"
    r = client.post("/v1/batch", content=body, headers={"Content-Type": "application/x-ndjson"})
    assert r.status_code == 200, r.text
    assert query(client, uid, "steps", 0, 1000) == 5
    assert readcount(client, "ndjson_b2", 0, 1000) == 7


def test_batch_empty_list_applies_nothing(client):
    r = client.post("/v1/batch", json=[])
    assert r.status_code == 200
    assert r.json() == {"metrics": 0, "counts": 0}


BAD_MESSAGES = {
    "unknown_command": ({"command": "publish", "metric": {}}, "messages[1].command"),
    "missing_command": ({"metric": {}}, "messages[1].command"),
    "not_an_object": (5, "messages[1].command"),
    "metric_missing_ts2": (
        {"command": "metric", "metric": {"thing": "steps", "uid": 1, "value": 1}},
        "messages[1].metric.ts2",
    ),
    "metric_ts2_zero": (
        {"command": "metric", "metric": {"thing": "steps", "uid": 1, "value": 1, "ts2": 0}},
        "messages[1].metric.ts2",
    ),
    "metric_value_string": (
        {"command": "metric", "metric": {"thing": "steps", "uid": 1, "value": "x", "ts2": 5}},
        "messages[1].metric.value",
    ),
    "metric_not_an_object": ({"command": "metric", "metric": [1]}, "messages[1].metric"),
    "count_thing_too_short": (
        {"command": "count", "count": {"thing": "x", "value": 1, "ts": 5}},
        "messages[1].count.thing",
    ),
    "count_thing_too_long": (
        {"command": "count", "count": {"thing": "x" * 65, "value": 1, "ts": 5}},
        "messages[1].count.thing",
    ),
    "count_ts_zero": (
        {"command": "count", "count": {"thing": "xy", "value": 1, "ts": 0}},
        "messages[1].count.ts",
    ),
    "count_missing_value": (
        {"command": "count", "count": {"thing": "xy", "ts": 5}},
        "messages[1].count.value",
    ),
    "count_value_float": (
        {"command": "count", "count": {"thing": "xy", "value": 1.5, "ts": 5}},
        "messages[1].count.value",
    ),
}


@pytest.mark.parametrize("name", list(BAD_MESSAGES))
def test_batch_one_bad_message_applies_nothing(closing, name):
    bad, field = BAD_MESSAGES[name]
    uid = new_uid()
    counter = f"batch_bad_{name}"
    r = closing.post(
        "/v1/batch",
        json=[
            metric_message(thing="steps", uid=uid, atid=1, aid=1, value=10, ts1=100, ts2=100),
            bad,
            count_message(counter, 1, 100),
            metric_message(thing="steps", uid=uid, atid=1, aid=2, value=10, ts1=100, ts2=100),
        ],
    )
    assert_json_error(r, 400, field)
    assert query(closing, uid, "steps", 0, MAX_TS) == 0
    assert readcount(closing, counter, 0, MAX_TS) == 0
    assert mumt(closing, "all", 0, MAX_TS, "steps", str(uid)) == {"data": {}}


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"not json", "application/json"),
        (b"", "application/json"),
        (b"5", "application/json"),
        (b'"x"', "application/json"),
    ],
)
def test_batch_bad_body_is_400_naming_body(closing, body, content_type):
    r = closing.post("/v1/batch", content=body, headers={"Content-Type": content_type})
    assert_json_error(r, 400, "body")


############################################################################################
# Bad input on /v1/write: 406 with a JSON body naming the field; nothing applied

GOOD_JOB = {
    "thing": "steps",
    "atid": 2,
    "aid": 3,
    "value": 10,
    "ts1": 1496539746,
    "ts2": 1496539747,
}


@pytest.mark.parametrize("missing", ["thing", "uid", "value", "ts2"])
def test_write_missing_required_field_is_406(closing, missing):
    uid = new_uid()
    job = {**GOOD_JOB, "uid": uid}
    del job[missing]
    body = assert_json_error(closing.post("/v1/write", json=job), 406, missing)
    assert missing in body["error"]
    assert query(closing, uid, "steps", 0, MAX_TS) == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("value", "ten"),
        ("value", 1.5),
        ("value", True),
        ("value", None),
        ("uid", None),
        ("uid", True),
        ("uid", [1]),
        ("thing", ""),
        ("thing", 3),
        ("atid", "two"),
        ("aid", "three"),
        ("ts1", "x"),
        ("ts1", -1),
        ("ts2", "1496539747"),
        ("ts2", 253402300800),  # 10000-01-01 00:00:00
        ("ts2", -5),
    ],
)
def test_write_bad_field_is_406_naming_it(closing, field, value):
    uid = new_uid()
    job = {**GOOD_JOB, "uid": uid, field: value}
    assert_json_error(closing.post("/v1/write", json=job), 406, field)
    assert query(closing, uid, "steps", 0, MAX_TS) == 0


def test_write_ts2_zero_is_timestamp_was_invalid(closing):
    uid = new_uid()
    body = assert_json_error(
        closing.post("/v1/write", json={**GOOD_JOB, "uid": uid, "ts1": 0, "ts2": 0}), 406, "ts2"
    )
    assert body["error"].startswith("timestamp was invalid")
    assert query(closing, uid, "steps", 0, MAX_TS) == 0


def test_write_ts1_after_ts2_is_406(closing):
    # A documented difference from PSD (which re-added the full value).
    uid = new_uid()
    r = closing.post("/v1/write", json={**GOOD_JOB, "uid": uid, "ts1": 1496539748})
    assert_json_error(r, 406, "ts1")
    assert query(closing, uid, "steps", 0, MAX_TS) == 0


@pytest.mark.parametrize("body", [b"not json", b"{", b"", b"[1, 2]", b"42", b'"steps"', b"null"])
def test_write_non_object_body_is_406_naming_body(closing, body):
    r = closing.post("/v1/write", content=body, headers={"Content-Type": "application/json"})
    assert_json_error(r, 406, "body")


def test_write_form_encoded_body_is_415_naming_content_type(closing):
    # A form POST is what any web page can send cross-site without asking: the edge
    # (web/edge.py) refuses it before the route runs, on every route that takes JSON.
    r = closing.post("/v1/write", data={"thing": "steps", "uid": "1", "value": "1", "ts2": "5"})
    assert_json_error(r, 415, "Content-Type")


############################################################################################
# Bad input on the query routes

ROUTES_WITH_PATH_TIMESTAMPS = {
    "query": ("GET", "/v1/query/1/steps/all/{t1}/{t2}", None),
    "query_ids": ("POST", "/v1/query_ids/steps/all/{t1}/{t2}", {"ids": "1"}),
    "readcount": ("GET", "/v1/readcount/newsignup/{t1}/{t2}", None),
    "readcount_with_ids": ("POST", "/v1/readcount_with_ids/hifive/{t1}/{t2}", {"ids": "1"}),
    "mu_query": ("POST", "/v1/mu_query/steps/all/{t1}/{t2}", {"ids": "1"}),
    "mumt_query": ("POST", "/v1/mumt_query/all/{t1}/{t2}", {"ids": "1", "things": "steps"}),
    "mumt_query_v2": (
        "POST",
        "/v2/mumt_query/all/{t1}/{t2}",
        {"ids": "1", "things": "steps", "offsets": "0"},
    ),
}

def _route_params() -> list:
    out = []
    for name in ROUTES_WITH_PATH_TIMESTAMPS:
        for which in ("start_ts", "end_ts"):
            out.append(pytest.param(name, which, id=f"{name}-{which}"))
    return out


@pytest.mark.parametrize(("route", "which"), _route_params())
def test_psd_route_non_numeric_path_timestamp_is_400_naming_it(closing, route, which):
    method, template, form = ROUTES_WITH_PATH_TIMESTAMPS[route]
    t1, t2 = ("abc", "1000") if which == "start_ts" else ("0", "12.5")
    r = closing.request(method, template.format(t1=t1, t2=t2), data=form)
    assert_json_error(r, 400, which)


@pytest.mark.parametrize("bad", ["1_000", "\uff11\uff12", " 12", "0x10"])
def test_psd_path_integers_are_read_as_go_reads_them(closing, bad):
    # strconv.ParseInt takes ASCII digits and a sign only; Python's int() would take these.
    method, template, form = ROUTES_WITH_PATH_TIMESTAMPS["readcount"]
    r = closing.request(method, template.format(t1=bad, t2="1000"), data=form)
    assert_json_error(r, 400, "start_ts")


@pytest.mark.parametrize("route", ["query", "query_ids", "readcount", "readcount_with_ids"])
@pytest.mark.parametrize("bad", ["-1", "253402300800"])
def test_psd_route_path_timestamp_out_of_range_is_400(closing, route, bad):
    method, template, form = ROUTES_WITH_PATH_TIMESTAMPS[route]
    r = closing.request(method, template.format(t1=bad, t2=bad), data=form)
    assert_json_error(r, 400, "start_ts")


def test_query_non_numeric_atid_is_400(closing):
    assert_json_error(closing.get("/v1/query/1/steps/running/0/1000"), 400, "atid")


def test_query_ids_missing_ids_is_400(closing):
    assert_json_error(closing.post("/v1/query_ids/steps/all/0/1000"), 400, "ids")


@pytest.mark.parametrize("form", [{}, {"ids": ""}, {"ids": "  "}])
def test_mu_query_missing_ids_is_422(closing, form):
    assert_json_error(closing.post("/v1/mu_query/steps/all/0/1000", data=form), 422, "ids")


@pytest.mark.parametrize("path", ["/v1/mu_query/steps/all/0/1000", "/v1/mumt_query/all/0/1000"])
def test_mu_query_ids_of_only_commas_is_422(closing, path):
    assert_json_error(closing.post(path, data={"ids": " , ,", "things": "steps"}), 422, "ids")


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"things": "steps"}, "ids"),
        ({"ids": "1"}, "things"),
        ({}, "things"),
        ({"things": "", "ids": "1"}, "things"),
        ({"things": "steps", "ids": ""}, "ids"),
    ],
)
@pytest.mark.parametrize("path", ["/v1/mumt_query/all/0/1000", "/v2/mumt_query/all/0/1000"])
def test_mumt_query_missing_things_or_ids_is_422(closing, path, form, field):
    if path.startswith("/v2") and "ids" in form and "things" in form:
        form = {**form, "offsets": "0"}
    assert_json_error(closing.post(path, data=form), 422, field)


def test_psd_routes_never_answer_500(closing):
    junk = ["x", "-", "%20", "1e3", "0x10", "99999999999999999999999", "all"]
    for a in junk:
        for path, form in [
            (f"/v1/query/{a}/steps/{a}/{a}/{a}", None),
            (f"/v1/query_ids/{a}/{a}/{a}/{a}", {"ids": a}),
            (f"/v1/mu_query/{a}/{a}/{a}/{a}", {"ids": a}),
            (f"/v1/mumt_query/{a}/{a}/{a}", {"ids": a, "things": a}),
            (f"/v2/mumt_query/{a}/{a}/{a}", {"ids": a, "things": a, "offsets": a}),
            (f"/v1/readcount/{a}/{a}/{a}", None),
            (f"/v1/readcount_with_ids/{a}/{a}/{a}", {"ids": a}),
        ]:
            method = "GET" if form is None else "POST"
            r = closing.request(method, path, data=form)
            assert r.status_code < 500, (path, r.status_code, r.text)


def test_psd_routes_wrong_method_is_405_json(closing):
    assert_json_error(closing.get("/v1/write"), 405)
    assert_json_error(closing.post("/v1/query/1/steps/all/0/10"), 405)
    assert_json_error(closing.get("/v1/mumt_query/all/0/10"), 405)
    assert_json_error(closing.post("/health/ping"), 405)


############################################################################################
# Keep-alive after an error answered before the request body was read


def test_psd_keepalive_survives_error_with_unread_body(tmp_path):
    # A server of its own: hung connections would hold the shared one's shutdown for 10 s.
    own = start_server(tmp_path)
    body = b"ids=1&pad=" + b"a" * 1_000_000
    try:
        for _ in range(12):  # each try loses the race with p > 1/2: twelve make the failure certain
            with httpx.Client(base_url=own.url, timeout=1) as keepalive:
                r = keepalive.post(
                    "/v1/query_ids/steps/all/x/10",
                    content=body,
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                )
                assert_json_error(r, 400, "start_ts")
                assert keepalive.get("/health/ping").status_code == 200
    finally:
        own.stop(signal.SIGKILL)


def test_batch_count_refuses_the_narrative_names(client):
    # Review finding: only POST /analytics writes narrative.* counters; a PSD count job is
    # refused whole, like a native /api/counters write.
    before = readcount(client, "narrative.clicks", 0, MAX_TS)
    r = client.post("/v1/batch", json=[count_message("ok_thing_nr", 1, 1000),
                                        count_message("narrative.clicks", 5, 1000)])
    assert r.status_code == 400, r.text
    assert "narrative." in r.json()["error"] and r.json()["field"].endswith(".thing")
    assert readcount(client, "narrative.clicks", 0, MAX_TS) == before
    assert readcount(client, "ok_thing_nr", 0, MAX_TS) == 0
