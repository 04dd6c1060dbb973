"""Every command as a named operation: the one code path the CLI and melanged share.

An operation is a core function, whether it writes, and whether it needs the
store's release hold. Its parameters are the function's own, with their type
hints (melange.params); `validate` checks a request against them, and `run`
executes one in a transaction of its own after that check, whatever the channel.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from melange import params as declared
from melange.clock import using
from melange.errors import InvalidInput, MelangeError

if TYPE_CHECKING:
    from melange.store import Store


Role = Literal["reader", "writer", "admin"]
ROLES: tuple[Role, ...] = ("reader", "writer", "admin")  # each may do what the one before may


class Http(NamedTuple):
    """Where an operation lives in the HTTP API (docs/api.md).

    `{name}` segments of `path` are parameters of the operation; the others come
    from the query string (GET, DELETE) or the JSON body (POST, PATCH). `media`
    is the success response's type: JSON, text/plain for the DHCP renders,
    NDJSON for a streamed export. A `paged` list takes `limit` and `after` and
    answers with a page and a cursor to the next one.
    """

    method: str
    path: str
    status: int = 200
    media: str = "application/json"
    paged: bool = False

    def path_params(self) -> tuple[str, ...]:
        import re

        return tuple(re.findall(r"{(\w+)(?::\w+)?}", self.path))


class Operation(NamedTuple):
    """One operation, declared once: the core function behind it, the role it needs,
    and where it is served. Its parameters are the function's own (melange.params).

    `http` None means host-local: it acts on this host's files, pidfiles or
    processes, so it is never served over HTTP, and over the socket only to root
    and melanged's own user with absolute paths (docs/protocol.md).
    """

    target: str  # "module:function", imported on first use
    role: Role
    summary: str
    http: Http | None
    write: bool = False
    hold: bool = False
    whole_store: bool = False  # runs its own transactions (and file work outside them)

    @property
    def exposure(self) -> str:
        return "remote" if self.http is not None else "host-local"

    def allows(self, role: str | None) -> bool:
        """Whether a caller holding `role` may run this operation."""
        return role in ROLES and ROLES.index(role) >= ROLES.index(self.role)

    def function(self) -> Callable[..., Any]:
        return _resolve(self.target)

    def parameters(self) -> dict[str, declared.Parameter]:
        """What a client may send, derived once from the function's signature."""
        return _parameters(self.target)

    def local(self) -> frozenset[str]:
        """The function's in-process parameters (callbacks): never from a client."""
        return _local(self.target)


@functools.cache
def _resolve(target: str) -> Callable[..., Any]:
    """The core function behind `target`; its module is imported on first use only."""
    from importlib import import_module

    module, name = target.split(":")
    return getattr(import_module(f"melange.{module}"), name)


@functools.cache
def _parameters(target: str) -> dict[str, declared.Parameter]:
    return declared.derive(_resolve(target))


@functools.cache
def _local(target: str) -> frozenset[str]:
    import inspect

    names = list(inspect.signature(_resolve(target)).parameters)[1:]
    return frozenset(names) - _parameters(target).keys() - declared.SUPPLIED


def _read(target: str, summary: str, http: Http | None, **flags: bool) -> Operation:
    return Operation(target, "reader", summary, http, **flags)


def _write(
    target: str, summary: str, http: Http | None, role: Role = "writer", **flags: bool
) -> Operation:
    return Operation(target, role, summary, http, write=True, **flags)


def _admin(target: str, summary: str, http: Http | None, **flags: bool) -> Operation:
    return _write(target, summary, http, role="admin", **flags)


def GET(path: str, **kw: Any) -> Http:  # noqa: N802  (reads as the HTTP method)
    return Http("GET", path, **kw)


def POST(path: str, status: int = 201, **kw: Any) -> Http:  # noqa: N802
    return Http("POST", path, status, **kw)


def PATCH(path: str) -> Http:  # noqa: N802
    return Http("PATCH", path)


def DELETE(path: str) -> Http:  # noqa: N802
    return Http("DELETE", path)


TEXT = "text/plain"
BLOCK = "/v1/blocks/{block:path}"  # a block's id, name or CIDR (which holds a slash)
ADDRESS = "/v1/addresses/{address}"

