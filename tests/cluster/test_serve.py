"""``pointspace serve --cluster``: three real server processes on one JetStream cluster of
three ``nats-server`` processes, all on 127.0.0.1.

The acceptance test of issue 18: a load generator writes through all three nodes while one
node is SIGKILLed (and, in the second variant, the nats-server beside it too). Every write
that got a 2xx must be in the range sums, breakdowns and ranks every surviving node answers,
none counted twice (served <= attempted, per user), and every served route must answer again
within 10 s of the kill (14 s when a nats-server died too: ``RECOVERY_WITH_NATS_BOUND_S``). The other tests check routing across nodes: any node answers for any
user, forwarded shares are validated like the public route, and a route a cluster does not
serve yet answers 501.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import jwt
import orjson
import pytest
from conftest import free_port
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cluster.nats_servers import LocalNatsCluster
from cluster.node import partition_of

PARTITIONS = 12
T0 = 1_700_000_000
USERS = 240
#: Failure detection: the test's bound holds with the default (3 s) too, with less margin on a
#: loaded 2-core machine when the dead node was the coordinator (two TTLs).
TTL_S = 2.0
#: Seconds the routes have to answer again after a kill (the issue's bound).
RECOVERY_BOUND_S = 10.0
#: ... and after a nats-server is killed with the node: nats-server's Raft followers wait 4-9 s
#: (minElectionTimeoutDefault..maxElectionTimeoutDefault in server/raft.go, not settable)
#: before electing a new leader for each stream and bucket the dead server led, and no write
#: to those can be stored meanwhile. The bound is that wait's worst case plus 5 s for our own
#: failover (membership's TTL, a tick, a catch-up); measured 6-9 s (the test prints it).
RECOVERY_WITH_NATS_BOUND_S = 9.0 + 5.0


@dataclass
class Node:
    name: str
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Cluster:
    nats: LocalNatsCluster
    nodes: list[Node] = field(default_factory=list)
    #: Flags every node gets besides the cluster's own.
    extra: list[str] = field(default_factory=list)
    #: Headers of the readiness probe (a token, where the nodes require one).
    headers: dict[str, str] = field(default_factory=dict)

    def start(self, directory: Path, count: int = 3) -> None:
        for i in range(count):
            node = Node(f"n{i}", free_port(), directory / f"n{i}.log")
            args = [sys.executable, "-c", "from web.serving.cli import main; main()", "serve",
                    "--port", str(node.port), "--data-dir", "", "--log-format", "text",
                    "--node-id", node.name, "--cluster-partitions", str(PARTITIONS),
                    "--cluster-ttl-s", str(TTL_S)]
            for url in self.nats.urls:
                args += ["--cluster", url]
            args += self.extra
            node.process = subprocess.Popen(args, stdout=node.log.open("wb"), stderr=subprocess.STDOUT,
                                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
            self.nodes.append(node)
        deadline = time.monotonic() + 60
        for node in self.nodes:
            while not self._serves(node):
                assert node.process is not None and node.process.poll() is None, self.tail(node)
                assert time.monotonic() < deadline, f"{node.name} did not start:\n{self.tail(node)}"
                time.sleep(0.2)

    def _serves(self, node: Node) -> bool:
        """The node answers a query that touches every partition."""
        try:
            response = httpx.post(f"{node.url}/api/query", json=query_body(list(range(USERS))), timeout=15,
                                  headers=self.headers)
        except httpx.TransportError:
            return False
        return response.status_code == 200

    def kill(self, index: int) -> None:
        process = self.nodes[index].process
        assert process is not None
        process.send_signal(signal.SIGKILL)
        process.wait()

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.terminate()
        for node in self.nodes:
            if node.process is not None:
                try:
                    node.process.wait(15)
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    node.process.wait()

    @staticmethod
    def tail(node: Node, lines: int = 30) -> str:
        return "\n".join(node.log.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def running_cluster(directory: Path, extra: list[str] | None = None,
                    headers: dict[str, str] | None = None) -> Iterator[Cluster]:
    with LocalNatsCluster(directory / "nats") as nats:
        running = Cluster(nats, extra=extra or [], headers=headers or {})
        try:
            running.start(directory)
            yield running
        finally:
            running.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster of its own, for a test that kills parts of it."""
    with running_cluster(tmp_path) as running:
        yield running


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One cluster for the routing tests (each writes its own metric)."""
    with running_cluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


def query_body(users: list[int], metric: str = "steps") -> dict[str, object]:
    return {"users": users, "metrics": [metric], "t1": T0, "t2": T0 + 10_000}


def served_sums(url: str, metric: str = "steps") -> dict[int, int]:
    response = httpx.post(f"{url}/api/query", json=query_body(list(range(USERS)), metric), timeout=30)
    assert response.status_code == 200, response.text
    return {r["user"]: r["sums"][metric] for r in response.json()["results"]}


# ----- routing ------------------------------------------------------------------------------


def test_any_node_writes_and_reads_every_partition(shared: Cluster) -> None:
    cluster = shared
    users = list(range(USERS))
    assert {partition_of(u, PARTITIONS) for u in users} == set(range(PARTITIONS))
    # Each node writes a third of the users (most of them owned by other nodes).
    for i, node in enumerate(cluster.nodes):
        batch = [{"metric": "steps", "user": u, "value": u + 1, "ts": T0 + u, "atid": 2, "aid": u}
                 for u in users if u % 3 == i]
        response = httpx.post(f"{node.url}/api/events", json=batch, timeout=30)
        assert response.status_code == 200 and response.json() == {"applied": len(batch)}, response.text
    # msgpack, as clients batch (forwarded shares are msgpack whatever the client sent).
    import msgpack

    packed = msgpack.packb([{"metric": "steps", "user": "alice", "value": 7, "ts": T0}])
    response = httpx.post(f"{cluster.nodes[0].url}/api/events", content=packed,
                          headers={"Content-Type": "application/msgpack"}, timeout=30)
    assert response.status_code == 200, response.text
    # The NDJSON stream, applied in groups, each split by partition.
    lines = b"".join(orjson.dumps({"metric": "streamed", "user": u, "value": 3, "ts": T0}) + b"\n" for u in users)
    streamed = httpx.post(f"{cluster.nodes[2].url}/api/events/stream", content=lines,
                          headers={"Content-Type": "application/x-ndjson"}, timeout=30)
    assert streamed.status_code == 200 and streamed.json()["applied"] == USERS, streamed.text
    for node in cluster.nodes:
        assert served_sums(node.url) == {u: u + 1 for u in users}
        assert set(served_sums(node.url, "streamed").values()) == {3}
        breakdown = httpx.post(f"{node.url}/api/breakdown", timeout=30, json={
            "users": ["alice", 5, 200], "metrics": ["steps"], "t1": T0, "t2": T0 + 299, "step": 100})
        assert breakdown.status_code == 200, breakdown.text
        assert breakdown.json()["results"] == [
            {"user": "alice", "series": {"steps": [7, 0, 0]}},
            {"user": 5, "series": {"steps": [6, 0, 0]}},
            {"user": 200, "series": {"steps": [0, 0, 201]}},
        ]
        with_atids = httpx.post(f"{node.url}/api/query", timeout=30, json={
            **query_body([7, 8]), "with_atids": True, "offsets": [0, 100_000]}).json()["results"]
        assert with_atids == [{"user": 7, "sums": {"steps": 8}, "atids": [2]},
                              {"user": 8, "sums": {"steps": 0}, "atids": []}]
        one = httpx.get(f"{node.url}/api/users/9/sums/steps", params={"t1": T0, "t2": T0 + 10}, timeout=30)
        assert one.json()["sum"] == 10
        # Ranks across every partition: the users' sums ranked together.
        ranked = httpx.post(f"{node.url}/api/leaderboards/rank", timeout=30, json={
            "metric": "steps", "t1": T0, "t2": T0 + 10_000, "top": 3, "user": 100, "range": 1}).json()
        assert ranked["total"] == USERS + 1  # and alice
        assert ranked["top"] == [{"user": USERS - 1 - i, "score": USERS - i, "rank": i} for i in range(3)]
        assert ranked["user"]["rank"] == USERS - 1 - 100 and ranked["user"]["score"] == 101
        assert [e["user"] for e in ranked["user"]["above"] + ranked["user"]["below"]] == [101, 99]
        some = httpx.post(f"{node.url}/api/leaderboards/rank", timeout=30, json={
            "metric": "steps", "t1": T0, "t2": T0 + 10_000, "users": [3, "alice", 200]}).json()
        assert [(e["user"], e["rank"]) for e in some["top"]] == [(200, 0), ("alice", 1), (3, 2)]


def test_a_bad_batch_changes_nothing_on_any_partition(shared: Cluster) -> None:
    url = shared.nodes[1].url
    batch = [{"metric": "refused", "user": u, "value": 1, "ts": T0} for u in range(USERS)]
    batch[-1]["ts"] = -5
    response = httpx.post(f"{url}/api/events", json=batch, timeout=30)
    assert response.status_code == 400
    assert response.json()["field"] == f"body[{USERS - 1}].ts"
    assert set(served_sums(url, "refused").values()) == {0}


def test_forwarded_shares_are_validated_like_the_public_route(shared: Cluster) -> None:
    """``/cluster/<op>`` is reachable by any client: it checks each share whole, and only the
    partition's leader runs it."""
    cluster = shared
    user = 3
    partition = partition_of(user, PARTITIONS)
    bad = [{"metric": "forged", "user": user, "value": 1, "ts": T0}, {"metric": "forged", "user": user, "value": 1}]
    outcomes = []
    for node in cluster.nodes:
        answer = httpx.post(f"{node.url}/cluster/events", json={"shares": [[partition, bad]]}, timeout=30)
        assert answer.status_code == 200, answer.text
        outcomes += answer.json()
    errors = sorted((o[2]["status"], o[2].get("code"), o[2].get("field")) for o in outcomes)
    assert errors == [(400, None, "body[1].ts"), (503, "not_leading", None), (503, "not_leading", None)], outcomes
    assert served_sums(cluster.nodes[0].url, "forged")[user] == 0
    url = cluster.nodes[0].url
    unknown = httpx.post(f"{url}/cluster/drop_everything", json={"shares": [[partition, []]]}, timeout=30)
    assert unknown.status_code == 400 and unknown.json()["field"] == "op"
    outside = httpx.post(f"{url}/cluster/events", json={"shares": [[PARTITIONS, []]]}, timeout=30)
    assert outside.status_code == 400 and outside.json()["field"] == "shares[0]"
    twice = httpx.post(f"{url}/cluster/events", json={"shares": [[1, []], [1, []]]}, timeout=30)
    assert twice.status_code == 400 and twice.json()["field"] == "shares[1]"
    assert httpx.post(f"{url}/cluster/events", json=[], timeout=30).json()["field"] == "shares"


