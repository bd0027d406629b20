"""End-to-end tests of the RankDB-compatible routes (web/compat/rankdb/routes.py) against a real server.

The reference is ../shared/compat/rankdb.md sections 1, 2 and 8: payload and view shapes, goa's
error body, ordering (score desc, tie-breaker desc, updated asc, id asc), ranks from both ends,
range and percentile arithmetic, neighbours (the documented contract, not the reference's
``above`` quirk), ``/around``, cross-list selection and per-list errors, and msgpack bodies.

Every test uses its own list ids (and sets/metadata for the xlist tests): the module's server
is shared. Only ``test_ordering_updated_at_breaks_ties_before_id`` sleeps (once, 1.05 s), because
``updated_at`` has one-second resolution.
"""

from __future__ import annotations

import itertools
import re
import time

import httpx
import msgpack
import pytest
from conftest import ServerProcess

U64 = 2**64 - 1
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
GOA_KEYS = {"id", "code", "status", "detail"}

_ids = itertools.count(1)


def new_list_id(name: str) -> str:
    """A list id no other test in this module uses."""
    return f"rk{next(_ids):03d}-{name}"


def assert_goa(r: httpx.Response, status: int, code: str | None = None,
               field: str | None = None) -> dict:
    """A goa v1 error body with this status (and code / meta.field when given)."""
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert GOA_KEYS <= set(body), body
    assert body["status"] == status
    assert isinstance(body["id"], str) and body["id"]
    assert isinstance(body["detail"], str) and body["detail"]
    if code is not None:
        assert body["code"] == code, body
    if field is not None:
        assert body.get("meta", {}).get("field") == field, body
    return body


def ok(r: httpx.Response, status: int = 200) -> dict | list:
    assert r.status_code == status, (r.status_code, r.text)
    return r.json()


def create(client: httpx.Client, list_id: str, elements: list | None = None, **options) -> dict:
    body = {"id": list_id, "set": options.pop("set", "test-set"), **options}
    if elements is not None:
        body["populate"] = elements
    return ok(client.post("/lists", json=body))


def scores(n: int, start_id: int = 1) -> list[dict]:
    """``n`` elements with distinct scores; id ``start_id + i`` has score ``1000 - i`` (so the
    list order is id order)."""
    return [{"id": start_id + i, "score": 1000 - i} for i in range(n)]


def element(client: httpx.Client, list_id: str, eid: int, **params) -> dict:
    return ok(client.get(f"/lists/{list_id}/elements/{eid}", params=params))


def top_down_ids(client: httpx.Client, list_id: str) -> list[int]:
    return [e["id"] for e in ok(client.get(f"/lists/{list_id}/range", params={"from_top": 0,
                                                                                "limit": 1000}))]


@pytest.fixture(autouse=True)
def _server_survives(server: ServerProcess):
    """Fail the test that killed the shared server, not every test after it."""
    yield
    assert server.process.poll() is None, f"the server process died:\n{server.log()[-3000:]}"


@pytest.fixture(scope="module")
def client(server: ServerProcess):
    """One keep-alive client for the module (errors to requests with bodies close the
    connection; httpx reconnects)."""
    with server.client() as c:
        yield c


############################################################################################
# Ping and health


def test_root_answers_running(client):
    assert ok(client.get("/")) == {"running": True}


def test_health_has_rankdb_sections(client):
    body = ok(client.get("/health"))
    assert set(body) == {"memory", "element_cache", "lazy_saver"}
    assert body["memory"]["max_rss_bytes"] > 0
    assert isinstance(body["memory"]["gc_collections"], list)
    assert set(body["element_cache"]) >= {"current_entries", "max_entries", "cache_type"}
    assert body["lazy_saver"]["commands"] >= 0


############################################################################################
# Lists


def test_create_list_answers_full_view_with_top_and_bottom(client):
    list_id = new_list_id("create")
    body = create(client, list_id, [*scores(3), {"id": 9, "score": 5, "payload": {"a": [1]}}],
                  metadata={"game": "chess"}, split_size=100, merge_size=20, load_index=True)
    assert {k: body[k] for k in ("id", "set", "metadata", "split_size", "merge_size",
                                 "load_index", "elements")} == {
        "id": list_id, "set": "test-set", "metadata": {"game": "chess"}, "split_size": 100,
        "merge_size": 20, "load_index": True, "elements": 4,
    }
    assert body["segments"] >= 1 and body["avg_segment_elements"] > 0
    assert {"cache_hits", "cache_misses", "cache_percent"} <= set(body)
    top, bottom = body["top_element"], body["bottom_element"]
    assert (top["id"], top["from_top"], top["from_bottom"]) == (1, 0, 3)
    assert (bottom["id"], bottom["from_top"], bottom["from_bottom"]) == (9, 3, 0)
    assert bottom["payload"] == {"a": [1]} and top["payload"] is None
    assert bottom["list_id"] == list_id and bottom["tie_breaker"] == 0
    assert RFC3339.match(bottom["updated_at"]), bottom["updated_at"]


def test_create_list_defaults_and_empty_list_has_no_top_bottom(client):
    list_id = new_list_id("defaults")
    body = create(client, list_id)
    assert (body["metadata"], body["split_size"], body["merge_size"], body["load_index"]) == (
        {}, 2000, 500, False)
    assert body["elements"] == 0
    assert "top_element" not in body and "bottom_element" not in body


def test_create_list_populate_deduplicates_ids(client):
    list_id = new_list_id("dedupe")
    body = create(client, list_id, [{"id": 1, "score": 5}, {"id": 1, "score": 7},
                                    {"id": 2, "score": 6}])
    assert body["elements"] == 2