# The declaration of every operation: what the CLI, the socket, the HTTP API and
# docs/protocol.md and docs/api.md are derived from. Reader < writer < admin:
# writers allocate, release and update addresses and interfaces; admins shape the
# address space (blocks, policies, MAC ranges, routes, imports) and the tokens.
OPERATIONS: dict[str, Operation] = {
    "block.create": _admin("blocks:create", "Create a block (or a subnet, with parent).",
                           POST("/v1/blocks")),
    "block.list": _read("blocks:list_blocks", "List blocks.", GET("/v1/blocks", paged=True)),
    "block.show": _read("blocks:show", "Show a block with its utilisation.", GET(BLOCK)),
    "block.update": _admin("blocks:update_block", "Change a block.", PATCH(BLOCK)),
    "block.delete": _admin("blocks:delete_block", "Delete a block.", DELETE(BLOCK)),
    "block.allocate": _write("addresses:allocate", "Allocate addresses from a block.",
                             POST(BLOCK + "/allocations")),
    "ip.list": _read("addresses:list_addresses", "List allocated (or held) addresses.",
                     GET("/v1/addresses", paged=True)),
    "ip.show": _read("addresses:show", "Show an address.", GET(ADDRESS)),
    "ip.update": _write("addresses:update_address", "Change an address's MAC or hostname.",
                        PATCH(ADDRESS)),
    "ip.release": _write("addresses:release", "Release an address (held, unless now).",
                         POST(ADDRESS + "/release", 200), hold=True),
    "ip.restore": _write("addresses:restore", "Restore a held address.",
                         POST(ADDRESS + "/restore", 200)),
    "policy.create": _admin("policies:create", "Create a policy.", POST("/v1/policies")),
    "policy.list": _read("policies:list_policies", "List policies.",
                         GET("/v1/policies", paged=True)),
    "policy.show": _read("policies:show", "Show a policy.", GET("/v1/policies/{name}")),
    "policy.delete": _admin("policies:delete_policy", "Delete a policy.",
                            DELETE("/v1/policies/{name}")),
    "policy.add_range": _admin("policies:add_range", "Make a range of offsets unusable.",
                               POST("/v1/policies/{name}/ranges")),
    "policy.remove_range": _admin("policies:remove_range", "Remove an unusable range.",
                                  DELETE("/v1/policies/{name}/ranges")),
    "policy.add_octet": _admin("policies:add_octet", "Make a last octet unusable.",
                               POST("/v1/policies/{name}/octets")),
    "policy.remove_octet": _admin("policies:remove_octet", "Remove an unusable octet.",
                                  DELETE("/v1/policies/{name}/octets/{octet}")),
    "mac_range.create": _admin("macranges:create", "Create a MAC range.",
                               POST("/v1/mac-ranges")),
    "mac_range.list": _read("macranges:list_ranges", "List MAC ranges.",
                            GET("/v1/mac-ranges", paged=True)),
    "mac_range.delete": _admin("macranges:delete_range", "Delete a MAC range.",
                               DELETE("/v1/mac-ranges/{range_id}")),
    "interface.create": _write("interfaces:create",
                               "Create an interface with a MAC and its addresses.",
                               POST("/v1/interfaces")),
    "interface.list": _read("interfaces:list_interfaces", "List interfaces.",
                            GET("/v1/interfaces", paged=True)),
    "interface.show": _read("interfaces:show", "Show an interface.",
                            GET("/v1/interfaces/{vif}")),
    "interface.delete": _write("interfaces:delete_interface",
                               "Delete an interface, releasing its addresses.",
                               DELETE("/v1/interfaces/{vif}"), hold=True),
    "interface.allow_ip": _write("allowed_ips:allow",
                                 "Let an interface use an address of its network too.",
                                 POST("/v1/interfaces/{vif}/allowed-ips")),
    "interface.disallow_ip": _write("allowed_ips:disallow", "Take back an allowed address.",
                                    DELETE("/v1/interfaces/{vif}/allowed-ips/{address}")),
    "interface.allowed_ips": _read("allowed_ips:list_allowed",
                                   "The addresses an interface is allowed besides its own.",
                                   GET("/v1/interfaces/{vif}/allowed-ips")),
    "nat.add": _write("nat:add", "Map an inside-global address to an inside-local one.",
                      POST("/v1/nat")),
    "nat.list": _read("nat:list_mappings", "List NAT mappings.", GET("/v1/nat")),
    "nat.delete": _write("nat:remove", "Delete a NAT mapping.", DELETE("/v1/nat")),
    "route.add": _admin("routes:add", "Add a static route to a block.", POST(BLOCK + "/routes")),
    "route.list": _read("routes:list_routes", "List a block's routes.", GET(BLOCK + "/routes")),
    "route.delete": _admin("routes:delete_route", "Delete a route.",
                           DELETE(BLOCK + "/routes")),
    "dhcp.hosts": _read("dhcp:hosts_text", "The DHCP hosts file.",
                        GET("/v1/dhcp/hosts", media=TEXT)),
    "dhcp.opts": _read("dhcp:opts_text", "The DHCP options file.",
                       GET("/v1/dhcp/opts", media=TEXT)),
    "dhcp.config": _read("dhcp:config_text", "The DHCP server configuration lines.",
                         GET("/v1/dhcp/config", media=TEXT)),
    "dns.hosts": _read("dns_render:hosts_text", "The names of allocated addresses (hosts file).",
                       GET("/v1/dns/hosts", media=TEXT)),
    "dns.config": _read("dns_render:config_text", "The dnsmasq lines a deployment's DNS needs.",
                        GET("/v1/dns/config", media=TEXT)),
    "dhcp.sync": Operation("dhcpsync:sync", "admin", "Write the DHCP files and reload dnsmasq.",
                           None, whole_store=True),
    "report.utilization": _read("reports:utilization", "Utilisation of every block.",
                                GET("/v1/reports/utilization", paged=True)),
    "history": _read("reports:history", "The audit trail, newest first.",
                     GET("/v1/history", paged=True)),
    "reconcile": _admin("reconcile:reconcile", "Compare the store with DHCP's files.", None,
                        whole_store=True),
    "export": _read("transfer_export:export", "Every block and address, as a document.",
                    GET("/v1/export", media="application/x-ndjson")),
    "import": _admin("transfer_import:import_text", "Import a document: all of it or nothing.",
                     POST("/v1/import", 200), whole_store=True),
    "db.current": _read("migrations:current", "The store's schema revision.", None,
                        whole_store=True),
    "db.check": _read("integrity:check", "Check the store's integrity.", None, whole_store=True),
    "db.upgrade": _admin("migrations:upgrade_to_head", "Upgrade the store's schema.", None,
                         whole_store=True),
    "token.create": _admin("tokens:create", "Create an API token; its secret is shown once.",
                           POST("/v1/tokens")),
    "token.list": Operation("tokens:list_tokens", "admin", "List API tokens (never secrets).",
                            GET("/v1/tokens")),
    "token.revoke": _admin("tokens:revoke", "Revoke an API token.", DELETE("/v1/tokens/{name}")),
}  # fmt: skip

