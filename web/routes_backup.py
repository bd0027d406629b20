"""RankDB backup and restore routes (being written)."""

from __future__ import annotations

from quart import Blueprint

backup = Blueprint("backup", __name__)