def test_create_existing_list_conflicts_unless_replace(client):
    list_id = new_list_id("conflict")
    create(client, list_id, scores(3))
    assert_goa(client.post("/lists", json={"id": list_id, "set": "other"}), 409, "conflict")
    body = ok(client.post("/lists", params={"replace": "true"},
                          json={"id": list_id, "set": "other", "populate": scores(1, 50)}))
    assert (body["set"], body["elements"], body["top_element"]["id"]) == ("other", 1, 50)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"set": "s1"}, "id"),
        ({"id": "x", "set": "s1"}, "id"),
        ({"id": "bad id!", "set": "s1"}, "id"),
        ({"id": "ok-id"}, "set"),
        ({"id": "ok-id", "set": "s"}, "set"),
        ({"id": "ok-id", "set": "s1", "split_size": 9}, "split_size"),
        ({"id": "ok-id", "set": "s1", "merge_size": 100_001}, "merge_size"),
        ({"id": "ok-id", "set": "s1", "merge_size": 600, "split_size": 600}, "merge_size"),
        ({"id": "ok-id", "set": "s1", "metadata": {"a": 1}}, "metadata"),
        ({"id": "ok-id", "set": "s1", "load_index": "yes"}, "load_index"),
        ({"id": "ok-id", "set": "s1", "populate": [{"id": 1}]}, "populate[0].score"),
        ({"id": "ok-id", "set": "s1", "populate": [{"id": -1, "score": 1}]}, "populate[0].id"),
    ],
)
def test_create_list_rejects_bad_options(client, body, field):
    assert_goa(client.post("/lists", json=body), 400, "bad_request", field)


def test_create_list_rejects_bad_bodies_and_replace_flag(client):
    assert_goa(client.post("/lists", content=b"{not json"), 400, "bad_request", "body")
    assert_goa(client.post("/lists", json=[1, 2]), 400, "bad_request", "body")
    assert_goa(client.post("/lists", params={"replace": "maybe"}, json={"id": "ok", "set": "s1"}),
               400, "invalid_request", "replace")


def test_failed_replace_keeps_the_old_list(client):
    list_id = new_list_id("keep")
    create(client, list_id, scores(5))
    r = client.post("/lists", params={"replace": "true"},
                    json={"id": list_id, "set": "s1", "merge_size": 10, "split_size": 10})
    assert_goa(r, 400, "bad_request", "merge_size")
    assert ok(client.get(f"/lists/{list_id}"))["elements"] == 5


def test_get_list_top_bottom_only_when_asked(client):
    list_id = new_list_id("get")
    create(client, list_id, scores(4))
    plain = ok(client.get(f"/lists/{list_id}"))
    assert plain["elements"] == 4 and "top_element" not in plain
    full = ok(client.get(f"/lists/{list_id}", params={"top_bottom": "1"}))
    assert (full["top_element"]["id"], full["bottom_element"]["id"]) == (1, 4)
    assert_goa(client.get(f"/lists/{new_list_id('missing')}"), 404, "not_found")
    assert_goa(client.get(f"/lists/{list_id}", params={"top_bottom": "yes"}), 400,
               "invalid_request", "top_bottom")


@pytest.mark.parametrize("bad", ["a", "x" * 101, "bad$id", "sp%20ace"])
def test_list_id_path_validation(client, bad):
    assert_goa(client.get(f"/lists/{bad}"), 400, "invalid_request", "list_id")
    assert_goa(client.delete(f"/lists/{bad}"), 400, "invalid_request", "list_id")


def test_list_id_accepts_full_alphabet_and_100_chars(client):
    list_id = "aZ0-_." + "q" * 94
    create(client, list_id)
    assert ok(client.get(f"/lists/{list_id}"))["id"] == list_id
    assert client.delete(f"/lists/{list_id}").status_code == 204


def test_get_lists_pages_by_id(client):
    prefix = new_list_id("page")
    ids = [f"{prefix}-{i}" for i in range(5)]
    for list_id in ids:
        create(client, list_id, metadata={"page": prefix})
    everything = ok(client.get("/lists", params={"limit": 1000}))
    all_ids = [entry["id"] for entry in everything["lists"]]
    assert all_ids == sorted(all_ids)
    assert (everything["lists_before"], everything["lists_after"]) == (0, 0)
    first = all_ids.index(ids[0])

    page = ok(client.get("/lists", params={"after_id": ids[0], "limit": 2}))
    assert [entry["id"] for entry in page["lists"]] == ids[1:3]
    assert page["lists_before"] == first + 1
    assert page["lists_after"] == len(all_ids) - first - 3
    assert page["lists"][0] == {"id": ids[1], "set": "test-set", "metadata": {"page": prefix},
                                "split_size": 2000, "merge_size": 500, "load_index": False}

    page = ok(client.get("/lists", params={"before_id": ids[4], "limit": 2}))
    assert [entry["id"] for entry in page["lists"]] == ids[2:4]
    assert page["lists_before"] == first + 2
    assert page["lists_after"] == len(all_ids) - first - 4

    default = ok(client.get("/lists"))
    assert len(default["lists"]) == min(25, len(all_ids))
    past_end = ok(client.get("/lists", params={"after_id": "~~~~"}))
    assert (past_end["lists"], past_end["lists_before"], past_end["lists_after"]) == (
        [], len(all_ids), 0)


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "ten"])
def test_get_lists_limit_validation(client, limit):
    assert_goa(client.get("/lists", params={"limit": limit}), 400, "invalid_request", "limit")


def test_delete_list_answers_204_always(client):
    list_id = new_list_id("delete")
    create(client, list_id, scores(2))
    r = client.delete(f"/lists/{list_id}")
    assert (r.status_code, r.content) == (204, b"")
    assert_goa(client.get(f"/lists/{list_id}"), 404, "not_found")
    assert client.delete(f"/lists/{list_id}").status_code == 204
    assert client.delete(f"/lists/{new_list_id('never')}").status_code == 204
    assert list_id not in [e["id"] for e in ok(client.get("/lists", params={"limit": 1000}))["lists"]]
    create(client, list_id)  # the id is free again


