"""Prometheus metrics and health endpoints (being written)."""

from __future__ import annotations

from quart_trio import QuartTrio


def install(app: QuartTrio) -> None:
    """Add /metrics, /healthz and /readyz and the request instrumentation."""
