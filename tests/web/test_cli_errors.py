"""Operator messages (issue 16): every CLI failure is one ``Error:`` line naming what and where,
with a non-zero exit status; a traceback only with ``--debug``. Real processes throughout."""

from __future__ import annotations

import functools
import socket
import subprocess

from conftest import free_port, run_cli, start_server

#: ``pointspace ARGS...`` with stderr and stdout in one stream: the one line is all there is.
pointspace = functools.partial(run_cli, merge_stderr=True, timeout=60)


def one_error_line(result: subprocess.CompletedProcess[str], status: int = 1) -> str:
    lines = result.stdout.splitlines()
    assert result.returncode == status, result.stdout
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stdout
    return lines[0]


def test_cli_busy_port_is_one_line_naming_the_flag_and_no_false_listening(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = one_error_line(pointspace("serve", "--port", port, "--data-dir", tmp_path / "d"))
        assert line == (
            f"Error: cannot listen on 127.0.0.1:{port}: Address already in use; another process "
            "listens there (another pointspace?): stop it or choose another --port (from --port)"
        )
        # The same port from the environment names the environment variable.
        line = one_error_line(pointspace("serve", "--data-dir", "", env={"POINTSPACE_PORT": str(port)}))
        assert line.endswith("(from $POINTSPACE_PORT)")
    assert not (tmp_path / "d").exists()  # refused before recovery touched anything


def test_cli_data_dir_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("")
    line = one_error_line(pointspace("serve", "--port", free_port(), "--data-dir", tmp_path / "f"))
    assert line == f"Error: data directory '{tmp_path / 'f'}' is not a directory; give a directory (from --data-dir)"


def test_cli_empty_jwt_key_dir(tmp_path):
    line = one_error_line(pointspace("serve", "--port", free_port(), "--data-dir", "",
                                     "--jwt-key-dir", tmp_path))
    assert line.startswith(f"Error: no *.pub RSA public keys in '{tmp_path}'")
    assert line.endswith("(from --jwt-key-dir)")


def test_cli_bad_retention(tmp_path):
    line = one_error_line(pointspace("serve", "--data-dir", "", "--retention", "weeks=5"))
    assert line == ("Error: retention levels must be among ['second', 'minute', 'hour', 'day', "
                    "'month'], got ['weeks'] (from --retention)")
    line = one_error_line(pointspace("serve", "--data-dir", "", "--retention", "second=x"), status=2)
    assert line == ("Error: invalid value for --retention: expected LEVEL=SECONDS, got 'second=x' "
                    "(see 'pointspace serve --help')")
    line = one_error_line(pointspace("serve", "--data-dir", "", env={"POINTSPACE_RETENTION": "weeks=5"}))
    assert line.endswith("(from $POINTSPACE_RETENTION)")


def test_cli_export_with_nothing_listening(tmp_path):
    port = free_port()
    line = one_error_line(pointspace("snapshot", "export", tmp_path / "x.pssnap", "--url", f"http://127.0.0.1:{port}"))
    assert line == (f"Error: cannot connect to http://127.0.0.1:{port}/api/admin/snapshot/export: "
                    "Connection refused (is the server running? check --url)")
    assert not (tmp_path / "x.pssnap").exists()


def test_cli_data_dir_in_use(tmp_path):
    server = start_server(tmp_path, data_dir=tmp_path / "d")
    try:
        line = one_error_line(pointspace("serve", "--port", free_port(), "--data-dir", tmp_path / "d"))
        assert line == (f"Error: data directory '{tmp_path / 'd'}' in use by PID {server.process.pid}; "
                         "stop it first (one server or tool per data directory) (from --data-dir)")
    finally:
        server.stop()


def test_cli_debug_shows_the_traceback(tmp_path):
    result = pointspace("--debug", "snapshot", "export", tmp_path / "x.pssnap", "--url",
                        f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stdout
    assert "httpx.ConnectError" in result.stdout


def test_cli_domain_error_of_a_tool_names_its_flag(tmp_path):
    """Commands leave formatting to the group: an error naming a field gets that field's flag."""
    missing = tmp_path / "missing"
    line = one_error_line(pointspace("snapshot", "export", tmp_path / "x.pssnap", "--data-dir", missing))
    assert line == f"Error: no data directory at '{missing}' (--data-dir)"
    line = one_error_line(pointspace("log", "repair", "--data-dir", missing, "--yes"))
    assert line == f"Error: no data directory at '{missing}' (--data-dir)"


def test_cli_import_into_a_directory_in_use_names_the_flag(tmp_path):
    server = start_server(tmp_path, data_dir=tmp_path / "d")
    try:
        snapshot = tmp_path / "s.pssnap"
        assert pointspace("snapshot", "export", snapshot, "--url", server.url).returncode == 0
        result = pointspace("snapshot", "import", snapshot, "--data-dir", tmp_path / "d", "--force")
        assert result.returncode == 1, result.stdout
        line = result.stdout.splitlines()[-1]  # after the progress bar's label
        assert line == (f"Error: data directory '{tmp_path / 'd'}' in use by PID {server.process.pid}; "
                        "stop it first (one server or tool per data directory) (--data-dir)")
    finally:
        server.stop()


def test_cli_bad_environment_setting_of_config_show_is_one_line():
    line = one_error_line(pointspace("config", "show", env={"POINTSPACE_PORT": "eighty"}))
    assert line.startswith("Error: ") and "POINTSPACE_PORT" in line, line
