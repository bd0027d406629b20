"""RankDB-compatible routes (being written)."""

from __future__ import annotations

from quart import Blueprint

rankdb = Blueprint("rankdb", __name__)
