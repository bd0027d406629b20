"""/docs in headless chromium: Swagger UI renders every documented operation from the
server's own files, with no request leaving the server."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from conftest import ServerProcess, start_server
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


@pytest.fixture(scope="module")
def docs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(tmp_path_factory.mktemp("docs"))
    yield server
    server.stop()


def test_docs_render_every_operation(docs_server: ServerProcess, driver: webdriver.Chrome) -> None:
    document = httpx.get(f"{docs_server.url}/openapi.json").json()
    operations = sum(len(item) for item in document["paths"].values())
    driver.get(f"{docs_server.url}/docs")
    WebDriverWait(driver, 20).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= operations
    )
    paths = {e.text for e in driver.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert "/api/events" in {p.replace("\u200b", "") for p in paths}
    assert driver.find_elements(By.CSS_SELECTOR, ".errors-wrapper") == []
    resources = driver.execute_script(
        "return performance.getEntriesByType('resource').map((e) => e.name)"
    )
    outside = [url for url in resources if not url.startswith(docs_server.url + "/")]
    assert outside == []
    assert f"{docs_server.url}/openapi.json" in resources
