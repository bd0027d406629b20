"""The dashboard with JWT on (web/ui/routes.py guards /ui/api/, web/auth.py the native API):
the page loads without a token, says it needs one, and shows the data once one is typed into
its form -- kept in sessionStorage, never put in the URL.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import jwt
import pytest
from conftest import ServerProcess, start_server
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from selenium import webdriver
from selenium.webdriver.common.by import By

from .page import ingest, wait_for


@pytest.fixture(scope="module")
def jwt_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    """A server with ``--jwt-key-dir``, and a token holding ``api:read`` and ``api:update``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    keys = tmp_path_factory.mktemp("ui-keys")
    (keys / "ui.pub").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    now = int(time.time())
    token = jwt.encode({"scope": "api:read api:update", "iat": now, "exp": now + 3600}, key,
                       algorithm="RS256")
    proc = start_server(tmp_path_factory.mktemp("ui-jwt"), extra=["--jwt-key-dir", str(keys)])
    yield proc, token
    proc.stop()


def test_dashboard_token_from_the_form(
    jwt_server: tuple[ServerProcess, str], driver: webdriver.Chrome
):
    # jwt_server comes first: set up before this module's browser and stopped after it, so
    # the browser's keep-alive connections do not hold the server's graceful shutdown.
    server, token = jwt_server
    now = int(time.time())
    headers = {"Authorization": f"Bearer {token}"}
    with server.client() as client:
        client.headers.update(headers)
        r = client.post("/api/leaderboards", json={
            "id": "ui-guarded", "metric": "ui-guarded", "window": {"t1": now - 60, "t2": now + 60}})
        assert r.status_code == 201, r.text
        ingest(client, "/api/events", [{"metric": "ui-guarded", "user": 1, "value": 5, "ts": now}])

    driver.get(f"{server.url}/ui?board=ui-guarded")
    state = wait_for(driver, "the token request", lambda s: (
        (s["boards"]["ui-guarded"]["error"] or "").startswith("401")
        and "token" in (s["notice"] or "")))
    driver.execute_script("window.__noReload = 1")
    driver.find_element(By.NAME, "token").send_keys(token)  # the notice opened the Token box
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    state = wait_for(driver, "the guarded board", lambda s: s["boards"]["ui-guarded"]["rows"]
                     == [["1", 5]] and s["boards"]["ui-guarded"]["error"] is None)
    assert state["marker"] == 1
    assert token not in driver.current_url
    assert driver.execute_script("return sessionStorage.getItem('pointspace.token')") == token
