"""Configuration precedence (defaults < TOML < environment < flags), errors, `config show`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import InvalidInput
from web.serving.config import describe, load_settings

ROOT = Path(__file__).resolve().parent.parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pointspace.toml"
    path.write_text(text)
    return path


def test_load_settings_precedence(tmp_path: Path) -> None:
    path = write(tmp_path, 'port = 2000\nhost = "0.0.0.0"\nfsync = "always"\n[retention]\nsecond = 100\n')
    env = {"POINTSPACE_PORT": "3000", "POINTSPACE_RETENTION": "second=50,minute=500"}
    settings, sources = load_settings(path, {"port": None, "fsync": "no"}, env)
    assert (settings.host, settings.port, settings.fsync) == ("0.0.0.0", 3000, "no")
    assert settings.retention == {"second": 50, "minute": 500}
    assert sources["host"] == str(path)
    assert sources["port"] == "$POINTSPACE_PORT"
    assert sources["fsync"] == "--fsync"
    assert sources["max_body_bytes"] == "default"


def test_load_settings_config_file_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "access_log = true\n")
    settings, sources = load_settings(None, None, {"POINTSPACE_CONFIG": str(path)})
    assert settings.access_log is True and sources["access_log"] == str(path)


def test_load_settings_empty_data_dir_means_memory(tmp_path: Path) -> None:
    settings, _ = load_settings(None, {"data_dir": ""}, {})
    assert settings.data_dir is None


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("porrt = 1\n", {}, r"^unknown setting 'porrt' in "),
        ('port = "x"\n', {}, r"^port \(from .*pointspace.toml\): 'x' is not valid"),
        ('fsync = "sometimes"\n', {}, r"^fsync \(from .*\): 'sometimes' is not valid"),
        ("", {"POINTSPACE_ACCESS_LOG": "maybe"}, r"^access_log \(from \$POINTSPACE_ACCESS_LOG\)"),
        ("port = [\n", {}, r"^cannot read config file"),
    ],
)
def test_load_settings_rejects_bad_input_naming_the_source(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        load_settings(write(tmp_path, text), None, env)


def test_describe_lists_every_setting_with_its_source() -> None:
    settings, sources = load_settings(None, {"port": 9}, {})
    text = describe(settings, sources)
    assert "port = 9  # --port" in text
    assert 'fsync = "everysec"  # default' in text


def test_cli_config_show(tmp_path: Path) -> None:
    path = write(tmp_path, "stream_group_events = 77\n")
    out = subprocess.run(
        [sys.executable, "-m", "web.serving.cli", "config", "show", "--config", str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "POINTSPACE_PORT": "4242"},
    )
    assert out.returncode == 0, out.stderr
    assert f"stream_group_events = 77  # {path}" in out.stdout
    assert "port = 4242  # $POINTSPACE_PORT" in out.stdout


def test_cli_config_show_bad_file_is_one_line_error(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "web.serving.cli", "config", "show", "--config", str(write(tmp_path, "nope = 1\n"))],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 1
    assert out.stderr.startswith("Error: unknown setting 'nope'")


def test_server_logs_are_json_lines(server) -> None:
    lines = [line for line in server.log().splitlines() if line.startswith("{")]
    assert lines, server.log()
    entry = json.loads(lines[0])
    assert {"ts", "level", "logger", "message"} <= entry.keys()


@pytest.mark.parametrize(("key", "value"), [("ALLOWED_HOSTS", "a b"), ("ALLOWED_ORIGINS", "not-an-origin")])
def test_bad_allow_list_entries_name_their_source(key, value):
    with pytest.raises(InvalidInput, match=rf"\$POINTSPACE_{key}"):
        load_settings(None, environ={f"POINTSPACE_{key}": value})


def test_unique_settings_from_the_environment_and_their_errors():
    settings, sources = load_settings(None, environ={
        "POINTSPACE_UNIQUE_LEVELS": "hour,day", "POINTSPACE_UNIQUE_LG_K": "12",
        "POINTSPACE_UNIQUE_RETENTION": "hour=86400"})
    assert settings.unique_levels == ("hour", "day")
    assert settings.unique_lg_k == 12
    assert settings.unique_retention == {"hour": 86400}
    with pytest.raises(InvalidInput, match=r"unique_lg_k.*\(from \$POINTSPACE_UNIQUE_LG_K\)"):
        load_settings(None, environ={"POINTSPACE_UNIQUE_LG_K": "40"})
    with pytest.raises(InvalidInput, match=r"unique_levels"):
        load_settings(None, environ={"POINTSPACE_UNIQUE_LEVELS": "second"})


@pytest.mark.parametrize("name", ["STATS_GAUGE_PERIOD_S", "MAX_CONNECTIONS", "BODY_TIMEOUT_S"])
def test_durations_and_counts_must_be_positive(name):
    with pytest.raises(InvalidInput, match=rf"{name.lower()} \(from \$POINTSPACE_{name}\) must be greater than 0"):
        load_settings(None, environ={f"POINTSPACE_{name}": "0"})
