"""No import circles among melange's own modules.

A circle makes the import order matter (a name used before its module finished
loading), and it tells of two modules that are really one, or of a rule with no
single home. Every import counts, at module level or inside a function: the
one inside a function only delays the circle, it does not remove it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("melange", "melange_cli", "melanged", "benchmarks")


def module_names(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Every module of the packages under `root`, by dotted name (a package by its own)."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement may load: each module named, and for
    `from X import a` both X and X.a (which one exists is decided by the caller)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        anchor = package[: len(package) - (node.level - 1)]
        base = ".".join([*anchor, *([base] if base else [])])
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def import_graph(root: Path, packages: Iterable[str]) -> dict[str, set[str]]:
    """Module -> the modules of the same packages it imports, anywhere in its source."""
    modules = module_names(root, packages)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            candidates = _imported(node, name, is_package)
            if isinstance(node, ast.ImportFrom):
                # `from X import a` loads X.a when that is a module, else just X.
                submodules = [c for c in candidates[1:] if c in modules]
                candidates = submodules or candidates[:1]
            graph[name].update(c for c in candidates if c in modules and c != name)
    return graph


def cycles(graph: Mapping[str, Iterable[str]]) -> list[set[str]]:
    """The circles of a directed graph: its strongly connected components of more than
    one node, or of one node that imports itself (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph.get(start, ())))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for target in edges:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(graph.get(target, ()))))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in graph.get(node, ()):
                        found.append(component)
    return found


def test_no_import_cycles_in_melange_cli_daemon_and_benchmarks():
    graph = import_graph(ROOT, PACKAGES)
    assert "melange.store" in graph and "benchmarks.common" in graph  # the walk found them
    assert [sorted(c) for c in cycles(graph)] == []


def test_the_cycle_finder_finds_planted_cycles_and_only_those():
    graph = {
        "a": {"b"},
        "b": {"c"},
        "c": {"a", "d"},  # a -> b -> c -> a
        "d": {"e"},
        "e": set(),
        "f": {"f"},  # a module importing itself
        "g": {"a", "h"},
        "h": {"g"},  # g <-> h, which also leads into the first circle
    }
    found = sorted(sorted(c) for c in cycles(graph))
    assert found == [["a", "b", "c"], ["f"], ["g", "h"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a", "c"}}) == []


def test_a_cycle_through_a_function_level_import_is_found(tmp_path):
    """The whole path, files to circles: a planted circle whose one half imports
    inside a function, and a relative import, are seen; a name imported from a
    module (not a submodule) points at the module."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "one.py").write_text("from pkg.two import helper\n")
    (package / "two.py").write_text(
        "def helper():\n    from pkg import one\n    return one\n"
    )
    (package / "sub" / "three.py").write_text("from ..two import helper\nimport pkg.sub\n")
    (package / "four.py").write_text("import os\nfrom pkg import sub\n")
    graph = import_graph(tmp_path, ["pkg"])
    assert graph["pkg.one"] == {"pkg.two"}
    assert graph["pkg.two"] == {"pkg.one"}
    assert graph["pkg.sub.three"] == {"pkg.two", "pkg.sub"}
    assert graph["pkg.four"] == {"pkg.sub"}
    assert cycles(graph) == [{"pkg.one", "pkg.two"}]
