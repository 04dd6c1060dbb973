"""Parsing of everything a user types, into the forms the store keeps.

Anything that reaches the store passed through here, so nothing stored can
break a dnsmasq file or be read two ways (see the hostname rules).
"""

from __future__ import annotations

import re
from _socket import AF_INET, AF_INET6, inet_pton  # socket's own, without its enums
from typing import TYPE_CHECKING

from melange.errors import InvalidInput

if TYPE_CHECKING:  # imported where an object is made: a lean command (melange.lean) needs none
    import netaddr

MAX_COUNT = 1_000_000
MAX_DOMAIN = 189  # a 63-character host label, a dot and the domain fit DNS's 253
_MAC_FORMS = (
    re.compile(r"^[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}$"),
    re.compile(r"^[0-9a-fA-F]{4}\.[0-9a-fA-F]{4}\.[0-9a-fA-F]{4}$"),
    re.compile(r"^[0-9a-fA-F]{12}$"),
)
_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
# dnsmasq guesses a field's kind from its content: these would be read as a
# lease time or a keyword rather than as a host name.
_DNSMASQ_WORDS = re.compile(r"^(\d+[smhdw]?|infinite|ignore|deleted)$", re.IGNORECASE)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,254}$")
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_DURATION = re.compile(r"^(\d+)\s*([smhdw]?)$", re.ASCII)
MAX_DURATION = 36500 * 86400  # a century: longer reaches outside the times a store keeps
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def is_decimal(text: str) -> bool:
    """ASCII digits only: str.isdigit() also accepts '²', which int() refuses."""
    return bool(text) and text.isascii() and text.isdigit()


def _printable(text: object) -> str:
    """Quote user text for an error message so a newline cannot split the line."""
    return repr(text)


def parse_cidr(text: str) -> netaddr.IPNetwork:
    """A network in CIDR form with no host bits set, IPv4 or IPv6."""
    if not isinstance(text, str) or "/" not in text:
        raise InvalidInput(f"{_printable(text)} is not a CIDR (expected e.g. 10.0.0.0/24)")
    addr_text, _, prefix_text = text.strip().partition("/")
    if not is_decimal(prefix_text):
        raise InvalidInput(f"{_printable(text)} has an invalid prefix length")
    import netaddr

    address = parse_ip(addr_text, what="CIDR")
    prefix = int(prefix_text)
    if prefix > (32 if address.version == 4 else 128):
        raise InvalidInput(
            f"{_printable(text)}: prefix length {prefix} is too long for IPv{address.version}"
        )
    network = netaddr.IPNetwork(f"{address}/{prefix}")
    if network.network != address:
        raise InvalidInput(f"{_printable(text)} has host bits set; did you mean {network.cidr}?")
    return network.cidr


def ip_value(text: str, *, what: str = "IP address") -> tuple[int, int]:
    """(integer, version) of one IPv4 or IPv6 address, strictly (no '10.1', no leading
    zeros, no zone): the rule netaddr applies with INET_PTON, on the same C function, so
    a lean command (melange.lean) parses an address without importing netaddr."""
    if not isinstance(text, str) or not text or text != text.strip():
        raise InvalidInput(f"{_printable(text)} is not a valid {what}")
    try:
        if ":" in text:
            return int.from_bytes(inet_pton(AF_INET6, text), "big"), 6
        if any(len(part) > 1 and part.startswith("0") for part in text.split(".")):
            raise ValueError("leading zero")
        return int.from_bytes(inet_pton(AF_INET, text), "big"), 4
    except (OSError, ValueError):
        raise InvalidInput(f"{_printable(text)} is not a valid {what}") from None


def parse_ip(text: str, *, what: str = "IP address") -> netaddr.IPAddress:
    """`ip_value`'s address as netaddr's object."""
    import netaddr

    value, version = ip_value(text, what=what)
    return netaddr.IPAddress(value, version)


def parse_mac(text: str) -> int:
    """A unicast MAC address as a 48-bit integer."""
    if not isinstance(text, str) or not any(form.fullmatch(text) for form in _MAC_FORMS):
        raise InvalidInput(
            f"{_printable(text)} is not a MAC address (expected e.g. 02:00:00:aa:bb:cc)"
        )
    value = int(re.sub(r"[^0-9a-fA-F]", "", text), 16)
    if value == 0:
        raise InvalidInput(f"{_printable(text)}: the all-zero MAC address cannot be assigned")
    if value >> 40 & 1:
        raise InvalidInput(f"{_printable(text)} is a multicast MAC address; use a unicast one")
    return value


def format_mac(value: int | None) -> str | None:
    """Lower-case colon form, the only form melange prints."""
    if value is None:
        return None
    return value.to_bytes(6, "big").hex(":")


