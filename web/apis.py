"""Which APIs this server speaks, at which paths: derived from the app's URL map.

Every blueprint's module may declare, at module level,

* ``SEED = "psd"``: the API family its routes belong to (a seed system's name for the
  seed-compatible APIs under ``web/compat/``; ``"pointspace"`` for the native API), and
* ``SEED_DOC = "..."``: one line saying what it is (else the module docstring's first line).

A blueprint whose module declares nothing is listed under the blueprint's own name, and
app-level routes (health, metrics, the documentation) under ``"operations"``. So a new seed
appears in ``GET /api/apis``, in the OpenAPI document's tags and in the README table as soon
as its blueprint is registered: nothing here lists the seeds by hand.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from typing import Any

#: The family of app-level routes (no blueprint): health, metrics, /openapi.json, /docs.
OPERATIONS = "operations"
NATIVE = "pointspace"
_CONVERTER = re.compile(r"<(?:[^:>]*:)?([^>]+)>")
_RST_LITERAL = re.compile(r"``([^`]+)``")


@dataclass(slots=True)
class ApiFamily:
    name: str
    doc: str
    #: path (OpenAPI style, ``/lists/{list_id}``) -> methods
    routes: dict[str, set[str]] = field(default_factory=dict)

    def plain(self) -> dict[str, Any]:
        return {"name": self.name, "doc": self.doc,
                "paths": [{"path": path, "methods": sorted(methods)}
                          for path, methods in sorted(self.routes.items())]}


def plain_text(doc: str) -> str:
    """reStructuredText literals as Markdown's: ``x`` -> `x` (OpenAPI's text is CommonMark).

    >>> plain_text("see ``/lists`` and ``x``")
    'see `/lists` and `x`'
    """
    return _RST_LITERAL.sub(r"`\1`", doc)


def openapi_path(rule: str) -> str:
    """``/lists/<list_id>`` -> ``/lists/{list_id}``; ``<path:name>`` -> ``{name}``."""
    return _CONVERTER.sub(r"{\1}", rule)


def declared_family(app: Any, endpoint: str) -> str | None:
    """The ``SEED`` the module of the route's blueprint declares, if it declares one."""
    if "." not in endpoint:
        return None
    blueprint = app.blueprints.get(endpoint.rsplit(".", 1)[0])
    module = sys.modules.get(getattr(blueprint, "import_name", ""), None)
    return getattr(module, "SEED", None)


def family_of(app: Any, endpoint: str) -> tuple[str, str]:
    """(family name, one-line doc) of the route named ``endpoint``."""
    if "." not in endpoint:
        return OPERATIONS, "Health, readiness, Prometheus metrics and the API documentation."
    blueprint = app.blueprints.get(endpoint.rsplit(".", 1)[0])
    module = sys.modules.get(getattr(blueprint, "import_name", ""), None)
    name = getattr(module, "SEED", None) or endpoint.rsplit(".", 1)[0]
    doc = getattr(module, "SEED_DOC", None) or ((getattr(module, "__doc__", None) or "").strip().splitlines() or [""])[0]
    return name, plain_text(doc)


def served_apis(app: Any) -> list[dict[str, Any]]:
    """Every API family with its paths and methods, the native API first, then by name.

    Runtime complexity: O(routes).
    """
    families: dict[str, ApiFamily] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        name, doc = family_of(app, rule.endpoint)
        family = families.setdefault(name, ApiFamily(name, doc))
        methods = {m for m in rule.methods or () if m not in ("HEAD", "OPTIONS")}
        family.routes.setdefault(openapi_path(rule.rule), set()).update(methods)
    order = sorted(families, key=lambda n: (n != NATIVE, n == OPERATIONS, n))
    return [families[name].plain() for name in order]
