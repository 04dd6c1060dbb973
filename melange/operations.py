"""Every command as a named operation: the one code path the CLI and melanged share.

An operation is a core function, whether it writes, and whether it needs the
store's release hold. Its parameters are the function's own, with their type
hints (melange.params); `validate` checks a request against them, and `run`
executes one in a transaction of its own after that check, whatever the channel.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from melange import params as declared
from melange.clock import using
from melange.errors import InvalidInput
from melange.store import Store


@dataclass(frozen=True)
class Operation:
    target: str  # "module:function", imported on first use
    write: bool
    hold: bool = False
    whole_store: bool = False  # runs its own transactions (and file work outside them)

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


def _op(
    target: str, write: bool = False, hold: bool = False, whole_store: bool = False
) -> Operation:
    return Operation(target, write, hold, whole_store)


OPERATIONS: dict[str, Operation] = {
    "block.create": _op("blocks:create", write=True),
    "block.list": _op("blocks:list_blocks"),
    "block.show": _op("blocks:show"),
    "block.update": _op("blocks:update_block", write=True),
    "block.delete": _op("blocks:delete_block", write=True),
    "block.allocate": _op("addresses:allocate", write=True),
    "ip.list": _op("addresses:list_addresses"),
    "ip.show": _op("addresses:show"),
    "ip.update": _op("addresses:update_address", write=True),
    "ip.release": _op("addresses:release", write=True, hold=True),
    "ip.restore": _op("addresses:restore", write=True),
    "policy.create": _op("policies:create", write=True),
    "policy.list": _op("policies:list_policies"),
    "policy.show": _op("policies:show"),
    "policy.delete": _op("policies:delete_policy", write=True),
    "policy.add_range": _op("policies:add_range", write=True),
    "policy.remove_range": _op("policies:remove_range", write=True),
    "policy.add_octet": _op("policies:add_octet", write=True),
    "policy.remove_octet": _op("policies:remove_octet", write=True),
    "mac_range.create": _op("macranges:create", write=True),
    "mac_range.list": _op("macranges:list_ranges"),
    "mac_range.delete": _op("macranges:delete_range", write=True),
    "interface.create": _op("interfaces:create", write=True),
    "interface.list": _op("interfaces:list_interfaces"),
    "interface.show": _op("interfaces:show"),
    "interface.delete": _op("interfaces:delete_interface", write=True, hold=True),
    "route.add": _op("routes:add", write=True),
    "route.list": _op("routes:list_routes"),
    "route.delete": _op("routes:delete_route", write=True),
    "dhcp.hosts": _op("dhcp:hosts_text"),
    "dhcp.opts": _op("dhcp:opts_text"),
    "dhcp.config": _op("dhcp:config_text"),
    "dhcp.sync": _op("dhcpsync:sync", whole_store=True),
    "report.utilization": _op("reports:utilization"),
    "history": _op("reports:history"),
    "reconcile": _op("reconcile:reconcile", write=True, whole_store=True),
    "export": _op("transfer_export:export"),
    "import": _op("transfer_import:import_text", write=True, whole_store=True),
    "db.current": _op("migrations:current", whole_store=True),
    "db.check": _op("integrity:check", whole_store=True),
    "db.upgrade": _op("migrations:upgrade_to_head", write=True, whole_store=True),
}


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
    local = operation.local()
    kwargs = dict(params)
    if local & params.keys():  # callbacks of an in-process caller (a progress bar)
        params = {k: v for k, v in params.items() if k not in local}
    declared.check(name, operation.parameters(), params)
    function = operation.function()
    if operation.hold:
        kwargs["hold_seconds"] = store.release_hold
    if not operation.write:
        store.require_existing()
    from melange import audit

    # store.faults(): whole-store operations (migrations, say) use connections of their
    # own; a read-only, full or damaged store is exit 6 there too, never a bug.
    with store.faults(), audit.acting(actor or audit.os_user(), via), using(store.clock):
        if operation.whole_store:
            if not name.startswith("db."):
                store.ensure_schema()
            return function(store, **kwargs)
        if not operation.write:
            return store.run(lambda conn: function(conn, **kwargs), write=False)

        return store.run(
            lambda conn: audit.audited(conn, name, params, lambda c: function(c, **kwargs)),
            write=True,
        )


def _operation(name: str) -> Operation:
    operation = OPERATIONS.get(name) if isinstance(name, str) else None
    if operation is None:
        raise InvalidInput(f"unknown operation {repr(name)[:60]}")
    return operation


def validate(name: str, params: dict[str, Any]) -> None:
    """A client's request, checked before anything runs: a known operation, known
    parameter names, the required ones present, each value of its declared type
    (InvalidInput, exit 2, naming the first thing wrong)."""
    if not isinstance(params, dict):
        raise InvalidInput("params must be a JSON object")
    operation = _operation(name)
    declared.check(name, operation.parameters(), params)


def parameters(name: str) -> set[str]:
    """The keyword parameters a client may send for operation `name`."""
    return set(_operation(name).parameters())
