"""Who a request is: its bearer token (melange.tokens), and whether its role may run
the operation (the declaration's `allows`). Every refusal is audited, within the
bounds melanged.http.refusals sets on a flood of them."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy.exc import DBAPIError

from melange import audit
from melange.clock import using
from melange.errors import MelangeError, PermissionDenied, Unauthenticated
from melange.operations import OPERATIONS
from melanged.http.refusals import RefusalBudget

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from melange.store import Store
    from melange.tokens import Identity

log = logging.getLogger("melanged.http")
ANONYMOUS = "anonymous"
VIA = "http"
REFUSALS = RefusalBudget()  # melanged's, for every request it refuses
T = TypeVar("T")


def bearer(header: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header."""
    if not header:
        raise Unauthenticated("no token: send the header 'Authorization: Bearer <token>'")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    return token.strip()


def identify(store: Store, header: str | None, client: str) -> Identity:
    """The identity of a request's token used from `client`; Unauthenticated if none.

    The lookup is a read; a token whose last use is over a minute old has it
    recorded in a short write of its own (melange.tokens.record_use), off the
    request's path (USES): the request never waits for it.
    """
    from melange import tokens

    token = bearer(header)
    identity = read_now(store, lambda conn: tokens.authenticate(conn, token, client))
    if identity.stale:
        USES.record(store, identity)
    return identity


class TokenUses:
    """Token uses written by a thread of their own. Recorded on the request's thread, a
    use made a read wait for a write: behind another process's long write on SQLite,
    a minute (the store's busy timeout) before a `GET` was answered. A use already
    waiting to be written is not queued again; a store that refuses the write is
    logged, and the token's next use tries again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: set[tuple[int, str]] = set()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="melanged-token-uses")

    def record(self, store: Store, identity: Identity) -> None:
        key = (id(store), identity.key_id)
        with self._lock:
            if key in self._waiting:
                return
            self._waiting.add(key)
        self._writer.submit(self._write, store, identity, key)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every use recorded so far is written (or refused): at the server's
        stop, so none is lost, and by a test before it looks at the store."""
        self._writer.submit(_nothing).result(timeout)

    def _write(self, store: Store, identity: Identity, key: tuple[int, str]) -> None:
        from melange import tokens

        try:
            store.run(lambda conn: tokens.record_use(conn, identity), write=True)
        except MelangeError as error:
            log.warning("cannot record the use of token %r: %s", identity.name, error.message)
        finally:
            with self._lock:
                self._waiting.discard(key)


def _nothing() -> None:
    pass


USES = TokenUses()  # melanged's


def read_now(store: Store, read: Callable[[Connection], T]) -> T:
    """`read` (a lookup by a unique key) against what the store holds now, at the cost
    of the statement alone: no schema check of its own (the operation's transaction,
    which follows, makes it) and, on SQLite, no BEGIN and COMMIT (the one SELECT is its
    own read transaction); a server runs it in a short transaction. Nothing is cached:
    a token revoked by any process is refused from the next request on. A database
    error goes the whole way (Store.run): its schema check and error mapping decide,
    so a store that cannot answer is still a 503, never a 500."""
    try:
        with using(store.clock), store.connection(write=False) as conn:
            if store.backend == "sqlite":
                return read(conn)
            with conn.begin():
                return read(conn)
    except DBAPIError:
        return store.run(read, write=False)


def authorize(identity: Identity, name: str) -> None:
    """PermissionDenied unless the identity's role may run operation `name`."""
    operation = OPERATIONS[name]
    if not operation.allows(identity.role):
        raise PermissionDenied(
            f"token {identity.name!r} has the role {identity.role}; "
            f"{name} needs {operation.role}"
        )


def audit_refusal(store: Store, actor: str, name: str, client: str, error: MelangeError) -> None:
    """Record a refusal in the audit trail, unless the client's refusals are past their
    bounds (then it is counted, for the client's next row); a store that cannot take
    it is logged only. The client is refused all the same."""
    suppressed = REFUSALS.take(client, time.monotonic())
    if suppressed is None:
        return
    try:
        audit.record_refusal(store, actor=actor, via=VIA, command=name, client=client,
                             error=error, suppressed=suppressed)  # fmt: skip
    except MelangeError as failure:
        log.warning("cannot audit a refused %s from %s: %s", name, client, failure.message)
