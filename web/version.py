"""The running pointspace's version, as the installed distribution states it.

One place for ``pointspace --version``, ``/healthz``, ``/metrics``'s ``pointspace_build_info``
and the OpenAPI document's ``info.version``. ``importlib.metadata`` reads what ``pip install``
recorded (an editable install included), so the version is pyproject's, never a second copy.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

#: The distribution name in pyproject.toml.
DISTRIBUTION = "pointspace"


def installed_version() -> str:
    """pyproject's version of the installed package; ``0+unknown`` (a PEP 440 local version,
    sorting below every release) when run from a source tree that was never installed."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "0+unknown"


VERSION = installed_version()
