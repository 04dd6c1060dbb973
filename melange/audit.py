"""The audit trail: one row per change, in the change's own transaction.

Direct commands record the user of the process's effective uid (LOGNAME and
USER are the caller's to set, so never the actor); melanged's socket records
the peer the kernel vouched for (SO_PEERCRED), never a name the client claims.

Each row names the kind of entity changed and its identity as it was (id,
CIDR, name or address), so a history lookup never mixes kinds. The addresses
a change touched are noted by the core functions that touch them (`note`),
whichever command they serve (`--count`, interfaces, import, purges): one
address goes in the row itself, more go to `audit_addresses` as runs.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

from melange.clock import utcnow
from melange.prepared import Prepared

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from melange.errors import MelangeError
    from melange.store import Store

MAX_OUTCOME = 4000
MAX_RUN = 1 << 16  # addresses in one run of audit_addresses (bounds the lookup's scan)
_COLUMNS = (
    "at", "actor", "via", "command", "block_id", "address", "params", "outcome", "kind",
    "subject_id", "subject",
)  # fmt: skip


def _insert_statement():
    from sqlalchemy import bindparam, insert

    from melange.models import audit_log

    return insert(audit_log).values({name: bindparam(name) for name in _COLUMNS})


def _insert_runs_statement():
    from sqlalchemy import bindparam, insert

    from melange.models import audit_addresses

    columns = ("audit_id", "block_id", "first_addr", "last_addr")
    return insert(audit_addresses).values({name: bindparam(name) for name in columns})


_INSERT = Prepared(_insert_statement, "audit.insert")
_INSERT_RUNS = Prepared(_insert_runs_statement, "audit.insert_runs")
_acting: ContextVar[tuple[str, str] | None] = ContextVar("melange_acting", default=None)
_noted: ContextVar[list[tuple[int, Iterable[int]]] | None] = ContextVar(
    "melange_noted", default=None
)
T = TypeVar("T")

# The kind of entity a command changes: by full command name, else by its group.
_KINDS = {
    "block.allocate": "address",
    "block": "block",
    "ip": "address",
    "interface": "interface",
    "policy": "policy",
    "mac_range": "mac_range",
    "route": "route",
    "nat": "nat",
    "token": "token",
}
# Where a kind's record keeps its id and its identity.
_IDENTITY = {
    "address": (None, "address"),
    "block": ("id", "cidr"),
    "mac_range": ("id", "cidr"),
    "interface": (None, "vif_id"),
    "policy": (None, "name"),
    "route": (None, "destination"),
    "nat": (None, "inside_global"),
    "token": (None, "name"),
}
# Result keys never recorded: a new API token's secret (melange/tokens.py) is shown
# once and kept nowhere, the trail included.
UNRECORDED = frozenset({"token"})


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


def note(block_id: int, addresses: Iterable[int]) -> None:
    """Record that the change in progress touched these addresses of a block (a no-op
    outside an audited change)."""
    noted = _noted.get()
    if noted is not None:
        noted.append((block_id, addresses))


class Spans(list):
    """Noted addresses as (first, last) runs already: an import's million addresses are
    never listed one by one."""


def note_runs(block_id: int, spans: list[tuple[int, int]]) -> None:
    """`note` for addresses already made into runs (each at most MAX_RUN long)."""
    noted = _noted.get()
    if noted is not None:
        noted.append((block_id, Spans(spans)))


@contextmanager
def noting() -> Iterator[None]:
    """Collect `note`s for the `record` made inside; a retried transaction starts afresh."""
    token = _noted.set([])
    try:
        yield
    finally:
        _noted.reset(token)


def audited(conn: Connection, command: str, params: dict, fn: Callable[[Connection], T]) -> T:
    """Run a change and record it, with the addresses it touched, in its transaction."""
    with noting():
        result = fn(conn)
        actor, via = who()
        record(conn, actor=actor, via=via, command=command, params=params, result=result)
    return result


def kind_of(command: str) -> str:
    """The kind of entity `command` changes ("store" for import and reconcile)."""
    return _KINDS.get(command) or _KINDS.get(command.split(".")[0], "store")


def runs(values: Iterable[int]) -> list[tuple[int, int]]:
    """Consecutive addresses as (first, last) runs of at most MAX_RUN addresses."""
    result: list[tuple[int, int]] = []
    for value in sorted(set(values)):
        if result and value == result[-1][1] + 1 and value - result[-1][0] < MAX_RUN:
            result[-1] = (result[-1][0], value)
        else:
            result.append((value, value))
    return result


def _noted_runs() -> dict[int, list[tuple[int, int]]]:
    """The noted addresses as runs, per block."""
    by_block: dict[int, list[int]] = {}
    made: dict[int, list[tuple[int, int]]] = {}
    for block_id, values in _noted.get() or []:
        if isinstance(values, Spans):
            made.setdefault(block_id, []).extend(values)
        else:
            by_block.setdefault(block_id, []).extend(values)
    found = {block_id: runs(values) for block_id, values in by_block.items()}
    for block_id, spans in made.items():
        found[block_id] = sorted(found.get(block_id, []) + spans)
    return found


def _identity(kind: str, result: Any) -> tuple[int | None, int | None, str | None]:
    """(block_id, subject_id, subject) of a change's result, as it was."""
    first = result[0] if isinstance(result, list) and result else result
    if not isinstance(first, dict) or kind not in _IDENTITY:
        block_id = first.get("block_id") if isinstance(first, dict) else None
        return block_id, None, None
    id_key, name_key = _IDENTITY[kind]
    subject_id = first.get(id_key) if id_key else None
    subject = first.get(name_key)
    if kind == "block" and first.get("name"):
        subject = f"{first['name']} ({subject})"
    block_id = subject_id if kind == "block" else first.get("block_id")
    return block_id, subject_id, None if subject is None else str(subject)[:255]


