"""The DHCP backend has one home: its interface in melange.dhcp_backend (a leaf), dnsmasq's
knowledge in melange.dnsmasq, and every caller reaching a backend through the
`melange.dhcp_backends` registry. These tests fail when a copy creeps back.

Checked on the source (AST), where a copy is cheap to see, and through the CLI with a
backend registered as a plugin would be (a distribution's entry point on the path).
"""

from __future__ import annotations

import ast
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("melange", "melange_cli", "melanged", "benchmarks")
BACKEND = "melange.dnsmasq"
# Other backends shipped beside it: their own vocabulary, and they never import dnsmasq's.
OTHER_BACKENDS = ("melange.kea",)
INTERFACE = "melange.dhcp_backend"
# Modules of the DHCP backend work: none may sit on an import circle.
OWNED = ("melange.dhcp_backend", "melange.dhcpsync", "melange.dhcp", BACKEND, "melange.reconcile")
# Functions that are dnsmasq's to have: defined in its backend or nowhere.
BACKEND_FUNCTIONS = {"read_leases", "dir_files", "_dir_files", "wait_idle", "host_keys",
                     "_host_keys", "sort_key", "_sort_key", "_pid", "_wait_dropped"}  # fmt: skip


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, ast.Module]:
    trees = {}
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            trees[_module_name(path)] = ast.parse(path.read_text(), str(path))
    return trees


SOURCES = _sources()


def _in_backend(module: str) -> bool:
    return module == BACKEND or module.startswith(f"{BACKEND}.")


def _imports(module: str, tree: ast.Module) -> set[str]:
    """Every module `module` imports, at the top or inside a function (a lazy import
    still closes a circle), resolved to a submodule where one is named."""
    package = module if (ROOT / module.replace(".", "/")).is_dir() else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name in SOURCES and name != module}


GRAPH = {module: _imports(module, tree) for module, tree in SOURCES.items()}


def _reaches(start: str, goal: str) -> bool:
    seen, todo = set(), list(GRAPH[start])
    while todo:
        module = todo.pop()
        if module == goal:
            return True
        if module not in seen:
            seen.add(module)
            todo.extend(GRAPH.get(module, ()))
    return False


def _owned(module: str) -> bool:
    return any(module == name or module.startswith(f"{name}.") for name in OWNED)


def test_the_import_graph_sees_the_backend_modules():
    """The scan itself works: the modules exist and their known imports are seen."""
    assert INTERFACE in GRAPH[f"{BACKEND}"] and f"{BACKEND}.process" in GRAPH[BACKEND]
    assert INTERFACE in GRAPH["melange.reconcile"]
    assert "melange.reconcile.integrity" in GRAPH["melange.reconcile.repair"]


def test_no_backend_module_is_on_an_import_circle():
    circles = sorted(m for m in GRAPH if _owned(m) and _reaches(m, m))
    assert circles == []


def test_the_interface_is_a_leaf():
    """It imports nothing of melange but the errors (and, for type hints, the store),
    and nothing it imports leads back to it."""
    assert GRAPH[INTERFACE] <= {"melange.errors", "melange.store"}
    assert not _reaches(INTERFACE, INTERFACE)


def test_only_the_registry_reaches_the_dnsmasq_backend():
    """No module outside the backend imports it: melanged, `dhcp sync` and reconcile
    load it by name from the `melange.dhcp_backends` entry points."""
    importers = sorted(m for m, names in GRAPH.items() if not _in_backend(m)
                       and any(_in_backend(name) for name in names))  # fmt: skip
    assert importers == []


# dnsmasq's render vocabulary: config and opts-file words, and option 121's dnsmasq name.
VOCABULARY = ("dhcp-range", "tag-if", "dhcp-option", "classless", "option:router",
              "option:dns-server")  # fmt: skip
CORE = ("melange", "melange_cli", "melanged")


def _vocabulary(text: str) -> list[str]:
    lowered = text.lower()
    return [word for word in VOCABULARY if word in lowered]


def _backend_imports(module: str, tree: ast.Module) -> list[str]:
    return sorted(name for name in _imports_any(module, tree) if _in_backend(name))


