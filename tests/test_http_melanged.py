"""`melanged --http` as a process: plain HTTP on loopback, TLS, plain HTTP beyond
loopback refused (exit 2), the config file's keys, beside the DHCP work, SIGHUP
re-reading the configuration (a new store, a new address), SIGTERM graceful."""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support import ROOT
from tests.support.http_daemon import MelangedHttp, free_port, make_certificate, make_tokens
from tests.support.melanged_harness import wait_until


def sqlite(path: Path) -> str:
    return f"sqlite:///{path}"


def run_melanged(*args: str, config: Path | None = None) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    if config is not None:
        env["MELANGE_CONFIG"] = str(config)
    return subprocess.run([sys.executable, "-m", "melanged.main", "--foreground", *args],
                          capture_output=True, text=True, env=env, timeout=60)  # fmt: skip


def test_plain_http_on_loopback_alone_then_sigterm(tmp_path):
    db = sqlite(tmp_path / "store.db")
    tokens = make_tokens(db)
    daemon = MelangedHttp(tmp_path, [])
    daemon.argv += ["--db", db, "--http", f"127.0.0.1:{daemon.port}"]
    daemon.start()
    try:
        daemon.wait_serving()
        with daemon.client(tokens["admin"]) as client:
            made = client.post("/v1/blocks", json={"cidr": "10.1.0.0/24"})
            assert made.status_code == 201, made.text
            assert client.get("/v1/blocks").json()["items"][0]["cidr"] == "10.1.0.0/24"
    finally:
        assert daemon.stop() == 0
    assert "no DHCP work" in daemon.log_text()
    with pytest.raises(httpx.TransportError), daemon.client() as client:
        client.get("/v1/health")


def test_tls_from_the_config_file_beside_the_dhcp_work(tmp_path):
    db = sqlite(tmp_path / "store.db")
    tokens = make_tokens(db)
    cert, key = make_certificate(tmp_path)
    port = free_port()
    config = tmp_path / "melange.conf"
    config.write_text(f"[melanged]\ndb = {db}\nhttp = 127.0.0.1:{port}\n"
                      f"tls_cert = {cert}\ntls_key = {key}\n")  # fmt: skip
    hosts = tmp_path / "dhcp" / "hosts"
    daemon = MelangedHttp(tmp_path, ["--hostsfile", str(hosts)], port=port, tls=True,
                          config=config)  # fmt: skip
    daemon.start()
    try:
        daemon.wait_serving()
        with daemon.client(tokens["writer"]) as client:
            assert client.get("/v1/blocks").status_code == 200
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as plain:
            with pytest.raises(httpx.TransportError):
                plain.get("/v1/health")  # TLS only
        deadline = time.monotonic() + 10
        while not hosts.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert hosts.exists()  # the DHCP work runs beside the API
    finally:
        assert daemon.stop() == 0