def test_global_counters_and_psd_clients_through_any_node(shared: Cluster) -> None:
    """Global counters live on their name's partition; PSD's batch writes metrics and counts
    through one node, and PSD's reads answer the same on every node."""
    messages: list[dict[str, object]] = [
        {"command": "metric", "metric": {"thing": "psdsteps", "uid": u, "ts1": T0, "ts2": T0 + u, "atid": 1,
                                         "aid": u, "value": u + 1}} for u in range(40)]
    messages += [{"command": "count", "count": {"thing": f"hits_{i}", "ts": T0 + i, "value": i + 1}}
                 for i in range(20)]
    response = httpx.post(f"{shared.nodes[0].url}/v1/batch", json=messages, timeout=30)
    assert response.status_code == 200 and response.json() == {"metrics": 40, "counts": 20}, response.text
    names = {f"hits_{i}" for i in range(20)}
    assert len({partition_of(n, PARTITIONS) for n in names}) > 3  # spread over nodes
    added = httpx.post(f"{shared.nodes[1].url}/api/counters", timeout=30,
                       json=[{"name": "hits_3", "value": 10, "ts": T0 + 50}])
    assert added.status_code == 200 and added.json() == {"applied": 1}
    for node in shared.nodes:
        assert httpx.get(f"{node.url}/v1/readcount/hits_3/{T0}/{T0 + 100}", timeout=30).text == "14"
        ids = httpx.post(f"{node.url}/v1/readcount_with_ids/hits/{T0}/{T0 + 100}", timeout=30,
                         data={"ids": "0,5,19,77"})
        assert ids.json() == {"0": 1, "5": 6, "19": 20, "77": 0}
        assert httpx.get(f"{node.url}/v1/query/7/psdsteps/1/{T0}/{T0 + 100}", timeout=30).text == "8"
        one = httpx.get(f"{node.url}/api/counters/hits_3", params={"t1": T0, "t2": T0 + 100}, timeout=30)
        assert one.json()["sum"] == 14
        periods = httpx.get(f"{node.url}/api/counters/hits_3/breakdown", timeout=30,
                            params={"t1": T0, "t2": T0 + 99, "step": 50}).json()
        assert periods["series"] == [4, 10] and periods["periods"] == [[T0, T0 + 49], [T0 + 50, T0 + 99]]
    refused = httpx.post(f"{shared.nodes[2].url}/api/counters", timeout=30,
                          json=[{"name": "hits_4", "value": 1, "ts": T0}, {"name": "hits_4", "value": 1, "ts": -1}])
    assert refused.status_code == 400
    assert httpx.get(f"{shared.nodes[2].url}/v1/readcount/hits_4/{T0}/{T0 + 100}", timeout=30).text == "5"


