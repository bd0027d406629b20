"""A Python client for pointspace's native API: blocking and async (trio or asyncio), typed.

>>> from client import PointspaceClient, Event, InvalidRequest
>>> with PointspaceClient("http://127.0.0.1:1155") as ps:                 # doctest: +SKIP
...     ps.ingest([Event(metric="steps", user=1, value=120, ts=1496539747)])
...     try:
...         ps.ingest([Event(metric="steps", user=1, value=1, ts=-5)])
...     except InvalidRequest as exc:
...         print(exc.field)
Applied(applied=1)
body[0].ts

* :class:`PointspaceClient` (``client/sync.py``) and :class:`AsyncPointspaceClient`
  (``client/aio.py``) have the same methods; results are the frozen structs of
  :mod:`client.models`, errors the classes of :mod:`client.errors`.
* What is retried and what is not: ``client/_transport.py``'s theory of operation (reads
  with backoff; writes only with ``idempotent=True``).
* It needs httpx and msgspec, and nothing of the server (``engine/``, ``web/``).
"""

from client._transport import DEFAULT_RETRY, NO_RETRY, RetryPolicy
from client.aio import AsyncPointspaceClient
from client.errors import (
    Conflict,
    Forbidden,
    InsufficientStorage,
    InternalServerError,
    InvalidRequest,
    MethodNotAllowed,
    MisdirectedRequest,
    NotFound,
    PayloadTooLarge,
    PointspaceClientError,
    PointspaceHTTPError,
    PointspaceTransportError,
    RequestTimeout,
    ServiceUnavailable,
    Unauthorized,
    UnexpectedResponse,
    UnsupportedMediaType,
)
from client.models import Count, Event, NewElement, Window
from client.sync import PointspaceClient

__all__ = [
    "DEFAULT_RETRY",
    "NO_RETRY",
    "AsyncPointspaceClient",
    "Conflict",
    "Count",
    "Event",
    "Forbidden",
    "InsufficientStorage",
    "InternalServerError",
    "InvalidRequest",
    "MethodNotAllowed",
    "MisdirectedRequest",
    "NewElement",
    "NotFound",
    "PayloadTooLarge",
    "PointspaceClient",
    "PointspaceClientError",
    "PointspaceHTTPError",
    "PointspaceTransportError",
    "RequestTimeout",
    "RetryPolicy",
    "ServiceUnavailable",
    "UnexpectedResponse",
    "Unauthorized",
    "UnsupportedMediaType",
    "Window",
]
