"""Optional JWT authorization for every route (being written)."""

from __future__ import annotations

from quart_trio import QuartTrio

from web.settings import Settings


def install(app: QuartTrio, settings: Settings) -> None:
    """Guard the app's routes with JWT when ``settings.jwt_key_dir`` is set."""
