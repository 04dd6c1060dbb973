"""A streamed import: the file read as it arrives, directly and as an HTTP body.

The memory tests import an export of ADDRESSES addresses into a fresh store, the CLI
in a child process and melanged (socket and HTTP in one process) as a process of its
own, and read their peaks from the kernel. The code that read the file whole peaked
at 125 MB for ADDRESSES directly (338 MB at 200,000, 1,425 MB at 1,000,000), over the
bound; streamed, both stay near the interpreter's own size (61 MB here, 59 MB
directly at 1,000,000). benchmarks/streaming.py measures 1,000,000.
The socket's framing has its tests in tests/test_streaming.py.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
from itertools import chain
from pathlib import Path

import pytest

from melange import operations
from melange.errors import InvalidInput
from melange.store import Store
from melange.transfer_parse import read
from tests.support import ROOT
from tests.support.http_daemon import free_port, make_tokens
from tests.support.socket_daemon import SocketDaemon
from tests.support.sql import dump_store
from tests.test_streaming import PEAK_MB, _vm_hwm, melange, peak_mb

ADDRESSES = 50_000


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """An export of ADDRESSES addresses in one block (with an interface, an allowed IP
    and a NAT mapping, so every kind streams), made once for the module."""
    where = tmp_path_factory.mktemp("exported")
    store = Store(f"sqlite:///{where}/source.db")
    store.ensure_schema()
    operations.run(store, "block.create", {"cidr": "10.0.0.0/12", "name": "big",
                                           "network": "big"})  # fmt: skip
    for _ in range(ADDRESSES // 50_000):
        operations.run(store, "block.allocate", {"block": "big", "count": 50_000})
    operations.run(store, "block.create", {"cidr": "192.0.2.0/24", "name": "pub",
                                           "network": "big"})  # fmt: skip
    operations.run(store, "interface.create", {"vif": "vif1", "network": "big",
                                               "mac": "02:00:00:00:00:01"})  # fmt: skip
    operations.run(store, "interface.allow_ip", {"vif": "vif1", "address": "10.0.0.9"})
    operations.run(store, "block.allocate", {"block": "pub", "address": "192.0.2.1"})
    operations.run(store, "nat.add", {"inside_global": "192.0.2.1", "inside_local": "10.0.0.5"})
    store.close()
    path = where / "export.json"
    done = melange("--db", f"sqlite:///{where}/source.db", "export")
    assert done.returncode == 0, done.stderr
    path.write_text(done.stdout)
    return path


def test_a_direct_import_stays_within_the_memory_bound(exported, tmp_path):
    url = f"sqlite:///{tmp_path}/new.db"
    peak = peak_mb("--db", url, "import", str(exported), out=tmp_path / "out")
    assert peak < PEAK_MB, f"import: {peak} MB"
    text = exported.read_text()  # the interface and the mapping streamed out, and back in
    assert '"allowed_ips": [{"address": "10.0.0.9"' in text and '"inside_local": "10.0.0.5"' in text
    assert melange("--db", url, "export").stdout == text


def test_an_http_and_a_socket_import_stay_within_the_memory_bound(exported, tmp_path):
    """melanged serving both; the client's peak and the daemon's (VmHWM) each time."""
    url = f"sqlite:///{tmp_path}/new.db"
    token = tmp_path / "token"
    token.write_text(make_tokens(url)["admin"] + "\n")
    token.chmod(0o600)
    port = free_port()
    extra = ("--http", f"127.0.0.1:{port}")
    with SocketDaemon(url, tmp_path / "d", extra=extra) as daemon:
        _wait_for(port)
        api = ("--url", f"http://127.0.0.1:{port}", "--token-file", str(token))
        peak = peak_mb(*api, "import", str(exported), out=tmp_path / "out")
        daemon_peak = _vm_hwm(daemon.proc.pid)  # type: ignore[union-attr]
        assert peak < PEAK_MB, f"HTTP import client: {peak} MB"
        assert daemon_peak < PEAK_MB, f"melanged after an HTTP import: {daemon_peak} MB"
        assert melange(*api, "export").stdout == exported.read_text()
        again = melange("--socket", str(daemon.socket), "import", str(exported))
        assert again.returncode == 2 and "nothing imported" in again.stderr
        daemon_peak = _vm_hwm(daemon.proc.pid)  # type: ignore[union-attr]
        assert daemon_peak < PEAK_MB, f"melanged after a socket import: {daemon_peak} MB"


def test_an_http_import_streams_its_body_and_a_failure_changes_nothing(tmp_path):
    """The body is the file (chunked), `format` in the query; a JSON body is the
    parameters, as before; a refusal before the end of the body is an answer, not a
    broken pipe; a file that fails imports nothing."""
    url = f"sqlite:///{tmp_path}/s.db"
    tokens = make_tokens(url)
    port = free_port()
    text = _export_text(3000)
    with SocketDaemon(url, tmp_path / "d", extra=("--http", f"127.0.0.1:{port}")):
        _wait_for(port)
        status, body = _post(port, tokens["admin"], "?format=melange&source=x.json",
                             _pieces(text), "text/plain")  # fmt: skip
        assert (status, body["addresses"], body["blocks"]) == (200, 3000, 1), body
        before = _ipam(url)
        status, body = _post(port, tokens["admin"], "", _pieces(text), "text/csv")
        assert status in (400, 409) and "nothing imported" in body["detail"], body
        status, body = _post(port, tokens["reader"], "", _pieces(text * 40), "text/plain")
        assert (status, body["code"]) == (403, "permission_denied"), body
        status, body = _post(port, tokens["admin"], "", iter([b"\xff\xfe"]), "text/plain")
        assert status == 400 and "not UTF-8" in body["detail"], body
        status, body = _post(port, tokens["admin"], "?format=nope", _pieces(text), "text/plain")
        assert status == 400 and "unknown import format" in body["detail"], body
        assert _ipam(url) == before
        payload = json.dumps({"text": _export_text(1, "10.9.0.0/24"), "format": "melange"})
        status, body = _post(port, tokens["admin"], "", iter([payload.encode()]), JSON)
        assert (status, body["addresses"]) == (200, 1), body


JSON = "application/json"


def _ipam(url: str) -> list[tuple]:
    """The store's rows but the tokens' and the audit trail's (a refusal is audited, a
    token's use noted)."""
    return [row for row in dump_store(url) if row[0] not in ("api_tokens", "audit_log")]