def test_clone_copies_and_is_independent(client):
    source, target = new_list_id("clone-src"), new_list_id("clone-dst")
    create(client, source, scores(10))
    body = ok(client.put(f"/lists/{source}/clone",
                         json={"id": target, "set": "clones", "metadata": {"from": source}}))
    assert (body["id"], body["set"], body["metadata"], body["elements"]) == (
        target, "clones", {"from": source}, 10)
    assert (body["top_element"]["id"], body["bottom_element"]["id"]) == (1, 10)
    assert body["top_element"]["list_id"] == target
    ok(client.put(f"/lists/{target}/elements/1", json={"id": 1, "score": 0}))
    assert element(client, source, 1)["from_top"] == 0
    assert element(client, target, 1)["from_top"] == 9


def test_clone_errors(client):
    source, other = new_list_id("clone-e1"), new_list_id("clone-e2")
    create(client, source, scores(2))
    create(client, other)
    assert_goa(client.put(f"/lists/{new_list_id('none')}/clone",
                          json={"id": new_list_id("x"), "set": "s1"}), 404, "not_found")
    assert_goa(client.put(f"/lists/{source}/clone", json={"id": other, "set": "s1"}),
               409, "conflict")
    assert_goa(client.put(f"/lists/{source}/clone", json={"id": source, "set": "s1"}),
               409, "conflict")
    assert_goa(client.put(f"/lists/{source}/clone",
                          json={"id": new_list_id("pop"), "set": "s1", "populate": []}),
               400, "bad_request", "populate")
    assert_goa(client.put(f"/lists/{source}/clone", json={"id": new_list_id("noset")}),
               400, "bad_request", "set")


def test_reindex_repair_verify(client):
    list_id = new_list_id("maint")
    create(client, list_id, scores(50), metadata={"m": "1"})
    body = ok(client.put(f"/lists/{list_id}/reindex"))
    assert (body["elements"], body["top_element"]["id"], body["bottom_element"]["id"]) == (
        50, 1, 50)
    default = {"id": list_id, "set": "test-set", "metadata": {"m": "1"}, "split_size": 2000,
               "merge_size": 500, "load_index": False}
    assert ok(client.put(f"/lists/{list_id}/repair")) == {"list": default}
    assert ok(client.put(f"/lists/{list_id}/repair", params={"clear": "true"})) == {"list": default}
    assert ok(client.put(f"/lists/{list_id}/verify")) == {"list": default}
    assert ok(client.put(f"/lists/{list_id}/verify",
                         params={"repair": "true", "clear": "true"})) == {"list": default}
    assert top_down_ids(client, list_id) == list(range(1, 51))
    missing = new_list_id("maint-missing")
    for op in ("reindex", "repair", "verify"):
        assert_goa(client.put(f"/lists/{missing}/{op}"), 404, "not_found")
    assert_goa(client.put(f"/lists/{list_id}/verify", params={"repair": "x"}), 400,
               "invalid_request", "repair")
    assert_goa(client.put(f"/lists/{list_id}/repair", params={"clear": "2"}), 400,
               "invalid_request", "clear")


############################################################################################
# Ordering and ranks


def test_ordering_score_then_tie_breaker_then_id(client):
    list_id = new_list_id("order")
    create(client, list_id, [
        {"id": 5, "score": 10},
        {"id": 3, "score": 10},
        {"id": 4, "score": 10, "tie_breaker": 2},
        {"id": 9, "score": 11},
        {"id": 1, "score": 9, "tie_breaker": 100},
        {"id": 2, "score": 10, "tie_breaker": 1},
    ])
    assert top_down_ids(client, list_id) == [9, 4, 2, 3, 5, 1]


def test_ordering_updated_at_breaks_ties_before_id(client):
    list_id = new_list_id("updated")
    create(client, list_id)
    first = ok(client.put(f"/lists/{list_id}/elements/20", json={"id": 20, "score": 10}))
    time.sleep(1.05)  # updated_at has one-second resolution
    later = ok(client.put(f"/lists/{list_id}/elements/10", json={"id": 10, "score": 10}))
    assert first["updated_at"] < later["updated_at"]
    # Same score and tie-breaker: the element that got there earlier ranks higher, despite its id.
    assert top_down_ids(client, list_id) == [20, 10]
    # Re-putting it (even with the same score) moves it below its equal peer.
    ok(client.put(f"/lists/{list_id}/elements/20", json={"id": 20, "score": 10}))
    assert top_down_ids(client, list_id) == [10, 20]


def test_ranks_from_both_ends_sum_to_n_minus_1(client):
    list_id = new_list_id("ranks")
    n = 37
    create(client, list_id, [{"id": i, "score": (i * 7919) % 13} for i in range(n)])
    elements = ok(client.get(f"/lists/{list_id}/range", params={"from_top": 0, "limit": 1000}))
    assert len(elements) == n
    assert [e["from_top"] for e in elements] == list(range(n))
    assert all(e["from_top"] + e["from_bottom"] == n - 1 for e in elements)
    keys = [(-e["score"], -e["tie_breaker"], e["updated_at"], e["id"]) for e in elements]
    assert keys == sorted(keys)
    for e in elements[::9]:
        single = element(client, list_id, e["id"])
        assert (single["from_top"], single["from_bottom"]) == (e["from_top"], e["from_bottom"])


############################################################################################
# Range and percentile


def test_range_from_top(client):
    list_id = new_list_id("range-top")
    create(client, list_id, scores(100))
    page = ok(client.get(f"/lists/{list_id}/range", params={"from_top": 10, "limit": 3}))
    assert [(e["id"], e["from_top"], e["from_bottom"]) for e in page] == [
        (11, 10, 89), (12, 11, 88), (13, 12, 87)]
    assert set(page[0]) == {"id", "from_top", "from_bottom", "score", "payload", "list_id",
                            "tie_breaker", "updated_at"}
    assert len(ok(client.get(f"/lists/{list_id}/range", params={"from_top": 0}))) == 25
    tail = ok(client.get(f"/lists/{list_id}/range", params={"from_top": 98, "limit": 10}))
    assert [e["id"] for e in tail] == [99, 100]
    body = assert_goa(client.get(f"/lists/{list_id}/range", params={"from_top": 100}), 404,
                      "not_found")
    assert "offset out of list bounds" in body["detail"]


