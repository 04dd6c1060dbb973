"""Constant memory: export, ip list and history stream, directly, through melanged's socket
and over its HTTP API; a socket request over 1 MiB is refused, never a broken pipe.

The memory tests run the real CLI in a child process on a store of ADDRESSES addresses
and HISTORY audit rows, and read the child's peak RSS from the kernel (getrusage of a
waited-for child). The code before streaming peaked at 316 MB (export), 346 MB
(ip list -o json) and 205 MB (ip list -o plain) for 200,000 addresses; streamed, each
stays near the interpreter's own size. benchmarks/streaming.py measures 1,000,000.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from melange import operations
from melange.errors import InvalidInput
from melange.store import Store
from tests.support import ROOT
from tests.support.http_daemon import HttpDaemon
from tests.support.socket_daemon import SocketDaemon

ADDRESSES = 100_000
HISTORY = 100_000
PEAK_MB = 80  # the bound the issue sets for 1,000,000 addresses; measured far below


def melange(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MELANGE_")}
    return subprocess.run([sys.executable, "-m", "melange_cli.main", *args], cwd=cwd or ROOT,
                          env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=600)  # fmt: skip


def peak_mb(*args: str, out: Path) -> int:
    """The peak RSS in MB of a melange process running `args`, its stdout to `out`.
    A child of a child of our own: RUSAGE_CHILDREN of that one child is its peak alone."""
    probe = (
        "import os, resource, subprocess, sys\n"
        "with open(sys.argv[1], 'wb') as out:\n"
        "    code = subprocess.run([sys.executable, '-m', 'melange_cli.main', *sys.argv[2:]],"
        " stdout=out).returncode\n"
        "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MELANGE_")}
    done = subprocess.run([sys.executable, "-c", probe, str(out), *args], cwd=ROOT,
                          env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=900)  # fmt: skip
    code, peak = done.stdout.split()
    assert code == "0", done.stderr
    return int(peak)


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> str:
    """A SQLite store of ADDRESSES addresses in one block and HISTORY audit rows, made
    through the core (the bulk allocation path) once for the module."""
    from melange.models import audit_log

    url = f"sqlite:///{tmp_path_factory.mktemp('big')}/big.db"
    store = Store(url)
    store.ensure_schema()
    operations.run(store, "block.create", {"cidr": "10.0.0.0/12", "name": "big",
                                           "network": "big"})  # fmt: skip
    for _ in range(ADDRESSES // 50_000):
        operations.run(store, "block.allocate", {"block": "big", "count": 50_000})
    at = datetime(2026, 1, 1)
    rows = [{"at": at, "actor": "bench", "via": "cli", "command": "ip.release",
             "params": '{"address": "10.0.0.1"}', "outcome": "ok"}
            for _ in range(HISTORY)]  # fmt: skip
    with store.engine.begin() as conn:
        conn.execute(audit_log.insert(), rows)
    store.close()
    return url


def test_an_import_over_one_mib_goes_through_the_socket_streamed(tmp_path):
    """The CLI uploads a large file in chunk lines; one request line over 1 MiB (the
    file as `text`) is still refused with invalid_input, never a broken pipe."""
    from melange_cli import client

    url = f"sqlite:///{tmp_path}/m.db"
    store = Store(url)
    store.ensure_schema()
    operations.run(store, "block.create", {"cidr": "10.0.0.0/16", "name": "b", "network": "n"})
    operations.run(store, "block.allocate", {"block": "b", "count": 12_000})
    exported = melange("--db", url, "export").stdout
    store.close()
    assert len(exported) > 2_000_000
    (tmp_path / "export.json").write_text(exported)
    with SocketDaemon(f"sqlite:///{tmp_path}/new.db", tmp_path / "d") as daemon:
        for _ in range(3):
            with pytest.raises(InvalidInput, match="request larger than 1 MiB"):
                client.call(str(daemon.socket), "import", {"text": exported})
        done = melange("--socket", str(daemon.socket), "import", str(tmp_path / "export.json"))
        assert done.returncode == 0, done.stderr
        assert melange("--socket", str(daemon.socket), "export").stdout == exported


def _upload(path: Path, lines: list[bytes], close_early: bool = False) -> dict | None:
    """Send an upload's lines as they are; the answer line (None: the daemon closed)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(60)
        sock.connect(str(path))
        for line in lines:
            try:
                sock.sendall(line)
            except (BrokenPipeError, ConnectionResetError):
                break
        if close_early:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # closed by the daemon already: its answer is waiting
        with sock.makefile("rb") as stream:
            answer = stream.readline()
            return json.loads(answer) if answer else None


