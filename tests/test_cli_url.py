"""`melange --url`: the CLI through melanged's HTTP API (melange_cli/httpclient.py).

The contract suite runs through `--url` too (the `melange` fixture's channel "http");
this module covers what only this channel has: its exit codes (7 for a missing, bad or
too small token; 6 for nothing listening and for every TLS failure, with the reason;
2 for host-local commands, two stores named at once, unreadable token or CA files),
paged lists walked to the end, export, and a process that never imports SQLAlchemy.
The servers here are real: melanged's HTTP API on a loopback port, with a certificate
made in the test (trustme); for the TLS failures, a real TLS or plain-HTTP listener.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trustme
from click.testing import CliRunner, Result

from melange.errors import MelangeError
from melange_cli.main import cli
from tests.support.cli import assert_error
from tests.support.http_daemon import free_port

ROOT = Path(__file__).resolve().parent.parent
CLEAN_ENV = {name: None for name in (
    "MELANGE_DB", "MELANGE_SOCKET", "MELANGE_URL", "MELANGE_TOKEN_FILE", "MELANGE_CA_FILE",
    "MELANGE_OUTPUT", "MELANGE_DEBUG", "MELANGE_CONFIG",
)}  # fmt: skip


def run(*args: str, **env: str) -> Result:
    """`melange ARGS…` in-process with none of the user's MELANGE_* settings."""
    return CliRunner().invoke(cli, list(args), env={**CLEAN_ENV, **env})


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@contextmanager
def listening(handle) -> Iterator[int]:
    """A loopback listener whose every connection goes to `handle(conn)` in a thread."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)  # the loop looks at `stop` that often
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                try:
                    handle(conn)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(10)
        server.close()


@contextmanager
def tls_listener(ca: trustme.CA) -> Iterator[int]:
    """A TLS server with a certificate for 127.0.0.1 that `ca` signed; it hands nothing
    out (the failures tested here happen in the handshake)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)

    def handshake(conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass

    with listening(handshake) as port:
        yield port


class QuietHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, format, *args) -> None:  # noqa: A002  (the base class's name)
        """Nothing on stderr: the CLI's stderr is what the tests read."""


class Redirecting(QuietHandler):
    def do_GET(self) -> None:  # noqa: N802  (http.server's name)
        self.send_response(308)
        self.send_header("Location", "https://elsewhere.example/v1/blocks")
        self.send_header("Content-Length", "0")
        self.end_headers()


