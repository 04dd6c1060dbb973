"""Empty SQLite stores by the hundred, for property tests that need one per example.

Migrating a store takes longer than most examples; each one gets a copy of a
store migrated once per session instead.
"""

from __future__ import annotations

import atexit
import shutil
import sqlite3
import tempfile
from pathlib import Path

from melange.store import Store

# A release time long past: a hold aged to it has run out, whatever the hold was.
EXPIRED_AT = "2000-01-01 00:00:00.000000"

_TEMPLATE: dict[str, Path] = {}


def empty_store_file(directory: Path) -> Path:
    """`directory`/melange.db: a copy of an initialised empty store."""
    if "path" not in _TEMPLATE:
        template_dir = Path(tempfile.mkdtemp(prefix="melange-template-"))
        atexit.register(shutil.rmtree, template_dir, True)
        template = template_dir / "template.db"
        store = Store(f"sqlite:///{template}")
        store.ensure_schema()
        store.close()
        wal = Path(f"{template}-wal")
        assert not wal.exists() or wal.stat().st_size == 0, "the copy would miss the WAL"
        _TEMPLATE["path"] = template
    target = directory / "melange.db"
    shutil.copyfile(_TEMPLATE["path"], target)
    return target


def age_hold(db: Path, address: int) -> None:
    """End the hold on one address in the file, as if its time had passed (no cleanup):
    the other holds keep theirs, which moving the store's clock would not."""
    with sqlite3.connect(db) as conn:
        changed = conn.execute(
            "UPDATE ip_addresses SET held_until = ? WHERE address = ? AND state = 'held'",
            (EXPIRED_AT, address.to_bytes(16, "big")),
        ).rowcount
    conn.close()
    assert changed == 1
