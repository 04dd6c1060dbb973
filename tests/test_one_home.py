"""Each domain rule has one home; these guards fail when a copy creeps back.

A rule copied into a second module drifts: the copy misses the next change and two
commands disagree. Where a copy is cheap to recognise in the syntax tree, it is
checked here over every module of `melange`, `melange_cli` and `melanged`:

- the hold cutoff: only `melange/holds.py` compares `held_until` or `released_at`
  with a time, or turns a hold time into a timedelta (`holds.live`, `holds.held`,
  `holds.expired`, `holds.ends`);
- the live-address predicate: only `melange/holds.py` compares the state column of
  a table in a query (`holds.allocated`, `holds.live`, …); a row already read may
  still look at its own `row.state`;
- the generation bump: only `blocks.touch` (in `melange/blocks.py`) adds to
  `generation`, once;
- the block label: only `melange/records.py` writes "name, else CIDR"
  (`records.label`, `records.block_label`).

Each guard is shown to catch a planted copy, and to leave the sanctioned forms alone.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("melange", "melange_cli", "melanged")

HOMES = {
    "hold cutoff": {"melange/holds.py"},
    "live predicate": {"melange/holds.py"},
    "generation bump": {"melange/blocks.py"},
    "block label": {"melange/records.py"},
}

# Modules (by name prefix) allowed a copy of a rule, with the reason; none today.
ALLOWED: dict[str, set[str]] = {}

ORDERING = (ast.Lt, ast.LtE, ast.Gt, ast.GtE)
TIME_COLUMNS = {"held_until", "released_at"}
STATE_METHODS = {"in_", "not_in", "notin_", "is_", "is_not", "isnot"}


def _attr_name(node: ast.AST) -> str | None:
    """The last name of `x.y.name` or `name`, else None."""
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return None


def _column_aliases(tree: ast.AST) -> set[str]:
    """Names a module binds to a table's columns (`IP = ip_addresses.c`, `ip = t.c`)."""
    aliases = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Attribute):
            if node.value.attr == "c":
                aliases |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return aliases


def _is_column(node: ast.AST, aliases: set[str]) -> bool:
    """`table.c.x`, `alias.x` for a columns alias, or `blocks.c.x`: a column in a query."""
    if not isinstance(node, ast.Attribute):
        return False
    base = node.value
    if isinstance(base, ast.Attribute) and base.attr == "c":
        return True
    return isinstance(base, ast.Name) and base.id in aliases


class _Scanner(ast.NodeVisitor):
    def __init__(self, aliases: set[str]) -> None:
        self.aliases = aliases
        self.found: list[tuple[str, int]] = []

    def note(self, rule: str, node: ast.AST) -> None:
        self.found.append((rule, getattr(node, "lineno", 0)))

    def visit_Compare(self, node: ast.Compare) -> None:
        operands = [node.left, *node.comparators]
        if any(isinstance(op, ORDERING) for op in node.ops) and any(
            _attr_name(o) in TIME_COLUMNS for o in operands
        ):
            self.note("hold cutoff", node)
        if any(_attr_name(o) == "state" and _is_column(o, self.aliases) for o in operands):
            self.note("live predicate", node)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if (
            isinstance(func, ast.Attribute)
            and func.attr in STATE_METHODS
            and _attr_name(func.value) == "state"
            and _is_column(func.value, self.aliases)
        ):
            self.note("live predicate", node)
        if _attr_name(func) == "timedelta" and any(
            "hold" in (_attr_name(n) or "").split("_") for n in ast.walk(node) if n is not func
        ):
            self.note("hold cutoff", node)
        # `generation=<sum>` is caught as the sum (below); any other value set is a copy too.
        if any(k.arg == "generation" and not isinstance(k.value, ast.BinOp) for k in node.keywords):
            self.note("generation bump", node)
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        if isinstance(node.op, ast.Add) and "generation" in (
            _attr_name(node.left),
            _attr_name(node.right),
        ):
            self.note("generation bump", node)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if _attr_name(node.target) == "generation":
            self.note("generation bump", node)
        self.generic_visit(node)

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        names = [_attr_name(v) or "" for v in node.values]
        if isinstance(node.op, ast.Or) and _label_pair(names):
            self.note("block label", node)
        self.generic_visit(node)

    def visit_IfExp(self, node: ast.IfExp) -> None:
        if _label_pair([_attr_name(node.body) or "", _attr_name(node.orelse) or ""]):
            self.note("block label", node)
        self.generic_visit(node)


def _label_pair(names: list[str]) -> bool:
    """A name, else a CIDR: `row.name or row.cidr`, `block_name or block_cidr`, …"""
    return any(n.endswith("name") for n in names[:-1]) and names[-1].endswith("cidr")