@contextmanager
def plain_http_server(handler=QuietHandler) -> Iterator[int]:
    """Python's own HTTP server (no TLS), on a loopback port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("mlg_0123456789ab_not-a-real-secret\n")
    return path


# -- exit 6: nothing there, or TLS fails (with the reason)


def test_nothing_listening_is_exit_6():
    url = f"https://127.0.0.1:{free_port()}"
    line = assert_error(run("--url", url, "block", "list"), 6)
    assert line == f"Error: cannot reach melanged at {url}: Connection refused"


def test_an_unknown_host_is_exit_6():
    line = assert_error(run("--url", "https://no-such-host.invalid:9898", "ip", "list"), 6)
    assert "cannot reach melanged at https://no-such-host.invalid:9898" in line


def test_a_certificate_from_another_ca_is_exit_6_with_the_reason(ca, tmp_path, token_file):
    stranger = trustme.CA()
    stranger.cert_pem.write_to_path(str(tmp_path / "other-ca.pem"))
    with tls_listener(ca) as port:
        url = f"https://127.0.0.1:{port}"
        untrusted = run("--url", url, "--token-file", str(token_file), "--ca-file",
                        str(tmp_path / "other-ca.pem"), "block", "list")  # fmt: skip
        line = assert_error(untrusted, 6)
        assert line.startswith(f"Error: TLS failure with {url}: ")
        assert "unable to get local issuer certificate" in line and "--ca-file" in line
        # Without --ca-file the system's CAs decide: they do not know a test CA either.
        assert "TLS failure" in assert_error(run("--url", url, "block", "list"), 6)


def test_a_certificate_for_another_name_is_exit_6(ca, tmp_path):
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    with tls_listener(ca) as port:  # its certificate names 127.0.0.1, not localhost
        url = f"https://localhost:{port}"
        result = run("--url", url, "--ca-file", str(tmp_path / "ca.pem"), "block", "list")
        line = assert_error(result, 6)
        assert "TLS failure" in line and "localhost" in line


def test_https_to_a_plain_http_server_is_exit_6():
    with plain_http_server() as port:
        line = assert_error(run("--url", f"https://127.0.0.1:{port}", "block", "list"), 6)
        assert line.startswith(f"Error: TLS failure with https://127.0.0.1:{port}: ")
        assert "WRONG_VERSION_NUMBER" in line and "use http://" in line


def test_a_server_that_is_not_melanged_is_exit_6(token_file):
    with plain_http_server() as port:  # answers 501 to everything
        url = f"http://127.0.0.1:{port}"
        line = assert_error(run("--url", url, "--token-file", str(token_file), "ip", "list"), 6)
        assert line.startswith(f"Error: {url} answered HTTP 501")
    with plain_http_server(Redirecting) as port:  # the token is not taken elsewhere
        url = f"http://127.0.0.1:{port}"
        line = assert_error(run("--url", url, "--token-file", str(token_file), "ip", "list"), 6)
        assert "HTTP 308" in line and "https://elsewhere.example/v1/blocks" in line


def test_plain_http_to_a_tls_server_is_exit_6_and_suggests_https(ca):
    with tls_listener(ca) as port:
        line = assert_error(run("--url", f"http://127.0.0.1:{port}", "block", "list"), 6)
        assert f"http://127.0.0.1:{port}" in line and "https://" in line


# -- exit 2: what cannot go through --url, and files that cannot be read


@pytest.mark.parametrize(
    ("args", "command"),
    [
        (("db", "upgrade"), "db upgrade"),
        (("db", "current"), "db current"),
        (("dhcp", "sync", "--hostsfile", "/tmp/hosts"), "dhcp sync"),
        (("reconcile",), "reconcile"),
    ],
)
def test_host_local_commands_are_refused_with_exit_2(args, command, token_file):
    # Refused before any connection: nothing listens on this port.
    url = f"https://127.0.0.1:{free_port()}"
    line = assert_error(run("--url", url, "--token-file", str(token_file), *args), 2)
    assert line == (
        f"Error: '{command}' is host-local: run it on the store's host (with --db or --socket),"
        " not through --url"
    )


@pytest.mark.parametrize(
    "other",
    [("--db", "x.db"), ("--socket", "/run/melange.sock")],
)
def test_url_with_another_store_on_one_command_line_is_exit_2(other, tmp_path):
    url = f"https://127.0.0.1:{free_port()}"
    for argv in (["--url", url, *other], [*other, "--url", url]):
        line = assert_error(run(*argv, "block", "list"), 2)
        assert "name two stores" in line and "--url" in line and other[0] in line
    assert not (tmp_path / "x.db").exists()


def test_typed_beats_the_environment_and_the_url_wins_among_the_environment(tmp_path):
    url = f"https://127.0.0.1:{free_port()}"
    db = tmp_path / "typed.db"
    # --db typed beats MELANGE_URL: the store is opened, nothing is sent.
    assert run("--db", str(db), "block", "create", "10.0.0.0/24", MELANGE_URL=url).exit_code == 0
    assert db.exists()
    # --url typed beats MELANGE_DB; MELANGE_URL beats MELANGE_DB and MELANGE_SOCKET.
    env_db = str(tmp_path / "env.db")
    assert_error(run("--url", url, "block", "list", MELANGE_DB=env_db), 6)
    assert_error(run("block", "list", MELANGE_URL=url, MELANGE_DB=env_db,
                     MELANGE_SOCKET=str(tmp_path / "none.sock")), 6)  # fmt: skip
    assert not Path(env_db).exists()


def test_the_config_file_may_name_the_url(tmp_path, token_file):
    url = f"https://127.0.0.1:{free_port()}"
    config = tmp_path / "melange.conf"
    config.write_text(f"[melange]\nurl = {url}\ntoken_file = {token_file}\n")
    line = assert_error(run("--config", str(config), "block", "list"), 6)
    assert url in line
    # A store named on the command line or in the environment comes first.
    db = tmp_path / "named.db"
    assert run("--config", str(config), "--db", str(db), "policy", "create", "p").exit_code == 0
    assert run("--config", str(config), "policy", "list", MELANGE_DB=str(db)).stdout.startswith("p")
    # The config file's token file is read: one that is missing is named.
    config.write_text(f"[melange]\nurl = {url}\ntoken_file = {tmp_path / 'gone'}\n")
    assert "gone" in assert_error(run("--config", str(config), "block", "list"), 2)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (None, "cannot read token file"),
        ("", "is empty"),
        ("  \n", "is empty"),
        ("mlg_abc secret-part\n", "does not hold one token"),
        ("mlg_abc_first\nmlg_abc_second\n", "does not hold one token"),
    ],
)
def test_a_token_file_that_holds_no_token_is_exit_2_and_never_shown(tmp_path, content, why):
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    url = f"https://127.0.0.1:{free_port()}"
    result = run("--url", url, "--token-file", str(path), "block", "list")
    line = assert_error(result, 2)
    assert why in line and str(path) in line
    for secret in ("secret-part", "first", "second"):
        assert secret not in result.output


def test_an_unreadable_ca_file_is_exit_2(tmp_path):
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    url = f"https://127.0.0.1:{free_port()}"
    for path in (bad, tmp_path / "missing.pem"):
        line = assert_error(run("--url", url, "--ca-file", str(path), "block", "list"), 2)
        assert line.startswith(f"Error: cannot read CA file {path}: ")


@pytest.mark.parametrize(
    "url",
    ["ftp://127.0.0.1:9898", "127.0.0.1:9898", "https://", "https://h:99999",
     "https://admin:hunter2@127.0.0.1:9898", "https://127.0.0.1:9898/?x=1"],
)  # fmt: skip
def test_a_url_that_is_not_an_api_address_is_exit_2(url):
    result = run("--url", url, "block", "list")
    assert_error(result, 2)
    assert "hunter2" not in result.output


# -- against melanged's HTTP API (in this process, over TLS, a token per role)


class Api:
    """One SQLite store, served over HTTPS; the CLI run on it through --url or --db."""

    def __init__(self, db: Path, endpoint, tmp_path: Path) -> None:
        self.db, self.endpoint, self.tmp_path = db, endpoint, tmp_path
        self.url = endpoint.url

    def remote(self, *args: str, token: Path | None | str = "admin", **env: str) -> Result:
        """`melange --url … ARGS` with the admin token, another token file, or none."""
        where = ["--url", self.url, "--ca-file", str(self.endpoint.ca_file)]
        if token == "admin":
            token = self.endpoint.token_file
        if token is not None:
            where += ["--token-file", str(token)]
        return run(*where, *args, **env)

    def direct(self, *args: str) -> Result:
        return run("--db", str(self.db), *args)

    def token(self, role: str, **extra) -> Path:
        """A token file holding a new token with `role` (made in the store directly)."""
        from melange import tokens
        from melange.store import Store

        store = Store(f"sqlite:///{self.db}")
        name = f"{role}-token"
        try:
            record = store.run(lambda conn: tokens.create(conn, name, role=role, **extra),
                               write=True)  # fmt: skip
        finally:
            store.close()
        path = self.tmp_path / f"{name}.token"
        path.write_text(record["token"] + "\n")
        return path


@pytest.fixture
def api(http_server, tmp_path: Path) -> Iterator[Api]:
    db = tmp_path / "store.db"
    config = tmp_path / "melange.conf"
    config.write_text("[melange]\nrelease_hold = 48h\n")
    with http_server.serving(f"sqlite:///{db}", config, tmp_path / "admin.token") as endpoint:
        yield Api(db, endpoint, tmp_path)


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.exit_code, result.stderr)
    return result.stdout


def test_no_token_is_exit_7_and_says_how_to_give_one(api):
    line = assert_error(api.remote("block", "list", token=None), 7)
    assert "--token-file" in line


def test_a_wrong_token_is_exit_7_and_never_shown(api, tmp_path):
    wrong = tmp_path / "wrong.token"
    wrong.write_text("mlg_0123456789ab_wrongsecretwrongsecret\n")
    result = api.remote("block", "list", token=wrong)
    assert_error(result, 7)
    assert "wrongsecret" not in result.output


def test_a_revoked_token_is_exit_7(api):
    reader = api.token("reader")
    assert ok(api.remote("block", "list", token=reader)) == ""
    ok(api.direct("token", "revoke", "reader-token"))
    assert_error(api.remote("block", "list", token=reader), 7)


def test_a_reader_reads_but_writing_is_exit_7_and_changes_nothing(api):
    ok(api.remote("block", "create", "10.0.0.0/24", "--name", "web"))
    reader = api.token("reader")
    assert ok(api.remote("block", "list", token=reader)).startswith("1\t10.0.0.0/24\tweb")
    line = assert_error(api.remote("block", "allocate", "web", token=reader), 7)
    assert "reader" in line
    assert ok(api.direct("ip", "list")) == ""
    writer = api.token("writer")
    assert ok(api.remote("-o", "plain", "block", "allocate", "web", token=writer)) == "10.0.0.1\n"
    assert_error(api.remote("block", "delete", "web", "--force", token=writer), 7)


def test_the_url_token_and_ca_may_come_from_the_environment(api):
    ok(api.direct("policy", "create", "edge"))
    result = run("-o", "plain", "policy", "list", MELANGE_URL=api.url,
                 MELANGE_TOKEN_FILE=str(api.endpoint.token_file),
                 MELANGE_CA_FILE=str(api.endpoint.ca_file))  # fmt: skip
    assert ok(result).startswith("edge")


def test_a_paged_list_is_walked_to_the_end(api):
    """1,500 addresses: two pages of the API's largest (1,000); the same list as direct."""
    ok(api.direct("block", "create", "10.8.0.0/21", "--name", "big"))
    ok(api.direct("block", "allocate", "big", "--count", "1500"))
    through_url = ok(api.remote("-o", "json", "ip", "list"))
    assert through_url == ok(api.direct("-o", "json", "ip", "list"))
    listed = json.loads(through_url)
    assert len(listed) == 1500 and len({a["address"] for a in listed}) == 1500
    plain = ok(api.remote("-o", "plain", "ip", "list"))
    assert plain == ok(api.direct("-o", "plain", "ip", "list"))