def test_range_from_bottom_walks_downwards(client):
    list_id = new_list_id("range-bottom")
    create(client, list_id, scores(100))
    page = ok(client.get(f"/lists/{list_id}/range", params={"from_bottom": 49, "limit": 5}))
    assert len(page) == 5
    assert (page[0]["from_top"], page[0]["from_bottom"]) == (50, 49)
    assert [e["from_top"] for e in page] == [50, 51, 52, 53, 54]
    assert [e["id"] for e in ok(client.get(f"/lists/{list_id}/range",
                                           params={"from_bottom": 0}))] == [100]
    assert [e["from_bottom"] for e in ok(client.get(
        f"/lists/{list_id}/range", params={"from_bottom": 2, "limit": 5}))] == [2, 1, 0]
    assert_goa(client.get(f"/lists/{list_id}/range", params={"from_bottom": 100}), 404,
               "not_found")


def test_range_errors(client):
    list_id = new_list_id("range-err")
    create(client, list_id)
    url = f"/lists/{list_id}/range"
    assert_goa(client.get(url, params={"from_top": 0}), 404, "not_found")  # empty list
    assert_goa(client.get(url, params={"from_bottom": 0}), 404, "not_found")
    assert_goa(client.get(url), 400, "bad_request")
    assert_goa(client.get(url, params={"from_top": 0, "from_bottom": 0}), 400, "bad_request")
    assert_goa(client.get(url, params={"from_top": -1}), 400, "invalid_request", "from_top")
    assert_goa(client.get(url, params={"from_bottom": "x"}), 400, "invalid_request", "from_bottom")
    for limit in ("0", "1001", "x"):
        assert_goa(client.get(url, params={"from_top": 0, "limit": limit}), 400,
                   "invalid_request", "limit")
    assert_goa(client.get(f"/lists/{new_list_id('none')}/range", params={"from_top": 0}), 404,
               "not_found")


@pytest.mark.parametrize(
    ("n", "pct", "from_top"),
    [(100, "50", 50), (14, "50", 7), (14, "0", 0), (14, "100", 13), (100, "99.5", 99),
     (3, "33.4", 1), (1, "100", 0)],
)
def test_percentile_examples(client, n, pct, from_top):
    list_id = new_list_id(f"pct{n}")
    create(client, list_id, scores(n))
    body = ok(client.get(f"/lists/{list_id}/percentile", params={"from_top": pct}))
    assert (body["from_top"], body["from_bottom"]) == (from_top, n - 1 - from_top)
    assert body["id"] == from_top + 1


def test_percentile_default_range_and_neighbours(client):
    list_id = new_list_id("pct-default")
    create(client, list_id, scores(100))
    body = ok(client.get(f"/lists/{list_id}/percentile"))
    assert (body["from_top"], body["from_bottom"]) == (50, 49)
    assert [e["from_top"] for e in body["neighbors"]["above"]] == [45, 46, 47, 48, 49]
    assert [e["from_top"] for e in body["neighbors"]["below"]] == [51, 52, 53, 54, 55]
    top = ok(client.get(f"/lists/{list_id}/percentile", params={"from_top": "0", "range": 2}))
    assert (top["from_top"], "above" in top["neighbors"]) == (0, False)
    assert [e["id"] for e in top["neighbors"]["below"]] == [2, 3]
    bare = ok(client.get(f"/lists/{list_id}/percentile", params={"range": 0}))
    assert bare["neighbors"] == {}


def test_percentile_errors(client):
    list_id = new_list_id("pct-err")
    create(client, list_id)
    url = f"/lists/{list_id}/percentile"
    assert_goa(client.get(url), 404, "not_found")  # the documented contract, not a 500
    assert_goa(client.get(url, params={"from_top": "10"}), 404, "not_found")
    for bad in ("abc", "-1", "100.01", "nan", ""):
        assert_goa(client.get(url, params={"from_top": bad}), 400, "invalid_request", "from_top")
    assert_goa(client.get(url, params={"range": "101"}), 400, "invalid_request", "range")
    assert_goa(client.get(f"/lists/{new_list_id('none')}/percentile"), 404, "not_found")


############################################################################################
# Single elements


def test_create_element_answers_full_view(client):
    list_id = new_list_id("post-el")
    create(client, list_id, scores(3))
    body = ok(client.post(f"/lists/{list_id}/elements",
                          json={"id": 42, "score": 999, "tie_breaker": 3, "payload": {"n": "x"}}))
    assert {k: body[k] for k in ("id", "score", "tie_breaker", "payload", "list_id", "from_top",
                                 "from_bottom")} == {
        "id": 42, "score": 999, "tie_breaker": 3, "payload": {"n": "x"}, "list_id": list_id,
        "from_top": 1, "from_bottom": 2}
    assert RFC3339.match(body["updated_at"])
    assert "previous_rank" not in body and "local_from_top" not in body
    assert [e["id"] for e in body["neighbors"]["above"]] == [1]
    assert [e["id"] for e in body["neighbors"]["below"]] == [2, 3]
    body = ok(client.post(f"/lists/{list_id}/elements", params={"range": 0},
                          json={"id": 43, "score": 1}))
    assert body["neighbors"] == {}