# Names an earlier protocol used for a block parameter; still accepted on the socket.
RENAMED = {"ref": "block", "block_ref": "block"}


def run(
    store: Store,
    name: str,
    params: dict[str, Any],
    *,
    actor: str | None = None,
    via: str = "cli",
) -> Any:
    """Run the operation `name` with keyword `params` in one transaction.

    A change is recorded in the audit trail inside that same transaction, as
    `actor` (the OS user when not given) acting through `via`.
    """
    operation = _operation(name)
    params, call = _prepared(store, name, operation, params)
    if not operation.write:
        store.require_existing()
    from melange import audit

    # store.faults(): whole-store operations (migrations, say) use connections of their
    # own; a read-only, full or damaged store is exit 6 there too, never a bug.
    with store.faults(), audit.acting(actor or audit.os_user(), via), using(store.clock):
        if operation.whole_store:
            if not name.startswith("db."):
                store.ensure_schema()
            return call(store)
        if not operation.write:
            return store.run(call, write=False)

        return store.run(lambda conn: audit.audited(conn, name, params, call), write=True)


def _prepared(
    store: Store, name: str, operation: Operation, params: dict[str, Any]
) -> tuple[dict[str, Any], Callable[[Any], Any]]:
    """A request checked against the declaration (InvalidInput, exit 2): the parameters
    as recorded (in-process callbacks left out) and the call that runs it."""
    local = operation.local()
    kwargs = dict(params)
    if local & params.keys():  # callbacks of an in-process caller (a progress bar)
        params = {k: v for k, v in params.items() if k not in local}
    declared.check(name, operation.parameters(), params)
    function = operation.function()
    if operation.hold:
        kwargs["hold_seconds"] = store.release_hold
    return params, lambda target: function(target, **kwargs)


def _operation(name: str) -> Operation:
    operation = OPERATIONS.get(name) if isinstance(name, str) else None
    if operation is None:
        raise InvalidInput(f"unknown operation {repr(name)[:60]}")
    return operation