def _imported(tree: ast.AST, known: set[str]) -> set[str]:
    """Columns aliases another module defines and this one imports (`from … import IP`)."""
    return {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.name in known
    }


def scan(source: str, known: frozenset[str] | set[str] = frozenset()) -> list[tuple[str, int]]:
    """(rule, line) of every copy of a rule in a module's source; `known` are the column
    aliases the scanned package defines, so an imported one is recognised too."""
    tree = ast.parse(source)
    scanner = _Scanner(_column_aliases(tree) | _imported(tree, set(known)))
    scanner.visit(tree)
    return scanner.found


def _modules() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def _known_aliases() -> set[str]:
    """Every name a scanned module binds to a table's columns."""
    return set().union(*(_column_aliases(ast.parse(p.read_text())) for p in _modules()))


def _allowed(path: Path, rule: str) -> bool:
    if path.relative_to(ROOT).as_posix() in HOMES[rule]:
        return True
    return any(
        rule in rules and (path.name.startswith(prefix) or path.parent.name.startswith(prefix))
        for prefix, rules in ALLOWED.items()
    )


def test_the_package_is_scanned():
    names = {path.relative_to(ROOT).as_posix() for path in _modules()}
    assert {"melange/holds.py", "melange/reports.py", "melange_cli/ips.py"} <= names
    assert set().union(*HOMES.values()) <= names


@pytest.mark.parametrize("rule", sorted(HOMES))
def test_each_rule_lives_only_in_its_home(rule):
    known = _known_aliases()
    copies = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in _modules()
        for found, line in scan(path.read_text(), known)
        if found == rule and not _allowed(path, rule)
    ]
    assert copies == [], f"{rule} copied outside {sorted(HOMES[rule])}: {copies}"


def test_the_generation_bump_has_exactly_one_copy_in_its_home():
    found = [rule for rule, _ in scan((ROOT / "melange" / "blocks.py").read_text())]
    assert found.count("generation bump") == 1


@pytest.mark.parametrize(
    ("rule", "snippet"),
    [
        ("hold cutoff", "rows = select(IP.id).where(IP.held_until > utcnow())"),
        ("hold cutoff", "if row.held_until <= now:\n    pass"),
        ("hold cutoff", "fresh = released_at >= now - timedelta(seconds=hold)"),
        ("hold cutoff", "until = released + timedelta(seconds=store.release_hold)"),
        ("hold cutoff", "cutoff = utcnow() - datetime.timedelta(seconds=hold_seconds)"),
        ("live predicate", "IP = ip_addresses.c\nq = or_(IP.state == 'allocated', x)"),
        ("live predicate", "q = select(t).where(ip_addresses.c.state != 'held')"),
        ("live predicate", "def f():\n    ip = ip_addresses.c\n    return ip.state.in_(s)"),
        ("generation bump", "q = update(blocks).values(generation=blocks.c.generation + 1)"),
        ("generation bump", "row.generation += 1"),
        ("generation bump", "n = 1 + B.generation"),
        ("generation bump", "q = update(blocks).values(generation=next_generation)"),
        ("block label", "label = row.name or row.cidr"),
        ("block label", "names = [r.block_name or r.block_cidr for r in rows]"),
        ("block label", "label = block.name if block.name else block.cidr"),
    ],
)
def test_a_planted_copy_is_caught(rule, snippet):
    assert rule in [found for found, _ in scan(snippet)]


def test_a_copy_through_an_imported_column_alias_is_caught():
    """reconcile's modules import `IP` from a sibling: a copy there is still a copy."""
    snippet = "from melange.reconcile.findings import IP\nq = select(IP.id).where(IP.state == 'x')"
    assert "IP" in _known_aliases()
    assert "live predicate" in [found for found, _ in scan(snippet, {"IP"})]
    assert scan(snippet) == []  # what the guard saw before it knew the package's aliases


@pytest.mark.parametrize(
    "snippet",
    [
        "q = select(IP.id).where(holds.live(IP, now), holds.expired(IP))",
        "IP = ip_addresses.c\nq = select(IP.state).where(holds.allocated(IP))",
        "if row.state == 'held' and not now:\n    pass",
        "result.update(state='free', held_until=None)",
        "blocks_ops.touch(conn, block_id, allocated=-1)",
        "text = block_label(row) or default",
        "message = f'{name or cidr_text}'",
        "total = func.sum(blocks.c.generation)",
        "since = utcnow() - timedelta(seconds=parse_duration(text))",
        "until = holds.ends(released, hold_seconds)",
        "wait = timedelta(seconds=threshold)",
    ],
)
def test_the_sanctioned_forms_are_left_alone(snippet):
    assert scan(snippet) == []