def test_create_element_errors(client):
    list_id = new_list_id("post-el-err")
    create(client, list_id, scores(3))
    url = f"/lists/{list_id}/elements"
    assert_goa(client.post(url, json={"id": 2, "score": 1}), 409, "conflict")
    assert element(client, list_id, 2)["score"] == 999  # unchanged
    assert_goa(client.post(f"/lists/{new_list_id('none')}/elements", json={"id": 1, "score": 1}),
               404, "not_found")
    assert_goa(client.post(url, json={"score": 1}), 400, "bad_request", "body.id")
    assert_goa(client.post(url, json={"id": 7, "score": U64 + 1}), 400, "bad_request", "body.score")
    assert_goa(client.post(url, json={"id": 7, "score": 1, "tie_breaker": 2**32}), 400,
               "bad_request", "body.tie_breaker")
    assert_goa(client.post(url, json={"id": 7, "score": 1, "payload": [1]}), 400, "bad_request",
               "body.payload")
    assert_goa(client.post(url, json=[{"id": 7, "score": 1}]), 400, "bad_request", "body")
    assert_goa(client.post(url, params={"range": "-1"}, json={"id": 7, "score": 1}), 400,
               "invalid_request", "range")
    assert_goa(client.post(url, content=b""), 400, "bad_request", "body")


def test_get_element_neighbours_at_edges_and_above_order(client):
    list_id = new_list_id("neigh")
    create(client, list_id, scores(10))
    middle = element(client, list_id, 5, range=3)
    above, below = middle["neighbors"]["above"], middle["neighbors"]["below"]
    # Documented contract: top to bottom, ending with the element just above, true ranks.
    assert [(e["id"], e["from_top"], e["from_bottom"]) for e in above] == [
        (2, 1, 8), (3, 2, 7), (4, 3, 6)]
    assert [(e["id"], e["from_top"], e["from_bottom"]) for e in below] == [
        (6, 5, 4), (7, 6, 3), (8, 7, 2)]
    assert all(e["list_id"] == list_id and RFC3339.match(e["updated_at"]) for e in above + below)
    assert "neighbors" not in above[0]
    top = element(client, list_id, 1)
    assert "above" not in top["neighbors"] and len(top["neighbors"]["below"]) == 5
    bottom = element(client, list_id, 10, range=100)
    assert "below" not in bottom["neighbors"] and len(bottom["neighbors"]["above"]) == 9
    assert element(client, list_id, 5, range=0)["neighbors"] == {}
    near_top = element(client, list_id, 2, range=2)
    assert [e["id"] for e in near_top["neighbors"]["above"]] == [1]


def test_get_element_errors(client):
    list_id = new_list_id("get-el-err")
    create(client, list_id, scores(2))
    assert_goa(client.get(f"/lists/{list_id}/elements/77"), 404, "not_found")
    assert_goa(client.get(f"/lists/{new_list_id('none')}/elements/1"), 404, "not_found")
    for bad in ("junk-id", "-1", "1.5", "1" * 21, str(U64 + 1)):
        assert_goa(client.get(f"/lists/{list_id}/elements/{bad}"), 400, "invalid_request",
                   "element_id")
    for bad in ("-1", "101", "five"):
        assert_goa(client.get(f"/lists/{list_id}/elements/1", params={"range": bad}), 400,
                   "invalid_request", "range")


def test_extreme_ids_and_scores(client):
    list_id = new_list_id("extreme")
    create(client, list_id, [{"id": U64, "score": U64, "tie_breaker": 2**32 - 1},
                             {"id": 0, "score": 0}])
    top = element(client, list_id, U64)
    assert (top["id"], top["score"], top["tie_breaker"], top["from_top"]) == (
        U64, U64, 2**32 - 1, 0)
    assert element(client, list_id, 0)["from_bottom"] == 0
    assert ok(client.get(f"/lists/{list_id}/elements/{'0' * 20}"))["id"] == 0  # 20 digits


def test_put_element_upserts_with_previous_rank(client):
    list_id = new_list_id("put-el")
    create(client, list_id, [{"id": 1, "score": 30}, {"id": 2, "score": 20, "payload": {"p": 1}}])
    created = ok(client.put(f"/lists/{list_id}/elements/3", json={"id": 3, "score": 25}))
    assert (created["from_top"], "previous_rank" not in created) == (1, True)
    moved = ok(client.put(f"/lists/{list_id}/elements/2", json={"id": 2, "score": 40}))
    assert (moved["from_top"], moved["from_bottom"], moved["score"]) == (0, 2, 40)
    assert moved["payload"] is None  # the whole element is replaced, payload included
    previous = moved["previous_rank"]
    assert (previous["id"], previous["score"], previous["from_top"], previous["from_bottom"]) == (
        2, 20, 2, 0)
    assert previous["payload"] == {"p": 1} and previous["list_id"] == list_id
    assert [e["id"] for e in moved["neighbors"]["below"]] == [1, 3]
    assert "above" not in moved["neighbors"]


def test_put_element_errors(client):
    list_id = new_list_id("put-el-err")
    create(client, list_id, scores(2))
    body = assert_goa(client.put(f"/lists/{list_id}/elements/1", json={"id": 2, "score": 5}),
                      400, "bad_request", "id")
    assert "id mismatch" in body["detail"]
    assert element(client, list_id, 2)["score"] == 999
    assert_goa(client.put(f"/lists/{new_list_id('none')}/elements/1", json={"id": 1, "score": 1}),
               404, "not_found")
    assert_goa(client.put(f"/lists/{list_id}/elements/x", json={"id": 1, "score": 1}), 400,
               "invalid_request", "element_id")


def test_delete_element(client):
    list_id = new_list_id("del-el")
    create(client, list_id, scores(3))
    r = client.delete(f"/lists/{list_id}/elements/2")
    assert (r.status_code, r.content) == (204, b"")
    assert top_down_ids(client, list_id) == [1, 3]
    assert client.delete(f"/lists/{list_id}/elements/2").status_code == 204  # absent: still 204
    assert_goa(client.delete(f"/lists/{new_list_id('none')}/elements/1"), 404, "not_found")
    assert_goa(client.delete(f"/lists/{list_id}/elements/abc"), 400, "invalid_request",
               "element_id")


