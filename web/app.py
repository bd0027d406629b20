"""The Quart-Trio application: routes are thin clients of one :class:`engine.Engine`.

Errors become responses in one place (like hypercorn's ``_send_error_response``): a
``PointspaceError`` carries its HTTP status and the field at fault, an HTTP error from the
framework (unknown route, wrong method, body too large) becomes the same JSON shape, and
anything else is a bug -- logged, and answered with a JSON 500. Seed-compatible routes that
had their own error statuses map them in their own modules (``web/compat/psd.py``).

Before any route: ``web/edge.py``'s hook refuses foreign Hosts and Origins and body types the
route does not take (ahead of ``web/auth.py``'s); every request body is read under a deadline
and a minimum rate, whoever reads it (``web/bodies.py``, the app's ``request_class``).
"""

from __future__ import annotations

import logging

from quart import Response, g, has_request_context, request, websocket
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from engine.engine import Engine
from engine.errors import PointspaceError
from web.api.admin import admin
from web.api.density import density  # Density's native routes (/api/sensors, /api/spaces)
from web.api.routes import native
from web.api.stats import STATS_ROUTES  # the /api/dims routes, on native
from web.api.uniques import uniques  # the /api/uniques routes
from web.auth import install as install_auth
from web.bodies import request_class, respond
from web.compat.density import density_compat  # the dhw seed's /send, /count
from web.compat.narrative import narrative
from web.compat.psd import psd
from web.compat.rankdb.backups import backup
from web.compat.rankdb.routes import rankdb
from web.compat.statshub import statshub  # statshub's /stats and /stream
from web.context import ENGINE_KEY, SETTINGS_KEY, closing_on_error
from web.edge import install as install_edge
from web.metrics import install as install_metrics
from web.openapi import install as install_openapi
from web.serving.settings import Settings
from web.ui.routes import ui

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
    app.extensions[ENGINE_KEY] = engine
    app.extensions[SETTINGS_KEY] = settings

    # Where each request enters: the native API, then the seeds' APIs at their own paths.
    assert STATS_ROUTES, "web/api/stats.py adds its routes to native before it registers"
    app.register_blueprint(native)
    app.register_blueprint(admin)
    app.register_blueprint(psd)
    app.register_blueprint(rankdb)
    app.register_blueprint(backup)
    app.register_blueprint(narrative)
    app.register_blueprint(density)
    app.register_blueprint(uniques)
    app.register_blueprint(density_compat)
    app.register_blueprint(statshub)
    app.register_blueprint(ui)
    install_auth(app, settings)
    install_edge(app, settings)  # before auth's hook: a foreign Host or Origin gets no 401
    install_metrics(app)
    install_openapi(app, settings)

    @app.after_request
    async def close_if_body_unread(response: Response) -> Response:
        # A body the route never read would be taken for the next request on a keep-alive
        # connection (or stall it): close instead.
        if not g.get("body_read"):
            return closing_on_error(response)
        return response

    # The handlers also answer websocket handshakes (an unknown path's 404, a route that
    # is HTTP only): there is no HTTP request then, so the answer is plain JSON, sent by
    # Quart as the handshake's refusal (ASGI's websocket.http.response).
    @app.errorhandler(PointspaceError)
    async def domain_error(exc: PointspaceError) -> Response:
        return _error_response(exc.to_json(), exc.http_status)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        message = (exc.description or exc.name or "error").rstrip(".")
        body: dict[str, object] = {"error": message[:1].lower() + message[1:]}
        if status == 413:
            body["field"] = "body"
        return _error_response(body, status)

    @app.errorhandler(Exception)
    async def unexpected_error(exc: Exception) -> Response:
        if has_request_context():
            log.exception("unhandled error on %s %s", request.method, request.path)
        else:
            log.exception("unhandled error on websocket %s", websocket.path)
        body = {"error": "internal error; the server log has the details"}
        return _error_response(body, 500)

    return app


def _error_response(body: dict[str, object], status: int) -> Response:
    """An error answer to the current HTTP request (closing after an unread body), or to a
    websocket handshake (JSON: a handshake has no ``Accept`` to honour, nor a body)."""
    if has_request_context():
        return closing_on_error(respond(body, request, status))
    return respond(body, None, status)
