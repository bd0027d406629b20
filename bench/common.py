"""Shared helpers for the benchmarks: workloads, timing, a throwaway Redis, side-by-side tables,
servers to measure (``pointspace serve``, and the bare ASGI app that is the HTTP baseline) and a
raw-socket HTTP/1.1 load client.

Benchmarks print figures and ratios against a baseline measured in the same run; they never
assert on time (the machines are shared and noisy). Run them as scripts:
``.venv/bin/python bench/bench_ingest.py``.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent

#: 2024-01-01 00:00:00 UTC: workloads start here.
BASE_TS = 1704067200


def make_events(
    n: int, users: int, *, seed: int = 0, start: int = BASE_TS, per_second: float = 50.0,
    metrics: tuple[str, ...] = ("steps", "points"), atids: int = 4, with_aid: bool = True,
) -> list[dict[str, Any]]:
    """``n`` add events for ``users`` users, timestamps advancing ~``per_second`` events/s
    (a live feed), a few activity types, and one activity per (user, atid, hour)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ts = start + int(i / per_second)
        user = rng.randrange(users)
        atid = rng.randrange(atids)
        event: dict[str, Any] = {
            "metric": metrics[i % len(metrics)],
            "user": user,
            "value": rng.randrange(1, 100),
            "ts": ts,
            "atid": atid,
        }
        if with_aid:
            event["aid"] = (user * 131 + atid) * 100_000 + ts // 3600
        out.append(event)
    return out


def batches(events: list[Any], size: int) -> list[list[Any]]:
    return [events[i : i + size] for i in range(0, len(events), size)]


def best_of(repeats: int, fn: Callable[[], float]) -> float:
    """The best (smallest) of ``repeats`` timings returned by ``fn``."""
    return min(fn() for _ in range(repeats))


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def install_redis_server() -> str | None:
    """The ``redis-server`` binary's path, installing Debian's ``redis-server`` package with
    apt-get first when it is missing (as root only; ``apt-get update`` once if the plain
    install fails, as on a fresh container with empty package lists). None if that cannot be
    done; what went wrong is printed."""
    binary = shutil.which("redis-server")
    if binary is not None:
        return binary
    if shutil.which("apt-get") is None or not hasattr(os, "geteuid") or os.geteuid() != 0:
        print("(redis-server not found and cannot install it here: run `apt-get install -y redis-server` as root)")
        return None
    print("(redis-server not found: apt-get install -y redis-server)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for attempt in ([], ["update"]):
        if attempt:
            subprocess.run(["apt-get", "-q", *attempt], env=env, check=False, stdout=subprocess.DEVNULL)
        done = subprocess.run(["apt-get", "install", "-y", "-q", "redis-server"], env=env, check=False,
                              stdout=subprocess.DEVNULL)
        if done.returncode == 0 and shutil.which("redis-server"):
            return shutil.which("redis-server")
    print("(apt-get install -y redis-server failed; Redis baseline skipped)")
    return None


@contextlib.contextmanager
def redis_server(install: bool = False) -> Iterator[Any]:
    """A throwaway redis-server on loopback with persistence off; yields a client or None.

    ``install`` installs Debian's package first when the binary is missing
    (:func:`install_redis_server`); otherwise a missing binary skips the Redis rows."""
    binary = install_redis_server() if install else shutil.which("redis-server")
    try:
        import redis  # type: ignore[import-not-found]
    except ImportError:
        print("(redis python package not installed: pip install -e '.[bench]'; Redis baseline skipped)")
        yield None
        return
    if binary is None:
        print("(redis-server not found: apt-get install redis-server; Redis baseline skipped)")
        yield None
        return
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )
        try:
            client = redis.Redis(host="127.0.0.1", port=port)
            for _ in range(100):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            yield client
        finally:
            proc.terminate()
            proc.wait(10)