def _address_subject(per_block: dict[int, list[tuple[int, int]]]) -> str | None:
    count = sum(last - first + 1 for spans in per_block.values() for first, last in spans)
    return f"{count} addresses" if count > 1 else None


def _summary(result: Any) -> str:
    if isinstance(result, list) and len(result) > 3:
        addresses = [r.get("address") for r in result if isinstance(r, dict)]
        result = {"count": len(result), "first": addresses[0], "last": addresses[-1]}
    text = json.dumps(result, default=str, sort_keys=True)
    return text if len(text) <= MAX_OUTCOME else text[: MAX_OUTCOME - 3] + "..."


def record(
    conn: Connection, *, actor: str, via: str, command: str, params: dict, result: Any
) -> None:
    """One audit row for a change (and its address runs when it touched several)."""
    row, per_block = entry(actor, via, command, params, result, _noted_runs())
    if not per_block:
        _INSERT.send(conn, **row)
        return
    audit_id = _INSERT.insert(conn, **row)
    _INSERT_RUNS.many(
        conn,
        [
            {"audit_id": audit_id, "block_id": b, "first_addr": first, "last_addr": last}
            for b, spans in sorted(per_block.items())
            for first, last in spans
        ],
    )


def record_many(conn: Connection, rows: list[dict]) -> None:
    """Audit rows made by `entry` that need no address runs, with one executemany: the
    changes of a batch of single allocations (melange.batch_allocation)."""
    _INSERT.many(conn, rows)


def entry(
    actor: str,
    via: str,
    command: str,
    params: dict,
    result: Any,
    per_block: dict[int, list[tuple[int, int]]],
) -> tuple[dict, dict[int, list[tuple[int, int]]]]:
    """The audit row of a change that touched `per_block`'s address runs, and the runs
    that do not fit in the row itself (one address goes in the row)."""
    kind = kind_of(command)
    if isinstance(result, dict) and UNRECORDED & result.keys():
        result = {k: v for k, v in result.items() if k not in UNRECORDED}
    block_id, subject_id, subject = _identity(kind, result)
    address = None
    if len(per_block) == 1:
        ((noted_block, spans),) = per_block.items()
        block_id = noted_block if block_id is None else block_id
        if spans == [(spans[0][0], spans[0][0])]:  # one address: in the row itself
            address, per_block = spans[0][0], {}
    if kind == "address":
        subject = _address_subject(per_block) or subject
    shown = {k: v for k, v in params.items() if v not in (None, False, [], ()) and not callable(v)}
    row = {
        "at": utcnow(),
        "actor": actor[:64],
        "via": via,
        "command": command,
        "block_id": block_id,
        "address": address,
        "params": json.dumps(shown, default=str, sort_keys=True),
        "outcome": _summary(result),
        "kind": kind,
        "subject_id": subject_id,
        "subject": subject,
    }
    return row, per_block


def record_refusal(
    store: Store,
    *,
    actor: str,
    via: str,
    command: str,
    client: str,
    error: MelangeError,
    suppressed: int = 0,
) -> None:
    """A request turned away before it ran (no valid token, a role too small): one row in
    a transaction of its own, since the refused operation writes nothing. The outcome
    names the refusal, so the trail never reads as if the change had been made, and
    says how many of the client's refusals before it were not written (`suppressed`,
    when the transport bounds a flood of them)."""
    result: dict[str, Any] = {"refused": error.code, "reason": error.message[:200],
                              "client": client}  # fmt: skip
    if suppressed:
        result["suppressed"] = suppressed

    def write(conn: Connection) -> None:
        record(conn, actor=actor, via=via, command=command, params={"client": client},
               result=result)  # fmt: skip

    store.run(write, write=True)
