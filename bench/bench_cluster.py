"""Ingest throughput of a pointspace cluster of 1, 2 and 3 nodes, each node pinned to one core
(``taskset``), against a single node without a cluster on one core, in the same run.

Every run starts a fresh three-server JetStream cluster (``cluster/nats_servers.py``, not
pinned) and N ``pointspace serve --cluster`` processes; clients post msgpack batches of
``--batch`` events for ``--users`` users to the nodes in turn, so most of each batch is
forwarded (any node accepts any request, and a batch's users live on every partition). The
figure is events acknowledged per second, after a warm-up; a write is acknowledged once
JetStream stored it on a quorum of its three replicas, fsynced.

Cores are given to the nodes in turn from ``--cores`` (default: all of this machine's): on a
machine with fewer cores than nodes, nodes share cores, and the NATS servers and the clients
share them with the nodes, so the scaling shown is a floor. Nothing is asserted.

    .venv/bin/python bench/bench_cluster.py --nodes 1,2,3 --events 200000
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    BASE_TS,
    batches,
    free_port,
    http_request,
    make_events,
    send_all,
    table,
    wait_up,
)
from cluster.nats_servers import LocalNatsCluster


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes used so far (``/proc/<pid>/stat``)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / ticks


def pinned(core: int | None, args: list[str]) -> list[str]:
    return args if core is None else ["taskset", "-c", str(core), *args]


@contextlib.contextmanager
def nodes(directory: Path, count: int, nats_urls: list[str], cores: list[int], partitions: int,
          pids: list[int]) -> Iterator[list[str]]:
    """``count`` cluster nodes, node i on ``cores[i % len(cores)]``; their URLs (their process
    ids are added to ``pids``)."""
    processes: list[subprocess.Popen[bytes]] = []
    urls = []
    try:
        for i in range(count):
            port = free_port()
            args = [sys.executable, "-c", "from web.serving.cli import main; main()", "serve", "--port", str(port),
                    "--data-dir", "", "--node-id", f"n{i}", "--cluster-partitions", str(partitions)]
            for url in nats_urls:
                args += ["--cluster", url]
            log = (directory / f"n{i}.log").open("wb")
            processes.append(subprocess.Popen(pinned(cores[i % len(cores)], args), stdout=log, stderr=subprocess.STDOUT))
            pids.append(processes[-1].pid)
            urls.append(f"http://127.0.0.1:{port}")
        for url in urls:
            wait_up(url, "/healthz")
        # Ready when a query touching every partition is answered (every partition led).
        deadline = time.monotonic() + 60
        probe = {"users": list(range(partitions * 8)), "metrics": ["steps"], "t1": 0, "t2": 1}
        while True:
            try:
                if all(httpx.post(f"{u}/api/query", json=probe, timeout=20).status_code == 200 for u in urls):
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not lead every partition within 60 s")
            time.sleep(0.2)
        # A node that joined last takes its share of partitions from the others once the
        # coordinator sees it (a rebalance): let that settle before measuring.
        time.sleep(3)
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


@contextlib.contextmanager
def single_node(directory: Path, core: int | None, pids: list[int]) -> Iterator[list[str]]:
    """The baseline: one server without a cluster, its log fsynced per write (as JetStream's)."""
    port = free_port()
    args = [sys.executable, "-c", "from web.serving.cli import main; main()", "serve", "--port", str(port),
            "--data-dir", str(directory / "single"), "--fsync", "always"]
    log = (directory / "single.log").open("wb")
    process = subprocess.Popen(pinned(core, args), stdout=log, stderr=subprocess.STDOUT)
    pids.append(process.pid)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_up(url, "/healthz")
        yield [url]
    finally:
        process.terminate()
        process.wait(30)


def drive(urls: list[str], bodies: list[bytes], threads_per_node: int) -> float:
    """Post every body, spread over the nodes in turn; seconds taken."""
    per_node = [bodies[i::len(urls)] for i in range(len(urls))]
    elapsed: list[float] = []

    def one(url: str, mine: list[bytes]) -> None:
        requests = [http_request(url, "POST", "/api/events", body, "application/msgpack") for body in mine]
        elapsed.append(send_all(url, requests, threads_per_node))

    workers = [threading.Thread(target=one, args=(u, b)) for u, b in zip(urls, per_node, strict=True)]
    t0 = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if len(elapsed) != len(workers):
        raise RuntimeError("a client thread failed")
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", default="1,2,3", help="cluster sizes to measure (default 1,2,3)")
    parser.add_argument("--events", type=int, default=200_000, help="events per measurement")
    parser.add_argument("--warmup", type=int, default=20_000, help="events sent before measuring")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--threads-per-node", type=int, default=2, help="client connections per node")
    parser.add_argument("--cores", default=None, help="cores for the nodes, e.g. 0,1 (default: all)")
    args = parser.parse_args()
    cores = ([int(c) for c in args.cores.split(",")] if args.cores
             else sorted(os.sched_getaffinity(0)))
    sizes = [int(n) for n in args.nodes.split(",")]
    events = make_events(args.warmup + args.events, args.users, start=BASE_TS)
    bodies = [msgpack.packb(b) for b in batches(events, args.batch)]
    warm, measured = bodies[: args.warmup // args.batch], bodies[args.warmup // args.batch:]
    print(f"{os.cpu_count()} cores here; nodes pinned to {cores} in turn; {args.events:,} events in batches "
          f"of {args.batch:,} for {args.users:,} users; {args.partitions} partitions; "
          f"{args.threads_per_node} connections per node")
    rows: list[tuple[str, float, str]] = []
    costs: list[str] = []

    def measure(name: str, urls: list[str], server_pids: list[int], nats_pids: list[int]) -> None:
        drive(urls, warm, args.threads_per_node)
        before = cpu_seconds(server_pids), cpu_seconds(nats_pids), time.process_time()
        seconds = drive(urls, measured, args.threads_per_node)
        after = cpu_seconds(server_pids), cpu_seconds(nats_pids), time.process_time()
        per_event = [(a - b) / args.events * 1e6 for a, b in zip(after, before, strict=True)]
        rows.append((name, args.events / seconds, "events/s"))
        costs.append(f"  {name:<44} pointspace {per_event[0]:5.1f}  nats-server {per_event[1]:5.1f}  "
                     f"client {per_event[2]:5.1f}")
        print(f"  {name}: {args.events / seconds:,.0f} events/s")

    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        base = Path(tmp)
        pids: list[int] = []
        with single_node(base, cores[0], pids) as urls:
            measure("single node, no cluster (fsync always)", urls, pids, [])
        for size in sizes:
            run = base / f"cluster{size}"
            run.mkdir()
            pids = []
            with LocalNatsCluster(run / "nats") as nats, nodes(run, size, nats.urls, cores, args.partitions,
                                                                pids) as urls:
                nats_pids = [s.process.pid for s in nats.servers if s.process is not None]
                measure(f"cluster of {size} node{'s' if size > 1 else ''}", urls, pids, nats_pids)
    table("ingest over HTTP (msgpack), acknowledged events per second", rows, baseline="cluster of 1 node")
    print("\nCPU microseconds per event (all processes of each kind)")
    print("\n".join(costs))


if __name__ == "__main__":
    main()
