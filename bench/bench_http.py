"""Ingest and query throughput over HTTP, against a bare ASGI app on the same Hypercorn worker.

A real ``pointspace serve`` process (in memory, or with a data directory and an fsync policy)
receives batches of 1,000 events as JSON and as msgpack from client threads on loopback. The
baseline, run side by side, is a bare ASGI app under Hypercorn's trio worker that reads each
body and parses it with orjson, then answers -- the ceiling for any server on this stack, so
the ratio shows what our own work costs per request.

Also measured: PSD ``/v1/write`` single writes (one event per request) and ``/api/query``
latency for one user.

Target (issue 2): >= 150k events/s over HTTP in batches of 1,000.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import msgpack
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import batches, free_port, make_events, table  # noqa: E402

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
    for _ in range(300):
        try:
            if httpx.get(url + path, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def start_pointspace(data_dir: str, fsync: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "web.serving.cli", "serve", "--port", str(port), "--data-dir", data_dir, "--fsync", fsync],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_up(url, "/health/ping")
    return proc, url


def start_bare(tmp: str) -> tuple[subprocess.Popen[bytes], str]:
    Path(tmp, "bare_app.py").write_text(BARE_APP)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hypercorn", "--worker-class", "trio", "--bind", f"127.0.0.1:{port}", "bare_app:app"],
        cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_up(url, "/")
    return proc, url


def _read_response(sock: socket.socket, buf: bytearray) -> int:
    """Read one HTTP/1.1 response with a Content-Length from ``sock``; return its status."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
        elif name.strip().lower() == b"transfer-encoding":
            raise ValueError("this client reads only Content-Length responses")
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        rest += chunk
    buf[:] = rest[length:]
    return status


def post_all(url: str, path: str, bodies: list[bytes], content_type: str, threads: int) -> float:
    """POST every body over ``threads`` keep-alive connections; seconds taken.

    A raw-socket HTTP/1.1 client with pre-built requests: an httpx client spends more CPU per
    request than the server does, which on a 2-core machine would measure the client.
    """
    host, port = url.removeprefix("http://").split(":")
    requests = [
        (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
         f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        for body in bodies
    ]
    chunks = [requests[i::threads] for i in range(threads)]
    errors: list[str] = []

    def worker(mine: list[bytes]) -> None:
        with socket.create_connection((host, int(port))) as sock:
            buf = bytearray()
            for request in mine:
                sock.sendall(request)
                status = _read_response(sock, buf)
                if status != 200:
                    errors.append(str(status))

    workers = [threading.Thread(target=worker, args=(c,)) for c in chunks]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, first status: {errors[0]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--fsync", default="", help="also run with a data dir and this policy")
    args = parser.parse_args()
    events = make_events(args.events, 10_000)
    json_bodies = [orjson.dumps(b) for b in batches(events, args.batch)]
    mp_bodies = [msgpack.packb(b) for b in batches(events, args.batch)]
    rows: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_bare(tmp)
        try:
            t = post_all(url, "/", json_bodies, "application/json", args.threads)
            rows.append(("bare ASGI + orjson parse (baseline)", args.events / t, "events/s"))
        finally:
            proc.terminate()
            proc.wait()
        configs = [("in memory", "", "everysec")]
        if args.fsync:
            configs.append((f"data dir, fsync={args.fsync}", str(Path(tmp, "data")), args.fsync))
        for label, data_dir, fsync in configs:
            proc, url = start_pointspace(data_dir, fsync)
            try:
                t = post_all(url, "/api/events", json_bodies, "application/json", args.threads)
                rows.append((f"pointspace JSON batches ({label})", args.events / t, "events/s"))
                t = post_all(url, "/api/events", mp_bodies, "application/msgpack", args.threads)
                rows.append((f"pointspace msgpack batches ({label})", args.events / t, "events/s"))
                singles = [
                    orjson.dumps({"thing": "steps", "uid": e["user"], "atid": e["atid"], "aid": e["aid"],
                                  "value": e["value"], "ts1": e["ts"], "ts2": e["ts"]})
                    for e in events[:3000]
                ]
                t = post_all(url, "/v1/write", singles, "application/json", args.threads)
                rows.append((f"PSD /v1/write, 1 event/request ({label})", len(singles) / t, "events/s"))
                with httpx.Client(base_url=url) as client:
                    body = {"users": [1], "metrics": ["steps"], "t1": events[0]["ts"], "t2": events[-1]["ts"]}
                    latencies = []
                    for _ in range(300):
                        t0 = time.perf_counter()
                        client.post("/api/query", json=body).raise_for_status()
                        latencies.append(time.perf_counter() - t0)
                    latencies.sort()
                    print(f"  /api/query one user ({label}): p50 {latencies[150]*1e3:.2f} ms, p99 {latencies[296]*1e3:.2f} ms")
            finally:
                proc.terminate()
                proc.wait()
    table(f"HTTP ingest: {args.events:,} events, batches of {args.batch:,}, {args.threads} client threads",
          rows, "bare ASGI + orjson parse (baseline)")


if __name__ == "__main__":
    main()