def test_history_through_the_url_is_direct_modes(api):
    ok(api.direct("block", "create", "10.0.0.0/24", "--name", "web"))
    for _ in range(4):
        ok(api.remote("block", "allocate", "web"))
    for extra in ((), ("--limit", "2"), ("--block", "web", "--limit", "3")):
        args = ("-o", "json", "history", *extra)
        assert ok(api.remote(*args)) == ok(api.direct(*args)), extra
    assert len(json.loads(ok(api.remote("-o", "json", "history", "--limit", "2")))) == 2


def _populate(cli) -> None:
    """A store with something of everything an export holds."""
    for args in (
        ("policy", "create", "edge"),
        ("policy", "add-range", "edge", "--offset", "-3", "--length", "2"),
        ("mac-range", "create", "02:16:3e:00:00:00/24"),
        ("block", "create", "10.0.0.0/24", "--name", "web", "--network", "net1",
         "--gateway", "10.0.0.1", "--dns", "10.0.0.53", "--policy", "edge"),
        ("block", "create", "2001:db8:1::/64", "--name", "web6", "--network", "net1"),
        ("block", "subnet", "web", "10.0.0.128/25", "--name", "half"),
        ("route", "add", "web", "10.9.0.0/16", "--gateway", "10.0.0.1"),
        ("interface", "create", "vif1", "--network", "net1", "--device", "dev1"),
        ("block", "allocate", "web6", "--mac", "02:00:00:00:00:07", "--hostname", "vm7"),
    ):  # fmt: skip
        ok(cli(*args))


