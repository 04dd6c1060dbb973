"""A terminal never makes a command slow, nor cuts an address: `melange` run as a real
process on a pseudo-terminal 80 columns wide (stdout on the terminal, stderr on a pipe)."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from melange import operations
from melange.store import Store
from melange_cli import output

pytestmark = pytest.mark.sqlite_only

LONGEST_V6 = "2001:db8:ffff:ffff:ffff:ffff:ffff:fffe"
MAC = "02:aa:bb:cc:dd:ee"


def on_terminal(args: list[str], env_dir: Path, columns: int = 80) -> tuple[int, str, str]:
    """Run `melange ARGS` with stdout on a pseudo-terminal COLUMNS wide; exit code, what
    the terminal showed (newlines as the terminal sends them, \\r\\n), stderr."""
    main_fd, child_fd = os.openpty()
    fcntl.ioctl(child_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MELANGE_", "COLUMNS"))}
    env.update(MELANGE_CONFIG=str(env_dir / "melange.conf"), TERM="xterm", LINES="50")
    code = "import sys; from melange_cli.main import main; sys.exit(main())"
    argv = [sys.executable, "-c", code, *args]
    process = subprocess.Popen(
        argv, stdout=child_fd, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env
    )
    os.close(child_fd)
    shown = bytearray()
    while True:
        ready, _, _ = select.select([main_fd], [], [], 60)
        assert ready, "the command wrote nothing for a minute"
        try:
            data = os.read(main_fd, 65536)
        except OSError:  # the child closed the terminal (EIO on Linux)
            break
        if not data:
            break
        shown += data
    os.close(main_fd)
    shown = bytearray(re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", bytes(shown)))  # colours
    stderr = process.stderr.read().decode() if process.stderr else ""
    return process.wait(), shown.decode(), stderr


@pytest.fixture
def store(tmp_path: Path) -> tuple[Store, str]:
    (tmp_path / "melange.conf").write_text("[melange]\nrelease_hold = 1h\n")
    url = f"sqlite:///{tmp_path / 'melange.db'}"
    return Store(url, release_hold=3600), url


def test_a_long_list_on_a_terminal_is_printed_plain_with_a_note(store, tmp_path):
    store_, url = store
    operations.run(store_, "block.create", {"cidr": "10.9.0.0/16", "name": "big"})
    operations.run(store_, "block.allocate", {"block": "big", "count": 5000})
    store_.close()
    code, shown, stderr = on_terminal(["--db", url, "ip", "list"], tmp_path)
    assert code == 0, stderr
    lines = shown.replace("\r\n", "\n").splitlines()
    assert len(lines) == 5000
    assert lines[0].split("\t")[:2] == ["10.9.0.1", "big"]
    assert lines[-1].startswith("10.9.19.136\t")
    assert "─" not in shown and "│" not in shown  # no table drawn
    assert stderr.startswith("Note: more than 2,000 rows, printed as plain text")
    assert "address, block, network, mac" in stderr
    piped = subprocess.run(
        [sys.executable, "-c", "import sys; from melange_cli.main import main; sys.exit(main())",
         "--db", url, "-o", "plain", "ip", "list"],
        capture_output=True, check=True, text=True,
        env={**os.environ, "MELANGE_CONFIG": str(tmp_path / "melange.conf")},
    ).stdout  # fmt: skip
    assert piped.splitlines() == lines  # the same text as -o plain


def test_a_short_list_on_a_terminal_is_a_table(store, tmp_path):
    store_, url = store
    operations.run(store_, "block.create", {"cidr": "10.9.0.0/24", "name": "small"})
    operations.run(store_, "block.allocate", {"block": "small", "count": 3})
    store_.close()
    code, shown, stderr = on_terminal(["--db", url, "ip", "list"], tmp_path)
    assert code == 0, stderr
    assert "Addresses (3)" in shown and "│" in shown and "10.9.0.3" in shown
    assert "plain text" not in stderr


def test_addresses_and_macs_are_whole_in_an_80_column_table(store, tmp_path):
    store_, url = store
    operations.run(store_, "block.create", {"cidr": "2001:db8::/32", "name": "six",
                                            "tenant": "a-rather-long-tenant-name"})  # fmt: skip
    long_name = "host-with-a-long-name.example.org"
    asked = {"block": "six", "address": LONGEST_V6, "mac": MAC, "hostname": long_name}
    operations.run(store_, "block.allocate", asked)
    operations.run(store_, "block.allocate", {"block": "six", "address": "2001:db8::5"})
    store_.close()
    code, shown, stderr = on_terminal(["--db", url, "ip", "list"], tmp_path)
    assert code == 0, stderr
    lines = shown.replace("\r\n", "\n").splitlines()
    assert max(len(line) for line in lines) <= 80
    assert any(LONGEST_V6 in line and MAC in line for line in lines), shown
    code, shown, stderr = on_terminal(["--db", url, "ip", "show", LONGEST_V6], tmp_path)
    assert code == 0, stderr
    assert LONGEST_V6 in shown and MAC in shown


def test_column_widths_keep_addresses_and_fold_or_leave_out_the_rest():
    fields = output.ADDRESS.fields
    row = [LONGEST_V6, "six (2001:db8::/32)", "net", MAC, "h" * 40, "vif-1", "tenant",
           "allocated", "2026-11-29T10:00:00", ""]  # fmt: skip
    shown, widths = output.column_widths(fields, [row], 80)
    assert widths["address"] == len(LONGEST_V6) and widths["mac"] == len(MAC)
    assert shown[:4] == ["address", "block", "network", "mac"]
    used = 1 + sum(widths[n] + output.COLUMN_EDGE for n in shown)
    assert used <= 80
    assert "held_until" not in shown  # the last columns go first
    wide, wide_widths = output.column_widths(fields, [row], 250)
    assert wide == list(fields) and wide_widths["hostname"] == 40


def test_plain_and_json_bytes_are_those_of_one_line_per_echo(tmp_path):
    """Chunked writing changes how often stdout is written, never what is written."""
    records = [{"address": f"10.0.{i // 256}.{i % 256}", "mac": None, "hostname": "h\u00e9"}
               for i in range(20_000)]  # fmt: skip
    expected = "".join(
        "\t".join(output.text_of(r.get(f)) for f in output.ADDRESS.fields) + "\n" for r in records
    )
    script = (
        "import json, sys; from melange_cli import output\n"
        "records = json.load(open(sys.argv[1]))\n"
        "output.emit('plain', records, output.ADDRESS)\n"
        "output.emit_addresses_only('plain', records)\n"
        "output.emit('json', records, output.ADDRESS)\n"
        "output.emit('json', records[:3], output.ADDRESS)\n"
    )
    data = tmp_path / "records.json"
    data.write_text(json.dumps(records))
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    got = subprocess.run([sys.executable, "-c", script, str(data)], capture_output=True,
                         check=True, env=env).stdout  # fmt: skip
    addresses = "".join(r["address"] + "\n" for r in records)
    as_json = json.dumps(records) + "\n" + json.dumps(records[:3], indent=2) + "\n"
    assert got == (expected + addresses + as_json).encode()


def test_import_progress_counts_reading_then_entities_then_addresses(store, tmp_path):
    """The import's bar moves through every phase: characters read, entities made, then
    addresses written batch by batch (it stood at 100% while the addresses were written)."""
    from melange_cli.transfer import READ_CHUNK, _read

    store_, url = store
    operations.run(store_, "block.create", {"cidr": "10.7.0.0/16", "name": "src"})
    operations.run(store_, "block.allocate", {"block": "src", "count": 12_000})
    document = operations.run(store_, "export", {})
    store_.close()
    from melange.transfer_format import export_json

    path = tmp_path / "export.json"
    path.write_text(export_json(document))
    read: list[tuple[int, int]] = []
    text = _read(str(path), lambda done, total: read.append((done, total)))
    size = path.stat().st_size
    assert read[-1] == (size, size) and len(read) >= size // READ_CHUNK
    assert [d for d, _ in read] == sorted(d for d, _ in read)

    target = Store(f"sqlite:///{tmp_path / 'target.db'}", release_hold=3600)
    calls: list[tuple[int, int]] = []
    params = {"text": text, "source": "export.json", "progress": lambda d, t: calls.append((d, t))}
    result = operations.run(target, "import", params)
    target.close()
    assert result["addresses"] == 12_000
    restart = calls.index((0, 12_000))
    entities, written = calls[:restart], calls[restart:]
    assert entities and entities[-1][0] == entities[-1][1] == len(entities)
    assert written[-1] == (12_000, 12_000) and len(written) >= 3
    assert [d for d, _ in written] == sorted(d for d, _ in written)


def test_a_column_of_listed_addresses_wraps_between_them_never_inside_one():
    fields = output.INTERFACE.fields
    listed = ["2001:db8::1", LONGEST_V6, "10.0.0.1"]
    row = ["vif-a", "net", "dev", "tenant", MAC, output.cell_text(listed), ""]
    assert row[5] == f"2001:db8::1, {LONGEST_V6}, 10.0.0.1"
    shown, widths = output.column_widths(fields, [row], 80, frozenset({"addresses"}))
    assert "addresses" in shown and widths["addresses"] >= len(LONGEST_V6)
    assert widths["mac"] == len(MAC)
    assert 1 + sum(widths[n] + output.COLUMN_EDGE for n in shown) <= 80
