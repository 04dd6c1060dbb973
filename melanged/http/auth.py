"""Who a request is: its bearer token (melange.tokens), and whether its role may run
the operation (the declaration's `allows`). Every refusal is audited."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from melange import audit
from melange.errors import MelangeError, PermissionDenied, Unauthenticated
from melange.operations import OPERATIONS

if TYPE_CHECKING:
    from melange.store import Store
    from melange.tokens import Identity

log = logging.getLogger("melanged.http")
ANONYMOUS = "anonymous"
VIA = "http"


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
    recorded in a short write of its own (melange.tokens.record_use), and a store
    that refuses that write still lets the request through.
    """
    from melange import tokens

    token = bearer(header)
    identity = store.run(lambda conn: tokens.authenticate(conn, token, client), write=False)
    if identity.stale:
        try:
            store.run(lambda conn: tokens.record_use(conn, identity), write=True)
        except MelangeError as error:
            log.warning("cannot record the use of token %r: %s", identity.name, error.message)
    return identity


def authorize(identity: Identity, name: str) -> None:
    """PermissionDenied unless the identity's role may run operation `name`."""
    operation = OPERATIONS[name]
    if not operation.allows(identity.role):
        raise PermissionDenied(
            f"token {identity.name!r} has the role {identity.role}; "
            f"{name} needs {operation.role}"
        )


def audit_refusal(store: Store, actor: str, name: str, client: str, error: MelangeError) -> None:
    """Record a refusal in the audit trail; a store that cannot take it is logged only
    (the client is refused all the same)."""
    try:
        audit.record_refusal(store, actor=actor, via=VIA, command=name, client=client,
                             error=error)  # fmt: skip
    except MelangeError as failure:
        log.warning("cannot audit a refused %s from %s: %s", name, client, failure.message)