def test_export_through_the_url_is_direct_modes(api):
    _populate(api.direct)
    for args in (("export",), ("export", "-o", "csv"), ("export", "--network", "net1")):
        exported = ok(api.remote(*args))
        assert exported == ok(api.direct(*args)), args
    document = json.loads(ok(api.remote("export")))
    assert [b["name"] for b in document["blocks"]] == ["web", "half", "web6"]
    assert_error(api.remote("export", "--network", "typo"), 3)


TIMES = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?")


def test_allocate_prints_what_direct_mode_prints(tmp_path, api):
    """The same commands on two new stores, one through --url: the same output, byte for
    byte once the times are masked, in every format, failures included."""
    outputs = {}
    direct = Api(tmp_path / "direct.db", api.endpoint, tmp_path).direct
    for name, melange in (("url", api.remote), ("direct", direct)):
        seen = []
        for i, fmt in enumerate(("plain", "json", "table")):
            block = f"b{i}"
            for args in (
                ("block", "create", f"10.{i}.0.0/24", "--name", block, "--gateway",
                 f"10.{i}.0.1"),
                ("block", "allocate", block),
                ("block", "allocate", block, "--mac", "02:00:00:00:00:01", "--hostname", "vm1"),
                ("block", "allocate", block, "--mac", "02:00:00:00:00:01"),
                ("block", "allocate", block, "--count", "3"),
                ("block", "allocate", block, "--address", f"10.{i}.0.1"),
            ):  # fmt: skip
                result = melange("-o", fmt, *args)
                seen.append((result.exit_code, TIMES.sub("T", result.stdout + result.stderr)))
        outputs[name] = seen
    assert outputs["url"] == outputs["direct"]
    assert [code for code, _ in outputs["url"]] == [0, 0, 0, 0, 0, 4] * 3  # 4: the gateway
    assert outputs["url"][1] == (0, "10.0.0.2\n")


