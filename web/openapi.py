"""``/openapi.json`` and ``/docs`` for the native API, and validation from the same models.

quart-schema builds the OpenAPI 3.1 document from the routes; the shapes come from the msgspec
structs in ``web/api/models.py``. The decorators here attach a model to a route for the
document *and* check each request against it, so what the document promises is what the
server enforces:

* :func:`accepts` -- the request body (JSON, msgpack, or NDJSON where a route says so);
* :func:`query_args` -- the query string (values converted from text, ``"10"`` -> 10);
* :func:`answers` -- the 2xx response's shape (documented; tests check the server keeps it).

A request that does not fit gets ``InvalidInput`` -- a 400 naming the field
(``events[3].ts``), never a 500. The document models the native routes (``/api/...``,
health and metrics); the seed-compatible routes are listed too (path, method, summary, a
tag per seed: ``web/apis.py``), their bodies being the seeds' own, documented by the seeds.

Swagger UI's files are served from the ``swagger-ui-py`` package rather than a CDN, so
``/docs`` works on a network without the internet.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import swagger_ui
from quart import Response, current_app, request, send_from_directory
from quart_schema import QuartSchema
from quart_schema.documentation import document_querystring, document_request, document_response
from quart_schema.openapi import OpenAPIProvider
from quart_schema.validation import DataSource
from quart_trio import QuartTrio
from werkzeug.exceptions import NotFound
from werkzeug.routing import Rule

from engine.errors import InvalidInput, PayloadTooLarge, quote
from engine.events import EXACT_FLOAT_INT, MAX_BATCH_EVENTS
from web.api import models as api_models
from web.apis import NATIVE, OPERATIONS, declared_family, family_of, plain_text
from web.bodies import MSGPACK_TYPES, NDJSON_TYPES, decode_body, media_type, read_body
from web.context import settings_of
from web.serving.settings import Settings

F = TypeVar("F", bound=Callable[..., Awaitable[Response]])

#: Blueprints whose routes make up the native API document (besides any blueprint whose
#: module declares ``SEED = "pointspace"``, see ``web/apis.py``).
DOCUMENTED_BLUEPRINTS = frozenset({"native", "admin"})
#: App-level routes documented with them.
DOCUMENTED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
#: And the dashboard's data routes (not its page and files).
DOCUMENTED_PREFIXES = ("/ui/api/",)
#: Swagger UI's two files that ``/docs`` loads; nothing else is served from the package.
SWAGGER_FILES = frozenset({"swagger-ui-bundle.js", "swagger-ui.css"})
SWAGGER_DIR = Path(swagger_ui.__file__).parent / "static"
REF_TEMPLATE = "#/components/schemas/{name}"

#: ``/docs``: Swagger UI 5 over ``/openapi.json``, a standards-mode HTML5 document (without the
#: doctype a browser renders in quirks mode). Static: nothing of the request goes into it.
DOCS_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>pointspace API</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script>
    SwaggerUIBundle({
      url: "/openapi.json",
      dom_id: "#swagger-ui",
      deepLinking: true,
      layout: "BaseLayout",
      presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
      showExtensions: true,
      showCommonExtensions: true
    });
  </script>
</body>
</html>
"""


def install(app: QuartTrio, settings: Settings) -> None:
    """Serve ``/openapi.json`` and ``/docs`` (Swagger UI) for ``app``."""
    security: dict[str, Any] | None = None
    if settings.jwt_key_dir is not None:
        security = {"bearer": {"type": "http", "scheme": "bearer", "bearer_format": "JWT"}}
    QuartSchema(
        app,
        openapi_path="/openapi.json",
        swagger_ui_path=None,  # our own page below: quart-schema's lacks <!DOCTYPE html> and <html>
        redoc_ui_path=None,
        scalar_ui_path=None,
        info={
            "title": "pointspace",
            "version": _version(),
            "description": (
                "Real-time counters and rankings. Bodies are JSON, or msgpack with "
                "`Content-Type: application/msgpack`; answers follow `Accept`. Errors are "
                '`{"error", "field"}` with a 4xx status.'
            ),
        },
        security_schemes=security,
        security=[{"bearer": []}] if security else None,
        conversion_preference="msgspec",
        openapi_provider_class=NativeOpenAPI,
    )

    @app.get("/docs", endpoint="swagger_ui")
    async def swagger_page() -> Response:
        response = Response(DOCS_PAGE, content_type="text/html; charset=utf-8")
        response.cache_control.no_cache = True
        return response

    @app.get("/docs/<path:name>")
    async def swagger_asset(name: str) -> Response:
        if name not in SWAGGER_FILES:
            raise NotFound()
        response = await send_from_directory(SWAGGER_DIR, name)
        response.cache_control.max_age = 86400
        return response


