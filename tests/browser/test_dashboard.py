"""The dashboard at ``/ui`` (web/ui/routes.py, web/ui/) end to end: a real ``pointspace serve``
process, written to over HTTP, and Debian's headless chromium showing the page.

What a person would check by looking, checked here by the DOM and by the pixels: the boards
show the right users and scores, the charts draw their series (a space's occupancy as a line
over its peak-to-lowest band), new writes appear without a reload, and the page asks nothing
of any host but the server.
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
from conftest import ServerProcess
from selenium import webdriver
from selenium.webdriver.common.by import By

from .conftest import WINDOW
from .page import element_image, ingest, rgb, send_crossings, wait_for
from .png import decode_png


def test_dashboard_live_board_and_series_without_reload(
    server: ServerProcess, client: httpx.Client, driver: webdriver.Chrome, tmp_path: Path
):
    now = int(time.time())
    board, metric, counter = "ui-live", "ui-points", "ui-signups"
    r = client.post("/api/leaderboards", json={
        "id": board, "metric": metric, "window": {"t1": now - 3600, "t2": now + 3600}})
    assert r.status_code == 201, r.text
    ingest(client, "/api/events", [
        {"metric": metric, "user": "alice", "value": 70, "ts": now - 20},
        {"metric": metric, "user": "bob", "value": 50, "ts": now - 10},
        {"metric": metric, "user": 7, "value": 30, "ts": now - 5},
    ])
    counts = [{"name": counter, "value": 1 + i % 5, "ts": now - 40 + i} for i in range(40)]
    ingest(client, "/api/counters", counts)
    first_total = sum(c["value"] for c in counts)

    driver.get(f"{server.url}/ui?board={board}&counter={counter}&user=alice&metric={metric}")
    state = wait_for(driver, "the board and both series", lambda s: (
        s["boards"].get(board, {}).get("rows") == [["alice", 70], ["bob", 50], ["7", 30]]
        and [x["total"] for x in s["series"]] == [first_total, 70]
        and all(x["drawn"] for x in s["series"])
    ))
    assert [(x["counter"], x["user"], x["metric"]) for x in state["series"]] == [
        (counter, None, None), (None, "alice", metric)]
    # What a person reads, not only the data attributes.
    board_text = driver.find_element(By.CSS_SELECTOR, f'[data-board="{board}"]').text
    assert all(word in board_text for word in ("alice", "70", "bob", "50", metric)), board_text
    canvas_before = driver.execute_script(
        "return document.querySelector('[data-counter] canvas').toDataURL()")
    changes_before = state["series"][0]["changes"]

    driver.execute_script("window.__noReload = 1")
    ingest(client, "/api/events", [{"metric": metric, "user": "bob", "value": 100,
                                    "ts": int(time.time())}])
    ingest(client, "/api/counters", [{"name": counter, "value": 50, "ts": int(time.time())}])
    state = wait_for(driver, "bob leading with 150 and the counter's new total", lambda s: (
        s["boards"][board]["leader"] == "bob"
        and s["boards"][board]["rows"][:2] == [["bob", 150], ["alice", 70]]
        and s["series"][0]["total"] == first_total + 50
    ))
    assert state["marker"] == 1 and state["navigations"] == 1, "the page reloaded"
    assert state["series"][0]["changes"] > changes_before
    assert driver.execute_script(
        "return document.querySelector('[data-counter] canvas').toDataURL()") != canvas_before
    assert "bob" in driver.find_element(By.CSS_SELECTOR, f'[data-board="{board}"] tbody tr').text

    # The pixels: each chart shows its own line colour, the leader's bar is drawn.
    png = driver.get_screenshot_as_png()
    (tmp_path / "dashboard.png").write_bytes(png)
    screenshot = decode_png(png)
    assert (screenshot.width, screenshot.height) == WINDOW
    assert screenshot.distinct_colours() > 100, "the screenshot is (nearly) blank"
    for css, series in zip(("[data-counter] canvas", "[data-user] canvas"), state["series"],
                           strict=True):
        chart = element_image(driver, screenshot, css)
        line = chart.count_near(rgb(series["color"]))
        assert line >= 150, f"{css}: only {line} pixels of the line colour {series['color']}"
        assert chart.distinct_colours() >= 5, f"{css}: the chart is (nearly) blank"
    other = state["series"][1]["color"]
    counter_chart = element_image(driver, screenshot, "[data-counter] canvas")
    assert counter_chart.count_near(rgb(other), 8) == 0, "the counter chart has the user's colour"
    leader_bar = element_image(driver, screenshot, f'[data-board="{board}"] tbody tr')
    assert leader_bar.count_near((0xFF, 0xC0, 0x78), 6) > 2000, "the leader's bar is not drawn"

    assert_only_this_server(driver, server)


def test_dashboard_space_chart_with_board_counter_and_unique_panels(
    server: ServerProcess, client: httpx.Client, driver: webdriver.Chrome, tmp_path: Path
):
    """One page with every kind of panel; the space's chart follows Density crossings sent
    over HTTP (placement, then the seed's batch route), without a reload."""
    now = int(time.time())
    board, metric, counter, unique, space = (
        "ui-mix", "ui-mix-points", "ui-mix-signups", "ui-mix-visitors", "ui-mix-lobby")
    r = client.post("/api/leaderboards", json={
        "id": board, "metric": metric, "window": {"t1": now - 3600, "t2": now + 3600}})
    assert r.status_code == 201, r.text
    ingest(client, "/api/events", [{"metric": metric, "user": "carol", "value": 12, "ts": now - 5}])
    ingest(client, "/api/counters", [{"name": counter, "value": 4, "ts": now - 50}])
    ingest(client, "/api/uniques", [{"name": unique, "member": m, "ts": now - 30}
                                    for m in ("ann", "ben", "cy", "ann")])
    r = client.put("/api/sensors/ui-mix-dpu/placement", json={
        "installed": now - 3600, "doorway": "ui-mix-door", "spaces": {space: 1}})
    assert r.status_code == 200, r.text
    # One person in before the window; then three in and one out within it: 3 now, 4 at the
    # peak, 1 at the lowest.
    send_crossings(client, "ui-mix-dpu", [
        (now - 400, 1), (now - 95, 1), (now - 94.5, 1), (now - 94, 1), (now - 93, -1)])

    driver.get(f"{server.url}/ui?board={board}&counter={counter}&unique={unique}"
               f"&space={space}&window=300&step=10")
    state = wait_for(driver, "every panel, the space at 3", lambda s: (
        s["boards"].get(board, {}).get("leader") == "carol"
        and [x["total"] for x in s["series"]] == [4, 3]
        and all(x["drawn"] for x in s["series"])
        and s["spaces"].get(space, {}).get("count") == 3
        and s["spaces"][space]["drawn"]
    ))
    assert [(x["counter"], x["name"]) for x in state["series"]] == [(counter, None), (None, unique)]
    lobby = state["spaces"][space]
    assert (lobby["highest"], lobby["lowest"], lobby["error"]) == (4, 1, None)
    assert "3" in lobby["text"] and "1 to 4 in the last 5 min" in lobby["text"], lobby["text"]
    # The form shows the query it was read from.
    assert driver.find_element(By.NAME, "space").get_attribute("value") == space
    css = f'[data-space="{space}"] canvas'
    canvas_before = driver.execute_script(f"return document.querySelector('{css}').toDataURL()")
    changes_before = lobby["changes"]

    driver.execute_script("window.__noReload = 1")
    t = time.time()
    send_crossings(client, "ui-mix-dpu", [(t, 1), (t + 0.1, 1)])
    state = wait_for(driver, "the space at 5", lambda s: s["spaces"][space]["count"] == 5)
    assert state["marker"] == 1 and state["navigations"] == 1, "the page reloaded"
    lobby = state["spaces"][space]
    assert (lobby["highest"], lobby["lowest"]) == (5, 1)
    assert lobby["changes"] > changes_before
    assert driver.execute_script(f"return document.querySelector('{css}').toDataURL()") != canvas_before
    # The other panels kept polling beside it.
    assert state["boards"][board]["leader"] == "carol" and state["series"][0]["total"] == 4

    # The pixels: the count's line in the space's colour, and the peak-to-lowest band (its
    # colour at 20 % over the white panel) where the crossings were.
    png = driver.get_screenshot_as_png()
    (tmp_path / "dashboard-space.png").write_bytes(png)
    chart = element_image(driver, decode_png(png), css)
    colour = rgb(lobby["color"])
    line = chart.count_near(colour)
    assert line >= 150, f"only {line} pixels of the line colour {lobby['color']}"
    band = tuple(round(255 - (255 - c) * 0x33 / 255) for c in colour)
    shaded = chart.count_near(band, 6)  # type: ignore[arg-type]
    assert shaded >= 100, f"only {shaded} pixels of the band colour {band}"
    for other in state["series"]:
        assert chart.count_near(rgb(other["color"]), 8) == 0, "the space chart has another colour"

    assert_only_this_server(driver, server)
    fetched = {urlsplit(url).path for url in driver.execute_script(
        "return performance.getEntriesByType('resource').map((e) => e.name)")}
    assert {"/ui/api/occupancy", "/ui/api/uniques", "/api/spaces"} <= fetched, fetched


def assert_only_this_server(driver: webdriver.Chrome, server: ServerProcess) -> None:
    """Every request the page made went to the server; nothing was blocked; no console errors."""
    resources = driver.execute_script(
        "return performance.getEntriesByType('resource').map((e) => e.name)")
    outside = [url for url in resources if not url.startswith(server.url + "/")]
    assert not outside, f"the page fetched from outside the server: {outside}"
    fetched = {urlsplit(url).path for url in resources}
    assert {"/ui/static/app.js", "/ui/static/vendor/uPlot.iife.min.js",
            "/ui/api/series"} <= fetched, fetched
    assert driver.execute_script("return window.__blocked") == []
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def test_dashboard_form_changes_the_view_without_reload(
    server: ServerProcess, client: httpx.Client, driver: webdriver.Chrome
):
    now = int(time.time())
    for board in ("ui-form-a", "ui-form-b"):
        r = client.post("/api/leaderboards", json={
            "id": board, "metric": board, "window": {"t1": now - 3600, "t2": now + 3600}})
        assert r.status_code == 201, r.text
        ingest(client, "/api/events", [{"metric": board, "user": f"{board}-top", "value": 9,
                                        "ts": now}])
    driver.get(f"{server.url}/ui")
    state = wait_for(driver, "a link to each board", lambda s: s["notice"] is not None
                     and "ui-form-a" in s["notice"] and "ui-form-b" in s["notice"])
    driver.execute_script("window.__noReload = 1")

    # A link from the list of boards.
    driver.find_element(By.LINK_TEXT, "ui-form-a").click()
    wait_for(driver, "board a", lambda s: s["boards"].get("ui-form-a", {}).get("leader")
             == "ui-form-a-top")

    # The form: both boards, window and step.
    field = driver.find_element(By.NAME, "board")
    field.clear()
    field.send_keys("ui-form-a, ui-form-b")
    driver.find_element(By.NAME, "window").clear()
    driver.find_element(By.NAME, "window").send_keys("600")
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    state = wait_for(driver, "both boards", lambda s: sorted(s["boards"]) == [
        "ui-form-a", "ui-form-b"] and all(b["leader"] for b in s["boards"].values()))
    assert parse_qs(urlsplit(driver.current_url).query) == {
        "board": ["ui-form-a", "ui-form-b"], "window": ["600"], "step": ["1"]}

    # Back: the history entry of the link, still without a reload.
    driver.back()
    state = wait_for(driver, "board a alone", lambda s: list(s["boards"]) == ["ui-form-a"])
    assert state["marker"] == 1 and state["navigations"] == 1, "the page reloaded"

    # A board that does not exist shows its error in its panel; the others keep updating.
    driver.get(f"{server.url}/ui?board=ui-form-a&board=ui-no-such-board")
    state = wait_for(driver, "the missing board's error", lambda s: (
        (s["boards"].get("ui-no-such-board") or {}).get("error") or "").startswith("404"))
    assert state["boards"]["ui-form-a"]["leader"] == "ui-form-a-top"