def test_the_url_path_imports_neither_sqlalchemy_nor_rich(api):
    ok(api.direct("block", "create", "10.90.0.0/16", "--name", "b"))
    _populate(api.direct)
    code = (
        "import sys, runpy\n"
        "sys.argv = ['melange'] + sys.argv[1:]\n"
        "try:\n    runpy.run_module('melange_cli.main', run_name='__main__')\n"
        "except SystemExit as done:\n    print('EXIT', done.code)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'sqlalchemy', 'rich'}))\n"
    )
    where = ["--url", api.url, "--token-file", str(api.endpoint.token_file),
             "--ca-file", str(api.endpoint.ca_file)]  # fmt: skip
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MELANGE_")},
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    for args, first in ((["-o", "plain", "block", "allocate", "b"], "10.90.0.1"),
                        (["-o", "json", "export"], "{"),
                        (["-o", "plain", "ip", "list"], "10."),
                        (["-o", "plain", "block", "show", "nope"], "EXIT 3")):  # fmt: skip
        proc = subprocess.run([sys.executable, "-c", code, *where, *args], capture_output=True,
                              text=True, env=env, timeout=60)  # fmt: skip
        lines = proc.stdout.splitlines()
        assert lines[0].startswith(first), (args, proc.stdout, proc.stderr)
        assert lines[-1] == "[]", (args, lines[-1])


