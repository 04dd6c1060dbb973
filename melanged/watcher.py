"""Noticing that the store changed: the core's fingerprint, read in one transaction."""

from __future__ import annotations

from melange.changes import Fingerprint
from melange.changes import fingerprint as _fingerprint
from melange.store import Store

__all__ = ["Fingerprint", "fingerprint"]


def fingerprint(store: Store, network: str | None) -> Fingerprint:
    return store.read(lambda conn: _fingerprint(conn, network))
