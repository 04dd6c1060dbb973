"""A hold is a fact of the store: its end is fixed at release, and every reader agrees."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path

from melange.clock import utcnow
from melange.operations import run
from melange.store import Store
from tests.support.cli import Melange
from tests.support.clock import FakeClock

ROOT = Path(__file__).parent.parent


def _client(melange: Melange, tmp_path: Path, name: str, text: str, clock: FakeClock) -> Melange:
    """A direct client of the same store with a config of its own, on `clock`."""
    config = tmp_path / f"{name}.conf"
    config.write_text(text)
    return Melange(melange.db, {**melange.env, "MELANGE_CONFIG": str(config)}, clock=clock)


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_the_releasing_clients_hold_is_what_every_client_sees(melange, tmp_path):
    """Released with a short hold, the address showed a 48 h hold to a client without
    that setting (and to melanged), and such a client's reconcile purged nothing."""
    clock = FakeClock()
    short = _client(melange, tmp_path, "short", "[melange]\nrelease_hold = 60s\n", clock)
    default = _client(melange, tmp_path, "default", "[melange]\n", clock)
    melange.ok("block", "create", "10.0.0.8/30", "--name", "web")  # .9 and .10
    a = melange.ok("block", "allocate", "web").strip()
    b = melange.ok("block", "allocate", "web").strip()
    released = short.json("ip", "release", a)
    span = _when(released["held_until"]) - _when(released["released_at"])
    assert span.total_seconds() == 60
    for reader in (melange, default):  # melange: 48 h, or melanged over its socket
        held = reader.json("ip", "list", "--released")
        assert [(h["address"], h["held_until"]) for h in held] == [(a, released["held_until"])]
    clock.advance(61)  # shown to the second, the stored end may be up to a second later
    assert default.json("ip", "list", "--released") == []
    assert default.json("reconcile") == [{"kind": "holds_purged", "count": 1}]
    melange.ok("ip", "release", b)  # held for the 48 h of this client
    assert melange.ok("block", "allocate", "web").strip() == a


def test_a_hold_made_by_a_long_hold_client_outlives_a_short_hold_reader(melange, tmp_path):
    """The reader's own (short) setting never ends someone else's hold early."""
    clock = FakeClock()
    short = _client(melange, tmp_path, "short", "[melange]\nrelease_hold = 1s\n", clock)
    melange.ok("block", "create", "10.0.0.8/30", "--name", "web")
    a = melange.ok("block", "allocate", "web").strip()
    melange.ok("block", "allocate", "web")
    melange.ok("ip", "release", a)  # 48 h
    clock.advance(47 * 3600)  # long past the reader's 1 s, not yet past the 48 h
    assert [h["address"] for h in short.json("ip", "list", "--released")] == [a]
    assert short.json("reconcile") == []
    assert short("block", "allocate", "web").exit_code == 5
    clock.advance(3600)
    assert short.json("ip", "list", "--released") == []


HOLD_CUTOFF = re.compile(r"released_at\s*[<>]|timedelta\(seconds=hold")


def test_the_hold_cutoff_has_one_home():
    """Whether an address is live or its hold has expired is decided in melange/holds.py
    only; a copy elsewhere would let two readers disagree again."""
    copies = [
        f"{path.name}:{number}"
        for path in sorted((ROOT / "melange").glob("*.py"))
        if path.name != "holds.py"
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if HOLD_CUTOFF.search(line)
    ]
    assert copies == []


def test_export_and_import_keep_a_holds_end(melange, tmp_path):
    """A hold moved to another store ends when it did, whatever the importer's own hold."""
    short = _client(melange, tmp_path, "short", "[melange]\nrelease_hold = 1s\n", FakeClock())
    melange.ok("block", "create", "10.0.0.0/24", "--name", "web")
    a = melange.ok("block", "allocate", "web").strip()
    held = melange.json("ip", "release", a)
    exported = tmp_path / "store.json"
    exported.write_text(melange("export", "-o", "json").stdout)
    melange.ok("block", "delete", "web", "--force")
    result = short("import", str(exported))
    assert result.exit_code == 0, result.stderr
    again = melange.json("ip", "list", "--released")
    assert [(h["address"], h["held_until"]) for h in again] == [(a, held["held_until"])]


def test_a_store_keeps_time_by_the_clock_it_is_given(store_url):
    """Every time the core reads comes from the store's clock: the hold's start and end,
    whether it has ended, and the audit trail; a store on the system clock disagrees."""
    clock = FakeClock()
    clock.advance(30 * 24 * 3600)  # a month ahead of the machine
    store = Store(store_url, release_hold=60, clock=clock)
    system = Store(store_url)
    try:
        run(store, "block.create", {"cidr": "10.0.0.8/30", "name": "web"})
        a = run(store, "block.allocate", {"block": "web"})[0]["address"]
        released = run(store, "ip.release", {"address": a})
        assert abs(_when(released["released_at"]) - _when(_iso(clock.now()))) < timedelta(seconds=5)
        assert run(system, "ip.list", {"released": True})[0]["address"] == a
        changes = run(store, "history", {"since": "1m"})  # a minute back by the clock
        assert [c["command"] for c in changes] == ["block.create", "block.allocate", "ip.release"]
        assert run(system, "history", {"since": _iso(utcnow() + timedelta(days=29))}) == changes
        assert utcnow() < clock.now() - timedelta(days=29)  # outside a store: the system's
        clock.advance(61)
        assert run(store, "ip.list", {"released": True}) == []
        assert run(system, "ip.list", {"released": True})[0]["address"] == a
    finally:
        store.close()
        system.close()


def _iso(moment: datetime) -> str:
    return moment.isoformat() + "Z"
