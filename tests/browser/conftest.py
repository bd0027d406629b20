"""Fixtures for the dashboard's browser tests: Debian's chromium driven through its chromedriver.

The browser is Debian's (``/usr/bin/chromium``, ``/usr/bin/chromedriver``): CI and developer
machines reach Debian's archive but no browser download site, and Selenium Manager, which would
fetch a driver or a browser, is kept offline by giving both paths and ``SE_OFFLINE``. When
either is missing, ``install_chromium.sh`` installs them; if that fails the tests *fail* with
the script's output -- a browser test that skips itself when the browser is absent would pass
on exactly the machines where nobody checked.

This directory is a package (``__init__.py``) so this conftest is imported as
``browser.conftest`` and never replaces ``tests/conftest.py`` as the module named ``conftest``
that the other test modules import ``start_server`` from.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

from .page import PROBE

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL_SCRIPT = Path(__file__).resolve().with_name("install_chromium.sh")

#: An apt-get update and install of chromium on a fresh machine takes about a minute; this
#: bounds a hung mirror or a held dpkg lock.
INSTALL_TIMEOUT_S = 900

#: Window size of every test browser: wide enough for two panels side by side.
WINDOW = (1280, 900)

#: Flags for a headless browser on a CI machine: no GPU, no sandbox (we run as root), a small
#: /dev/shm, and nothing that phones home (the network reaches only package registries).
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    f"--window-size={WINDOW[0]},{WINDOW[1]}",
)


def ensure_installed(tools: tuple[Path, ...], script: Path, timeout: float) -> None:
    """Run ``script`` when any of ``tools`` is missing; fail the test (never skip) when that
    does not leave every one of them executable, with the script's output."""
    if all(os.access(tool, os.X_OK) for tool in tools):
        return
    try:
        result = subprocess.run(
            ["bash", str(script)], capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        output, code = result.stdout + result.stderr, str(result.returncode)
    except subprocess.TimeoutExpired as exc:
        output, code = _text(exc.stdout) + _text(exc.stderr), f"timeout after {timeout} s"
    missing = [str(tool) for tool in tools if not os.access(tool, os.X_OK)]
    if code != "0" or missing:
        pytest.fail(
            f"the dashboard's browser tests need {', '.join(map(str, tools))}; {script.name} "
            f"did not install them (exit {code}; missing: {', '.join(missing) or 'none'}):\n"
            f"{output[-4000:]}",
            pytrace=False,
        )


def _text(output: str | bytes | None) -> str:
    # TimeoutExpired carries bytes even from a text-mode run (CPython issue 87597).
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


@pytest.fixture(scope="session")
def chromium() -> tuple[Path, Path]:
    """``(browser, driver)`` paths, installing Debian's packages first when either is missing."""
    ensure_installed((CHROMIUM, CHROMEDRIVER), INSTALL_SCRIPT, INSTALL_TIMEOUT_S)
    return CHROMIUM, CHROMEDRIVER


@pytest.fixture(scope="module")
def driver(
    chromium: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[webdriver.Chrome]:
    """One headless chromium per test module, with its console log kept for checks.

    Request it *after* the module's server fixtures, so that it quits before they stop: its
    keep-alive connections would otherwise hold a server's graceful shutdown (10 s).
    """
    browser, chromedriver = chromium
    work = tmp_path_factory.mktemp("chromium")
    options = Options()
    options.binary_location = str(browser)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={work / 'profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(str(chromedriver), log_output=str(work / "chromedriver.log"))
    offline = os.environ.get("SE_OFFLINE")
    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager download anything
    try:
        browser_session = webdriver.Chrome(service=service, options=options)
    finally:
        if offline is None:
            del os.environ["SE_OFFLINE"]
        else:
            os.environ["SE_OFFLINE"] = offline
    browser_session.set_page_load_timeout(30)
    browser_session.set_script_timeout(10)
    # A viewport of exactly WINDOW, so screenshots have a known size (the window's own frame
    # would take some of it), and the probe in every page before the page's own scripts.
    browser_session.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": WINDOW[0], "height": WINDOW[1], "deviceScaleFactor": 1, "mobile": False})
    browser_session.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": PROBE})
    try:
        yield browser_session
    finally:
        browser_session.quit()