@pytest.mark.parametrize("address", ["0.0.0.0", "[::]", "192.0.2.10"])
def test_plain_http_beyond_loopback_is_refused(tmp_path, address):
    result = run_melanged("--db", sqlite(tmp_path / "s.db"), "--http", f"{address}:9898")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: refusing plain HTTP"), lines


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--http", "nonsense"], "HOST:PORT"),
        (["--http", "127.0.0.1:99999"], "HOST:PORT"),
        (["--http", "127.0.0.1:9898", "--tls-cert", "/nonexistent.pem"], "go together"),
        (["--http", "127.0.0.1:0", "--tls-cert", "/nonexistent.pem", "--tls-key", "/x.key"],
         "cannot load the TLS certificate"),
    ],
)
def test_bad_http_settings_are_one_error_line(tmp_path, args, message):
    result = run_melanged("--db", sqlite(tmp_path / "s.db"), *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_an_address_in_use_is_one_error_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_melanged("--db", sqlite(tmp_path / "s.db"), "--http", f"127.0.0.1:{port}")
    assert result.returncode == 2
    assert "cannot serve HTTP" in result.stderr and result.stderr.count("\n") == 1


def test_insecure_http_says_so_explicitly(tmp_path):
    db = sqlite(tmp_path / "store.db")
    make_tokens(db)
    daemon = MelangedHttp(tmp_path, [])
    daemon.argv += ["--db", db, "--http", f"0.0.0.0:{daemon.port}", "--insecure-http"]
    daemon.start()
    try:
        daemon.wait_serving()
    finally:
        assert daemon.stop() == 0


def test_sighup_repoints_the_store_then_moves_the_address(tmp_path):
    first, second = sqlite(tmp_path / "one.db"), sqlite(tmp_path / "two.db")
    tokens_one, tokens_two = make_tokens(first), make_tokens(second)
    port, moved = free_port(), free_port()
    config = tmp_path / "melange.conf"
    config.write_text(f"[melanged]\ndb = {first}\nhttp = 127.0.0.1:{port}\n")
    daemon = MelangedHttp(tmp_path, [], port=port, config=config)
    daemon.start()
    try:
        daemon.wait_serving()
        with daemon.client(tokens_one["admin"]) as client:
            assert client.post("/v1/blocks", json={"cidr": "10.1.0.0/24"}).status_code == 201
        config.write_text(f"[melanged]\ndb = {second}\nhttp = 127.0.0.1:{port}\n")
        daemon.signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while True:  # the second store's tokens work once melanged has re-read its config
            with daemon.client(tokens_two["reader"]) as client:
                response = client.get("/v1/blocks")
            if response.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert response.json() == {"items": [], "next": None}
        with daemon.client(tokens_one["reader"]) as client:
            assert client.get("/v1/blocks").status_code == 401  # not a token of this store
        config.write_text(f"[melanged]\ndb = {second}\nhttp = 127.0.0.1:{moved}\n")
        daemon.signal(signal.SIGHUP)
        daemon.wait_serving(port=moved)
        with pytest.raises(httpx.TransportError), daemon.client() as client:
            client.get("/v1/health")  # the old address is closed
        with socket.socket() as taken:  # a new address that cannot be served
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            config.write_text(f"[melanged]\ndb = {second}\n"
                              f"http = 127.0.0.1:{taken.getsockname()[1]}\n")  # fmt: skip
            daemon.signal(signal.SIGHUP)
            deadline = time.monotonic() + 15
            while "cannot serve HTTP" not in daemon.log_text():
                assert time.monotonic() < deadline, daemon.log_text()
                time.sleep(0.1)
        daemon.wait_serving(port=moved)  # the running address goes on serving
    finally:
        assert daemon.stop() == 0


def test_sigterm_lets_a_request_in_progress_finish(tmp_path):
    db = sqlite(tmp_path / "store.db")
    tokens = make_tokens(db)
    daemon = MelangedHttp(tmp_path, [])
    daemon.argv += ["--db", db, "--http", f"127.0.0.1:{daemon.port}"]
    daemon.start()
    try:
        daemon.wait_serving()
        with daemon.client(tokens["admin"]) as client:
            client.post("/v1/blocks", json={"cidr": "10.0.0.0/16"})
            client.post("/v1/blocks/10.0.0.0%2F16/allocations", json={"count": 3000})
            with client.stream("GET", "/v1/export") as response:
                daemon.signal(signal.SIGTERM)
                lines = sum(1 for _ in response.iter_lines())
        assert lines == 1 + 1 + 3000 + 1  # header, block, addresses, end: all of it
        assert daemon.proc is not None
        assert daemon.proc.wait(timeout=20) == 0  # exits on its own, after the answer
    finally:
        assert daemon.stop() == 0


def test_sighup_reloads_a_renewed_certificate_in_place(tmp_path):
    db = sqlite(tmp_path / "store.db")
    make_tokens(db)
    cert, key = make_certificate(tmp_path)
    port = free_port()
    config = tmp_path / "melange.conf"
    config.write_text(f"[melanged]\ndb = {db}\nhttp = 127.0.0.1:{port}\n"
                      f"tls_cert = {cert}\ntls_key = {key}\n")  # fmt: skip
    daemon = MelangedHttp(tmp_path, [], port=port, tls=True, config=config)
    daemon.start()
    try:
        daemon.wait_serving()
        renewed_cert, renewed_key = make_certificate(tmp_path, "renewed")
        renewed_cert.replace(cert)
        renewed_key.replace(key)
        daemon.signal(signal.SIGHUP)
        renewed_ca = ssl.create_default_context(cafile=str(tmp_path / "ca-renewed.pem"))
        deadline = time.monotonic() + 15
        while True:
            try:
                with httpx.Client(base_url=daemon.url(), verify=renewed_ca, timeout=5) as client:
                    assert client.get("/v1/health").status_code == 200
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "the renewed certificate is not served"
                time.sleep(0.1)
        with pytest.raises(httpx.ConnectError), daemon.client() as client:
            client.get("/v1/health")  # the old CA no longer vouches for the server
    finally:
        assert daemon.stop() == 0


def test_a_server_that_stops_by_itself_says_so(tmp_path):
    """uvicorn leaves its loop on its own after `limit_max_requests`: a stand-in for a
    server that ends without being told to. melanged hears of it (and stops, status 1)."""
    from melange.store import Store
    from melanged.http.listen import Listen
    from melanged.http.server import HttpServer

    told: list[bool] = []
    store = Store(sqlite(tmp_path / "store.db"))
    server = HttpServer(Listen("127.0.0.1", 0), store, on_failure=lambda: told.append(True))
    server.server.config.limit_max_requests = 1
    server.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}") as client:
            assert client.get("/v1/health").status_code == 200
        assert server.thread is not None
        server.thread.join(timeout=15)
        assert told == [True] and server.failed
    finally:
        server.stop()
        store.close()


