"""What melange needs of a DHCP server's backend, and the registry that finds one.

Three callers use a backend, and only through `load` (the entry-point group
`melange.dhcp_backends`): melanged runs `sync` whenever the store changes,
`melange dhcp sync` runs it once, and `melange reconcile` compares what the
server reads and the leases it handed out with the store, and repairs them.
Two more need no target, only the backend's class (`renderer`): `melange dhcp
hosts/opts/config` print its renders, and `route add` asks it whether a
block's static routes still fit what the server reads.
Everything about one server (its file formats, render choices, limits,
pidfile, signals, lease file, how a lease is forgotten) lives in its backend
module and nowhere else.

Adding a backend (Kea, say) touches no other module: write a class that
satisfies `DhcpBackend` in a module of its own (or another package) and name
it in `melange.dhcp_backends` (setup.cfg's entry points); `dhcp sync
--backend`, melanged's `backend` setting and `reconcile --backend` then find
it by name.

This module is a leaf: it imports nothing of melange that could import it
back, so backends and callers alike can import it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from melange.errors import InvalidInput

if TYPE_CHECKING:
    import netaddr
    from sqlalchemy import Connection

    from melange.store import Store

GROUP = "melange.dhcp_backends"
DEFAULT = "dnsmasq"


@dataclass(frozen=True)
class Target:
    """Where a backend writes and reads, and which server it tells.

    Every field may be absent: `reconcile --leasefile` alone has no hosts
    file, and a pass that writes needs one (the backend says so)."""

    hostsfile: Path | None = None
    optsfile: Path | None = None
    pidfile: Path | None = None
    network: str | None = None
    hostsdir: Path | None = None
    release_interface: str | None = None
    leasefile: Path | None = None
    # What one backend alone reads (Kea's host database, say), by name without the
    # backend's prefix: melanged passes its `<backend>_*` settings here.
    options: Mapping[str, Any] = field(default_factory=dict)
    # DNS names, where the backend serves them (dnsmasq: --hostsdir, --addn-hosts)
    dns_hostsdir: Path | None = None
    addn_hosts: Path | None = None


@dataclass
class SyncResult:
    """What one pass did (the JSON of `dhcp sync`, melanged's log line)."""

    hosts_changed: bool = False
    opts_changed: bool = False
    added_only: bool = False
    reloaded: bool = False
    server_running: bool | None = None
    lines: int = 0
    added: int = 0
    removed: int = 0
    released: list[str] = field(default_factory=list)
    dns_changed: bool = False
    dns_folded: bool = False
    dns_names: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Lease:
    """One lease the server has handed out and still honours."""

    expires: int  # seconds since the epoch; 0 = never
    address: netaddr.IPAddress
    mac: int | None  # None for IPv6 (no MAC in the lease) or a non-Ethernet address
    mac_text: str | None
    hostname: str | None


class DhcpRenderer(Protocol):
    """What the core asks of a backend's class, with no target: its renders, and
    the limits of what its server reads. The renders follow the store alone, in
    a fixed order, so equal stores give equal bytes."""

    @staticmethod
    def hosts_text(
        conn: Connection, network: str | None = None, sink: Callable[[bytes], object] | None = None
    ) -> str | None:
        """The host file as text; or, given `sink`, handed to it in UTF-8 chunks as
        they are rendered (a million lines at flat memory), and None."""
        ...

    @staticmethod
    def opts_text(conn: Connection, network: str | None = None) -> str:
        """The per-block options file (router, DNS servers, static routes)."""
        ...

    @staticmethod
    def config_text(conn: Connection, network: str | None = None) -> str:
        """The server configuration a network needs to serve the store's blocks."""
        ...

    @staticmethod
    def check_routes(block: Any, pairs: list[tuple[str, int]]) -> None:
        """Conflict when the static routes (destination CIDR, gateway) of leaf
        `block`, as option 121 carries them, exceed what the server reads."""
        ...


class DhcpBackend(DhcpRenderer, Protocol):
    """One DHCP server's files, process and leases, as melange's callers need them."""

    name: str
    target: Target

    def __init__(self, target: Target) -> None: ...

    # -- melanged and `dhcp sync`

    def sync(self, store: Store, *, force_reload: bool = False) -> SyncResult:
        """One pass: render, compare, write what changed, tell the server."""
        ...

    # -- reconcile

    def check_target(self, *, releasing: bool) -> None:
        """Refuse, before anything changes, a target that cannot work (a bad interface
        name, a release tool `releasing` needs but is missing, no lease file)."""
        ...

    def rendered(self, conn: Connection) -> list[str]:
        """What the store renders for the server's host file, a line each."""
        ...

    def served(self) -> list[str] | None:
        """The host lines the server reads now; None when its host file is missing."""
        ...

    def line_keys(self, line: str) -> tuple[Hashable, Hashable]:
        """(IP key, MAC key) of a host line, to pair a changed line with the store's."""
        ...

    def leases(self, now: float | None = None) -> list[Lease]:
        """The leases in force in the target's lease file."""
        ...

    def settle(self, after: SyncResult) -> None:
        """Wait until the server has taken in what `sync` just wrote."""
        ...

    def release(self, leases: list[tuple[str, str | None]]) -> list[str]:
        """Ask the server to forget these (address, MAC) leases, those it can; the
        addresses it was asked about, once it has dropped them (or given up waiting)."""
        ...


def parse_options(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """`--backend-option KEY=VALUE` values as target options (InvalidInput, exit 6,
    for one without `=`)."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"a backend option is KEY=VALUE, not {pair!r:.60}")
        options[key.strip()] = value
    return options


def reads_hosts(target: Target) -> bool:
    """Whether the target names where the server reads its reservations: a hosts
    file, or (a backend with no file, Kea's host database) its own options."""
    return target.hostsfile is not None or bool(target.options)


@cache
def load_class(name: str) -> type[DhcpBackend]:
    """The backend class called `name` in the `melange.dhcp_backends` entry points
    (looked up once per process: `route add` asks on every call)."""
    from importlib.metadata import entry_points

    for entry in entry_points(group=GROUP):
        if entry.name == name:
            backend: type[DhcpBackend] = entry.load()
            return backend
    raise InvalidInput(f"unknown DHCP backend {name!r}")


def renderer(name: str = DEFAULT) -> DhcpRenderer:
    """The renders and limits of backend `name` (the default one unless asked)."""
    return load_class(name)


def load(name: str, target: Target) -> DhcpBackend:
    """The backend called `name`, writing and reading `target`."""
    return load_class(name)(target)
