"""Bringing a DHCP server's files in step with the store: the backends and their registry.

A backend renders what its server reads, writes it atomically only when it
changed, and tells the server. `melange dhcp sync` runs one pass; melanged
runs a pass whenever the store changes. Backends are chosen by name from the
entry-point group `melange.dhcp_backends`; `dnsmasq` is built in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from melange.errors import InvalidInput
from melange.store import Store

GROUP = "melange.dhcp_backends"


@dataclass(frozen=True)
class Target:
    """Where a backend writes, and which server it tells."""

    hostsfile: Path
    optsfile: Path | None = None
    pidfile: Path | None = None
    network: str | None = None
    hostsdir: Path | None = None
    release_interface: str | None = None


@dataclass
class SyncResult:
    hosts_changed: bool = False
    opts_changed: bool = False
    added_only: bool = False
    reloaded: bool = False
    server_running: bool | None = None
    lines: int = 0
    added: int = 0
    removed: int = 0
    released: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class DhcpBackend(Protocol):
    name: str

    def __init__(self, target: Target) -> None: ...

    def sync(self, store: Store, *, force_reload: bool = False) -> SyncResult:
        """One pass: render, compare, write what changed, tell the server."""


def load(name: str, target: Target) -> DhcpBackend:
    """The backend called `name`, built in or from an installed package."""
    if name == "dnsmasq":
        from melange.dnsmasq import Dnsmasq

        return Dnsmasq(target)
    from importlib.metadata import entry_points

    for entry in entry_points(group=GROUP):
        if entry.name == name:
            return entry.load()(target)
    raise InvalidInput(f"unknown DHCP backend {name!r}")


def sync(
    store: Store,
    *,
    hostsfile: str,
    optsfile: str | None = None,
    dnsmasq_pidfile: str | None = None,
    network: str | None = None,
    hostsdir: str | None = None,
    release_interface: str | None = None,
    backend: str = "dnsmasq",
) -> dict:
    """`melange dhcp sync`: one pass, for cron or a host without melanged.

    It writes files and may signal dnsmasq, so it leaves an audit row (who,
    which files, what changed), like every change to the store does."""
    from melange import audit
    from melange.validate import validate_network

    if network is not None:
        validate_network(network)
    target = Target(
        hostsfile=Path(hostsfile),
        optsfile=Path(optsfile) if optsfile else None,
        pidfile=Path(dnsmasq_pidfile) if dnsmasq_pidfile else None,
        network=network,
        hostsdir=Path(hostsdir) if hostsdir else None,
        release_interface=release_interface,
    )
    result = load(backend, target).sync(store).as_dict()
    params = {"hostsfile": hostsfile, "optsfile": optsfile, "dnsmasq_pidfile": dnsmasq_pidfile,
              "network": network, "hostsdir": hostsdir, "release_interface": release_interface,
              "backend": backend}  # fmt: skip
    actor, via = audit.who()
    store.write(
        lambda conn: audit.record(
            conn, actor=actor, via=via, command="dhcp.sync", params=params, result=result
        )
    )
    return result
