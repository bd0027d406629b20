"""The service files (issue 16): what can be checked without a Docker engine or systemd as PID 1.

The Dockerfile installs the package without extras and starts the console script pyproject
declares, copying every package pyproject ships; the unit's hardening leaves the data
directory writable; LICENSE matches pyproject's license. ``systemd-analyze verify`` runs
when the machine has it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_installs_plainly_and_runs_the_declared_script() -> None:
    steps = dockerfile()
    assert steps[0] == ("FROM", "python:3.11-slim")
    runs = " ".join(arg for word, arg in steps if word == "RUN")
    assert re.search(r"\bpip install \.(\s|&&|$)", runs), runs  # no [extras]
    (script,) = PYPROJECT["project"]["scripts"]
    cmd = [arg for word, arg in steps if word == "CMD"][-1]
    assert cmd == f'["{script}", "serve"]'
    # A non-root user before the server starts, the data volume, the port, a health check.
    users = [arg for word, arg in steps if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    env = " ".join(arg for word, arg in steps if word == "ENV")
    data_dir = re.search(r"POINTSPACE_DATA_DIR=(\S+)", env)[1]
    assert ("VOLUME", f'["{data_dir}"]') in steps
    port = re.search(r"POINTSPACE_PORT=(\d+)", env)[1]
    assert ("EXPOSE", port) in steps
    assert "POINTSPACE_HOST=0.0.0.0" in env
    check = [arg for word, arg in steps if word == "HEALTHCHECK"][-1]
    assert f"127.0.0.1:{port}/healthz" in check


def test_dockerfile_copies_every_package_pyproject_ships() -> None:
    copied = {arg.split()[0] for word, arg in dockerfile() if word == "COPY"}
    patterns = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.rstrip("*") for p in patterns}
    assert packages <= copied, packages - copied
    assert {"pyproject.toml", "README.md", "LICENSE"} <= {
        name for word, arg in dockerfile() if word == "COPY" for name in arg.split()[:-1]}


def test_license_matches_pyproject() -> None:
    assert PYPROJECT["project"]["license"] == {"text": "MIT"}
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")


def test_systemd_unit_is_hardened_and_can_write_its_data_dir(tmp_path: Path) -> None:
    unit = (ROOT / "deploy" / "pointspace.service").read_text()
    settings = dict(re.findall(r"^(\w+)=(.*)$", unit, re.M))
    assert settings["StateDirectory"] == "pointspace"
    assert settings["ProtectSystem"] == "strict"
    assert settings["ReadWritePaths"] == "/var/lib/pointspace"
    assert f"POINTSPACE_DATA_DIR={settings['ReadWritePaths']}" in unit
    assert settings["NoNewPrivileges"] == "yes" and settings["Restart"] == "on-failure"
    assert settings["User"] == "pointspace" and int(settings["LimitNOFILE"]) >= 4096
    (script,) = PYPROJECT["project"]["scripts"]
    assert settings["ExecStart"].endswith(f"/bin/{script} serve")
    analyze = shutil.which("systemd-analyze")
    if analyze is not None:  # verify with an executable that exists here
        copy = tmp_path / "pointspace.service"
        copy.write_text(unit.replace(settings["ExecStart"], "/bin/true"))
        result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