def _version() -> str:
    from web.version import VERSION

    return VERSION


############################################################################################
# The document


def type_schema(tp: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The JSON schema of any msgspec-describable type, and the components it refers to."""
    (schema,), components = msgspec.json.schema_components([tp], ref_template=REF_TEMPLATE)
    return schema, components


class NativeOpenAPI(OpenAPIProvider):
    """quart-schema's provider, restricted to the native API and aware of its conventions.

    quart-schema's own schema builder expects one struct per body; ours takes unions (a list
    or an object, for ``/api/events``), bodies in several media types, and one error shape for
    every 4xx/5xx answer. The document is built once and kept: routes do not change while the
    app runs.
    """

    _cached: dict[str, Any] | None = None
    #: tag -> description, filled while the paths are built
    _tags: dict[str, str]

    def schema(self) -> dict[str, Any]:
        if self._cached is None:
            self._tags = {}
            document = super().schema()
            document["paths"] = dict(sorted(document["paths"].items()))
            document["tags"] = [{"name": name, "description": text}
                                for name, text in sorted(self._tags.items(), key=_tag_order)]
            self._cached = document
        return self._cached

    def generate_rules(self) -> Any:
        for rule in super().generate_rules():
            blueprint = rule.endpoint.rsplit(".", 1)[0] if "." in rule.endpoint else None
            documented = blueprint in DOCUMENTED_BLUEPRINTS or rule.rule in DOCUMENTED_PATHS
            # Any blueprint whose module declares an API family (web/apis.py): the native
            # API's own modules (SEED = "pointspace") are modelled, the seeds' are listed.
            declared = declared_family(self._app, rule.endpoint) is not None
            if documented or declared or rule.rule.startswith(DOCUMENTED_PREFIXES):
                yield rule

    def _tag(self, rule: Rule) -> tuple[str, bool]:
        """The operation's tag (its API family; the native API's by its first path segment)
        and whether it is a seed-compatible route. Registers the tag's description."""
        family, doc = family_of(self._app, rule.endpoint)
        if family == NATIVE:
            segment = rule.rule.split("/")[2] if rule.rule.count("/") >= 2 else family
            self._tags.setdefault(segment, f"pointspace's own API: `/api/{segment}`.")
            return segment, False
        seed = family not in (OPERATIONS,) and declared_family(self._app, rule.endpoint) is not None
        if seed:
            doc = (f"{doc} Seed-compatible: bodies and errors are the seed's own (listed, "
                   "not modelled here; `GET /api/apis` lists every path).")
        elif rule.rule.startswith(DOCUMENTED_PREFIXES):
            family, doc = "ui", "The dashboard's data (`/ui`)."
        self._tags.setdefault(family, doc)
        return family, seed

    def build_paths(self, rule: Rule) -> tuple[dict, dict]:
        paths, components = super().build_paths(rule)
        tag, seed = self._tag(rule)
        for operations in paths.values():
            for operation in operations.values():
                operation["tags"] = [tag]
                for key in ("summary", "description"):
                    if key in operation:
                        operation[key] = plain_text(operation[key])
                if not operation.get("description"):
                    operation.pop("description", None)
                if seed:
                    operation["x-pointspace-seed"] = tag
                    operation["responses"] = {"default": {"description": SEED_ANSWER}}
                    if not operation["parameters"]:
                        del operation["parameters"]
        if seed:
            return paths, components
        error, error_components = type_schema(api_models.Error)
        components.update(error_components)
        for operations in paths.values():
            for operation in operations.values():
                responses = operation["responses"] = {
                    str(code): response for code, response in operation["responses"].items()
                }
                if not any(str(code).startswith("2") for code in responses):
                    responses["200"] = {"description": "OK"}
                for code, text in (("4XX", "The request was refused; nothing changed."),
                                   ("5XX", "The server could not complete the request.")):
                    responses[code] = {
                        "description": text,
                        "content": {"application/json": {"schema": error}},
                    }
                if not operation["parameters"]:
                    del operation["parameters"]
        return paths, components

    def build_request_body(self, model: Any, source: DataSource) -> tuple[dict, dict]:
        schema, components = type_schema(model)
        media_types = _BODY_MEDIA.get(model, ("application/json", MSGPACK_TYPES[0]))
        content = {media: {"schema": schema} for media in media_types}
        return {"required": model not in _OPTIONAL_BODIES, "content": content}, components

    def build_querystring_parameters(self, model: Any) -> tuple[list[dict], dict]:
        schema, components = type_schema(model)
        target = components[schema["$ref"].rsplit("/", 1)[1]]
        del components[schema["$ref"].rsplit("/", 1)[1]]
        required = set(target.get("required", ()))
        parameters = []
        for name, field_schema in target["properties"].items():
            parameter: dict[str, Any] = {"name": name, "in": "query", "schema": field_schema}
            if name in required:
                parameter["required"] = True
            parameters.append(parameter)
        return parameters, components

    def build_response_object(self, model: Any, headers_model: Any) -> tuple[dict, dict]:
        description = (getattr(model, "__doc__", None) or "OK").strip().splitlines()[0]
        if model is api_models.NoContent:
            return {"description": description}, {}
        if model is api_models.SnapshotStream:
            binary = {"type": "string", "contentMediaType": "application/octet-stream"}
            return {"description": description,
                    "content": {"application/octet-stream": {"schema": binary}}}, {}
        schema, components = type_schema(model)
        response = {
            "description": description,
            "content": {"application/json": {"schema": schema}, MSGPACK_TYPES[0]: {"schema": schema}},
        }
        return response, components