def _wait_for(port: int, timeout: float = 60) -> None:
    """Until melanged's HTTP listener (up after its socket) takes connections."""
    import socket
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _post(port: int, token: str, query: str, body, media: str) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": media}
    try:
        connection.request("POST", "/v1/import" + query, body, headers)
    except (BrokenPipeError, ConnectionResetError):
        pass  # answered before the whole body: read it
    response = connection.getresponse()
    try:
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def _pieces(text: str, size: int = 7000):
    data = text.encode()
    return (data[i : i + size] for i in range(0, len(data), size))


def _export_text(count: int, cidr: str = "10.1.0.0/16") -> str:
    addresses = ", ".join(
        json.dumps({"address": f"10.1.{i // 250}.{i % 250 + 2}", "state": "allocated"})
        for i in range(count)
    ) if cidr == "10.1.0.0/16" else json.dumps({"address": "10.9.0.5"})
    return ('{"format": "melange-export", "version": 1,\n"blocks": [\n'
            f'{{"addresses": [{addresses}], "cidr": "{cidr}", "network": "s"}}\n]}}\n')  # fmt: skip


PRETTY = """\
{
  "format": "melange-export",
  "version": 1,
  "policies": [
    {
      "name": "edge", "description": null,
      "unusable_ranges": [], "unusable_octets": [7]
    }
  ],
  "blocks": [
    {
      "cidr": "10.2.0.0/24",
      "network": "p",
      "addresses": [
        {"address": "10.2.0.5"},
        {
          "address": "10.2.0.6"
        }
      ],
      "routes": []
    }
  ]
}
"""


