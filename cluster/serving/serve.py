"""``pointspace serve --cluster nats://...``: one node of a cluster, serving the HTTP API.

Found by ``web/serving/cli.py`` through the ``pointspace.serving`` entry point (pyproject),
so the web layer never imports this package. One trio run owns everything, as for a single
node (``web/serving/server.py``): the asyncio thread nats-py runs on (``cluster/bridge.py``),
the node's membership and partitions (``cluster/node.py``), and Hypercorn's serving tasks.
The app is the single node's app (every route, every check at the edge) over a
:class:`~cluster.serving.routing.ClusterEngine`, plus the routes other nodes forward partitions'
shares to (``cluster/serving/forwarding.py``).

A node listens once membership runs; until the first assignment names owners, calls wait
(``ClusterEngine.retry_s``) and then answer 503. SIGINT or SIGTERM stops accepting requests,
then leaves the cluster: its heartbeat lapses and its partitions move to their standbys.
"""

from __future__ import annotations

import logging
import re
import socket
from typing import cast
from urllib.parse import urlsplit

import trio
from hypercorn.config import Config

from cluster.bridge import AsyncioBridge
from cluster.membership import MembershipConfig
from cluster.node import ClusterNode, NodeConfig
from cluster.partition_log import JetStream, LogLayout
from cluster.serving.forwarding import FORWARDING_NODE_KEY, Forwarder, forwarded
from cluster.serving.routing import ClusterEngine
from engine.engine import Engine
from web.app import create_app
from web.serving.server import StartupError, bind_sockets, hypercorn_config, serve_until_signal
from web.serving.settings import Settings

__all__ = ["node_config", "run_cluster_server"]

#: The log streams partitions are spread over (so stream leaders spread over NATS servers).
STREAMS = 4


def node_config(settings: Settings) -> NodeConfig:
    """The node's layout and membership settings from the server's settings.

    Raises:
        StartupError: a setting that cannot form a cluster.
    """
    partitions = settings.cluster_partitions
    replicas = settings.cluster_replicas
    if not 1 <= replicas <= 5:
        raise StartupError(f"cluster_replicas must be 1..5 (JetStream's limit), got {replicas}", "cluster_replicas")
    layout = LogLayout(partitions=partitions, streams=min(STREAMS, partitions), replicas=replicas)
    membership = MembershipConfig(replicas=replicas, ttl_s=settings.cluster_ttl_s,
                                  heartbeat_s=settings.cluster_ttl_s / 6)
    return NodeConfig(layout=layout, membership=membership, snapshot_interval_s=settings.cluster_snapshot_interval_s)


def node_identity(settings: Settings) -> tuple[str, str]:
    """This node's id and the URL other nodes reach it at."""
    node_id = settings.node_id or re.sub(r"[^A-Za-z0-9_-]", "-", f"{settings.host}-{settings.port}")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", node_id):
        raise StartupError(f"node_id must be 1-64 letters, digits, '-' or '_', got {node_id!r}", "node_id")
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    address = settings.advertise_url or f"http://{host}:{settings.port}"
    if not address.startswith(("http://", "https://")):
        raise StartupError(f"advertise_url must be an http:// or https:// URL, got {address!r}", "advertise_url")
    return node_id, address


async def check_reachable(urls: list[str], timeout_s: float = 10.0) -> None:
    """At least one NATS server answers a TCP connection (nats-py, told to reconnect for
    ever, would otherwise wait silently for a server that is not there).

    Raises:
        StartupError: none of ``urls`` can be reached within ``timeout_s``.
    """
    reasons = []
    for url in urls:
        parsed = urlsplit(url if "://" in url else f"nats://{url}")
        if parsed.scheme not in ("nats", "tls") or not parsed.hostname:
            raise StartupError(f"cluster: {url!r} is not a NATS URL (nats://host:port)", "cluster")
        try:
            with trio.fail_after(timeout_s):
                stream = await trio.open_tcp_stream(parsed.hostname, parsed.port or 4222)
            await stream.aclose()
            return
        except (OSError, trio.TooSlowError) as exc:
            reasons.append(f"{url}: {exc or 'no answer in time'}")
    raise StartupError(f"cannot reach any NATS server ({'; '.join(reasons)}); start the JetStream cluster "
                       f"first, or check the URLs", "cluster")


async def run_cluster_server(settings: Settings, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve as one cluster node until SIGINT/SIGTERM; ``task_status.started()`` once the
    port listens.

    Raises:
        StartupError: a bad setting, or the address cannot be bound.
    """
    config = node_config(settings)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per forwarded call
    node_id, address = node_identity(settings)
    hypercorn = hypercorn_config(settings)
    sockets = bind_sockets(hypercorn, settings)
    try:
        await _run_bound(settings, config, node_id, address, hypercorn, sockets, task_status)
    finally:
        for sock in sockets:
            sock.close()


async def _run_bound(
    settings: Settings, config: NodeConfig, node_id: str, address: str, hypercorn: Config,
    sockets: list[socket.socket], task_status: trio.TaskStatus[None],
) -> None:
    await check_reachable(list(settings.cluster))
    async with AsyncioBridge.open() as bridge, JetStream.connect(bridge, list(settings.cluster)) as jetstream:
        node = ClusterNode(jetstream, node_id, address=address, config=config)
        forwarder = Forwarder(node_id, timeout_s=settings.response_timeout_s)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(node.run)
                # The routes are a single node's, over the cluster's engine (same methods for
                # what a cluster serves; 501 for the rest): cluster/serving/routing.py.
                app = create_app(cast(Engine, ClusterEngine(node, forwarder)), settings)
                app.extensions[FORWARDING_NODE_KEY] = node
                app.register_blueprint(forwarded)
                describe = (f"cluster node {node_id} at {address}, {config.layout.partitions} partitions, "
                            f"NATS {', '.join(settings.cluster)}")
                await serve_until_signal(app, settings, hypercorn, sockets, task_status, describe)
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await forwarder.aclose()
