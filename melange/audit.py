"""The audit trail: one row per change, in the change's own transaction.

Direct commands record the user of the process's effective uid (LOGNAME and
USER are the caller's to set, so never the actor); melanged's socket records
the peer the kernel vouched for (SO_PEERCRED), never a name the client claims.
"""

from __future__ import annotations

import functools
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from sqlalchemy import Connection, bindparam, insert

from melange.models import audit_log
from melange.prepared import Prepared
from melange.store import utcnow

MAX_OUTCOME = 4000
_COLUMNS = ("at", "actor", "via", "command", "block_id", "address", "params", "outcome")
_INSERT = Prepared(insert(audit_log).values({name: bindparam(name) for name in _COLUMNS}))
_acting: ContextVar[tuple[str, str] | None] = ContextVar("melange_acting", default=None)


@contextmanager
def acting(actor: str, via: str) -> Iterator[None]:
    """Who is changing the store in this thread (the socket server serves many at once)."""
    token = _acting.set((actor, via))
    try:
        yield
    finally:
        _acting.reset(token)


def who(default_via: str = "cli") -> tuple[str, str]:
    """(actor, via) of the change in progress: as set by `acting`, else this OS user."""
    return _acting.get() or (os_user(), default_via)


def os_user() -> str:
    """The name of this process's effective uid, as the kernel has it."""
    return user_name(os.geteuid())


@functools.cache
def user_name(uid: int) -> str:
    """A uid's user name, or the number when it has none."""
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _subject(result: Any) -> tuple[int | None, int | None]:
    """The block and (single) address a change was about, for history lookups."""
    records = result if isinstance(result, list) else [result]
    if not records or not isinstance(records[0], dict):
        return None, None
    first = records[0]
    block_id = first.get("block_id", first.get("id") if "cidr" in first else None)
    address = None
    if len(records) == 1 and first.get("address"):
        text = first["address"]
        family = socket.AF_INET6 if ":" in text else socket.AF_INET
        address = int.from_bytes(socket.inet_pton(family, text), "big")
    return block_id, address


def _summary(result: Any) -> str:
    if isinstance(result, list) and len(result) > 3:
        addresses = [r.get("address") for r in result if isinstance(r, dict)]
        result = {"count": len(result), "first": addresses[0], "last": addresses[-1]}
    text = json.dumps(result, default=str, sort_keys=True)
    return text if len(text) <= MAX_OUTCOME else text[: MAX_OUTCOME - 3] + "..."


def record(
    conn: Connection, *, actor: str, via: str, command: str, params: dict, result: Any
) -> None:
    block_id, address = _subject(result)
    shown = {k: v for k, v in params.items() if v not in (None, False, [], ()) and not callable(v)}
    _INSERT.send(
        conn,
        at=utcnow(),
        actor=actor[:64],
        via=via,
        command=command,
        block_id=block_id,
        address=address,
        params=json.dumps(shown, default=str, sort_keys=True),
        outcome=_summary(result),
    )