############################################################################################
# Many elements of one list


def test_bulk_put_results_sorted_by_rank(client):
    list_id = new_list_id("bulk")
    create(client, list_id, scores(5))
    url = f"/lists/{list_id}/elements"
    assert ok(client.put(url, json=[{"id": 100, "score": 1}])) == {"found": []}
    body = ok(client.put(url, params={"results": "true"}, json=[
        {"id": 200, "score": 995}, {"id": 3, "score": 2000}, {"id": 201, "score": 0},
        {"id": 200, "score": 996},  # duplicate id: de-duplicated, the last one wins
    ]))
    found = body["found"]
    assert set(body) == {"found"}
    assert [(e["id"], e["from_top"]) for e in found] == [(3, 0), (200, 5), (201, 7)]
    assert found[1]["score"] == 996 and found[1]["list_id"] == list_id
    assert "neighbors" not in found[0]
    assert ok(client.get(f"/lists/{list_id}"))["elements"] == 8
    one = ok(client.put(url, params={"results": "1"}, json=[{"id": 5, "score": 5000}]))
    assert [(e["id"], e["from_top"]) for e in one["found"]] == [(5, 0)]


def test_bulk_put_with_one_bad_element_changes_nothing(client):
    list_id = new_list_id("bulk-bad")
    create(client, list_id, scores(5))
    before = ok(client.get(f"/lists/{list_id}/range", params={"from_top": 0}))
    r = client.put(f"/lists/{list_id}/elements", json=[
        {"id": 1, "score": 1}, {"id": 50, "score": 7}, {"id": 51, "score": -3}, {"id": 52, "score": 1},
    ])
    assert_goa(r, 400, "bad_request", "body[2].score")
    assert ok(client.get(f"/lists/{list_id}/range", params={"from_top": 0})) == before


def test_bulk_put_errors(client):
    list_id = new_list_id("bulk-err")
    create(client, list_id)
    assert_goa(client.put(f"/lists/{new_list_id('none')}/elements", json=[{"id": 1, "score": 1}]),
               404, "not_found")
    assert_goa(client.put(f"/lists/{list_id}/elements", json={"id": 1, "score": 1}), 400,
               "bad_request", "body")
    assert_goa(client.put(f"/lists/{list_id}/elements", params={"results": "nope"}, json=[]), 400,
               "invalid_request", "results")
    assert ok(client.put(f"/lists/{list_id}/elements", params={"results": "true"}, json=[])) == {
        "found": []}


def test_bulk_delete(client):
    list_id = new_list_id("bulk-del")
    create(client, list_id, scores(6))
    r = client.delete(f"/lists/{list_id}/elements",
                      params=[("element_ids", "2"), ("element_ids", "4"), ("element_ids", "99")])
    assert (r.status_code, r.content) == (204, b"")
    assert top_down_ids(client, list_id) == [1, 3, 5, 6]
    url = f"/lists/{list_id}/elements"
    assert_goa(client.delete(url), 400, "invalid_request", "element_ids")
    assert_goa(client.delete(url, params={"element_ids": "x"}), 400, "invalid_request",
               "element_ids")
    assert_goa(client.delete(url, params={"element_ids": str(U64 + 1)}), 400, "invalid_request",
               "element_ids")
    assert top_down_ids(client, list_id) == [1, 3, 5, 6]
    assert_goa(client.delete(f"/lists/{new_list_id('none')}/elements",
                             params={"element_ids": "1"}), 404, "not_found")


def test_find_elements(client):
    list_id = new_list_id("find")
    create(client, list_id, scores(10))
    url = f"/lists/{list_id}/elements/find"
    body = ok(client.post(url, json={"element_ids": [9, 77, 2, 9, 5, 12]}))
    assert [(e["id"], e["from_top"]) for e in body["found"]] == [(2, 1), (5, 4), (9, 8)]
    assert body["not_found"] == [12, 77]
    assert set(body["found"][0]) == {"id", "from_top", "from_bottom", "score", "payload",
                                     "list_id", "tie_breaker", "updated_at"}
    full = element(client, list_id, 1)
    del full["neighbors"]
    assert ok(client.post(url, json={"element_ids": [1]})) == {"found": [full]}
    assert ok(client.post(url, json={"element_ids": []})) == {"found": []}
    assert_goa(client.post(url, json={}), 400, "bad_request", "element_ids")
    assert_goa(client.post(url, json={"element_ids": ["a"]}), 400, "bad_request", "element_ids[0]")
    assert_goa(client.post(f"/lists/{new_list_id('none')}/elements/find",
                           json={"element_ids": [1]}), 404, "not_found")


def test_around_ranks_within_subset(client):
    list_id = new_list_id("around")
    create(client, list_id, scores(20))
    url = f"/lists/{list_id}/elements/10/around"
    body = ok(client.post(url, params={"range": 2},
                          json={"element_ids": [1, 4, 8, 15, 16, 19, 500, 10]}))
    assert (body["id"], body["from_top"], body["from_bottom"]) == (10, 9, 10)
    assert (body["local_from_top"], body["local_from_bottom"]) == (3, 3)
    assert [(e["id"], e["from_top"], e["from_bottom"]) for e in body["neighbors"]["above"]] == [
        (4, 3, 16), (8, 7, 12)]
    assert [(e["id"], e["from_top"]) for e in body["neighbors"]["below"]] == [(15, 14), (16, 15)]
    alone = ok(client.post(url, json={"element_ids": []}))
    assert (alone["local_from_top"], alone["local_from_bottom"], alone["neighbors"]) == (0, 0, {})
    first = ok(client.post(f"/lists/{list_id}/elements/1/around", json={"element_ids": [2, 3]}))
    assert (first["local_from_top"], first["local_from_bottom"]) == (0, 2)
    assert "above" not in first["neighbors"]
    assert_goa(client.post(f"/lists/{list_id}/elements/99/around", json={"element_ids": [1]}),
               404, "not_found")
    assert_goa(client.post(f"/lists/{new_list_id('none')}/elements/1/around",
                           json={"element_ids": [1]}), 404, "not_found")
    assert_goa(client.post(url, json={"ids": [1]}), 400, "bad_request", "element_ids")


