"""Node to node: a partition's share of a request sent to the node that owns the partition,
and the routes that receive it.

``POST /cluster/<op>`` with a msgpack body ``{"shares": [[partition, share], ...]}`` (each
share in ``cluster/serving/wire.py``'s forms): one request per owner node for all of a
request's partitions that node owns, since each HTTP request costs a node about a millisecond
of CPU (``bench/bench_cluster.py``). The answer lists each partition's outcome, so one
partition that moved does not fail the others. The op names are the public routes' own
(``events``, ``query``, ``breakdown``, ``counters``, ``rank``; PSD's ``readcount``), so ``web/auth.py`` gives each forwarding
route the JWT scope of the route it stands for, and the forwarding node passes the client's
``Authorization`` on: a forwarded request is exactly as privileged as the one it came from.

The owner runs each share only if it leads the partition now, and never forwards it again: for
a partition it does not lead the outcome is ``"code": "not_leading"``, which tells the sender
nothing was changed (:class:`~cluster.node.NotLeading`) and it may try the owner the
assignment names next.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import msgpack
import trio
from quart import Blueprint, Response, current_app, has_request_context, request

from cluster.node import ClusterNode, NotLeading
from cluster.partition_journal import PartitionUnavailable
from cluster.serving.wire import (
    run_breakdown,
    run_counts,
    run_events,
    run_query,
    run_rank,
    run_readcount,
)
from engine.engine import Engine
from engine.errors import InvalidInput, PointspaceError
from web.bodies import decode_body, mark_body_read, read_body, respond
from web.context import settings_of

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
    "rank": run_rank,
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

    async def call(self, address: str, op: str, shares: dict[int, Any]) -> dict[int, Any]:
        """Run ``op`` on each partition's share at the node at ``address``, in one request;
        each partition's answer, or the exception its owner reported (not raised: the caller
        decides per partition what to retry).

        Whole-request failures are raised:

        Raises:
            OwnerUnreachable: no connection could be made (nothing was sent).
            PartitionUnavailable: the call failed after the request was sent (any share may
                have been applied).
            ForwardedError: the node refused the request as a whole (its status and message:
                a token without the scope, a body over the limit).
        """
        headers = {"Content-Type": MSGPACK, "Accept": MSGPACK, "X-Pointspace-Node": self.node_id}
        if has_request_context() and (auth := request.headers.get("Authorization")) is not None:
            headers["Authorization"] = auth
        body = msgpack.packb({"shares": [[partition, share] for partition, share in shares.items()]})
        try:
            response = await self.client.post(f"{address.rstrip('/')}/cluster/{op}", content=body, headers=headers)
        except httpx.ConnectError as exc:
            raise OwnerUnreachable(f"the owner at {address} cannot be reached ({exc})") from None
        except httpx.TransportError as exc:
            raise PartitionUnavailable(f"the call to the owner at {address} failed: "
                                       f"{type(exc).__name__} ({exc})") from None
        if response.status_code != 200:
            try:
                error = decode_body(response.content, response.headers.get("Content-Type"))
                message, field = str(error["error"]), error.get("field")
            except (PointspaceError, KeyError, TypeError):
                message, field = f"the node at {address} answered {response.status_code}", None
            if response.status_code == 503:
                raise PartitionUnavailable(message)
            raise ForwardedError(message, field, response.status_code)
        answers: dict[int, Any] = {}
        for partition, outcome, value in msgpack.unpackb(response.content, raw=False, strict_map_key=False):
            answers[partition] = value if outcome == "ok" else _error_of(value)
        return answers


def _error_of(error: dict[str, Any]) -> PointspaceError:
    """The exception a partition's owner reported, as the owner raised it."""
    message, status = str(error.get("error")), int(error.get("status", 500))
    if error.get("code") == "not_leading":
        return NotLeading(message)
    if status == 503:
        return PartitionUnavailable(message)
    return ForwardedError(message, error.get("field"), status)


forwarded = Blueprint("cluster", __name__, url_prefix="/cluster")


@forwarded.post("/<op>")
async def run_shares(op: str) -> Response:
    """Run another node's shares of a request, each on its partition (which this node must
    lead), concurrently; every partition's outcome in the answer."""
    operation = OPERATIONS.get(op)
    if operation is None:
        raise InvalidInput(f"unknown cluster operation {op!r}; one of {sorted(OPERATIONS)}", "op")
    node: ClusterNode = current_app.extensions[FORWARDING_NODE_KEY]
    mark_body_read()
    data = await read_body(request, settings_of(current_app).max_body_bytes)
    shares = _check_shares(decode_body(data, request.headers.get("Content-Type")), node.partitions)
    outcomes: list[list[Any]] = []

    async def one(partition: int, body: Any) -> None:
        try:
            answer = await node.on_partition(partition, lambda engine: operation(engine, body))
        except NotLeading as exc:
            outcomes.append([partition, "error", {"error": exc.message, "code": "not_leading", "status": 503}])
        except PointspaceError as exc:
            outcomes.append([partition, "error", {**exc.to_json(), "status": exc.http_status}])
        else:
            outcomes.append([partition, "ok", answer])

    async with trio.open_nursery() as nursery:
        for partition, body in shares:
            nursery.start_soon(one, partition, body)
    return respond(outcomes, request)


def _check_shares(body: Any, partitions: int) -> list[tuple[int, Any]]:
    """``{"shares": [[partition, share], ...]}``, each partition once and in range."""
    shares = body.get("shares") if isinstance(body, dict) else None
    if not isinstance(shares, list) or not shares:
        raise InvalidInput("body must be {\"shares\": [[partition, share], ...]}", "shares")
    out: list[tuple[int, Any]] = []
    seen: set[int] = set()
    for i, item in enumerate(shares):
        if not (isinstance(item, list) and len(item) == 2 and type(item[0]) is int and 0 <= item[0] < partitions):
            raise InvalidInput(f"shares[{i}] must be [partition, share] with a partition in 0..{partitions - 1}",
                               f"shares[{i}]")
        if item[0] in seen:
            raise InvalidInput(f"shares[{i}]: partition {item[0]} appears twice", f"shares[{i}]")
        seen.add(item[0])
        out.append((item[0], item[1]))
    return out
