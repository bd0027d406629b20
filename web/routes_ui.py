"""The live dashboard at ``/ui`` (placeholder: being written)."""

from __future__ import annotations

from quart import Blueprint

ui = Blueprint("ui", __name__)
