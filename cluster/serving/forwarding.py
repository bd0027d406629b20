"""Node to node: a partition's share of a request sent to the node that owns the partition,
and the routes that receive it.

``POST /cluster/<op>/<partition>`` with a msgpack body (``cluster/serving/wire.py``'s forms); the
answer is msgpack too, or the owner's JSON error. The op names are the public routes' own
(``events``, ``query``, ``breakdown``, ``counters``; PSD's ``readcount``), so ``web/auth.py`` gives each forwarding
route the JWT scope of the route it stands for, and the forwarding node passes the client's
``Authorization`` on: a forwarded request is exactly as privileged as the one it came from.

The owner runs the share only if it leads the partition now, and never forwards it again: a
node that does not lead answers 503 with ``"code": "not_leading"``, which tells the sender
nothing was changed (:class:`~cluster.node.NotLeading`) and it may try the owner the
assignment names next.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import msgpack
from quart import Blueprint, Response, current_app, has_request_context, request

from cluster.node import ClusterNode, NotLeading
from cluster.partition_journal import PartitionUnavailable
from cluster.serving.wire import run_breakdown, run_counts, run_events, run_query, run_readcount
from engine.engine import Engine
from engine.errors import InvalidInput, PointspaceError
from web.bodies import decode_body, mark_body_read, read_body, respond
from web.context import closing_on_error, settings_of

__all__ = ["FORWARDING_NODE_KEY", "Forwarder", "OwnerUnreachable", "forwarded", "ForwardedError"]

#: ``app.extensions`` key: the :class:`ClusterNode` the forwarding routes run shares on.
FORWARDING_NODE_KEY = "pointspace.cluster.node"
MSGPACK = "application/msgpack"

#: The ops a node runs for another, each validating its body as the public route would.
OPERATIONS: dict[str, Callable[[Engine, Any], Awaitable[Any]]] = {
    "events": run_events,
    "query": run_query,
    "breakdown": run_breakdown,
    "counters": run_counts,
    "readcount": run_readcount,
}


class OwnerUnreachable(PartitionUnavailable):
    """The owner could not be connected to: the request never reached it."""


class ForwardedError(PointspaceError):
    """The owner's own error answer, passed on with its status and field."""

    def __init__(self, message: str, field: str | None, status: int) -> None:
        super().__init__(message, field)
        self.http_status = status


class Forwarder:
    """An HTTP client to the other nodes (one connection pool, kept alive).

    Args:
        node_id: this node's id, sent as ``X-Pointspace-Node`` (for the owner's logs).
        timeout_s: how long one forwarded call may take.
    """

    def __init__(self, node_id: str, *, timeout_s: float = 30.0) -> None:
        self.node_id = node_id
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=2.0),
                                        limits=httpx.Limits(max_connections=256, max_keepalive_connections=64))

    async def aclose(self) -> None:
        await self.client.aclose()

    async def call(self, address: str, op: str, partition: int, body: Any) -> Any:
        """Run ``op`` on ``partition`` at the node at ``address``; its answer, decoded.

        Raises:
            OwnerUnreachable: no connection could be made (nothing was sent).
            NotLeading: the node does not lead the partition (nothing was changed).
            PartitionUnavailable: the call failed after the request was sent (it may have
                been applied).
            ForwardedError: the owner refused the request (its status and message).
        """
        headers = {"Content-Type": MSGPACK, "Accept": MSGPACK, "X-Pointspace-Node": self.node_id}
        if has_request_context() and (auth := request.headers.get("Authorization")) is not None:
            headers["Authorization"] = auth
        url = f"{address.rstrip('/')}/cluster/{op}/{partition}"
        try:
            response = await self.client.post(url, content=msgpack.packb(body), headers=headers)
        except httpx.ConnectError as exc:
            raise OwnerUnreachable(f"the owner at {address} cannot be reached ({exc})") from None
        except httpx.TransportError as exc:
            raise PartitionUnavailable(f"the call to the owner at {address} failed: "
                                       f"{type(exc).__name__} ({exc})") from None
        if response.status_code == 200:
            return msgpack.unpackb(response.content, raw=False, strict_map_key=False)
        try:
            error = decode_body(response.content, response.headers.get("Content-Type"))
            message, field, code = str(error["error"]), error.get("field"), error.get("code")
        except (PointspaceError, KeyError, TypeError):
            message, field, code = f"the owner at {address} answered {response.status_code}", None, None
        if code == "not_leading":
            raise NotLeading(message)
        if response.status_code == 503:
            raise PartitionUnavailable(message)
        raise ForwardedError(message, field, response.status_code)


forwarded = Blueprint("cluster", __name__, url_prefix="/cluster")


@forwarded.post("/<op>/<int:partition>")
async def run_share(op: str, partition: int) -> Response:
    """Run another node's share of a request on a partition this node leads."""
    operation = OPERATIONS.get(op)
    if operation is None:
        raise InvalidInput(f"unknown cluster operation {op!r}; one of {sorted(OPERATIONS)}", "op")
    node: ClusterNode = current_app.extensions[FORWARDING_NODE_KEY]
    if not 0 <= partition < node.partitions:
        raise InvalidInput(f"partition must be in 0..{node.partitions - 1}", "partition")
    mark_body_read()
    data = await read_body(request, settings_of(current_app).max_body_bytes)
    body = decode_body(data, request.headers.get("Content-Type"))
    try:
        answer = await node.on_partition(partition, lambda engine: operation(engine, body))
    except NotLeading as exc:
        return closing_on_error(respond({"error": exc.message, "code": "not_leading"}, request, 503))
    return respond(answer, request)