def _imports_any(module: str, tree: ast.Module) -> set[str]:
    """Like `_imports`, but of any module (a planted one is not in SOURCES)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _in_other_backend(module: str) -> bool:
    return any(module == name or module.startswith(f"{name}.") for name in OTHER_BACKENDS)


def _core_modules() -> list[Path]:
    return [path for top in CORE for path in sorted((ROOT / top).rglob("*.py"))
            if not _in_backend(_module_name(path))
            and not _in_other_backend(_module_name(path))]  # fmt: skip


def test_dnsmasq_render_vocabulary_lives_only_in_the_backend():
    """Rendering choices (dhcp-range, tag-if, option names, option 121's line) are
    dnsmasq's: the core reaches them through the registry, in code and in prose."""
    found = {
        str(path.relative_to(ROOT)): words
        for path in _core_modules()
        if (words := _vocabulary(path.read_text()))
    }
    assert found == {}
    assert "dhcp-range" in _vocabulary((ROOT / "melange/dnsmasq/render.py").read_text())


def test_no_other_backend_imports_the_dnsmasq_backend():
    """Another backend (Kea) shares no code with dnsmasq's: each is a plug-in of its own."""
    found = {module: sorted(n for n in names if _in_backend(n))
             for module, names in GRAPH.items()
             if _in_other_backend(module) and any(_in_backend(n) for n in names)}  # fmt: skip
    assert found == {}
    assert any(_in_other_backend(module) for module in GRAPH)


def test_no_core_module_imports_the_dnsmasq_backend():
    found = {
        str(path.relative_to(ROOT)): names
        for path in _core_modules()
        if (names := _backend_imports(_module_name(path), ast.parse(path.read_text())))
    }
    assert found == {}


@pytest.mark.parametrize(
    "snippet",
    [
        'LINE = f"tag-if=set:{network},tag:{tag}"\n',
        '"""Routes are served as Classless static routes."""\n',
        "from melange.dnsmasq import render\n",
        "import melange.dnsmasq.render\n",
        "from melange.dnsmasq.render import block_tag\n",
    ],
)
def test_the_render_guards_catch_a_planted_copy(snippet):
    """The two guards above see what they look for: a planted line trips one of them."""
    caught = _vocabulary(snippet) or _backend_imports("melange.planted", ast.parse(snippet))
    assert caught


def _outside_backend(predicate) -> list[str]:
    return sorted(
        f"{module}:{getattr(node, 'lineno', '?')}"
        for module, tree in SOURCES.items()
        if not _in_backend(module)
        for node in ast.walk(tree)
        if predicate(node)
    )


def test_dhcp_release_runs_only_in_the_backend():
    """The program name as a value (a command line, a `which`), not in a docstring."""
    runs = _outside_backend(lambda n: isinstance(n, ast.Constant) and n.value == "dhcp_release")
    assert runs == []


def test_pidfiles_are_read_only_in_the_backend():
    """`program_pid` is defined in localfiles (what a pidfile is) and called by dnsmasq's
    backend alone."""

    def reads_pidfile(node: ast.AST) -> bool:
        name = getattr(node, "id", None) or getattr(node, "attr", None)
        imported = isinstance(node, ast.alias) and node.name == "program_pid"
        return name == "program_pid" or imported

    assert _outside_backend(reads_pidfile) == []


def test_backend_rules_are_defined_only_in_the_backend():
    """Listing the hosts dir, reading leases, waiting for an idle dnsmasq, the line order
    and keys of a dhcp-host line: one definition each, in the backend."""
    defined = _outside_backend(
        lambda n: isinstance(n, ast.FunctionDef) and n.name in BACKEND_FUNCTIONS
    )
    assert defined == []


def test_reconcile_and_dhcp_sync_never_list_a_directory():
    listing = {"iterdir", "listdir", "scandir", "glob", "rglob", "walk"}
    found = [
        f"{module}:{node.lineno}"
        for module, tree in SOURCES.items()
        if module.startswith("melange.reconcile") or module == "melange.dhcpsync"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr in listing
    ]
    assert found == []


# -- the registry, through the CLI

PLUGIN = '''
from melange.dhcp_backend import SyncResult


class Recording:
    """A backend that renders nothing, serves one line and says so."""

    name = "recording"

    def __init__(self, target):
        self.target = target

    @staticmethod
    def hosts_text(conn, network=None, sink=None):
        return ""

    @staticmethod
    def opts_text(conn, network=None):
        return ""

    @staticmethod
    def config_text(conn, network=None):
        return ""

    @staticmethod
    def check_routes(block, pairs):
        pass

    def sync(self, store, *, force_reload=False):
        self.target.hostsfile.write_text("recorded\\n")
        return SyncResult(hosts_changed=True, lines=42)

    def check_target(self, *, releasing):
        pass

    def rendered(self, conn):
        return []

    def served(self):
        return ["served by the recording backend"]

    def line_keys(self, line):
        return ("ip", line), ("mac", line)

    def leases(self, now=None):
        return []

    def settle(self, after):
        pass

    def release(self, leases):
        return []
'''


@pytest.fixture
def plugin_path(tmp_path):
    """A directory holding a module and a distribution that registers it as the
    `recording` DHCP backend, as an installed plugin package would."""
    path = tmp_path / "plugin"
    info = path / "melange_recording-1.0.dist-info"
    info.mkdir(parents=True)
    (path / "melange_recording.py").write_text(PLUGIN)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: melange-recording\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[melange.dhcp_backends]\nrecording = melange_recording:Recording\n"
    )
    return path


