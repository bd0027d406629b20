"""Shared fixtures: an in-process engine, and a real server process on loopback.

End-to-end tests run ``pointspace serve`` as a child process on 127.0.0.1 and a free port,
exactly as a user would, and talk to it over HTTP with httpx.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

from engine.engine import Engine

ROOT = Path(__file__).resolve().parent.parent
#: How the tests run the ``pointspace`` command from the checkout.
POINTSPACE = (sys.executable, "-m", "web.serving.cli")


class _Flag(Enum):
    OMIT = "omit"


#: ``start_server(data_dir=NO_DATA_DIR_FLAG)``: pass no ``--data-dir`` (the server's own default).
NO_DATA_DIR_FLAG = _Flag.OMIT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServerProcess:
    """A running ``pointspace serve`` child process."""

    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path | None
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


def start_server(
    tmp_path: Path,
    *,
    data_dir: Path | None | Literal[_Flag.OMIT] = None,
    extra: list[str] | None = None,
    command: Sequence[str] = POINTSPACE,
    cwd: Path = ROOT,
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    timeout: float = 30,
) -> ServerProcess:
    """Start ``pointspace serve`` and wait (at most ``timeout`` s) until it answers /health/ping.

    Args:
        tmp_path: where the server's log file goes.
        data_dir: ``--data-dir`` (None: in memory; ``NO_DATA_DIR_FLAG``: the server's default).
        extra: more ``serve`` flags.
        command: the ``pointspace`` program (an installed script, say) instead of the checkout's.
        cwd: its working directory (the checkout by default).
        env: its whole environment instead of this process's.
        port: the port to listen on instead of a free one picked now.
        timeout: seconds to wait for it to answer.
    """
    port = free_port() if port is None else port
    log_path = tmp_path / f"server-{port}.log"
    args = [*command, "serve", "--host", "127.0.0.1", "--port", str(port)]
    if data_dir is not NO_DATA_DIR_FLAG:
        args += ["--data-dir", str(data_dir) if data_dir is not None else ""]
    args += extra or []
    log_file = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        args, cwd=cwd, stdout=log_file, stderr=subprocess.STDOUT,
        env={**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"},
    )
    server = ServerProcess(process, port, None if data_dir is NO_DATA_DIR_FLAG else data_dir, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/health/ping", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop(signal.SIGKILL)
    raise RuntimeError(f"server did not start within {timeout} s:\n{server.log()}")


def run_cli(
    *args: object,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    merge_stderr: bool = False,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``pointspace ARGS...`` from the checkout to its end, as an operator would.

    Args:
        env: variables to set on top of this process's environment.
        input: what to type at its prompts.
        merge_stderr: capture stderr into ``stdout`` (in order) instead of apart.
    """
    return subprocess.run(
        [*POINTSPACE, *map(str, args)], cwd=ROOT, input=input, text=True, timeout=timeout,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One in-memory server per test module (tests use distinct users/metrics)."""
    proc = start_server(tmp_path_factory.mktemp("server"))
    yield proc
    proc.stop()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    """An in-memory engine for one test."""
    async with Engine.open() as e:
        yield e


############################################################################################
# The cluster's fixtures (tests/cluster/): imported lazily, so the rest of the suite does not
# need the [cluster] extra to be collected. Here rather than in tests/cluster/conftest.py: a
# second module named ``conftest`` would shadow this one for ``from conftest import ...``.


@pytest.fixture(scope="module")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A three-server JetStream cluster on loopback (``cluster/nats_servers.py``)."""
    from cluster.nats_servers import LocalNatsCluster

    with LocalNatsCluster(tmp_path_factory.mktemp("nats")) as cluster:
        yield cluster


@pytest.fixture
async def bridge() -> AsyncIterator[Any]:
    """An asyncio loop in a thread, for nats-py (``cluster/bridge.py``)."""
    from cluster.bridge import AsyncioBridge

    async with AsyncioBridge.open() as b:
        yield b


@pytest.fixture
async def jetstream(bridge: Any, nats_cluster: Any) -> AsyncIterator[Any]:
    """A connection to ``nats_cluster`` on ``bridge``."""
    from cluster.partition_log import JetStream

    async with JetStream.connect(bridge, nats_cluster.urls) as js:
        yield js
