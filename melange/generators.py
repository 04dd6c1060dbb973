"""How an address is chosen: pluggable by name (entry-point group melange.ip_generators).

A generator gets the request and the block's free space and claims addresses
from it; the free space enforces that each address is free and allowed, so a
third-party generator cannot hand out a duplicate or a forbidden address.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

from melange.errors import Conflict, InvalidInput
from melange.freespace import FreeSpace

GROUP = "melange.ip_generators"


class BlockInfo(NamedTuple):
    """What a generator may know of the block it serves."""

    id: int
    version: int
    first: int
    last: int
    prefixlen: int
    tenant: str | None


@dataclass(frozen=True)
class Request:
    count: int = 1
    mac: int | None = None
    tenant: str | None = None


class IpGenerator(Protocol):
    """The plug-in interface; `families` says which IP versions it serves."""

    name: str
    families: frozenset[int]

    def check_block(self, block: BlockInfo) -> None:
        """Raise InvalidInput when the generator cannot serve this block."""

    def choose(self, block: BlockInfo, request: Request, space: FreeSpace) -> list[int]:
        """Claim and return `request.count` addresses from `space`."""


class LowestFree:
    name = "lowest-free"
    families = frozenset({4, 6})

    def check_block(self, block: BlockInfo) -> None:
        return None

    def choose(self, block: BlockInfo, request: Request, space: FreeSpace) -> list[int]:
        return space.take_lowest(request.count)


def eui64_address(prefix_first: int, mac: int) -> int:
    """Modified EUI-64 (RFC 4291 appendix A) of `mac` in the /64 holding `prefix_first`."""
    import netaddr

    prefix = netaddr.IPAddress(prefix_first >> 64 << 64, 6)
    return int(netaddr.EUI(mac, 48).ipv6(prefix))


class _FromMac:
    """Deterministic generators: the address follows from the MAC."""

    families = frozenset({6})
    name = ""

    def check_block(self, block: BlockInfo) -> None:
        if block.version != 6 or block.prefixlen > 64:
            raise InvalidInput(
                f"generator {self.name} needs an IPv6 block of prefix length 64 or shorter"
            )

    def address_for(self, block: BlockInfo, request: Request) -> int:
        raise NotImplementedError

    def choose(self, block: BlockInfo, request: Request, space: FreeSpace) -> list[int]:
        if request.mac is None or request.count != 1 or block.prefixlen > 64:
            return space.take_lowest(request.count)
        address = self.address_for(block, request)
        reason = space.exclusions.reason(address)
        if reason:
            raise Conflict(f"the {self.name} address for this MAC is unusable: {reason}")
        space.claim(address)
        return [address]


class Eui64(_FromMac):
    name = "eui64"

    def address_for(self, block: BlockInfo, request: Request) -> int:
        return eui64_address(block.first, request.mac or 0)


class TenantHash(_FromMac):
    """The original Melange's IPv6 scheme: SHA-1(tenant)[:32 bits], 0xff, MAC's low 24 bits."""

    name = "tenant-hash"

    def address_for(self, block: BlockInfo, request: Request) -> int:
        tenant = request.tenant or block.tenant
        if not tenant:
            raise InvalidInput("generator tenant-hash needs a tenant (--tenant or the block's)")
        import hashlib  # only this generator needs it: not on every command's start

        digest = int.from_bytes(hashlib.sha1(tenant.encode()).digest()[:4], "big")
        interface_id = (digest << 32) | (0xFF << 24) | ((request.mac or 0) & 0xFFFFFF)
        return (block.first >> 64 << 64) | interface_id


_BUILTIN: dict[str, type] = {
    LowestFree.name: LowestFree,
    Eui64.name: Eui64,
    TenantHash.name: TenantHash,
}


def load(name: str) -> IpGenerator:
    """The generator called `name`: built-in, or from an installed package's entry point."""
    if name in _BUILTIN:
        return _BUILTIN[name]()
    from importlib.metadata import entry_points

    for entry in entry_points(group=GROUP):
        if entry.name == name:
            return entry.load()()
    raise InvalidInput(f"unknown address generator {name!r} (known: {', '.join(available())})")


def available() -> list[str]:
    from importlib.metadata import entry_points

    return sorted(set(_BUILTIN) | {entry.name for entry in entry_points(group=GROUP)})


def default_for(version: int, prefixlen: int) -> str:
    """lowest-free for IPv4; eui64 (lowest-free without a MAC) for IPv6 up to /64."""
    return Eui64.name if version == 6 and prefixlen <= 64 else LowestFree.name