def parse_mac_cidr(text: str) -> tuple[int, int, str]:
    """A MAC range such as 02:16:3e:00:00:00/24: (first, last, canonical text)."""
    mac_text, sep, prefix_text = (text or "").partition("/")
    if not sep or not is_decimal(prefix_text) or not 1 <= int(prefix_text) <= 48:
        raise InvalidInput(
            f"{_printable(text)} is not a MAC range (expected e.g. 02:16:3e:00:00:00/24)"
        )
    first = parse_mac(mac_text)
    prefix = int(prefix_text)
    host_bits = 48 - prefix
    if first & ((1 << host_bits) - 1):
        raise InvalidInput(f"{_printable(text)} has bits set beyond its /{prefix} prefix")
    last = first | ((1 << host_bits) - 1)
    return first, last, f"{format_mac(first)}/{prefix}"


def _labels(text: str, what: str, limit: int, allowed: str) -> list[str]:
    """The dot-separated RFC 1123 labels of a non-empty name of at most `limit`
    characters; InvalidInput saying which rule `text`, a `what`, breaks."""
    if len(text) > limit:
        raise InvalidInput(f"{what} is {len(text)} characters long; at most {limit} are allowed")
    labels = text.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels):
        raise InvalidInput(f"{_printable(text)} is not a valid {what} ({allowed})")
    return labels


def validate_hostname(text: str) -> str:
    """An RFC 1123 host name that dnsmasq cannot read as anything else."""
    if not isinstance(text, str) or not text:
        raise InvalidInput("the hostname is empty")
    labels = _labels(text, "hostname", 253,
                     "letters, digits, hyphens and dots only, labels of 1-63 characters")
    if is_decimal(labels[-1]) or _DNSMASQ_WORDS.fullmatch(text):
        raise InvalidInput(
            f"{_printable(text)} is not usable as a hostname (it reads as a number or keyword)"
        )
    return text.lower()


def validate_domain(text: str) -> str:
    """A DNS domain for a block's names: RFC 1123 labels joined by dots (one trailing
    dot allowed), lower case, whose last label is no number (it would read as an
    address), short enough to leave room for a host label. Nothing else can reach a
    hosts file or a `local=/DOMAIN/` line."""
    if not isinstance(text, str) or not text:
        raise InvalidInput("the domain is empty")
    name = text[:-1] if text.endswith(".") else text
    labels = _labels(name, "domain", MAX_DOMAIN,
                     "letters, digits and hyphens in dot-separated labels of 1-63 characters")
    if is_decimal(labels[-1]):
        raise InvalidInput(f"{_printable(text)} is not usable as a domain (it ends in a number)")
    return name.lower()


def validate_name(text: str, what: str) -> str:
    """Names of blocks, policies, tenants and interfaces: one safe token."""
    if not isinstance(text, str) or not _NAME.fullmatch(text):
        raise InvalidInput(
            f"{_printable(text)} is not a valid {what} "
            "(start with a letter or digit; letters, digits and _ . @ : - only; at most 255)"
        )
    return text


def validate_line(text: str, what: str, max_length: int = 1000) -> str:
    """Free text shown on one line (a description): no control character (a newline
    splits a listing's line, PostgreSQL refuses NUL), no lone surrogate (not UTF-8)."""
    if not isinstance(text, str):
        raise InvalidInput(f"{what} must be text, not {type(text).__name__}")
    if len(text) > max_length:
        raise InvalidInput(f"{what} is {len(text)} characters long; at most {max_length}")
    if _CONTROL.search(text):
        raise InvalidInput(
            f"{what} {_printable(text)[:60]} holds a control character or is not UTF-8"
        )
    return text


def validate_block_name(text: str) -> str:
    """A block name must not be mistaken for an id or a CIDR when given as BLOCK."""
    validate_name(text, "block name")
    if is_decimal(text):
        raise InvalidInput(f"{_printable(text)}: a block name cannot be all digits")
    return text


def validate_network(text: str) -> str:
    """Network names become dnsmasq tags (set:NET), so they keep to tag characters."""
    if not isinstance(text, str) or not _TAG.fullmatch(text):
        raise InvalidInput(
            f"{_printable(text)} is not a valid network name "
            "(letters, digits, _ . - only, at most 63 characters)"
        )
    return text


def validate_count(count: int) -> int:
    """At least one; the upper bound is checked against the block (see MAX_COUNT)."""
    if count < 1:
        raise InvalidInput(f"--count must be at least 1, not {count}")
    return count


def is_duration(text: str) -> bool:
    """Written as a duration ('2h', '90'), whether or not its length is acceptable."""
    return bool(_DURATION.fullmatch(str(text).strip()))


def parse_duration(text: str | int) -> int:
    """Seconds from '48h', '30m', '2d', '90' (seconds)."""
    match = _DURATION.fullmatch(str(text).strip())
    if not match:
        raise InvalidInput(f"{_printable(text)} is not a duration (expected e.g. 48h, 30m, 0)")
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds > MAX_DURATION:
        raise InvalidInput(
            f"{_printable(text)[:40]} is longer than a century ({MAX_DURATION // 86400}d)"
        )
    return seconds