def test_a_socket_upload_is_a_request_chunks_and_an_end(tmp_path):
    """docs/protocol.md, "Streamed uploads": each way of getting it wrong is one
    invalid_input answer and nothing imported; the right one imports."""
    url = f"sqlite:///{tmp_path}/u.db"
    Store(url).ensure_schema()
    text = ('{"format": "melange-export", "version": 1, "blocks": [{"addresses": '
            '[{"address": "10.1.0.5"}], "cidr": "10.1.0.0/24", "network": "u"}]}\n')  # fmt: skip
    head = {"version": 1, "id": 4, "op": "import", "params": {"format": "melange"},
            "upload": True}  # fmt: skip

    def lines(*parts: object) -> list[bytes]:
        return [json.dumps(part).encode() + b"\n" for part in parts]

    pieces = [{"chunk": text[:50]}, {"chunk": text[50:]}]
    with SocketDaemon(url, tmp_path / "d") as daemon:
        wrong = {
            "end count": lines(head, *pieces, {"end": {"chunks": 3}}),
            "not a chunk": lines(head, pieces[0], {"chunk": 5}),
            "no end": lines(head, *pieces),
            "twice": lines({**head, "params": {"text": text}}, *pieces),
            "other op": lines({**head, "op": "block.list", "params": {}}),
            "line over 1 MiB": lines(head, {"chunk": "x" * (1 << 20)}),
        }
        for case, sent in wrong.items():
            answer = _upload(daemon.socket, sent, close_early=True)
            assert answer is not None, case
            assert (answer["ok"], answer["error"]["code"], answer["error"]["exit_code"]) == (
                False, "invalid_input", 2), (case, answer)  # fmt: skip
            assert answer["id"] == 4, case
        assert melange("--socket", str(daemon.socket), "ip", "list").stdout == ""
        answer = _upload(daemon.socket, lines(head, *pieces, {"end": {"chunks": 2}}))
        assert answer is not None and answer["ok"] and answer["result"]["addresses"] == 1
        assert melange("--socket", str(daemon.socket), "ip", "list").stdout.startswith("10.1.0.5")


def _raw(path: Path, request: dict) -> list[dict]:
    """The response lines to one request, up to the daemon's last line for it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(path))
        sock.sendall(json.dumps(request).encode() + b"\n")
        lines = []
        with sock.makefile("rb") as stream:
            while True:
                lines.append(json.loads(stream.readline()))
                last = lines[-1]
                if last.get("end") or last.get("ok") is False or ("result" in last):
                    return lines


def test_a_streamed_socket_result_is_a_head_chunks_and_an_end(tmp_path):
    url = f"sqlite:///{tmp_path}/m.db"
    store = Store(url)
    store.ensure_schema()
    operations.run(store, "block.create", {"cidr": "10.0.0.0/16", "name": "b", "network": "n"})
    operations.run(store, "block.allocate", {"block": "b", "count": 2_500})
    whole = operations.run(store, "ip.list", {})
    request = {"version": 1, "id": 9, "op": "ip.list", "params": {}, "stream": True}
    with SocketDaemon(url, tmp_path / "d") as daemon:
        lines = _raw(daemon.socket, request)
        assert lines[0] == {"version": 1, "id": 9, "ok": True, "stream": True}
        assert [len(line["chunk"]) for line in lines[1:-1]] == [1000, 1000, 500]
        assert [r for line in lines[1:-1] for r in line["chunk"]] == whole
        assert lines[-1] == {"end": True}
        # without "stream": one line, as before
        (plain,) = _raw(daemon.socket, {**request, "stream": False})
        assert plain["result"] == whole
        # a failure before the first record is the usual error line
        (failed,) = _raw(daemon.socket, {**request, "params": {"network": "nope"}})
        assert (failed["ok"], failed["error"]["code"], failed["error"]["exit_code"]) == (
            False, "not_found", 3)  # fmt: skip
        entities = _raw(daemon.socket, {**request, "op": "export"})
        kinds = [next(iter(e)) for line in entities[1:-1] for e in line["chunk"]]
        assert kinds == ["block"] + ["address"] * 2_500
    store.close()


COMMANDS = {
    "export": ("export",),
    "export-csv": ("export", "-o", "csv"),
    "ip-json": ("ip", "list", "-o", "json"),
    "ip-plain": ("ip", "list", "-o", "plain"),
    "history": ("history", "--limit", str(HISTORY), "-o", "json"),
}


@pytest.mark.parametrize("command", ["export", "ip-json", "history"])
def test_direct_commands_stay_within_the_memory_bound(big, tmp_path, command):
    out = tmp_path / "out"
    peak = peak_mb("--db", big, *COMMANDS[command], out=out)
    assert peak < PEAK_MB, f"{command}: {peak} MB"
    _check_output(command, out)


@pytest.mark.parametrize("command", ["export-csv", "ip-plain", "history"])
def test_socket_commands_stay_within_the_memory_bound(big, tmp_path, command):
    out = tmp_path / "out"
    with SocketDaemon(big, tmp_path / "d") as daemon:
        peak = peak_mb("--socket", str(daemon.socket), *COMMANDS[command], out=out)
        daemon_peak = _vm_hwm(daemon.proc.pid)  # type: ignore[union-attr]
    assert peak < PEAK_MB, f"{command}: {peak} MB"
    assert daemon_peak < 2 * PEAK_MB, f"melanged: {daemon_peak} MB"
    _check_output(command, out)


@pytest.mark.parametrize("command", ["export", "ip-json"])
def test_http_commands_stay_within_the_memory_bound(big, tmp_path, command):
    out = tmp_path / "out"
    copy = tmp_path / "copy.db"  # HttpDaemon makes its tokens in the store: a copy of its own
    shutil.copyfile(big.removeprefix("sqlite:///"), copy)
    with HttpDaemon(f"sqlite:///{copy}", tmp_path / "api", tls=False) as api:
        token = tmp_path / "token"
        token.write_text(api.tokens["admin"] + "\n")
        token.chmod(0o600)
        peak = peak_mb("--url", api.url, "--token-file", str(token), *COMMANDS[command],
                       out=out)  # fmt: skip
    assert peak < PEAK_MB, f"{command}: {peak} MB"
    _check_output(command, out)


def _vm_hwm(pid: int) -> int:
    """A running process's peak RSS so far, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmHWM")


