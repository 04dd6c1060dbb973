"""Shared fixtures: a real store per test (SQLite file or server database), the CLI bound
to it, directly or through melanged's socket; the helpers live in tests/support/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.cli import Melange
from tests.support.localusers import root_sleep, users  # noqa: F401  (fixtures)
from tests.support.realparts import dnsmasq_server, netns_pair  # noqa: F401  (fixtures)

BACKENDS = ["sqlite", "mysql", "postgresql"]


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "sqlite_only: the test is about SQLite files themselves")
    config.addinivalue_line("markers", "servers_only: the test needs MariaDB/PostgreSQL row locks")
    config.addinivalue_line("markers", "direct_only: the test is about the CLI opening the store")
    config.addinivalue_line(
        "markers", "one_store: the test is about what a real server does with melange's files;"
        " SQLite, directly, suffices (the files are the same from every store and channel)")
    config.addinivalue_line(
        "markers", "host_local: the test runs host-local commands, never served over HTTP"
    )


# The backends the CLI tests also run on through melanged's HTTP API (`melange --url`):
# SQLite everywhere; PostgreSQL too for the contract's own tests (a server store behind
# the API's thread pool). The transport is the same whatever the store: running every
# module's cases on both doubled the HTTP channel's share of the run for no new failure.
HTTP_BACKENDS = ["sqlite"]
HTTP_ON_SERVERS = {"test_cli_contract": ["postgresql"]}


def pytest_generate_tests(metafunc) -> None:
    """Store-level tests run once per backend, CLI tests also once through melanged's
    socket (on SQLite) and through its HTTP API (on SQLite and PostgreSQL); markers
    narrow the list, never skip."""
    if "backend" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker
    if marker("one_store"):
        if "melange" in metafunc.fixturenames:
            metafunc.parametrize(("backend", "channel"), [("sqlite", "direct")],
                                 ids=["sqlite-direct"])  # fmt: skip
        else:
            metafunc.parametrize("backend", ["sqlite"])
        return
    if marker("sqlite_only"):
        chosen = ["sqlite"]
    elif marker("servers_only"):
        chosen = ["mysql", "postgresql"]
    else:
        chosen = BACKENDS
    if "melange" not in metafunc.fixturenames:
        metafunc.parametrize("backend", chosen)
        return
    combos = [(backend, "direct") for backend in chosen]
    if "sqlite" in chosen and not marker("direct_only"):
        combos.append(("sqlite", "socket"))
    if not marker("direct_only") and not marker("host_local"):
        module = metafunc.module.__name__.rsplit(".", 1)[-1]
        over_http = HTTP_BACKENDS + HTTP_ON_SERVERS.get(module, [])
        combos += [(backend, "http") for backend in over_http if backend in chosen]
    metafunc.parametrize(("backend", "channel"), combos, ids=[f"{b}-{c}" for b, c in combos])


# Modules with tests of tens of seconds each (a Galera cluster, many processes, real
# dnsmasq, long model runs), longest first: run before the rest, so that under xdist no
# worker is still on one of them when the others have run out of work.
LONG_RUNNING = ["test_galera", "test_kea_mysql", "test_kea_postgresql", "test_webui_browser",
                "test_import_stream", "test_concurrency", "test_dns", "test_dhcp_tags",
                "test_engine_reference", "test_allocation_properties", "test_melanged",
                "test_reconcile", "test_lean_path", "test_group_commit"]  # fmt: skip


# Tests that run with nothing beside them under xdist (tests/support/exclusive.py): a
# Galera cluster under twelve writers ran out of certification retries when starved of CPU.
ALONE = {"test_galera"}


def _module(item) -> str:
    return item.module.__name__.rsplit(".", 1)[-1]


def _running_order(item) -> int:
    name = _module(item)
    return LONG_RUNNING.index(name) if name in LONG_RUNNING else len(LONG_RUNNING)


def pytest_collection_modifyitems(items) -> None:
    """Under pytest-xdist (`make test` runs `-n … --dist loadgroup`): the tests of a module
    that share a module-scoped fixture (a Galera cluster, made users, one daemon) run in
    one worker, so it is set up once, not once per worker. Other tests spread freely.
    The long-running modules go first (a stable sort: each module stays in one piece)."""
    items.sort(key=_running_order)
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is not None and any(
            defs[-1].scope == "module" for defs in info.name2fixturedefs.values()
        ):
            item.add_marker(pytest.mark.xdist_group(_module(item)))


@pytest.fixture(autouse=True)
def _run_lock(request, tmp_path_factory):
    """Under xdist, the ALONE modules' tests run with no other test beside them."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        yield
        return
    from tests.support.exclusive import RunLock

    shared = tmp_path_factory.getbasetemp().parent  # the run's, above each worker's own
    with RunLock(shared).holding(alone=_module(request.node) in ALONE):
        yield


@pytest.fixture(scope="session")
def backends():
    from tests.support.backends import Backends

    registry = Backends()
    yield registry
    registry.close()


@pytest.fixture(scope="session")
def socket_server(tmp_path_factory):
    """melanged's socket server in this process, shared by the socket-channel tests."""
    from tests.support.inprocess_daemon import InProcessDaemon

    server = InProcessDaemon(tmp_path_factory.mktemp("melanged"))
    yield server
    server.close()


@pytest.fixture(scope="session")
def http_server(tmp_path_factory):
    """melanged's HTTP API in this process, shared by the http-channel tests."""
    from tests.support.inprocess_http import InProcessHttp

    server = InProcessHttp(tmp_path_factory.mktemp("melanged-http"))
    yield server
    server.close()


@pytest.fixture
def store_url(backend: str, backends, tmp_path: Path) -> str:
    """An empty, migrated store on each backend in turn (one database per test run)."""
    return backends.url(backend, tmp_path)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "melange.db"


@pytest.fixture
def melange(backend: str, channel: str, backends, store_path: Path, tmp_path: Path, request):
    """The CLI on a fresh store: an SQLite file (`db` is its Path) or a server URL;
    with channel "socket", every command goes through melanged's socket server, with
    "http" through its HTTP API (`melange --url`, an admin token, the test's CA)."""
    config = tmp_path / "melange.conf"
    config.write_text("[melange]\nrelease_hold = 48h\n")
    env = {"MELANGE_CONFIG": str(config), "MELANGE_DB": None, "MELANGE_OUTPUT": None,
           "MELANGE_SOCKET": None, "MELANGE_DEBUG": None, "XDG_DATA_HOME": str(tmp_path / "xdg"),
           "MELANGE_URL": None, "MELANGE_TOKEN_FILE": None, "MELANGE_CA_FILE": None}  # fmt: skip
    db = store_path if backend == "sqlite" else backends.url(backend, tmp_path)
    if channel == "direct":
        yield Melange(db, env)
        return
    if channel == "http":
        api = request.getfixturevalue("http_server")
        url = f"sqlite:///{db}" if backend == "sqlite" else str(db)
        with api.serving(url, config, tmp_path / "token") as endpoint:
            yield Melange(db, env, url=endpoint.url, token_file=str(endpoint.token_file),
                          ca_file=str(endpoint.ca_file))  # fmt: skip
        return
    server = request.getfixturevalue("socket_server")
    with server.serving(f"sqlite:///{db}", config) as socket:
        yield Melange(db, env, socket=str(socket))