def test_every_host_local_operation_is_refused_by_the_client_and_no_remote_one():
    from melange.errors import InvalidInput
    from melange.operations import OPERATIONS
    from melange_cli.httpclient import route_of

    for name, operation in OPERATIONS.items():
        if operation.http is None:
            with pytest.raises(InvalidInput, match="is host-local"):
                route_of(name)
        else:
            assert route_of(name) is operation.http


def test_the_clients_history_bound_is_the_cores():
    from melange.reports import MAX_HISTORY
    from melange_cli.httpclient import HISTORY_MAX

    assert HISTORY_MAX == MAX_HISTORY


def test_one_connection_serves_every_request_of_a_process(api):
    from melange_cli.httpclient import Remote

    remote = Remote(api.url, str(api.endpoint.token_file), str(api.endpoint.ca_file))
    try:
        remote.call("block.create", {"cidr": "10.8.0.0/21", "name": "big", "dns": []})
        first = remote.connection.sock
        remote.call("block.allocate", {"block": "big", "count": 1500})
        assert len(remote.call("ip.list", {"released": False})) == 1500  # two pages
        with pytest.raises(MelangeError) as refused:
            remote.call("block.show", {"block": "nope"})
        assert refused.value.exit_code == 3
        assert remote.call("block.show", {"block": "big"})["name"] == "big"
        assert remote.connection.sock is first
    finally:
        remote.close()


def test_an_empty_melange_url_is_no_url(tmp_path):
    db = tmp_path / "s.db"
    assert run("--db", str(db), "policy", "create", "p", MELANGE_URL="").exit_code == 0
    assert run("policy", "list", MELANGE_URL="", MELANGE_DB=str(db)).stdout.startswith("p")


BLOCK = b'{"id": 7, "name": "web"}'
FRAMINGS = {
    "content-length": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 24\r\n\r\n" + BLOCK,
    "chunked, extensions, trailer": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                    b"Transfer-Encoding: chunked\r\n\r\n"
                                    b"a;x=1\r\n" + BLOCK[:10] + b"\r\ne\r\n" + BLOCK[10:]
                                    + b"\r\n0\r\nX-Trailer: 1\r\n\r\n",
    "interim 100, then HTTP/1.0 to the close": b"HTTP/1.1 100 Continue\r\n\r\n"
                                               b"HTTP/1.0 200 OK\r\n"
                                               b"Content-Type: application/json\r\n\r\n" + BLOCK,
}  # fmt: skip


@pytest.mark.parametrize("framing", FRAMINGS)
def test_every_body_framing_an_http_server_may_use_is_read(framing, token_file):
    """The client's HTTP/1.1 reading (http.client) against a server that answers
    exactly these bytes; the command prints the object whichever way it was framed."""

    def answer(conn: socket.socket) -> None:
        conn.settimeout(5)
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(65536)
        assert request.startswith(b"GET /v1/blocks/web HTTP/1.1\r\n")
        conn.sendall(FRAMINGS[framing])

    with listening(answer) as port:
        result = run("--url", f"http://127.0.0.1:{port}", "--token-file", str(token_file),
                     "-o", "json", "block", "show", "web")  # fmt: skip
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout) == json.loads(BLOCK)


@pytest.mark.parametrize(
    "reply",
    [b"SSH-2.0-OpenSSH_9.2\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n{\"id\"",
     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"],
)  # fmt: skip
def test_a_broken_answer_is_exit_6(reply, token_file):
    def answer(conn: socket.socket) -> None:
        conn.settimeout(5)
        conn.recv(65536)
        conn.sendall(reply)

    with listening(answer) as port:
        url = f"http://127.0.0.1:{port}"
        result = run("--url", url, "--token-file", str(token_file), "block", "show", "web")
        assert url in assert_error(result, 6)
