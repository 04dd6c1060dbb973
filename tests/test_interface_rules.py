"""The checks a new interface must pass have one home, melange/interfaces.py, which
`interface create` and import both call (import through `interfaces.add`).

Import once had its own copy of them, which drifted (it let through names `interface
create` refuses). These tests read the source: a copy of any of the checks elsewhere
in the code fails them, and a planted copy shows each check is really recognised.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOME = ROOT / "melange" / "interfaces.py"
PACKAGES = ("melange", "melange_cli", "melanged")

RULES = {
    "inserts an interface row": "insert",
    "validates an interface id": "name",
    "looks for an interface with the same MAC": "mac",
    "refuses an interface id that exists": "exists",
}

# What import's own copy looked like before it called interfaces.add.
PLANTED = """
from sqlalchemy import insert, select
from melange.models import interfaces

def _import_interface(conn, item):
    validate_name(item["vif_id"], "interface id")
    mac = parse_mac(item["mac"])
    if conn.execute(select(interfaces.c.id).where(interfaces.c.vif_id == item["vif_id"])).first():
        raise Conflict(f"interface {item['vif_id']!r} already exists")
    if conn.execute(select(interfaces.c.id).where(interfaces.c.mac == mac)).first():
        raise Conflict(f"MAC {format_mac(mac)} belongs to another interface")
    conn.execute(insert(interfaces).values(vif_id=item["vif_id"], mac=mac))
"""


def _column_holders(tree: ast.AST) -> set[str]:
    """Names bound to the interfaces table's columns (`I = interfaces.c`)."""
    return {
        target.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and _is_columns(node.value, set())
        for target in node.targets
        if isinstance(target, ast.Name)
    }


def _is_table(node: ast.AST) -> bool:
    return (isinstance(node, ast.Name) and node.id == "interfaces") or (
        isinstance(node, ast.Attribute) and node.attr == "interfaces"
    )


def _is_columns(node: ast.AST, holders: set[str]) -> bool:
    if isinstance(node, ast.Name):
        return node.id in holders
    return isinstance(node, ast.Attribute) and node.attr == "c" and _is_table(node.value)


def _text(node: ast.AST) -> str | None:
    """A string literal's text (an f-string's literal parts joined), else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return " ".join(p.value for p in node.values if isinstance(p, ast.Constant))
    return None


def checks_in(source: str) -> set[str]:
    """Which of the interface checks (RULES' keys) a module's source carries out."""
    tree = ast.parse(source)
    holders = _column_holders(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name == "insert" and (
                (node.args and _is_table(node.args[0]))
                or (isinstance(func, ast.Attribute) and _is_table(func.value))
            ):
                found.add("insert")
            if any(_text(arg) == "interface id" for arg in node.args):
                found.add("name")
        elif isinstance(node, ast.Compare) and isinstance(node.ops[0], ast.Eq):
            sides = [node.left, *node.comparators]
            if any(
                isinstance(s, ast.Attribute) and s.attr == "mac" and _is_columns(s.value, holders)
                for s in sides
            ):
                found.add("mac")
        text = _text(node)
        if text is not None and re.search(r"\binterface\b.*\balready exists\b", text):
            found.add("exists")
    return {rule for rule, key in RULES.items() if key in found}


def _modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def test_the_interface_checks_live_in_interfaces_py_alone():
    copies = {
        str(path.relative_to(ROOT)): sorted(found)
        for path in _modules()
        if path != HOME and (found := checks_in(path.read_text()))
    }
    assert copies == {}, "call melange.interfaces (create, add, check_names) instead"


def test_interfaces_py_carries_every_check_the_guard_looks_for():
    """Else the guard above would pass whatever anyone copied."""
    assert checks_in(HOME.read_text()) == set(RULES)


def test_a_planted_copy_of_the_checks_is_caught():
    assert checks_in(PLANTED) == set(RULES)
    assert checks_in(PLANTED.replace('"interface id"', '"device"')) == set(RULES) - {
        "validates an interface id"
    }