def rss_bytes(pid: int) -> int:
    """A process's resident set (``VmRSS`` in ``/proc/<pid>/status``), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def table(title: str, rows: list[tuple[str, float, str]], baseline: str) -> None:
    """Print ``(name, value, unit)`` rows with each value's ratio to the baseline row's."""
    base = next((v for n, v, _ in rows if n == baseline), None)
    print(f"\n{title}")
    for name, value, unit in rows:
        ratio = f"{value / base:8.2f}x" if base else ""
        print(f"  {name:<44} {value:>14,.1f} {unit:<10} {ratio}  (vs {baseline})")


############################################################################################
# Servers to measure


#: The HTTP baseline: a bare ASGI app that reads each body and parses it with orjson, then
#: answers 200 -- the ceiling for any server on this stack (Hypercorn's trio worker).
BARE_APP = '''
import orjson
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    n = len(orjson.loads(body)) if body else 0
    out = orjson.dumps({"applied": n})
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]})
    await send({"type": "http.response.body", "body": out})
'''


def wait_up(url: str, path: str) -> None:
    """Wait (at most about 30 s) until ``url + path`` answers anything under 500."""
    for _ in range(300):
        try:
            if httpx.get(url + path, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def start_pointspace(
    data_dir: str = "", fsync: str = "everysec", extra: Sequence[str] = ()
) -> tuple[subprocess.Popen[bytes], str]:
    """A ``pointspace serve`` on a free loopback port (``data_dir`` "" keeps it in memory),
    answering; the process and its URL. The caller terminates it."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "web.serving.cli", "serve", "--port", str(port), "--data-dir", data_dir,
         "--fsync", fsync, *extra],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_up(url, "/health/ping")
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, url


def start_bare(tmp: str) -> tuple[subprocess.Popen[bytes], str]:
    """:data:`BARE_APP` under Hypercorn's trio worker (its module written into ``tmp``)."""
    Path(tmp, "bare_app.py").write_text(BARE_APP)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hypercorn", "--worker-class", "trio", "--bind", f"127.0.0.1:{port}", "bare_app:app"],
        cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_up(url, "/")
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, url


############################################################################################
# A raw-socket HTTP/1.1 load client
#
# Pre-built requests on keep-alive connections: an httpx client spends more CPU per request
# than the server does, which on a 2-core machine would measure the client.


def http_request(url: str, method: str, path: str, body: bytes = b"",
                 content_type: str = "application/json") -> bytes:
    """One HTTP/1.1 request's bytes (a body gets its Content-Type and Content-Length)."""
    host = url.removeprefix("http://")
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
    if body:
        head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + body


def read_response(sock: socket.socket, buf: bytearray) -> tuple[int, bool]:
    """Read one HTTP/1.1 response from ``sock`` (its body by Content-Length; none without
    one, as a 204); return its status, and whether the server closes the connection after it
    (``Connection: close``). ``buf`` keeps what was read past it."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length, closing = 0, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection":
            closing = value.strip().lower() == b"close"
        elif name == b"transfer-encoding":
            raise ValueError("this client reads only Content-Length responses")
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        rest += chunk
    buf[:] = rest[length:]
    return status, closing


def run_threads(worker: Any, chunks: list[Any]) -> float:
    """Seconds for one thread per chunk to run ``worker(chunk)``, started together."""
    workers = [threading.Thread(target=worker, args=(c,)) for c in chunks]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return time.perf_counter() - t0


def send_all(url: str, requests: list[bytes], threads: int, ok: Sequence[int] = (200,)) -> float:
    """Send pre-built requests (:func:`http_request`) over ``threads`` keep-alive connections;
    seconds taken. A connection the server closes (Hypercorn's ``keep_alive_max_requests``,
    1,000 requests) is opened again, as any HTTP client does; any status not in ``ok``, or a
    connection dropped without ``Connection: close``, fails the run rather than flatter it."""
    host, port = url.removeprefix("http://").split(":")
    chunks = [requests[i::threads] for i in range(threads)]
    errors: list[str] = []

    def worker(mine: list[bytes]) -> None:
        sock: socket.socket | None = None
        try:
            buf = bytearray()
            for request in mine:
                if sock is None:
                    sock = socket.create_connection((host, int(port)))
                    buf.clear()
                sock.sendall(request)
                status, closing = read_response(sock, buf)
                if status not in ok:
                    errors.append(str(status))
                if closing:
                    sock.close()
                    sock = None
        except OSError as exc:
            errors.append(repr(exc))
        finally:
            if sock is not None:
                sock.close()

    elapsed = run_threads(worker, chunks)
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, first status: {errors[0]}")
    return elapsed


def post_all(url: str, path: str, bodies: list[bytes], content_type: str, threads: int,
             ok: Sequence[int] = (200,)) -> float:
    """POST every body to ``path`` (:func:`send_all`); seconds taken."""
    return send_all(url, [http_request(url, "POST", path, body, content_type) for body in bodies], threads, ok)
