"""The tree keeps its shape: no import cycles between the project's modules.

Every import counts, at module level or inside a function (a lazy import hides a cycle from
the interpreter, not from a reader), ``if TYPE_CHECKING:`` ones included. A cycle means two
modules that cannot be read, tested or moved one without the other; the fix is a third module
both import, or an interface the lower one declares (``engine/journal.py``'s ``Recoverable``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "web", "snapshots", "client", "cluster")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports anywhere in its source."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pkg import mod`` imports the module pkg.mod; ``from mod import name`` mod.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]
        else:
            continue
        out.update(t for t in targets if t in modules and t != name)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("package", ["engine", "web", "snapshots"])
def test_package_has_modules(package: str) -> None:
    assert any(name.startswith(package) for name in project_modules())


def test_no_import_cycles() -> None:
    modules = project_modules()
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert cycles(graph) == []


def test_engine_never_imports_web() -> None:
    modules = project_modules()
    for name, path in modules.items():
        if name.split(".")[0] in ("engine", "snapshots"):
            bad = {m for m in imports_of(name, path, modules) if m.split(".")[0] == "web"}
            assert not bad, f"{name} imports {sorted(bad)}: the core and storage never import web/"


def test_a_single_node_never_imports_the_cluster() -> None:
    """``cluster/`` needs the [cluster] extra (nats-py): nothing a plain install runs may
    import it. Within it, only ``cluster/serving/`` (a node serving the web app) imports the
    web layer; the cluster's core does not."""
    modules = project_modules()
    for name, path in modules.items():
        top = name.split(".")[0]
        imported = {m.split(".")[0] for m in imports_of(name, path, modules)}
        if top != "cluster":
            assert "cluster" not in imported, f"{name} imports cluster/: a plain install would need nats-py"
        elif not name.startswith("cluster.serving"):
            assert "web" not in imported, f"{name} imports web/: only cluster/serving/ serves HTTP"


def test_only_the_cluster_imports_nats() -> None:
    for package in ("engine", "web", "snapshots", "client"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                assert not any(n == "nats" or n.startswith("nats.") for n in names), path