#: What a seed-compatible operation answers, in the document.
SEED_ANSWER = "The seed system's own answer and error body (see its documentation)."


def _tag_order(item: tuple[str, str]) -> tuple[int, str]:
    """Native tags first, then the seeds', then the dashboard's and operations'."""
    name, text = item
    rank = 0 if text.startswith("pointspace's own API") else 2 if name in ("ui", OPERATIONS) else 1
    return rank, name


#: The media types each body model is documented with (see :func:`accepts`).
_BODY_MEDIA: dict[Any, tuple[str, ...]] = {}
#: Bodies that may be empty (a stream of no lines).
_OPTIONAL_BODIES: set[Any] = set()


############################################################################################
# Validation from the same declarations


def accepts(
    model: Any,
    *,
    ndjson: bool = False,
    raw: bool = False,
    root: str = "body",
    batch: str | None = None,
    decode: Callable[[bytes, str | None], Any] | None = None,
) -> Callable[[F], F]:
    """Document ``model`` as the route's body and validate every request against it.

    The route gets ``body=``: the validated struct, or (``raw=True``) the decoded value
    itself once it fits -- for batches of events, which the engine's validator turns into
    tuples (the structs are built for the check and dropped: ~0.1 us an event against ~0.3 us
    for the engine's own pass; ``bench/bench_http.py`` showed 3-5%, near its noise).
    ``ndjson=True`` also accepts (and documents) a body of JSON lines, read as a list.
    ``root`` names a body that is a bare list in error fields (``counts[3].ts``). ``batch``
    names the list of a batch body (``events``): over ``MAX_BATCH_EVENTS`` items is a 413,
    answered before any item is looked at.

    ``decode(data, content_type)``, when given, replaces the decoding and every check after
    it: the route gets what it returns as ``body=``. It is for a route that decodes its bytes
    straight into what it needs (``/api/events``: ``web/api/event_bodies.py``), and must raise
    the errors the model's check would, word for word (its tests hold it to that).
    """
    media = ("application/json", MSGPACK_TYPES[0]) + ((NDJSON_TYPES[0],) if ndjson else ())
    _BODY_MEDIA[model] = media

    def decorate(route: F) -> F:
        @functools.wraps(route)
        async def validated(*args: Any, **kwargs: Any) -> Response:
            data = await read_body(request, settings_of(current_app).max_body_bytes)
            content_type = request.headers.get("Content-Type")
            if not ndjson and media_type(content_type) in NDJSON_TYPES:
                raise InvalidInput("this route takes a JSON or msgpack body, not NDJSON", "body")
            if decode is not None:
                return await route(*args, body=decode(data, content_type), **kwargs)
            decoded = decode_body(data, content_type)
            if batch is not None:
                check_batch_size(decoded, batch, root)
            checked = check(decoded, model, root)
            return await route(*args, body=decoded if raw else checked, **kwargs)

        return document_request(model, source=DataSource.JSON)(validated)  # type: ignore[return-value]

    return decorate