@pytest.mark.parametrize(("value", "status"), [("true", 0), ("yes", 0), ("false", 2),
                                               ("maybe", 2)])  # fmt: skip
def test_insecure_http_from_the_config_file(tmp_path, value, status):
    from melange.errors import InvalidInput
    from melanged.settings import resolve

    config = tmp_path / "melange.conf"
    config.write_text(f"[melanged]\nhttp = 0.0.0.0:9898\ninsecure_http = {value}\n")
    flags = {"db": sqlite(tmp_path / "s.db"), "insecure_http": None}
    if status == 0:
        settings = resolve(flags, str(config))
        assert settings.insecure_http is True and settings.hostsfile is None
    else:
        with pytest.raises(InvalidInput, match="insecure_http|plain HTTP"):
            resolve(flags, str(config))


@pytest.mark.parametrize(("line", "words"), [
    ("http_max_body = 0", "http_max_body must be a whole number above 0"),
    ("http_max_body = 1.5", "http_max_body must be a whole number"),
    ("http_body_timeout = -1", "http_body_timeout must be a number of seconds above 0"),
    ("http_body_timeout = nan", "http_body_timeout must be a number of seconds"),
    ("http_max_bodyy = 5", "unknown key(s) in [melanged]: http_max_bodyy"),
])  # fmt: skip
def test_bad_http_limits_in_the_config_file_are_refused(tmp_path, line, words):
    config = tmp_path / "melange.conf"
    config.write_text(f"[melanged]\nhttp = 127.0.0.1:9898\n{line}\n")
    result = run_melanged("--db", sqlite(tmp_path / "s.db"), config=config)
    assert result.returncode == 2, result.stderr
    assert words in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_http_limits_from_the_config_file_are_served_and_follow_sighup(tmp_path):
    """A body over `http_max_body` is 413; a SIGHUP with a larger limit takes it."""
    db = sqlite(tmp_path / "store.db")
    tokens = make_tokens(db)
    port = free_port()
    config = tmp_path / "melange.conf"
    config.write_text(f"[melanged]\ndb = {db}\nhttp = 127.0.0.1:{port}\nhttp_max_body = 64\n")
    daemon = MelangedHttp(tmp_path, [], port=port, config=config)
    daemon.start()
    body = {"cidr": "10.9.0.0/24", "name": "a-name-long-enough-to-pass-64-bytes-of-json"}
    try:
        daemon.wait_serving()
        with daemon.client(tokens["admin"]) as client:
            refused = client.post("/v1/blocks", json=body)
            assert refused.status_code == 413, refused.text
            assert refused.json()["code"] == "invalid_input"
        config.write_text(f"[melanged]\ndb = {db}\nhttp = 127.0.0.1:{port}\n"
                          "http_max_body = 4096\n")  # fmt: skip
        mark = len(daemon.log_text())
        daemon.proc.send_signal(signal.SIGHUP)
        # Logged once the new limits are served ("SIGHUP" is logged as it starts:
        # waiting for that, a request could still meet the old limit).
        wait_until(lambda: "configuration re-read" in daemon.log_text()[mark:],
                   what="melanged to re-read its configuration")  # fmt: skip
        daemon.wait_serving()
        with daemon.client(tokens["admin"]) as client:
            made = client.post("/v1/blocks", json=body)
            assert made.status_code == 201, made.text
    finally:
        assert daemon.stop() == 0


def test_the_port_accepts_as_soon_as_the_socket_answers(tmp_path):
    """melanged binds its HTTP address before its socket serves: a script that waits for
    the socket and then uses the API is never refused (an import through `--url` right
    after the socket appeared was, when the port was bound after it)."""
    from tests.support.socket_daemon import SocketDaemon

    db = sqlite(tmp_path / "store.db")
    tokens = make_tokens(db)
    for attempt in range(3):
        port = free_port()
        with SocketDaemon(db, tmp_path / f"d{attempt}", extra=("--http", f"127.0.0.1:{port}")):
            with socket.create_connection(("127.0.0.1", port), timeout=10):
                pass  # accepted (a refusal raises ConnectionRefusedError)
            headers = {"Authorization": f"Bearer {tokens['reader']}"}
            answer = httpx.get(f"http://127.0.0.1:{port}/v1/blocks", headers=headers, timeout=10)
            assert answer.status_code == 200, answer.text