def validate(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """A client's request, checked before anything runs: a known operation, known
    parameter names, the required ones present, each value of its declared type
    (InvalidInput, exit 2, naming the first thing wrong). Returns the parameters
    under their declared names (an earlier protocol's block names renamed)."""
    if not isinstance(params, dict):
        raise InvalidInput("params must be a JSON object")
    operation = _operation(name)
    declared_params = operation.parameters()
    if "block" in declared_params and "block" not in params:
        params = {RENAMED.get(key, key): value for key, value in params.items()}
    declared.check(name, declared_params, params)
    return params


def parameters(name: str) -> set[str]:
    """The keyword parameters a client may send for operation `name`."""
    return set(_operation(name).parameters())


class Request(NamedTuple):
    """One caller's write, for `run_batch`: the operation, its parameters, and who asks
    through which channel (recorded in the audit trail as `run` records them)."""

    name: str
    params: dict[str, Any]
    actor: str
    via: str


def run_batch(store: Store, requests: list[Request]) -> list[Any]:
    """Run several callers' writes in one transaction: one lock, one commit (group commit,
    melanged.batching). Each runs in a savepoint of its own, with its own audit row, so
    it succeeds or fails alone: the list holds each request's result, or the MelangeError
    it raised, in order. Nothing is returned before the commit that holds every result;
    a failure of the transaction itself (the store gone, say) is raised, for all of them.

    A retry of the transaction (lock contention, melange.store.Store.run) runs every
    request again from its parameters: each is a pure function of them.
    """
    outcomes: list[Any] = [None] * len(requests)
    calls = []
    for index, request in enumerate(requests):
        try:
            operation = _operation(request.name)
            if not operation.write or operation.whole_store:
                raise InvalidInput(f"{request.name} cannot join a batch")
            params, call = _prepared(store, request.name, operation, request.params)
        except MelangeError as error:
            outcomes[index] = error
            continue
        calls.append((index, request, params, call))
    if not calls:
        return outcomes

    attempts = 0

    def batch(conn: Any) -> dict[int, Any]:
        nonlocal attempts
        attempts += 1
        careful = attempts > 1  # a retry: each request's writes confirmed before the next
        _lock_in_order(store, conn, [request for _, request, _, _ in calls])
        done, left = _together(conn, calls) if not careful else ({}, None)
        for index, request, params, call in calls:
            if left is None or index in left:
                done[index] = _savepoint(store, conn, request, params, call, careful)
        return done

    with store.faults(), using(store.clock):
        outcomes_by_index = store.run(batch, write=True)
    for index, outcome in outcomes_by_index.items():
        outcomes[index] = outcome
    return outcomes


def _together(conn: Any, calls: list) -> tuple[dict[int, Any], set[int] | None]:
    """The batch's plain single allocations done together (melange.batch_allocation):
    their outcomes by index, and the indexes of every request still to run one by one
    (None: all of them, when fewer than two can be done together)."""
    from melange import batch_allocation as together

    asked = [together.Asked(index, params, request.actor, request.via)
             for index, request, params, _ in calls
             if together.can_join(request.name, params)]  # fmt: skip
    if len(asked) < 2:
        return {}, None
    grouped = together.allocate_together(conn, asked)
    joined = {one.at for one in asked}
    left = {index for index, _, _, _ in calls if index not in joined}
    return grouped.outcomes, left | set(grouped.left)


def _lock_in_order(store: Store, conn: Any, requests: list[Request]) -> None:
    """On a server, lock the blocks a batch of releases will lock, in one order (by id),
    before any of them runs: each request locks its address's block when it runs, and
    two batches locking the same blocks in the orders their requests came in could
    deadlock. A request whose block cannot be found locks nothing here; it fails on
    its own when it runs. SQLite has one writer: nothing to order there."""
    if store.backend == "sqlite" or not any(r.name == "ip.release" for r in requests):
        return
    from melange.addresses import find
    from melange.locking import lock_block

    blocks = set()
    for request in requests:
        if request.name == "ip.release":
            params = request.params
            try:
                blocks.add(find(conn, params["address"], params.get("block")).block_id)
            except (MelangeError, KeyError):
                continue
    if len(blocks) > 1:
        for block_id in sorted(blocks):
            lock_block(conn, block_id)


def _savepoint(store: Store, conn: Any, request: Request, params: dict[str, Any],
               call: Callable, careful: bool) -> Any:  # fmt: skip
    """One request of a batch in a savepoint: its result, or the MelangeError it raised
    with its own changes undone.

    On a server its last writes and the savepoint's release wait for the next request's
    first statement (one round trip fewer each), so a constraint error (IntegrityError)
    may surface there: it ends the attempt, and the retry runs `careful`, each
    request's writes sent with its release. There a write that lost a race runs once
    more, as Store.run would run it; refused again, it is this request's conflict.
    Other database errors end the whole transaction, for Store.run to retry or report.
    """
    from sqlalchemy import exc

    from melange import audit, prepared

    for attempt in (1, 2):
        prepared.savepoint(conn, "melange_request")
        try:
            with audit.acting(request.actor, request.via):
                result = audit.audited(conn, request.name, params, call)
            prepared.release_savepoint(conn, "melange_request", wait=not careful)
        except MelangeError as error:
            prepared.rollback_to_savepoint(conn, "melange_request")
            prepared.release_savepoint(conn, "melange_request")
            return error
        except exc.IntegrityError as error:
            if not careful:
                raise
            prepared.rollback_to_savepoint(conn, "melange_request")
            prepared.release_savepoint(conn, "melange_request")
            if attempt == 2:
                return store.refused(error)
            continue
        return result
    raise AssertionError("unreachable")
