"""Reading the dashboard page from a test: its state (the data attributes web/ui/app.js
documents), waiting for it to change, and cutting elements out of a screenshot."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from selenium import webdriver

from .png import Image

#: How long the page may take to show a write: it polls every second, so this is generous.
LIVE_TIMEOUT_S = 15

#: Runs before any of the page's scripts on every navigation: keeps every resource timing entry
#: and records what the Content-Security-Policy blocked (a CDN URL would be blocked, not fetched,
#: so the resource list alone would not show it).
PROBE = """
performance.setResourceTimingBufferSize(100000);
window.__blocked = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__blocked.push(e.violatedDirective + " " + e.blockedURI));
"""

#: The page's state as the tests read it: its data attributes (documented in web/ui/app.js).
STATE = """
const boards = {};
for (const p of document.querySelectorAll(".panel.board")) {
  boards[p.dataset.board] = {
    leader: p.dataset.leader || null,
    rows: [...p.querySelectorAll("tbody tr")].map((r) => [r.dataset.user, Number(r.dataset.score)]),
    error: p.querySelector(".error").hidden ? null : p.querySelector(".error").textContent,
  };
}
const series = [...document.querySelectorAll(".panel.series")].map((p) => ({
  counter: p.dataset.counter || null, user: p.dataset.user || null,
  metric: p.dataset.metric || null, name: p.dataset.name || null, color: p.dataset.color,
  total: p.dataset.total === undefined ? null : Number(p.dataset.total),
  changes: Number(p.dataset.changes), drawn: !!p.querySelector("canvas"),
}));
const number = (text) => text === undefined ? null : Number(text);
const spaces = {};
for (const p of document.querySelectorAll(".panel.space")) {
  spaces[p.dataset.space] = {
    color: p.dataset.color, count: number(p.dataset.count), highest: number(p.dataset.highest),
    lowest: number(p.dataset.lowest), changes: Number(p.dataset.changes),
    drawn: !!p.querySelector("canvas"), text: p.querySelector(".total").textContent,
    error: p.querySelector(".error").hidden ? null : p.querySelector(".error").textContent,
  };
}
return {
  polls: Number(document.body.dataset.polls || 0),
  marker: window.__noReload === undefined ? null : window.__noReload,
  navigations: performance.getEntriesByType("navigation").length,
  boards, series, spaces,
  notice: document.getElementById("notice").hidden ? null : document.getElementById("notice").textContent,
};
"""


def page_state(driver: webdriver.Chrome) -> dict[str, Any]:
    return driver.execute_script(STATE)


def wait_for(
    driver: webdriver.Chrome, what: str, check: Callable[[dict[str, Any]], bool],
    timeout: float = LIVE_TIMEOUT_S,
) -> dict[str, Any]:
    """Poll the page's state until ``check`` holds; fail with the last state seen."""
    deadline = time.monotonic() + timeout
    while True:
        state = page_state(driver)
        if check(state):
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"page did not show {what} within {timeout} s; it shows:\n"
                                 f"{json.dumps(state, indent=1)}")
        time.sleep(0.1)


def rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def element_image(driver: webdriver.Chrome, screenshot: Image, css: str) -> Image:
    """The part of a page screenshot covered by the first element matching ``css``."""
    left, top, width, height = driver.execute_script(
        "const r = document.querySelector(arguments[0]).getBoundingClientRect();"
        "return [Math.round(r.left), Math.round(r.top), Math.round(r.width), Math.round(r.height)];",
        css,
    )
    assert width > 10 and height > 10, (css, width, height)
    return screenshot.crop(left, top, width, height)


def ingest(client: httpx.Client, path: str, items: list[dict[str, Any]]) -> None:
    r = client.post(path, json=items)
    assert r.status_code == 200, r.text
    assert r.json() == {"applied": len(items)}


def iso(seconds: float) -> str:
    """Unix seconds as a Density timestamp (ISO-8601 with milliseconds, UTC)."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def send_crossings(client: httpx.Client, dpu: str, crossings: list[tuple[float, int]]) -> None:
    """Density crossings of sensor ``dpu`` (``(unix seconds, direction)``), as one batch
    through the seed's ``POST /send/batch``."""
    events = [{"timestamp": iso(ts), "direction": d, "dpu_id": dpu} for ts, d in crossings]
    r = client.post("/send/batch", json=events)
    assert r.status_code == 200, r.text
    assert r.json()["new"] == len(events), r.json()