@pytest.mark.parametrize("size", [1, 2, 5, 64, 1 << 20])
def test_the_json_reader_gives_each_entity_its_line_however_the_text_is_cut(size):
    """Pieces of any size (a number, a word or an escape cut in two) read as the whole:
    the same entities, each on the line it starts on."""
    pieces = [PRETTY[i : i + size] for i in range(0, len(PRETTY), size)]
    with read(pieces) as parsed:
        assert [(line, kind) for line, kind, _ in parsed.entities] == [(5, "policy"), (11, "block")]
        assert parsed.entities[0][2]["unusable_octets"] == [7]
        assert "addresses" not in parsed.entities[1][2]
        assert list(parsed.addresses) == [
            [15, 1, {"address": "10.2.0.5"}], [16, 1, {"address": "10.2.0.6"}],
        ]  # fmt: skip


HEAD = '{"format": "melange-export", "version": 1,'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (HEAD + '\n"blocks": [\n{"cidr": }\n]}\n', "line 3: not valid JSON"),
        (HEAD + '\n"blocks": 5}', "line 2: blocks must be a list"),
        (HEAD + '\n"blocks": [7]}', "line 2: a block must be an object"),
        ('{"format": "other"}', "not a melange export"),
        ('{"version": 2, "format": "melange-export"}', "unsupported export version 2"),
        ('{"blocks": [], "format": "melange-export", "version": 1} x',
         "line 1: not valid JSON (Extra data)"),
        (HEAD + '"blocks": [{"addresses": [' + "[" * 100_000, "nested too deeply"),
        (HEAD + '"blocks": [{"cidr": "\\u0000"}]}', "line 1: "),
        (HEAD + '\n"blocks": [', "line 2: not valid JSON"),
    ],
)  # fmt: skip
def test_the_json_reader_refuses_with_a_line(text, message):
    for size in (3, len(text)):
        with pytest.raises(InvalidInput) as refused:
            read([text[i : i + size] for i in range(0, len(text), size)]).close()
        assert message in refused.value.message, (size, refused.value.message)


def test_progress_counts_bytes_read_then_entities_then_addresses(tmp_path):
    """The bar's three phases are real counts: the CLI's bytes as the import reads them
    (each piece read when the import takes it), then the entities made, then the
    addresses written, batch by batch."""
    from melange_cli.transfer import _chunks

    count = 30_000
    path = tmp_path / "export.json"
    path.write_text(_export_text(count))
    size = path.stat().st_size
    assert size > 1 << 20  # two pieces of a MiB
    calls: list[tuple[str, int, int]] = []
    chunks = _chunks(str(path), lambda done, total: calls.append(("read", done, total)))
    store = Store(f"sqlite:///{tmp_path}/p.db")
    store.ensure_schema()
    params = {"chunks": _spy(chunks, calls), "format": "melange",
              "progress": lambda done, total: calls.append(("core", done, total))}  # fmt: skip
    operations.run(store, "import", params)
    store.close()
    reading = [c for c in calls if c[0] != "core"]
    assert [c[0] for c in reading] == ["read", "piece", "read", "piece", "piece", "read"]
    assert reading[0] == ("read", 1 << 20, size) and reading[-1] == ("read", size, size)
    assert calls.index(reading[-1]) < next(i for i, c in enumerate(calls) if c[0] == "core")
    core = [c[1:] for c in calls if c[0] == "core"]
    written = [(n, count) for n in range(5000, count + 1, 5000)]
    assert core == [(1, 1), (0, count), *written, (count, count)]


def _spy(chunks, calls):
    for piece in chunks:
        calls.append(("piece", 0, 0))
        yield piece


