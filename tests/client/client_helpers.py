"""What the client's end-to-end tests share: recording transports (what went on the wire), JWT
keys and tokens, a server that comes up late on a known port, and the README walk-through."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from conftest import ServerProcess, free_port, start_server
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

_ids = itertools.count(1)


def unique(prefix: str) -> str:
    """A name no other test in the session uses (the module's server is shared)."""
    return f"{prefix}-{next(_ids)}"


class RecordingTransport(httpx.HTTPTransport):
    """The real TCP transport, noting each attempt: (method, path, Content-Type, Authorization)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str, str | None, str | None]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.method, request.url.path, request.headers.get("Content-Type"),
                          request.headers.get("Authorization")))
        return super().handle_request(request)


class AsyncRecordingTransport(httpx.AsyncHTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str, str | None, str | None]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.method, request.url.path, request.headers.get("Content-Type"),
                          request.headers.get("Authorization")))
        return await super().handle_async_request(request)


############################################################################################
# A server that is briefly down


class LateServer:
    """A port with nothing listening, and ``pointspace serve`` starting on it after ``delay``
    seconds in a thread (a restart, as a client sees it)."""

    def __init__(self, tmp_path: Path, delay: float) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: ServerProcess | None = None
        self.error: BaseException | None = None
        self._tmp_path = tmp_path
        self._thread = threading.Thread(target=self._start, args=(delay,), daemon=True)

    def _start(self, delay: float) -> None:
        time.sleep(delay)
        try:
            self.server = start_server(self._tmp_path, port=self.port)
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def __enter__(self) -> LateServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(60)
        if self.server is not None:
            self.server.stop()
        if self.error is not None:
            raise self.error


def dead_url() -> str:
    """A loopback URL where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"


############################################################################################
# JWT


class Keys:
    """An RSA key pair whose public half a server started with ``--jwt-key-dir`` trusts."""

    def __init__(self, directory: Path) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "client-test.pub").write_bytes(self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        self.directory = directory

    def token(self, scope: str) -> str:
        now = int(time.time())
        return jwt.encode({"iss": "test", "iat": now, "exp": now + 600, "scope": scope},
                          self.key, algorithm="RS256")


@pytest.fixture(scope="module")
def jwt_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Keys]]:
    base = tmp_path_factory.mktemp("jwt")
    keys = Keys(base / "keys")
    proc = start_server(base, extra=["--jwt-key-dir", str(keys.directory)])
    yield proc, keys
    proc.stop()


@pytest.fixture(scope="module")
def durable_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("durable")
    proc = start_server(base, data_dir=base / "data")
    yield proc
    proc.stop()


ALL_SCOPES = "api:read api:update api:delete api:manage"
