"""What a route needs from the application it is registered on, in one small module.

Routes import these instead of importing ``web/app.py``, which imports every route module to
register its blueprint: the dependency goes one way (app -> routes -> context), so a route
module can be read, tested and moved without the app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Response, request

from engine.engine import Engine

if TYPE_CHECKING:
    from quart_trio import QuartTrio

    from web.serving.settings import Settings

ENGINE_KEY = "pointspace.engine"
SETTINGS_KEY = "pointspace.settings"


def engine_of(app: QuartTrio) -> Engine:
    """The engine the app serves (``create_app`` put it there)."""
    return app.extensions[ENGINE_KEY]


def settings_of(app: QuartTrio) -> Settings:
    """The app's effective settings."""
    return app.extensions[SETTINGS_KEY]


def closing_on_error(response: Response) -> Response:
    """Close the connection after an error to a request that carried a body.

    The error may have been raised before the body was read (a bad path parameter, an
    oversize Content-Length); the unread rest would then be taken for the next request on a
    keep-alive connection. Closing costs the client one reconnect, only on errors.
    """
    if request.headers.get("Content-Length", "0") != "0" or "Transfer-Encoding" in request.headers:
        response.headers["Connection"] = "close"
    return response