def test_a_repeat_across_batches_is_named_by_its_line_and_nothing_is_imported(tmp_path):
    """An address listed again after a batch has gone in is found in the store: the same
    words as a repeat within a batch; a MAC active twice likewise."""
    rows = ["kind,network,cidr,address,mac,state", "block,s,10.1.0.0/16,,,"]
    rows += [f"address,s,10.1.0.0/16,10.1.{i // 250}.{i % 250 + 2},,allocated"
             for i in range(6000)]  # fmt: skip
    rows += ["address,s,10.1.0.0/16,10.1.0.2,,allocated",
             "address,s,10.1.0.0/16,10.1.100.1,02:00:00:00:00:01,allocated",
             "address,s,10.1.0.0/16,10.1.100.2,02:00:00:00:00:01,allocated"]  # fmt: skip
    url = f"sqlite:///{tmp_path}/r.db"
    path = tmp_path / "r.csv"
    path.write_text("\n".join(rows) + "\n")
    done = melange("--db", url, "import", str(path))
    assert done.returncode == 2, done.stderr
    assert "line 6003: 10.1.0.2 is listed twice in block 10.1.0.0/16" in done.stderr
    assert "line 6005: MAC 02:00:00:00:00:01 holds two addresses" in done.stderr
    assert "2 problem(s)" in done.stderr
    assert melange("--db", url, "ip", "list").stdout == ""


def test_a_file_from_standard_input_imports(tmp_path):
    """`import -` reads standard input a piece at a time as well."""
    url = f"sqlite:///{tmp_path}/stdin.db"
    path = tmp_path / "small.json"
    path.write_text(_export_text(30))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MELANGE_")}
    with path.open("rb") as given:
        argv = [sys.executable, "-m", "melange_cli.main", "--db", url, "-o", "json", "import", "-"]
        done = subprocess.run(argv, stdin=given, capture_output=True, text=True,
                              env={**env, "PYTHONPATH": str(ROOT)}, timeout=600)  # fmt: skip
    assert json.loads(done.stdout)["addresses"] == 30, done.stderr


def test_the_ndjson_form_of_an_export_imports_too(tmp_path):
    """What GET /v1/export sends (melange.transfer_stream) is a file `import` takes: the
    same store back; one cut short (no end line, a wrong count) imports nothing."""
    from melange.transfer_stream import to_ndjson

    source = f"sqlite:///{tmp_path}/src.db"
    assert melange("--db", source, "block", "create", "10.3.0.0/24", "--name", "n").returncode == 0
    assert melange("--db", source, "block", "allocate", "n", "--count", "20").returncode == 0
    assert melange("--db", source, "block", "create", "10.4.0.0/24").returncode == 0
    whole = melange("--db", source, "export").stdout
    lines = list(to_ndjson(json.loads(whole)))
    assert json.loads(lines[-1]) == {"end": {"lines": len(lines) - 1}}
    for size in (7, 1 << 20):
        text = "".join(lines)
        with read([text[i : i + size] for i in range(0, len(text), size)]) as parsed:
            assert [kind for _, kind, _ in parsed.entities] == ["block", "block"]
            assert [owner for _, owner, _ in parsed.addresses] == [0] * 20
    cases = {"whole": lines, "cut": lines[:-1], "miscounted": [*lines[:-2], lines[-1]]}
    for name, chosen in cases.items():
        path = tmp_path / f"{name}.ndjson"
        path.write_text("".join(chosen))
        url = f"sqlite:///{tmp_path}/{name}.db"
        done = melange("--db", url, "import", str(path))
        if name == "whole":
            assert done.returncode == 0, done.stderr
            assert melange("--db", url, "export").stdout == whole
        else:
            assert done.returncode == 2 and "Error: " in done.stderr, (name, done.stderr)
            assert melange("--db", url, "ip", "list").stdout == "", name


def test_a_line_or_an_entity_beyond_reason_is_refused_not_held():
    """A CSV line over 1 MiB, a JSON entity over 16 MiB: refused as they grow, whatever
    the pieces they come in."""
    huge = ("x" * (1 << 16) for _ in range(20))
    with pytest.raises(InvalidInput, match="line 2: longer than 1 MiB"):
        read(chain(["kind,name\n"], huge)).close()
    endless = ("y" * (1 << 20) for _ in range(40))
    with pytest.raises(InvalidInput, match="line 1: an entity longer than 16 MiB"):
        read(chain([HEAD + '"blocks": [{"name": "'], endless)).close()
