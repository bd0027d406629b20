"""The Quart-Trio application: routes are thin clients of one :class:`engine.Engine`.

Errors become responses in one place (like hypercorn's ``_send_error_response``): a
``PointspaceError`` carries its HTTP status and the field at fault, an HTTP error from the
framework (unknown route, wrong method, body too large) becomes the same JSON shape, and
anything else is a bug -- logged, and answered with a JSON 500. Seed-compatible routes that
had their own error statuses map them in their own modules (``web/routes_psd.py``).

Before any route: ``web/edge.py``'s hook refuses foreign Hosts and Origins and body types the
route does not take (ahead of ``web/auth.py``'s); every request body is read under a deadline
and a minimum rate, whoever reads it (``web/bodies.py``, the app's ``request_class``).
"""

from __future__ import annotations

import logging

from quart import Response, g, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from engine.engine import Engine
from engine.errors import PointspaceError
from web.bodies import request_class, respond
from web.settings import Settings

log = logging.getLogger("pointspace.web")


def create_app(engine: Engine, settings: Settings | None = None) -> QuartTrio:
    """Build the app for a running engine. The caller owns the engine's lifetime."""
    settings = settings or Settings()
    app = QuartTrio("pointspace")
    # Bodies are read under our own deadline and minimum rate (``web/bodies.py``), whatever
    # reads them; Quart's BODY_TIMEOUT would only bound ``get_data``, and race ours.
    app.request_class = request_class(settings)
    app.config["BODY_TIMEOUT"] = None
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["RESPONSE_TIMEOUT"] = settings.response_timeout_s
    app.config["JSON_SORT_KEYS"] = False
    app.extensions["pointspace.engine"] = engine
    app.extensions["pointspace.settings"] = settings

    from web.auth import install as install_auth
    from web.routes_admin import admin
    from web.routes_backup import backup
    from web.routes_native import native
    from web.routes_psd import psd
    from web.routes_rankdb import rankdb
    from web.routes_ui import ui

    app.register_blueprint(native)
    app.register_blueprint(admin)
    app.register_blueprint(psd)
    app.register_blueprint(rankdb)
    app.register_blueprint(backup)
    app.register_blueprint(ui)
    install_auth(app, settings)
    from web.edge import install as install_edge

    install_edge(app, settings)  # before auth's hook: a foreign Host or Origin gets no 401
    from web.metrics import install as install_metrics

    install_metrics(app)
    from web.openapi import install as install_openapi

    install_openapi(app, settings)

    @app.after_request
    async def close_if_body_unread(response: Response) -> Response:
        # A body the route never read would be taken for the next request on a keep-alive
        # connection (or stall it): close instead.
        if not g.get("body_read"):
            return closing_on_error(response)
        return response

    @app.errorhandler(PointspaceError)
    async def domain_error(exc: PointspaceError) -> Response:
        return closing_on_error(respond(exc.to_json(), request, exc.http_status))

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        message = (exc.description or exc.name or "error").rstrip(".")
        body: dict[str, object] = {"error": message[:1].lower() + message[1:]}
        if status == 413:
            body["field"] = "body"
        return closing_on_error(respond(body, request, status))

    @app.errorhandler(Exception)
    async def unexpected_error(exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        body = {"error": "internal error; the server log has the details"}
        return closing_on_error(respond(body, request, 500))

    return app


def closing_on_error(response: Response) -> Response:
    """Close the connection after an error to a request that carried a body.

    The error may have been raised before the body was read (a bad path parameter, an
    oversize Content-Length); the unread rest would then be taken for the next request on a
    keep-alive connection. Closing costs the client one reconnect, only on errors.
    """
    if request.headers.get("Content-Length", "0") != "0" or "Transfer-Encoding" in request.headers:
        response.headers["Connection"] = "close"
    return response


def engine_of(app: QuartTrio) -> Engine:
    return app.extensions["pointspace.engine"]


def settings_of(app: QuartTrio) -> Settings:
    return app.extensions["pointspace.settings"]