def check_batch_size(body: Any, name: str, root: str) -> None:
    """``PayloadTooLarge`` for a batch of more than ``MAX_BATCH_EVENTS`` items: a bare list
    (named ``root``) or the ``name`` list of an object."""
    items, field = (body.get(name), name) if isinstance(body, dict) else (body, root)
    if isinstance(items, list) and len(items) > MAX_BATCH_EVENTS:
        raise PayloadTooLarge(
            f"{field} holds {len(items)} items; at most {MAX_BATCH_EVENTS} per batch", field
        )


def document_stream(line_model: Any) -> Callable[[F], F]:
    """Document an NDJSON body read as a stream (the route reads it itself, line by line);
    an empty stream is a stream of no events."""
    _BODY_MEDIA[line_model] = (NDJSON_TYPES[0],)
    _OPTIONAL_BODIES.add(line_model)
    return document_request(line_model, source=DataSource.JSON)  # type: ignore[return-value]


def query_args(model: type[msgspec.Struct]) -> Callable[[F], F]:
    """Document ``model`` as the route's query string and pass it validated as ``args=``."""

    def decorate(route: F) -> F:
        @functools.wraps(route)
        async def validated(*args: Any, **kwargs: Any) -> Response:
            values = check(request.args.to_dict(), model, "query", strict=False)
            return await route(*args, args=values, **kwargs)

        return document_querystring(model)(validated)  # type: ignore[return-value]

    return decorate


def answers(model: Any, status: int = 200) -> Callable[[F], F]:
    """Document the route's successful answer (quart-schema's ``document_response``)."""
    return document_response(model, status)  # type: ignore[return-value]


def check(value: Any, model: Any, root: str, *, strict: bool = True) -> Any:
    """``value`` converted to ``model``, or ``InvalidInput`` naming the field at fault.

    >>> check({"t1": "5", "t2": 9}, api_models.CounterArgs, "query", strict=False)
    CounterArgs(t1=5, t2=9)
    >>> check([{"metric": "m", "user": 1, "value": 1, "ts": -1}], api_models.EventsBody, "body")
    Traceback (most recent call last):
    ...
    engine.errors.InvalidInput: body[0].ts: expected `int` >= 0 (was -1)
    """
    try:
        return msgspec.convert(value, model, strict=strict)
    except msgspec.ValidationError as exc:
        error = str(exc)
    if "got `float`" in error:
        # 2.0 is an integer in JSON Schema's sense (and Python's json writes it so): accept
        # integral floats as the engine's validators do, walking the body only on this path.
        # (Any field: ``int | None`` and ``int | str`` fields say so in their own words.)
        try:
            return msgspec.convert(integral_floats_as_ints(value), model, strict=strict)
        except msgspec.ValidationError as exc:
            error = str(exc)
    message, field = explain(error, root, value)
    raise InvalidInput(message, field) from None


