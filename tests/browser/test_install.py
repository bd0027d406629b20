"""The browser fixture's install step (tests/browser/conftest.py: ensure_installed) and its
script: a machine without chromium gets it installed, or the browser tests fail with the
reason -- they never skip."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .conftest import INSTALL_SCRIPT, ensure_installed


def script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "install.sh"
    path.write_text(f"set -e\n{body}\n")
    return path


def test_ensure_installed_runs_nothing_when_present(tmp_path):
    tool = tmp_path / "tool"
    tool.write_text("")
    tool.chmod(0o755)
    ensure_installed((tool,), script(tmp_path, "exit 3"), timeout=10)


def test_ensure_installed_runs_the_script_when_missing(tmp_path):
    tool = tmp_path / "tool"
    ensure_installed((tool,), script(tmp_path, f"touch {tool} && chmod +x {tool}"), timeout=10)
    assert tool.exists()


def test_ensure_installed_fails_with_the_script_output(tmp_path):
    tool = tmp_path / "tool"
    with pytest.raises(pytest.fail.Exception, match=r"(?s)exit 100; missing: .*tool.*E: Unable"):
        ensure_installed((tool,), script(tmp_path, "echo 'E: Unable to locate' >&2; exit 100"), 10)


def test_ensure_installed_fails_when_the_script_leaves_a_tool_missing(tmp_path):
    tool = tmp_path / "tool"
    with pytest.raises(pytest.fail.Exception, match=r"exit 0; missing: .*tool"):
        ensure_installed((tool,), script(tmp_path, "echo done"), timeout=10)


def test_ensure_installed_fails_on_timeout(tmp_path):
    with pytest.raises(pytest.fail.Exception, match=r"(?s)exit timeout after 0.5 s.*started"):
        ensure_installed((tmp_path / "tool",), script(tmp_path, "echo started; exec sleep 30"), 0.5)


def test_install_script_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(INSTALL_SCRIPT)]).returncode == 0