def _check_output(command: str, out: Path) -> None:
    """The streamed output is whole: every address (or change) once, in order."""
    with out.open() as text:
        if command == "ip-plain":
            lines = [line.split("\t", 1)[0] for line in text]
            assert (len(lines), lines[0], lines[-1]) == (
                ADDRESSES, "10.0.0.1", _nth(ADDRESSES))  # fmt: skip  (strings: small)
            return
        if command == "export-csv":
            assert sum(1 for line in text if line.startswith("address,")) == ADDRESSES
            return
        if command == "ip-json":
            records = json.load(text)
            assert len(records) == ADDRESSES and records[-1]["address"] == _nth(ADDRESSES)
            return
        if command == "history":
            records = json.load(text)
            assert len(records) == HISTORY
            assert [r["id"] for r in records] == sorted(r["id"] for r in records)
            return
        document = json.load(text)
        (block,) = document["blocks"]
        assert len(block["addresses"]) == ADDRESSES


def _nth(n: int) -> str:
    import ipaddress

    return str(ipaddress.ip_address("10.0.0.0") + n)


def test_a_pulled_stream_hands_on_errors_and_stops_when_its_reader_does():
    import time

    from melange.errors import NotFound
    from melange.streaming import pulled

    produced: list[int] = []

    def run(sink) -> None:
        for n in range(100_000):
            produced.append(n)
            sink(n)

    reader = pulled(run, depth=2, batch=10)
    assert [next(reader) for _ in range(5)] == [0, 1, 2, 3, 4]
    reader.close()
    time.sleep(1.5)
    assert len(produced) <= 50  # the queue's batches and the one being filled, no more

    def failing(sink) -> None:
        for n in range(25):
            sink(n)
        raise NotFound("gone mid-way")

    got: list[int] = []
    with pytest.raises(NotFound, match="gone mid-way"):
        for n in pulled(failing, batch=10):
            got.append(n)
    assert got == list(range(20))


def test_an_http_export_failing_before_its_first_line_is_a_problem_not_a_cut_stream(tmp_path):
    url = f"sqlite:///{tmp_path}/m.db"
    with HttpDaemon(url, tmp_path / "api", tls=False) as api:
        reader = api.client("reader")
        missing = reader.get("/v1/export", params={"network": "nope"})
        assert missing.status_code == 404
        assert missing.json()["code"] == "not_found"
        operations.run(api.store, "block.create", {"cidr": "10.0.0.0/24", "network": "n"})
        lines = reader.get("/v1/export", params={"network": "n"}).text.splitlines()
        assert [next(iter(json.loads(line))) for line in lines] == ["format", "block", "end"]
