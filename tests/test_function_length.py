"""No function in the product is longer than a reader can hold in view (60 lines):
a long one is several things that each deserve a name and a docstring."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("melange", "melange_cli", "melanged")
LIMIT = 60


def long_functions(source: str, limit: int = LIMIT) -> list[tuple[str, int, int]]:
    """(name, first line, length) of each function in `source` longer than `limit`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            assert node.end_lineno is not None
            length = node.end_lineno - node.lineno + 1
            if length > limit:
                found.append((node.name, node.lineno, length))
    return found


def test_the_scan_finds_a_long_function():
    body = "\n".join(f"    x{i} = {i}" for i in range(LIMIT))
    assert long_functions(f"def short():\n    return 1\n\ndef long():\n{body}\n") == [
        ("long", 4, LIMIT + 1)
    ]


def test_no_function_is_over_the_limit():
    paths = [path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))]
    assert len(paths) > 40
    found = [
        f"{path.relative_to(ROOT)}:{line} {name} ({length} lines)"
        for path in paths
        for name, line, length in long_functions(path.read_text())
    ]
    assert found == []