def integral_floats_as_ints(value: Any) -> Any:
    """``value`` with every float that stands for one integer made an int.

    >>> integral_floats_as_ints({"a": [2.0, 2.5, "3.0"], "b": 1e3})
    {'a': [2, 2.5, '3.0'], 'b': 1000}
    """
    if type(value) is float:
        return int(value) if value.is_integer() and abs(value) <= EXACT_FLOAT_INT else value
    if type(value) is list:
        return [integral_floats_as_ints(item) for item in value]
    if type(value) is dict:
        return {key: integral_floats_as_ints(item) for key, item in value.items()}
    return value


_FIELD = re.compile(r"^Object (?P<what>missing required|contains unknown) field `(?P<name>[^`]*)`$")
#: msgspec messages that end with the value itself (``Invalid enum value 'xxx...'``), whole.
_ECHOES = re.compile(r"^(?P<rule>Invalid (?:enum )?value) ")
#: msgspec's words for a name that breaks ``api_models.TEXT_PATTERN``, said plainly instead.
_TEXT_MISMATCH = f"Expected `str` matching regex {api_models.TEXT_PATTERN!r}"
#: Longest key (a client's unknown field name) written into a field path; longer ones are cut.
MAX_KEY_CHARS = 64


def explain(error: str, root: str, value: Any = None) -> tuple[str, str]:
    """msgspec's ``Expected `int`, got `str` - at `$.events[3].ts``` as a message and a
    field in our style: (``events[3].ts: expected `int`, got `str` (was 'x')``,
    ``events[3].ts``); the value at fault is quoted (its start: ``engine.errors.quote``) when
    ``value`` (the body) holds it.

    msgspec's message quotes some values whole (an unknown field's name, an invalid enum
    value), and the client chose them: the message is split with ``str.rpartition`` (a
    regular expression over it took half a second for a 10 MB name), an echoed value is
    replaced by the quoted start of it, and a name is cut to ``MAX_KEY_CHARS`` in the field.

    >>> explain("Expected `int`, got `str` - at `$.events[0].ts`", "body",
    ...         {"events": [{"ts": "x"}]})
    ("events[0].ts: expected `int`, got `str` (was 'x')", 'events[0].ts')
    >>> explain("Object missing required field `t1`", "body")
    ('t1 is required', 't1')
    >>> explain("Object contains unknown field `x` - at `$[2]`", "body")
    ('body[2].x is not a known field', 'body[2].x')
    >>> explain("Invalid enum value 'weeks' - at `$.step`", "body", {"step": "weeks"})
    ("step: invalid enum value (was 'weeks')", 'step')
    >>> explain(_TEXT_MISMATCH + " - at `$.metric`", "body", {"metric": "a\\x00"})
    ("metric: expected `str` without control characters or surrogates (was 'a\\\\x00')", 'metric')
    """
    message, at, path = error.rpartition(" - at `$")
    if not at or not path.endswith("`") or "`" in path[:-1]:
        message, path = error, ""
    else:
        path = path[:-1]
    found, culprit = _value_at(value, path)
    field = path[1:] if path.startswith(".") else (root + path if path else "")
    named = _FIELD.match(message)
    if named:
        name = named["name"]
        if len(name) > MAX_KEY_CHARS:
            name = f"{name[:MAX_KEY_CHARS]}... ({len(name)} characters)"
        field = f"{field}.{name}" if field else name
        what = "is required" if named["what"] == "missing required" else "is not a known field"
        return f"{field} {what}", field
    field = field or root
    echo = _ECHOES.match(message)
    if echo and found:
        message = echo["rule"]  # the value follows as "(was ...)", quoted
    elif message == _TEXT_MISMATCH:
        message = "Expected `str` without control characters or surrogates"
    was = f" (was {quote(culprit)})" if found else ""
    return f"{field}: {message[:1].lower()}{message[1:]}{was}", field


_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def _value_at(value: Any, path: str) -> tuple[bool, Any]:
    """(found, the value) at a msgspec path such as ``.events[3].ts`` within ``value``."""
    if not path or value is None:
        return False, None
    for key, index in _STEP.findall(path):
        try:
            value = value[int(index)] if index else value[key]
        except (KeyError, IndexError, TypeError):
            return False, None
    return True, value
