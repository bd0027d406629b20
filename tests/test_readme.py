"""The README's examples run as written (issue 16): the embedding example is extracted from
README.md and run, and every ``print(...)`` in it must print the comment line under it."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def section_code(title: str) -> str:
    """The first code block (indented four spaces, or fenced) under the ``## title`` heading."""
    readme = (ROOT / "README.md").read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", readme, re.M | re.S)
    assert match, f"README.md has no '## {title}' section"
    body = match[1]
    fenced = re.search(r"^```(?:python)?\n(.*?)^```", body, re.M | re.S)
    if fenced:
        return fenced[1]
    lines, started = [], False
    for line in body.splitlines():
        if line.startswith("    ") or (started and not line.strip()):
            lines.append(line)
            started = True
        elif started:
            break
    return textwrap.dedent("\n".join(lines))


def expected_output(code: str) -> list[str]:
    """The comment line under each ``print(...)`` line, without its ``# ``."""
    lines = code.splitlines()
    out = []
    for i, line in enumerate(lines):
        if line.strip().startswith("print(") and i + 1 < len(lines):
            comment = lines[i + 1].strip()
            assert comment.startswith("# "), f"no expected output under {line.strip()!r}"
            out.append(comment[2:])
    return out


def test_readme_embedding_example_runs_as_written(tmp_path: Path) -> None:
    code = section_code("Embedding")
    assert "trio.run(" in code  # a complete program, not a fragment needing an event loop
    script = tmp_path / "embedding.py"
    script.write_text(code)
    result = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    expected = expected_output(code)
    assert expected, "the example prints nothing to compare"
    assert result.stdout.splitlines() == expected