############################################################################################
# Cross-list


def test_xlist_put_by_ids_metadata_and_sets(client):
    tag = new_list_id("xl-put")
    by_id, by_meta, by_set, other = (f"{tag}-{n}" for n in ("id", "meta", "set", "other"))
    create(client, by_id, set=f"{tag}-s1")
    create(client, by_meta, set=f"{tag}-s1", metadata={"tag": tag, "x": "1"})
    create(client, by_set, set=f"{tag}-s2")
    create(client, other, set=f"{tag}-s3", metadata={"tag": tag, "x": "2"})
    missing = f"{tag}-missing"
    body = ok(client.put("/xlist/elements", params={"results": "true"}, json={
        "lists": [by_id, f" {missing} ", "", by_id],
        "match_metadata": {"tag": tag, "x": "1"},
        "all_in_sets": [f"{tag}-s2"],  # honoured on its own (not the reference's quirk)
        "payload": [{"id": 1, "score": 10}, {"id": 2, "score": 20}],
    }))
    assert body["errors"] == {missing: "not found"}
    assert sorted(body["success"]) == sorted([by_id, by_meta, by_set])
    for results in body["success"].values():
        assert [(e["id"], e["from_top"], e["from_bottom"]) for e in results["results"]] == [
            (2, 0, 1), (1, 1, 0)]
        assert set(results["results"][0]) == {"id", "from_top", "from_bottom", "score", "payload"}
    assert ok(client.get(f"/lists/{other}"))["elements"] == 0
    quiet = ok(client.put("/xlist/elements", json={"lists": [by_id],
                                                   "payload": [{"id": 3, "score": 1}]}))
    assert quiet == {"success": {by_id: {}}}
    only_errors = ok(client.put("/xlist/elements", params={"errors_only": "true"}, json={
        "lists": [by_id, missing], "payload": [{"id": 3, "score": 1}]}))
    assert only_errors == {"errors": {missing: "not found"}}


def test_xlist_create_conflicts_per_list(client):
    tag = new_list_id("xl-post")
    fresh, taken = f"{tag}-fresh", f"{tag}-taken"
    create(client, fresh, set=f"{tag}-set")
    create(client, taken, [{"id": 2, "score": 1}], set=f"{tag}-set")
    body = ok(client.post("/xlist/elements", params={"results": "true"}, json={
        "all_in_sets": [f"{tag}-set"], "payload": [{"id": 1, "score": 5}, {"id": 2, "score": 6}],
    }))
    assert list(body["success"]) == [fresh]
    assert [e["id"] for e in body["success"][fresh]["results"]] == [2, 1]
    assert "already exist" in body["errors"][taken]
    assert element(client, taken, 2)["score"] == 1  # untouched
    assert_goa(client.get(f"/lists/{taken}/elements/1"), 404, "not_found")
    # A single selected list: its conflict is still a per-list error with status 200.
    single = ok(client.post("/xlist/elements", json={"lists": [taken],
                                                     "payload": [{"id": 2, "score": 9}]}))
    assert list(single) == ["errors"] and "already exist" in single["errors"][taken]


def test_xlist_write_validation(client):
    assert_goa(client.put("/xlist/elements", json={"lists": ["aa"]}), 400, "bad_request",
               "payload")
    assert_goa(client.put("/xlist/elements", json={"lists": "aa", "payload": []}), 400,
               "bad_request", "lists")
    assert_goa(client.put("/xlist/elements", json={"match_metadata": {"a": 1}, "payload": []}),
               400, "bad_request", "match_metadata")
    assert_goa(client.post("/xlist/elements", json={"lists": ["aa"], "payload": [{"id": 1}]}),
               400, "bad_request", "payload[0].score")
    assert ok(client.put("/xlist/elements", json={"payload": [{"id": 1, "score": 1}]})) == {}


def test_xlist_get_and_delete(client):
    tag = new_list_id("xl-get")
    a, b, c = f"{tag}-a", f"{tag}-b", f"{tag}-c"
    create(client, a, [{"id": 7, "score": 3}, {"id": 8, "score": 4}], set=f"{tag}-s",
           metadata={"tag": tag})
    create(client, b, [{"id": 9, "score": 1}], set=f"{tag}-s")
    create(client, c, [{"id": 7, "score": 1}], set=f"{tag}-t")
    missing = f"{tag}-missing"
    body = ok(client.get("/xlist/elements/7", params=[
        ("lists", c), ("lists", missing), ("all_in_sets", f"{tag}-s")]))
    assert body["errors"] == {missing: "not found"}
    assert body["success"][a] == {"results": [{"id": 7, "from_top": 1, "from_bottom": 0,
                                               "score": 3, "payload": None}]}
    assert body["success"][b] == {}  # not in that list
    assert body["success"][c]["results"][0]["from_top"] == 0
    by_meta = ok(client.get("/xlist/elements/7",
                            params={"match_metadata": f'{{"tag": "{tag}"}}'}))
    assert list(by_meta["success"]) == [a]
    assert_goa(client.get("/xlist/elements/7", params={"match_metadata": "{bad"}), 400,
               "invalid_request", "match_metadata")
    assert_goa(client.get("/xlist/elements/7", params={"match_metadata": '{"a": 1}'}), 400,
               "invalid_request", "match_metadata")
    assert_goa(client.get("/xlist/elements/x7", params={"lists": a}), 400, "invalid_request",
               "element_id")

    deleted = ok(client.delete("/xlist/elements/7", params=[
        ("all_in_sets", f"{tag}-s"), ("all_in_sets", f"{tag}-t"), ("lists", missing)]))
    assert deleted == {"success": {a: {}, b: {}, c: {}}, "errors": {missing: "not found"}}
    assert top_down_ids(client, a) == [8]
    assert ok(client.get(f"/lists/{c}"))["elements"] == 0
    quiet = ok(client.delete("/xlist/elements/8", params={"lists": a, "errors_only": "true"}))
    assert quiet == {}
    assert ok(client.get(f"/lists/{a}"))["elements"] == 0


