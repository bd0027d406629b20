"""Configuration: defaults, a TOML file, environment variables and flags, in that order.

Precedence (later wins), documented in the README and shown by ``pointspace config show``:

1. the defaults in ``web/serving/settings.py``;
2. a TOML file: ``--config FILE``, else ``$POINTSPACE_CONFIG``, else ``./pointspace.toml`` when
   it exists -- top-level keys named like the settings (``port = 1155``,
   ``data_dir = "/var/lib/pointspace"``, ``[retention]`` with ``second = 7776000``);
3. environment variables ``POINTSPACE_<SETTING>`` (``POINTSPACE_PORT=8080``,
   ``POINTSPACE_RETENTION="second=7776000,minute=31536000"``);
4. command-line flags.

Every value is checked against its setting's type; an unknown key or a bad value is an error
naming where it came from, so a typo in a config file never passes silently.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.errors import InvalidInput
from web.serving.settings import Settings

ENV_PREFIX = "POINTSPACE_"
DEFAULT_CONFIG_FILE = Path("pointspace.toml")
FSYNC_POLICIES = ("always", "everysec", "no")
LOG_FORMATS = ("json", "text")

_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
#: Settings that are TOML tables of level = seconds (``[retention]``); in the environment
#: ``second=7776000,minute=31536000``.
TABLES = ("retention", "unique_retention")
#: Settings that are durations, sizes or counts: zero or less is a mistake, said at start.
POSITIVE = ("port", "max_body_bytes", "body_timeout_s", "response_timeout_s", "stream_group_events",
            "max_stream_bytes", "max_inflated_bytes", "body_rate_window_s", "max_connections",
            "stats_gauge_period_s", "stats_stream_interval_s", "header_timeout_s", "cluster_partitions",
            "cluster_replicas", "cluster_ttl_s",
            "cluster_snapshot_interval_s")


def _coerce(name: str, value: Any, source: str) -> Any:
    """``value`` as the type of setting ``name``; ``InvalidInput`` naming the source if not."""
    default = _FIELDS[name].default
    where = f"{name} (from {source})"
    try:
        if name in ("data_dir", "jwt_key_dir", "backup_dir"):
            return None if value in (None, "") else Path(value)
        if name in TABLES:
            if isinstance(value, str):
                value = dict(part.split("=", 1) for part in value.split(",") if part.strip())
            if not isinstance(value, Mapping):
                raise ValueError("expected a table of level = seconds")
            return {str(k).strip(): int(v) for k, v in value.items()}
        if isinstance(default, tuple):
            if isinstance(value, str):
                value = [part.strip() for part in value.split(",") if part.strip()]
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise ValueError("expected a list of strings")
            return tuple(value)
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError("expected true or false")
                return value.lower() in ("1", "true", "yes", "on")
            if not isinstance(value, bool):
                raise ValueError("expected true or false")
            return value
        if isinstance(default, int):
            if isinstance(value, bool):
                raise ValueError("expected an integer")
            return int(value)
        if isinstance(default, float):
            return float(value)
        value = str(value)
        if name == "fsync" and value not in FSYNC_POLICIES:
            raise ValueError(f"expected one of {list(FSYNC_POLICIES)}")
        if name == "log_format" and value not in LOG_FORMATS:
            raise ValueError(f"expected one of {list(LOG_FORMATS)}")
        return value
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{where}: {value!r} is not valid: {exc}", name) from None


def load_settings(
    config_file: Path | None = None,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[Settings, dict[str, str]]:
    """The effective settings and, for each one, where its value came from.

    Args:
        config_file: ``--config``; else ``$POINTSPACE_CONFIG``, else ``./pointspace.toml``.
        flags: values given on the command line (``None`` values are "not given").
        environ: the environment (``os.environ`` by default).

    Raises:
        InvalidInput: an unreadable file, an unknown key, or a value of the wrong type.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources = {name: "default" for name in _FIELDS}
    path = config_file or (Path(environ[f"{ENV_PREFIX}CONFIG"]) if f"{ENV_PREFIX}CONFIG" in environ else None)
    if path is None and DEFAULT_CONFIG_FILE.is_file():
        path = DEFAULT_CONFIG_FILE
    if path is not None:
        try:
            table = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise InvalidInput(f"cannot read config file {str(path)!r}: {exc}", "config") from None
        for key, value in table.items():
            if key not in _FIELDS:
                raise InvalidInput(
                    f"unknown setting {key!r} in {str(path)!r}; known: {sorted(_FIELDS)}", key
                )
            values[key] = _coerce(key, value, str(path))
            sources[key] = str(path)
    for name in _FIELDS:
        env = f"{ENV_PREFIX}{name.upper()}"
        if env in environ:
            values[name] = _coerce(name, environ[env], f"${env}")
            sources[name] = f"${env}"
    for name, value in (flags or {}).items():
        if value is not None:
            values[name] = _coerce(name, value, f"--{name.replace('_', '-')}")
            sources[name] = f"--{name.replace('_', '-')}"
    settings = Settings(**values)
    _check_allow_lists(settings, sources)
    _check_uniques(settings, sources)
    for name in POSITIVE:
        if not getattr(settings, name) > 0:
            raise InvalidInput(f"{name} (from {sources[name]}) must be greater than 0, got "
                               f"{getattr(settings, name)!r}", name)
    return settings, sources


def _check_uniques(settings: Settings, sources: Mapping[str, str]) -> None:
    """The unique-count settings hold together (engine/uniques.py checks them), at start."""
    from engine.uniques import UniqueSettings

    try:
        UniqueSettings(
            levels=settings.unique_levels,
            exact_limit=None if settings.unique_exact_limit < 0 else settings.unique_exact_limit,
            lg_k=settings.unique_lg_k, retention=settings.unique_retention,
        )
    except InvalidInput as exc:
        name = exc.field or "unique_levels"
        raise InvalidInput(f"{exc.message} (from {sources.get(name, 'default')})", name) from None


def _check_allow_lists(settings: Settings, sources: Mapping[str, str]) -> None:
    """Host and Origin allow-list entries parse as the edge will read them (web/edge.py), so a
    typo stops the server at start instead of refusing every request."""
    from web.edge import EdgePolicy

    try:
        EdgePolicy.from_settings(settings)
    except ValueError as exc:
        name = "allowed_hosts" if "allowed_hosts" in str(exc) else "allowed_origins"
        raise InvalidInput(f"{exc} (from {sources[name]})", name) from None


def describe(settings: Settings, sources: Mapping[str, str]) -> str:
    """The effective settings as TOML, each line commented with its source."""
    lines = []
    for name in _FIELDS:
        value = getattr(settings, name)
        if name in TABLES:
            continue
        if isinstance(value, Path):
            rendered = f'"{value}"'
        elif value is None:
            rendered = '""'
        elif isinstance(value, bool):
            rendered = "true" if value else "false"
        elif isinstance(value, str):
            rendered = f'"{value}"'
        elif isinstance(value, tuple):
            rendered = "[" + ", ".join(f'"{v}"' for v in value) + "]"
        else:
            rendered = str(value)
        lines.append(f"{name} = {rendered}  # {sources[name]}")
    for table in TABLES:
        lines.append(f"\n[{table}]  # {sources[table]}")
        for level, seconds in getattr(settings, table).items():
            lines.append(f"{level} = {seconds}")
    return "\n".join(lines)