def _melange(tmp_path: Path, *args: str, path: Path | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MELANGE_")}
    pythonpath = os.pathsep.join(str(p) for p in (ROOT, path) if p is not None)
    return subprocess.run(
        [sys.executable, "-m", "melange_cli.main", "--db", str(tmp_path / "store.db"),
         "-o", "json", *args],
        capture_output=True, text=True, timeout=60, env={**clean, "PYTHONPATH": pythonpath},
    )  # fmt: skip


def _store(tmp_path: Path) -> None:
    proc = _melange(tmp_path, "block", "create", "10.9.0.0/24", "--name", "b")
    assert proc.returncode == 0, proc.stderr


def _audit_commands(tmp_path: Path) -> list[str]:
    with sqlite3.connect(tmp_path / "store.db") as db:
        return [row[0] for row in db.execute("SELECT command FROM audit_log ORDER BY id")]


@pytest.mark.parametrize("command", [("dhcp", "sync"), ("reconcile",)])
def test_an_unknown_backend_is_invalid_input(tmp_path, command):
    _store(tmp_path)
    hosts = tmp_path / "hosts"
    proc = _melange(tmp_path, *command, "--backend", "nope", "--hostsfile", str(hosts))
    assert proc.returncode == 2, proc.stderr
    assert "unknown DHCP backend 'nope'" in proc.stderr
    assert not hosts.exists()
    assert _audit_commands(tmp_path) == ["block.create"]


def test_dhcp_sync_runs_the_registered_backend(tmp_path, plugin_path):
    _store(tmp_path)
    hosts = tmp_path / "hosts"
    proc = _melange(tmp_path, "dhcp", "sync", "--backend", "recording", "--hostsfile", str(hosts),
                    path=plugin_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["lines"] == 42
    assert hosts.read_text() == "recorded\n"
    # Without the plugin on the path, the same name is unknown: the registry decides.
    proc = _melange(tmp_path, "dhcp", "sync", "--backend", "recording", "--hostsfile", str(hosts))
    assert proc.returncode == 2 and "unknown DHCP backend 'recording'" in proc.stderr


def test_reconcile_compares_and_repairs_through_the_registered_backend(tmp_path, plugin_path):
    _store(tmp_path)
    hosts = tmp_path / "hosts"
    hosts.write_text("")
    args = ("reconcile", "--backend", "recording", "--hostsfile", str(hosts))
    proc = _melange(tmp_path, *args, path=plugin_path)
    assert proc.returncode == 8, proc.stderr
    assert json.loads(proc.stdout) == [
        {"kind": "hosts_extra", "line": "served by the recording backend"}]  # fmt: skip
    proc = _melange(tmp_path, *args, "--fix", path=plugin_path)
    assert proc.returncode == 8, proc.stderr  # the plugin still serves its line
    assert hosts.read_text() == "recorded\n"  # --fix re-rendered with the plugin's sync
    assert _audit_commands(tmp_path)[-1] == "reconcile.fix"