def test_a_route_the_cluster_does_not_serve_yet_answers_501(shared: Cluster) -> None:
    cluster = shared
    response = httpx.get(f"{cluster.nodes[2].url}/api/leaderboards", timeout=30)
    assert response.status_code == 501, response.text
    assert "does not serve this yet" in response.json()["error"]
    # A streamed answer refuses before it starts, not with a 200 and a broken body.
    export = httpx.get(f"{cluster.nodes[1].url}/api/admin/snapshot/export", timeout=30)
    assert export.status_code == 501 and "stable_seq" in export.json()["error"], export.text
    assert httpx.get(f"{cluster.nodes[2].url}/readyz", timeout=30).status_code == 200


def test_jwt_scopes_hold_across_forwarding(tmp_path: Path) -> None:
    """A forwarded share carries the client's token, and its route needs the scope of the
    public route it stands for: a read token reads every partition and writes none."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "test.pub").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    def bearer(scope: str) -> dict[str, str]:
        now = int(time.time())
        token = jwt.encode({"iss": "test", "iat": now, "exp": now + 600, "scope": scope}, key, algorithm="RS256")
        return {"Authorization": f"Bearer {token}"}

    reader, writer = bearer("api:read"), bearer("api:update")
    with running_cluster(tmp_path, extra=["--jwt-key-dir", str(keys)], headers=reader) as cluster:
        url = cluster.nodes[0].url
        batch = [{"metric": "guarded", "user": u, "value": 2, "ts": T0} for u in range(USERS)]
        assert httpx.post(f"{url}/api/events", json=batch, headers=reader, timeout=30).status_code == 401
        written = httpx.post(f"{url}/api/events", json=batch, headers=writer, timeout=30)
        assert written.status_code == 200, written.text
        body = query_body(list(range(USERS)), "guarded")
        assert httpx.post(f"{url}/api/query", json=body, headers=writer, timeout=30).status_code == 401
        read = httpx.post(f"{url}/api/query", json=body, headers=reader, timeout=30)
        assert read.status_code == 200, read.text
        assert {r["sums"]["guarded"] for r in read.json()["results"]} == {2}
        partition = partition_of(0, PARTITIONS)
        for node in cluster.nodes:  # the forwarding route itself, called directly
            shares = {"shares": [[partition, [{"metric": "guarded", "user": 0, "value": 1, "ts": T0}]]]}
            assert httpx.post(f"{node.url}/cluster/events", json=shares, timeout=30).status_code == 401
            refused = httpx.post(f"{node.url}/cluster/events", json=shares, headers=reader, timeout=30)
            assert refused.status_code == 401


def test_a_node_without_a_reachable_nats_server_says_so_in_one_line(tmp_path: Path) -> None:
    for flags, source in ((["--cluster", f"nats://127.0.0.1:{free_port()}"], "--cluster"),
                          (["--cluster", "http://example.com:4222"], "--cluster")):
        done = subprocess.run([sys.executable, "-c", "from web.serving.cli import main; main()", "serve",
                               "--port", str(free_port()), "--data-dir", "", *flags],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 1, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and lines[0].endswith(f"(from {source})"), lines


# ----- acceptance: a node killed under load -------------------------------------------------


@dataclass
class Ledger:
    """What the load generator attempted and what was acknowledged, per user."""

    attempted: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    acknowledged: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    lock: threading.Lock = field(default_factory=threading.Lock)
    acked_batches: int = 0
    refused_batches: int = 0


def write_load(url: str, ledger: Ledger, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            batch = [{"metric": "steps", "user": rng.randrange(USERS), "value": rng.randrange(1, 100),
                      "ts": T0 + rng.randrange(10_000)} for _ in range(40)]
            with ledger.lock:
                for event in batch:
                    ledger.attempted[event["user"]] += event["value"]
            try:
                ok = client.post(f"{url}/api/events", json=batch).status_code == 200
            except httpx.TransportError:
                ok = False
            with ledger.lock:
                if ok:
                    ledger.acked_batches += 1
                    for event in batch:
                        ledger.acknowledged[event["user"]] += event["value"]
                else:
                    ledger.refused_batches += 1
            if not ok:
                time.sleep(0.05)


#: The served routes the recovery probe calls, each touching every partition.
ROUTES = ("events", "query", "breakdown")


def probe_routes(url: str, ledger: Ledger, routes: set[str]) -> set[str]:
    """Call each route of ``routes`` once, with a request touching every partition; the ones
    that answered 200."""
    users = list(range(USERS))
    answered = set()
    for route in routes:
        if route == "events":
            probe = [{"metric": "steps", "user": u, "value": 1, "ts": T0} for u in range(PARTITIONS * 4)]
            with ledger.lock:
                for event in probe:
                    ledger.attempted[event["user"]] += 1
            body: object = probe
        else:
            body = query_body(users) if route == "query" else {**query_body(users), "step": "hour"}
        try:
            ok = httpx.post(f"{url}/api/{route}", json=body, timeout=10).status_code == 200
        except httpx.TransportError:
            ok = False
        if ok:
            answered.add(route)
            if route == "events":
                with ledger.lock:
                    for event in probe:
                        ledger.acknowledged[event["user"]] += 1
    return answered


@pytest.mark.parametrize("also_nats", [False, True], ids=["node", "node-and-its-nats-server"])
def test_no_acknowledged_write_is_lost_when_a_node_is_killed(cluster: Cluster, also_nats: bool) -> None:
    rng = random.Random()
    victim = rng.randrange(3)
    survivors = [n for i, n in enumerate(cluster.nodes) if i != victim]
    ledger = Ledger()
    stop = threading.Event()
    writers = [threading.Thread(target=write_load, args=(node.url, ledger, stop, i), daemon=True)
               for i, node in enumerate(cluster.nodes)]
    for writer in writers:
        writer.start()
    load_s = float(os.environ.get("POINTSPACE_CLUSTER_LOAD_S", "24"))
    time.sleep(rng.uniform(0.25, 0.45) * load_s)
    before = ledger.acked_batches
    cluster.kill(victim)
    if also_nats:
        cluster.nats.kill(victim)
    killed_at = time.monotonic()
    # Every route answers again through each survivor within the bound: the first 200 of
    # each (node, route) after the kill, timed when the answer came.
    recovered: dict[tuple[str, str], float] = {}
    wanted = {(n.name, r) for n in survivors for r in ROUTES}
    bound = RECOVERY_WITH_NATS_BOUND_S if also_nats else RECOVERY_BOUND_S
    while len(recovered) < len(wanted) and time.monotonic() - killed_at < bound:
        for node in survivors:
            missing = {r for r in ROUTES if (node.name, r) not in recovered}
            for route in probe_routes(node.url, ledger, missing):
                recovered[node.name, route] = time.monotonic() - killed_at
        time.sleep(0.1)
    remaining = load_s - (time.monotonic() - killed_at)
    time.sleep(max(remaining, 2.0))
    stop.set()
    for writer in writers:
        writer.join(60)
    times = ", ".join(f"{n}/{r} {t:.2f} s" for (n, r), t in sorted(recovered.items()))
    print(f"\nkilled n{victim}{' and its nats-server' if also_nats else ''} after {before} batches; "
          f"answered again: {times}; {ledger.acked_batches} batches acknowledged, "
          f"{ledger.refused_batches} refused or cut")
    late = {k: t for k, t in recovered.items() if t > bound}
    assert set(recovered) == wanted and not late, (
        f"routes that did not answer within {bound} s: {sorted(wanted - set(recovered))}, "
        f"late: {late}\n" + "\n".join(Cluster.tail(n) for n in survivors))
    assert ledger.acked_batches > before + 20, "writes did not go on after the kill"
    for node in survivors:
        served = served_sums(node.url)
        for user in range(USERS):
            acked, attempted = ledger.acknowledged[user], ledger.attempted[user]
            assert acked <= served[user] <= attempted, (node.name, user, acked, served[user], attempted)
        # Ranks over every partition hold the same sums, highest first.
        ranked = httpx.post(f"{node.url}/api/leaderboards/rank", timeout=30, json={
            "metric": "steps", "t1": T0, "t2": T0 + 10_000, "top": USERS}).json()
        assert {e["user"]: e["score"] for e in ranked["top"]} == {u: s for u, s in served.items() if s}
        assert [e["rank"] for e in ranked["top"]] == list(range(len(ranked["top"])))
        assert all(a["score"] >= b["score"] for a, b in itertools.pairwise(ranked["top"]))
        # The breakdown adds up to the same sums.
        response = httpx.post(f"{node.url}/api/breakdown", timeout=30, json={
            **query_body(list(range(USERS))), "step": "hour"})
        assert {r["user"]: sum(r["series"]["steps"]) for r in response.json()["results"]} == served