def test_xlist_verify_and_reindex(client):
    tag = new_list_id("xl-maint")
    a, b = f"{tag}-a", f"{tag}-b"
    create(client, a, scores(30), set=f"{tag}-s")
    create(client, b, scores(3), set=f"{tag}-s", metadata={"tag": tag})
    missing = f"{tag}-missing"
    body = ok(client.put("/xlist/verify", params={"repair": "true", "elements": "true"},
                         json={"lists": [a, missing]}))
    assert body == {"success": {a: {}}, "errors": {missing: "not found"}}
    assert ok(client.put("/xlist/verify", json={"all_in_sets": [f"{tag}-s"]})) == {
        "success": {a: {}, b: {}}}
    assert ok(client.put("/xlist/reindex", json={"match_metadata": {"tag": tag}})) == {
        "success": {b: {}}}
    assert ok(client.put("/xlist/reindex", params={"errors_only": "1"},
                         json={"lists": [a]})) == {}
    # No selection at all: every list (the reference's fallback, kept and documented).
    everything = ok(client.put("/xlist/verify", json={}))
    assert {a, b} <= set(everything["success"]) and "errors" not in everything
    assert {a, b} <= set(ok(client.put("/xlist/reindex"))["success"])  # empty body works too
    assert top_down_ids(client, a) == list(range(1, 31))
    assert_goa(client.put("/xlist/verify", params={"repair": "nah"}, json={}), 400,
               "invalid_request", "repair")
    assert_goa(client.put("/xlist/verify", params={"elements": "nah"}, json={}), 400,
               "invalid_request", "elements")
    assert_goa(client.put("/xlist/reindex", params={"errors_only": "yes"}, json={}), 400,
               "invalid_request", "errors_only")
    assert_goa(client.delete("/xlist/elements/1", params={"errors_only": "no"}), 400,
               "invalid_request", "errors_only")
    assert_goa(client.put("/xlist/verify", json=[a]), 400, "bad_request", "body")


############################################################################################
# Content types and errors


def test_msgpack_round_trip(client):
    list_id = new_list_id("msgpack")
    headers = {"Content-Type": "application/msgpack", "Accept": "application/msgpack"}
    r = client.post("/lists", headers=headers, content=msgpack.packb({
        "id": list_id, "set": "mp", "populate": [{"id": U64, "score": 5, "payload": {"k": [1, 2]}},
                                                 {"id": 2, "score": 6}]}))
    assert r.status_code == 200 and r.headers["content-type"] == "application/msgpack"
    body = msgpack.unpackb(r.content)
    assert (body["elements"], body["bottom_element"]["id"]) == (2, U64)
    r = client.put(f"/lists/{list_id}/elements/{U64}", headers=headers,
                   content=msgpack.packb({"id": U64, "score": 9, "payload": {"k": "v"}}))
    body = msgpack.unpackb(r.content)
    assert (body["from_top"], body["payload"], body["previous_rank"]["payload"]) == (
        0, {"k": "v"}, {"k": [1, 2]})
    r = client.get(f"/lists/{list_id}/elements/5", headers={"Accept": "application/msgpack"})
    assert r.status_code == 404 and r.headers["content-type"] == "application/msgpack"
    error = msgpack.unpackb(r.content)
    assert (error["code"], error["status"]) == ("not_found", 404)
    r = client.post(f"/lists/{list_id}/elements/find", headers=headers,
                    content=msgpack.packb({"element_ids": [2, 3]}))
    assert msgpack.unpackb(r.content)["not_found"] == [3]
    r = client.post("/lists", headers=headers, content=b"\xc1")
    assert r.status_code == 400 and msgpack.unpackb(r.content)["code"] == "bad_request"


def test_json_responses_are_json(client):
    r = client.get("/lists", params={"limit": 1})
    assert r.headers["content-type"].startswith("application/json")
    r = client.get("/lists/nope-nope")
    assert r.headers["content-type"].startswith("application/json")
    assert_goa(r, 404, "not_found")


def test_keepalive_survives_success_with_unread_body(server):
    """A body sent to a route that takes none (reindex) must not hang the next request on the
    same keep-alive connection: the response closes the connection instead."""
    list_id = new_list_id("keepalive")
    with server.client() as c:
        create(c, list_id, scores(3))
    body = b'{"pad": "' + b"a" * 1_000_000 + b'"}'
    for _ in range(6):  # the race is lost with p > 1/2 per try without the fix
        with httpx.Client(base_url=server.url, timeout=2) as keepalive:
            r = keepalive.put(f"/lists/{list_id}/reindex", content=body,
                              headers={"Content-Type": "application/json"})
            assert r.status_code == 200
            assert keepalive.get("/").json() == {"running": True}


def entities(client: httpx.Client) -> int:
    return ok(client.get("/health"))["lazy_saver"]["entities"]


def test_delete_of_a_missing_list_leaves_no_state_behind(client):
    before = entities(client)
    for _ in range(3):
        assert client.delete(f"/lists/{new_list_id('ghost')}").status_code == 204
    assert entities(client) == before


def test_writes_to_missing_lists_leave_no_state_behind(client):
    before = entities(client)
    for _ in range(3):
        missing = new_list_id("ghost-write")
        assert_goa(client.post(f"/lists/{missing}/elements", json={"id": 1, "score": 1}), 404)
        assert_goa(client.delete(f"/lists/{missing}/elements/1"), 404)
    assert entities(client) == before
